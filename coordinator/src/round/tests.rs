//! State-machine tests with explicit time: every refusal, quorum close, deadline close, extension
//! below `min_nodes`, revocation, and equality with an offline aggregation.

use std::collections::BTreeMap;

use ruvdllm::aggregate::daf::{DafConfig, GroupConfig, aggregate_band_refs};
use ruvdllm::aggregate::{Rule, ServerOptimizer, ServerState};
use ruvdllm::codec;
use ruvdllm::delta::{Delta, NamedTensor};

use super::close::{daf_inputs, daf_refs};
use super::*;

const HASH: &str = "base";

fn layout(v: f32) -> Delta {
    Delta::new(vec![
        NamedTensor::new("talora.coarse.q.lora_B.weight", vec![2, 1], vec![v, v]).unwrap(),
        NamedTensor::new("talora.domain.q.lora_B.weight", vec![2], vec![v, 2.0 * v]).unwrap(),
        NamedTensor::new("talora.fine.q.lora_B.weight", vec![1], vec![-v]).unwrap(),
    ])
    .unwrap()
}

fn cfg() -> Config {
    Config {
        min_nodes: 3,
        quorum: 4,
        round_ms: 1000,
        base_model_hash: HASH.into(),
        run_seed: 7,
        max_payload_bytes: 1000,
        daf: DafConfig::new(0),
        server_opt: ServerOptimizer::default(),
        central_dp: None,
        sampling: None,
    }
}

fn machine() -> Machine {
    let mut m = Machine::new(cfg(), layout(0.0), 0);
    for n in ["a", "b", "c", "d", "e"] {
        let acts = m.handle(0, register(n, HASH));
        assert!(acts.contains(&Action::Registered { node: n.into() }));
    }
    m
}

fn register(node: &str, hash: &str) -> Event {
    Event::Register {
        node: node.into(),
        base_model_hash: hash.into(),
    }
}

fn sub(node: &str, round: u64, sha: &str, v: f32) -> Event {
    Event::Submit(Submission {
        node: node.into(),
        round,
        samples: 10,
        band_metrics: BTreeMap::from([("domain".to_string(), 1.0)]),
        payload_sha256: sha.into(),
        payload_len: 100,
        decoded: Ok(layout(v)),
    })
}

fn rejected(acts: &[Action]) -> Option<&Reject> {
    acts.iter().find_map(|a| match a {
        Action::Rejected { reason, .. } => Some(reason),
        _ => None,
    })
}

fn closed(acts: &[Action]) -> Option<&CloseReport> {
    acts.iter().find_map(|a| match a {
        Action::RoundClosed(r) => Some(r),
        _ => None,
    })
}

