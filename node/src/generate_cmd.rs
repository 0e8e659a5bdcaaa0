//! `node generate`: masked-diffusion generation from a prompt, optionally drawing the canvas in
//! the terminal as it denoises (`--visual`).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ruvdllm::bank::{self, Banks, KeyProjection};
use ruvdllm::sampler::{self, DgrOptions, DgrUse, Request, Retrieval, visual};

use crate::sampler_args::SamplerArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Prompt text (repeat for a batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    #[command(flatten)]
    pub base: crate::model_arg::ModelArgs,
    /// Chat: each --prompt is a user message, rendered with the model's chat template (an
    /// instruct checkpoint's `chat_template.jinja`, `tokenizer_config.json` or GGUF metadata,
    /// exactly as `transformers`' `apply_chat_template`); prints only the reply.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// With --chat: this Jinja chat template instead of the checkpoint's own.
    #[arg(long, requires = "chat")]
    pub chat_template: Option<PathBuf>,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Redraw the denoising canvas in the terminal at every step.
    #[arg(long)]
    pub visual: bool,
    #[command(flatten)]
    pub dgr: DgrArgs,
}

/// Denoising-guided retrieval from pattern banks.
#[derive(Args, Debug, Clone)]
pub struct DgrArgs {
    /// Retrieve patterns for uncertain positions and apply them one step later (needs --banks).
    #[arg(long, requires = "banks")]
    pub dgr: bool,
    /// Bank folder (from `node banks insert` or the node daemon's `[banks] dir`); the patterns
    /// DGR applied get their last use updated there after the generation.
    #[arg(long)]
    pub banks: Option<PathBuf>,
    /// Uncertainty (entropy / ln V over √t) above which a position retrieves.
    #[arg(long, default_value_t = 0.5)]
    pub dgr_threshold: f32,
    /// Most positions per row and step.
    #[arg(long, default_value_t = 10)]
    pub dgr_max: usize,
    /// Patterns composed per position.
    #[arg(long, default_value_t = 3)]
    pub dgr_top_k: usize,
    /// Seed of the key projection the banks were filled with.
    #[arg(long, default_value_t = bank::DEFAULT_KEY_SEED)]
    pub key_seed: u64,
}

impl DgrArgs {
    /// The sampler options and the loaded banks, when `--dgr` is on.
    pub fn load(
        &self,
        d_model: usize,
    ) -> anyhow::Result<Option<(DgrOptions, Banks, KeyProjection)>> {
        if !self.dgr {
            return Ok(None);
        }
        let dir = self.banks.as_ref().context("--dgr needs --banks DIR")?;
        anyhow::ensure!(dir.is_dir(), "bank folder {} does not exist", dir.display());
        let banks = Banks::load(dir, bank::Config::default())
            .with_context(|| format!("loading banks from {}", dir.display()))?;
        let opts = DgrOptions {
            threshold: self.dgr_threshold,
            max_positions: self.dgr_max,
            top_k: self.dgr_top_k,
            ..DgrOptions::default()
        };
        Ok(Some((
            opts,
            banks,
            KeyProjection::new(self.key_seed, d_model)?,
        )))
    }
}

