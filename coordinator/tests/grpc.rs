//! The coordinator over real gRPC + mutual TLS on 127.0.0.1: refusals with their reasons, the
//! round still closing correctly around them, authentication, revocation while running, and a
//! node that stops mid-upload being dropped at the deadline. Clients here are raw `ruvdllm.v1`
//! clients (no trainer involved).

mod common;

use common::*;
use ruvdllm_coordinator::daemon;
use ruvdllm_proto::{RejectKind, pb};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_have_reasons_and_the_round_still_closes() {
    let fx = Fixture::new(&["n1", "n2", "n3"]);
    let running = daemon::start(fx.config(3, 3, 60_000).validate().unwrap())
        .await
        .unwrap();
    let addr = running.addr;
    let mut c1 = connect(addr, fx.tls(Some("n1"))).await;
    let mut c2 = connect(addr, fx.tls(Some("n2"))).await;
    let mut c3 = connect(addr, fx.tls(Some("n3"))).await;
    for (c, n) in [(&mut c1, "n1"), (&mut c2, "n2"), (&mut c3, "n3")] {
        assert_eq!(register(c, n, BASE).await.unwrap(), 1);
    }
    let ann = wait_round(&mut c1, 1).await;
    let g0 = fetch_global(&mut c1, &ann.global_adapter_hash).await;
    assert!(g0.flatten().iter().all(|v| *v == 0.0), "zero initial B");

    let u1 = Update::new("n1", &layout_delta(1.0));
    let u2 = Update::new("n2", &layout_delta(2.0));
    let u3 = Update::new("n3", &layout_delta(4.0));
    submit(&mut c1, &u1, 1).await.unwrap();

    let expect = |r: Result<u32, tonic::Status>, code: Code, kind: RejectKind| {
        let s = r.expect_err("refused");
        assert_eq!(s.code(), code, "{s:?}");
        assert_eq!(reject_kind(&s), Some(kind), "{s:?}");
    };
    // Duplicate: n1 again with a different payload.
    let again = Update::new("n1", &layout_delta(1.5));
    expect(
        submit(&mut c1, &again, 1).await,
        Code::AlreadyExists,
        RejectKind::Duplicate,
    );
    // Replayed: n2 sends n1's exact payload.
    let replay = Update::raw("n2", u1.payload.clone());
    expect(
        submit(&mut c2, &replay, 1).await,
        Code::AlreadyExists,
        RejectKind::Replayed,
    );
    // Stale and future rounds.
    expect(
        submit(&mut c2, &u2, 0).await,
        Code::FailedPrecondition,
        RejectKind::StaleRound,
    );
    expect(
        submit(&mut c2, &u2, 2).await,
        Code::FailedPrecondition,
        RejectKind::FutureRound,
    );
    // Oversized: refused on the header, before any chunk.
    let big = Update::raw("n2", vec![7u8; 5000]);
    expect(
        submit(&mut c2, &big, 1).await,
        Code::ResourceExhausted,
        RejectKind::Oversized,
    );
    // NaN inside an otherwise valid payload.
    let nan = Update::raw("n2", nan_payload(&layout_delta(2.0)));
    expect(
        submit(&mut c2, &nan, 1).await,
        Code::InvalidArgument,
        RejectKind::NonFinite,
    );
    // Garbage.
    let junk = Update::raw("n2", vec![1u8; 300]);
    expect(
        submit(&mut c2, &junk, 1).await,
        Code::InvalidArgument,
        RejectKind::Malformed,
    );
    // Wrong layout.
    let mut short = layout_delta(2.0);
    short.tensors.pop();
    let short = Update::new("n2", &short);
    expect(
        submit(&mut c2, &short, 1).await,
        Code::InvalidArgument,
        RejectKind::Malformed,
    );
    // A header whose declared hash does not match the chunks.
    let mut msgs = u2.messages(1, 100);
    if let Some(pb::submit_message::Kind::Chunk(c)) = &mut msgs[1].kind {
        c.data[0] ^= 1;
    }
    let s = c2
        .submit_update(tokio_stream::iter(msgs))
        .await
        .expect_err("corrupted chunk refused");
    assert_eq!(reject_kind(&s), Some(RejectKind::Malformed), "{s:?}");

    // The round is still open with one update; two valid ones close it at quorum.
    submit(&mut c2, &u2, 1).await.unwrap();
    assert_eq!(
        submit(&mut c3, &u3, 1).await.unwrap(),
        0,
        "closed at quorum"
    );
    let ann2 = wait_round(&mut c1, 2).await;
    let g1 = fetch_global(&mut c1, &ann2.global_adapter_hash).await;
    assert_eq!(g1, offline_round(&g0, &[&u1, &u2, &u3]));
    // A late resubmission for round 1 is stale now.
    expect(
        submit(&mut c1, &u1, 1).await,
        Code::FailedPrecondition,
        RejectKind::StaleRound,
    );

    let text = scrape(running.metrics_addr.unwrap()).await;
    for reason in [
        "duplicate",
        "replayed",
        "stale-round",
        "future-round",
        "oversized",
        "non-finite",
        "malformed",
    ] {
        assert!(
            text.contains(&format!("updates_rejected_total{{reason=\"{reason}\"}}")),
            "{reason} missing from\n{text}"
        );
    }
    assert!(
        text.contains("ruvdllm_coordinator_rounds_total 1"),
        "{text}"
    );
    assert!(
        text.contains("ruvdllm_coordinator_updates_accepted_total 3"),
        "{text}"
    );
    let counter = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("ruvdllm_coordinator_{name}_total ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    // Socket counts include TLS and HTTP/2 on top of the payload chunks.
    assert!(counter("payload_bytes_in") > 0);
    assert!(counter("socket_bytes_read") > counter("payload_bytes_in"));
    assert!(counter("socket_bytes_written") > counter("payload_bytes_out"));
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_foreign_revoked_and_wrong_base_are_refused() {
    let fx = Fixture::new(&["n1", "n2"]);
    let running = daemon::start(fx.config(3, 3, 60_000).validate().unwrap())
        .await
        .unwrap();
    let addr = running.addr;

    // No client certificate: the TLS handshake is refused.
    let mut anon = connect(addr, fx.tls(None)).await;
    let s = register(&mut anon, "n1", BASE)
        .await
        .expect_err("no certificate");
    assert_ne!(s.code(), Code::Ok);

    // A certificate from another CA with a valid-looking name.
    let other = Fixture::new(&["n1"]);
    let ca = std::fs::read(fx.pki.ca_cert()).unwrap();
    let foreign_tls = tonic::transport::ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(other.pki.node_cert("n1")).unwrap(),
            std::fs::read(other.pki.node_key("n1")).unwrap(),
        ));
    let mut foreign = connect(addr, foreign_tls).await;
    assert!(register(&mut foreign, "n1", BASE).await.is_err());

    // Claiming another node's id.
    let mut c1 = connect(addr, fx.tls(Some("n1"))).await;
    let s = register(&mut c1, "n2", BASE).await.unwrap_err();
    assert_eq!(reject_kind(&s), Some(RejectKind::IdentityMismatch));

    // A different base model.
    let s = register(&mut c1, "n1", &"2".repeat(64)).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert_eq!(reject_kind(&s), Some(RejectKind::BaseModelMismatch));

    // Registered, then revoked while the coordinator runs.
    register(&mut c1, "n1", BASE).await.unwrap();
    let mut c2 = connect(addr, fx.tls(Some("n2"))).await;
    register(&mut c2, "n2", BASE).await.unwrap();
    ruvdllm_coordinator::certs::revoke(&fx.pki.revocation_list(), "n1").unwrap();
    let s = c1
        .heartbeat(pb::HeartbeatRequest { round: 1 })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    assert_eq!(reject_kind(&s), Some(RejectKind::Revoked));
    let s = submit(&mut c1, &Update::new("n1", &layout_delta(1.0)), 1)
        .await
        .unwrap_err();
    assert_eq!(reject_kind(&s), Some(RejectKind::Revoked));
    // Others are unaffected.
    c2.heartbeat(pb::HeartbeatRequest { round: 1 })
        .await
        .unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_stopping_mid_upload_is_dropped_at_the_deadline() {
    let nodes = ["n1", "n2", "n3", "n4"];
    let fx = Fixture::new(&nodes);
    // Quorum 4 never comes; the deadline closes the round with the three complete updates.
    let running = daemon::start(fx.config(3, 4, 1500).validate().unwrap())
        .await
        .unwrap();
    let addr = running.addr;
    let mut clients = Vec::new();
    for n in nodes {
        let mut c = connect(addr, fx.tls(Some(n))).await;
        register(&mut c, n, BASE).await.unwrap();
        clients.push(c);
    }
    let ann = wait_round(&mut clients[0], 1).await;
    let g0 = fetch_global(&mut clients[0], &ann.global_adapter_hash).await;
    let updates: Vec<Update> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Update::new(n, &layout_delta(i as f32 + 1.0)))
        .collect();
    for (c, u) in clients.iter_mut().zip(&updates).take(3) {
        submit(c, u, 1).await.unwrap();
    }
    // n4 sends its header and first chunk, then stalls.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let msgs = updates[3].messages(1, 16);
    assert!(msgs.len() > 2);
    tx.send(msgs[0].clone()).await.unwrap();
    tx.send(msgs[1].clone()).await.unwrap();
    let mut c4 = clients[3].clone();
    let upload = tokio::spawn(async move {
        c4.submit_update(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let ann2 = wait_round(&mut clients[0], 2).await;
    let g1 = fetch_global(&mut clients[0], &ann2.global_adapter_hash).await;
    assert_eq!(
        g1,
        offline_round(&g0, &[&updates[0], &updates[1], &updates[2]])
    );
    // The straggler gives up; its upload fails and did not count.
    drop(tx);
    let r = upload.await.unwrap();
    assert!(r.is_err());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn central_dp_from_the_config_file_privatizes_the_round_and_reports_epsilon() {
    let fx = Fixture::new(&["n1", "n2", "n3"]);
    let mut cfg = fx.config(3, 3, 60_000);
    for b in [
        &mut cfg.aggregation.coarse,
        &mut cfg.aggregation.domain,
        &mut cfg.aggregation.fine,
        &mut cfg.aggregation.other,
    ] {
        b.rule = Some("fedavg".into());
        b.weights = Some("uniform".into());
    }
    cfg.privacy = toml::from_str(
        "clip = 1.0\nnoise_multiplier = 0.2\nexpected_nodes = 3\nseed = 5\ntarget_quantile = 0.5",
    )
    .unwrap();
    let running = daemon::start(cfg.validate().unwrap()).await.unwrap();
    let mut c: Vec<_> = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let mut cl = connect(running.addr, fx.tls(Some(n))).await;
        assert_eq!(register(&mut cl, n, BASE).await.unwrap(), 1);
        c.push(cl);
    }
    wait_round(&mut c[0], 1).await;
    let updates: Vec<Update> = [("n1", 1.0), ("n2", 2.0), ("n3", 4.0)]
        .iter()
        .map(|(n, v)| Update::new(n, &layout_delta(*v)))
        .collect();
    for (cl, u) in c.iter_mut().zip(&updates) {
        submit(cl, u, 1).await.unwrap();
    }
    let ann = wait_round(&mut c[0], 2).await;
    let g1 = fetch_global(&mut c[0], &ann.global_adapter_hash).await;
    // Each update was clipped to norm 1 (their norms are 4–17) and the sum divided by m = 3, so
    // the global is near norm 1 plus the noise, where the plain mean would have norm ≈ 8.
    let norm = |d: &ruvdllm::delta::Delta| {
        d.flatten()
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    assert!(norm(&layout_delta(7.0 / 3.0)) > 5.0);
    assert!(norm(&g1).is_finite() && norm(&g1) < 2.0, "{}", norm(&g1));
    let text = running.service.metrics().render();
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("ruvdllm_coordinator_{name} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    assert!(gauge("dp_epsilon") > 0.0);
    // Every update's norm is above 1: the adaptive bound grows for round 2.
    assert!(gauge("dp_clip") > 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sampling_announces_the_draw_and_refuses_the_others() {
    let fx = Fixture::new(&["n1", "n2", "n3"]);
    let mut file = fx.config(1, 3, 60_000);
    // One of three nodes per round, drawn once all three are registered.
    file.round.fraction_fit = Some(0.34);
    file.round.min_fit_nodes = Some(1);
    file.round.min_available_nodes = Some(3);
    let running = daemon::start(file.validate().unwrap()).await.unwrap();
    let addr = running.addr;
    let mut clients = Vec::new();
    for n in ["n1", "n2", "n3"] {
        let mut c = connect(addr, fx.tls(Some(n))).await;
        assert_eq!(register(&mut c, n, BASE).await.unwrap(), 1);
        clients.push(c);
    }
    // Round 1 is announced again once drawn: one node, the wanted size, quorum capped.
    let ann = loop {
        let a = wait_round(&mut clients[0], 1).await;
        if !a.selected.is_empty() {
            break a;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (
            ann.sample_size,
            ann.selected.len(),
            ann.quorum,
            ann.min_nodes
        ),
        (1, 1, 1, 1)
    );
    let drawn = ann.selected[0].clone();
    let idx = |n: &str| ["n1", "n2", "n3"].iter().position(|x| *x == n).unwrap();
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != drawn)
        .unwrap();
    let refused = submit(
        &mut clients[idx(other)],
        &Update::new(other, &layout_delta(1.0)),
        1,
    )
    .await
    .expect_err("not drawn");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert_eq!(reject_kind(&refused), Some(RejectKind::NotSelected));
    // The drawn node's update alone closes the round.
    submit(
        &mut clients[idx(&drawn)],
        &Update::new(&drawn, &layout_delta(2.0)),
        1,
    )
    .await
    .unwrap();
    let next = wait_round(&mut clients[0], 2).await;
    assert_eq!(next.selected.len(), 1);
    let text = scrape(running.metrics_addr.unwrap()).await;
    assert!(text.contains("ruvdllm_coordinator_drawn_nodes 1"), "{text}");
    assert!(text.contains("reason=\"not-selected\""), "{text}");
    running.shutdown().await.unwrap();
}