#[test]
fn every_refusal_reason() {
    let mut m = machine();
    assert!(matches!(
        m.handle(1, register("x", "other")).as_slice(),
        [Action::Rejected {
            reason: Reject::BaseModelMismatch { .. },
            ..
        }]
    ));
    let r = |m: &mut Machine, e| rejected(&m.handle(1, e)).cloned();
    assert!(matches!(
        r(&mut m, sub("x", 1, "h0", 1.0)),
        Some(Reject::UnknownNode { .. })
    ));
    assert!(r(&mut m, sub("a", 1, "h1", 1.0)).is_none());
    assert!(matches!(
        r(&mut m, sub("a", 1, "h2", 1.0)),
        Some(Reject::Duplicate { round: 1, .. })
    ));
    assert!(matches!(
        r(&mut m, sub("b", 1, "h1", 1.0)),
        Some(Reject::Replayed { first_round: 1, .. })
    ));
    assert!(matches!(
        r(&mut m, sub("b", 0, "h3", 1.0)),
        Some(Reject::StaleRound { got: 0, current: 1 })
    ));
    assert!(matches!(
        r(&mut m, sub("b", 2, "h3", 1.0)),
        Some(Reject::FutureRound { got: 2, current: 1 })
    ));
    let mut big = Submission {
        node: "b".into(),
        round: 1,
        samples: 1,
        band_metrics: BTreeMap::new(),
        payload_sha256: "h4".into(),
        payload_len: 1001,
        decoded: Ok(layout(1.0)),
    };
    assert!(matches!(
        r(&mut m, Event::Submit(big)),
        Some(Reject::Oversized {
            len: 1001,
            limit: 1000
        })
    ));
    big = Submission {
        node: "b".into(),
        round: 1,
        samples: 1,
        band_metrics: BTreeMap::new(),
        payload_sha256: "h5".into(),
        payload_len: 10,
        decoded: Err(codec::Error::BadMagic { found: [0; 4] }),
    };
    assert!(matches!(
        r(&mut m, Event::Submit(big)),
        Some(Reject::Malformed { .. })
    ));
    let mut wrong = layout(1.0);
    wrong.tensors.pop();
    let e = Event::Submit(Submission {
        node: "b".into(),
        round: 1,
        samples: 1,
        band_metrics: BTreeMap::new(),
        payload_sha256: "h6".into(),
        payload_len: 10,
        decoded: Ok(wrong),
    });
    assert!(matches!(r(&mut m, e), Some(Reject::Malformed { .. })));
    let mut nan = layout(1.0);
    nan.tensors[0].data[0] = f32::NAN;
    let e = Event::Submit(Submission {
        node: "b".into(),
        round: 1,
        samples: 1,
        band_metrics: BTreeMap::new(),
        payload_sha256: "h7".into(),
        payload_len: 10,
        decoded: Ok(nan),
    });
    assert!(matches!(r(&mut m, e), Some(Reject::NonFinite { .. })));
    let e = Event::Submit(Submission {
        node: "b".into(),
        round: 1,
        samples: 1,
        band_metrics: BTreeMap::new(),
        payload_sha256: "h8".into(),
        payload_len: 10,
        decoded: Err(codec::Error::NonFinite {
            tensor: "t".into(),
            index: 0,
        }),
    });
    assert!(matches!(r(&mut m, e), Some(Reject::NonFinite { .. })));
    m.handle(1, Event::NodeRevoked { node: "c".into() });
    assert!(matches!(
        r(&mut m, sub("c", 1, "h9", 1.0)),
        Some(Reject::Revoked { .. })
    ));
    assert!(matches!(
        r(&mut m, register("c", HASH)),
        Some(Reject::Revoked { .. })
    ));
    // Only a's update counts so far; every refusal left the round open.
    assert_eq!(m.round(), 1);
    assert_eq!(m.accepted_count(), 1);
}

#[test]
fn quorum_closes_early_and_matches_offline_aggregation() {
    let mut m = machine();
    let values = [("d", 4.0), ("b", 2.0), ("a", 1.0), ("c", 3.0)];
    let mut last = Vec::new();
    for (i, (n, v)) in values.iter().enumerate() {
        last = m.handle(10 + i as u64, sub(n, 1, &format!("s{n}"), *v));
    }
    let report = closed(&last).expect("closed at quorum").clone();
    assert_eq!(report.round, 1);
    assert_eq!(report.nodes, vec!["a", "b", "c", "d"]);
    assert_eq!(m.round(), 2);
    assert_eq!(m.deadline_ms(), 13 + 1000);
    assert!(last.contains(&Action::StoreGlobal { round: 2 }));

    let metas: Vec<AcceptedMeta> = values
        .iter()
        .map(|(n, _)| AcceptedMeta {
            node: n.to_string(),
            samples: 10,
            band_metrics: BTreeMap::from([("domain".to_string(), 1.0)]),
            payload_sha256: String::new(),
            payload_len: 0,
            accepted_at_ms: 0,
        })
        .collect();
    let deltas: Vec<Delta> = values.iter().map(|(_, v)| layout(*v)).collect();
    let pairs: Vec<(&AcceptedMeta, &Delta)> = metas.iter().zip(&deltas).collect();
    let offline = aggregate_band_refs(
        &daf_refs(&daf_inputs(&pairs)),
        Some(&layout(0.0)),
        &DafConfig::new(0),
    )
    .unwrap();
    // The default server step is the plain f32 sum global + Δ.
    let expected = ServerOptimizer::default()
        .step(1, &layout(0.0), &offline.delta, &mut ServerState::default())
        .unwrap();
    assert_eq!(m.global(), &expected);
    // Plain mean of 1..4 everywhere (f = 0): 2.5.
    assert_eq!(m.global().tensors[0].data, vec![2.5, 2.5]);
}

