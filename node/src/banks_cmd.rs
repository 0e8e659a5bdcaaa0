//! `node banks`: fill and inspect a node's pattern banks outside the daemon.
//!
//! `insert` does what the daemon does after a round (DESIGN §5): for every band it inserts a
//! pattern for the local adapter (`--talora`) and, with `--global`, one for the global adapter
//! ([`ruvdllm::bank::insert_round`]). Keys are the projection of the model's mean final hidden
//! state over the adapter's data (a built-in domain, or every domain), so DGR later finds the
//! pattern from hidden states that look like that data. `inspect` prints what a bank folder
//! holds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use ruvdllm::adapter::Talora;
use ruvdllm::bank::{self, Band, Banks, KeyProjection, RoundKeys};
use ruvdllm::data::{self, Domain, Generator, Split};
use ruvdllm::model::Model;
use ruvdllm::tokenizer::Tokenizer;

#[derive(Args, Debug)]
pub struct BanksArgs {
    #[command(subcommand)]
    pub command: BanksCommand,
}

#[derive(Subcommand, Debug)]
pub enum BanksCommand {
    /// Insert a TALoRA adapter's bands as patterns (keys from the model's hidden states).
    Insert(InsertArgs),
    /// Print the patterns of a bank folder.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct InsertArgs {
    /// Base checkpoint folder, HF folder or .gguf file (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The locally trained TALoRA adapter (e.g. from `node finetune`).
    #[arg(long)]
    pub talora: PathBuf,
    /// A global TALoRA adapter inserted beside it (the round insertion of DESIGN §5).
    #[arg(long)]
    pub global: Option<PathBuf>,
    /// Domain whose data the adapter was trained on (default: every domain).
    #[arg(long)]
    pub domain: Option<Domain>,
    /// Built-in split the key's texts come from.
    #[arg(long, default_value = "finetune")]
    pub split: Split,
    /// Texts (per domain) averaged into the key.
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    /// Insertion time of the patterns (rounds); default: one past the banks' newest pattern.
    #[arg(long)]
    pub round: Option<u64>,
    /// Seed of the key projection (must match what generation uses).
    #[arg(long, default_value_t = bank::DEFAULT_KEY_SEED)]
    pub key_seed: u64,
    /// Bank folder (created or extended).
    #[arg(long, short)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Bank folder written by `node banks insert` or the node daemon.
    pub dir: PathBuf,
}

pub fn run(args: BanksArgs) -> anyhow::Result<()> {
    match args.command {
        BanksCommand::Insert(a) => insert(a),
        BanksCommand::Inspect(a) => inspect(&a.dir),
    }
}

/// Token sequences (prompt + answer) of `n` samples per domain of `split`.
pub fn key_texts(
    tok: &dyn Tokenizer,
    domain: Option<Domain>,
    split: Split,
    n: usize,
) -> Vec<Vec<u32>> {
    let g = Generator::new(data::DEFAULT_SEED);
    let domains: Vec<Domain> = domain.map_or(Domain::ALL.to_vec(), |d| vec![d]);
    domains
        .into_iter()
        .flat_map(|d| g.samples(split, d, n))
        .map(|s| tok.encode(&s.text()))
        .filter(|t| !t.is_empty())
        .collect()
}

/// Inserts `local` (and `global`) into `banks` with keys from `texts`; returns a summary line
/// per band.
#[allow(clippy::too_many_arguments)]
pub fn insert_adapters(
    banks: &mut Banks,
    model: &Model,
    projection: &KeyProjection,
    local: &Talora,
    global: Option<&Talora>,
    texts: &[Vec<u32>],
    seq_len: usize,
    round: u64,
) -> anyhow::Result<Vec<String>> {
    let rows = texts.len().div_ceil(2).clamp(1, 32);
    let key = bank::hidden::data_key(model, projection, texts, rows, seq_len, round)
        .context("computing the data key")?;
    let local_bands = bank::band_adapters(local)?;
    let lines = match global {
        Some(g) => {
            let global_bands = bank::band_adapters(g)?;
            let l: Vec<(Band, &bank::Adapter)> = local_bands.iter().map(|(b, a)| (*b, a)).collect();
            let gl: Vec<(Band, &bank::Adapter)> =
                global_bands.iter().map(|(b, a)| (*b, a)).collect();
            let keys = RoundKeys {
                global: key.clone(),
                local: key,
            };
            bank::insert_round(banks, &gl, &l, &keys, round)?
                .into_iter()
                .map(|i| {
                    format!(
                        "{}: global pattern {}, local pattern {}, evicted {:?}",
                        i.band.name(),
                        i.global_id,
                        i.local_id,
                        i.evicted
                    )
                })
                .collect()
        }
        None => {
            let mut out = Vec::new();
            for (band, a) in &local_bands {
                let b = banks.get_mut(*band);
                let id = b.allocate_id();
                let p = bank::Pattern::from_low_rank(id, *band, &key, a, round)?;
                let evicted = b.insert(p)?;
                out.push(format!(
                    "{}: local pattern {id}, evicted {evicted:?}",
                    band.name()
                ));
            }
            out
        }
    };
    Ok(lines)
}

fn insert(args: InsertArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.n > 0 && args.seq_len > 1,
        "--n and --seq-len must be positive"
    );
    let (loaded, tok) = crate::model_arg::load(args.model.as_deref())?;
    let model = &loaded.model;
    let load = |dir: &Path| {
        Talora::load(dir).with_context(|| format!("loading the TALoRA adapter {}", dir.display()))
    };
    let local = load(&args.talora)?;
    let global = args.global.as_deref().map(load).transpose()?;
    let mut banks = Banks::load(&args.out, bank::Config::default())
        .with_context(|| format!("loading banks from {}", args.out.display()))?;
    let round = args.round.unwrap_or_else(|| {
        if banks.is_empty() {
            0
        } else {
            banks.clock() + 1
        }
    });
    let projection = KeyProjection::new(args.key_seed, model.config().d_model)?;
    let texts = key_texts(tok.as_ref(), args.domain, args.split, args.n);
    anyhow::ensure!(!texts.is_empty(), "no texts for the key");
    let lines = insert_adapters(
        &mut banks,
        model,
        &projection,
        &local,
        global.as_ref(),
        &texts,
        args.seq_len,
        round,
    )?;
    banks
        .save(&args.out)
        .with_context(|| format!("saving banks to {}", args.out.display()))?;
    for l in lines {
        println!("{l}");
    }
    println!(
        "{} patterns in {} (round {round})",
        banks.len(),
        args.out.display()
    );
    Ok(())
}

fn inspect(dir: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(dir.is_dir(), "{} is not a folder", dir.display());
    let banks = Banks::load(dir, bank::Config::default())
        .with_context(|| format!("loading banks from {}", dir.display()))?;
    for b in banks.iter() {
        let layout = b
            .layout()
            .map_or("–".to_string(), |l| format!("{} layers", l.layers.len()));
        println!(
            "{}: {} patterns ({layout}), {} B of patterns, {} B of index",
            b.band().name(),
            b.len(),
            b.pattern_bytes(),
            b.index_bytes()
        );
        for p in b.patterns() {
            let k = p.key();
            println!(
                "  id {:>4}  success {:+.3}  last use {:>4}  {} B  key [{:+.3}, {:+.3}, {:+.3}, …]",
                p.id,
                p.success,
                p.last_use,
                p.bytes(),
                k[0],
                k[1],
                k[2]
            );
        }
    }
    Ok(())
}
