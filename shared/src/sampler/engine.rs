//! The block loop shared by every rule: per block, per step, one forward, then per row the
//! rule's proposals for the block's masked positions and the selection of what to commit.
//!
//! Rows live on one left-padded canvas and share each forward; everything random is drawn from
//! the row's own stream and only for the row's own masked positions, in ascending position
//! order, so a row's result is the one it would get alone.

use std::ops::ControlFlow;

use candle_core::Device;

use super::batch::Canvas;
use super::cache::{Forwarder, StepWindow};
use super::dgr::{DgrUse, Retrieval, Runner};
use super::dream::{self, Sampling};
use super::llada::{self, Scratch};
use super::noise::{self, RowRng};
use super::options::{DreamAlg, Options, Plan, Rule};
use super::schedule;
use super::select::{self, Proposal};
use super::{Error, Output, Request, RowOutput, RowStep, StepEvent};
use crate::denoiser::Denoiser;
use crate::tokens::SpecialTokens;

/// Per-row progress.
struct RowState {
    rng: RowRng,
    finished: bool,
    stopped_at_eos: bool,
    steps: usize,
    nfe: usize,
    /// LLaDA's per-step transfer counts for the current block.
    transfers: Vec<usize>,
}

fn check_request(request: &Request, special: &SpecialTokens, vocab: usize) -> Result<(), Error> {
    if request.rows.is_empty() {
        return Err(Error::EmptyRequest);
    }
    for (name, id) in [
        ("mask", special.mask),
        ("eos", special.eos),
        ("pad", special.pad),
    ]
    .into_iter()
    .chain(special.eot.map(|id| ("eot", id)))
    {
        if id as usize >= vocab {
            return Err(Error::SpecialOutOfVocab { name, id, vocab });
        }
    }
    for (row, r) in request.rows.iter().enumerate() {
        if r.prompt.is_empty() {
            return Err(Error::EmptyPrompt { row });
        }
        if r.prompt.len() > super::MAX_GEN_LENGTH {
            return Err(Error::TooLarge {
                what: "prompt length",
                got: r.prompt.len(),
                max: super::MAX_GEN_LENGTH,
            });
        }
        for (index, &token) in r.prompt.iter().enumerate() {
            if token as usize >= vocab {
                return Err(Error::TokenOutOfVocab {
                    row,
                    index,
                    token,
                    vocab,
                });
            }
            if token == special.mask {
                return Err(Error::MaskInPrompt { row, index });
            }
        }
    }
    Ok(())
}

/// Writes the guided, filtered f64 logits of one position into `out`:
/// `u + (s + 1)(c − u)` with CFG, `[MASK]` (and EOS with `logits_eos_inf`) set to `-inf`.
/// `Err(())` on a NaN or `+inf` logit.
fn prepare_logits(
    out: &mut Vec<f64>,
    cond: &[f32],
    uncond: Option<&[f32]>,
    cfg_scale: f64,
    banned: &[u32],
) -> Result<(), ()> {
    out.clear();
    let bad = |x: f32| x.is_nan() || x == f32::INFINITY;
    match uncond {
        None => {
            for &c in cond {
                if bad(c) {
                    return Err(());
                }
                out.push(f64::from(c));
            }
        }
        Some(uncond) => {
            for (&c, &u) in cond.iter().zip(uncond) {
                if bad(c) || bad(u) {
                    return Err(());
                }
                let (c, u) = (f64::from(c), f64::from(u));
                out.push(if c == f64::NEG_INFINITY || u == f64::NEG_INFINITY {
                    f64::NEG_INFINITY
                } else {
                    u + (cfg_scale + 1.0) * (c - u)
                });
            }
        }
    }
    for &t in banned {
        if let Some(l) = out.get_mut(t as usize) {
            *l = f64::NEG_INFINITY;
        }
    }
    Ok(())
}