#[test]
fn server_lr_scales_the_step_from_the_previous_global() {
    // Same four updates as above from a non-zero global: the global moves by server_lr times
    // the aggregate (mean 2.5 on the coarse band, since f = 0).
    for (lr, expected) in [(1.0f32, 3.0f32), (2.0, 5.5), (0.5, 1.75)] {
        let mut m = Machine::new(
            Config {
                server_opt: ServerOptimizer::FedAvgM {
                    lr: f64::from(lr),
                    momentum: 0.0,
                },
                ..cfg()
            },
            layout(0.5),
            0,
        );
        for n in ["a", "b", "c", "d"] {
            m.handle(0, register(n, HASH));
        }
        let mut last = Vec::new();
        for (i, (n, v)) in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]
            .iter()
            .enumerate()
        {
            last = m.handle(10 + i as u64, sub(n, 1, &format!("s{n}"), *v));
        }
        assert!(closed(&last).is_some_and(|r| r.failed.is_none()));
        assert_eq!(
            m.global().tensors[0].data,
            vec![expected, expected],
            "lr {lr}"
        );
    }
}

/// Closes round `round` of `m` with four updates of value `v` each.
fn close_with(m: &mut Machine, round: u64, v: f32) -> CloseReport {
    let mut last = Vec::new();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        last = m.handle(
            round * 100 + i as u64,
            sub(n, round, &format!("s{n}{round}"), v),
        );
    }
    closed(&last).expect("closed").clone()
}

#[test]
fn server_momentum_carries_across_rounds_and_a_refused_round_leaves_it() {
    let opt = ServerOptimizer::FedAvgM {
        lr: 1.0,
        momentum: 0.5,
    };
    let mut c = cfg();
    c.server_opt = opt;
    let mut m = Machine::new(c.clone(), layout(0.0), 0);
    for n in ["a", "b", "c", "d"] {
        m.handle(0, register(n, HASH));
    }
    assert!(close_with(&mut m, 1, 1.0).failed.is_none());
    assert_eq!(m.global().tensors[0].data, vec![1.0, 1.0]);
    // Round 2: m = 0.5·1 + 1 = 1.5 on the coarse band.
    assert!(close_with(&mut m, 2, 1.0).failed.is_none());
    assert_eq!(m.global().tensors[0].data, vec![2.5, 2.5]);
    let after_two = m.server_state().clone();
    assert_eq!(
        after_two.m.as_ref().unwrap().tensors[0].data,
        vec![1.5, 1.5]
    );

    // A coordinator restarted with the stored moments continues exactly where it stopped.
    let mut r = Machine::restore(
        c.clone(),
        m.state().clone(),
        m.global().clone(),
        after_two.clone(),
        Vec::new(),
    );
    close_with(&mut m, 3, 1.0);
    close_with(&mut r, 3, 1.0);
    assert_eq!(m.global(), r.global());
    assert_eq!(m.server_state(), r.server_state());

    // A refused round (Krum with f = 1 needs five inputs) moves neither the global nor the moments.
    let mut refusing = c;
    refusing.daf.coarse = GroupConfig::plain(Rule::Krum, 1);
    let mut k = Machine::restore(
        refusing,
        m.state().clone(),
        m.global().clone(),
        m.server_state().clone(),
        Vec::new(),
    );
    let (g, s) = (k.global().clone(), k.server_state().clone());
    assert!(close_with(&mut k, 4, 1.0).failed.is_some());
    assert_eq!((k.global(), k.server_state()), (&g, &s));
}

