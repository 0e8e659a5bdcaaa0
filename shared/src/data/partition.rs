//! Splitting one pool of samples among federated nodes: IID, or label-skewed by a Dirichlet draw.
//!
//! The federated-learning literature measures a method against how unlike each other the nodes'
//! data are. The two partitioners here are the ones `flwr-datasets` ships and most papers use
//! (Hsu et al. 2019, "Measuring the effects of non-identical data distribution"), with the
//! sample's [`Domain`](super::Domain) as the label (external text without a domain is one label):
//!
//! * [`iid`]: shuffle the pool, then cut it into `n` contiguous near-equal parts (the first
//!   `len % n` parts one sample longer) — `FederatedDataset`'s shuffle then `IidPartitioner`'s
//!   contiguous shards.
//! * [`dirichlet`]: `DirichletPartitioner` with its defaults (`self_balancing = False`,
//!   `shuffle = True`). For each label in turn, draw proportions p ~ Dir(α, …, α) over the `n`
//!   nodes and cut that label's samples at `floor(cumsum(p) · count)`; if a node ends with fewer
//!   than `min_size` samples, draw everything again. Small α gives each node few labels and
//!   unequal sizes; large α approaches IID. Where Flower retries forever (warning after 10
//!   tries), this gives up after [`MAX_DRAWS`] with an error naming the smallest part, so an
//!   impossible request fails instead of hanging. Each part is shuffled at the end.
//!
//! The draws come from ChaCha8 seeded by the caller (Dirichlet through normalised Gamma(α, 1)
//! draws, as NumPy samples it), so a run is reproducible; the exact parts differ from a NumPy run
//! with the same seed, the distribution does not.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::Sample;

/// Dirichlet draws tried before [`dirichlet`] gives up on `min_size`.
pub const MAX_DRAWS: usize = 100;

/// How a pool is split among nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// Every node draws from the same distribution.
    Iid,
    /// Label skew by a Dirichlet draw with concentration α > 0.
    Dirichlet { alpha: f64 },
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Iid => f.write_str("iid"),
            Scheme::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
        }
    }
}

impl FromStr for Scheme {
    type Err = PartitionError;

    /// `iid` or `dirichlet:ALPHA` (ALPHA finite, > 0).
    fn from_str(s: &str) -> Result<Self, PartitionError> {
        if s == "iid" {
            return Ok(Scheme::Iid);
        }
        let bad = || PartitionError::Spec(s.to_string());
        let alpha = s.strip_prefix("dirichlet:").ok_or_else(bad)?;
        let alpha: f64 = alpha.parse().map_err(|_| bad())?;
        check_alpha(alpha)?;
        Ok(Scheme::Dirichlet { alpha })
    }
}

/// Why a pool could not be split.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PartitionError {
    #[error(
        "unknown partition `{0}` (expected `iid` or `dirichlet:ALPHA`, ALPHA > 0, e.g. dirichlet:0.5)"
    )]
    Spec(String),
    #[error("Dirichlet α must be finite and > 0, got {0}")]
    Alpha(f64),
    #[error("cannot split {pool} samples among {nodes} nodes with at least {min_size} each")]
    TooSmall {
        pool: usize,
        nodes: usize,
        min_size: usize,
    },
    #[error(
        "dirichlet:{alpha}: none of {draws} draws gave every node at least {min_size} samples \
         (the last draw's smallest part: {smallest}); raise α or give the nodes more samples"
    )]
    Unbalanced {
        alpha: f64,
        draws: usize,
        min_size: usize,
        smallest: usize,
    },
}

fn check_alpha(alpha: f64) -> Result<(), PartitionError> {
    if alpha.is_finite() && alpha > 0.0 {
        Ok(())
    } else {
        Err(PartitionError::Alpha(alpha))
    }
}

/// Splits `pool` among `n` nodes by `scheme`; every part has at least `min_size` samples.
pub fn split(
    pool: Vec<Sample>,
    n: usize,
    scheme: Scheme,
    min_size: usize,
    seed: u64,
) -> Result<Vec<Vec<Sample>>, PartitionError> {
    let min_size = min_size.max(1);
    if n == 0 || pool.len() < n.saturating_mul(min_size) {
        return Err(PartitionError::TooSmall {
            pool: pool.len(),
            nodes: n,
            min_size,
        });
    }
    match scheme {
        Scheme::Iid => Ok(iid(pool, n, seed)),
        Scheme::Dirichlet { alpha } => dirichlet(pool, n, alpha, min_size, seed),
    }
}

