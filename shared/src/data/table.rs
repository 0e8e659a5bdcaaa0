//! What every domain provides to the generator: a finite table of "units" for one world.
//!
//! A unit is one question the domain can ask (a fact, an arithmetic problem, a date shift). The
//! generator does all splitting, sharding and sampling on unit indices, so those rules are written
//! once and hold for every domain alike; a domain only builds its tables and renders a unit.

use super::names::NameDeck;
use super::stream::Stream;

/// Which world a table belongs to. The fine-tuning world is built after the pretraining world from
/// a different stream and the same name deck, so none of its entities exist in the pretraining one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Pretrain,
    Finetune,
}

impl Tier {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Pretrain => "pretrain",
            Tier::Finetune => "finetune",
        }
    }
}

/// How held-out queries relate to the fine-tuning data of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heldout {
    /// Knowledge domains: held-out queries are the fine-tuning facts themselves (the union over all
    /// shards, so each node is asked what only its peers saw).
    SameFacts,
    /// Computed domains: a reserved slice of the problems, never trained on by anyone.
    Reserved,
}

/// One domain's table in one world.
pub(crate) trait Table: Send + Sync {
    /// Number of units.
    fn len(&self) -> usize;
    /// The shard-partition group of a unit: all units of a group go to the same node.
    fn group(&self, unit: usize) -> usize;
    /// Renders a unit as `(prompt, answer)`; `rng` only varies surface form (e.g. variable names),
    /// never the answer's content.
    fn render(&self, unit: usize, rng: &mut Stream) -> (String, String);
    /// The invented entity names this table introduced (for disjointness checks).
    fn entities(&self) -> Vec<String>;
}

/// Builds a domain's table for `tier`; implemented by each domain module.
pub(crate) type Builder = fn(Tier, &mut Stream, &mut NameDeck) -> Box<dyn Table>;
