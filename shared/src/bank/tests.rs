//! Bank-level behaviour: LRU eviction, persistence, scoring through search, DGR's lag and the
//! round insertion.

use rand::{Rng, SeedableRng};

use super::compose::compose_rows_into;
use super::*;

const D: usize = 16;

fn adapter(rank: usize, seed: u64) -> Adapter {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut m = |r: usize, c: usize| {
        Matrix::new(
            r,
            c,
            (0..r * c).map(|_| rng.random_range(-0.5f32..0.5)).collect(),
            "m",
        )
        .unwrap()
    };
    Adapter {
        layers: (0..2)
            .map(|_| LayerFactors {
                q: LowRank::new(m(rank, D), m(D, rank)).unwrap(),
                v: LowRank::new(m(rank, D), m(D / 2, rank)).unwrap(),
            })
            .collect(),
    }
}

fn key(seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xABCD);
    (0..KEY_DIM)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect()
}

fn pattern(bank: &mut Bank, seed: u64, now: u64) -> Pattern {
    let id = bank.allocate_id();
    Pattern::new(id, bank.band(), &key(seed), &adapter(2, seed), now).unwrap()
}

fn small_bank(capacity: usize) -> Bank {
    Bank::new(
        Band::Domain,
        Config {
            capacity,
            recency_tau: 10.0,
            ..Config::default()
        },
    )
    .unwrap()
}

#[test]
fn lru_evicts_least_recently_used_first() {
    let mut bank = small_bank(3);
    let ids: Vec<u64> = (0..3)
        .map(|i| {
            let p = pattern(&mut bank, i, 10 + i);
            let id = p.id;
            assert!(bank.insert(p).unwrap().is_empty());
            id
        })
        .collect();
    // use the oldest: now ids[1] is the least recently used
    bank.touch(&[ids[0]], 20).unwrap();
    assert_eq!(bank.lru_order(), vec![ids[1], ids[2], ids[0]]);
    let p = pattern(&mut bank, 3, 21);
    let new = p.id;
    assert_eq!(bank.insert(p).unwrap(), vec![ids[1]]);
    assert!(bank.get(ids[1]).is_none());
    let p = pattern(&mut bank, 4, 22);
    assert_eq!(bank.insert(p).unwrap(), vec![ids[2]]);
    assert_eq!(bank.lru_order(), vec![ids[0], new, new + 1]);
    // evicted patterns are never returned, by HNSW or by the scan
    for seed in 0..5 {
        for s in bank.search(&key(seed), 5, 22).unwrap() {
            assert!(s.id != ids[1] && s.id != ids[2]);
        }
        assert!(
            bank.search_exact(&key(seed), 5, 22)
                .unwrap()
                .iter()
                .all(|s| s.id != ids[1] && s.id != ids[2])
        );
    }
    assert!(bank.touch(&[ids[1]], 30).is_err());
    // a batch larger than capacity keeps the most recent
    let batch: Vec<Pattern> = (10..15).map(|i| pattern(&mut bank, i, 100 - i)).collect();
    let batch_ids: Vec<u64> = batch.iter().map(|p| p.id).collect();
    let evicted = bank.insert_many(batch).unwrap();
    assert_eq!(bank.len(), 3);
    // last uses: old ones 20, 21, 22; batch 90, 89, 88, 87, 86 → keep 90, 89, 88
    assert_eq!(
        bank.lru_order(),
        vec![batch_ids[2], batch_ids[1], batch_ids[0]]
    );
    assert_eq!(evicted.len(), 5);
}

#[test]
fn insert_rejects_bad_patterns_without_changes() {
    let mut bank = small_bank(10);
    let p = pattern(&mut bank, 1, 0);
    let dup = p.clone();
    bank.insert(p).unwrap();
    assert!(matches!(bank.insert(dup), Err(Error::DuplicateId { .. })));
    let wrong = Pattern::new(99, Band::Fine, &key(2), &adapter(2, 2), 0).unwrap();
    assert!(matches!(bank.insert(wrong), Err(Error::WrongBand { .. })));
    let mut other = adapter(2, 3);
    other.layers.pop();
    let bad = Pattern::new(98, Band::Domain, &key(3), &other, 0).unwrap();
    assert!(matches!(bank.insert(bad), Err(Error::LayerCount { .. })));
    assert_eq!(bank.len(), 1);
    assert!(bank.update_success(12345, 0.5).is_err());
    assert!(bank.search(&[0.0; KEY_DIM], 1, 0).is_err());
}

