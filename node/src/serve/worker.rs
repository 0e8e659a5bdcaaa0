//! One generation, run on a blocking thread, turned into OpenAI choices or stream chunks.
//!
//! The sampler is synchronous and compute-bound, so it runs under `spawn_blocking` and talks to
//! the async side only through a *bounded* channel of ready-to-send event payloads. Every step
//! runs each row's [`TextTracker`]; in streaming mode the step also becomes one chunk per row
//! that changed (text delta + the row's canvas). The sampler's `on_step` may return
//! `ControlFlow::Break`, which is how a generation stops early: when the client is gone (the
//! cancel flag, set when the response is dropped, or a closed channel), when a client has read
//! nothing for `stall_timeout` (the send times out), and when every row's text is already final
//! (a stop sequence or EOS hit) so further steps could not change the answer.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ruvdllm::sampler::{self, Request};
use ruvdllm::tokenizer::Tokenizer;
use ruvdllm::tokens::SpecialTokens;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use super::error::ApiError;
use super::model_handle::Snapshot;
use super::request::Job;
use super::response::{
    ChatChunk, Choice, Chunk, Completion, DgrTouch, Meta, RunInfo, StepInfo, TEXT_COMPLETION, Usage,
};
use super::text::TextTracker;

/// The SSE payload that ends a stream.
pub const DONE: &str = "[DONE]";

/// Where a streaming generation sends its event payloads.
pub struct Sink {
    pub tx: mpsc::Sender<String>,
    /// The runtime whose timers bound a send (the worker is on one of its blocking threads).
    pub runtime: Handle,
    pub stall_timeout: Duration,
}

impl Sink {
    /// Sends one payload; `false` when the client is gone or read nothing for the stall timeout.
    fn send(&self, payload: String) -> bool {
        match self
            .runtime
            .block_on(self.tx.send_timeout(payload, self.stall_timeout))
        {
            Ok(()) => true,
            Err(SendTimeoutError::Timeout(_)) => {
                tracing::warn!(
                    timeout_s = self.stall_timeout.as_secs_f64(),
                    "streaming client stalled; cancelling its generation"
                );
                false
            }
            Err(SendTimeoutError::Closed(_)) => false,
        }
    }
}

/// Everything a generation needs, moved onto the blocking thread.
pub struct Work {
    pub snapshot: Snapshot,
    pub tokenizer: Arc<dyn Tokenizer>,
    pub specials: SpecialTokens,
    pub job: Job,
    pub meta: Meta,
    pub cancel: Arc<AtomicBool>,
    /// The node's banks, for requests with DGR.
    pub banks: Option<Arc<super::LocalBanks>>,
}

/// How a generation ended.
#[derive(Debug)]
pub enum Ended {
    /// The completion (already fully streamed when streaming).
    Done(Completion),
    /// The client went away; nothing more was sent.
    Cancelled,
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "serializing a stream event failed");
        String::from("{}")
    })
}

/// A stream event's payload: the chunk itself, or its chat form.
fn payload(chunk: &Chunk, chat: Option<&mut Vec<bool>>) -> String {
    match chat {
        Some(role_sent) => to_json(&ChatChunk::from_chunk(chunk, role_sent)),
        None => to_json(chunk),
    }
}

fn canvas(generated: &[u32], tokenizer: &dyn Tokenizer) -> String {
    generated
        .iter()
        .map(|&id| tokenizer.token_str(id))
        .collect()
}

