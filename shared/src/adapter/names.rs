//! What an adapter covers and what its tensors are called.
//!
//! Tensor names follow PEFT's saved layout, so a folder we write loads with
//! `peft.PeftModel.from_pretrained`: `base_model.model.<module>.lora_A.weight` `[r, in]` and
//! `…lora_B.weight` `[out, r]`, where `<module>` is the HF module path of the adapted linear.
//!
//! In memory, on the wire and as frozen A's derivation key, names are *canonical*: LLaDA's module
//! paths (`model.transformer.blocks.3.q_proj`), whatever the base family, so a federation's
//! object and its A do not depend on how one checkpoint names its modules. PEFT folders are
//! written with the base family's own paths ([`Naming`]: LLaDA's, or the Llama/Qwen2 paths of
//! Dream, `model.layers.3.self_attn.q_proj`), which is what `peft` writes for that model, and
//! either form is read. TALoRA tensors add the prefix `talora.<band>.`.
//!
//! [`Shape`] is the part of a model config that decides adapter shapes; it is deliberately tiny
//! and candle-free so a coordinator can check an incoming delta's layout ([`b_layout`]) without
//! the model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Error;
use super::band::{Band, DEFAULT_FADE, MAX_FADE};

/// Largest rank accepted anywhere (bounds the memory a spec or a file can ask for).
pub const MAX_RANK: usize = 1024;

/// A linear layer of a transformer block that an adapter may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    /// Every linear of a block, in canonical order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];
    /// The default targets: q and v.
    pub const QV: [Target; 2] = [Target::Q, Target::V];

    /// Short name used on the command line (`q`, `k`, `v`, `o`, `gate`, `up`, `down`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// LLaDA's HF module name (the leaf PEFT matches in `target_modules`).
    pub fn llada_module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "attn_out",
            Target::Gate => "ff_proj",
            Target::Up => "up_proj",
            Target::Down => "ff_out",
        }
    }

    /// Llama's / Qwen2's module path inside a block (`self_attn.q_proj`, `mlp.down_proj`).
    pub fn llama_module(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// Position in [`Target::ALL`].
    pub fn index(self) -> usize {
        Target::ALL.iter().position(|&t| t == self).unwrap_or(0)
    }

    /// Parses `q,v`, `all` or any comma-separated list of target names (sorted, deduplicated).
    pub fn parse_list(s: &str) -> Result<Vec<Target>, Error> {
        if s.trim() == "all" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = s
            .split(',')
            .map(|p| p.trim().parse::<Target>())
            .collect::<Result<Vec<_>, _>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s || t.llada_module() == s || Naming::Llama.leaf(*t) == s)
            .ok_or_else(|| Error::UnknownTarget {
                name: s.to_string(),
            })
    }
}

/// The dimensions of a model that decide adapter shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    pub n_layers: usize,
    pub d_model: usize,
    /// `n_heads · head_dim`.
    pub q_dim: usize,
    /// `n_kv_heads · head_dim`.
    pub kv_dim: usize,
    pub mlp_hidden: usize,
}

impl Shape {
    /// `(out, in)` of a target's weight.
    pub fn dims(&self, target: Target) -> (usize, usize) {
        match target {
            Target::Q => (self.q_dim, self.d_model),
            Target::K | Target::V => (self.kv_dim, self.d_model),
            Target::O => (self.d_model, self.q_dim),
            Target::Gate | Target::Up => (self.mlp_hidden, self.d_model),
            Target::Down => (self.d_model, self.mlp_hidden),
        }
    }

