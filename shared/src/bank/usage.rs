//! Pattern bookkeeping after retrieval: which patterns a generation applied, and the update of
//! their last use (recency, LRU order) and success EMA once the generation is over.
//!
//! DGR retrieves under a *read* view of the banks (a server holds the read lock for the whole
//! generation so every step sees one consistent bank). Updating `last_use` or `success` in the
//! middle would need the write side and would change the scores of later steps of the same
//! generation. So the sampler only *collects* the ids it applied ([`Usage`], in
//! `sampler::Output::dgr_used`), and the caller folds them in afterwards with [`Usage::record`],
//! under a short write lock.
//!
//! Success signal. DESIGN §5 defines success as the EMA of "the held-out loss improvement the
//! pattern gave when last applied" and names that signal for rounds (the node evaluates on its
//! held-out data after each round); it names none for a single generation, which has no reference
//! answer. A generation therefore only touches its patterns unless the caller holds held-out data
//! and passes the held-out loss improvement it measured (relative, `(before − after) / before`,
//! clamped to −1..1 by [`Bank::update_success`](super::Bank::update_success)); the report binary does, interactive generation
//! and serving do not.
//!
//! Patterns may be evicted between the generation and the update (a round insertion can run in
//! between); those ids are skipped and counted, never an error.

use std::collections::{BTreeMap, BTreeSet};

use crate::aggregate::daf::Band;

use super::banks::Banks;
use super::error::{Error, Result};

/// The distinct patterns a generation applied, per band.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    used: BTreeMap<Band, BTreeSet<u64>>,
}

/// What [`Usage::record`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Patterns whose last use was set to `now`.
    pub touched: usize,
    /// Patterns whose success EMA took the improvement.
    pub success_updated: usize,
    /// Ids no longer in their bank (evicted since the generation).
    pub missing: usize,
}

