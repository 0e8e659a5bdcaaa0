//! The simulation experiments of the main job, each cell one `coordinator simulate` run in this
//! process (the real daemons over loopback gRPC + mutual TLS, the committed tiny base), each cell's
//! `report.json` kept under `--out`:
//!
//! - `convergence`: federated rounds against `--centralized` (the same TALoRA training on the
//!   union of the nodes' data with the same total optimizer steps); the federated run should keep
//!   ≥ 90 % of the centralized held-out improvement.
//! - `byzantine`: f = `--byzantine` of `--nodes` attacking every round; rules × attacks; each cell
//!   reports the fraction of the same rule's clean-run improvement it kept (FedAvg is the control
//!   that should break).
//! - `bandwidth`: codec modes × improvement kept (against f32) × bytes per node per round.
//!
//! `cargo run -p ruvdllm-benches --bin experiments -- all --out experiments-out`
//!
//! Cells whose `report.json` already exists under `--out` are read back instead of re-run
//! (`--fresh` re-runs them), so an interrupted set resumes where it stopped. The tables are printed
//! as markdown and written to `<out>/experiments.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ruvdllm::aggregate::{Rule, RuleConfig};
use ruvdllm_coordinator::sim::{Observer, Report, SimArgs, run};

const RULES: [&str; 7] = [
    "fedavg",
    "median",
    "trimmed-mean",
    "krum",
    "multi-krum",
    "geomedian",
    "centered-clip",
];
const ATTACKS: [&str; 5] = ["sign-flip", "gaussian", "scaling", "alie", "ipm"];
const CODECS: [&str; 6] = [
    "f32",
    "f16",
    "int8",
    "int4",
    "int8+topk:0.1",
    "int4+topk:0.1",
];

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    which: Which,
    /// Folder of the cells' outputs and of experiments.md.
    #[arg(long, global = true, default_value = "experiments-out")]
    out: PathBuf,
    /// Rounds per cell.
    #[arg(long, global = true, default_value_t = 4)]
    rounds: u64,
    /// Re-run cells whose report.json exists.
    #[arg(long, global = true)]
    fresh: bool,
    /// Extra `simulate` arguments for every cell (one string, split on whitespace), e.g.
    /// "--local-steps 8 --eval-n 4".
    #[arg(long, global = true, allow_hyphen_values = true)]
    extra: Option<String>,
}

#[derive(Subcommand, Clone)]
enum Which {
    /// Federated vs centralized held-out improvement, per seed and on average.
    Convergence {
        /// Run seeds (data shards, held-out samples, A matrices and every draw differ per seed).
        #[arg(long, value_delimiter = ',', default_values_t = [0u64])]
        seeds: Vec<u64>,
    },
    /// Rules × attacks with f Byzantine nodes.
    Byzantine {
        #[arg(long, value_delimiter = ',', default_values_t = RULES.map(String::from))]
        rules: Vec<String>,
        #[arg(long, value_delimiter = ',', default_values_t = ATTACKS.map(String::from))]
        attacks: Vec<String>,
        #[arg(long, default_value_t = 3)]
        byzantine: usize,
        /// Nodes of the clean and attacked runs.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
    },
    /// Codec modes: bytes per node per round and the improvement kept.
    Bandwidth {
        #[arg(long, value_delimiter = ',', default_values_t = CODECS.map(String::from))]
        codecs: Vec<String>,
    },
    /// All three, in order.
    All,
}

#[derive(Parser)]
struct SimCli {
    #[command(flatten)]
    sim: SimArgs,
}

struct Quiet;
impl Observer for Quiet {
    fn line(&self, _text: &str) {}
}

/// One finished cell.
struct Cell {
    report: Report,
    /// Wall seconds of this cell's run (read from the report when reused).
    wall_s: f64,
    reused: bool,
}

struct Runner {
    out: PathBuf,
    rounds: u64,
    fresh: bool,
    extra: Vec<String>,
}

