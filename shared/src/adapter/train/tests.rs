use rand::SeedableRng;

use super::*;
use crate::adapter::attach::tests::random_model;
use crate::adapter::{Shape, Spec};
use crate::model::Model;

fn examples() -> Vec<Example> {
    // A pattern the random base cannot know: prompt "k<digit>=" → answer "<digit><digit>!".
    (0..10u32)
        .map(|d| Example {
            prompt: vec![b'k' as u32, 48 + d, b'=' as u32],
            answer: vec![48 + d, 48 + (d * 3) % 10, b'!' as u32],
        })
        .collect()
}

fn weights(m: &Model) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for layer in 0..m.config().n_layers {
        for t in crate::adapter::Target::ALL {
            let w = m.linear(layer, t).unwrap().dense_weight().unwrap();
            out.push(w.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        }
    }
    out
}

#[test]
fn schedules_pick_bands() {
    let rr: Vec<Band> = (0..4)
        .map(|s| BandSchedule::RoundRobin.band(s, 4))
        .collect();
    assert_eq!(
        rr,
        vec![Band::Coarse, Band::Domain, Band::Fine, Band::Coarse]
    );
    let cur: Vec<Band> = (0..6)
        .map(|s| BandSchedule::Curriculum.band(s, 6))
        .collect();
    assert_eq!(
        cur,
        vec![
            Band::Coarse,
            Band::Coarse,
            Band::Domain,
            Band::Domain,
            Band::Fine,
            Band::Fine
        ]
    );
    assert_eq!(
        "fine".parse::<BandSchedule>().unwrap(),
        BandSchedule::Only(Band::Fine)
    );
    assert_eq!(
        "curriculum".parse::<BandSchedule>().unwrap(),
        BandSchedule::Curriculum
    );
    assert!("sideways".parse::<BandSchedule>().is_err());
}

#[test]
fn training_b_only_reduces_heldout_loss_and_leaves_the_base_bit_identical() {
    let base = random_model(11);
    let before_w = weights(&base);
    let ex = examples();
    let shape = Shape::from(base.config());
    let global = Talora::new(Spec::default(), 3, shape).unwrap();
    let mut talora = global.clone();
    let seq = 12;
    let loss_of = |t: &Talora| {
        let mut m = base.clone();
        m.set_adapter(t.to_adapter(&base).unwrap());
        band_losses(&m, &ex, seq, 77, 10).unwrap()
    };
    let before = loss_of(&talora);
    let opts = TrainOptions {
        steps: 45,
        batch_size: 8,
        seq_len: seq,
        lr: 1e-2,
        warmup: 2,
        ..TrainOptions::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let report = run(&base, &mut talora, &ex, &opts, &mut rng).unwrap();
    assert_eq!(report.steps, 45);
    assert_eq!(report.samples_seen, 45 * 8);
    assert!(report.bands.iter().all(|b| b.steps == 15));
    let after = loss_of(&talora);
    assert!(
        after.all < 0.9 * before.all,
        "held-out loss {} → {}",
        before.all,
        after.all
    );
    for k in 0..3 {
        assert!(
            after.bands[k] < before.bands[k],
            "band {k}: {:?} → {:?}",
            before,
            after
        );
    }
    // Only B moved: A is the seed's, the base weights are bit-identical.
    assert_eq!(talora.a(), global.a());
    assert_ne!(talora.to_delta(), global.to_delta());
    assert_eq!(weights(&base), before_w);
    // The update is exactly what separates the two adapters.
    let update = talora.update_from(&global).unwrap();
    let mut again = global.clone();
    again.apply_delta(&update).unwrap();
    assert_eq!(again.to_delta(), talora.to_delta());
}

#[test]
fn one_band_schedule_trains_only_that_band() {
    let base = random_model(12);
    let shape = Shape::from(base.config());
    let global = Talora::new(Spec::default(), 4, shape).unwrap();
    let mut talora = global.clone();
    let opts = TrainOptions {
        steps: 3,
        seq_len: 12,
        schedule: BandSchedule::Only(Band::Fine),
        ..TrainOptions::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    run(&base, &mut talora, &examples(), &opts, &mut rng).unwrap();
    let update = talora.update_from(&global).unwrap();
    for t in &update.tensors {
        let moved = t.data.iter().any(|&v| v != 0.0);
        assert_eq!(moved, t.name.starts_with("talora.fine."), "{}", t.name);
    }
    assert!(matches!(
        run(&base, &mut talora, &[], &opts, &mut rng),
        Err(Error::Spec {
            field: "examples",
            ..
        })
    ));
}
