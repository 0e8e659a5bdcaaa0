//! Properties of the generated splits, checked across all domains, plus golden samples.

use std::collections::HashSet;

use super::*;

fn generator() -> Generator {
    Generator::new(DEFAULT_SEED)
}

#[test]
fn names_and_parsing_round_trip() {
    for d in Domain::ALL {
        assert_eq!(d.name().parse::<Domain>().unwrap(), d);
        assert_eq!(Domain::ALL[d.index()], d);
    }
    for s in Split::ALL {
        assert_eq!(s.name().parse::<Split>().unwrap(), s);
    }
    assert_eq!("heldout".parse::<Split>().unwrap(), Split::HeldOut);
    assert!(
        matches!("poetry".parse::<Domain>(), Err(Error::UnknownDomain { name }) if name == "poetry")
    );
    assert!(matches!(
        "test".parse::<Split>(),
        Err(Error::UnknownSplit { .. })
    ));
}

#[test]
fn every_sample_is_identifiable_and_fits_the_budget() {
    let g = generator();
    for split in Split::ALL {
        for d in Domain::ALL {
            let all = g.all(split, d);
            assert_eq!(all.len(), g.units(split, d));
            assert!(!all.is_empty(), "{split}/{d}");
            for s in &all {
                let text = s.text();
                assert_eq!(s.domain, Some(d));
                assert_eq!(Domain::detect(&text), Some(d), "{split}/{d}: {text:?}");
                assert!(
                    text.len() <= MAX_SAMPLE_BYTES,
                    "{split}/{d}: {text:?} is {} bytes",
                    text.len()
                );
                assert!(
                    !s.prompt.is_empty() && !s.answer.trim().is_empty(),
                    "{text:?}"
                );
                assert!(text.is_ascii());
            }
        }
    }
    assert_eq!(Domain::detect("hello world"), None);
}

#[test]
fn computed_answers_are_correct() {
    let g = generator();
    for split in Split::ALL {
        for s in g.samples(split, Domain::Arithmetic, 300) {
            assert_eq!(
                arithmetic::evaluate(&s.prompt).map(|v| v.to_string()),
                Some(s.answer.clone())
            );
        }
        for s in g.samples(split, Domain::Code, 300) {
            assert_eq!(
                code::evaluate(&s.prompt).map(|v| v.to_string()),
                Some(s.answer.clone())
            );
        }
    }
    // Operand ranges: pretraining below 50, fine-tuning and held-out from 50 up.
    let operands = |s: &Sample| -> Vec<u32> {
        s.prompt
            .trim_end_matches('=')
            .split(['+', '-'])
            .map(|v| v.parse().unwrap())
            .collect()
    };
    assert!(
        g.all(Split::Pretrain, Domain::Arithmetic)
            .iter()
            .flat_map(operands)
            .all(|v| v < 50)
    );
    for split in [Split::Finetune, Split::HeldOut] {
        assert!(
            g.all(split, Domain::Arithmetic)
                .iter()
                .flat_map(operands)
                .all(|v| (50..100).contains(&v))
        );
    }
}

