//! From a TALoRA adapter to the bank's plain-data adapters: one q/v [`Adapter`] per band.
//!
//! A pattern stores the update it makes to the weights, `ΔW = s · B · A` with the band's LoRA
//! scale `s = α / r` folded into B, so that retrieval and composition never need to know the spec
//! the pattern came from and a composed delta applies with scale 1. Only q and v are kept
//! (DESIGN §5: patterns are q/v adapters); a TALoRA adapter without both targets has no pattern.

use crate::adapter::{self, Talora};
use crate::aggregate::daf::Band;

use super::error::{Error, Result};
use super::matrix::{Adapter, LayerFactors, LowRank, Matrix};

/// `(s·B, A)` of one band, layer and target.
fn factors(t: &Talora, band: Band, layer: usize, target: adapter::Target) -> Result<LowRank> {
    let i = t.index(band, layer, target).ok_or(Error::Config {
        field: "talora targets",
        value: format!("{:?}", t.spec().targets),
        reason: "bank patterns need both q and v",
    })?;
    let (a, b) = (&t.a().tensors[i], &t.b().tensors[i]);
    let (r, inp) = (a.shape[0], a.shape[1]);
    let out = b.shape[0];
    let scale = t.spec().scale(band) as f32;
    let a = Matrix::new(r, inp, a.data.clone(), "talora A")?;
    let b = Matrix::new(
        out,
        r,
        b.data.iter().map(|v| v * scale).collect(),
        "talora B",
    )?;
    LowRank::new(a, b)
}

/// The q/v update of one band of `t` (rank = the band's rank; scale folded into B).
pub fn band_adapter(t: &Talora, band: Band) -> Result<Adapter> {
    let layers = (0..t.shape().n_layers)
        .map(|l| {
            Ok(LayerFactors {
                q: factors(t, band, l, adapter::Target::Q)?,
                v: factors(t, band, l, adapter::Target::V)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Adapter { layers })
}

/// Every band of `t`, in band order (what [`super::insert_round`] takes).
pub fn band_adapters(t: &Talora) -> Result<Vec<(Band, Adapter)>> {
    Band::ALL
        .iter()
        .map(|&b| Ok((b, band_adapter(t, b)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{Shape, Spec};

    fn shape() -> Shape {
        Shape {
            n_layers: 2,
            d_model: 8,
            q_dim: 8,
            kv_dim: 4,
            mlp_hidden: 12,
        }
    }

    #[test]
    fn band_adapter_is_the_scaled_update() {
        let spec = Spec {
            alphas: [16.0, 4.0, 1.0],
            ..Spec::default()
        };
        let mut t = Talora::new(spec, 3, shape()).unwrap();
        let mut delta = t.to_delta();
        for (k, v) in delta
            .tensors
            .iter_mut()
            .flat_map(|x| x.data.iter_mut())
            .enumerate()
        {
            *v = ((k % 7) as f32 - 3.0) * 0.1;
        }
        t.apply_delta(&delta).unwrap();
        for band in Band::ALL {
            let ad = band_adapter(&t, band).unwrap();
            assert_eq!(ad.layers.len(), 2);
            let r = t.spec().rank(band);
            let s = t.spec().scale(band) as f32;
            let q = &ad.layers[1].q;
            assert_eq!((q.rank(), q.in_dim(), q.out_dim()), (r, 8, 8));
            assert_eq!(ad.layers[0].v.out_dim(), 4);
            let i = t.index(band, 1, adapter::Target::Q).unwrap();
            assert_eq!(q.a.data(), t.a().tensors[i].data.as_slice());
            for (got, b) in q.b.data().iter().zip(&t.b().tensors[i].data) {
                assert!((got - s * b).abs() < 1e-6);
            }
        }
        assert_eq!(band_adapters(&t).unwrap().len(), 3);
        // no v: no pattern
        let only_q = Talora::new(
            Spec::new([8, 4, 2], vec![adapter::Target::Q]).unwrap(),
            3,
            shape(),
        )
        .unwrap();
        assert!(band_adapter(&only_q, Band::Fine).is_err());
    }
}
