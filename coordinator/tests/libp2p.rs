//! The coordinator over libp2p on 127.0.0.1, driven by raw `/ruvdllm/1.0.0` exchanges: a peer not
//! on the allowlist is refused before any service call, removing a line from the allowlist file
//! revokes that node without a restart (and adding it back re-admits it), and uploads are refused
//! with the same reason codes as over gRPC while the round still closes.

mod common;

use std::time::Duration;

use common::{BASE, Fixture, Update, layout_delta};
use ruvdllm_coordinator::config::{File, Libp2pSection, TransportKind};
use ruvdllm_coordinator::daemon::{self, Running};
use ruvdllm_proto::exchange::{self, chunk_at, chunk_count};
use ruvdllm_proto::p2p::{self, Client, Keypair, P2pError};
use ruvdllm_proto::pb::p2p_request::Kind as Request;
use ruvdllm_proto::pb::p2p_response::Kind as Response;
use ruvdllm_proto::{CHUNK_SIZE, pb};

fn libp2p_config(fx: &Fixture, min_nodes: usize, quorum: usize) -> File {
    let mut cfg = fx.config(min_nodes, quorum, 120_000);
    cfg.transport = TransportKind::Libp2p;
    cfg.libp2p = Libp2pSection {
        listen: "/ip4/127.0.0.1/tcp/0".into(),
        key: fx.path().join("coordinator.key"),
        allowlist: fx.path().join("allowlist.txt"),
        poll_wait_ms: 500,
    };
    p2p::generate_keypair(&cfg.libp2p.key).unwrap();
    cfg
}

fn allow(cfg: &File, nodes: &[(&str, &Keypair)]) {
    let text: String = nodes
        .iter()
        .map(|(n, k)| format!("{} {n}\n", p2p::peer_id(k)))
        .collect();
    // A comment line keeps the file non-empty and its size distinct between edits.
    let text = format!("# allowlist, {} nodes\n{text}", nodes.len());
    std::fs::write(&cfg.libp2p.allowlist, text).unwrap();
}

fn connect(running: &Running, key: &Keypair) -> Client {
    let config = p2p::Config {
        connect_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..p2p::Config::default()
    };
    let addr = running.p2p.as_ref().unwrap().listen_addr().clone();
    Client::connect(key.clone(), addr, config).unwrap()
}

async fn call(c: &Client, r: Request) -> Result<Response, P2pError> {
    let bytes = c.request(exchange::request(r)).await?;
    Ok(exchange::decode_response(&bytes).unwrap())
}

fn register(node: &str) -> Request {
    Request::Register(pb::RegisterRequest {
        node_id: node.into(),
        base_model_hash: BASE.into(),
    })
}

fn heartbeat() -> Request {
    Request::Heartbeat(pb::HeartbeatRequest { round: 1 })
}