/// Shuffles `pool` and cuts it into `n ≥ 1` contiguous parts whose sizes differ by at most one.
pub fn iid(mut pool: Vec<Sample>, n: usize, seed: u64) -> Vec<Vec<Sample>> {
    let n = n.max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    pool.shuffle(&mut rng);
    let (q, r) = (pool.len() / n, pool.len() % n);
    let mut rest = pool.into_iter();
    (0..n)
        .map(|i| rest.by_ref().take(q + usize::from(i < r)).collect())
        .collect()
}

/// Flower's `DirichletPartitioner` (module docs): label-skewed parts of at least `min_size`.
pub fn dirichlet(
    pool: Vec<Sample>,
    n: usize,
    alpha: f64,
    min_size: usize,
    seed: u64,
) -> Result<Vec<Vec<Sample>>, PartitionError> {
    check_alpha(alpha)?;
    if n == 0 || pool.len() < n.saturating_mul(min_size) {
        return Err(PartitionError::TooSmall {
            pool: pool.len(),
            nodes: n,
            min_size,
        });
    }
    // Labels in a fixed order (domains in their declared order, then unlabelled text).
    let mut by_label: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for (i, s) in pool.iter().enumerate() {
        by_label
            .entry(s.domain.map(|d| d.index()))
            .or_default()
            .push(i);
    }
    let gamma = Gamma::new(alpha, 1.0).map_err(|_| PartitionError::Alpha(alpha))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut smallest = 0;
    for _ in 0..MAX_DRAWS {
        let mut parts: Vec<Vec<usize>> = vec![Vec::new(); n];
        for members in by_label.values() {
            let p = dirichlet_draw(&gamma, n, &mut rng);
            let count = members.len() as f64;
            let mut start = 0usize;
            let mut cum = 0.0;
            for (node, part) in parts.iter_mut().enumerate() {
                cum += p[node];
                // NumPy's `(cumsum · count).astype(int)`, with the last cut at the end exactly.
                let end = if node + 1 == n {
                    members.len()
                } else {
                    ((cum * count) as usize).clamp(start, members.len())
                };
                part.extend_from_slice(&members[start..end]);
                start = end;
            }
        }
        smallest = parts.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_size {
            let mut slots: Vec<Option<Sample>> = pool.into_iter().map(Some).collect();
            return Ok(parts
                .into_iter()
                .map(|mut idx| {
                    idx.shuffle(&mut rng);
                    idx.into_iter().filter_map(|i| slots[i].take()).collect()
                })
                .collect());
        }
    }
    Err(PartitionError::Unbalanced {
        alpha,
        draws: MAX_DRAWS,
        min_size,
        smallest,
    })
}

/// One draw from Dir(α, …, α) over `n` nodes: independent Gamma(α, 1) draws, normalised. When
/// every draw underflows to zero (α far below 1e-2), the mass goes to the largest, which is
/// what the distribution tends to.
fn dirichlet_draw(gamma: &Gamma<f64>, n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let g: Vec<f64> = (0..n).map(|_| gamma.sample(rng)).collect();
    let total: f64 = g.iter().sum();
    if total > 0.0 && total.is_finite() {
        return g.iter().map(|x| x / total).collect();
    }
    let top = (0..n).max_by(|&a, &b| g[a].total_cmp(&g[b])).unwrap_or(0);
    (0..n).map(|i| f64::from(u8::from(i == top))).collect()
}

#[cfg(test)]
mod tests {
    use super::super::Domain;
    use super::*;

    fn pool(per_domain: usize) -> Vec<Sample> {
        Domain::ALL
            .iter()
            .flat_map(|&d| {
                (0..per_domain).map(move |i| Sample {
                    domain: Some(d),
                    prompt: format!("{}-{i}", d.name()),
                    answer: "x".into(),
                })
            })
            .collect()
    }

    fn sorted(mut v: Vec<Sample>) -> Vec<Sample> {
        v.sort_by(|a, b| a.prompt.cmp(&b.prompt));
        v
    }

    /// Share of a part's samples that come from its most common domain.
    fn purity(part: &[Sample]) -> f64 {
        let mut c = [0usize; 5];
        for s in part {
            c[s.domain.unwrap().index()] += 1;
        }
        *c.iter().max().unwrap() as f64 / part.len() as f64
    }