    /// The benchmark's "7B-shaped" model (LLaDA-8B dimensions).
    pub fn llada_8b() -> Shape {
        Shape {
            n_layers: 32,
            d_model: 4096,
            q_dim: 4096,
            kv_dim: 4096,
            mlp_hidden: 12_288,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let dims = [
            self.n_layers,
            self.d_model,
            self.q_dim,
            self.kv_dim,
            self.mlp_hidden,
        ];
        if dims.contains(&0) || dims.iter().any(|&d| d > 1 << 20) {
            return Err(Error::Spec {
                field: "shape",
                reason: format!("dimensions must be in 1..=2^20, got {self:?}"),
            });
        }
        Ok(())
    }
}

#[cfg(feature = "model")]
impl From<&crate::model::Config> for Shape {
    fn from(c: &crate::model::Config) -> Self {
        Shape {
            n_layers: c.n_layers,
            d_model: c.d_model,
            q_dim: c.n_heads * c.head_dim,
            kv_dim: c.n_kv_heads * c.head_dim,
            mlp_hidden: c.mlp_hidden,
        }
    }
}

/// A TALoRA adapter's hyper-parameters.
///
/// `alphas` follow PEFT's convention: a band's update is `(alpha / r) · B·A`. The default is
/// `alpha = r` (scale 1): A is already scaled to `1/√in` and B starts at zero, so the scale only
/// sets how fast B's updates move the output, and keeping it 1 makes the learning rate mean the
/// same thing for every rank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Rank per band `[coarse, domain, fine]`.
    pub ranks: [usize; 3],
    /// PEFT `lora_alpha` per band.
    pub alphas: [f64; 3],
    /// Adapted linears of every block, sorted.
    pub targets: Vec<Target>,
    /// Cross-fade half-width on the 0..1000 scale.
    pub fade: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            ranks: [8, 4, 2],
            alphas: [8.0, 4.0, 2.0],
            targets: Target::QV.to_vec(),
            fade: DEFAULT_FADE,
        }
    }
}

impl Spec {
    /// A spec with the given ranks and targets, `alpha = r` and the default fade.
    pub fn new(ranks: [usize; 3], targets: Vec<Target>) -> Result<Spec, Error> {
        let spec = Spec {
            ranks,
            alphas: ranks.map(|r| r as f64),
            targets,
            fade: DEFAULT_FADE,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn rank(&self, band: Band) -> usize {
        self.ranks[band.index()]
    }

    /// `alpha / r` of a band.
    pub fn scale(&self, band: Band) -> f64 {
        self.alphas[band.index()] / self.rank(band) as f64
    }

    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, reason: String| Err(Error::Spec { field, reason });
        if self.ranks.iter().any(|&r| r == 0 || r > MAX_RANK) {
            return bad(
                "ranks",
                format!("{:?}: each must be in 1..={MAX_RANK}", self.ranks),
            );
        }
        if self.alphas.iter().any(|a| !a.is_finite() || *a <= 0.0) {
            return bad(
                "alphas",
                format!("{:?}: must be finite and > 0", self.alphas),
            );
        }
        if self.targets.is_empty() {
            return bad("targets", "at least one target is needed".into());
        }
        if self.targets.windows(2).any(|w| w[0] >= w[1]) {
            return bad("targets", "must be sorted and distinct".into());
        }
        if !(0.0..=MAX_FADE).contains(&self.fade) {
            return bad("fade", format!("{} not in [0, {MAX_FADE}]", self.fade));
        }
        Ok(())
    }

    /// Parses `8,4,2` into ranks.
    /// The spec a TALoRA delta (B tensors named `talora.<band>.<PEFT B name>`, either
    /// [`Naming`]) was made with: each band's rank from its B's columns, the targets from the
    /// names; `alphas` and `fade` are not in a delta and take `alphas = ranks` (the default
    /// scale 1) and `fade`. The layout itself is checked when the delta is applied to a shape.
    pub fn infer(delta: &crate::delta::Delta, fade: f64) -> Result<Spec, Error> {
        let bad = |reason: String| Error::Spec {
            field: "delta",
            reason,
        };
        let mut ranks = [0usize; 3];
        let mut targets: [Vec<Target>; 3] = Default::default();
        for t in &delta.tensors {
            let band = Band::ALL
                .into_iter()
                .find(|b| t.name.starts_with(&band_prefix(*b)))
                .ok_or_else(|| bad(format!("`{}` has no talora.<band>. prefix", t.name)))?;
            let peft = &t.name[band_prefix(band).len()..];
            let (_, target, is_a) = parse_peft(peft)
                .ok_or_else(|| bad(format!("`{}` is not a TALoRA B tensor name", t.name)))?;
            let r = match (is_a, t.shape.as_slice()) {
                (false, [_, r]) => *r,
                _ => {
                    return Err(bad(format!(
                        "`{}` {:?}: expected a B matrix [out, r]",
                        t.name, t.shape
                    )));
                }
            };
            let k = band.index();
            if ranks[k] != 0 && ranks[k] != r {
                return Err(bad(format!(
                    "band {band}: ranks {} and {r} in one band",
                    ranks[k]
                )));
            }
            ranks[k] = r;
            targets[k].push(target);
        }
        for t in &mut targets {
            t.sort();
            t.dedup();
        }
        if ranks.contains(&0) {
            return Err(bad(format!("a band has no tensors (ranks {ranks:?})")));
        }
        if targets[0] != targets[1] || targets[1] != targets[2] {
            return Err(bad(format!("bands adapt different targets: {targets:?}")));
        }
        let spec = Spec {
            ranks,
            alphas: ranks.map(|r| r as f64),
            targets: targets[0].clone(),
            fade,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn parse_ranks(s: &str) -> Result<[usize; 3], Error> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let err = || Error::Spec {
            field: "ranks",
            reason: format!("`{s}`: expected three comma-separated ranks like 8,4,2"),
        };
        if parts.len() != 3 {
            return Err(err());
        }
        let mut out = [0usize; 3];
        for (o, p) in out.iter_mut().zip(parts) {
            *o = p.parse().map_err(|_| err())?;
        }
        Ok(out)
    }
}

/// LLaDA's HF module path of a target in layer `layer` (the canonical path).
pub fn module_path(layer: usize, target: Target) -> String {
    format!("model.transformer.blocks.{layer}.{}", target.llada_module())
}

/// How a base family's HF checkpoint names the adapted linears, i.e. the module paths `peft`
/// finds in it and writes into an adapter's tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// LLaDA's `modeling_llada.py`: `model.transformer.blocks.N.{q_proj,…,attn_out,ff_proj,
    /// up_proj,ff_out}` (canonical).
    #[default]
    Llada,
    /// Llama's and Qwen2's (Dream's): `model.layers.N.self_attn.{q,k,v,o}_proj`,
    /// `model.layers.N.mlp.{gate,up,down}_proj`.
    Llama,
}

impl Naming {
    /// The naming of a model family's checkpoints.
    #[cfg(feature = "model")]
    pub fn of(arch: crate::model::config::Arch) -> Naming {
        match arch {
            crate::model::config::Arch::Llada => Naming::Llada,
            crate::model::config::Arch::Dream => Naming::Llama,
        }
    }