#[test]
fn a_held_band_keeps_its_global_under_server_momentum() {
    let mut c = cfg();
    c.server_opt = ServerOptimizer::FedAvgM {
        lr: 1.0,
        momentum: 0.9,
    };
    let mut m = Machine::new(c, layout(0.0), 0);
    for n in ["a", "b", "c", "d"] {
        m.handle(0, register(n, HASH));
    }
    close_with(&mut m, 1, 1.0);
    let domain = |m: &Machine| m.global().tensors[1].data.clone();
    let after_one = domain(&m);
    assert_eq!(after_one, vec![1.0, 2.0]);
    // Round 2: every node reports no held-out improvement for the domain band, so DAF holds it.
    let mut last = Vec::new();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        let mut ev = sub(n, 2, &format!("h{n}"), 1.0);
        if let Event::Submit(s) = &mut ev {
            s.band_metrics = BTreeMap::from([("domain".to_string(), -0.5)]);
        }
        last = m.handle(200 + i as u64, ev);
    }
    let report = closed(&last).expect("closed");
    assert!(report.failed.is_none());
    let held = report.groups.iter().find(|g| g.group == "domain").unwrap();
    assert!(held.held, "{held:?}");
    // The coarse band moves by momentum (0.9·1 + 1); the held band stays, moments and all.
    assert_eq!(m.global().tensors[0].data, vec![2.9, 2.9]);
    assert_eq!(domain(&m), after_one);
    let moments = m.server_state().m.as_ref().unwrap();
    assert_eq!(moments.tensors[1].data, vec![1.0, 2.0]);
}

#[test]
fn deadline_closes_with_min_nodes_and_drops_stragglers() {
    let mut m = machine();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        let acts = m.handle(100 + i as u64, sub(n, 1, &format!("s{n}"), 1.0));
        assert!(closed(&acts).is_none());
    }
    let acts = m.handle(999, Event::Tick);
    assert!(closed(&acts).is_none());
    let acts = m.handle(1000, Event::Tick);
    let report = closed(&acts).expect("closed at the deadline");
    assert_eq!(report.nodes, vec!["a", "b", "c"]);
    assert_eq!(m.round(), 2);
    // d finishes its upload after the deadline: its round is over.
    let acts = m.handle(1001, sub("d", 1, "sd", 1.0));
    assert!(matches!(
        rejected(&acts),
        Some(Reject::StaleRound { got: 1, current: 2 })
    ));
}

#[test]
fn too_few_nodes_extends_the_round_keeping_updates() {
    let mut m = machine();
    m.handle(10, sub("a", 1, "sa", 1.0));
    m.handle(20, sub("b", 1, "sb", 2.0));
    let acts = m.handle(1000, Event::Tick);
    assert!(closed(&acts).is_none());
    assert!(acts.contains(&Action::Announce {
        round: 1,
        deadline_ms: 2000,
        extended: true
    }));
    assert_eq!(m.state().extensions, 1);
    assert_eq!(m.accepted_count(), 2);
    m.handle(1500, sub("c", 1, "sc", 3.0));
    assert_eq!(m.round(), 1, "three of quorum four: wait for the deadline");
    let acts = m.handle(2000, Event::Tick);
    assert_eq!(closed(&acts).unwrap().nodes, vec!["a", "b", "c"]);
}

#[test]
fn revoked_node_update_is_dropped() {
    let mut m = machine();
    m.handle(10, sub("a", 1, "sa", 1.0));
    m.handle(10, sub("b", 1, "sb", 1.0));
    let acts = m.handle(20, Event::NodeRevoked { node: "a".into() });
    assert!(acts.contains(&Action::Dropped {
        node: "a".into(),
        round: 1
    }));
    assert_eq!(m.accepted_count(), 1);
    assert_eq!(m.state().accepted.len(), 1);
}

#[test]
fn restore_resumes_the_same_round() {
    let mut m = machine();
    m.handle(10, sub("a", 1, "sa", 1.0));
    m.handle(11, sub("b", 1, "sb", 2.0));
    let state = m.state().clone();
    let global = m.global().clone();
    let mut r = Machine::restore(
        cfg(),
        state,
        global,
        ServerState::default(),
        vec![layout(1.0), layout(2.0)],
    );
    assert!(matches!(
        rejected(&r.handle(12, sub("a", 1, "sx", 1.0))),
        Some(Reject::Duplicate { .. })
    ));
    r.handle(13, sub("c", 1, "sc", 3.0));
    let acts = r.handle(14, sub("d", 1, "sd", 4.0));
    assert_eq!(closed(&acts).unwrap().nodes, vec!["a", "b", "c", "d"]);
    assert_eq!(r.global().tensors[0].data, vec![2.5, 2.5]);
}

