//! Training on the built-in pretraining split beats the unigram entropy of that data within a
//! bounded number of steps: the model learns context, not just token frequencies.
#![cfg(feature = "model")]

// Training allocates and frees many large tensors per step; mimalloc reuses them where glibc's
// malloc maps fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use candle_core::Device;
use candle_nn::VarMap;
use rand::SeedableRng;
use ruvdllm::data::{DEFAULT_SEED, Generator};
use ruvdllm::model::{Config, checkpoint};
use ruvdllm::tokenizer::{ByteTokenizer, Tokenizer};
use ruvdllm::train::{Example, Objective, Schedule, Trainer, masked_diffusion_loss, pack};

#[test]
fn loss_falls_below_the_unigram_entropy() {
    let cfg = Config {
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 16,
        mlp_hidden: 128,
        ..Config::tiny()
    };
    let (bs, seq, steps) = (16, 64, 150);
    let tok = ByteTokenizer;
    let generator = Generator::new(DEFAULT_SEED);
    let mut stream = generator.pretrain_stream();
    let batches: Vec<_> = (0..steps)
        .map(|_| {
            let ex: Vec<Example> = stream
                .by_ref()
                .take(bs)
                .map(|s| Example {
                    prompt: tok.encode(&s.prompt),
                    answer: tok.encode(&s.answer),
                })
                .collect();
            pack(&ex, seq, cfg.specials, true)
        })
        .collect();
    // Unigram entropy (nats) of the maskable tokens, scaled like the loss (which divides by B·L
    // while BOS is never masked).
    let mut counts = vec![0f64; cfg.vocab_size];
    let (mut n, mut positions) = (0f64, 0f64);
    for b in &batches {
        for (row, m) in b.ids.iter().zip(&b.maskable) {
            for (&t, &ok) in row.iter().zip(m) {
                positions += 1.0;
                if ok {
                    counts[t as usize] += 1.0;
                    n += 1.0;
                }
            }
        }
    }
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / n) * (c / n).ln())
        .sum();
    let baseline = entropy * n / positions;

    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = checkpoint::trainable(&vm, &cfg, &dev).unwrap();
    checkpoint::seeded_init(&vm, 3, 0.02).unwrap();
    let sched = Schedule {
        peak_lr: 3e-3,
        warmup: 10,
        total: steps,
        floor: 0.1,
    };
    let mut tr = Trainer::new(vm.all_vars(), sched, 0.0, Some(1.0)).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut losses = Vec::new();
    for b in &batches {
        let loss =
            masked_diffusion_loss(&model, b, Objective::Pretrain, (0.0, 1.0), &mut rng).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap() as f64);
        tr.step(&loss).unwrap();
    }
    let first: f64 = losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = losses[steps - 20..].iter().sum::<f64>() / 20.0;
    println!(
        "unigram baseline {baseline:.4} nats/position; loss first 10 steps {first:.4}, last 20 steps {last:.4}"
    );
    assert!(
        first > baseline,
        "an untrained model should not beat the unigram entropy ({first} vs {baseline})"
    );
    assert!(
        last < baseline,
        "after {steps} steps the loss {last:.4} should be below the unigram entropy {baseline:.4}"
    );
}
