//! A node's pattern banks as the server and the daemon share them.
//!
//! Generation reads the banks for DGR while the daemon inserts two patterns per band after each
//! round (DESIGN §5), so they sit behind a read-write lock: a request holds the read side for its
//! whole generation (retrieval must see one consistent bank), an insertion waits for requests in
//! flight and is never seen half-done. Keys are computed before the lock is taken, so the write
//! side is held only for the index insert and the save. With a folder the banks persist: loaded at
//! start, saved after every insertion, so a restarted node keeps what it learned.

use std::path::PathBuf;
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use ruvdllm::adapter::Talora;
use ruvdllm::bank::{self, Band, Banks, KeyProjection, Recorded, RoundKeys, Usage};
use ruvdllm::model::Model;

/// Why the banks could not be loaded or extended.
#[derive(Debug, thiserror::Error)]
pub enum BanksError {
    #[error(transparent)]
    Bank(#[from] bank::Error),
    #[error("no texts to key the {what} pattern on")]
    NoTexts { what: &'static str },
}

/// The banks, their key projection and where they are saved.
pub struct LocalBanks {
    banks: RwLock<Banks>,
    projection: KeyProjection,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for LocalBanks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBanks")
            .field("patterns", &self.read().len())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Rows and length of the canvases a data key averages over.
const KEY_ROWS: usize = 8;
const KEY_LEN: usize = 64;

impl LocalBanks {
    /// Loads `dir` (missing bands are empty) or, without a folder, starts empty in memory.
    pub fn open(dir: Option<PathBuf>, d_model: usize, key_seed: u64) -> Result<Self, BanksError> {
        let banks = match &dir {
            Some(d) => Banks::load(d, bank::Config::default())?,
            None => Banks::new(bank::Config::default())?,
        };
        Ok(LocalBanks {
            banks: RwLock::new(banks),
            projection: KeyProjection::new(key_seed, d_model)?,
            dir,
        })
    }

    pub fn projection(&self) -> &KeyProjection {
        &self.projection
    }

    /// The banks for reading (retrieval); insertions wait until the guard is dropped.
    pub fn read(&self) -> RwLockReadGuard<'_, Banks> {
        self.banks.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pattern bookkeeping after a generation: the patterns DGR applied get `last_use = now`
    /// (the clock the generation retrieved at). There is no held-out signal in a request, so no
    /// success update (see [`bank::usage`]). In memory only: the next round insertion saves it.
    pub fn record_use(&self, used: &Usage, now: u64) -> Result<Recorded, BanksError> {
        let mut banks = self.banks.write().unwrap_or_else(PoisonError::into_inner);
        Ok(used.record(&mut banks, now, None)?)
    }

    /// The round insertion: per band a pattern for `global` keyed on `global_texts` and one for
    /// `local` keyed on `local_texts` (the node's training data), at time `round`; then saves.
    /// Returns the patterns held afterwards.
    pub fn insert_round(
        &self,
        model: &Model,
        global: &Talora,
        local: &Talora,
        global_texts: &[Vec<u32>],
        local_texts: &[Vec<u32>],
        round: u64,
    ) -> Result<usize, BanksError> {
        if global_texts.is_empty() {
            return Err(BanksError::NoTexts { what: "global" });
        }
        if local_texts.is_empty() {
            return Err(BanksError::NoTexts { what: "local" });
        }
        let key = |texts: &[Vec<u32>]| {
            bank::hidden::data_key(model, &self.projection, texts, KEY_ROWS, KEY_LEN, round)
        };
        let keys = RoundKeys {
            global: key(global_texts)?,
            local: key(local_texts)?,
        };
        let g = bank::band_adapters(global)?;
        let l = bank::band_adapters(local)?;
        let gr: Vec<(Band, &bank::Adapter)> = g.iter().map(|(b, a)| (*b, a)).collect();
        let lr: Vec<(Band, &bank::Adapter)> = l.iter().map(|(b, a)| (*b, a)).collect();
        let mut banks = self.banks.write().unwrap_or_else(PoisonError::into_inner);
        bank::insert_round(&mut banks, &gr, &lr, &keys, round)?;
        if let Some(dir) = &self.dir {
            banks.save(dir)?;
        }
        Ok(banks.len())
    }
}