#[test]
fn refused_aggregation_advances_with_unchanged_global() {
    // Krum with f = 1 needs n >= 2f + 3 = 5 inputs: the quorum of 4 makes the coarse band refuse.
    let mut c = cfg();
    c.daf.coarse = GroupConfig::plain(Rule::Krum, 1);
    let mut m = Machine::new(c, layout(0.0), 0);
    for n in ["a", "b", "c", "d", "e"] {
        m.handle(0, register(n, HASH));
    }
    for n in ["a", "b", "c", "d"] {
        let acts = m.handle(5, sub(n, 1, &format!("s{n}"), 1.0));
        if n == "d" {
            let why = closed(&acts).unwrap().failed.clone().expect("refused");
            assert!(why.contains("coarse"), "{why}");
        }
    }
    assert_eq!(m.round(), 2);
    assert_eq!(m.global(), &layout(0.0));
}

#[test]
fn domain_band_without_improvement_holds_while_the_others_aggregate() {
    let mut m = machine();
    for n in ["a", "b", "c", "d"] {
        let e = Event::Submit(Submission {
            node: n.into(),
            round: 1,
            samples: 1,
            // No domain improvement anywhere: the quality-weighted domain band holds.
            band_metrics: BTreeMap::new(),
            payload_sha256: format!("s{n}"),
            payload_len: 1,
            decoded: Ok(layout(1.0)),
        });
        let acts = m.handle(5, e);
        if n == "d" {
            let r = closed(&acts).unwrap();
            assert!(r.failed.is_none(), "{r:?}");
            let domain = r.groups.iter().find(|g| g.group == "domain").unwrap();
            assert!(domain.held && domain.fallback.is_some(), "{domain:?}");
            assert_eq!(domain.used, 0);
            assert_eq!(domain.rejected.len(), 4);
        }
    }
    assert_eq!(m.round(), 2);
    let g = m.global();
    assert_eq!(g.tensors[0].data, vec![1.0, 1.0]);
    assert_eq!(g.tensors[1].data, vec![0.0, 0.0]);
    assert_eq!(g.tensors[2].data, vec![-1.0]);
}