impl Runner {
    fn cell(&self, name: &str, args: &[&str]) -> anyhow::Result<Cell> {
        let dir = self.out.join(name);
        let report_path = dir.join("report.json");
        if !self.fresh && report_path.exists() {
            let report = Report::read(&report_path)?;
            eprintln!("{name}: reusing {}", report_path.display());
            return Ok(Cell {
                wall_s: report.wall_s,
                report,
                reused: true,
            });
        }
        let mut argv: Vec<String> = vec!["simulate".into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend(self.extra.iter().cloned());
        argv.extend([
            "--rounds".into(),
            self.rounds.to_string(),
            "--quiet".into(),
            "--out".into(),
            dir.display().to_string(),
        ]);
        let cli = SimCli::try_parse_from(&argv)
            .with_context(|| format!("cell {name}: arguments {argv:?}"))?;
        let cfg = cli.sim.validate().with_context(|| format!("cell {name}"))?;
        eprintln!("{name}: simulate {}", argv[1..].join(" "));
        let t = Instant::now();
        let report = run(cfg, &Quiet).with_context(|| format!("cell {name}"))?;
        let wall_s = t.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {:.0} s, held-out loss {:.4} -> {:.4}",
            wall_s,
            report.base.heldout_loss,
            last_loss(&report)
        );
        Ok(Cell {
            report,
            wall_s,
            reused: false,
        })
    }
}

fn last_loss(r: &Report) -> f64 {
    r.rounds
        .last()
        .map_or(r.base.heldout_loss, |x| x.quality.heldout_loss)
}

/// Absolute held-out loss fall from the base to the last round.
fn improvement(r: &Report) -> f64 {
    r.base.heldout_loss - last_loss(r)
}

fn exact_match(r: &Report) -> String {
    let q = r.rounds.last().map_or(r.base, |x| x.quality);
    format!(
        "{}/{} → {}/{}",
        r.base.exact_match_correct,
        r.base.exact_match_total,
        q.exact_match_correct,
        q.exact_match_total
    )
}

fn wall(c: &Cell) -> String {
    if c.reused {
        format!("{:.0} (earlier run)", c.wall_s)
    } else {
        format!("{:.0}", c.wall_s)
    }
}

