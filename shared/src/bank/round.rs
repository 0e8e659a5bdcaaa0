//! The insertion after a federated round (DESIGN §5): for every band the node inserts one pattern
//! for the new global band adapter and one for its own locally trained band adapter.
//!
//! Band adapters have rank 8 / 4 / 2; each is truncated to its best rank-2 approximation
//! ([`Pattern::from_low_rank`]). The key of the local pattern is the projection of the mean final
//! hidden state over the node's training data; the global adapter was trained on data the node
//! never saw, so its key is the caller's best description of it (typically the same mean over the
//! node's held-out data). Both keys are 64-d projections computed by the caller with
//! [`super::KeyProjection`]. The round number is the patterns' insertion time, so callers that
//! retrieve with a round-based clock get recency in rounds.

use crate::aggregate::daf::Band;

use super::banks::Banks;
use super::error::Result;
use super::matrix::Adapter;
use super::pattern::Pattern;

/// The keys of the two patterns inserted per band.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundKeys {
    pub global: Vec<f32>,
    pub local: Vec<f32>,
}

/// What one band received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub band: Band,
    pub global_id: u64,
    pub local_id: u64,
    pub evicted: Vec<u64>,
}

/// Inserts the global and the local adapter of every band listed in `global` (each band of
/// `global` must also appear in `local`). All patterns are built before any bank changes, so a
/// bad adapter leaves the banks untouched.
pub fn insert_round(
    banks: &mut Banks,
    global: &[(Band, &Adapter)],
    local: &[(Band, &Adapter)],
    keys: &RoundKeys,
    round: u64,
) -> Result<Vec<Inserted>> {
    let mut staged = Vec::with_capacity(global.len());
    for (i, (band, g)) in global.iter().enumerate() {
        if global[..i].iter().any(|(b, _)| b == band) {
            return Err(super::error::Error::Config {
                field: "global adapters",
                value: band.name().to_string(),
                reason: "band listed twice",
            });
        }
        let l = local
            .iter()
            .find(|(b, _)| b == band)
            .map(|(_, a)| *a)
            .ok_or(super::error::Error::Empty {
                what: "local adapter for a band that has a global one",
            })?;
        let bank = banks.get(*band);
        let base = bank.next_id();
        let gp = Pattern::from_low_rank(base, *band, &keys.global, g, round)?;
        let lp = Pattern::from_low_rank(base + 1, *band, &keys.local, l, round)?;
        if let Some(layout) = bank.layout() {
            layout.check_layout(&gp.layout())?;
            layout.check_layout(&lp.layout())?;
        }
        staged.push((*band, gp, lp));
    }
    let mut out = Vec::with_capacity(staged.len());
    for (band, gp, lp) in staged {
        let bank = banks.get_mut(band);
        let (global_id, local_id) = (gp.id, lp.id);
        let evicted = bank.insert_many(vec![gp, lp])?;
        out.push(Inserted {
            band,
            global_id,
            local_id,
            evicted,
        });
    }
    Ok(out)
}
