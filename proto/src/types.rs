//! Domain types of the protocol and their conversions from and to [`pb`].
//!
//! Generated structs accept anything the wire carries; these types hold only what the daemons can
//! act on (a hash is 64 lowercase hex digits, a band metric is finite), so a malformed message is
//! refused once, here, with a [`ConvertError`].

use std::collections::BTreeMap;

use crate::pb;

/// A round as the coordinator announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    pub round: u64,
    /// SHA-256 (hex) of the codec-encoded global adapter this round trains from.
    pub global_hash: String,
    pub run_seed: u64,
    pub deadline_unix_ms: u64,
    pub quorum: u32,
    pub min_nodes: u32,
    /// Client sampling: 0 = every registered node takes part; else the nodes drawn for this
    /// round are `selected` (empty while the draw waits for enough registered nodes).
    pub sample_size: u32,
    pub selected: Vec<String>,
}

impl Announcement {
    /// Whether `node` may train and submit in this round.
    pub fn selects(&self, node: &str) -> bool {
        self.sample_size == 0 || self.selected.iter().any(|s| s == node)
    }
}

/// What a node declares before uploading its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateHeader {
    pub round: u64,
    pub samples: u64,
    /// Held-out improvement per band name.
    pub band_metrics: BTreeMap<String, f64>,
    pub payload_size: u64,
    pub payload_sha256: String,
}

/// A message field that does not hold a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("field `{field}`: `{value}` is not a 64-digit lowercase hex SHA-256")]
    BadHash { field: &'static str, value: String },
    #[error("band metric `{band}` is not finite")]
    NonFiniteMetric { band: String },
    #[error("too many band metrics: {count} (at most {max})")]
    TooManyMetrics { count: usize, max: usize },
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
}

/// Most band metrics a header may carry (three bands plus room for extras).
pub const MAX_BAND_METRICS: usize = 16;

/// Checks a hex SHA-256.
pub fn check_hash(field: &'static str, value: &str) -> Result<(), ConvertError> {
    let ok = value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ConvertError::BadHash {
            field,
            value: value.chars().take(80).collect(),
        })
    }
}

impl TryFrom<pb::RoundAnnouncement> for Announcement {
    type Error = ConvertError;

    fn try_from(m: pb::RoundAnnouncement) -> Result<Self, Self::Error> {
        check_hash("global_adapter_hash", &m.global_adapter_hash)?;
        Ok(Self {
            round: m.round,
            global_hash: m.global_adapter_hash,
            run_seed: m.run_seed,
            deadline_unix_ms: m.deadline_unix_ms,
            quorum: m.quorum,
            min_nodes: m.min_nodes,
            sample_size: m.sample_size,
            selected: m.selected,
        })
    }
}

impl From<Announcement> for pb::RoundAnnouncement {
    fn from(a: Announcement) -> Self {
        Self {
            round: a.round,
            global_adapter_hash: a.global_hash,
            run_seed: a.run_seed,
            deadline_unix_ms: a.deadline_unix_ms,
            quorum: a.quorum,
            min_nodes: a.min_nodes,
            sample_size: a.sample_size,
            selected: a.selected,
        }
    }
}

impl TryFrom<pb::UpdateHeader> for UpdateHeader {
    type Error = ConvertError;

    fn try_from(m: pb::UpdateHeader) -> Result<Self, Self::Error> {
        check_hash("payload_sha256", &m.payload_sha256)?;
        if m.band_metrics.len() > MAX_BAND_METRICS {
            return Err(ConvertError::TooManyMetrics {
                count: m.band_metrics.len(),
                max: MAX_BAND_METRICS,
            });
        }
        if let Some((band, _)) = m.band_metrics.iter().find(|(_, v)| !v.is_finite()) {
            return Err(ConvertError::NonFiniteMetric { band: band.clone() });
        }
        Ok(Self {
            round: m.round,
            samples: m.sample_count,
            band_metrics: m.band_metrics.into_iter().collect(),
            payload_size: m.payload_size,
            payload_sha256: m.payload_sha256,
        })
    }
}

impl From<UpdateHeader> for pb::UpdateHeader {
    fn from(h: UpdateHeader) -> Self {
        Self {
            round: h.round,
            sample_count: h.samples,
            band_metrics: h.band_metrics.into_iter().collect(),
            payload_size: h.payload_size,
            payload_sha256: h.payload_sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        "ab".repeat(32)
    }

    #[test]
    fn header_roundtrip_and_refusals() {
        let h = UpdateHeader {
            round: 3,
            samples: 10,
            band_metrics: BTreeMap::from([("domain".to_string(), 0.5)]),
            payload_size: 99,
            payload_sha256: hash(),
        };
        let m: pb::UpdateHeader = h.clone().into();
        assert_eq!(UpdateHeader::try_from(m.clone()).unwrap(), h);
        let mut bad = m.clone();
        bad.payload_sha256 = "AB".repeat(32);
        assert!(matches!(
            UpdateHeader::try_from(bad),
            Err(ConvertError::BadHash { .. })
        ));
        let mut nan = m;
        nan.band_metrics.insert("fine".into(), f64::NAN);
        assert!(matches!(
            UpdateHeader::try_from(nan),
            Err(ConvertError::NonFiniteMetric { .. })
        ));
    }

    #[test]
    fn announcement_roundtrip() {
        let a = Announcement {
            round: 1,
            global_hash: hash(),
            run_seed: 7,
            deadline_unix_ms: 1000,
            quorum: 3,
            min_nodes: 3,
            sample_size: 0,
            selected: vec![],
        };
        let m: pb::RoundAnnouncement = a.clone().into();
        assert_eq!(Announcement::try_from(m).unwrap(), a);
        assert!(a.selects("anyone"));
        let sampled = Announcement {
            sample_size: 2,
            selected: vec!["n1".into(), "n4".into()],
            ..a.clone()
        };
        let m: pb::RoundAnnouncement = sampled.clone().into();
        assert_eq!(Announcement::try_from(m).unwrap(), sampled);
        assert!(sampled.selects("n4") && !sampled.selects("n2"));
        // Drawn later: nobody is selected yet.
        let pending = Announcement {
            selected: vec![],
            ..sampled
        };
        assert!(!pending.selects("n1"));
    }
}
