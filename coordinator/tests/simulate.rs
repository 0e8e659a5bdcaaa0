//! `coordinator simulate` end to end on the committed tiny base, with small settings: byte counts
//! against both ends' socket counters, the report's fields, the saved adapters reproducing the
//! reported held-out loss, the norm-bound pre-filter against a scaling attack, a robust rule
//! against sign flipping, FedAvg breaking under scaling, and the one-process-per-node mode.

#![cfg(feature = "sim")]

use std::sync::Mutex;

use clap::Parser;
use ruvdllm::adapter::Talora;
use ruvdllm::data::{self, Domain, Generator, Split};
use ruvdllm::eval;
use ruvdllm_coordinator::sim::{Observer, Report, SimArgs, run};

#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: SimArgs,
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl Observer for Lines {
    fn line(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
}

/// Small settings every test starts from.
fn simulate(out: &std::path::Path, extra: &[&str]) -> (Report, Vec<String>) {
    let out = out.to_str().unwrap().to_string();
    let mut argv = vec![
        "simulate",
        "--nodes",
        "3",
        "--rounds",
        "2",
        "--local-steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--samples",
        "16",
        "--validation",
        "2",
        "--eval-n",
        "2",
        "--mc",
        "1",
        "--gen-length",
        "8",
        "--quiet",
        "--out",
        &out,
    ];
    argv.extend_from_slice(extra);
    let cfg = Cli::parse_from(argv).args.validate().unwrap();
    let lines = Lines::default();
    let report = run(cfg, &lines).unwrap();
    (report, lines.0.into_inner().unwrap())
}

#[test]
fn three_nodes_two_rounds_bytes_fields_and_reproducible_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (report, lines) = simulate(dir.path(), &[]);
    assert_eq!(report.rounds.len(), 2);
    assert!(
        lines.iter().any(|l| l.starts_with("settings:")),
        "{lines:?}"
    );

    // Bytes: every byte a node's socket moved is in exactly one round or its tail, and what the
    // nodes sent is what the coordinator's own socket counters read.
    let s = report.sockets.as_ref().expect("in-process socket totals");
    for i in 0..3 {
        let up: u64 = report.rounds.iter().map(|r| r.nodes[i].socket_up).sum();
        let down: u64 = report.rounds.iter().map(|r| r.nodes[i].socket_down).sum();
        assert_eq!(up + s.tail_up[i], s.node_up[i], "node {i} up");
        assert_eq!(down + s.tail_down[i], s.node_down[i], "node {i} down");
        for r in &report.rounds {
            let n = &r.nodes[i];
            assert!(n.codec_up > 0 && n.socket_up > n.codec_up, "{n:?}");
            assert!(n.codec_down > 0 && n.socket_down > n.codec_down, "{n:?}");
        }
    }
    // Both ends agree, up to a node's closing TLS close_notify that the coordinator may never
    // read (it finished the connection on the GOAWAY before it): whole 24-byte records only.
    assert!(s.ends_agree(), "{s:?}");
    assert!(s.unread_up() <= 3 * 24, "{s:?}");

    // Every field of every round is in report.json.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    for key in [
        "config",
        "seed",
        "base",
        "rounds",
        "wall_s",
        "sockets",
        "reproduce",
    ] {
        assert!(json.get(key).is_some(), "report lacks {key}");
    }
    for r in json["rounds"].as_array().unwrap() {
        for key in [
            "round",
            "latency",
            "nodes",
            "accepted",
            "rejected",
            "rejected_by_reason",
            "aggregation_notes",
            "quality",
        ] {
            assert!(r.get(key).is_some(), "round lacks {key}");
        }
        for key in [
            "train_s",
            "upload_s",
            "aggregate_s",
            "distribute_s",
            "total_s",
        ] {
            assert!(r["latency"][key].as_f64().unwrap() >= 0.0, "{key}");
        }
        for key in [
            "heldout_loss",
            "ppl_bound",
            "exact_match_correct",
            "exact_match_total",
        ] {
            assert!(r["quality"].get(key).is_some(), "quality lacks {key}");
        }
        for n in r["nodes"].as_array().unwrap() {
            for key in [
                "node",
                "socket_up",
                "socket_down",
                "codec_up",
                "codec_down",
                "accepted",
                "reason",
                "rejections",
                "train_loss",
                "attacker",
                "screening",
            ] {
                assert!(n.get(key).is_some(), "node lacks {key}");
            }
        }
    }
    assert!(dir.path().join("quality.svg").is_file() && dir.path().join("bytes.svg").is_file());

    // The saved global adapter of the last round gives the reported held-out loss, computed the
    // way `node eval` does (per domain, fixed noise seed, sample-weighted mean).
    let talora = Talora::load(&dir.path().join("adapters/round-002")).unwrap();
    let (loaded, tok) = ruvdllm_node::model_arg::load(None).unwrap();
    let mut model = loaded.model;
    model.set_adapter(talora.to_adapter(&model).unwrap());
    let g = Generator::new(data::DEFAULT_SEED);
    let (mut sum, mut rows) = (0.0, 0usize);
    for d in Domain::ALL {
        let ex = eval::examples(&g.samples(Split::HeldOut, d, 2), tok.as_ref());
        sum += eval::heldout_loss(&model, &ex, 32, 0, 16).unwrap() * ex.len() as f64;
        rows += ex.len();
    }
    let last = report.rounds.last().unwrap().quality.heldout_loss;
    assert_eq!(sum / rows as f64, last);
}

