//! The seeded generator: builds both worlds once, then serves every split from them.
//!
//! Construction draws the pretraining world's tables, then the fine-tuning world's from the same
//! name deck (so no entity is shared), then partitions each fine-tuning table into the units nodes
//! train on and the units held-out queries use. Every request derives its own stream from the seed
//! and its arguments, so requests are independent of each other and of call order.

use std::collections::HashMap;

use super::names::NameDeck;
use super::sampling::{Mixed, Samples, render};
use super::stream::Stream;
use super::table::{Builder, Heldout, Table, Tier};
use super::{Domain, Error, Sample, Split, arithmetic, calendar, code, facts, sentences};

/// One computed problem in this many is reserved for held-out evaluation.
const HELDOUT_EVERY: usize = 8;

fn builder(domain: Domain) -> Builder {
    match domain {
        Domain::Arithmetic => arithmetic::build,
        Domain::Facts => facts::build,
        Domain::Calendar => calendar::build,
        Domain::Sentences => sentences::build,
        Domain::Code => code::build,
    }
}

fn heldout_kind(domain: Domain) -> Heldout {
    match domain {
        Domain::Facts | Domain::Sentences => Heldout::SameFacts,
        Domain::Arithmetic | Domain::Calendar | Domain::Code => Heldout::Reserved,
    }
}

/// A domain's two tables and the partition of its fine-tuning units.
struct Tables {
    pretrain: Box<dyn Table>,
    finetune: Box<dyn Table>,
    /// Fine-tuning units the nodes train on (sorted).
    train: Vec<u32>,
    /// Fine-tuning units held-out queries use (sorted).
    heldout: Vec<u32>,
    /// Group id → its rank in a seeded shuffle; a unit goes to shard `rank % n_shards`.
    group_rank: HashMap<usize, usize>,
}

impl Tables {
    /// The table and unit list behind `split`.
    fn units(&self, split: Split) -> (&dyn Table, Vec<u32>) {
        match split {
            Split::Pretrain => (&*self.pretrain, (0..self.pretrain.len() as u32).collect()),
            Split::Finetune => (&*self.finetune, self.train.clone()),
            Split::HeldOut => (&*self.finetune, self.heldout.clone()),
        }
    }
}

/// The built-in data generator (construction takes a few milliseconds).
pub struct Generator {
    seed: u64,
    tables: Vec<Tables>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Builds both worlds for `seed` (use [`super::DEFAULT_SEED`] for the shared default).
    pub fn new(seed: u64) -> Self {
        let mut deck = NameDeck::new();
        let mut build = |tier: Tier, domain: Domain| {
            let mut rng = Stream::new(seed, &format!("tables/{}/{domain}", tier.name()));
            builder(domain)(tier, &mut rng, &mut deck)
        };
        // The whole pretraining world first: the fine-tuning world draws its names from what is left.
        let pretrain: Vec<_> = Domain::ALL.map(|d| build(Tier::Pretrain, d)).into();
        let finetune: Vec<_> = Domain::ALL.map(|d| build(Tier::Finetune, d)).into();
        let tables = Domain::ALL
            .into_iter()
            .zip(pretrain.into_iter().zip(finetune))
            .map(|(domain, (pretrain, finetune))| partition(seed, domain, pretrain, finetune))
            .collect();
        Self { seed, tables }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    fn tables(&self, domain: Domain) -> &Tables {
        &self.tables[domain.index()]
    }

    /// An endless stream of `domain` samples from `split` (fine-tuning: all shards together).
    pub fn stream(&self, split: Split, domain: Domain) -> Samples<'_> {
        let (table, units) = self.tables(domain).units(split);
        let rng = Stream::new(self.seed, &format!("samples/{split}/{domain}"));
        Samples::new(domain, table, units, rng)
    }

