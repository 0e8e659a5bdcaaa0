//! Bad requests and misbehaving models give typed errors.

use std::ops::ControlFlow;

use candle_core::{Device, Result, Tensor};

use super::super::testing::{ScriptedModel, ToyModel};
use super::super::{Error, Options, Request, RowRequest, generate};
use super::{SP, VOCAB};
use crate::denoiser::{Batch, Denoiser};

fn fail<D: Denoiser>(model: &D, opts: &Options, req: &Request) -> Error {
    generate(model, &Device::Cpu, &SP, opts, req, |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
}

fn small() -> Options {
    Options {
        gen_length: 4,
        block_length: 4,
        steps: Some(4),
        ..Options::default()
    }
}

/// Returns logits with one entry too many in the vocabulary dimension.
struct WrongShape;

impl Denoiser for WrongShape {
    type Cache = ();
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn shift_logits(&self) -> bool {
        false
    }
    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let (b, l) = batch.ids.dims2()?;
        Tensor::zeros((b, l, VOCAB + 1), candle_core::DType::F32, &Device::Cpu)
    }
    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, ())> {
        Ok((self.forward(batch)?, ()))
    }
    fn forward_window(&self, batch: &Batch, _: usize, _: usize, _: &mut ()) -> Result<Tensor> {
        self.forward(batch)
    }
}

#[test]
fn bad_requests() {
    let m = ToyModel::new(VOCAB, 1);
    let o = small();
    assert!(matches!(
        fail(&m, &o, &Request { rows: vec![] }),
        Error::EmptyRequest
    ));
    let req = Request::with_seeds(vec![vec![SP.bos], vec![]], 0);
    assert!(matches!(fail(&m, &o, &req), Error::EmptyPrompt { row: 1 }));
    let req = Request::single(vec![SP.bos, 99], 0);
    assert!(matches!(
        fail(&m, &o, &req),
        Error::TokenOutOfVocab {
            row: 0,
            index: 1,
            token: 99,
            vocab: VOCAB
        }
    ));
    let req = Request::single(vec![SP.mask], 0);
    assert!(matches!(
        fail(&m, &o, &req),
        Error::MaskInPrompt { row: 0, index: 0 }
    ));
    let tiny = ToyModel::new(8, 1);
    let req = Request::single(vec![1], 0);
    assert!(matches!(
        fail(&tiny, &o, &req),
        Error::SpecialOutOfVocab { name: "mask", .. }
    ));
    let bad = Options {
        block_length: 3,
        ..o
    };
    let req = Request {
        rows: vec![RowRequest {
            prompt: vec![1],
            seed: 0,
        }],
    };
    assert!(matches!(
        fail(&m, &bad, &req),
        Error::BlockLength {
            gen_length: 4,
            block_length: 3
        }
    ));
}

#[test]
fn bad_models() {
    let req = Request::single(vec![SP.bos], 0);
    assert!(matches!(
        fail(&WrongShape, &small(), &req),
        Error::LogitsShape { .. }
    ));
    let nan = ScriptedModel::new(VOCAB, |_: &[u32], _: usize| vec![f32::NAN; VOCAB]);
    assert!(matches!(
        fail(&nan, &small(), &req),
        Error::NonFiniteLogits {
            row: 0,
            position: 1
        }
    ));
    // Only MASK and EOS have finite logits and EOS is banned: nothing can be proposed.
    let only_eos = ScriptedModel::new(VOCAB, |_: &[u32], _: usize| {
        let mut l = vec![f32::NEG_INFINITY; VOCAB];
        l[SP.mask as usize] = 1.0;
        l[SP.eos as usize] = 1.0;
        l
    });
    let o = Options {
        logits_eos_inf: true,
        ..small()
    };
    assert!(matches!(
        fail(&only_eos, &o, &req),
        Error::NoCandidateToken {
            row: 0,
            position: 1
        }
    ));
}