/// `row 0: 3[c:1,4] 7[c:2]` — positions with the ids of their patterns.
pub fn dgr_line(rows: &[&[DgrUse]]) -> String {
    rows.iter()
        .enumerate()
        .filter(|(_, u)| !u.is_empty())
        .map(|(r, u)| {
            let items: Vec<String> = u
                .iter()
                .map(|x| {
                    let ids: Vec<String> = x.patterns.iter().map(u64::to_string).collect();
                    format!("{}[{}:{}]", x.position, &x.band.name()[..1], ids.join(","))
                })
                .collect();
            format!("row {r}: {}", items.join(" "))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let (mut loaded, tok, adapters) = args.base.load()?;
    if !adapters.is_empty() {
        eprintln!("adapters:{adapters}");
    }
    let chat = if args.chat {
        Some(
            crate::model_arg::chat_template(&mut loaded, args.chat_template.as_deref())?
                .map_err(|why| anyhow::anyhow!("--chat: {why}"))?,
        )
    } else {
        None
    };
    let model = &loaded.model;
    let specials = loaded.config.specials;
    let mut options = args.sampler.options()?;
    let mut dgr = args.dgr.load(loaded.config.d_model)?;
    if let Some((o, banks, _)) = &dgr {
        options.dgr = Some(o.clone());
        eprintln!("DGR over {} patterns", banks.len());
    }
    let now = dgr.as_ref().map(|(_, banks, _)| banks.clock());
    let retrieval = dgr.as_ref().map(|(_, banks, projection)| Retrieval {
        banks,
        projection,
        now: banks.clock(),
    });
    if options.steps.is_none() {
        options.steps = Some(options.gen_length);
    }
    let prompts: Vec<Vec<u32>> = if let Some(template) = &chat {
        args.prompt
            .iter()
            .map(|p| {
                let mut messages = Vec::new();
                if let Some(s) = &args.system {
                    messages.push(serde_json::json!({"role": "system", "content": s}));
                }
                messages.push(serde_json::json!({"role": "user", "content": p}));
                let text = template.render(&messages, None, true)?;
                // The template writes BOS itself (transformers tokenizes it without adding one).
                Ok(tok.try_encode(&text)?)
            })
            .collect::<anyhow::Result<_>>()?
    } else {
        args.prompt
            .iter()
            .map(|p| std::iter::once(specials.bos).chain(tok.encode(p)).collect())
            .collect()
    };
    let request = Request::with_seeds(prompts, args.sampler.seed);
    let mut redraw = visual::Redraw::new();
    let mut stderr = std::io::stderr();
    let start = std::time::Instant::now();
    let out = sampler::generate_with(
        model,
        model.device(),
        &specials,
        &options,
        &request,
        retrieval,
        |ev| {
            let applied: Vec<&[DgrUse]> =
                ev.rows.iter().map(|r| r.dgr_applied.as_slice()).collect();
            let dgr_text = dgr_line(&applied);
            if args.visual {
                let lines: Vec<String> = ev
                    .rows
                    .iter()
                    .map(|r| {
                        visual::render_row(
                            r.canvas,
                            r.prompt_len,
                            specials.mask,
                            &r.committed,
                            |id| tok.token_str(id),
                        )
                    })
                    .collect();
                let mut frame = redraw.frame(&lines);
                frame.push_str(&format!(
                    "step {} · block {} · t {:.2}\n",
                    ev.step + 1,
                    ev.block,
                    ev.rows.first().map_or(0.0, |r| r.t)
                ));
                if args.dgr.dgr {
                    frame.push_str(&format!("dgr applied: {dgr_text}\n"));
                }
                let _ = stderr.write_all(frame.as_bytes());
            } else if !dgr_text.is_empty() {
                eprintln!("step {}: dgr applied {dgr_text}", ev.step + 1);
            }
            ControlFlow::Continue(())
        },
    )?;
    let secs = start.elapsed().as_secs_f64();
    if let (Some((_, banks, _)), Some(now), Some(dir)) = (dgr.as_mut(), now, &args.dgr.banks)
        && !out.dgr_used.is_empty()
    {
        // Bookkeeping after retrieval (DESIGN §5): last use of the applied patterns; a plain
        // generation has no held-out signal, so success is left as it is (bank::usage).
        let rec = out.dgr_used.record(banks, now, None)?;
        banks
            .save(dir)
            .with_context(|| format!("saving banks to {}", dir.display()))?;
        eprintln!(
            "DGR used {} patterns; last use set to {now} in {}",
            rec.touched,
            dir.display()
        );
    }
    let mut generated = 0usize;
    for (prompt, row) in args.prompt.iter().zip(&out.rows) {
        let end = specials.answer_end(&row.ids);
        generated += row.ids.len();
        let reply = tok.decode(&row.ids[..end]);
        if args.chat {
            println!("{reply}");
        } else {
            println!("{prompt}{reply}");
        }
    }
    eprintln!(
        "{} rows · {} steps · {} forwards · {} DGR deltas · {:.2} s · {:.1} tok/s ({})",
        out.rows.len(),
        out.steps,
        out.nfe,
        out.dgr_applied,
        secs,
        generated as f64 / secs.max(1e-9),
        loaded.kind
    );
    Ok(())
}
