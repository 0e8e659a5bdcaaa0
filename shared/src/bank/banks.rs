//! The three banks of a node, one per TALoRA band, saved side by side in `coarse/`, `domain/` and
//! `fine/` (the same folder names as a TALoRA adapter's three PEFT folders).

use std::path::Path;

use crate::aggregate::daf::Band;

use super::config::Config;
use super::error::Result;
use super::store::Bank;

/// The band a denoising time `t ∈ [0, 1]` falls in (DESIGN §5 on the 0..1000 scale): coarse
/// `(700, 1000]`, domain `(300, 700]`, fine `[0, 300]`. Retrieval uses the band of the step's t
/// without cross-fading; the cross-fade is the adapter's business.
pub fn band_of(t: f32) -> Band {
    // In f32, as the sampler computes t (a masked count over the block length): widening 0.3f32
    // to f64 first would put it above 300 on the 0..1000 scale.
    let s = t * 1000.0;
    if s > 700.0 {
        Band::Coarse
    } else if s > 300.0 {
        Band::Domain
    } else {
        Band::Fine
    }
}

/// One bank per band.
pub struct Banks {
    banks: [Bank; 3],
}

fn slot(band: Band) -> usize {
    match band {
        Band::Coarse => 0,
        Band::Domain => 1,
        Band::Fine => 2,
    }
}

impl Banks {
    /// Three empty banks with the same config.
    pub fn new(cfg: Config) -> Result<Self> {
        Ok(Self {
            banks: [
                Bank::new(Band::Coarse, cfg.clone())?,
                Bank::new(Band::Domain, cfg.clone())?,
                Bank::new(Band::Fine, cfg)?,
            ],
        })
    }

    pub fn get(&self, band: Band) -> &Bank {
        &self.banks[slot(band)]
    }

    pub fn get_mut(&mut self, band: Band) -> &mut Bank {
        &mut self.banks[slot(band)]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bank> {
        self.banks.iter()
    }

    /// Patterns over all bands.
    pub fn len(&self) -> usize {
        self.banks.iter().map(Bank::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest insertion or use time of any pattern (0 for empty banks): the "now" a caller
    /// without a clock of its own retrieves at, so recency is relative to the newest pattern.
    pub fn clock(&self) -> u64 {
        self.banks
            .iter()
            .flat_map(|b| b.patterns().into_iter().map(|p| p.last_use))
            .max()
            .unwrap_or(0)
    }

    /// Saves each bank into `dir/<band>/`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        for b in &self.banks {
            b.save(&dir.join(b.band().name()))?;
        }
        Ok(())
    }

    /// Loads `dir/<band>/` for each band; a band folder that does not exist yet is an empty bank
    /// with `cfg` (a node's first start).
    pub fn load(dir: &Path, cfg: Config) -> Result<Self> {
        let one = |band: Band| -> Result<Bank> {
            let d = dir.join(band.name());
            if d.join("bank.json").exists() {
                let b = Bank::load(&d)?;
                if b.band() != band {
                    return Err(super::error::Error::WrongBand {
                        expected: band.name(),
                        got: b.band().name(),
                    });
                }
                Ok(b)
            } else {
                Bank::new(band, cfg.clone())
            }
        };
        Ok(Self {
            banks: [one(Band::Coarse)?, one(Band::Domain)?, one(Band::Fine)?],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_design_boundaries() {
        assert_eq!(band_of(1.0), Band::Coarse);
        assert_eq!(band_of(0.701), Band::Coarse);
        assert_eq!(band_of(0.7), Band::Domain);
        assert_eq!(band_of(0.301), Band::Domain);
        assert_eq!(band_of(0.3), Band::Fine);
        assert_eq!(band_of(0.0), Band::Fine);
    }

    #[test]
    fn missing_folders_load_as_empty_banks() {
        let dir = tempfile::tempdir().unwrap();
        let b = Banks::load(dir.path(), Config::default()).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.get(Band::Fine).band(), Band::Fine);
        b.save(dir.path()).unwrap();
        let again = Banks::load(dir.path(), Config::default()).unwrap();
        assert_eq!(again.get(Band::Domain).band(), Band::Domain);
    }
}