#[test]
fn calendar_answers_follow_one_consistent_month_table() {
    // Recover each calendar's month lengths (the largest starting day) and month order (where a
    // crossing lands) from the samples themselves, then recompute every answer from that table.
    let g = generator();
    let parse = |s: &str| -> (String, u32) {
        let mut it = s.trim().trim_end_matches('.').split(' ');
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().parse().unwrap(),
        )
    };
    for split in [Split::Pretrain, Split::Finetune] {
        let mut samples = g.all(split, Domain::Calendar);
        if split == Split::Finetune {
            samples.extend(g.all(Split::HeldOut, Domain::Calendar));
        }
        let problems: Vec<(String, u32, u32, String, u32)> = samples
            .iter()
            .map(|s| {
                let (date, shift) = s.prompt.trim_end_matches(" is").split_once(" + ").unwrap();
                let shift = shift.split(' ').next().unwrap().parse().unwrap();
                let ((m0, d0), (m1, d1)) = (parse(date), parse(&s.answer));
                (m0, d0, shift, m1, d1)
            })
            .collect();
        let mut length = std::collections::HashMap::new();
        let mut successor = std::collections::HashMap::new();
        for (m0, d0, _, m1, _) in &problems {
            let len = length.entry(m0.clone()).or_insert(0);
            *len = (*len).max(*d0);
            if m0 != m1 {
                assert_eq!(
                    successor
                        .insert(m0.clone(), m1.clone())
                        .unwrap_or(m1.clone()),
                    *m1
                );
            }
        }
        assert_eq!(successor.len(), length.len(), "every month has a successor");
        assert!(length.values().all(|&l| l > calendar::MAX_SHIFT));
        for (m0, d0, shift, m1, d1) in &problems {
            let len = length[m0];
            let expected = if d0 + shift <= len {
                (m0.clone(), d0 + shift)
            } else {
                (successor[m0].clone(), d0 + shift - len)
            };
            assert_eq!(expected, (m1.clone(), *d1), "{m0} {d0} + {shift}");
        }
        if split == Split::Pretrain {
            assert_eq!(
                (length["February"], successor["February"].as_str()),
                (28, "March")
            );
            assert_eq!(successor["December"], "January");
        }
    }
}

#[test]
fn finetune_world_is_disjoint_from_pretraining() {
    let g = generator();
    let mut pre_names = HashSet::new();
    let mut fine_names = HashSet::new();
    for d in Domain::ALL {
        pre_names.extend(g.entities(Split::Pretrain, d));
        fine_names.extend(g.entities(Split::Finetune, d));
        let pre_prompts: HashSet<String> = g
            .all(Split::Pretrain, d)
            .into_iter()
            .map(|s| s.prompt)
            .collect();
        let pre_pairs: HashSet<String> =
            g.all(Split::Pretrain, d).iter().map(Sample::text).collect();
        for s in g
            .all(Split::Finetune, d)
            .into_iter()
            .chain(g.all(Split::HeldOut, d))
        {
            assert!(
                !pre_pairs.contains(&s.text()),
                "{d}: {:?} is in pretraining",
                s.text()
            );
            if matches!(d, Domain::Facts | Domain::Sentences | Domain::Calendar) {
                assert!(
                    !pre_prompts.contains(&s.prompt),
                    "{d}: prompt {:?} is in pretraining",
                    s.prompt
                );
            }
        }
    }
    assert!(fine_names.len() >= 24 * 3 + 16 + 8, "{}", fine_names.len());
    assert!(
        pre_names.is_disjoint(&fine_names),
        "{:?}",
        pre_names.intersection(&fine_names).collect::<Vec<_>>()
    );
    for name in pre_names.iter().chain(&fine_names) {
        assert!((4..=8).contains(&name.len()), "{name}");
    }
    // Fine-tuning fact tables stay small enough to learn with a LoRA adapter.
    assert!((32..=64).contains(&g.units(Split::Finetune, Domain::Facts)));
    assert!((32..=64).contains(&g.units(Split::Finetune, Domain::Sentences)));
    assert!(g.units(Split::Pretrain, Domain::Facts) >= 200);
}

#[test]
fn shards_partition_each_domain() {
    let g = generator();
    for d in Domain::ALL {
        let all: HashSet<String> = g.all(Split::Finetune, d).iter().map(key).collect();
        for n_shards in [1, 2, 3] {
            let mut union = HashSet::new();
            let mut total = 0;
            for shard in 0..n_shards {
                let part: HashSet<String> = g
                    .shard_all(d, shard, n_shards)
                    .unwrap()
                    .iter()
                    .map(key)
                    .collect();
                assert!(!part.is_empty(), "{d} {shard}/{n_shards}");
                total += part.len();
                union.extend(part);
            }
            assert_eq!(total, union.len(), "{d}: shards of {n_shards} overlap");
            assert_eq!(
                union, all,
                "{d}: shards of {n_shards} do not cover the domain"
            );
        }
        // Sampling from a shard stays inside it and covers it within one epoch.
        let part: HashSet<String> = g.shard_all(d, 1, 2).unwrap().iter().map(key).collect();
        let drawn: HashSet<String> = g
            .finetune_shard(d, 1, 2, part.len())
            .unwrap()
            .iter()
            .map(key)
            .collect();
        assert_eq!(drawn, part, "{d}");
    }
    // Calendar shards split by starting month: no month starts problems on both nodes.
    let months = |shard| -> HashSet<String> {
        g.shard_all(Domain::Calendar, shard, 2)
            .unwrap()
            .iter()
            .map(|s| s.prompt.split(' ').next().unwrap().to_string())
            .collect()
    };
    assert!(months(0).is_disjoint(&months(1)));
}

