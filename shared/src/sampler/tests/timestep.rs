//! The sampler hands each forward the rows' diffusion time: `Batch::t` = the fraction of the
//! row's current block still masked (DESIGN §3), duplicated for the unconditional CFG rows.
//! TALoRA adapters weight their bands by it.

use std::cell::RefCell;

use candle_core::{Result, Tensor};

use super::super::testing::ToyModel;
use super::super::{Options, Request};
use super::{SP, VOCAB, run};
use crate::denoiser::{Batch, Denoiser};

/// Delegates to a toy model and records the `t` of every forward.
struct Recording {
    inner: ToyModel,
    t: RefCell<Vec<Option<Vec<f64>>>>,
}

impl Denoiser for Recording {
    type Cache = <ToyModel as Denoiser>::Cache;

    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn shift_logits(&self) -> bool {
        false
    }

    fn forward(&self, batch: &Batch) -> Result<Tensor> {
        self.t.borrow_mut().push(batch.t.clone());
        self.inner.forward(batch)
    }

    fn forward_cached(&self, batch: &Batch) -> Result<(Tensor, Self::Cache)> {
        self.t.borrow_mut().push(batch.t.clone());
        self.inner.forward_cached(batch)
    }

    fn forward_window(
        &self,
        batch: &Batch,
        start: usize,
        len: usize,
        cache: &mut Self::Cache,
    ) -> Result<Tensor> {
        self.t.borrow_mut().push(batch.t.clone());
        self.inner.forward_window(batch, start, len, cache)
    }
}

#[test]
fn every_forward_carries_the_masked_fraction_of_each_rows_block() {
    let model = Recording {
        inner: ToyModel::new(VOCAB, 2),
        t: RefCell::new(Vec::new()),
    };
    let opts = Options {
        gen_length: 8,
        block_length: 4,
        steps: Some(4),
        cfg_scale: 1.0,
        early_stop: false,
        ..Options::default()
    };
    let req = Request::with_seeds(vec![vec![SP.bos, 1, 2], vec![SP.bos, 3]], 5);
    let (_, seen) = run(&model, &opts, &req);
    let recorded = model.t.borrow();
    assert_eq!(recorded.len(), seen.len(), "one forward per step");
    for (t, s) in recorded.iter().zip(&seen) {
        let t = t.as_ref().expect("the sampler sets t");
        // Conditional rows then their unconditional copies, each with the row's t.
        assert_eq!(t.len(), 4);
        assert_eq!(&t[..2], s.t.as_slice());
        assert_eq!(&t[2..], s.t.as_slice());
    }
    // Two tokens per step out of blocks of four: 1, 0.5, then the next block again.
    let row0: Vec<f64> = recorded.iter().map(|t| t.as_ref().unwrap()[0]).collect();
    assert_eq!(row0, vec![1.0, 0.5, 1.0, 0.5]);
}
