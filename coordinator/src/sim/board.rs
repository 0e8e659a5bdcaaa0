//! The colluding attackers' shared board.
//!
//! Model-poisoning attacks are omniscient (the strongest threat model the robust rules are meant
//! for): every honest node posts the update it is about to send, and the attackers of that round
//! wait until all honest updates are there, then each submits its row of
//! [`Attack::generate`]'s output. All attackers compute the same seeded output, so they collude
//! without talking to each other. Many attacks give every attacker the same vector, and the
//! coordinator refuses a byte-identical payload as a replay; so attacker `i` scales its row by
//! `1 + 10⁻³·i` — the same attack in effect, distinct on the wire after any codec (the strongest
//! attacker a replay check can meet). The wait is bounded: an attacker that cannot see the honest
//! updates in time fails its round with a typed error instead of hanging.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use ruvdllm::attack::{Attack, AttackError};

/// One honest update as the attackers see it.
#[derive(Debug, Clone)]
pub struct Posted {
    pub flat: Vec<f32>,
    pub samples: u64,
    pub band_metrics: BTreeMap<String, f64>,
}

/// Why an attacker could not produce its update.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("round {round}: {got} of {expected} honest updates after {waited:?}")]
    Timeout {
        round: u64,
        got: usize,
        expected: usize,
        waited: Duration,
    },
    #[error("attack: {0}")]
    Attack(#[from] AttackError),
    #[error("attacker index {index} is not below f = {f}")]
    Index { index: usize, f: usize },
}

/// Honest updates by round, then node.
#[derive(Debug)]
pub struct Board {
    honest: usize,
    rounds: Mutex<BTreeMap<u64, BTreeMap<usize, Posted>>>,
    cv: Condvar,
}

impl Board {
    /// A board for `honest` honest nodes per round.
    pub fn new(honest: usize) -> Self {
        Self {
            honest,
            rounds: Mutex::new(BTreeMap::new()),
            cv: Condvar::new(),
        }
    }

    /// An honest node posts its round update; rounds two behind are forgotten.
    pub fn post(&self, round: u64, node: usize, update: Posted) {
        let mut g = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(round).or_default().insert(node, update);
        g.retain(|&r, _| r + 2 > round);
        self.cv.notify_all();
    }

    /// Waits for every honest update of `round` (in node order).
    pub fn wait_honest(&self, round: u64, timeout: Duration) -> Result<Vec<Posted>, BoardError> {
        let start = Instant::now();
        let mut g = self.rounds.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let got = g.get(&round).map_or(0, BTreeMap::len);
            if got >= self.honest {
                return Ok(g
                    .get(&round)
                    .map(|m| m.values().cloned().collect())
                    .unwrap_or_default());
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(BoardError::Timeout {
                    round,
                    got,
                    expected: self.honest,
                    waited,
                });
            }
            g = self
                .cv
                .wait_timeout(g, timeout - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Attacker `index` (of `f`)'s flattened update for a round with these honest updates.
pub fn attack_update(
    attack: &Attack,
    honest: &[Posted],
    index: usize,
    f: usize,
    seed: u64,
) -> Result<Vec<f32>, BoardError> {
    if index >= f {
        return Err(BoardError::Index { index, f });
    }
    let views: Vec<&[f32]> = honest.iter().map(|p| p.flat.as_slice()).collect();
    let mut out = attack.generate(&views, f, seed)?;
    let mut row = out.swap_remove(index);
    let scale = 1.0 + 1e-3 * index as f32;
    for v in &mut row {
        *v *= scale;
    }
    Ok(row)
}

/// What an attacker claims: the honest nodes' largest per-band improvement and their mean sample
/// count — plausible values that no single report would flag.
pub fn attacker_claims(honest: &[Posted]) -> (u64, BTreeMap<String, f64>) {
    let samples = if honest.is_empty() {
        0
    } else {
        honest.iter().map(|p| p.samples).sum::<u64>() / honest.len() as u64
    };
    let mut claims: BTreeMap<String, f64> = BTreeMap::new();
    for p in honest {
        for (k, v) in &p.band_metrics {
            let e = claims.entry(k.clone()).or_insert(f64::NEG_INFINITY);
            *e = e.max(*v);
        }
    }
    (samples, claims)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn posted(v: f32, claim: f64) -> Posted {
        Posted {
            flat: vec![v; 4],
            samples: 10,
            band_metrics: BTreeMap::from([("domain".to_string(), claim)]),
        }
    }

    #[test]
    fn attackers_wait_for_every_honest_update() {
        let board = Arc::new(Board::new(2));
        let b = board.clone();
        let t = std::thread::spawn(move || b.wait_honest(1, Duration::from_secs(10)));
        board.post(1, 0, posted(1.0, 0.1));
        board.post(1, 1, posted(3.0, 0.3));
        let honest = t.join().unwrap().unwrap();
        assert_eq!(honest.len(), 2);
        let u = attack_update(&Attack::SignFlip { c: 1.0 }, &honest, 0, 1, 0).unwrap();
        assert_eq!(u, vec![-2.0; 4]);
        let (samples, claims) = attacker_claims(&honest);
        assert_eq!((samples, claims["domain"]), (10, 0.3));
        assert!(matches!(
            board.wait_honest(2, Duration::from_millis(20)),
            Err(BoardError::Timeout { got: 0, .. })
        ));
        assert!(matches!(
            attack_update(&Attack::SignFlip { c: 1.0 }, &honest, 1, 1, 0),
            Err(BoardError::Index { .. })
        ));
    }

    #[test]
    fn colluding_attackers_send_distinct_payloads() {
        let honest = [posted(1.0, 0.1), posted(3.0, 0.3)];
        let opts = ruvdllm::codec::EncodeOptions::new("int8".parse().unwrap());
        let delta = |flat: Vec<f32>| {
            ruvdllm::delta::Delta::new(vec![
                ruvdllm::delta::NamedTensor::new("talora.domain.q.lora_B.weight", vec![4], flat)
                    .unwrap(),
            ])
            .unwrap()
        };
        let payloads: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let u = attack_update(&Attack::SignFlip { c: 1.0 }, &honest, i, 3, 0).unwrap();
                // The same attack in effect (within 0.3 %) ...
                assert!(u.iter().all(|&x| (x + 2.0).abs() <= 2.0 * 3e-3), "{u:?}");
                ruvdllm::codec::encode(&delta(u), &opts).unwrap()
            })
            .collect();
        // ... but never a byte-identical payload the coordinator would refuse as a replay.
        assert_ne!(payloads[0], payloads[1]);
        assert_ne!(payloads[1], payloads[2]);
        assert_ne!(payloads[0], payloads[2]);
    }
}