/// Early stop: if the generation region holds an EOS with no MASK before it, fills everything
/// after it with EOS and returns true.
pub(crate) fn stop_at_eos(generated: &mut [u32], mask: u32, eos: u32) -> bool {
    let Some(i) = generated.iter().position(|&t| t == mask || t == eos) else {
        return false;
    };
    if generated[i] == mask {
        return false;
    }
    generated[i + 1..].fill(eos);
    true
}

pub(crate) fn run<D, F>(
    model: &D,
    device: &Device,
    special: &SpecialTokens,
    opts: &Options,
    request: &Request,
    retrieval: Option<Retrieval<'_>>,
    mut on_step: F,
) -> Result<Output, Error>
where
    D: Denoiser,
    F: FnMut(&StepEvent<'_>) -> ControlFlow<()>,
{
    let plan: Plan = opts.plan()?;
    let vocab = model.vocab_size();
    check_request(request, special, vocab)?;
    let shift = opts.shift_logits.unwrap_or_else(|| model.shift_logits());
    let prompts: Vec<&[u32]> = request.rows.iter().map(|r| r.prompt.as_slice()).collect();
    let mut canvas = Canvas::new(&prompts, opts.gen_length, special);
    let b = request.rows.len();
    let cfg = opts.cfg_scale > 0.0;
    let model_rows = if cfg { 2 * b } else { b };
    let mut rows: Vec<RowState> = request
        .rows
        .iter()
        .map(|r| RowState {
            rng: noise::row_rng(r.seed),
            finished: false,
            stopped_at_eos: false,
            steps: 0,
            nfe: 0,
            transfers: Vec::new(),
        })
        .collect();
    let mut banned = vec![special.mask];
    if opts.logits_eos_inf {
        banned.push(special.eos);
    }
    let last: Vec<u32> = if opts.confidence_eos_eot_inf {
        std::iter::once(special.eos).chain(special.eot).collect()
    } else {
        Vec::new()
    };
    let dream_ts = match opts.rule {
        Rule::Dream { eps, .. } => schedule::dream_timesteps(plan.steps_per_block, eps),
        _ => Vec::new(),
    };
    let mut dgr = match (&opts.dgr, retrieval) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::InvalidOption {
                option: "dgr",
                reason: "DGR needs pattern banks to retrieve from".into(),
            });
        }
        (Some(o), Some(r)) => {
            let hidden = model.hidden_states().ok_or_else(|| Error::InvalidOption {
                option: "dgr",
                reason: "the model does not report hidden states".into(),
            })?;
            Some(Runner::new(o, r, hidden, shift, canvas.prompt_len)?)
        }
    };
    let mut dgr_total = 0usize;
    let mut dgr_used = crate::bank::Usage::new();
    let mut fwd = Forwarder::new(model, opts.cache, plan.refresh_every);
    let mut scratch = Scratch::default();
    let mut logits_buf: Vec<f64> = Vec::with_capacity(vocab);
    let block_length = opts.block_length;
    let mut step = 0usize;
    let mut cancelled = false;

    'blocks: for block in 0..plan.num_blocks {
        let start = canvas.prompt_len + block * block_length;
        let end = start + block_length;
        for (r, row) in rows.iter_mut().enumerate() {
            let m = canvas.masked_in(r, start, end).len();
            row.transfers = schedule::num_transfer_tokens(m, plan.steps_per_block);
        }
        let mut sib = 0usize;
        loop {
            let masked: Vec<Vec<usize>> = (0..b)
                .map(|r| {
                    if rows[r].finished {
                        Vec::new()
                    } else {
                        canvas.masked_in(r, start, end)
                    }
                })
                .collect();
            if masked.iter().all(Vec::is_empty) {
                break;
            }
            if plan.threshold.is_none() && sib >= plan.steps_per_block {
                // Unreachable for the built-in rules (their last step commits everything).
                break;
            }
            let mut batch = canvas.batch(device, cfg)?;
            // t of a step = the fraction of the row's current block still masked (DESIGN §3);
            // the unconditional CFG copies share their row's t.
            let t_step: Vec<f64> = masked
                .iter()
                .map(|m| m.len() as f64 / block_length as f64)
                .collect();
            batch.t = Some(
                t_step
                    .iter()
                    .chain(t_step.iter().take(model_rows - b))
                    .copied()
                    .collect(),
            );
            let window = StepWindow {
                len: canvas.len(),
                start,
                end,
                step_in_block: sib,
                shift,
            };
            let planned = match &dgr {
                Some(d) => {
                    let (delta, planned) = d.delta_for(step as u64, device)?;
                    batch.position_delta = delta;
                    planned
                }
                None => Vec::new(),
            };
            let out =
                fwd.block_logits(&batch, model_rows, vocab, &window, dgr.as_ref().map(|_| b))?;
            let logits = out.logits;
            let nfe = fwd.full + fwd.windows;
            // What the forward really computed: window forwards skip columns outside the window.
            let (w0, wl) = fwd.last_window;
            let mut dgr_applied: Vec<Vec<DgrUse>> = vec![Vec::new(); b];
            for p in planned {
                if p.column >= w0 && p.column < w0 + wl {
                    dgr_total += 1;
                    dgr_used.add(p.report.band, &p.report.patterns);
                    dgr_applied[p.row].push(p.report);
                }
            }
            let mut dgr_selected = match (dgr.as_mut(), out.hidden.as_deref()) {
                (Some(d), Some(hidden)) => d.observe(
                    step as u64,
                    &masked,
                    (start, block_length),
                    &logits,
                    hidden,
                    vocab,
                )?,
                _ => vec![Vec::new(); b],
            };
            let mut t_rows = vec![0.0; b];
            let mut committed: Vec<Vec<usize>> = vec![Vec::new(); b];
            for r in 0..b {
                let cands = &masked[r];
                if cands.is_empty() {
                    continue;
                }
                t_rows[r] = cands.len() as f64 / block_length as f64;
                let row = &mut rows[r];
                row.steps += 1;
                row.nfe += 1;
                let mut props: Vec<Proposal> = Vec::with_capacity(cands.len());
                for &p in cands {
                    let at = |rr: usize| {
                        let o = (rr * block_length + (p - start)) * vocab;
                        &logits[o..o + vocab]
                    };
                    let uncond = cfg.then(|| at(b + r));
                    prepare_logits(&mut logits_buf, at(r), uncond, opts.cfg_scale, &banned)
                        .map_err(|()| Error::NonFiniteLogits {
                            row: r,
                            position: p,
                        })?;
                    let prop = match opts.rule {
                        Rule::Llada { remasking } => llada::propose(
                            &logits_buf,
                            opts.temperature,
                            remasking,
                            &last,
                            &mut row.rng,
                            &mut scratch,
                        ),
                        Rule::Dream {
                            alg, top_p, top_k, ..
                        } => dream::propose(
                            &logits_buf,
                            &Sampling {
                                temperature: opts.temperature,
                                top_p,
                                top_k,
                                alg,
                            },
                            &last,
                            &mut row.rng,
                            &mut scratch,
                        ),
                        Rule::Mdlm { .. } => super::mdlm::propose(
                            &logits_buf,
                            opts.temperature,
                            &mut row.rng,
                            &mut scratch,
                        ),
                    };
                    props.push(prop.ok_or(Error::NoCandidateToken {
                        row: r,
                        position: p,
                    })?);
                }
                let conf: Vec<f64> = props.iter().map(|p| p.confidence).collect();
                let chosen = match (plan.threshold, opts.rule) {
                    (Some(tau), _) => select::above_threshold(&conf, tau),
                    (None, Rule::Llada { .. }) => {
                        let k = row.transfers.get(sib).copied().unwrap_or(0);
                        select::top_k(&conf, k)
                    }
                    (
                        None,
                        Rule::Dream {
                            alg: DreamAlg::Origin,
                            ..
                        },
                    ) => {
                        let p = f64::from(schedule::dream_reveal_fraction(&dream_ts, sib));
                        select::bernoulli(cands.len(), p, &mut row.rng)
                    }
                    (None, Rule::Dream { alg_temp, .. }) => {
                        let k = schedule::dream_transfer_count(cands.len(), &dream_ts, sib);
                        if k == 0 {
                            Vec::new()
                        } else if alg_temp > 0.0 {
                            select::sampled(&conf, k, alg_temp, &mut row.rng)
                        } else {
                            select::top_k(&conf, k)
                        }
                    }
                    (None, Rule::Mdlm { schedule: alpha }) => {
                        let p = schedule::mdlm_unmask_prob(alpha, sib, plan.steps_per_block);
                        select::bernoulli(cands.len(), p, &mut row.rng)
                    }
                };
                for &i in &chosen {
                    canvas.rows[r][cands[i]] = props[i].token;
                    committed[r].push(cands[i] - canvas.prompt_len);
                }
                committed[r].sort_unstable();
                if opts.early_stop {
                    let p0 = canvas.prompt_len;
                    if stop_at_eos(&mut canvas.rows[r][p0..], special.mask, special.eos) {
                        row.finished = true;
                        row.stopped_at_eos = true;
                    }
                }
            }
            let event = StepEvent {
                step,
                block,
                step_in_block: sib,
                nfe,
                rows: (0..b)
                    .map(|r| RowStep {
                        t: t_rows[r],
                        committed: std::mem::take(&mut committed[r]),
                        canvas: canvas.unpadded(r),
                        prompt_len: request.rows[r].prompt.len(),
                        finished: rows[r].finished || !canvas.generated(r).contains(&special.mask),
                        dgr_applied: std::mem::take(&mut dgr_applied[r]),
                        dgr_selected: std::mem::take(&mut dgr_selected[r]),
                    })
                    .collect(),
            };
            let flow = on_step(&event);
            step += 1;
            sib += 1;
            if flow.is_break() {
                cancelled = true;
                break 'blocks;
            }
        }
        tracing::debug!(
            block,
            steps = sib,
            nfe = fwd.full + fwd.windows,
            "block done"
        );
        if rows.iter().all(|r| r.finished) {
            break;
        }
    }
    Ok(Output {
        rows: rows
            .into_iter()
            .enumerate()
            .map(|(r, s)| RowOutput {
                ids: canvas.generated(r).to_vec(),
                stopped_at_eos: s.stopped_at_eos,
                steps: s.steps,
                nfe: s.nfe,
            })
            .collect(),
        steps: step,
        nfe: fwd.full + fwd.windows,
        window_nfe: fwd.windows,
        cancelled,
        dgr_applied: dgr_total,
        dgr_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_formula_on_three_tokens() {
        // u + (s + 1)(c − u) with s = 2: [0 + 3(1 − 0), 1 + 3(0 − 1), 2 + 3(2 − 2)] = [3, −2, 2].
        let mut out = Vec::new();
        prepare_logits(&mut out, &[1.0, 0.0, 2.0], Some(&[0.0, 1.0, 2.0]), 2.0, &[]).unwrap();
        assert_eq!(out, vec![3.0, -2.0, 2.0]);
        // Banned ids become -inf; s = 0 gives the conditional logits.
        prepare_logits(
            &mut out,
            &[1.0, 0.5, 2.0],
            Some(&[9.0, 1.0, 2.0]),
            0.0,
            &[2],
        )
        .unwrap();
        assert_eq!(out, vec![1.0, 0.5, f64::NEG_INFINITY]);
        assert!(prepare_logits(&mut out, &[f32::NAN], None, 0.0, &[]).is_err());
    }

    #[test]
    fn early_stop_fills_after_first_eos() {
        const M: u32 = 9;
        const E: u32 = 8;
        let mut g = vec![1, E, 3, M, 2];
        assert!(stop_at_eos(&mut g, M, E));
        assert_eq!(g, vec![1, E, E, E, E]);
        let mut g = vec![1, M, E, 2];
        assert!(!stop_at_eos(&mut g, M, E));
        assert_eq!(g, vec![1, M, E, 2]);
        let mut g = vec![1, 2];
        assert!(!stop_at_eos(&mut g, M, E));
    }
}
