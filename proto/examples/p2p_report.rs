//! Loopback report for the libp2p transport: round-trip time and bytes at the socket for echo
//! requests of several sizes, one client, one server, both in this process.
//!
//! `cargo run -p ruvdllm-proto --example p2p_report` (dependencies are optimised even in dev).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ruvdllm_proto::p2p::{Client, Config, Handler, Keypair, Server, peer_id};

const ROUNDS: usize = 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let allowlist = dir.path().join("allowlist.txt");
    let node = Keypair::generate_ed25519();
    std::fs::write(&allowlist, format!("{} node-1\n", peer_id(&node)))?;
    let handler: Handler = Arc::new(|_, req: Vec<u8>| async move { Ok(req) }.boxed());
    let config = Config {
        max_message_size: 16 << 20,
        ..Config::default()
    };
    let listen = "/ip4/127.0.0.1/tcp/0".parse()?;
    let connect_started = Instant::now();
    let (server, join) = Server::spawn(
        Keypair::generate_ed25519(),
        listen,
        &allowlist,
        handler,
        config.clone(),
    )
    .await?;
    let client = Client::connect(node, server.listen_addr().clone(), config)?;
    client.request(Vec::new()).await?;
    let connect = connect_started.elapsed();
    let handshake = client.counters().snapshot();
    println!(
        "connect + first empty request: {:.2} ms, {} bytes sent / {} received at the socket",
        ms(connect),
        handshake.sent,
        handshake.received
    );
    println!();
    println!("| payload | median RTT | min RTT | MB/s (both ways) | socket bytes sent / payload |");
    println!("|--:|--:|--:|--:|--:|");
    for size in [1_000usize, 100_000, 1 << 20, 5_000_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut times = Vec::with_capacity(ROUNDS);
        let before = client.counters().snapshot();
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let back = client.request(payload.clone()).await?;
            times.push(t.elapsed());
            anyhow::ensure!(back.len() == size, "echo changed the size");
        }
        let after = client.counters().snapshot();
        times.sort();
        let median = times[ROUNDS / 2];
        let sent_per_request = (after.sent - before.sent) as f64 / ROUNDS as f64;
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.0} | {:.4} |",
            size,
            ms(median),
            ms(times[0]),
            2.0 * size as f64 / median.as_secs_f64() / 1e6,
            sent_per_request / size as f64
        );
    }
    let c = client.counters().snapshot();
    let s = server.counters().snapshot();
    client.shutdown().await;
    server.shutdown().await;
    join.await?;
    println!();
    println!(
        "totals: client sent {} / server received {}; server sent {} / client received {}",
        c.sent, s.received, s.sent, c.received
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
