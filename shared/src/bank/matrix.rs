//! Plain row-major f32 matrices and low-rank factor pairs — the currency between the banks and the
//! adapter code. Nothing here knows about candle: a LoRA adapter's `lora_A [r, in]` and
//! `lora_B [out, r]` arrive as [`LowRank`] values, and a composed delta leaves the same way, so the
//! integration with the model's adapter hooks is a copy, not a conversion.

use super::error::{Error, Result};

/// A dense row-major `rows × cols` matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// Wraps `data` (row-major); its length must be `rows · cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>, what: &'static str) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::MatrixSize {
                what,
                rows,
                cols,
                got: data.len(),
            });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what });
        }
        Ok(Self { rows, cols, data })
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// `self · other` (naive triple loop; the matrices here are thin low-rank factors).
    pub fn matmul(&self, other: &Matrix) -> Result<Matrix> {
        if self.cols != other.rows {
            return Err(Error::FactorShape {
                a_rows: other.rows,
                a_cols: other.cols,
                b_rows: self.rows,
                b_cols: self.cols,
            });
        }
        let mut out = vec![0.0f32; self.rows * other.cols];
        for i in 0..self.rows {
            let dst = &mut out[i * other.cols..(i + 1) * other.cols];
            for k in 0..self.cols {
                let s = self.data[i * self.cols + k];
                if s == 0.0 {
                    continue;
                }
                for (d, o) in dst.iter_mut().zip(other.row(k)) {
                    *d += s * o;
                }
            }
        }
        Ok(Matrix {
            rows: self.rows,
            cols: other.cols,
            data: out,
        })
    }
}

/// Which projection of an attention block a factor pair adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Q,
    V,
}

impl Target {
    pub const ALL: [Target; 2] = [Target::Q, Target::V];

    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::V => "v",
        }
    }

    pub fn index(self) -> usize {
        match self {
            Target::Q => 0,
            Target::V => 1,
        }
    }
}

/// A low-rank update `ΔW = B · A` with `A [r, in]` and `B [out, r]` (PEFT's `lora_A` / `lora_B`).
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub a: Matrix,
    pub b: Matrix,
}

impl LowRank {
    /// Checks that the factors chain (`B.cols == A.rows`).
    pub fn new(a: Matrix, b: Matrix) -> Result<Self> {
        if b.cols != a.rows {
            return Err(Error::FactorShape {
                a_rows: a.rows,
                a_cols: a.cols,
                b_rows: b.rows,
                b_cols: b.cols,
            });
        }
        Ok(Self { a, b })
    }

    pub fn rank(&self) -> usize {
        self.a.rows
    }

    pub fn in_dim(&self) -> usize {
        self.a.cols
    }

    pub fn out_dim(&self) -> usize {
        self.b.rows
    }

    /// The dense update `B · A` `[out, in]`.
    pub fn product(&self) -> Matrix {
        // Shapes were checked at construction.
        self.b
            .matmul(&self.a)
            .unwrap_or_else(|_| Matrix::zeros(self.b.rows, self.a.cols))
    }
}

/// One adapted layer: the q and v factor pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFactors {
    pub q: LowRank,
    pub v: LowRank,
}

impl LayerFactors {
    pub fn get(&self, t: Target) -> &LowRank {
        match t {
            Target::Q => &self.q,
            Target::V => &self.v,
        }
    }
}

/// A q/v low-rank adapter for every layer: what a pattern stores (rank 2) and what composition
/// produces (rank 2·k).
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub layers: Vec<LayerFactors>,
}

/// The per-layer `(out, in)` shapes of q and v: a bank only holds patterns of one layout.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// `[(q_out, q_in), (v_out, v_in)]` per layer.
    pub layers: Vec<[(usize, usize); 2]>,
}

impl Layout {
    /// The layout of a model with `n_layers` layers of width `d_model`, q of `q_dim` and v of
    /// `kv_dim` outputs.
    pub fn uniform(n_layers: usize, d_model: usize, q_dim: usize, kv_dim: usize) -> Self {
        Self {
            layers: vec![[(q_dim, d_model), (kv_dim, d_model)]; n_layers],
        }
    }

    /// Checks an adapter's shapes against this layout (any rank).
    pub fn check(&self, adapter: &Adapter) -> Result<()> {
        self.check_layout(&Layout::of(adapter))
    }

    /// Checks that `other` has the same shapes, naming the first difference.
    pub fn check_layout(&self, other: &Layout) -> Result<()> {
        if other.layers.len() != self.layers.len() {
            return Err(Error::LayerCount {
                expected: self.layers.len(),
                got: other.layers.len(),
            });
        }
        for (i, (got, want)) in other.layers.iter().zip(&self.layers).enumerate() {
            for t in Target::ALL {
                let (go, gi) = got[t.index()];
                let (eo, ei) = want[t.index()];
                if (go, gi) != (eo, ei) {
                    return Err(Error::LayoutMismatch {
                        layer: i,
                        target: t.name(),
                        expected_out: eo,
                        expected_in: ei,
                        got_out: go,
                        got_in: gi,
                    });
                }
            }
        }
        Ok(())
    }

    /// The layout of an adapter.
    pub fn of(adapter: &Adapter) -> Self {
        Self {
            layers: adapter
                .layers
                .iter()
                .map(|l| [(l.q.out_dim(), l.q.in_dim()), (l.v.out_dim(), l.v.in_dim())])
                .collect(),
        }
    }

    /// Number of int8 values of one rank-`r` adapter with this layout.
    pub fn values(&self, r: usize) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.iter())
            .map(|(out, inp)| r * inp + out * r)
            .sum()
    }

    /// Number of scales at rank `r`: one per rank component of every A and Bᵀ.
    pub fn scales(&self, r: usize) -> usize {
        self.layers.len() * 2 * 2 * r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_small() {
        let a = Matrix::new(2, 3, vec![1., 2., 3., 4., 5., 6.], "a").unwrap();
        let b = Matrix::new(3, 1, vec![1., 0., -1.], "b").unwrap();
        assert_eq!(a.matmul(&b).unwrap().data(), &[-2., -2.]);
        assert!(b.matmul(&b).is_err());
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(matches!(
            Matrix::new(2, 2, vec![0.0; 3], "m"),
            Err(Error::MatrixSize { got: 3, .. })
        ));
        assert!(matches!(
            Matrix::new(1, 1, vec![f32::NAN], "m"),
            Err(Error::NonFinite { .. })
        ));
        let a = Matrix::zeros(2, 4);
        let b = Matrix::zeros(4, 3);
        assert!(LowRank::new(a, b).is_err());
    }

    #[test]
    fn layout_counts() {
        let l = Layout::uniform(2, 8, 8, 4);
        // per layer: q 2·8 + 8·2 = 32, v 2·8 + 4·2 = 24
        assert_eq!(l.values(2), 2 * (32 + 24));
        assert_eq!(l.scales(2), 2 * 2 * 4);
    }
}