impl Usage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the patterns `ids` of `band` were applied.
    pub fn add(&mut self, band: Band, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        self.used
            .entry(band)
            .or_default()
            .extend(ids.iter().copied());
    }

    /// Merges another generation's usage into this one.
    pub fn merge(&mut self, other: &Usage) {
        for (band, ids) in &other.used {
            self.used
                .entry(*band)
                .or_default()
                .extend(ids.iter().copied());
        }
    }

    /// Distinct `(band, id)` pairs, bands in coarse → fine order, ids ascending.
    pub fn iter(&self) -> impl Iterator<Item = (Band, u64)> + '_ {
        self.used
            .iter()
            .flat_map(|(band, ids)| ids.iter().map(move |id| (*band, *id)))
    }

    /// The ids used from one band, ascending.
    pub fn ids(&self, band: Band) -> Vec<u64> {
        self.used
            .get(&band)
            .map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    pub fn contains(&self, band: Band, id: u64) -> bool {
        self.used.get(&band).is_some_and(|s| s.contains(&id))
    }

    /// Distinct patterns over all bands.
    pub fn len(&self) -> usize {
        self.used.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds this usage into `banks`: every used pattern still present gets `last_use = now`
    /// (only ever forward: [`super::Bank::touch`]) and, with `improvement`, one success-EMA step.
    /// Validation happens before any change, so a non-finite improvement changes nothing.
    pub fn record(
        &self,
        banks: &mut Banks,
        now: u64,
        improvement: Option<f32>,
    ) -> Result<Recorded> {
        if let Some(x) = improvement
            && !x.is_finite()
        {
            return Err(Error::NonFinite {
                what: "success improvement",
            });
        }
        let mut out = Recorded::default();
        for (band, ids) in &self.used {
            let bank = banks.get_mut(*band);
            let present: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| bank.get(*id).is_some())
                .collect();
            out.missing += ids.len() - present.len();
            bank.touch(&present, now)?;
            out.touched += present.len();
            if let Some(x) = improvement {
                for id in &present {
                    bank.update_success(*id, x)?;
                }
                out.success_updated += present.len();
            }
        }
        if out.touched > 0 {
            tracing::debug!(
                touched = out.touched,
                success_updated = out.success_updated,
                missing = out.missing,
                now,
                "recorded DGR pattern use"
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bank::{Adapter, Config, LayerFactors, LowRank, Matrix, Pattern};

    fn banks_with(n: u64) -> Banks {
        let mut banks = Banks::new(Config::default()).unwrap();
        let lr = || {
            LowRank::new(
                Matrix::new(2, 4, vec![0.5; 8], "a").unwrap(),
                Matrix::new(4, 2, vec![0.25; 8], "b").unwrap(),
            )
            .unwrap()
        };
        let adapter = Adapter {
            layers: vec![LayerFactors { q: lr(), v: lr() }],
        };
        for band in [Band::Coarse, Band::Fine] {
            for id in 0..n {
                let key: Vec<f32> = (0..crate::bank::KEY_DIM)
                    .map(|i| ((i as u64 + id) % 7) as f32 - 3.0)
                    .collect();
                let p = Pattern::new(id, band, &key, &adapter, id).unwrap();
                banks.get_mut(band).insert(p).unwrap();
            }
        }
        banks
    }

    #[test]
    fn collects_distinct_ids_per_band() {
        let mut u = Usage::new();
        u.add(Band::Fine, &[3, 1, 3]);
        u.add(Band::Coarse, &[2]);
        u.add(Band::Domain, &[]);
        let mut v = Usage::new();
        v.add(Band::Fine, &[1, 4]);
        u.merge(&v);
        assert_eq!(
            u.iter().collect::<Vec<_>>(),
            vec![
                (Band::Coarse, 2),
                (Band::Fine, 1),
                (Band::Fine, 3),
                (Band::Fine, 4)
            ]
        );
        assert_eq!(u.len(), 4);
        assert!(u.contains(Band::Fine, 4) && !u.contains(Band::Coarse, 4));
        assert!(Usage::new().is_empty());
    }

    #[test]
    fn record_touches_used_patterns_only_and_updates_success() {
        let mut banks = banks_with(4);
        let mut u = Usage::new();
        u.add(Band::Fine, &[0, 2, 99]);
        let r = u.record(&mut banks, 10, Some(0.5)).unwrap();
        assert_eq!(
            r,
            Recorded {
                touched: 2,
                success_updated: 2,
                missing: 1
            }
        );
        let fine = banks.get(Band::Fine);
        let alpha = fine.config().success_alpha;
        for p in fine.patterns() {
            if p.id == 0 || p.id == 2 {
                assert_eq!(p.last_use, 10);
                assert!((p.success - alpha * 0.5).abs() < 1e-6);
            } else {
                assert_eq!(p.last_use, p.id, "unused pattern {} unchanged", p.id);
                assert_eq!(p.success, 0.0);
            }
        }
        // the other band is untouched, and the LRU victim is now the oldest unused pattern
        assert!(
            banks
                .get(Band::Coarse)
                .patterns()
                .iter()
                .all(|p| p.last_use == p.id)
        );
        assert_eq!(banks.get(Band::Fine).lru_order(), vec![1, 3, 0, 2]);
        // touching never moves a pattern back in time; without a signal success stays
        u.record(&mut banks, 5, None).unwrap();
        assert_eq!(banks.get(Band::Fine).get(0).unwrap().last_use, 10);
        assert!((banks.get(Band::Fine).get(0).unwrap().success - alpha * 0.5).abs() < 1e-6);
    }

    #[test]
    fn non_finite_improvement_changes_nothing() {
        let mut banks = banks_with(2);
        let mut u = Usage::new();
        u.add(Band::Coarse, &[0]);
        assert!(matches!(
            u.record(&mut banks, 7, Some(f32::NAN)),
            Err(Error::NonFinite { .. })
        ));
        assert_eq!(banks.get(Band::Coarse).get(0).unwrap().last_use, 0);
    }
}