    /// The HF module path of `target` in layer `layer`.
    pub fn module_path(self, layer: usize, target: Target) -> String {
        match self {
            Naming::Llada => module_path(layer, target),
            Naming::Llama => format!("model.layers.{layer}.{}", target.llama_module()),
        }
    }

    /// What `target_modules` lists for `targets`: the modules' leaf names.
    pub fn leaf(self, target: Target) -> &'static str {
        match self {
            Naming::Llada => target.llada_module(),
            Naming::Llama => target
                .llama_module()
                .rsplit_once('.')
                .map_or("", |(_, leaf)| leaf),
        }
    }

    /// A canonical PEFT (or TALoRA) tensor name rewritten with this naming's module path; names
    /// that are not LoRA tensor names pass unchanged.
    pub fn rename(self, canonical: &str) -> String {
        if self == Naming::Llada {
            return canonical.to_string();
        }
        let (prefix, rest) = match canonical.find("base_model.model.") {
            Some(i) => canonical.split_at(i),
            None => return canonical.to_string(),
        };
        match parse_peft(rest) {
            Some((layer, target, is_a)) => format!(
                "{prefix}base_model.model.{}.lora_{}.weight",
                self.module_path(layer, target),
                if is_a { "A" } else { "B" }
            ),
            None => canonical.to_string(),
        }
    }
}

impl fmt::Display for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Naming::Llada => "llada",
            Naming::Llama => "llama",
        })
    }
}

/// PEFT name of a LoRA A tensor (`[r, in]`).
pub fn peft_a(layer: usize, target: Target) -> String {
    format!(
        "base_model.model.{}.lora_A.weight",
        module_path(layer, target)
    )
}

/// PEFT name of a LoRA B tensor (`[out, r]`).
pub fn peft_b(layer: usize, target: Target) -> String {
    format!(
        "base_model.model.{}.lora_B.weight",
        module_path(layer, target)
    )
}

/// Parses a PEFT LoRA tensor name in either [`Naming`] back into `(layer, target, is_a)`;
/// `None` for any other name.
pub fn parse_peft(name: &str) -> Option<(usize, Target, bool)> {
    parse_peft_naming(name).map(|(l, t, a, _)| (l, t, a))
}