/// The same small run over libp2p: the nodes' own socket counters (below Noise and yamux) add up
/// round by round, and what they sent is exactly what the coordinator's socket counters read.
#[test]
fn libp2p_run_counts_bytes_at_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = simulate(dir.path(), &["--transport", "libp2p"]);
    assert_eq!(report.rounds.len(), 2);
    assert_eq!(report.config["transport"], "libp2p");
    assert!(dir.path().join("allowlist.txt").is_file());
    let s = report.sockets.as_ref().expect("in-process socket totals");
    for i in 0..3 {
        let up: u64 = report.rounds.iter().map(|r| r.nodes[i].socket_up).sum();
        let down: u64 = report.rounds.iter().map(|r| r.nodes[i].socket_down).sum();
        assert_eq!(up + s.tail_up[i], s.node_up[i], "node {i} up");
        assert_eq!(down + s.tail_down[i], s.node_down[i], "node {i} down");
        for r in &report.rounds {
            let n = &r.nodes[i];
            assert!(n.reason.is_none(), "upload refused: {n:?}");
            assert!(n.codec_up > 0 && n.socket_up > n.codec_up, "{n:?}");
            assert!(n.codec_down > 0 && n.socket_down > n.codec_down, "{n:?}");
        }
    }
    // Both ends agree, up to a node's closing TLS close_notify that the coordinator may never
    // read (it finished the connection on the GOAWAY before it): whole 24-byte records only.
    assert!(s.ends_agree(), "{s:?}");
    assert!(s.unread_up() <= 3 * 24, "{s:?}");
    assert!(report.loss_improvement().is_finite());
}

#[test]
fn norm_bound_rejects_exactly_the_scaling_attackers() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = simulate(
        dir.path(),
        &[
            "--nodes",
            "6",
            "--rounds",
            "1",
            // Three steps: every band trains, so every band's attack is non-zero.
            "--local-steps",
            "3",
            "--byzantine",
            "2",
            "--attack",
            "scaling:1000",
            "--norm-bound",
            "5",
            "--rule",
            "fedavg",
        ],
    );
    for r in &report.rounds {
        for n in &r.nodes {
            let norm_rejected = n.rejections.iter().any(|x| x.contains("norm"));
            assert_eq!(norm_rejected, n.attacker, "{n:?}");
            assert_eq!(n.accepted, !n.attacker, "{n:?}");
        }
        assert_eq!(r.rejected, 2);
        // The screening figures are the ones the bound decided on: in every band, each
        // attacker's norm is above every honest node's.
        let norms = |attacker: bool, group: &str| -> Vec<f64> {
            r.nodes
                .iter()
                .filter(|n| n.attacker == attacker)
                .flat_map(|n| n.screening.iter().filter(|s| s.group == group))
                .map(|s| s.norm.unwrap())
                .collect()
        };
        for group in ["coarse", "domain", "fine"] {
            let (bad, good) = (norms(true, group), norms(false, group));
            assert_eq!(bad.len(), 2, "{group}");
            assert!(!good.is_empty(), "{group}");
            let honest_max = good.iter().cloned().fold(0.0, f64::max);
            assert!(
                bad.iter().all(|&b| b > honest_max),
                "{group}: {bad:?} vs {good:?}"
            );
        }
    }
}

