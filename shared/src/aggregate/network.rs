//! Sorting networks applied to column blocks: the engine behind the coordinate-wise rules.
//!
//! Median, trimmed mean and Bulyan need every coordinate's n values in sorted order. Sorting each
//! coordinate's column on its own (gather n strided values, branchy insertion sort, scatter) costs
//! a branch misprediction per comparison and dominated those rules. A sorting network instead is a
//! fixed list of compare-exchange steps (i, j) that sorts *any* input, so it can run on many
//! coordinates at once: a block holds `width` coordinates of each of the n rows, row-major
//! (`block[i * width + c]` is row i, coordinate c), and one step turns rows i and j into their
//! element-wise min and max. Those loops are branch-free and vectorise; the gather is a plain copy
//! of n contiguous row slices, with no transpose.
//!
//! The network is Batcher's odd–even merge sort for the next power of two N ≥ n, with every
//! comparator that touches a wire ≥ n dropped: padding the input with +∞ on those wires makes such
//! comparators no-ops (the minimum always goes to the lower wire), so what remains sorts exactly
//! n values. [`Network::pruned`] then drops the comparators that cannot influence the output
//! positions a rule reads (the median reads one or two), working backwards from those wires.
//!
//! Comparisons use `<`, so the network needs finite (or at least non-NaN) values; the pre-filter
//! rejects every input with a NaN or ∞ before any rule runs.

/// A list of compare-exchange steps on n wires; after all steps wire 0 holds the minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Network {
    n: usize,
    steps: Vec<(usize, usize)>,
}

impl Network {
    /// A network that sorts n values ascending.
    pub(crate) fn sorting(n: usize) -> Self {
        let big = n.next_power_of_two();
        let mut steps = Vec::new();
        let mut p = 1;
        while p < big {
            let mut k = p;
            while k >= 1 {
                let mut j = k % p;
                while j + k < big {
                    for i in 0..k.min(big - j - k) {
                        let (a, b) = (i + j, i + j + k);
                        if a / (2 * p) == b / (2 * p) && b < n {
                            steps.push((a, b));
                        }
                    }
                    j += 2 * k;
                }
                k /= 2;
            }
            p *= 2;
        }
        Self { n, steps }
    }

    /// Keeps only the steps that can change the values ending on the `outputs` wires.
    pub(crate) fn pruned(mut self, outputs: impl IntoIterator<Item = usize>) -> Self {
        let mut live = vec![false; self.n];
        for o in outputs {
            if let Some(l) = live.get_mut(o) {
                *l = true;
            }
        }
        let mut kept: Vec<(usize, usize)> = Vec::with_capacity(self.steps.len());
        for &(a, b) in self.steps.iter().rev() {
            if live[a] || live[b] {
                live[a] = true;
                live[b] = true;
                kept.push((a, b));
            }
        }
        kept.reverse();
        self.steps = kept;
        self
    }

    /// Number of wires.
    pub(crate) fn wires(&self) -> usize {
        self.n
    }

    /// Number of compare-exchange steps.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.steps.len()
    }

    /// Sorts every column of `block` (n rows of `width` values, row-major) along the rows.
    pub(crate) fn apply(&self, block: &mut [f32], width: usize) {
        debug_assert_eq!(block.len(), self.n * width);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the running CPU supports AVX2, checked just above.
            unsafe { run_steps_avx2(&self.steps, block, width) };
            return;
        }
        run_steps(&self.steps, block, width);
    }
}

/// The compare-exchange loop, compiled twice: for the baseline target and, on x86-64, with AVX2
/// enabled (twice the lanes), chosen at run time so the binary stays portable.
#[inline(always)]
fn run_steps(steps: &[(usize, usize)], block: &mut [f32], width: usize) {
    for &(a, b) in steps {
        let (head, tail) = block.split_at_mut(b * width);
        let lo = &mut head[a * width..(a + 1) * width];
        let hi = &mut tail[..width];
        for (x, y) in lo.iter_mut().zip(hi.iter_mut()) {
            // `min`/`max` rather than selects on `<`: LLVM turns `*x = if y < x { y } else { x }`
            // into a conditional store, which does not vectorise.
            let (u, v) = (*x, *y);
            *x = u.min(v);
            *y = u.max(v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_steps_avx2(steps: &[(usize, usize)], block: &mut [f32], width: usize) {
    run_steps(steps, block, width);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All 0/1 inputs (the 0-1 principle: a network that sorts them sorts everything).
    fn sorts_all_binary_inputs(net: &Network, outputs: &[usize]) -> bool {
        let n = net.wires();
        (0u32..1 << n).all(|bits| {
            let mut v: Vec<f32> = (0..n).map(|i| ((bits >> i) & 1) as f32).collect();
            let mut want = v.clone();
            want.sort_by(f32::total_cmp);
            net.apply(&mut v, 1);
            outputs.iter().all(|&o| v[o] == want[o])
        })
    }

    #[test]
    fn sorts_every_binary_input_up_to_14() {
        for n in 1..=14 {
            let net = Network::sorting(n);
            let all: Vec<usize> = (0..n).collect();
            assert!(sorts_all_binary_inputs(&net, &all), "n = {n}");
        }
    }

    #[test]
    fn pruned_median_network_still_gives_the_median() {
        for n in 2..=13 {
            let outs = [(n - 1) / 2, n / 2];
            let full = Network::sorting(n);
            let net = full.clone().pruned(outs);
            assert!(net.len() <= full.len());
            assert!(sorts_all_binary_inputs(&net, &outs), "n = {n}");
        }
        assert!(Network::sorting(16).pruned([7, 8]).len() < Network::sorting(16).len());
    }

    #[test]
    fn sorts_wide_blocks_with_duplicates() {
        let (n, width) = (37, 5);
        let mut block: Vec<f32> = (0..n * width)
            .map(|k| ((k * 7919) % 23) as f32 - 11.0)
            .collect();
        let mut cols: Vec<Vec<f32>> = (0..width)
            .map(|c| (0..n).map(|i| block[i * width + c]).collect())
            .collect();
        Network::sorting(n).apply(&mut block, width);
        for (c, col) in cols.iter_mut().enumerate() {
            col.sort_by(f32::total_cmp);
            let got: Vec<f32> = (0..n).map(|i| block[i * width + c]).collect();
            assert_eq!(&got, col);
        }
    }
}