fn convergence(run: &Runner, md: &mut String, seeds: &[u64]) -> anyhow::Result<()> {
    writeln!(md, "\n## Convergence ({} rounds)\n", run.rounds)?;
    writeln!(
        md,
        "| seed | run | held-out loss | improvement | exact match | perplexity bound |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let mut shares = Vec::new();
    let mut walls = Vec::new();
    for &seed in seeds {
        // Seed 0 keeps the cell name of the single-seed experiment, so its report is reused.
        let name = match seed {
            0 => "convergence".to_string(),
            s => format!("convergence-seed{s}"),
        };
        let seed_arg = seed.to_string();
        let c = run.cell(&name, &["--centralized", "--seed", &seed_arg])?;
        let r = &c.report;
        let central = r
            .centralized
            .with_context(|| format!("cell {name} has no centralized result"))?;
        let fed = improvement(r);
        let cen = r.base.heldout_loss - central.heldout_loss;
        let last = r.rounds.last().map_or(r.base, |x| x.quality);
        for (label, q, imp) in [
            ("base", r.base, None),
            ("federated", last, Some(fed)),
            ("centralized", central, Some(cen)),
        ] {
            writeln!(
                md,
                "| {seed} | {label} | {:.4} | {} | {}/{} | {:.3} |",
                q.heldout_loss,
                imp.map_or("—".to_string(), |i| format!(
                    "{i:.4} ({:.1} %)",
                    100.0 * i / r.base.heldout_loss
                )),
                q.exact_match_correct,
                q.exact_match_total,
                q.ppl_bound
            )?;
        }
        shares.push(100.0 * fed / cen);
        walls.push(wall(&c));
    }
    let per_seed: Vec<String> = seeds
        .iter()
        .zip(&shares)
        .map(|(s, x)| format!("{x:.1} % (seed {s})"))
        .collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    writeln!(
        md,
        "\nFederated keeps **{mean:.1} %** of the centralized improvement{} (target ≥ 90 %). Cell \
         wall times {} s.",
        if shares.len() > 1 {
            format!(
                " on average over {} seeds: {}",
                shares.len(),
                per_seed.join(", ")
            )
        } else {
            String::new()
        },
        walls.join(", ")
    )?;
    Ok(())
}

fn byzantine(
    run: &Runner,
    md: &mut String,
    rules: &[String],
    attacks: &[String],
    f: usize,
    nodes: usize,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n## Byzantine tolerance (f = {f} of {nodes} attacking every round, {} rounds)\n",
        run.rounds
    )?;
    writeln!(
        md,
        "Each cell: the held-out improvement kept, as a fraction of two references — the same rule's clean run (same rule and assumed f, all {nodes} nodes honest) / the same rule's honest-only run (the {} honest nodes alone, with the data they hold in the attacked run: `--nodes {} --layout-nodes {nodes}`, the assumed f lowered where the rule could not aggregate those nodes less one pre-filtered update, shown in brackets) — and in brackets the final held-out loss. The domain band keeps DAF's pre-filter (norm ≤ 3× median, cosine ≥ 0) under every rule.\n",
        nodes - f,
        nodes - f
    )?;
    let mut header = String::from("| rule | clean improvement | honest-only improvement |");
    let mut sep = String::from("|---|---|---|");
    for a in attacks {
        write!(header, " {a} |")?;
        sep.push_str("---|");
    }
    writeln!(md, "{header}\n{sep}")?;
    let fs = f.to_string();
    let ns = nodes.to_string();
    let honest_n = (nodes - f).to_string();
    let mut walls = Vec::new();
    for rule in rules {
        // The clean run is the same rule with the same assumed f (trimmed mean trims f per side,
        // Krum scores over n − f − 2 neighbours), only without attackers.
        let clean = run.cell(
            &format!("byz-{rule}-clean-f{f}"),
            &["--rule", rule, "--assume-f", &fs, "--nodes", &ns],
        )?;
        let base_imp = improvement(&clean.report);
        walls.push(clean.wall_s);
        // What the honest nodes reach without the attackers: the knowledge of the attackers'
        // shards is lost to every rule, so this is the most an attacked run can keep. The
        // assumed f is the largest (≤ f) the rule accepts with one of the n − f updates
        // pre-filtered away (the domain band's DAF filter), so the reference never stalls.
        let f_ref = reference_f(rule, nodes - f - 1, f)?;
        let f_ref_s = f_ref.to_string();
        let honest = run.cell(
            &format!("byz-{rule}-honest-only-f{f_ref}"),
            &[
                "--rule",
                rule,
                "--assume-f",
                &f_ref_s,
                "--nodes",
                &honest_n,
                "--layout-nodes",
                &ns,
            ],
        );
        let honest_imp = match &honest {
            Ok(c) => {
                walls.push(c.wall_s);
                Some(improvement(&c.report))
            }
            Err(e) => {
                eprintln!("byz-{rule}-honest-only-f{f_ref}: {e:#}");
                None
            }
        };
        let mut row = format!(
            "| {rule} | {base_imp:.4} | {} |",
            honest_imp.map_or("n/a".to_string(), |h| if f_ref == f {
                format!("{h:.4}")
            } else {
                format!("{h:.4} (f = {f_ref})")
            })
        );
        for attack in attacks {
            let c = run.cell(
                &format!("byz-{rule}-{}", attack.replace(':', "_")),
                &[
                    "--rule",
                    rule,
                    "--byzantine",
                    &fs,
                    "--attack",
                    attack,
                    "--nodes",
                    &ns,
                ],
            )?;
            walls.push(c.wall_s);
            let imp = improvement(&c.report);
            let kept = imp / base_imp;
            if kept.is_finite() {
                let vs_honest = honest_imp
                    .map(|h| imp / h)
                    .filter(|k| k.is_finite())
                    .map_or("n/a".to_string(), |k| format!("{:.0} %", 100.0 * k));
                write!(
                    row,
                    " {:.0} % / {vs_honest} ({:.4}) |",
                    100.0 * kept,
                    last_loss(&c.report)
                )?;
            } else {
                write!(row, " diverged |")?;
            }
        }
        writeln!(md, "{row}")?;
    }
    let max = walls.iter().cloned().fold(0.0, f64::max);
    let total: f64 = walls.iter().sum();
    writeln!(
        md,
        "\nCells: {} · longest {max:.0} s · total {:.1} min.",
        walls.len(),
        total / 60.0
    )?;
    Ok(())
}

