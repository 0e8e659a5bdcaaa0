//! The node daemon's generation API: the latest global adapter on the base model, served through
//! [`crate::serve`], with DGR over the node's local banks.
//!
//! The runtime publishes every global adapter it fetches on a watch channel ([`GlobalHandle`]).
//! [`follow_global`] rebuilds the TALoRA adapter from each one (frozen A from the run seed, B
//! from the delta), attaches it to a copy of the base and swaps it into the served
//! [`ModelHandle`]: requests already running finish on the weights they started with, new ones
//! get the new global. The label (`round N global <hash prefix>`) shows in `/v1/models`, so a
//! client can tell which global answered.

use std::sync::Arc;

use ruvdllm::adapter::{Shape, Spec, Talora};
use ruvdllm::model::Model;

use super::runtime::{Global, GlobalHandle};
use crate::serve::ModelHandle;

/// Why a global adapter could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeGlobalError {
    #[error("the global adapter of round {round} does not fit this node: {reason}")]
    Adapter { round: u64, reason: String },
    #[error("swapping the served model: {0}")]
    Handle(#[from] crate::serve::HandleError),
}

/// The base with `g` attached; its label for `/v1/models`.
pub fn adapted(base: &Model, spec: &Spec, g: &Global) -> Result<(Model, String), ServeGlobalError> {
    let bad = |e: ruvdllm::adapter::Error| ServeGlobalError::Adapter {
        round: g.round,
        reason: e.to_string(),
    };
    let talora = Talora::from_delta(
        spec.clone(),
        g.run_seed,
        Shape::from(base.config()),
        &g.delta,
    )
    .map_err(bad)?;
    let mut m = base.clone();
    m.set_adapter(talora.to_adapter(base).map_err(bad)?);
    let short: String = g.hash.chars().take(12).collect();
    Ok((m, format!("round {} global {short}", g.round)))
}

/// Serves each new global adapter until the runtime drops its sender. A global that does not fit
/// is logged and skipped (the previous weights stay served).
pub async fn follow_global(
    mut globals: GlobalHandle,
    handle: ModelHandle,
    base: Arc<Model>,
    spec: Spec,
) {
    loop {
        let g = globals.borrow_and_update().clone();
        if let Some(g) = g {
            let (base, spec, handle) = (base.clone(), spec.clone(), handle.clone());
            let swapped = tokio::task::spawn_blocking(move || {
                let (m, label) = adapted(&base, &spec, &g)?;
                handle.replace_labeled(Arc::new(m), Some(label))?;
                Ok::<u64, ServeGlobalError>(g.round)
            })
            .await;
            match swapped {
                Ok(Ok(round)) => tracing::info!(round, "serving the new global adapter"),
                Ok(Err(e)) => tracing::warn!(error = %e, "global adapter not served"),
                Err(e) => tracing::error!(error = %e, "swapping task failed"),
            }
        }
        if globals.changed().await.is_err() {
            return;
        }
    }
}