/// Runs the generation. With a `sink`, streams chunks, the final chunks, the usage chunk (if
/// asked) and `[DONE]`; a sampler error after the first event is streamed as an error event.
pub fn run(work: Work, sink: Option<&Sink>) -> Result<Ended, ApiError> {
    let Work {
        snapshot,
        tokenizer,
        specials,
        job,
        meta,
        cancel,
        banks,
    } = work;
    // Held for the whole generation when DGR is on: retrieval sees one consistent bank.
    let guard = match (&job.options.dgr, &banks) {
        (Some(_), Some(b)) => Some(b.read()),
        _ => None,
    };
    let retrieval = match (&guard, &banks) {
        (Some(g), Some(b)) => Some(sampler::Retrieval {
            banks: g,
            projection: b.projection(),
            now: g.clock(),
        }),
        _ => None,
    };
    let now = retrieval.as_ref().map(|r| r.now);
    let tok: &dyn Tokenizer = tokenizer.as_ref();
    let row_prompts: Vec<&super::request::Prompt> = job
        .prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, job.n))
        .collect();
    let request = Request::with_seeds(
        row_prompts.iter().map(|p| p.ids.clone()).collect(),
        job.seed,
    );
    let mut trackers: Vec<TextTracker> = row_prompts
        .iter()
        .map(|p| TextTracker::new(specials, job.stop.clone(), job.echo.then(|| p.text.clone())))
        .collect();
    let mut finish_sent = vec![false; trackers.len()];
    // Chat streams: whether each choice already had its first (role) chunk.
    let mut role_sent = job.chat.then(|| vec![false; trackers.len()]);
    let mut sent_any = false;
    let mut client_gone = false;

    let model = snapshot.model.as_ref();
    let result = sampler::generate_with(
        model,
        model.device(),
        &specials,
        &job.options,
        &request,
        retrieval,
        |ev| {
            if cancel.load(Ordering::Relaxed) {
                client_gone = true;
                return ControlFlow::Break(());
            }
            for (r, row) in ev.rows.iter().enumerate() {
                let generated = &row.canvas[row.prompt_len.min(row.canvas.len())..];
                let delta = trackers[r].update(generated, tok);
                let Some(sink) = sink else { continue };
                let finish = trackers[r].finish_reason();
                if finish_sent[r]
                    || (delta.is_empty() && row.committed.is_empty() && finish.is_none())
                {
                    continue;
                }
                finish_sent[r] = finish.is_some();
                let mut chunk = Chunk::new(
                    &meta,
                    vec![Choice {
                        text: delta,
                        index: r,
                        logprobs: None,
                        finish_reason: finish,
                    }],
                );
                chunk.ruvdllm = Some(StepInfo {
                    step: ev.step,
                    canvas: canvas(generated, tok),
                    committed: row.committed.clone(),
                    t: row.t,
                    dgr: row
                        .dgr_applied
                        .iter()
                        .map(|u| DgrTouch {
                            position: u.position,
                            band: u.band.name(),
                            patterns: u.patterns.clone(),
                        })
                        .collect(),
                });
                if !sink.send(payload(&chunk, role_sent.as_mut())) {
                    client_gone = true;
                    return ControlFlow::Break(());
                }
                sent_any = true;
            }
            if trackers.iter().all(|t| t.finish_reason().is_some()) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        },
    );

    // Bookkeeping after retrieval (DESIGN §5): the patterns DGR applied get their last use,
    // under a short write lock taken only now that the generation's read lock is gone.
    drop(guard);
    if let (Ok(out), Some(b), Some(now)) = (&result, &banks, now)
        && !out.dgr_used.is_empty()
        && let Err(e) = b.record_use(&out.dgr_used, now)
    {
        tracing::warn!(error = %e, "recording DGR pattern use failed");
    }
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            let err = ApiError::from_sampler(&e);
            if let Some(sink) = sink
                && sent_any
            {
                sink.send(to_json(&err.body()));
            }
            return Err(err);
        }
    };
    if client_gone {
        return Ok(Ended::Cancelled);
    }

    let mut choices = Vec::with_capacity(trackers.len());
    let mut completion_tokens = 0;
    for (r, (tracker, row)) in trackers.iter_mut().zip(&out.rows).enumerate() {
        let delta = tracker.update(&row.ids, tok);
        if tracker.finish_reason().is_none() {
            tracker.cut_short();
        }
        let finish_reason = tracker.finish_reason();
        if let Some(sink) = sink
            && !finish_sent[r]
        {
            let chunk = Chunk::new(
                &meta,
                vec![Choice {
                    text: delta,
                    index: r,
                    logprobs: None,
                    finish_reason,
                }],
            );
            if !sink.send(payload(&chunk, role_sent.as_mut())) {
                return Ok(Ended::Cancelled);
            }
        }
        completion_tokens += tracker.tokens();
        choices.push(Choice {
            text: tracker.text().to_string(),
            index: r,
            logprobs: None,
            finish_reason,
        });
    }
    let prompt_tokens = row_prompts.iter().map(|p| p.ids.len()).sum();
    let usage = Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens + completion_tokens,
    };
    if let Some(sink) = sink {
        if job.include_usage {
            let mut chunk = Chunk::new(&meta, Vec::new());
            chunk.usage = Some(usage);
            if !sink.send(payload(&chunk, role_sent.as_mut())) {
                return Ok(Ended::Cancelled);
            }
        }
        if !sink.send(DONE.to_string()) {
            return Ok(Ended::Cancelled);
        }
    }
    Ok(Ended::Done(Completion {
        id: meta.id,
        object: TEXT_COMPLETION,
        created: meta.created,
        model: meta.model,
        choices,
        usage,
        ruvdllm: RunInfo {
            seed: job.seed,
            steps: out.steps,
            nfe: out.nfe,
            rule: job.options.rule.name(),
            model_version: snapshot.version,
            dgr_applied: job.options.dgr.as_ref().map(|_| out.dgr_applied),
        },
    }))
}
