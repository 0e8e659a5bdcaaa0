//! Criterion bench of one federated round at the 7B shape over real sockets, gRPC + mutual TLS and
//! libp2p:
//! 10 nodes fetch the global TALoRA adapter and submit distinct int8 (and int4+top-k) encoded
//! 3,670,016-value deltas; the coordinator (in this process) aggregates with the DAF defaults and
//! publishes the next round. Encoding the payloads is outside the timed region. The per-codec and
//! 10/50/100-node table with coordinator CPU time and peak RSS is `round_report`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ruvdllm::codec::Mode;
use ruvdllm_benches::round::{self, Endpoint, Fleet, TransportKind};

const NODES: usize = 10;

fn round_7b(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let base = ruvdllm_benches::talora_7b_delta(1, false);
    let mut g = c.benchmark_group("round_7b");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    for (transport, codec) in [
        (TransportKind::Grpc, "int8"),
        (TransportKind::Grpc, "int4+topk:0.1"),
        (TransportKind::Libp2p, "int8"),
        (TransportKind::Libp2p, "int4+topk:0.1"),
    ] {
        let mode: Mode = codec.parse().expect("valid mode");
        let (_guard, dir) = round::workdir("ruvdllm-round-bench-").expect("temp dir");
        let (pki, file) =
            round::prepare(&dir, NODES, "127.0.0.1:0", transport).expect("PKI and config");
        let settings = file.validate().expect("valid config");
        let running = rt
            .block_on(ruvdllm_coordinator::daemon::start(settings))
            .expect("coordinator");
        let at = Endpoint {
            dir: dir.clone(),
            pki,
            transport,
            addr: running.addr,
        };
        let mut fleet = rt
            .block_on(Fleet::connect(&at, NODES))
            .expect("nodes connect");
        let mut next = 1u64;
        g.bench_function(format!("{transport:?}/{NODES}_nodes/{codec}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let payloads =
                        round::payloads(&base, &mode, NODES, next).expect("payloads encode");
                    let cost = rt
                        .block_on(round::round(&mut fleet, next, payloads))
                        .expect("round completes");
                    next += 1;
                    total += cost.latency;
                }
                total
            })
        });
        drop(fleet);
        rt.block_on(running.shutdown()).expect("coordinator stops");
    }
    g.finish();
}

criterion_group!(benches, round_7b);
criterion_main!(benches);
