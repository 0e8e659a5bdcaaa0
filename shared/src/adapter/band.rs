//! TALoRA's timestep bands and their cross-fade.
//!
//! Diffusion time `t ∈ [0, 1]` (1 = everything masked) is named on the 0..1000 scale (`s = 1000·t`):
//! coarse `(700, 1000]` decides the outline of a fully masked canvas, domain `(300, 700]` the
//! domain's content, fine `[0, 300]` the last tokens. A hard switch at 700 and 300 would make the
//! model jump between adapters as a sampler crosses a boundary, so the weights fade linearly over
//! `±fade` (default 50 on the 0..1000 scale) around each boundary: continuous in `t`, each in
//! `[0, 1]`, summing to 1, and pure one-band weights away from the boundaries.

/// Default half-width of the cross-fade, on the 0..1000 scale.
pub const DEFAULT_FADE: f64 = 50.0;
/// Largest allowed fade: the two fade zones (around 300 and 700) must not overlap.
pub const MAX_FADE: f64 = 200.0;
/// Boundary between fine and domain (0..1000 scale).
pub const FINE_DOMAIN: f64 = 300.0;
/// Boundary between domain and coarse (0..1000 scale).
pub const DOMAIN_COARSE: f64 = 700.0;
/// The time used when a forward carries none (`Batch::t == None`): the middle of the domain
/// band, so an adapted model without timestep information behaves as its domain adapter.
pub const DEFAULT_T: f64 = 0.5;

pub use crate::aggregate::daf::Band;

impl Band {
    /// The band's range on the 0..1000 scale as `(low, high)`: coarse `(700, 1000]`, domain
    /// `(300, 700]`, fine `[0, 300]` (only fine includes its lower end).
    pub fn range_1000(self) -> (f64, f64) {
        match self {
            Band::Coarse => (DOMAIN_COARSE, 1000.0),
            Band::Domain => (FINE_DOMAIN, DOMAIN_COARSE),
            Band::Fine => (0.0, FINE_DOMAIN),
        }
    }

    /// The band's range as diffusion times `(low, high)` in `[0, 1]` (for drawing `t` inside it).
    pub fn t_range(self) -> (f64, f64) {
        let (lo, hi) = self.range_1000();
        (lo / 1000.0, hi / 1000.0)
    }

    /// The band holding diffusion time `t ∈ [0, 1]` (clamped; NaN counts as [`DEFAULT_T`]).
    pub fn of(t: f64) -> Band {
        let s = 1000.0 * sanitize(t);
        if s > DOMAIN_COARSE {
            Band::Coarse
        } else if s > FINE_DOMAIN {
            Band::Domain
        } else {
            Band::Fine
        }
    }
}

fn sanitize(t: f64) -> f64 {
    if t.is_nan() {
        DEFAULT_T
    } else {
        t.clamp(0.0, 1.0)
    }
}

