//! Durability at the process level: the built `coordinator` binary is SIGKILLed after accepting
//! two of three updates, restarted on the same state folder, and the round completes with those
//! updates counted exactly once (a resubmission is refused as a duplicate, and the new global
//! equals the offline aggregation of the three updates). SIGTERM then stops it cleanly. A stateful
//! server optimizer (FedAdam) continues after a SIGKILL with the moments it had.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ruvdllm::aggregate::{ServerOptimizer, ServerState};
use ruvdllm_proto::RejectKind;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &std::path::Path, listen: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_coordinator"))
        .args(["run", "--config"])
        .arg(config)
        .args(["--listen", listen, "--metrics-listen", ""])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the coordinator binary");
    Proc(child)
}

fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn ready(
    addr: std::net::SocketAddr,
    fx: &Fixture,
    node: &str,
) -> ruvdllm_proto::pb::coordinator_client::CoordinatorClient<tonic::transport::Channel> {
    for _ in 0..600 {
        let mut c = connect(addr, fx.tls(Some(node))).await;
        if register(&mut c, node, BASE).await.is_ok() {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("coordinator did not come up on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_accepting_then_restart_counts_updates_once() {
    let fx = Fixture::new(&["n1", "n2", "n3"]);
    let config = fx.write_config(&fx.config(3, 3, 120_000));
    let addr = free_addr();
    let listen = addr.to_string();

    let mut proc1 = spawn(&config, &listen);
    let mut c1 = ready(addr, &fx, "n1").await;
    let mut c2 = ready(addr, &fx, "n2").await;
    let ann = wait_round(&mut c1, 1).await;
    let g0 = fetch_global(&mut c1, &ann.global_adapter_hash).await;
    let u1 = Update::new("n1", &layout_delta(1.0));
    let u2 = Update::new("n2", &layout_delta(-3.0));
    let u3 = Update::new("n3", &layout_delta(0.5));
    assert_eq!(submit(&mut c1, &u1, 1).await.unwrap(), 1);
    assert_eq!(submit(&mut c2, &u2, 1).await.unwrap(), 2);

    proc1.0.kill().expect("SIGKILL");
    proc1.0.wait().unwrap();
    drop(proc1);

    let mut proc2 = spawn(&config, &listen);
    let mut c1 = ready(addr, &fx, "n1").await;
    let mut c3 = ready(addr, &fx, "n3").await;
    let s = submit(&mut c1, &u1, 1).await.unwrap_err();
    assert_eq!(reject_kind(&s), Some(RejectKind::Duplicate), "{s:?}");
    let ann1 = wait_round(&mut c1, 1).await;
    assert_eq!(ann1.round, 1, "same round resumed");
    assert_eq!(ann1.global_adapter_hash, ann.global_adapter_hash);
    submit(&mut c3, &u3, 1).await.unwrap();
    let ann2 = wait_round(&mut c1, 2).await;
    let g1 = fetch_global(&mut c1, &ann2.global_adapter_hash).await;
    assert_eq!(g1, offline_round(&g0, &[&u1, &u2, &u3]));

    // SIGTERM: a graceful exit with status 0 while clients are still connected.
    let mut watch = c1
        .watch_rounds(ruvdllm_proto::pb::WatchRoundsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    let pid = proc2.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = proc2.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.expect("exited after SIGTERM").success());
}

type Client = ruvdllm_proto::pb::coordinator_client::CoordinatorClient<tonic::transport::Channel>;

/// Connects the three nodes, submits `values` (one update each) in round `round`, and returns
/// the updates and the global the next round trains from.
async fn play_round(
    addr: std::net::SocketAddr,
    fx: &Fixture,
    round: u64,
    values: [f32; 3],
) -> (Vec<Update>, ruvdllm::delta::Delta) {
    let mut clients: Vec<Client> = Vec::new();
    for n in ["n1", "n2", "n3"] {
        clients.push(ready(addr, fx, n).await);
    }
    let updates: Vec<Update> = ["n1", "n2", "n3"]
        .iter()
        .zip(values)
        .map(|(n, v)| Update::new(n, &layout_delta(v)))
        .collect();
    for (c, u) in clients.iter_mut().zip(&updates) {
        submit(c, u, round).await.unwrap();
    }
    let ann = wait_round(&mut clients[0], round + 1).await;
    let next = fetch_global(&mut clients[0], &ann.global_adapter_hash).await;
    (updates, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_optimizer_moments_survive_sigkill() {
    let fx = Fixture::new(&["n1", "n2", "n3"]);
    let mut file = fx.config(3, 3, 120_000);
    file.aggregation.server_optimizer = Some("fedadam".into());
    let config = fx.write_config(&file);
    let opt = ruvdllm_coordinator::config::server_optimizer(&file.aggregation).unwrap();
    assert!(matches!(opt, ServerOptimizer::FedAdam { .. }));
    let addr = free_addr();
    let listen = addr.to_string();

    let mut proc1 = spawn(&config, &listen);
    let mut c = ready(addr, &fx, "n1").await;
    let ann = wait_round(&mut c, 1).await;
    let g0 = fetch_global(&mut c, &ann.global_adapter_hash).await;
    let (round1, g1) = play_round(addr, &fx, 1, [1.0, -3.0, 0.5]).await;
    let mut state = ServerState::default();
    let refs: Vec<&Update> = round1.iter().collect();
    assert_eq!(g1, offline_step(&g0, &refs, &opt, 1, &mut state));

    proc1.0.kill().expect("SIGKILL");
    proc1.0.wait().unwrap();
    drop(proc1);

    let _proc2 = spawn(&config, &listen);
    let (round2, g2) = play_round(addr, &fx, 2, [2.0, 0.25, -1.0]).await;
    let refs: Vec<&Update> = round2.iter().collect();
    let fresh = offline_step(&g1, &refs, &opt, 2, &mut ServerState::default());
    let expected = offline_step(&g1, &refs, &opt, 2, &mut state);
    // The restarted coordinator used round 1's moments: zero moments would give another global.
    assert_ne!(fresh, expected);
    assert_eq!(g2, expected);
}
