//! `coordinator codec …`: offline tools for delta payloads — encode a safetensors delta, decode a
//! payload back to safetensors (f32), and inspect a payload's table of contents. Operators use them
//! to size modes against the bandwidth budget and to look at a rejected submission.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ruvdllm::codec::{self, EncodeOptions, Limits, Mode, Summary};
use ruvdllm::delta_io::{self, StoreDtype};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CodecCmd {
    /// Encode a safetensors delta into a codec payload.
    Encode {
        /// Input delta (safetensors; any float dtype).
        input: PathBuf,
        /// Output payload.
        #[arg(short, long)]
        output: PathBuf,
        /// Codec mode: f32, f16, bf16, int8, int8-row, int4, optionally `+topk:<fraction>`.
        #[arg(long, default_value = "int8")]
        mode: Mode,
        /// zstd level (1..=19).
        #[arg(long, default_value_t = 3)]
        level: i32,
    },
    /// Decode a codec payload into a safetensors file (f32).
    Decode {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print a payload's tensors, modes and sizes without decoding values.
    Inspect { input: PathBuf },
}

/// Runs a codec subcommand, printing to stdout.
pub fn run(cmd: CodecCmd) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    run_to(cmd, &mut stdout.lock())
}

/// [`run`] writing its report to `out`.
pub fn run_to(cmd: CodecCmd, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        CodecCmd::Encode {
            input,
            output,
            mode,
            level,
        } => {
            let (delta, _meta) = delta_io::load(&input)?;
            let opts = EncodeOptions {
                level,
                ..EncodeOptions::new(mode)
            };
            let bytes = codec::encode(&delta, &opts)
                .with_context(|| format!("encoding {}", input.display()))?;
            write(&output, &bytes)?;
            let raw = delta.numel() * 4;
            writeln!(
                out,
                "{}: {} tensors, {} values, {} -> {} bytes ({:.2}x, {mode})",
                output.display(),
                delta.tensors.len(),
                delta.numel(),
                raw,
                bytes.len(),
                raw as f64 / bytes.len().max(1) as f64
            )?;
        }
        CodecCmd::Decode { input, output } => {
            let bytes = read(&input)?;
            let delta = codec::decode(&bytes, &Limits::default())
                .with_context(|| format!("decoding {}", input.display()))?;
            delta_io::save(&delta, &output, StoreDtype::F32, &Default::default())?;
            writeln!(
                out,
                "{}: {} tensors, {} values",
                output.display(),
                delta.tensors.len(),
                delta.numel()
            )?;
        }
        CodecCmd::Inspect { input } => {
            let bytes = read(&input)?;
            let summary = codec::inspect(&bytes)
                .with_context(|| format!("inspecting {}", input.display()))?;
            write_table(&summary, out)?;
        }
    }
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    ruvdllm::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// A markdown table, one row per tensor, then the totals.
pub fn write_table(s: &Summary, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "| tensor | shape | mode | values | stored | bytes | ratio |"
    )?;
    writeln!(out, "|---|---|---|---:|---:|---:|---:|")?;
    for t in &s.tensors {
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        writeln!(
            out,
            "| {} | [{}] | {} | {} | {} | {} | {:.2}x |",
            t.name,
            shape.join(", "),
            t.mode_label(),
            t.numel,
            t.stored,
            t.encoded_bytes,
            (t.numel * 4) as f64 / t.encoded_bytes.max(1) as f64
        )?;
    }
    writeln!(
        out,
        "| **total** ({} tensors) | | | {} | | {} | {:.2}x |",
        s.tensors.len(),
        s.total_values,
        s.payload_bytes,
        s.ratio
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvdllm::delta::{Delta, NamedTensor};

    #[test]
    fn mode_flag_parses_through_clap() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            cmd: CodecCmd,
        }
        let cli = Cli::try_parse_from([
            "x",
            "encode",
            "in.st",
            "-o",
            "out",
            "--mode",
            "int4+topk:0.1",
        ])
        .unwrap();
        assert!(
            matches!(cli.cmd, CodecCmd::Encode { mode, level: 3, .. } if mode.to_string() == "int4+topk:0.1")
        );
        assert!(Cli::try_parse_from(["x", "encode", "in", "-o", "o", "--mode", "int9"]).is_err());
    }

    #[test]
    fn table_lists_every_tensor_and_the_total() {
        let d = Delta::new(vec![
            NamedTensor::new("w", vec![2, 2], vec![1.0; 4]).unwrap(),
        ])
        .unwrap();
        let bytes = codec::encode(&d, &EncodeOptions::default()).unwrap();
        let mut out = Vec::new();
        write_table(&codec::inspect(&bytes).unwrap(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("| w | [2, 2] | f32 | 4 | 4 |"), "{text}");
        assert!(text.contains("**total** (1 tensors)"));
    }
}
