//! `node generate`: masked-diffusion generation from a prompt, optionally drawing the canvas in
//! the terminal as it denoises (`--visual`).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;
use ruvdllm::sampler::{self, Request, visual};

use crate::sampler_args::SamplerArgs;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Prompt text (repeat for a batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Checkpoint folder, HF folder or .gguf file (default: the committed tiny base).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A TALoRA adapter folder (written by `node finetune`) to apply on top of the model.
    #[arg(long)]
    pub talora: Option<PathBuf>,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Redraw the denoising canvas in the terminal at every step.
    #[arg(long)]
    pub visual: bool,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let (mut loaded, tok) = crate::model_arg::load(args.model.as_deref())?;
    if let Some(dir) = &args.talora {
        crate::model_arg::attach_talora(&mut loaded.model, dir)?;
    }
    let model = &loaded.model;
    let specials = loaded.config.specials;
    let mut options = args.sampler.options()?;
    if options.steps.is_none() {
        options.steps = Some(options.gen_length);
    }
    let prompts: Vec<Vec<u32>> = args
        .prompt
        .iter()
        .map(|p| std::iter::once(specials.bos).chain(tok.encode(p)).collect())
        .collect();
    let request = Request::with_seeds(prompts, args.sampler.seed);
    let mut redraw = visual::Redraw::new();
    let mut stderr = std::io::stderr();
    let start = std::time::Instant::now();
    let out = sampler::generate(model, model.device(), &specials, &options, &request, |ev| {
        if args.visual {
            let lines: Vec<String> = ev
                .rows
                .iter()
                .map(|r| {
                    visual::render_row(r.canvas, r.prompt_len, specials.mask, &r.committed, |id| {
                        tok.token_str(id)
                    })
                })
                .collect();
            let mut frame = redraw.frame(&lines);
            frame.push_str(&format!(
                "step {} · block {} · t {:.2}\n",
                ev.step + 1,
                ev.block,
                ev.rows.first().map_or(0.0, |r| r.t)
            ));
            let _ = stderr.write_all(frame.as_bytes());
        }
        ControlFlow::Continue(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let mut generated = 0usize;
    for (prompt, row) in args.prompt.iter().zip(&out.rows) {
        let end = row
            .ids
            .iter()
            .position(|&t| t == specials.eos)
            .unwrap_or(row.ids.len());
        generated += row.ids.len();
        println!("{prompt}{}", tok.decode(&row.ids[..end]));
    }
    eprintln!(
        "{} rows · {} steps · {} forwards · {:.2} s · {:.1} tok/s ({})",
        out.rows.len(),
        out.steps,
        out.nfe,
        secs,
        generated as f64 / secs.max(1e-9),
        loaded.kind
    );
    Ok(())
}