    #[test]
    fn schemes_parse_and_refuse_bad_specs() {
        assert_eq!("iid".parse::<Scheme>().unwrap(), Scheme::Iid);
        assert_eq!(
            "dirichlet:0.5".parse::<Scheme>().unwrap(),
            Scheme::Dirichlet { alpha: 0.5 }
        );
        assert_eq!(
            Scheme::Dirichlet { alpha: 0.5 }.to_string(),
            "dirichlet:0.5"
        );
        for bad in [
            "",
            "IID",
            "dirichlet",
            "dirichlet:",
            "dirichlet:x",
            "zipf:1",
        ] {
            assert!(
                matches!(bad.parse::<Scheme>(), Err(PartitionError::Spec(_))),
                "{bad}"
            );
        }
        for bad in [
            "dirichlet:0",
            "dirichlet:-1",
            "dirichlet:NaN",
            "dirichlet:inf",
        ] {
            assert!(
                matches!(bad.parse::<Scheme>(), Err(PartitionError::Alpha(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_scheme_keeps_every_sample_exactly_once() {
        let all = pool(40);
        for scheme in [
            Scheme::Iid,
            Scheme::Dirichlet { alpha: 0.5 },
            Scheme::Dirichlet { alpha: 100.0 },
        ] {
            let parts = split(all.clone(), 7, scheme, 5, 3).unwrap();
            assert_eq!(parts.len(), 7);
            assert!(parts.iter().all(|p| p.len() >= 5), "{scheme}");
            assert_eq!(sorted(parts.concat()), sorted(all.clone()), "{scheme}");
            // Same seed, same parts; another seed, other parts.
            assert_eq!(split(all.clone(), 7, scheme, 5, 3).unwrap(), parts);
            assert_ne!(split(all.clone(), 7, scheme, 5, 4).unwrap(), parts);
        }
    }

    #[test]
    fn iid_parts_are_near_equal_and_mixed() {
        let parts = iid(pool(40), 7, 1);
        let sizes: Vec<_> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![29, 29, 29, 29, 28, 28, 28]);
        // 200 samples of 5 domains dealt at random: no part is dominated by one domain.
        assert!(
            parts.iter().all(|p| purity(p) < 0.5),
            "{:?}",
            parts.iter().map(|p| purity(p)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn small_alpha_skews_labels_and_large_alpha_approaches_iid() {
        let mean_purity = |alpha| {
            let parts = dirichlet(pool(200), 10, alpha, 10, 7).unwrap();
            parts.iter().map(|p| purity(p)).sum::<f64>() / parts.len() as f64
        };
        let (skewed, mild, flat) = (mean_purity(0.1), mean_purity(1.0), mean_purity(1000.0));
        // IID over 5 domains gives ≈ 0.2–0.3; α = 0.1 mostly one domain per node.
        assert!(skewed > 0.7, "{skewed}");
        assert!(skewed > mild && mild > flat, "{skewed} {mild} {flat}");
        assert!(flat < 0.3, "{flat}");
    }

    #[test]
    fn unlabelled_text_is_one_label_split_by_quantity() {
        let text: Vec<_> = (0..100)
            .map(|i| Sample {
                domain: None,
                prompt: String::new(),
                answer: format!("{i}"),
            })
            .collect();
        let parts = dirichlet(text, 4, 1.0, 2, 0).unwrap();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 100);
    }

    #[test]
    fn impossible_requests_fail_instead_of_hanging() {
        assert!(matches!(
            split(pool(2), 20, Scheme::Iid, 1, 0),
            Err(PartitionError::TooSmall {
                pool: 10,
                nodes: 20,
                ..
            })
        ));
        assert!(matches!(
            split(pool(2), 0, Scheme::Iid, 1, 0),
            Err(PartitionError::TooSmall { .. })
        ));
        // 50 samples, 10 nodes, ≥ 5 each: only an exactly even draw passes, α = 0.01 never gives one.
        match dirichlet(pool(10), 10, 0.01, 5, 0) {
            Err(
                e @ PartitionError::Unbalanced {
                    draws: MAX_DRAWS, ..
                },
            ) => {
                assert!(e.to_string().contains("raise α"), "{e}")
            }
            other => panic!("expected Unbalanced, got {other:?}"),
        }
        // Gamma draws that all underflow still give a valid (degenerate) split.
        let parts = dirichlet(pool(10), 3, 1e-6, 0, 0).unwrap();
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), 50);
    }
}