#[test]
fn a_robust_rule_keeps_learning_with_a_sign_flipping_node() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = simulate(
        dir.path(),
        &[
            "--nodes",
            "5",
            "--rule",
            "median",
            "--byzantine",
            "1",
            "--attack",
            "sign-flip:5",
        ],
    );
    let last = report.rounds.last().unwrap().quality.heldout_loss;
    assert!(
        last < report.base.heldout_loss,
        "held-out loss {} → {last}",
        report.base.heldout_loss
    );
}

#[test]
fn fedavg_breaks_under_a_large_scaling_attack() {
    let dir = tempfile::tempdir().unwrap();
    let (report, _) = simulate(
        dir.path(),
        &[
            "--nodes",
            "5",
            "--rounds",
            "1",
            "--rule",
            "fedavg",
            "--byzantine",
            "1",
            "--attack",
            "scaling:1000",
        ],
    );
    let last = report.rounds.last().unwrap().quality.heldout_loss;
    assert!(
        last.is_nan() || last >= report.base.heldout_loss,
        "FedAvg should not improve under attack: {} → {last}",
        report.base.heldout_loss
    );
    assert!(report.rounds[0].nodes.iter().all(|n| n.accepted));
}

#[test]
fn processes_mode_runs_each_node_as_its_own_process() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let (report, _) = simulate(
        dir.path(),
        &[
            "--rounds",
            "1",
            "--rule",
            "trimmed-mean",
            "--processes",
            "--node-bin",
            bin,
            // Relative to the test's working directory (the crate's folder): the node processes
            // run elsewhere, so their configs must name it absolutely.
            "--model",
            "../shared/assets/tiny",
        ],
    );
    assert_eq!(report.rounds.len(), 1);
    assert_eq!(report.rounds[0].accepted, 3);
    assert!(report.sockets.is_none());
    let round = &report.rounds[0];
    assert!(round.latency.train_s > 0.0, "{:?}", round.latency);
    for i in 0..3 {
        let node = dir.path().join(format!("nodes/node-{i:02}"));
        assert!(node.join("node.toml").is_file());
        let log = std::fs::read_to_string(node.join("node.log")).unwrap();
        assert!(log.contains("update accepted"), "{log}");
        // The per-node columns come from the node process's own journal: its client's socket
        // counters (TLS and HTTP/2 included, so above the codec's payload sizes), the encoded
        // sizes and the training loss.
        let lines =
            ruvdllm_node::daemon::journal::Journal::read(&node.join("rounds.jsonl")).unwrap();
        // Node processes run on freely until they are stopped: round 1's line is the first.
        let (line, row) = (&lines[0], &round.nodes[i]);
        assert_eq!(line.round, 1, "{lines:?}");
        assert!(line.submitted && line.refusal.is_none(), "{line:?}");
        assert_eq!(Some(row.socket_up), line.socket_up);
        assert_eq!(Some(row.socket_down), line.socket_down);
        assert_eq!(
            (row.codec_up, row.codec_down),
            (line.codec_up, line.codec_down)
        );
        assert!(row.codec_up > 0 && row.socket_up > row.codec_up, "{row:?}");
        assert!(
            row.codec_down > 0 && row.socket_down > row.codec_down,
            "{row:?}"
        );
        assert!(row.train_loss.is_some_and(f64::is_finite), "{row:?}");
        assert!(line.fetched_ms <= line.train_start_ms && line.train_end_ms <= line.done_ms);
    }
}

