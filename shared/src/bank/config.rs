//! Bank settings, defined once with their defaults (DESIGN §5) and validated before use.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// HNSW parameters (hnsw_rs): DESIGN §5's defaults M=16, ef_construction=200, ef_search=50.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HnswConfig {
    /// Links per node and layer (M); layer 0 keeps 2·M.
    pub max_connections: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Number of layers of the graph (hnsw_rs caps it at 16).
    pub max_layer: usize,
    /// Rebuild the graph once tombstones (evicted entries still linked in the graph) exceed this
    /// fraction of its nodes.
    pub rebuild_fraction: f32,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            ef_construction: 200,
            ef_search: 50,
            max_layer: 16,
            rebuild_fraction: 0.25,
        }
    }
}

/// Weights of the retrieval score `w_sim·similarity + w_succ·success + w_rec·recency`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScoreWeights {
    pub similarity: f32,
    pub success: f32,
    pub recency: f32,
}

impl Default for ScoreWeights {
    fn default() -> Self {
        Self {
            similarity: 0.5,
            success: 0.3,
            recency: 0.2,
        }
    }
}

/// Everything a bank needs besides its patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Most patterns held; inserting beyond it evicts the least recently used.
    pub capacity: usize,
    pub hnsw: HnswConfig,
    pub weights: ScoreWeights,
    /// Time constant τ of `recency = exp(−age/τ)`, in the caller's clock units.
    pub recency_tau: f64,
    /// EMA factor of success updates: `s ← (1−α)·s + α·clamp(x, −1, 1)`.
    pub success_alpha: f32,
    /// Nearest neighbours fetched from the index before re-ranking by the full score
    /// (at least k).
    pub candidates: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            hnsw: HnswConfig::default(),
            weights: ScoreWeights::default(),
            recency_tau: 3600.0,
            success_alpha: 0.3,
            candidates: 32,
        }
    }
}

fn bad(field: &'static str, value: impl ToString, reason: &'static str) -> Error {
    Error::Config {
        field,
        value: value.to_string(),
        reason,
    }
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 {
            return Err(bad("capacity", self.capacity, "must be at least 1"));
        }
        let h = &self.hnsw;
        if !(2..=255).contains(&h.max_connections) {
            return Err(bad(
                "hnsw.max_connections",
                h.max_connections,
                "must be 2..=255",
            ));
        }
        if h.ef_construction == 0 || h.ef_search == 0 {
            return Err(bad(
                "hnsw.ef_construction/ef_search",
                format!("{}/{}", h.ef_construction, h.ef_search),
                "must be at least 1",
            ));
        }
        if !(1..=16).contains(&h.max_layer) {
            return Err(bad("hnsw.max_layer", h.max_layer, "must be 1..=16"));
        }
        if !(h.rebuild_fraction > 0.0 && h.rebuild_fraction < 1.0) {
            return Err(bad(
                "hnsw.rebuild_fraction",
                h.rebuild_fraction,
                "must be in (0, 1)",
            ));
        }
        let w = &self.weights;
        if ![w.similarity, w.success, w.recency]
            .iter()
            .all(|x| x.is_finite())
        {
            return Err(bad("weights", format!("{w:?}"), "must be finite"));
        }
        if !(self.recency_tau.is_finite() && self.recency_tau > 0.0) {
            return Err(bad("recency_tau", self.recency_tau, "must be positive"));
        }
        if !(self.success_alpha > 0.0 && self.success_alpha <= 1.0) {
            return Err(bad(
                "success_alpha",
                self.success_alpha,
                "must be in (0, 1]",
            ));
        }
        if self.candidates == 0 {
            return Err(bad("candidates", self.candidates, "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_design_values_and_valid() {
        let c = Config::default();
        assert_eq!(
            (
                c.hnsw.max_connections,
                c.hnsw.ef_construction,
                c.hnsw.ef_search
            ),
            (16, 200, 50)
        );
        assert_eq!(
            c.weights,
            ScoreWeights {
                similarity: 0.5,
                success: 0.3,
                recency: 0.2
            }
        );
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_rejected() {
        let mut c = Config {
            capacity: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
        c.capacity = 1;
        c.hnsw.max_connections = 300;
        assert!(matches!(
            c.validate(),
            Err(Error::Config {
                field: "hnsw.max_connections",
                ..
            })
        ));
        c.hnsw.max_connections = 16;
        c.recency_tau = 0.0;
        assert!(c.validate().is_err());
        c.recency_tau = 1.0;
        c.success_alpha = 1.5;
        assert!(c.validate().is_err());
        c.success_alpha = 0.5;
        c.hnsw.rebuild_fraction = 1.0;
        assert!(c.validate().is_err());
    }
}
