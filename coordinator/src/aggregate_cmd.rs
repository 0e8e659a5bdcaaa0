//! `coordinator aggregate`: offline robust aggregation of delta/adapter files.
//!
//! Useful to replay a round by hand or to aggregate adapters trained elsewhere: every input is a
//! safetensors file (a TALoRA delta with `talora.<band>.` names, or a plain PEFT adapter — names are
//! taken as-is), all with the same tensor names and shapes. Per-node metadata comes from each
//! file's `__metadata__` when present (`node_id`, `samples`, `improvement.<band>`); otherwise the
//! node id is the file name and the weight 1. The command prints one line per input (norm, Krum
//! score, weight, used/rejected and why) and writes the aggregate as F32 safetensors.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ruvdllm::aggregate::daf::{self, Band, DafConfig, DafInput, GroupConfig, Meta};
use ruvdllm::aggregate::{
    self, CosineReference, Input, NormBound, Outcome, Prefilter, Rule, RuleConfig,
};
use ruvdllm::delta::Delta;
use ruvdllm::delta_io;

/// Arguments of `coordinator aggregate`.
#[derive(clap::Args, Debug, Clone)]
pub struct AggregateArgs {
    /// Aggregation rule: fedavg, median, trimmed-mean, krum, multi-krum, bulyan, geomedian,
    /// centered-clip. With --bands it applies to the coarse, fine and un-banded groups.
    #[arg(long, default_value = "trimmed-mean")]
    pub rule: Rule,
    /// Assumed number of Byzantine inputs.
    #[arg(long, default_value_t = 0)]
    pub f: usize,
    /// Trimmed mean: values trimmed per side (default: f).
    #[arg(long)]
    pub trim: Option<usize>,
    /// Multi-Krum: number of inputs averaged (default: n - f).
    #[arg(long)]
    pub m: Option<usize>,
    /// Aggregate per TALoRA band (DAF): the domain band gets the quality-weighted mean, the other
    /// groups --rule.
    #[arg(long)]
    pub bands: bool,
    /// Reject inputs whose L2 norm exceeds this bound.
    #[arg(long)]
    pub norm_bound: Option<f64>,
    /// Reject inputs that nearly duplicate another: cosine between the two above this (e.g.
    /// 0.99; colluding nodes sending one vector).
    #[arg(long)]
    pub duplicate_bound: Option<f64>,
    /// Reject inputs whose cosine to --cosine-reference is below this.
    #[arg(long, allow_hyphen_values = true)]
    pub cosine_threshold: Option<f64>,
    /// The cosine filter's reference: `previous` (the previous global, `--previous`), `median`
    /// (the coordinate-wise median of the inputs within the norm bound; needs no previous
    /// global) or `both`.
    #[arg(long, default_value = "previous", requires = "cosine_threshold")]
    pub cosine_reference: CosineReference,
    /// The previous global adapter (safetensors): the reference of the cosine pre-filter, here and
    /// in the domain band of --bands (the coordinator passes its pre-round global).
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// Rule run (and reported) when --rule refuses for its n/f condition.
    #[arg(long)]
    pub fallback: Option<Rule>,
    /// Input delta or adapter files (safetensors).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output safetensors file.
    #[arg(short = 'o', long = "out")]
    pub out: PathBuf,
}

/// Runs the command, printing the report to stdout.
pub fn run(args: AggregateArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    run_to(&args, &mut stdout.lock())
}

fn node_meta(path: &Path, meta: &HashMap<String, String>) -> anyhow::Result<Meta> {
    let node_id = meta.get("node_id").cloned().unwrap_or_else(|| {
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        )
    });
    let num = |key: &str| -> anyhow::Result<Option<f64>> {
        meta.get(key)
            .map(|v| {
                v.parse::<f64>()
                    .with_context(|| format!("{}: metadata {key} = {v:?}", path.display()))
            })
            .transpose()
    };
    let mut improvement = BTreeMap::new();
    for b in Band::ALL {
        if let Some(v) = num(&format!("improvement.{}", b.name()))? {
            improvement.insert(b, v);
        }
    }
    Ok(Meta {
        node_id,
        samples: num("samples")?.unwrap_or(1.0),
        improvement,
    })
}

fn load_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<DafInput>> {
    let mut out: Vec<DafInput> = Vec::with_capacity(paths.len());
    for path in paths {
        let (delta, meta) =
            delta_io::load(path).with_context(|| format!("loading {}", path.display()))?;
        if let Some(first) = out.first() {
            first.delta.check_same_layout(&delta).with_context(|| {
                format!(
                    "{} does not match the tensors of {}",
                    path.display(),
                    paths[0].display()
                )
            })?;
        }
        out.push(DafInput {
            meta: node_meta(path, &meta)?,
            delta,
        });
    }
    Ok(out)
}