/// Identity of a sample up to surface form (code variable letters are drawn per sample).
fn key(s: &Sample) -> String {
    if s.domain == Some(Domain::Code) {
        s.text()
            .chars()
            .map(|c| if c.is_ascii_lowercase() { 'v' } else { c })
            .collect()
    } else {
        s.text()
    }
}

#[test]
fn shard_arguments_are_validated() {
    let g = generator();
    assert!(matches!(
        g.finetune_shard(Domain::Facts, 0, 0, 4),
        Err(Error::InvalidShard { n_shards: 0, .. })
    ));
    assert!(matches!(
        g.finetune_shard(Domain::Facts, 2, 2, 4),
        Err(Error::InvalidShard { shard: 2, .. })
    ));
    let max = g.max_shards(Domain::Calendar);
    assert!(g.shard_all(Domain::Calendar, 0, max).is_ok());
    assert!(matches!(
        g.finetune_shard(Domain::Calendar, 0, max + 1, 4),
        Err(Error::TooManyShards { n_shards, max: m, .. }) if n_shards == max + 1 && m == max
    ));
}

#[test]
fn heldout_is_answerable_from_the_union_of_finetune_shards() {
    let g = generator();
    for d in Domain::ALL {
        let union: HashSet<String> = (0..2)
            .flat_map(|s| g.shard_all(d, s, 2).unwrap())
            .map(|s| key(&s))
            .collect();
        let heldout = g.heldout(d, 2 * g.units(Split::HeldOut, d));
        let distinct: HashSet<String> = heldout.iter().map(key).collect();
        assert_eq!(
            distinct.len(),
            g.units(Split::HeldOut, d),
            "{d}: two epochs cover the held-out set"
        );
        match d {
            // Knowledge: every held-out query is a fact some node trained on.
            Domain::Facts | Domain::Sentences => assert!(distinct.is_subset(&union), "{d}"),
            // Computed: fresh problems that no node trained on, in the fine-tuning world.
            _ => assert!(distinct.is_disjoint(&union), "{d}"),
        }
    }
    // For calendar, every held-out month is one some node trained on.
    let months = |v: Vec<Sample>| -> HashSet<String> {
        v.iter()
            .map(|s| s.prompt.split(' ').next().unwrap().to_string())
            .collect()
    };
    let trained = months(g.all(Split::Finetune, Domain::Calendar));
    assert!(months(g.all(Split::HeldOut, Domain::Calendar)).is_subset(&trained));
}

#[test]
fn sampling_is_deterministic_prefix_stable_and_seed_dependent() {
    let g = generator();
    let again = Generator::new(DEFAULT_SEED);
    let other = Generator::new(DEFAULT_SEED + 1);
    for split in Split::ALL {
        for d in Domain::ALL {
            let long = g.samples(split, d, 40);
            assert_eq!(g.samples(split, d, 40), again.samples(split, d, 40));
            assert_eq!(&long[..10], &g.samples(split, d, 10)[..]);
        }
    }
    assert_ne!(
        g.samples(Split::Finetune, Domain::Facts, 10),
        other.samples(Split::Finetune, Domain::Facts, 10)
    );
    let mixed = g.pretrain_mixed(12);
    assert_eq!(mixed.len(), 12);
    for (i, s) in mixed.iter().enumerate() {
        assert_eq!(s.domain, Some(Domain::ALL[i % Domain::ALL.len()]));
    }
    assert!(g.samples(Split::Pretrain, Domain::Facts, 0).is_empty());
}