    /// An endless stream of node `shard`'s fine-tuning samples, out of `n_shards` nodes sharing
    /// `domain`. Shards are disjoint and together cover the domain's fine-tuning data.
    pub fn shard_stream(
        &self,
        domain: Domain,
        shard: usize,
        n_shards: usize,
    ) -> Result<Samples<'_>, Error> {
        let units = self.shard_units(domain, shard, n_shards)?;
        let rng = Stream::new(
            self.seed,
            &format!("samples/finetune/{domain}/{shard}/{n_shards}"),
        );
        Ok(Samples::new(
            domain,
            &*self.tables(domain).finetune,
            units,
            rng,
        ))
    }

    /// An endless stream of pretraining samples, domains interleaved in [`Domain::ALL`] order.
    pub fn pretrain_stream(&self) -> Mixed<'_> {
        Mixed::new(
            Domain::ALL
                .iter()
                .map(|&d| self.stream(Split::Pretrain, d))
                .collect(),
        )
    }

    /// The first `n` samples of [`Generator::stream`].
    pub fn samples(&self, split: Split, domain: Domain, n: usize) -> Vec<Sample> {
        self.stream(split, domain).take(n).collect()
    }

    /// The first `n` samples of [`Generator::shard_stream`].
    pub fn finetune_shard(
        &self,
        domain: Domain,
        shard: usize,
        n_shards: usize,
        n: usize,
    ) -> Result<Vec<Sample>, Error> {
        Ok(self
            .shard_stream(domain, shard, n_shards)?
            .take(n)
            .collect())
    }

    /// `n` held-out queries of `domain`.
    pub fn heldout(&self, domain: Domain, n: usize) -> Vec<Sample> {
        self.samples(Split::HeldOut, domain, n)
    }

    /// The first `n` samples of [`Generator::pretrain_stream`].
    pub fn pretrain_mixed(&self, n: usize) -> Vec<Sample> {
        self.pretrain_stream().take(n).collect()
    }

    /// Number of distinct units (facts or problems) `split` draws from in `domain`.
    pub fn units(&self, split: Split, domain: Domain) -> usize {
        let t = self.tables(domain);
        match split {
            Split::Pretrain => t.pretrain.len(),
            Split::Finetune => t.train.len(),
            Split::HeldOut => t.heldout.len(),
        }
    }

    /// Every unit of `split` in `domain` exactly once, in table order (e.g. a full evaluation set).
    pub fn all(&self, split: Split, domain: Domain) -> Vec<Sample> {
        let (table, units) = self.tables(domain).units(split);
        self.render_all(domain, table, &units, &format!("all/{split}/{domain}"))
    }

    /// Every unit of one fine-tuning shard exactly once, in table order.
    pub fn shard_all(
        &self,
        domain: Domain,
        shard: usize,
        n_shards: usize,
    ) -> Result<Vec<Sample>, Error> {
        let units = self.shard_units(domain, shard, n_shards)?;
        let label = format!("all/finetune/{domain}/{shard}/{n_shards}");
        Ok(self.render_all(domain, &*self.tables(domain).finetune, &units, &label))
    }

    /// The largest `n_shards` `domain` can be split into (every shard non-empty).
    pub fn max_shards(&self, domain: Domain) -> usize {
        self.tables(domain).group_rank.len()
    }

    /// The invented entity names (countries, cities, months, nouns, …) behind `split` of `domain`:
    /// the pretraining world for [`Split::Pretrain`], the fine-tuning world otherwise.
    pub fn entities(&self, split: Split, domain: Domain) -> Vec<String> {
        let t = self.tables(domain);
        match split {
            Split::Pretrain => t.pretrain.entities(),
            Split::Finetune | Split::HeldOut => t.finetune.entities(),
        }
    }

    fn shard_units(
        &self,
        domain: Domain,
        shard: usize,
        n_shards: usize,
    ) -> Result<Vec<u32>, Error> {
        if n_shards == 0 || shard >= n_shards {
            return Err(Error::InvalidShard {
                domain,
                shard,
                n_shards,
            });
        }
        let t = self.tables(domain);
        let max = t.group_rank.len();
        if n_shards > max {
            return Err(Error::TooManyShards {
                domain,
                n_shards,
                max,
            });
        }
        Ok(t.train
            .iter()
            .copied()
            .filter(|&u| {
                let group = t.finetune.group(u as usize);
                t.group_rank
                    .get(&group)
                    .is_some_and(|r| r % n_shards == shard)
            })
            .collect())
    }

    fn render_all(
        &self,
        domain: Domain,
        table: &dyn Table,
        units: &[u32],
        label: &str,
    ) -> Vec<Sample> {
        let mut rng = Stream::new(self.seed, label);
        units
            .iter()
            .map(|&u| render(domain, table, u as usize, &mut rng))
            .collect()
    }
}

impl Default for Generator {
    fn default() -> Self {
        Self::new(super::DEFAULT_SEED)
    }
}

/// Splits a domain's fine-tuning units into train / held-out and ranks its shard groups.
fn partition(
    seed: u64,
    domain: Domain,
    pretrain: Box<dyn Table>,
    finetune: Box<dyn Table>,
) -> Tables {
    let mut rng = Stream::new(seed, &format!("partition/{domain}"));
    let mut units: Vec<u32> = (0..finetune.len() as u32).collect();
    let (mut train, mut heldout) = match heldout_kind(domain) {
        Heldout::SameFacts => (units.clone(), units),
        Heldout::Reserved => {
            rng.shuffle(&mut units);
            let reserved = units.len().div_ceil(HELDOUT_EVERY);
            let train = units.split_off(reserved);
            (train, units)
        }
    };
    train.sort_unstable();
    heldout.sort_unstable();
    let mut groups: Vec<usize> = train.iter().map(|&u| finetune.group(u as usize)).collect();
    groups.sort_unstable();
    groups.dedup();
    rng.shuffle(&mut groups);
    let group_rank = groups
        .into_iter()
        .enumerate()
        .map(|(rank, g)| (g, rank))
        .collect();
    Tables {
        pretrain,
        finetune,
        train,
        heldout,
        group_rank,
    }
}