#[test]
fn domain_cosine_prefilter_uses_the_pre_round_global() {
    let mut m = machine();
    // Round 1: the global is all zero, so nothing is filtered by direction.
    let mut last = Vec::new();
    for (i, n) in ["a", "b", "c", "d"].iter().enumerate() {
        last = m.handle(10 + i as u64, sub(n, 1, &format!("r1{n}"), 1.0));
    }
    let r1 = closed(&last).expect("round 1 closed").clone();
    assert!(r1.groups.iter().all(|g| g.rejected.is_empty()), "{r1:?}");
    // Round 2: "d" pushes against the global; DAF's domain band (cosine ≥ 0) drops it there
    // and only there.
    for (i, (n, v)) in [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", -1.0)]
        .iter()
        .enumerate()
    {
        last = m.handle(100 + i as u64, sub(n, 2, &format!("r2{n}"), *v));
    }
    let r2 = closed(&last).expect("round 2 closed").clone();
    for g in &r2.groups {
        if g.group == "domain" {
            assert_eq!(g.rejected.len(), 1, "{g:?}");
            assert_eq!(g.rejected[0].0, "d");
            assert!(g.rejected[0].1.contains("cosine"), "{g:?}");
        } else {
            assert!(g.rejected.is_empty(), "{g:?}");
        }
    }
}

/// `cfg()` with uniform FedAvg in every band (what central DP needs) and `dp`.
fn central_dp_cfg(dp: CentralDp) -> Config {
    let mut c = cfg();
    for g in [
        &mut c.daf.coarse,
        &mut c.daf.domain,
        &mut c.daf.fine,
        &mut c.daf.other,
    ] {
        *g = GroupConfig::plain(Rule::FedAvg, 0);
        g.weights = ruvdllm::aggregate::daf::WeightSource::Uniform;
    }
    c.central_dp = Some(dp);
    c
}

#[test]
fn central_dp_clips_each_update_and_divides_by_the_fixed_denominator() {
    // Four updates of layout(v): flat (v, v, v, 2v, −v), norm v·√8. Clip C = 1 bounds the
    // large ones; m = 5 expected nodes, 4 arrive; no noise: the global is Σ clipped / 5.
    let mut c = central_dp_cfg(CentralDp {
        clip: 1.0,
        noise_multiplier: 0.0,
        expected_nodes: 5,
        delta: 1e-5,
        key: 1,
        adaptive: None,
    });
    let mut m = Machine::new(c.clone(), layout(0.0), 0);
    for n in ["a", "b", "c", "d"] {
        m.handle(0, register(n, HASH));
    }
    let values = [0.1f32, 0.2, 3.0, 4.0];
    let mut last = Vec::new();
    for (i, (n, v)) in ["a", "b", "c", "d"].iter().zip(values).enumerate() {
        last = m.handle(10 + i as u64, sub(n, 1, &format!("s{n}"), v));
    }
    assert!(closed(&last).is_some_and(|r| r.failed.is_none()));
    let norm = |v: f32| f64::from(v) * 8f64.sqrt();
    let sum: f64 = values
        .iter()
        .map(|&v| f64::from(v) * (1.0f64).min(1.0 / norm(v)))
        .sum();
    let want = (sum / 5.0) as f32;
    let got = &m.global().tensors[0].data;
    assert!((got[0] - want).abs() < 1e-6, "{got:?} vs {want}");
    // Without DP the same updates average to 1.825: the clip and the denominator matter.
    assert!((got[0] - 1.825).abs() > 1.0);

    // With noise the global moves off Σ/m by about z·C/m per coordinate, and is reproducible.
    c.central_dp = c.central_dp.map(|d| CentralDp {
        noise_multiplier: 1.0,
        ..d
    });
    let run = || {
        let mut m = Machine::new(c.clone(), layout(0.0), 0);
        for n in ["a", "b", "c", "d"] {
            m.handle(0, register(n, HASH));
        }
        for (i, (n, v)) in ["a", "b", "c", "d"].iter().zip(values).enumerate() {
            m.handle(10 + i as u64, sub(n, 1, &format!("s{n}"), v));
        }
        m.global().clone()
    };
    let (x, y) = (run(), run());
    assert_eq!(x, y);
    assert!((x.tensors[0].data[0] - want).abs() > 1e-4);
}

#[test]
fn adaptive_central_clip_moves_and_is_persisted_with_the_state() {
    let c = central_dp_cfg(CentralDp {
        clip: 0.5,
        noise_multiplier: 0.0,
        expected_nodes: 4,
        delta: 1e-5,
        key: 2,
        adaptive: Some(dp::AdaptiveClip {
            target_quantile: 0.5,
            lr: 0.2,
            count_stddev: 0.2,
        }),
    });
    let mut m = Machine::new(c.clone(), layout(0.0), 0);
    for n in ["a", "b", "c", "d"] {
        m.handle(0, register(n, HASH));
    }
    assert_eq!(m.state().dp_clip, None);
    // Every update (norm 3·√8) is above 0.5: the bound grows, by about e^(0.2·0.5).
    close_with(&mut m, 1, 3.0);
    let next = m.state().dp_clip.expect("adapted");
    assert!(next > 0.5 * 1.05 && next < 0.5 * 1.2, "{next}");
    // The state file carries it, and a restarted machine clips round 2 at it.
    let json = serde_json::to_string(m.state()).unwrap();
    let back: RoundState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.dp_clip, Some(next));
    close_with(&mut m, 2, 3.0);
    assert!(m.state().dp_clip.unwrap() > next);
}

