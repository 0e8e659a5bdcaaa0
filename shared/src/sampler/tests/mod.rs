//! End-to-end tests of [`super::generate`] against the test models in [`super::testing`].

mod batch;
mod dgr;
mod errors;
mod fast;
mod llada;
mod rules;
mod timestep;

use std::ops::ControlFlow;

use candle_core::Device;

use super::{Options, Output, Request, StepEvent, generate};
use crate::denoiser::Denoiser;
use crate::tokens::SpecialTokens;

/// A small vocabulary: ids 0..10 are "text", then the specials.
pub(super) const SP: SpecialTokens = SpecialTokens {
    mask: 10,
    bos: 11,
    eos: 12,
    pad: 13,
    eot: Some(14),
};
pub(super) const VOCAB: usize = 16;
pub(super) const M: u32 = SP.mask;

/// What a test keeps of one step event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seen {
    pub step: usize,
    pub block: usize,
    pub step_in_block: usize,
    pub nfe: usize,
    pub t: Vec<f64>,
    pub committed: Vec<Vec<usize>>,
    pub canvas: Vec<Vec<u32>>,
    pub finished: Vec<bool>,
}

impl Seen {
    fn of(e: &StepEvent<'_>) -> Seen {
        Seen {
            step: e.step,
            block: e.block,
            step_in_block: e.step_in_block,
            nfe: e.nfe,
            t: e.rows.iter().map(|r| r.t).collect(),
            committed: e.rows.iter().map(|r| r.committed.clone()).collect(),
            canvas: e.rows.iter().map(|r| r.canvas.to_vec()).collect(),
            finished: e.rows.iter().map(|r| r.finished).collect(),
        }
    }
}

/// Runs a generation, recording every step.
pub(super) fn run<D: Denoiser>(model: &D, opts: &Options, req: &Request) -> (Output, Vec<Seen>) {
    let mut seen = Vec::new();
    let out = generate(model, &Device::Cpu, &SP, opts, req, |e| {
        seen.push(Seen::of(e));
        ControlFlow::Continue(())
    })
    .expect("generation succeeds");
    (out, seen)
}

/// Logits that are `-4` everywhere except `score` at `token`.
pub(super) fn one_hot(token: u32, score: f32) -> Vec<f32> {
    let mut l = vec![-4.0; VOCAB];
    l[token as usize] = score;
    l
}

/// Checks the invariants every run must keep: a committed token never changes (before an
/// early-stop fill) and no position past the current block is ever written.
pub(super) fn check_invariants(seen: &[Seen], prompt_lens: &[usize], block_length: usize) {
    for w in seen.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        for r in 0..a.canvas.len() {
            if b.finished[r] && a.finished[r] {
                continue;
            }
            for (p, (&x, &y)) in a.canvas[r].iter().zip(&b.canvas[r]).enumerate() {
                if x != M && !b.finished[r] {
                    assert_eq!(x, y, "row {r} position {p} changed after commit");
                }
            }
        }
    }
    for s in seen {
        for (r, &prompt_len) in prompt_lens.iter().enumerate() {
            if s.finished[r] {
                continue;
            }
            let end = prompt_len + (s.block + 1) * block_length;
            assert!(
                s.canvas[r][end..].iter().all(|&t| t == M),
                "row {r} touched a future block at step {}",
                s.step
            );
        }
    }
}