/// The weight of each band (`[coarse, domain, fine]`) at diffusion time `t ∈ [0, 1]`.
///
/// `fade` is the half-width of the linear cross-fade **on the 0..1000 scale** (default
/// [`DEFAULT_FADE`]); it is clamped to `[0, MAX_FADE]`. With `s = 1000·t`, around the boundary `c`
/// (700 or 300) the upper band's weight is `(s − (c − fade)) / (2·fade)` clamped to `[0, 1]` and
/// the lower band gets the rest. `t` is clamped to `[0, 1]`; NaN counts as [`DEFAULT_T`].
/// With `fade = 0` the weights are one-hot on [`Band::of`].
pub fn band_weights(t: f64, fade: f64) -> [f32; 3] {
    let s = 1000.0 * sanitize(t);
    let fade = if fade.is_nan() {
        DEFAULT_FADE
    } else {
        fade.clamp(0.0, MAX_FADE)
    };
    // Fraction of the way from the lower band to the upper band across boundary `c`.
    let up = |c: f64| -> f64 {
        if fade == 0.0 {
            if s > c { 1.0 } else { 0.0 }
        } else {
            ((s - (c - fade)) / (2.0 * fade)).clamp(0.0, 1.0)
        }
    };
    let coarse = up(DOMAIN_COARSE);
    let above_fine = up(FINE_DOMAIN);
    let fine = 1.0 - above_fine;
    let domain = above_fine - coarse;
    [coarse as f32, domain as f32, fine as f32]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_roundtrip_and_ranges() {
        for b in Band::ALL {
            assert_eq!(b.name().parse::<Band>().unwrap(), b);
            assert_eq!(b.to_string(), b.name());
            assert_eq!(Band::ALL[b.index()], b);
        }
        assert!("medium".parse::<Band>().is_err());
        assert_eq!(Band::of(1.0), Band::Coarse);
        assert_eq!(Band::of(0.7001), Band::Coarse);
        assert_eq!(Band::of(0.7), Band::Domain);
        assert_eq!(Band::of(0.3001), Band::Domain);
        assert_eq!(Band::of(0.3), Band::Fine);
        assert_eq!(Band::of(0.0), Band::Fine);
        assert_eq!(Band::Coarse.t_range(), (0.7, 1.0));
    }

    #[test]
    fn boundaries_and_fade_zones() {
        // Away from boundaries: one-hot.
        assert_eq!(band_weights(0.9, 50.0), [1.0, 0.0, 0.0]);
        assert_eq!(band_weights(0.5, 50.0), [0.0, 1.0, 0.0]);
        assert_eq!(band_weights(0.1, 50.0), [0.0, 0.0, 1.0]);
        // Fade edges (750/650, 350/250) are still one-hot; the boundary itself is half-half.
        assert_eq!(band_weights(0.75, 50.0), [1.0, 0.0, 0.0]);
        assert_eq!(band_weights(0.65, 50.0), [0.0, 1.0, 0.0]);
        assert_eq!(band_weights(0.7, 50.0), [0.5, 0.5, 0.0]);
        assert_eq!(band_weights(0.3, 50.0), [0.0, 0.5, 0.5]);
        let w = band_weights(0.675, 50.0);
        assert!((w[0] - 0.25).abs() < 1e-6 && (w[1] - 0.75).abs() < 1e-6);
        // Hard switch at fade 0 follows the band ranges.
        assert_eq!(band_weights(0.7, 0.0), [0.0, 1.0, 0.0]);
        assert_eq!(band_weights(0.70001, 0.0), [1.0, 0.0, 0.0]);
        assert_eq!(band_weights(0.3, 0.0), [0.0, 0.0, 1.0]);
        // Out-of-range and NaN inputs.
        assert_eq!(band_weights(7.0, 50.0), [1.0, 0.0, 0.0]);
        assert_eq!(band_weights(-1.0, 50.0), [0.0, 0.0, 1.0]);
        assert_eq!(band_weights(f64::NAN, 50.0), [0.0, 1.0, 0.0]);
        // A huge fade is clamped so the zones never overlap.
        let w = band_weights(0.5, 1e9);
        assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
    }

    proptest! {
        #[test]
        fn weights_sum_to_one_and_lie_in_unit_interval(t in -0.5f64..1.5, fade in 0.0f64..250.0) {
            let w = band_weights(t, fade);
            prop_assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            prop_assert!(w.iter().all(|&x| (0.0..=1.0).contains(&x)));
        }

        #[test]
        fn weights_are_continuous(t in 0.0f64..1.0, fade in 1.0f64..200.0) {
            // Lipschitz with constant 1000 / (2·fade) per unit of t.
            let h = 1e-6;
            let (a, b) = (band_weights(t, fade), band_weights(t + h, fade));
            let bound = (1000.0 / (2.0 * fade) * h + 1e-6) as f32;
            for i in 0..3 {
                prop_assert!((a[i] - b[i]).abs() <= bound, "band {i}: {} vs {}", a[i], b[i]);
            }
        }

        #[test]
        fn dominant_band_is_the_band_of_t(t in 0.0f64..1.0) {
            let w = band_weights(t, DEFAULT_FADE);
            let b = Band::of(t);
            prop_assert!(w[b.index()] >= 0.5);
        }
    }
}