#[test]
fn a_partition_redeals_the_data_and_node_processes_train_on_the_same_samples() {
    // `--partition` pools the nodes' samples and deals them again; node processes get their
    // part as JSONL files (prompts and domains kept) and must train exactly what in-process
    // nodes train: the same global comes out.
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let args = [
        "--rounds",
        "1",
        "--rule",
        "fedavg",
        "--partition",
        "dirichlet:1",
        "--model",
        "../shared/assets/tiny",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (domains, _) = simulate(dir.path(), &args[..4]);
    let (inproc, _) = simulate(dir.path(), &args);
    let procs_dir = tempfile::tempdir().unwrap();
    let (procs, _) = simulate(
        procs_dir.path(),
        &[&args[..], &["--processes", "--node-bin", bin]].concat(),
    );
    let loss = |r: &Report| r.rounds[0].quality.heldout_loss;
    assert_eq!(loss(&inproc), loss(&procs));
    assert_ne!(
        loss(&inproc),
        loss(&domains),
        "the partition must change the data"
    );
    // The report counts each node's data: the same pool, dealt otherwise.
    let total = |r: &Report| r.data.iter().map(|d| d.train + d.validation).sum::<usize>();
    assert_eq!((inproc.data.len(), total(&inproc)), (3, total(&domains)));
    assert_ne!(inproc.data, domains.data);
    assert_eq!(procs.data, inproc.data);
    assert!(
        domains.data.iter().all(|d| d.domains.len() == 1),
        "{:?}",
        domains.data
    );
    let node = procs_dir.path().join("nodes/node-00");
    let toml = std::fs::read_to_string(node.join("node.toml")).unwrap();
    assert!(
        toml.contains("train.jsonl") && toml.contains("validation.jsonl"),
        "{toml}"
    );
    let first = std::fs::read_to_string(node.join("train.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert!(
        first["prompt"].is_string() && first["domain"].is_string(),
        "{first}"
    );
}

#[test]
fn client_sampling_trains_only_the_drawn_nodes_in_both_modes() {
    // One of three nodes per round (Flower's fraction_fit with min_fit_clients 1): each round's
    // row holds the drawn node only; the centralized baseline trains for the steps it spent.
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let args = [
        "--fraction-fit",
        "0.34",
        "--min-fit-nodes",
        "1",
        "--model",
        "../shared/assets/tiny",
    ];
    let dir = tempfile::tempdir().unwrap();
    let (report, lines) = simulate(dir.path(), &[&args[..], &["--centralized"]].concat());
    assert!(
        lines[0].contains("2 rounds × 1 drawn nodes"),
        "{}",
        lines[0]
    );
    assert_eq!(report.rounds.len(), 2);
    for r in &report.rounds {
        assert_eq!((r.nodes.len(), r.accepted, r.rejected), (1, 1, 0), "{r:?}");
        assert!(
            r.nodes[0].socket_up > r.nodes[0].codec_up,
            "{:?}",
            r.nodes[0]
        );
    }
    assert!(report.centralized.is_some());
    assert_eq!(report.config["fraction_fit"], 0.34);

    // Node processes skip the rounds they were not drawn for: the same draws, one journal line
    // per round a node took part in.
    let procs_dir = tempfile::tempdir().unwrap();
    let (procs, _) = simulate(
        procs_dir.path(),
        &[&args[..], &["--processes", "--node-bin", bin]].concat(),
    );
    let drawn =
        |r: &Report| -> Vec<String> { r.rounds.iter().map(|x| x.nodes[0].node.clone()).collect() };
    assert_eq!(drawn(&procs), drawn(&report));
    for r in &procs.rounds {
        assert_eq!((r.nodes.len(), r.accepted), (1, 1), "{r:?}");
    }
    let first = &drawn(&procs)[0];
    let log = std::fs::read_to_string(procs_dir.path().join("nodes").join(first).join("node.log"))
        .unwrap();
    assert!(log.contains("update accepted"), "{log}");
}

#[test]
fn a_jsonl_corpus_trains_prompts_and_measures_exact_match() {
    // Users' own prompt/completion lines: split across the nodes, their validation samples are
    // the held-out set, and with prompts to answer exact match is measured too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sft.jsonl");
    let lines: String = (0..60)
        .map(|i| {
            format!(
                "{{\"prompt\": \"{i}+1=\", \"completion\": \"{}\"}}\n",
                i + 1
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let out = dir.path().join("out");
    let (report, _) = simulate(&out, &["--rounds", "1", "--corpus", file.to_str().unwrap()]);
    let held: usize = report.data.iter().map(|d| d.validation).sum();
    assert!(held > 0);
    assert_eq!(report.base.exact_match_total, held);
    assert_eq!(report.rounds[0].quality.exact_match_total, held);
    // 20 lines per node: 2 validate (a tenth, at most --validation 2), 16 train (--samples).
    assert!(
        report
            .data
            .iter()
            .all(|d| d.train == 16 && d.validation == 2),
        "{:?}",
        report.data
    );
}

#[test]
fn local_dp_is_the_node_daemons_own_and_draws_the_same_noise_in_both_modes() {
    // The in-process nodes and `node run` daemons privatize in the same place (the node's
    // trainer, `[privacy]` in node.toml), seeded alike: the same global comes out.
    let bin = env!("CARGO_BIN_EXE_coordinator");
    let dp = ["--rounds", "1", "--rule", "fedavg", "--dp-clip", "0.05"];
    let run_with = |extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let (report, _) = simulate(dir.path(), &[&dp[..], extra].concat());
        (report, dir)
    };
    let (clean, _) = {
        let dir = tempfile::tempdir().unwrap();
        simulate(
            dir.path(),
            &[
                "--rounds",
                "1",
                "--rule",
                "fedavg",
                "--model",
                "../shared/assets/tiny",
            ],
        )
    };
    let noisy = ["--dp-noise", "0.5", "--model", "../shared/assets/tiny"];
    let (inproc, _) = run_with(&noisy);
    let (procs, dir) = run_with(&[&noisy[..], &["--processes", "--node-bin", bin]].concat());
    let loss = |r: &Report| r.rounds[0].quality.heldout_loss;
    assert_eq!(loss(&inproc), loss(&procs));
    assert_ne!(loss(&inproc), loss(&clean), "DP must change the global");
    assert!(inproc.dp_epsilon.is_some_and(|e| e > 0.0 && e.is_finite()));
    let node = dir.path().join("nodes/node-00");
    let toml = std::fs::read_to_string(node.join("node.toml")).unwrap();
    assert!(
        toml.contains("[privacy]") && toml.contains("clip = 0.05"),
        "{toml}"
    );
    let log = std::fs::read_to_string(node.join("node.log")).unwrap();
    assert!(
        log.contains("local DP applied") && log.contains("epsilon"),
        "{log}"
    );

    // Central DP: the nodes send plain updates, the coordinator clips them and noises the
    // aggregate; another global than both the clean and the local-DP run, the same ε.
    let (central, dir) = run_with(&[&noisy[..], &["--dp-central"]].concat());
    let c = loss(&central);
    assert!(c.is_finite() && c != loss(&clean) && c != loss(&inproc));
    assert_eq!(central.dp_epsilon, inproc.dp_epsilon);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["dp_central"], true, "{}", config["config"]);
    // Adaptive clipping (z below 2σ_b = 2·3/20: the count's noise takes the rest of the
    // budget): the coordinator's state carries the adapted bound for the next round.
    let (adaptive, dir) = run_with(
        &[
            &noisy[..],
            &[
                "--dp-noise",
                "0.2",
                "--dp-central",
                "--dp-adaptive-quantile",
                "0.5",
            ],
        ]
        .concat(),
    );
    assert!(loss(&adaptive).is_finite());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("state/state.json")).unwrap())
            .unwrap();
    let next = state["dp_clip"].as_f64().unwrap();
    assert!(next > 0.0 && next != 0.05, "{state}");
    // Central DP needs uniform FedAvg in every band.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let e = Cli::try_parse_from([
        "simulate",
        "--out",
        out,
        "--dp-clip",
        "1",
        "--dp-central",
        "--rule",
        "median",
    ])
    .unwrap()
    .args
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("dp-central") && e.contains("fedavg"), "{e}");
}
