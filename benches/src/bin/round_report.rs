//! Round latency and bandwidth report at the 7B shape (see `ruvdllm_benches::round`): for each
//! node count and codec, a fresh coordinator *process* (this binary re-run with `--serve`, so its
//! CPU time and peak RSS are read from `/proc/<pid>` and belong to the coordinator alone) and N
//! simulated nodes in this process over gRPC + mutual TLS or libp2p (`--transport`, both by
//! default). Prints a markdown table.
//!
//! `cargo run --release -p ruvdllm-benches --bin round_report [-- --nodes 10,50,100 --codecs int8,int4+topk:0.1 --rounds 2 --transport grpc,libp2p]`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ruvdllm::codec::Mode;
use ruvdllm_benches::round::{self, Endpoint, Fleet, TransportKind};

#[derive(Parser)]
struct Args {
    /// Node counts.
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 50, 100])]
    nodes: Vec<usize>,
    /// Codec modes of the node updates.
    #[arg(long, value_delimiter = ',', default_values_t = ["f32".to_string(), "int8".to_string(), "int4+topk:0.1".to_string()])]
    codecs: Vec<String>,
    /// Rounds per configuration (round 1 downloads the all-zero initial adapter; later rounds a
    /// dense f32 global).
    #[arg(long, default_value_t = 2)]
    rounds: u64,
    /// Transports to measure.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [TransportKind::Grpc, TransportKind::Libp2p])]
    transport: Vec<TransportKind>,
    /// The coordinator's server optimizer (`[aggregation] server_optimizer`: fedavgm, fedadam,
    /// fedyogi, fedadagrad, with Flower's defaults); a stateful one also stores its moments with
    /// every global.
    #[arg(long)]
    server_opt: Option<String>,
    /// Internal: run the coordinator daemon from this config and exit on SIGTERM.
    #[arg(long, hide = true)]
    serve: Option<PathBuf>,
}

/// CPU seconds (user + system) of a process from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the command: state(0) … utime(11) stime(12).
    let utime: f64 = f.get(11).context("utime")?.parse()?;
    let stime: f64 = f.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / ticks)
}

/// Peak resident set size (MB) of a process from `/proc/<pid>/status`.
fn peak_rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    let kb: f64 = line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?;
    Ok(kb / 1024.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Coordinator(Child);

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn configuration(
    transport: TransportKind,
    n: usize,
    codec: &str,
    rounds: u64,
    ticks: f64,
    server_opt: Option<&str>,
) -> anyhow::Result<String> {
    let mode: Mode = codec.parse().map_err(|e| anyhow::anyhow!("{codec}: {e}"))?;
    let (_guard, dir) = round::workdir("ruvdllm-round-")?;
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let (pki, mut file) = round::prepare(&dir, n, &addr, transport)?;
    file.aggregation.server_optimizer = server_opt.map(String::from);
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, toml::to_string(&file)?)?;
    let log = std::fs::File::create(dir.join("coordinator.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("--serve")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting the coordinator process")?;
    let coord = Coordinator(child);
    let pid = coord.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "coordinator did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = Endpoint {
        dir: dir.clone(),
        pki,
        transport,
        addr: addr.parse()?,
    };
    let mut fleet = Fleet::connect(&at, n).await?;
    let base = ruvdllm_benches::talora_7b_delta(1, false);
    let mut cells = Vec::new();
    let (mut up, mut down, mut payload) = (0.0, 0.0, 0.0);
    let mut cpu_total = 0.0;
    for r in 1..=rounds {
        let payloads = round::payloads(&base, &mode, n, r)?;
        let cpu0 = cpu_seconds(pid, ticks)?;
        let cost = round::round(&mut fleet, r, payloads).await?;
        let cpu = cpu_seconds(pid, ticks)? - cpu0;
        cpu_total += cpu;
        cells.push(format!(
            "{:.2} s ({cpu:.1} s CPU)",
            cost.latency.as_secs_f64()
        ));
        up = cost.up_per_node;
        down = cost.down_per_node;
        payload = cost.payload_per_node;
    }
    let rss = peak_rss_mb(pid)?;
    drop(fleet);
    drop(coord);
    Ok(format!(
        "| {} | {n} | {codec} | {} | {:.2} MB | {:.2} MB | {:.2} MB | {:.1} s | {rss:.0} MB |",
        match transport {
            TransportKind::Grpc => "gRPC+mTLS",
            TransportKind::Libp2p => "libp2p",
        },
        cells.join(" / "),
        payload / 1e6,
        up / 1e6,
        down / 1e6,
        cpu_total
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Some(config) = args.serve {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .init();
        return ruvdllm_coordinator::run_cmd::run(ruvdllm_coordinator::run_cmd::ConfigArgs {
            config,
            overrides: Default::default(),
        });
    }
    let ticks = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(opt) = &args.server_opt {
        println!("Server optimizer: {opt} (Flower's defaults).\n");
    }
    println!(
        "| transport | nodes | codec | round latency (coordinator CPU), rounds 1 / 2 … | payload / node | up / node (socket) | down / node (socket, last round) | coordinator CPU (all rounds) | coordinator peak RSS |"
    );
    println!("|---|--:|---|---|--:|--:|--:|--:|--:|");
    for &n in &args.nodes {
        for codec in &args.codecs {
            for &t in &args.transport {
                let row = rt.block_on(configuration(
                    t,
                    n,
                    codec,
                    args.rounds,
                    ticks,
                    args.server_opt.as_deref(),
                ))?;
                println!("{row}");
            }
        }
    }
    Ok(())
}