/// The largest assumed f ≤ `f` with which `rule` (default parameters) aggregates `n` updates.
fn reference_f(rule: &str, n: usize, f: usize) -> anyhow::Result<usize> {
    let r: Rule = rule.parse()?;
    (0..=f)
        .rev()
        .find(|&g| RuleConfig::new(r).with_f(g).min_inputs() <= n)
        .with_context(|| format!("{rule} cannot aggregate {n} updates with any f"))
}

fn bandwidth(run: &Runner, md: &mut String, codecs: &[String]) -> anyhow::Result<()> {
    writeln!(md, "\n## Bandwidth ({} rounds)\n", run.rounds)?;
    writeln!(
        md,
        "| codec | up / node / round (socket) | up (codec) | down / node / round (socket) | held-out loss | improvement kept vs {} | exact match | wall s |",
        codecs.first().map_or("", String::as_str)
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut reference = None;
    for codec in codecs {
        let c = run.cell(
            &format!("codec-{}", codec.replace([':', '+'], "_")),
            &["--codec", codec],
        )?;
        let r = &c.report;
        let imp = improvement(r);
        let reference = *reference.get_or_insert(imp);
        let (mut up, mut up_codec, mut down, mut n) = (0u64, 0u64, 0u64, 0u64);
        for round in &r.rounds {
            for node in &round.nodes {
                up += node.socket_up;
                up_codec += node.codec_up;
                down += node.socket_down;
                n += 1;
            }
        }
        let n = n.max(1);
        writeln!(
            md,
            "| {codec} | {} | {} | {} | {:.4} | {:.0} % | {} | {} |",
            bytes(up / n),
            bytes(up_codec / n),
            bytes(down / n),
            last_loss(r),
            100.0 * imp / reference,
            exact_match(r),
            wall(&c)
        )?;
    }
    writeln!(md, "\nDown bytes carry the dense f32 global adapter.")?;
    Ok(())
}

fn bytes(n: u64) -> String {
    ruvdllm_coordinator::sim::report::bytes(n)
}

fn write_md(out: &Path, md: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let path = out.join("experiments.md");
    std::fs::write(&path, md).with_context(|| format!("writing {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runner = Runner {
        out: args.out.clone(),
        rounds: args.rounds,
        fresh: args.fresh,
        extra: args
            .extra
            .as_deref()
            .map(|s| s.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
    };
    let t = Instant::now();
    let mut md = format!(
        "# Simulation experiments\n\n`experiments {}` — every cell is `coordinator simulate` on the committed tiny base with its defaults (10 nodes, 5 domains × 2 shards) unless stated; reports under `{}`.\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        args.out.display()
    );
    match &args.which {
        Which::Convergence { seeds } => convergence(&runner, &mut md, seeds)?,
        Which::Byzantine {
            rules,
            attacks,
            byzantine: f,
            nodes,
        } => byzantine(&runner, &mut md, rules, attacks, *f, *nodes)?,
        Which::Bandwidth { codecs } => bandwidth(&runner, &mut md, codecs)?,
        Which::All => {
            convergence(&runner, &mut md, &[0])?;
            write_md(&args.out, &md)?;
            byzantine(
                &runner,
                &mut md,
                &RULES.map(String::from),
                &ATTACKS.map(String::from),
                3,
                10,
            )?;
            write_md(&args.out, &md)?;
            bandwidth(&runner, &mut md, &CODECS.map(String::from))?;
        }
    }
    writeln!(
        md,
        "\nWhole set: {:.1} min on this machine.",
        t.elapsed().as_secs_f64() / 60.0
    )?;
    write_md(&args.out, &md)?;
    println!("{md}");
    Ok(())
}
