//! The frozen A matrices: derived, never transmitted.
//!
//! Every node of a run must hold bit-identical A for every adapted tensor, without exchanging it,
//! so that aggregating B is exact for `ΔW = B·A`. A is therefore a pure function of the run seed
//! and the tensor's name, computed from primitives whose output is fixed by a specification
//! (SHA-256, the ChaCha20 block function) and not through `rand`'s distributions, whose output
//! may change between versions.
//!
//! Exact derivation of the A of tensor `name` (shape `[r, in]`, row-major):
//!
//! 1. `key = SHA-256(run_seed.to_le_bytes() ‖ name.as_bytes())` — the 8 little-endian bytes of the
//!    `u64` run seed followed by the UTF-8 bytes of the full tensor name (for TALoRA
//!    `talora.<band>.base_model.model.<module>.lora_A.weight`), no separator, no length prefix;
//! 2. `rng = rand_chacha::ChaCha20Rng::from_seed(key)` (20 rounds, 32-byte key, nonce 0,
//!    stream 0); the words are read with `next_u32` in order;
//! 3. element `i` (row-major) takes the `i`-th word `w`: `u = (w >> 8) as f32 / 2^24` (exact,
//!    in `[0, 1)`), `value = (2u − 1) · bound` with `bound = (1 / √in) as f32` (the square root
//!    and division in f64, then rounded once to f32). `2u − 1` is exact, so the only rounding is
//!    the final product, and every value lies in `[−bound, bound)`.
//!
//! This bound is PEFT's default for A (Kaiming-uniform with `a = √5` gives `1/√in`).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

/// The 32-byte ChaCha20 key of tensor `name` under `run_seed` (step 1 above).
pub fn key(run_seed: u64, name: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(run_seed.to_le_bytes());
    h.update(name.as_bytes());
    h.finalize().into()
}

/// The uniform bound `1/√in` as f32 (`in = 0` is treated as 1).
pub fn bound(fan_in: usize) -> f32 {
    (1.0 / (fan_in.max(1) as f64).sqrt()) as f32
}

/// A `[rank, fan_in]` (row-major) for tensor `name` under `run_seed`.
pub fn derive(run_seed: u64, name: &str, rank: usize, fan_in: usize) -> Vec<f32> {
    let mut rng = ChaCha20Rng::from_seed(key(run_seed, name));
    let b = bound(fan_in);
    (0..rank * fan_in)
        .map(|_| {
            let u = (rng.next_u32() >> 8) as f32 / 16_777_216.0;
            (2.0 * u - 1.0) * b
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_bounded_and_name_sensitive() {
        let a = derive(7, "talora.coarse.x.lora_A.weight", 4, 64);
        assert_eq!(a, derive(7, "talora.coarse.x.lora_A.weight", 4, 64));
        assert_ne!(a, derive(8, "talora.coarse.x.lora_A.weight", 4, 64));
        assert_ne!(a, derive(7, "talora.domain.x.lora_A.weight", 4, 64));
        let b = bound(64);
        assert_eq!(b, 0.125);
        assert!(a.iter().all(|&v| (-b..b).contains(&v)));
        // Roughly uniform: mean near 0, variance near b²/3.
        let big = derive(1, "n", 64, 64);
        let mean = big.iter().map(|&v| v as f64).sum::<f64>() / big.len() as f64;
        let var = big.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / big.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(
            (var / (0.125f64.powi(2) / 3.0) - 1.0).abs() < 0.1,
            "var {var}"
        );
        // A prefix of a longer derivation is the shorter derivation (same stream).
        assert_eq!(derive(7, "n", 2, 64), derive(7, "n", 4, 64)[..128].to_vec());
    }

    #[test]
    fn pinned_first_values() {
        // The key is SHA-256 over 8 seed bytes then the name; pin it and the first words so that
        // any change to the derivation (byte order, hash input, word mapping) is caught.
        let k = key(1, "a");
        let mut h = Sha256::new();
        h.update([1u8, 0, 0, 0, 0, 0, 0, 0, b'a']);
        assert_eq!(k, <[u8; 32]>::from(h.finalize()));
        let mut rng = ChaCha20Rng::from_seed(k);
        let w = rng.next_u32();
        let v = derive(1, "a", 1, 4);
        assert_eq!(v[0], (2.0 * ((w >> 8) as f32 / 16_777_216.0) - 1.0) * 0.5);
    }
}