fn sampled(fraction: f64, min_fit: usize, min_available: usize) -> Config {
    Config {
        sampling: Some(Sampling {
            fraction,
            min_fit,
            min_available,
        }),
        ..cfg()
    }
}

fn announced(acts: &[Action]) -> Option<(u64, u64)> {
    acts.iter().find_map(|a| match a {
        Action::Announce {
            round, deadline_ms, ..
        } => Some((*round, *deadline_ms)),
        _ => None,
    })
}

#[test]
fn sampling_sizes_follow_flower() {
    let s = Sampling {
        fraction: 0.2,
        min_fit: 2,
        min_available: 3,
    };
    // max(⌊n · fraction⌋, min_fit), capped at n; nothing below min_available.
    let sizes: Vec<_> = [0, 2, 3, 9, 10, 14, 15, 100].map(|n| s.size(n)).to_vec();
    assert_eq!(
        sizes,
        vec![
            None,
            None,
            Some(2),
            Some(2),
            Some(2),
            Some(2),
            Some(3),
            Some(20)
        ]
    );
    let all = Sampling {
        fraction: 1.0,
        min_fit: 5,
        min_available: 5,
    };
    assert_eq!(all.size(7), Some(7));
    for (bad, field) in [
        (Sampling { fraction: 0.0, ..s }, "fraction_fit"),
        (
            Sampling {
                fraction: 1.01,
                ..s
            },
            "fraction_fit",
        ),
        (
            Sampling {
                fraction: f64::NAN,
                ..s
            },
            "fraction_fit",
        ),
        (Sampling { min_fit: 0, ..s }, "min_fit_nodes"),
        (
            Sampling {
                min_available: 1,
                ..s
            },
            "min_available_nodes",
        ),
    ] {
        assert_eq!(bad.validate().unwrap_err().0, field);
    }
}

#[test]
fn sampling_draws_waits_refuses_and_closes_on_the_draw() {
    // 2 of 5 nodes per round, drawn once all 5 are registered.
    let mut m = Machine::new(sampled(0.4, 2, 5), layout(0.0), 0);
    for n in ["a", "b", "c", "d"] {
        let acts = m.handle(10, register(n, HASH));
        assert_eq!(announced(&acts), None, "no draw before 5 are registered");
        assert_eq!(m.participation().selected, Vec::<String>::new());
        assert_eq!(m.participation().sample_size, 2);
    }
    // Nobody is drawn yet: every submission is refused.
    assert!(matches!(
        rejected(&m.handle(20, sub("a", 1, "h0", 1.0))),
        Some(Reject::NotSelected { round: 1, .. })
    ));
    // The fifth registration draws round 1 and restarts its deadline from that moment.
    let acts = m.handle(500, register("e", HASH));
    assert_eq!(announced(&acts), Some((1, 1500)));
    assert!(acts.contains(&Action::Persist));
    let p = m.participation();
    assert_eq!(
        (p.sample_size, p.selected.len(), p.quorum, p.min_nodes),
        (2, 2, 2, 2)
    );
    assert_eq!(m.state().selected.as_ref().map(|s| s.len()), Some(2));
    // The same draw again from the same seed and round: a restarted coordinator agrees.
    let mut again = Machine::new(sampled(0.4, 2, 5), layout(0.0), 0);
    for n in ["e", "d", "c", "b", "a"] {
        again.handle(10, register(n, HASH));
    }
    assert_eq!(again.participation().selected, p.selected);

    let out = ["a", "b", "c", "d", "e"]
        .into_iter()
        .find(|n| !p.selected.iter().any(|s| s == n))
        .unwrap();
    assert!(matches!(
        rejected(&m.handle(600, sub(out, 1, "h1", 1.0))),
        Some(Reject::NotSelected { round: 1, .. })
    ));
    assert_eq!(
        Reject::NotSelected {
            node: out.into(),
            round: 1
        }
        .kind(),
        ruvdllm_proto::RejectKind::NotSelected
    );
    // The round closes as soon as both drawn nodes submitted (quorum 4 capped at the draw).
    assert!(closed(&m.handle(700, sub(&p.selected[0], 1, "h2", 1.0))).is_none());
    let acts = m.handle(800, sub(&p.selected[1], 1, "h3", 3.0));
    let report = closed(&acts).expect("closed on the draw");
    assert_eq!(report.selected.as_deref(), Some(&p.selected[..]));
    assert_eq!(report.nodes.len(), 2);
    assert_eq!(announced(&acts), Some((2, 1800)));
    // Round 2 is drawn at once (everyone is registered), with another seed.
    assert_eq!(m.participation().selected.len(), 2);

    // Draws over many rounds reach every node: nobody is starved.
    let mut seen = std::collections::BTreeSet::new();
    for r in 2..40u64 {
        let drawn = m.participation().selected;
        seen.extend(drawn.iter().cloned());
        for (k, n) in drawn.iter().enumerate() {
            m.handle(800 + 10 * r, sub(n, r, &format!("r{r}-{k}"), 0.1));
        }
        assert_eq!(m.round(), r + 1);
    }
    assert_eq!(seen.len(), 5);
}