#[test]
fn search_scores_follow_the_formula() {
    let mut bank = small_bank(100);
    for i in 0..40 {
        let p = pattern(&mut bank, i, i * 2);
        bank.insert(p).unwrap();
    }
    bank.update_success(5, 1.0).unwrap();
    let s = bank.update_success(5, 1.0).unwrap();
    assert!((s - (0.3 + 0.7 * 0.3)).abs() < 1e-6, "EMA: {s}");
    assert!(
        (bank.update_success(6, -7.0).unwrap() + 0.3).abs() < 1e-6,
        "clamped to −1"
    );
    let now = 100;
    let q = key(5);
    let qn = key::normalize(q.clone(), "q").unwrap();
    let exact = bank.search_exact(&q, 40, now).unwrap();
    assert_eq!(exact.len(), 40);
    for s in &exact {
        let p = bank.get(s.id).unwrap();
        let sim: f32 = p.key().iter().zip(&qn).map(|(a, b)| a * b).sum();
        let rec = (-((now - p.last_use) as f32) / 10.0).exp();
        let want = 0.5 * sim + 0.3 * p.success + 0.2 * rec;
        assert!((s.score - want).abs() < 1e-5, "{} vs {want}", s.score);
    }
    assert!(exact.windows(2).all(|w| w[0].score >= w[1].score));
    assert_eq!(exact[0].id, 5, "same key, best success");
    // HNSW (over all 40 candidates here) agrees with the scan on the top 3
    let top: Vec<u64> = bank
        .search(&q, 3, now)
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    let want: Vec<u64> = exact[..3].iter().map(|s| s.id).collect();
    assert_eq!(top, want);
}

#[test]
fn save_load_round_trip_gives_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = small_bank(50);
    for i in 0..30 {
        let p = pattern(&mut bank, i, i);
        bank.insert(p).unwrap();
    }
    for i in 0..5 {
        bank.remove(i * 3).unwrap();
    }
    bank.update_success(7, 0.4).unwrap();
    bank.touch(&[8], 99).unwrap();
    bank.save(dir.path()).unwrap();
    // a second save (new generation) replaces the first file
    bank.save(dir.path()).unwrap();
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".safetensors")).count(),
        1,
        "{files:?}"
    );
    let loaded = Bank::load(dir.path()).unwrap();
    assert_eq!(loaded.len(), bank.len());
    assert_eq!(loaded.band(), bank.band());
    assert_eq!(loaded.config(), bank.config());
    assert_eq!(loaded.lru_order(), bank.lru_order());
    for p in bank.patterns() {
        assert_eq!(loaded.get(p.id), Some(p));
    }
    for seed in 0..10 {
        let q = key(100 + seed);
        assert_eq!(
            loaded.search_exact(&q, 5, 120).unwrap(),
            bank.search_exact(&q, 5, 120).unwrap()
        );
        assert_eq!(
            loaded.search(&q, 5, 120).unwrap(),
            bank.search(&q, 5, 120).unwrap()
        );
    }
    let mut loaded = loaded;
    let mut b2 = bank;
    assert_eq!(loaded.allocate_id(), b2.allocate_id());
}

#[test]
fn corrupt_bank_folders_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Bank::load(dir.path()), Err(Error::Io { .. })));
    let mut bank = small_bank(5);
    let p = pattern(&mut bank, 1, 0);
    bank.insert(p).unwrap();
    bank.save(dir.path()).unwrap();
    let meta = dir.path().join("bank.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("ruvdllm-bank-v1", "other")).unwrap();
    assert!(matches!(Bank::load(dir.path()), Err(Error::Corrupt { .. })));
    std::fs::write(&meta, &text).unwrap();
    Bank::load(dir.path()).unwrap();
    // a data file that does not match the layout
    let data = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(Bank::load(dir.path()), Err(Error::Corrupt { .. })));
    std::fs::write(
        &meta,
        text.replace("\"data_file\": \"", "\"data_file\": \"../"),
    )
    .unwrap();
    assert!(matches!(Bank::load(dir.path()), Err(Error::Corrupt { .. })));
}