/// The refusal code of an error answer.
fn reject(r: &Response) -> &str {
    match r {
        Response::Error(e) => &e.reject,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The upload exchanges of `u` for `round` (chunk `i` of `n`, header repeated).
fn upload(u: &Update, round: u64) -> Vec<Request> {
    let h: pb::UpdateHeader = u.header(round).into();
    let sha = &h.payload_sha256;
    (0..chunk_count(h.payload_size))
        .map(|i| {
            Request::UploadChunk(pb::UploadChunkRequest {
                header: Some(h.clone()),
                index: i,
                chunk: chunk_at(&u.payload, sha, i),
            })
        })
        .collect()
}

async fn submit(c: &Client, u: &Update, round: u64) -> Response {
    let mut last = None;
    for r in upload(u, round) {
        let answer = call(c, r).await.unwrap();
        if matches!(answer, Response::Error(_)) {
            return answer;
        }
        last = Some(answer);
    }
    last.unwrap()
}

fn refused_at_transport(r: Result<Response, P2pError>) -> bool {
    matches!(
        r,
        Err(P2pError::Unauthorized | P2pError::ConnectionClosed | P2pError::NotConnected { .. })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_strangers_and_an_edit_revokes_without_restart() {
    let fx = Fixture::new(&[]);
    let cfg = libp2p_config(&fx, 1, 3);
    let (alpha, beta, stranger) = (
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
        Keypair::generate_ed25519(),
    );
    allow(&cfg, &[("alpha", &alpha), ("beta", &beta)]);
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();
    let metrics = running.service.metrics().clone();

    let a = connect(&running, &alpha);
    assert!(matches!(
        call(&a, register("alpha")).await.unwrap(),
        Response::Register(pb::RegisterResponse { current_round: 1 })
    ));
    // Identity is the peer id: alpha's key cannot register as beta.
    let r = call(&a, register("beta")).await.unwrap();
    assert_eq!(reject(&r), "identity-mismatch");

    let s = connect(&running, &stranger);
    let r = call(&s, register("stranger")).await;
    assert!(refused_at_transport(r), "stranger admitted");
    // Refused before any service call: the service never saw it.
    let text = metrics.render();
    assert!(
        !text.contains(&p2p::peer_id(&stranger).to_string()),
        "{text}"
    );
    assert!(!text.contains("node=\"stranger\""), "{text}");

    // Remove alpha's line: its next request is refused, with no restart.
    allow(&cfg, &[("beta", &beta)]);
    let mut revoked = false;
    for _ in 0..100 {
        if refused_at_transport(call(&a, heartbeat()).await) {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        revoked,
        "alpha still served after its allowlist line was removed"
    );
    let b = connect(&running, &beta);
    assert!(matches!(
        call(&b, heartbeat()).await.unwrap(),
        Response::Heartbeat(_)
    ));

    // Put it back: admitted again (the client redials on its own).
    allow(&cfg, &[("alpha", &alpha), ("beta", &beta)]);
    let mut back = false;
    for _ in 0..100 {
        if matches!(call(&a, heartbeat()).await, Ok(Response::Heartbeat(_))) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "alpha not re-admitted");
    for c in [a, b, s] {
        c.shutdown().await;
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_refused_with_reasons_and_the_round_closes() {
    let fx = Fixture::new(&[]);
    let mut cfg = libp2p_config(&fx, 3, 3);
    cfg.round.max_payload_bytes = 3 * CHUNK_SIZE as u64;
    let names = ["n1", "n2", "n3"];
    let keys: Vec<Keypair> = names.iter().map(|_| Keypair::generate_ed25519()).collect();
    let pairs: Vec<(&str, &Keypair)> = names.iter().copied().zip(&keys).collect();
    allow(&cfg, &pairs);
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();
    let clients: Vec<Client> = keys.iter().map(|k| connect(&running, k)).collect();
    for (c, n) in clients.iter().zip(names) {
        assert!(matches!(
            call(c, register(n)).await.unwrap(),
            Response::Register(_)
        ));
    }
    // The long-poll answers the open round at once for a node that saw none.
    let Response::Round(ann) = call(
        &clients[0],
        Request::PollRound(pb::PollRoundRequest {
            last_round: 0,
            last_deadline_unix_ms: 0,
        }),
    )
    .await
    .unwrap() else {
        panic!("no round")
    };
    assert_eq!(ann.round, 1);

    // Chunk 1 before chunk 0, a stale round, an oversized declaration, a NaN payload.
    let u1 = Update::new("n1", &layout_delta(1.0));
    let mut steps = upload(&u1, 1);
    assert_eq!(steps.len(), 1);
    if let Request::UploadChunk(m) = &mut steps[0] {
        m.index = 1;
    }
    let r = call(&clients[0], steps.remove(0)).await.unwrap();
    assert_eq!(reject(&r), "malformed");
    assert_eq!(reject(&submit(&clients[0], &u1, 0).await), "stale-round");
    let big = Update::raw("n1", vec![7; 3 * CHUNK_SIZE + 1]);
    assert_eq!(reject(&submit(&clients[0], &big, 1).await), "oversized");
    let nan = Update::raw("n1", common::nan_payload(&layout_delta(1.0)));
    assert_eq!(reject(&submit(&clients[0], &nan, 1).await), "non-finite");

    // A multi-chunk payload assembles (it is malformed as a delta, refused after assembly).
    let junk = Update::raw("n2", vec![1; CHUNK_SIZE + 5]);
    assert_eq!(reject(&submit(&clients[1], &junk, 1).await), "malformed");

    // Valid uploads; a second one from the same node is a duplicate.
    let u2 = Update::new("n2", &layout_delta(2.0));
    let u3 = Update::new("n3", &layout_delta(3.0));
    assert!(matches!(
        submit(&clients[0], &u1, 1).await,
        Response::Submitted(pb::SubmitResponse { round: 1, .. })
    ));
    assert_eq!(reject(&submit(&clients[0], &u1, 1).await), "duplicate");
    assert!(matches!(
        submit(&clients[1], &u2, 1).await,
        Response::Submitted(_)
    ));
    // Replaying n1's payload from n3 is refused; n3's own closes the round at quorum.
    let replay = Update::raw("n3", u1.payload.clone());
    assert_eq!(reject(&submit(&clients[2], &replay, 1).await), "replayed");
    assert!(matches!(
        submit(&clients[2], &u3, 1).await,
        Response::Submitted(pb::SubmitResponse { accepted: 0, .. })
    ));
    // The long-poll of a node that saw round 1 now answers round 2, and the new global is the
    // offline aggregate of the three accepted updates.
    let Response::Round(ann) = call(
        &clients[0],
        Request::PollRound(pb::PollRoundRequest {
            last_round: 1,
            last_deadline_unix_ms: ann.deadline_unix_ms,
        }),
    )
    .await
    .unwrap() else {
        panic!("no round")
    };
    assert_eq!(ann.round, 2);
    let mut bytes = Vec::new();
    let mut n = 1;
    let mut i = 0;
    while i < n {
        let Response::Chunk(c) = call(
            &clients[1],
            Request::FetchChunk(pb::FetchChunkRequest {
                hash: ann.global_adapter_hash.clone(),
                index: i,
            }),
        )
        .await
        .unwrap() else {
            panic!("no chunk")
        };
        n = chunk_count(c.total);
        bytes.extend_from_slice(&c.data);
        i += 1;
    }
    assert_eq!(ruvdllm_proto::sha256_hex(&bytes), ann.global_adapter_hash);
    let served = ruvdllm::codec::decode(&bytes, &ruvdllm::codec::Limits::default()).unwrap();
    let expected =
        common::offline_round(&cfg.validate().unwrap().initial_adapter, &[&u1, &u2, &u3]);
    assert_eq!(served, expected);
    // Past the last chunk: refused, not a panic.
    let r = call(
        &clients[1],
        Request::FetchChunk(pb::FetchChunkRequest {
            hash: ann.global_adapter_hash.clone(),
            index: n,
        }),
    )
    .await
    .unwrap();
    assert_eq!(reject(&r), "malformed");

    let text = running.service.metrics().render();
    for reason in [
        "malformed",
        "stale-round",
        "oversized",
        "non-finite",
        "duplicate",
        "replayed",
    ] {
        assert!(
            text.contains(&format!("reason=\"{reason}\"")),
            "{reason}: {text}"
        );
    }
    for c in clients {
        c.shutdown().await;
    }
    running.shutdown().await.unwrap();
}