/// [`parse_peft`], also saying which naming the name uses.
pub fn parse_peft_naming(name: &str) -> Option<(usize, Target, bool, Naming)> {
    let rest = name.strip_prefix("base_model.model.model.")?;
    let (rest, is_a) = if let Some(r) = rest.strip_suffix(".lora_A.weight") {
        (r, true)
    } else {
        (rest.strip_suffix(".lora_B.weight")?, false)
    };
    let (rest, naming) = if let Some(r) = rest.strip_prefix("transformer.blocks.") {
        (r, Naming::Llada)
    } else {
        (rest.strip_prefix("layers.")?, Naming::Llama)
    };
    let (layer, leaf) = rest.split_once('.')?;
    // Decimal digits only: `parse` would also take a sign.
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let target = Target::ALL.into_iter().find(|t| match naming {
        Naming::Llada => t.llada_module() == leaf,
        Naming::Llama => t.llama_module() == leaf,
    })?;
    Some((layer, target, is_a, naming))
}

/// The `talora.<band>.` prefix.
pub fn band_prefix(band: Band) -> String {
    format!("talora.{}.", band.name())
}

/// TALoRA name of a band's A tensor.
pub fn talora_a(band: Band, layer: usize, target: Target) -> String {
    format!("{}{}", band_prefix(band), peft_a(layer, target))
}

/// TALoRA name of a band's B tensor.
pub fn talora_b(band: Band, layer: usize, target: Target) -> String {
    format!("{}{}", band_prefix(band), peft_b(layer, target))
}

/// Every `(band, layer, target)` of an adapter in canonical order (band, then layer, then
/// target): the order of [`b_layout`], of deltas and of the flattened vectors aggregation sees.
pub fn modules(spec: &Spec, shape: &Shape) -> Vec<(Band, usize, Target)> {
    let mut out = Vec::with_capacity(3 * shape.n_layers * spec.targets.len());
    for band in Band::ALL {
        for layer in 0..shape.n_layers {
            for &t in &spec.targets {
                out.push((band, layer, t));
            }
        }
    }
    out
}

/// The wire layout of a TALoRA delta: `talora.<band>.…lora_B.weight` → `[out, r_band]`, in
/// canonical order. Validates the spec and the shape first.
pub fn b_layout(spec: &Spec, shape: &Shape) -> Result<Vec<(String, Vec<usize>)>, Error> {
    spec.validate()?;
    shape.validate()?;
    Ok(modules(spec, shape)
        .into_iter()
        .map(|(band, layer, t)| {
            let (out, _) = shape.dims(t);
            (talora_b(band, layer, t), vec![out, spec.rank(band)])
        })
        .collect())
}

/// The layout of the frozen A tensors: `talora.<band>.…lora_A.weight` → `[r_band, in]`.
pub fn a_layout(spec: &Spec, shape: &Shape) -> Result<Vec<(String, Vec<usize>)>, Error> {
    spec.validate()?;
    shape.validate()?;
    Ok(modules(spec, shape)
        .into_iter()
        .map(|(band, layer, t)| {
            let (_, inp) = shape.dims(t);
            (talora_a(band, layer, t), vec![spec.rank(band), inp])
        })
        .collect())
}

