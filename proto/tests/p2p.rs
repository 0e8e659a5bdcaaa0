//! The libp2p transport over real loopback sockets: round trips with large payloads, size limits,
//! long-polls beside ordinary requests, the allowlist (refusal, live add and remove), byte counters
//! and reconnection after a server restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt;
use ruvdllm_proto::p2p::{
    Client, Config, Handler, Identity, Keypair, Multiaddr, P2pError, Server, ServerHandle,
    generate_keypair, load_keypair, peer_id,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn config() -> Config {
    Config {
        request_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        allowlist_poll_interval: Duration::from_millis(50),
        ..Config::default()
    }
}

fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn write_allowlist(path: &Path, entries: &[(&Keypair, &str)]) {
    let mut text = String::from("# test allowlist\n");
    for (kp, name) in entries {
        text.push_str(&format!("{} {name}\n", peer_id(kp)));
    }
    // Write-then-rename, as an operator's editor or config management would.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Echoes the request, except: `whoami` answers the node name, `fail` answers an error, `big` answers 2 MiB, `wait`
/// answers `released` once `release` is notified. Counts calls.
fn test_handler(calls: Arc<AtomicUsize>, release: Arc<Notify>) -> Handler {
    Arc::new(move |who: Identity, req: Vec<u8>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let release = Arc::clone(&release);
        async move {
            match req.as_slice() {
                b"whoami" => Ok(who.name.into_bytes()),
                b"fail" => Err("no such round".to_string()),
                b"big" => Ok(vec![0u8; 2 << 20]),
                b"wait" => {
                    release.notified().await;
                    Ok(b"released".to_vec())
                }
                _ => Ok(req),
            }
        }
        .boxed()
    })
}

struct Fixture {
    _dir: tempfile::TempDir,
    allowlist: PathBuf,
    server_key: Keypair,
    calls: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl Fixture {
    fn new(allowed: &[(&Keypair, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let allowlist = dir.path().join("allowlist.txt");
        write_allowlist(&allowlist, allowed);
        Self {
            _dir: dir,
            allowlist,
            server_key: Keypair::generate_ed25519(),
            calls: Arc::new(AtomicUsize::new(0)),
            release: Arc::new(Notify::new()),
        }
    }

    async fn start(&self, listen: Multiaddr, config: Config) -> (ServerHandle, JoinHandle<()>) {
        let handler = test_handler(Arc::clone(&self.calls), Arc::clone(&self.release));
        Server::spawn(
            self.server_key.clone(),
            listen,
            &self.allowlist,
            handler,
            config,
        )
        .await
        .unwrap()
    }
}

/// Repeats `req` until it succeeds or `limit` passes; returns the last result.
async fn retry(client: &Client, req: &[u8], limit: Duration) -> Result<Vec<u8>, P2pError> {
    let end = Instant::now() + limit;
    loop {
        let r = client.request(req.to_vec()).await;
        if r.is_ok() || Instant::now() >= end {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn round_trip_large_payload_and_byte_counters() {
    let node = Keypair::generate_ed25519();
    let fx = Fixture::new(&[(&node, "node-1")]);
    let (server, join) = fx.start(loopback(), config()).await;
    let client = Client::connect(node.clone(), server.listen_addr().clone(), config()).unwrap();

    assert_eq!(client.request(b"whoami".to_vec()).await.unwrap(), b"node-1");
    assert_eq!(client.request(Vec::new()).await.unwrap(), b"");
    match client.request(b"fail".to_vec()).await {
        Err(P2pError::Remote { message }) => assert_eq!(message, "no such round"),
        other => panic!("expected a remote error, got {other:?}"),
    }

    let payload: Vec<u8> = (0..5_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let echoed = client.request(payload.clone()).await.unwrap();
    assert_eq!(echoed, payload);

    let peers = server.peer_counters();
    let ours = peers.get(&peer_id(&node)).expect("per-peer counters");
    let c = client.counters().snapshot();
    let s = server.counters().snapshot();
    let p = ours.snapshot();
    let n = payload.len() as u64;
    assert!(c.sent >= n && c.received >= n, "client {c:?}");
    assert!(s.sent >= n && s.received >= n, "server {s:?}");
    assert!(
        p.sent >= n && p.received >= n && p.sent <= s.sent,
        "peer {p:?} total {s:?}"
    );
    // The payload dominates; framing, Noise tags and yamux headers add well under 1 %.
    assert!(c.sent < n + n / 100 + 16_384, "client sent {c:?}");
    // What one side wrote the other read, up to frames still in flight (window updates, closes).
    let slack = 16_384;
    assert!(
        c.sent.abs_diff(s.received) < slack,
        "client {c:?} server {s:?}"
    );
    assert!(
        s.sent.abs_diff(c.received) < slack,
        "client {c:?} server {s:?}"
    );
    assert_eq!(server.connected_peers().await.unwrap()[0].name, "node-1");

    client.shutdown().await;
    server.shutdown().await;
    join.await.unwrap();
}

#[tokio::test]
async fn message_size_limits_are_enforced() {
    let node = Keypair::generate_ed25519();
    let fx = Fixture::new(&[(&node, "node-1")]);
    let small = Config {
        max_message_size: 1 << 20,
        ..config()
    };
    let (server, join) = fx.start(loopback(), small).await;
    let client = Client::connect(node, server.listen_addr().clone(), config()).unwrap();

    // Over the client's own limit: refused before anything is sent.
    let huge = vec![0u8; (8 << 20) + 1];
    assert!(matches!(
        client.request(huge).await,
        Err(P2pError::MessageTooLarge { size, max }) if size == (8 << 20) + 1 && max == 8 << 20
    ));
    // Within the client's limit but over the server's: the server refuses the stream.
    let calls_before = fx.calls.load(Ordering::SeqCst);
    let r = client.request(vec![1u8; 2 << 20]).await;
    assert!(r.is_err(), "server accepted an oversized request");
    assert_eq!(fx.calls.load(Ordering::SeqCst), calls_before, "handler ran");
    // The connection is still usable, and a 1 MiB request fits exactly.
    let exact = vec![2u8; 1 << 20];
    assert_eq!(
        retry(&client, &exact, Duration::from_secs(5))
            .await
            .unwrap(),
        exact
    );
    // A response over the server's limit becomes an error message, not a broken stream.
    match client.request(b"big".to_vec()).await {
        Err(P2pError::Remote { message }) => assert!(message.contains("exceeds"), "{message}"),
        other => panic!("expected a remote error, got {other:?}"),
    }

    client.shutdown().await;
    server.shutdown().await;
    join.await.unwrap();
}

#[tokio::test]
async fn long_poll_does_not_block_other_requests() {
    let node = Keypair::generate_ed25519();
    let fx = Fixture::new(&[(&node, "node-1")]);
    let (server, join) = fx.start(loopback(), config()).await;
    let client = Arc::new(Client::connect(node, server.listen_addr().clone(), config()).unwrap());

    let poll = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.request(b"wait".to_vec()).await })
    };
    // Wait until the long-poll reached the handler, then run ordinary requests beside it.
    let end = Instant::now() + Duration::from_secs(10);
    while fx.calls.load(Ordering::SeqCst) == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut others = Vec::new();
    for i in 0..8u8 {
        let client = Arc::clone(&client);
        others.push(tokio::spawn(
            async move { client.request(vec![i; 1000]).await },
        ));
    }
    for (i, h) in others.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap(), vec![i as u8; 1000]);
    }
    assert!(
        !poll.is_finished(),
        "the long-poll answered before it was released"
    );
    fx.release.notify_one();
    assert_eq!(poll.await.unwrap().unwrap(), b"released");

    Arc::try_unwrap(client).ok().unwrap().shutdown().await;
    server.shutdown().await;
    join.await.unwrap();
}

#[tokio::test]
async fn allowlist_refuses_then_admits_then_removes_without_restart() {
    let known = Keypair::generate_ed25519();
    let stranger = Keypair::generate_ed25519();
    let fx = Fixture::new(&[(&known, "node-1")]);
    let (server, join) = fx.start(loopback(), config()).await;
    let quick = Config {
        connect_timeout: Duration::from_millis(500),
        ..config()
    };
    let client = Client::connect(stranger.clone(), server.listen_addr().clone(), quick).unwrap();

    for _ in 0..3 {
        let r = client.request(b"whoami".to_vec()).await;
        assert!(
            matches!(
                r,
                Err(P2pError::Unauthorized
                    | P2pError::ConnectionClosed
                    | P2pError::NotConnected { .. })
            ),
            "stranger got {r:?}"
        );
    }
    assert_eq!(
        fx.calls.load(Ordering::SeqCst),
        0,
        "handler ran for a stranger"
    );
    assert!(server.peer_counters().get(&peer_id(&stranger)).is_none());
    assert!(
        server.counters().snapshot().received > 0,
        "refused bytes still count"
    );

    write_allowlist(&fx.allowlist, &[(&known, "node-1"), (&stranger, "node-7")]);
    let r = retry(&client, b"whoami", Duration::from_secs(10)).await;
    assert_eq!(r.unwrap(), b"node-7");

    write_allowlist(&fx.allowlist, &[(&known, "node-1")]);
    let end = Instant::now() + Duration::from_secs(10);
    let mut refused = false;
    while Instant::now() < end {
        if client.request(b"whoami".to_vec()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "a removed peer is still served");

    client.shutdown().await;
    server.shutdown().await;
    join.await.unwrap();
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node_key = dir.path().join("node.key");
    let node = generate_keypair(&node_key).unwrap();
    let fx = Fixture::new(&[(&node, "node-1")]);
    let (server, join) = fx.start(loopback(), config()).await;
    let addr = server.listen_addr().clone();
    assert_eq!(server.peer_id(), peer_id(&fx.server_key));

    let client = Client::connect(load_keypair(&node_key).unwrap(), addr.clone(), config()).unwrap();
    assert_eq!(client.request(b"one".to_vec()).await.unwrap(), b"one");

    server.shutdown().await;
    join.await.unwrap();
    // Nobody listens now: requests fail, they do not hang.
    let quick = client.request(b"two".to_vec()).await;
    assert!(quick.is_err(), "answered with no server: {quick:?}");

    // Same key, same port: the client finds it again without being told.
    let mut listen = addr.clone();
    listen.pop();
    let (server, join) = fx.start(listen, config()).await;
    assert_eq!(server.listen_addr(), &addr);
    let r = retry(&client, b"three", Duration::from_secs(10)).await;
    assert_eq!(r.unwrap(), b"three");

    client.shutdown().await;
    server.shutdown().await;
    join.await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_running_requests_answer() {
    let node = Keypair::generate_ed25519();
    let fx = Fixture::new(&[(&node, "node-1")]);
    let (server, join) = fx.start(loopback(), config()).await;
    let client = Arc::new(Client::connect(node, server.listen_addr().clone(), config()).unwrap());
    let poll = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.request(b"wait".to_vec()).await })
    };
    let end = Instant::now() + Duration::from_secs(10);
    while fx.calls.load(Ordering::SeqCst) == 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.shutdown().await;
    assert!(!join.is_finished());
    fx.release.notify_one();
    assert_eq!(poll.await.unwrap().unwrap(), b"released");
    join.await.unwrap();
    assert!(matches!(
        server.connected_peers().await,
        Err(P2pError::Shutdown)
    ));
    Arc::try_unwrap(client).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn bad_inputs_get_typed_errors() {
    let fx = Fixture::new(&[]);
    let bare: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    assert!(matches!(
        Client::connect(Keypair::generate_ed25519(), bare, config()),
        Err(P2pError::InvalidAddress { .. })
    ));
    let handler = test_handler(Arc::clone(&fx.calls), Arc::clone(&fx.release));
    let missing = fx.allowlist.with_file_name("missing.txt");
    let r = Server::spawn(
        fx.server_key.clone(),
        loopback(),
        missing,
        handler,
        config(),
    )
    .await;
    assert!(matches!(r, Err(P2pError::Allowlist(_))));
}