#[test]
fn sampling_redraws_the_missing_nodes_at_an_extension() {
    let mut m = Machine::new(sampled(0.4, 2, 2), layout(0.0), 0);
    for n in ["a", "b", "c", "d", "e"] {
        m.handle(0, register(n, HASH));
    }
    // min_available 2: drawn at the second registration, among the first two.
    let first = m.participation().selected;
    assert_eq!(first.len(), 2);
    let (keep, gone) = (first[0].clone(), first[1].clone());
    assert!(
        m.handle(100, sub(&keep, 1, "k", 1.0))
            .contains(&Action::Accepted {
                node: keep.clone(),
                round: 1,
                payload_sha256: "k".into()
            })
    );
    // `gone` never answers: at the deadline the round is extended, `keep` stays drawn and its
    // update stays accepted; the second place is drawn again.
    let acts = m.handle(1001, Event::Tick);
    assert!(closed(&acts).is_none());
    assert!(matches!(
        acts.iter().find(|a| matches!(a, Action::Announce { .. })),
        Some(Action::Announce { extended: true, .. })
    ));
    let second = m.participation().selected;
    assert!(second.contains(&keep), "{second:?}");
    assert_eq!(m.accepted_count(), 1);
    // Until a draw replaces it, the missing node may still answer; once replaced, it may not.
    if !second.contains(&gone) {
        assert!(matches!(
            rejected(&m.handle(1100, sub(&gone, 1, "g", 1.0))),
            Some(Reject::NotSelected { .. })
        ));
    }
    let other = second.iter().find(|n| **n != keep).unwrap().clone();
    let acts = m.handle(1200, sub(&other, 1, "o", 1.0));
    assert!(closed(&acts).is_some());
}

#[test]
fn without_sampling_everyone_takes_part() {
    let m = machine();
    let p = m.participation();
    assert_eq!(
        (p.sample_size, p.selected.len(), p.quorum, p.min_nodes),
        (0, 0, 4, 3)
    );
    assert_eq!(m.state().selected, None);
}

#[test]
fn sampling_switched_on_at_a_restart_draws_and_keeps_the_draw_across_restarts() {
    // A run without sampling restarts with it: the restored machine draws at once.
    let m = machine();
    let mut r = Machine::restore(
        sampled(0.4, 2, 2),
        m.state().clone(),
        m.global().clone(),
        ServerState::default(),
        vec![],
    );
    let drawn = r.participation().selected;
    assert_eq!(drawn.len(), 2);
    // The draw is persisted state: a second restart keeps exactly it.
    let again = Machine::restore(
        sampled(0.4, 2, 2),
        r.state().clone(),
        r.global().clone(),
        ServerState::default(),
        vec![],
    );
    assert_eq!(again.participation().selected, drawn);
    let acts = r.handle(10, sub(&drawn[0], 1, "x", 1.0));
    assert!(rejected(&acts).is_none());
    assert!(closed(&r.handle(11, sub(&drawn[1], 1, "y", 1.0))).is_some());
}