fn rule_config(args: &AggregateArgs) -> RuleConfig {
    let mut cfg = RuleConfig::new(args.rule).with_f(args.f);
    cfg.params.trim = args.trim;
    cfg.params.m = args.m;
    cfg.fallback = args.fallback;
    cfg
}

fn prefilter(args: &AggregateArgs) -> Prefilter {
    Prefilter {
        norm_bound: args.norm_bound.map(NormBound::Absolute),
        duplicate_bound: args.duplicate_bound,
        cosine_threshold: args.cosine_threshold,
        cosine_reference: args.cosine_reference,
        ..Prefilter::default()
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.4e}"))
}

fn write_report(w: &mut dyn Write, title: &str, out: &Outcome) -> std::io::Result<()> {
    writeln!(w, "== {title}: rule {} ==", out.rule)?;
    if let Some(fb) = &out.fallback {
        writeln!(w, "   fallback: {} refused ({})", fb.configured, fb.reason)?;
    }
    writeln!(
        w,
        "{:>3}  {:<24} {:>11} {:>11} {:>11}  status",
        "#", "node", "norm", "score", "weight"
    )?;
    for r in &out.inputs {
        writeln!(
            w,
            "{:>3}  {:<24} {:>11} {:>11} {:>11}  {}",
            r.index,
            r.node_id,
            fmt_opt(r.norm),
            fmt_opt(r.score),
            fmt_opt(r.weight),
            r.status
        )?;
    }
    Ok(())
}

/// [`run`] writing the report to `w` (testable).
pub fn run_to(args: &AggregateArgs, w: &mut dyn Write) -> anyhow::Result<()> {
    if args.inputs.is_empty() {
        bail!("no input files");
    }
    if args.cosine_threshold.is_some()
        && args.cosine_reference == CosineReference::Previous
        && args.previous.is_none()
    {
        bail!(
            "--cosine-threshold against the previous global needs --previous FILE (or --cosine-reference median)"
        );
    }
    let inputs = load_inputs(&args.inputs)?;
    let rule = rule_config(args);
    let filters = prefilter(args);
    let previous = match &args.previous {
        Some(path) => {
            let (p, _) =
                delta_io::load(path).with_context(|| format!("loading {}", path.display()))?;
            let p = inputs[0].delta.aligned(&p).with_context(|| {
                format!(
                    "{} does not match the tensors of {}",
                    path.display(),
                    args.inputs[0].display()
                )
            })?;
            Some(p)
        }
        None => None,
    };
    let result: Delta = if args.bands {
        let mut cfg = DafConfig::new(args.f);
        for g in [&mut cfg.coarse, &mut cfg.fine, &mut cfg.other] {
            *g = GroupConfig {
                rule: rule.clone(),
                weights: daf::WeightSource::Samples,
                prefilter: filters.clone(),
            };
        }
        if let Some(b) = args.norm_bound {
            cfg.domain.prefilter.norm_bound = Some(NormBound::Absolute(b));
        }
        let out = daf::aggregate_bands(&inputs, previous.as_ref(), &cfg)?;
        for g in &out.groups {
            let title = format!("group {} ({} tensors)", g.group, g.tensors);
            write_report(w, &title, &g.outcome)?;
        }
        out.delta
    } else {
        let reference = &inputs[0].delta;
        let flats: Vec<Vec<f32>> = inputs
            .iter()
            .map(|i| reference.aligned(&i.delta).map(|d| d.flatten()))
            .collect::<Result<_, _>>()?;
        let agg_inputs: Vec<Input<'_>> = inputs
            .iter()
            .zip(&flats)
            .map(|(i, v)| Input {
                node_id: &i.meta.node_id,
                values: v,
                weight: i.meta.samples,
            })
            .collect();
        let prev = previous.as_ref().map(Delta::flatten);
        let out = aggregate::aggregate(&agg_inputs, prev.as_deref(), &rule, &filters)?;
        write_report(w, "all tensors", &out)?;
        reference.with_flat(&out.aggregate)?
    };
    let meta = HashMap::from([
        ("rule".to_string(), args.rule.to_string()),
        ("inputs".to_string(), inputs.len().to_string()),
    ]);
    delta_io::save(&result, &args.out, delta_io::StoreDtype::F32, &meta)
        .with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(w, "wrote {}", args.out.display())?;
    Ok(())
}
