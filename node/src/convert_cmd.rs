//! `node convert`: writes a checkpoint as a llama.cpp-layout GGUF file (F32, F16, BF16, Q8_0,
//! Q4_0 or Q4_K).

use std::path::PathBuf;

use clap::Args;
use ruvdllm::model::gguf;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Our checkpoint folder to convert.
    pub input: PathBuf,
    /// Output .gguf path.
    pub output: PathBuf,
    /// Weight type: f32, f16, bf16, q8_0, q4_0 or q4_k.
    #[arg(long, default_value = "q8_0")]
    pub dtype: gguf::Dtype,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    gguf::convert(&args.input, &args.output, args.dtype)?;
    let size = std::fs::metadata(&args.output)?.len();
    eprintln!(
        "wrote {} ({:.2} MB, {:?})",
        args.output.display(),
        size as f64 / 1e6,
        args.dtype
    );
    Ok(())
}
