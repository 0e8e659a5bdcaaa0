//! `node export`: a global adapter as the coordinator stores it (`state_dir/global/round-N
//! .safetensors`: B matrices only, `talora.<band>.` names) → a TALoRA folder (`coarse/ domain/
//! fine/` PEFT folders with A, and `talora.json`) that `node eval|generate|serve --talora` and
//! `peft` load.
//!
//! A is not in the file: it is derived from the run seed (the coordinator's `run_seed`), as
//! every node derives it. The ranks and targets are read from the B matrices; the model gives
//! the shape (checked against every tensor) and the module naming of the PEFT folders.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ruvdllm::adapter::{Naming, Shape, Spec, Talora};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The stored global adapter (a safetensors delta of TALoRA B matrices).
    #[arg(long)]
    pub global: PathBuf,
    /// The federation's run seed (`run_seed` in coordinator.toml): it derives A.
    #[arg(long)]
    pub run_seed: u64,
    /// The base model the federation trains (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Cross-fade half-width on the 0..1000 scale (not stored in the delta).
    #[arg(long, default_value_t = ruvdllm::adapter::band::DEFAULT_FADE)]
    pub fade: f64,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let path = crate::model_arg::resolve(args.model.as_deref());
    // Only the config: no weights are read.
    let config = if path.extension().is_some_and(|e| e == "gguf") {
        ruvdllm::model::gguf::open(&path, &ruvdllm::candle_core::Device::Cpu).map(|(_, c)| c)
    } else {
        ruvdllm::model::checkpoint::open(&path).map(|o| o.config)
    }
    .with_context(|| format!("reading the model config of {}", path.display()))?;
    let talora = export(&args, &config)?;
    println!(
        "{} → {}: ranks {:?}, targets {}, run seed {}, A digest {}",
        args.global.display(),
        args.out.display(),
        talora.spec().ranks,
        talora
            .spec()
            .targets
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(","),
        args.run_seed,
        talora.a_digest()
    );
    Ok(())
}

/// The export itself, for a model of `config`.
pub fn export(args: &ExportArgs, config: &ruvdllm::model::Config) -> anyhow::Result<Talora> {
    let (delta, _) = ruvdllm::delta_io::load(&args.global)
        .with_context(|| format!("reading {}", args.global.display()))?;
    let spec = Spec::infer(&delta, args.fade)
        .with_context(|| format!("{} is not a TALoRA global adapter", args.global.display()))?;
    let talora = Talora::from_delta(spec, args.run_seed, Shape::from(config), &delta)
        .with_context(|| format!("{} does not fit the model", args.global.display()))?;
    let base = crate::model_arg::resolve(args.model.as_deref());
    talora
        .save(
            &args.out,
            &base.display().to_string(),
            Naming::of(config.arch),
        )
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(talora)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_global_becomes_the_same_talora_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let config = ruvdllm::model::Config::tiny();
        let shape = Shape::from(&config);
        let mut t = Talora::new(Spec::default(), 42, shape).unwrap();
        let mut delta = t.to_delta();
        for (k, x) in delta.tensors.iter_mut().enumerate() {
            for (i, v) in x.data.iter_mut().enumerate() {
                *v = ((i + 3 * k) % 11) as f32 * 0.01 - 0.05;
            }
        }
        t = Talora::from_delta(Spec::default(), 42, shape, &delta).unwrap();
        let global = tmp.path().join("round-000003.safetensors");
        ruvdllm::delta_io::save(
            &delta,
            &global,
            ruvdllm::delta_io::StoreDtype::F32,
            &Default::default(),
        )
        .unwrap();
        let args = ExportArgs {
            global: global.clone(),
            run_seed: 42,
            model: None,
            fade: ruvdllm::adapter::band::DEFAULT_FADE,
            out: tmp.path().join("out"),
        };
        let exported = export(&args, &config).unwrap();
        assert_eq!(exported, t);
        assert_eq!(Talora::load(&args.out).unwrap(), t);

        // A file that is not a TALoRA delta, or one for another shape, is a named error.
        let other = ruvdllm::delta::Delta::new(vec![
            ruvdllm::delta::NamedTensor::new("w", vec![2], vec![0.0, 1.0]).unwrap(),
        ])
        .unwrap();
        let bad = tmp.path().join("bad.safetensors");
        ruvdllm::delta_io::save(
            &other,
            &bad,
            ruvdllm::delta_io::StoreDtype::F32,
            &Default::default(),
        )
        .unwrap();
        let e = export(
            &ExportArgs {
                global: bad,
                ..args
            },
            &config,
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("not a TALoRA global adapter"),
            "{e:#}"
        );
        let small = ruvdllm::model::Config {
            n_layers: 2,
            ..config
        };
        let e = export(
            &ExportArgs {
                global,
                run_seed: 42,
                model: None,
                fade: 50.0,
                out: tmp.path().join("out2"),
            },
            &small,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("does not fit the model"), "{e:#}");
    }
}
