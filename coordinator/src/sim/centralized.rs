//! The centralized baseline (`--centralized`): the same TALoRA training (same spec, run seed,
//! batch, sequence length, band schedule, and learning rate unless `--centralized-lr` sets its
//! own) on the union of the honest nodes' training data, for the same total number of optimizer steps the federation spent
//! (nodes — or, with client sampling, the nodes drawn per round — × rounds × local steps), evaluated on the same held-out split. Federated learning is
//! judged by how much of this improvement it keeps.

use rand::SeedableRng;
use ruvdllm::adapter::{Naming, train};

use super::inprocess::node_train_options;
use super::report::Quality;
use super::run::Prepared;

/// Trains and evaluates the centralized adapter; saves it as `adapters/centralized`.
pub fn run(prep: &Prepared) -> anyhow::Result<Quality> {
    let a = &prep.cfg.args;
    let tok = prep.tok.as_ref();
    let mut examples = Vec::new();
    for (i, d) in prep.data.iter().enumerate() {
        if !prep.cfg.is_attacker(i) {
            examples.extend(ruvdllm::eval::examples(&d.train, tok));
        }
    }
    anyhow::ensure!(!examples.is_empty(), "no honest training data");
    // The optimizer steps the federation spent: every node, or the drawn ones, each round.
    let per_round = prep
        .cfg
        .sampling
        .and_then(|s| s.size(a.nodes))
        .unwrap_or(a.nodes);
    let steps = per_round * a.rounds as usize * a.local_steps;
    let opts = train::TrainOptions {
        steps,
        lr: a.centralized_lr.unwrap_or(a.lr),
        ..node_train_options(prep)
    };
    let mut talora = prep.initial.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed ^ 0xCE27_0A11);
    let report = train::run(&prep.model, &mut talora, &examples, &opts, &mut rng)?;
    tracing::info!(
        steps = report.steps,
        samples = report.samples_seen,
        "centralized baseline trained"
    );
    let dir = prep.out.adapters().join("centralized");
    talora.save(
        &dir,
        &prep.model_path.display().to_string(),
        Naming::of(prep.model.config().arch),
    )?;
    prep.quality(Some(&talora.to_delta()))
}