/// Logits rows over 16 tokens: `m` equally likely tokens (entropy ln m / ln 16).
fn logits(ms: &[usize]) -> Vec<f32> {
    ms.iter()
        .flat_map(|m| (0..16).map(move |i| if i < *m { 0.0 } else { -1e9 }))
        .collect()
}

#[test]
fn dgr_plan_applies_exactly_one_step_later() {
    let mut bank = small_bank(100);
    for i in 0..20 {
        let p = pattern(&mut bank, i, 0);
        bank.insert(p).unwrap();
    }
    let proj = KeyProjection::new(3, D).unwrap();
    let mut dgr = Dgr::new(dgr::Config::default(), proj.clone()).unwrap();
    let positions = [4usize, 5, 6, 9];
    // positions 5 and 9 are uncertain (16 and 12 of 16 tokens), 4 and 6 are not
    let lg = logits(&[1, 16, 2, 12]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let hidden: Vec<f32> = (0..4 * D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let row = dgr::RowObservation {
        row: 0,
        positions: &positions,
        logits: &lg,
        vocab: 16,
        hidden: &hidden,
        t: 0.5,
    };
    assert!(dgr.plan_for(0).is_none());
    let plan = dgr.observe(3, &[row], &bank, 5).unwrap().clone();
    assert_eq!(plan.step, 4);
    assert_eq!(
        plan.selected
            .iter()
            .map(|(_, s)| s.position)
            .collect::<Vec<_>>(),
        vec![5, 9]
    );
    // the plan is for step 4 only
    assert!(dgr.plan_for(3).is_none());
    assert_eq!(dgr.plan_for(4), Some(&plan));
    assert!(dgr.plan_for(5).is_none());
    // each entry: top-3 of the bank for that position's projected hidden state, composed
    assert_eq!(plan.entries.len(), 2);
    for e in &plan.entries {
        let i = positions.iter().position(|p| *p == e.position).unwrap();
        let key = proj.project(&hidden[i * D..(i + 1) * D]).unwrap();
        assert_eq!(e.patterns, bank.search(&key, 3, 5).unwrap());
        let scored: Vec<(&Pattern, f32)> = e
            .patterns
            .iter()
            .map(|s| (bank.get(s.id).unwrap(), s.score))
            .collect();
        let want = compose_scored(&scored, Method::default()).unwrap();
        let delta = compose(&e.parts(&bank).unwrap()).unwrap();
        assert_eq!(delta.layers.len(), 2);
        assert_eq!(delta.layers[0].q.rank(), 6);
        assert_eq!(delta, want);
        // The stacked rows DGR hands the model hold the same delta: Bᵀ-rows · A-rows = ΣwBA.
        let parts = e.parts(&bank).unwrap();
        for l in 0..2 {
            for t in Target::ALL {
                let (out, inp) = (
                    want.layers[l].get(t).out_dim(),
                    want.layers[l].get(t).in_dim(),
                );
                let (mut a, mut bt) = (vec![0.0; 6 * inp], vec![0.0; 6 * out]);
                compose_rows_into(&parts, l, t, &mut a, &mut bt).unwrap();
                let dense = want.layers[l].get(t).product();
                for o in 0..out {
                    for i in 0..inp {
                        let v: f32 = (0..6).map(|r| bt[r * out + o] * a[r * inp + i]).sum();
                        assert!((v - dense.get(o, i)).abs() < 1e-5);
                    }
                }
                assert!(compose_rows_into(&parts, l, t, &mut a[1..], &mut bt).is_err());
                assert!(compose_rows_into(&parts, 2, t, &mut a, &mut bt).is_err());
            }
        }
    }
    assert!(!plan.pattern_ids().is_empty());
    // the next observation replaces the plan; steps must increase
    assert!(dgr.observe(3, &[row], &bank, 5).is_err());
    let quiet = logits(&[1, 1, 2, 1]);
    let row2 = dgr::RowObservation {
        logits: &quiet,
        ..row
    };
    let p2 = dgr.observe(4, &[row2], &bank, 6).unwrap();
    assert!(p2.selected.is_empty() && p2.entries.is_empty());
    assert!(dgr.plan_for(4).is_none());
    assert_eq!(dgr.plan_for(5).map(|p| p.entries.len()), Some(0));
    // a late step with small t divides by √t: position 6 (2 tokens, 0.25) crosses 0.5 at t < 0.25
    // (t = 0.2 is the fine band: this domain bank is not consulted, selection still happens)
    let p3 = dgr
        .observe(5, &[dgr::RowObservation { t: 0.2, ..row }], &bank, 7)
        .unwrap();
    assert_eq!(
        p3.selected
            .iter()
            .map(|(_, s)| s.position)
            .collect::<Vec<_>>(),
        vec![5, 9, 6]
    );
    // bad hidden width
    let bad = dgr::RowObservation {
        hidden: &hidden[..10],
        ..row
    };
    assert!(dgr.observe(6, &[bad], &bank, 8).is_err());
}

#[test]
fn dgr_with_an_empty_bank_selects_but_applies_nothing() {
    let bank = small_bank(10);
    let mut dgr = Dgr::new(dgr::Config::default(), KeyProjection::new(1, D).unwrap()).unwrap();
    let lg = logits(&[16]);
    let hidden = vec![0.5f32; D];
    let row = dgr::RowObservation {
        row: 2,
        positions: &[7],
        logits: &lg,
        vocab: 16,
        hidden: &hidden,
        t: 0.5,
    };
    let plan = dgr.observe(0, &[row], &bank, 0).unwrap();
    assert_eq!(plan.selected.len(), 1);
    assert!(plan.entries.is_empty());
}

#[test]
fn round_inserts_global_and_local_per_band() {
    let mut banks = Banks::new(Config::default()).unwrap();
    let g8 = adapter(8, 1);
    let l8 = adapter(8, 2);
    let g2 = adapter(2, 3);
    let l2 = adapter(2, 4);
    let keys = RoundKeys {
        global: key(1),
        local: key(2),
    };
    let out = insert_round(
        &mut banks,
        &[(Band::Coarse, &g8), (Band::Fine, &g2)],
        &[(Band::Fine, &l2), (Band::Coarse, &l8)],
        &keys,
        7,
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(banks.get(Band::Coarse).len(), 2);
    assert_eq!(banks.get(Band::Fine).len(), 2);
    assert!(banks.get(Band::Domain).is_empty());
    let c = &out[0];
    let gp = banks.get(Band::Coarse).get(c.global_id).unwrap();
    assert_eq!(gp.last_use, 7);
    assert_eq!(gp.key(), key::normalize(key(1), "k").unwrap().as_slice());
    // a rank-8 adapter became its rank-2 truncation (then int8)
    let t = truncate_rank2(&g8.layers[1].q).unwrap().product();
    let got = gp.dequantize().layers[1].q.product();
    let scale = t.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in t.data().iter().zip(got.data()) {
        assert!((a - b).abs() < 0.03 * scale, "{a} vs {b}");
    }
    // second round: new ids; missing local adapter is an error and changes nothing
    let again = insert_round(
        &mut banks,
        &[(Band::Fine, &g2)],
        &[(Band::Fine, &l2)],
        &keys,
        8,
    )
    .unwrap();
    assert!(again[0].global_id > out[1].local_id);
    assert!(insert_round(&mut banks, &[(Band::Domain, &g2)], &[], &keys, 9).is_err());
    assert!(
        insert_round(
            &mut banks,
            &[(Band::Fine, &g2), (Band::Fine, &g2)],
            &[(Band::Fine, &l2)],
            &keys,
            9
        )
        .is_err()
    );
    assert_eq!(banks.len(), 6);
    // banks survive a restart
    let dir = tempfile::tempdir().unwrap();
    banks.save(dir.path()).unwrap();
    let back = Banks::load(dir.path(), Config::default()).unwrap();
    assert_eq!(back.len(), 6);
    assert_eq!(
        back.get(Band::Coarse).get(c.local_id),
        banks.get(Band::Coarse).get(c.local_id)
    );
}