#[test]
fn exact_match_trims() {
    let s = Sample {
        domain: Some(Domain::Facts),
        prompt: "The capital of Varonia is".into(),
        answer: " Teskel.".into(),
    };
    assert_eq!(s.text(), "The capital of Varonia is Teskel.");
    assert!(s.is_correct("Teskel.\n"));
    assert!(!s.is_correct("Teskel"));
}

#[test]
fn golden_first_samples() {
    let g = generator();
    let mut got = Vec::new();
    for split in Split::ALL {
        for d in Domain::ALL {
            for s in g.samples(split, d, 2) {
                got.push(format!("{split}/{d}: {}", s.text()));
            }
        }
    }
    for s in g.finetune_shard(Domain::Facts, 1, 2, 2).unwrap() {
        got.push(format!("shard1of2/facts: {}", s.text()));
    }
    assert_eq!(got, GOLDEN, "golden samples changed:\n{got:#?}");
}

const GOLDEN: &[&str] = &[
    "pretrain/arithmetic: 19+17=36",
    "pretrain/arithmetic: 19+32=51",
    "pretrain/facts: The currency of Gonmas is the nesdoul.",
    "pretrain/facts: The capital of Tailfun is Zurkol.",
    "pretrain/calendar: Dirves 7 + 6 days is Dirves 13.",
    "pretrain/calendar: July 7 + 16 days is July 23.",
    "pretrain/sentences: I saw one leaf and five leaves.",
    "pretrain/sentences: I saw one lirbir and three lirbir.",
    "pretrain/code: g=30;h=g;g=9;h=30",
    "pretrain/code: p=2;l=p+5;l=7",
    "finetune/arithmetic: 51+91=142",
    "finetune/arithmetic: 68+94=162",
    "finetune/facts: The currency of Boulpou is the sonfis.",
    "finetune/facts: The capital of Koubor is Benvel.",
    "finetune/calendar: Braisoul 9 + 18 days is Braisoul 27.",
    "finetune/calendar: Kanvar 19 + 10 days is Zudru 3.",
    "finetune/sentences: I saw one saibai and two saibai.",
    "finetune/sentences: I saw one pontair and three pontaires.",
    "finetune/code: k=94;x=90;l=k+x;l=184",
    "finetune/code: e=77;s=e;e=91;s=77",
    "heldout/arithmetic: 84+59=143",
    "heldout/arithmetic: 98-54=44",
    "heldout/facts: The capital of Sopou is Vusfoun.",
    "heldout/facts: The currency of Taiski is the rezus.",
    "heldout/calendar: Rusdrou 20 + 4 days is Rusdrou 24.",
    "heldout/calendar: Houvoul 23 + 19 days is Nulpo 14.",
    "heldout/sentences: I saw one gaspair and two gaspairen.",
    "heldout/sentences: I saw one roulvas and five roulvases.",
    "heldout/code: h=86;n=85;m=h+n;m=171",
    "heldout/code: t=54;q=93;a=t+q;a=147",
    "shard1of2/facts: The capital of Sainze is Lusral.",
    "shard1of2/facts: The currency of Krolrus is the pousbrul.",
];

#[test]
fn streams_cycle_in_epochs() {
    let g = generator();
    let stream = g.stream(Split::Pretrain, Domain::Facts);
    let epoch = stream.epoch_len();
    assert_eq!(epoch, g.units(Split::Pretrain, Domain::Facts));
    let mut counts = std::collections::HashMap::new();
    for s in stream.take(3 * epoch) {
        *counts.entry(s.text()).or_insert(0) += 1;
    }
    assert_eq!(counts.len(), epoch);
    assert!(counts.values().all(|&c| c == 3));
    // Epochs are reshuffled, not repeated.
    let two: Vec<Sample> = g.stream(Split::Finetune, Domain::Facts).take(96).collect();
    assert_ne!(two[..48], two[48..]);
    let shard = g.shard_stream(Domain::Sentences, 0, 2).unwrap();
    assert_eq!(
        shard.epoch_len(),
        g.shard_all(Domain::Sentences, 0, 2).unwrap().len()
    );
    assert_eq!(
        g.pretrain_stream().take(7).collect::<Vec<_>>(),
        g.pretrain_mixed(7)
    );
}