/// Checks that `delta` has exactly the B layout of `spec` on `shape` (names and shapes; any
/// order), naming the first mismatch.
pub fn check_b_layout(
    spec: &Spec,
    shape: &Shape,
    delta: &crate::delta::Delta,
) -> Result<(), Error> {
    let expected = crate::delta::Delta {
        tensors: b_layout(spec, shape)?
            .into_iter()
            .map(|(name, shape)| crate::delta::NamedTensor {
                name,
                shape,
                data: Vec::new(),
            })
            .collect(),
    };
    expected.check_same_layout(delta)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_names_follow_llada_module_paths() {
        assert_eq!(
            peft_a(3, Target::Q),
            "base_model.model.model.transformer.blocks.3.q_proj.lora_A.weight"
        );
        assert_eq!(
            peft_b(0, Target::Down),
            "base_model.model.model.transformer.blocks.0.ff_out.lora_B.weight"
        );
        assert_eq!(
            talora_b(Band::Fine, 1, Target::V),
            "talora.fine.base_model.model.model.transformer.blocks.1.v_proj.lora_B.weight"
        );
        assert_eq!(
            parse_peft(&peft_a(12, Target::Up)),
            Some((12, Target::Up, true))
        );
        assert_eq!(
            parse_peft(&peft_b(0, Target::O)),
            Some((0, Target::O, false))
        );
        assert_eq!(
            parse_peft("base_model.model.model.transformer.blocks.x.q_proj.lora_A.weight"),
            None
        );
        assert_eq!(
            parse_peft("base_model.model.model.transformer.ff_out.lora_A.weight"),
            None
        );
    }

    #[test]
    fn llama_naming_renames_and_parses_back() {
        let canonical = talora_b(Band::Domain, 7, Target::Down);
        let llama = Naming::Llama.rename(&canonical);
        assert_eq!(
            llama,
            "talora.domain.base_model.model.model.layers.7.mlp.down_proj.lora_B.weight"
        );
        assert_eq!(Naming::Llada.rename(&canonical), canonical);
        assert_eq!(
            parse_peft_naming(&Naming::Llama.rename(&peft_a(2, Target::O))),
            Some((2, Target::O, true, Naming::Llama))
        );
        for t in Target::ALL {
            for naming in [Naming::Llada, Naming::Llama] {
                let name = naming.rename(&peft_b(11, t));
                assert_eq!(
                    parse_peft_naming(&name),
                    Some((11, t, false, naming)),
                    "{name}"
                );
            }
        }
        // Not LoRA tensor names: unchanged by rename, None from parse.
        assert_eq!(Naming::Llama.rename("bank.key"), "bank.key");
        for bad in [
            "base_model.model.model.layers.+1.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.1.q_proj.lora_A.weight",
            "base_model.model.model.layers.1.self_attn.q_proj.lora_A.bias",
            "base_model.model.lm_head.lora_A.weight",
        ] {
            assert_eq!(parse_peft_naming(bad), None, "{bad}");
        }
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            Target::parse_list("o_proj,down_proj,gate").unwrap(),
            vec![Target::O, Target::Gate, Target::Down]
        );
        assert_eq!(
            Target::parse_list("v,q").unwrap(),
            vec![Target::Q, Target::V]
        );
        assert_eq!(Target::parse_list("all").unwrap().len(), 7);
        assert_eq!(Target::parse_list("q,q_proj").unwrap(), vec![Target::Q]);
        assert!(Target::parse_list("q,x").is_err());
        assert_eq!(Spec::parse_ranks("8, 4,2").unwrap(), [8, 4, 2]);
        assert!(Spec::parse_ranks("8,4").is_err());
        assert!(Spec::parse_ranks("8,4,x").is_err());
    }

    #[test]
    fn seven_b_layout_matches_the_design_count() {
        // 32 layers × {q, v} × B [4096 × r] for r = 8 + 4 + 2 → 3,670,016 parameters.
        let layout = b_layout(&Spec::default(), &Shape::llada_8b()).unwrap();
        assert_eq!(layout.len(), 3 * 32 * 2);
        let n: usize = layout
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(n, 3_670_016);
        assert_eq!(layout[0].1, vec![4096, 8]);
        assert!(layout[0].0.starts_with("talora.coarse."));
        assert_eq!(layout.last().unwrap().1, vec![4096, 2]);
    }

    #[test]
    fn spec_validation_and_layout_check() {
        let mut s = Spec::default();
        assert_eq!(s.scale(Band::Coarse), 1.0);
        s.ranks[1] = 0;
        assert!(matches!(
            s.validate(),
            Err(Error::Spec { field: "ranks", .. })
        ));
        let s = Spec {
            targets: vec![Target::V, Target::Q],
            ..Spec::default()
        };
        assert!(s.validate().is_err());
        let s = Spec {
            fade: 300.0,
            ..Spec::default()
        };
        assert!(s.validate().is_err());
        let shape = Shape {
            n_layers: 1,
            d_model: 8,
            q_dim: 8,
            kv_dim: 4,
            mlp_hidden: 16,
        };
        let spec = Spec::default();
        let layout = b_layout(&spec, &shape).unwrap();
        assert_eq!(layout[1].1, vec![4, 8]); // v: [kv_dim, r_coarse]
        let delta = crate::delta::Delta::new(
            layout
                .iter()
                .map(|(n, s)| {
                    crate::delta::NamedTensor::new(n.clone(), s.clone(), vec![0.0; s[0] * s[1]])
                        .unwrap()
                })
                .collect(),
        )
        .unwrap();
        check_b_layout(&spec, &shape, &delta).unwrap();
        let wrong = delta.filter(|n| !n.contains("fine"));
        assert!(matches!(
            check_b_layout(&spec, &shape, &wrong),
            Err(Error::Layout(_))
        ));
    }
}
