//! `node chat`: a multi-turn conversation with an instruct checkpoint in the terminal.
//!
//! Each turn renders the whole conversation so far with the model's chat template (as
//! `transformers`' `apply_chat_template(messages, add_generation_prompt=True)` would), generates
//! the reply by masked diffusion, and appends it as the assistant's message — the same
//! conversation LLaDA's `chat.py` builds, without its token-level splicing. Lines starting with
//! `/` are commands: `/reset` forgets the conversation (the system message stays), `/exit` ends.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ruvdllm::model::Model;
use ruvdllm::sampler::{self, Options, Request};
use ruvdllm::tokenizer::{ChatTemplate, Tokenizer};
use serde_json::{Value, json};

use crate::sampler_args::SamplerArgs;

#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The instruct model (and adapters).
    #[command(flatten)]
    pub base: crate::model_arg::ModelArgs,
    /// A system message at the start of the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// This Jinja chat template instead of the checkpoint's own.
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// A conversation and what it takes to continue it.
pub struct Conversation<'a> {
    pub model: &'a Model,
    pub tokenizer: &'a dyn Tokenizer,
    pub template: &'a ChatTemplate,
    pub options: Options,
    pub seed: u64,
    system: Option<String>,
    messages: Vec<Value>,
}

impl<'a> Conversation<'a> {
    pub fn new(
        model: &'a Model,
        tokenizer: &'a dyn Tokenizer,
        template: &'a ChatTemplate,
        options: Options,
        seed: u64,
        system: Option<String>,
    ) -> Self {
        let mut c = Conversation {
            model,
            tokenizer,
            template,
            options,
            seed,
            system,
            messages: Vec::new(),
        };
        c.reset();
        c
    }

    /// Forgets every turn; the system message stays.
    pub fn reset(&mut self) {
        self.messages.clear();
        if let Some(s) = &self.system {
            self.messages.push(json!({"role": "system", "content": s}));
        }
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Value] {
        &self.messages
    }

    /// The prompt ids of the next reply to `user` (the rendered conversation; the template
    /// writes BOS itself).
    pub fn prompt_ids(&self, user: &str) -> anyhow::Result<Vec<u32>> {
        let mut messages = self.messages.clone();
        messages.push(json!({"role": "user", "content": user}));
        let text = self.template.render(&messages, None, true)?;
        let ids = self.tokenizer.try_encode(&text)?;
        let max = self.model.config().max_seq_len;
        anyhow::ensure!(
            ids.len() + self.options.gen_length <= max,
            "the conversation ({} tokens) plus the reply ({} tokens) exceeds the model's context \
             of {max} tokens: /reset to start over",
            ids.len(),
            self.options.gen_length
        );
        Ok(ids)
    }

    /// Generates the reply to `user` and appends both messages.
    pub fn turn(&mut self, user: &str) -> anyhow::Result<String> {
        let ids = self.prompt_ids(user)?;
        let specials = self.model.config().specials;
        let turn = (self.messages.len() / 2) as u64;
        let request = Request::with_seeds(vec![ids], self.seed.wrapping_add(turn));
        let out = sampler::generate_with(
            self.model,
            self.model.device(),
            &specials,
            &self.options,
            &request,
            None,
            |_| std::ops::ControlFlow::Continue(()),
        )?;
        let row = &out.rows[0].ids;
        let end = specials.answer_end(row);
        let reply = self.tokenizer.decode(&row[..end]).trim().to_string();
        self.messages.push(json!({"role": "user", "content": user}));
        self.messages
            .push(json!({"role": "assistant", "content": reply}));
        Ok(reply)
    }
}

pub fn run(args: ChatArgs) -> anyhow::Result<()> {
    let (mut loaded, tok, _) = args.base.load()?;
    let template = crate::model_arg::chat_template(&mut loaded, args.chat_template.as_deref())?
        .map_err(|why| anyhow::anyhow!("{why}"))?;
    let mut options = args.sampler.options()?;
    if options.steps.is_none() {
        options.steps = Some(options.gen_length);
    }
    let mut chat = Conversation::new(
        &loaded.model,
        tok.as_ref(),
        &template,
        options,
        args.sampler.seed,
        args.system.clone(),
    );
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chatting with {}; /reset starts over, /exit ends",
            args.base.path().display()
        );
    }
    let mut stdout = std::io::stdout();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                chat.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        match chat.turn(text) {
            Ok(reply) => {
                writeln!(stdout, "{reply}")?;
                stdout.flush()?;
            }
            // A turn that cannot run (context full, a template refusing the conversation) is
            // reported; the conversation stays as it was.
            Err(e) => eprintln!("error: {e:#}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_carry_the_conversation() {
        let (loaded, tok) = crate::model_arg::load(None).unwrap();
        let template = ChatTemplate::new(
            "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}\
             {% if add_generation_prompt %}<assistant>{% endif %}",
            Default::default(),
        )
        .unwrap();
        let options = Options {
            gen_length: 8,
            block_length: 8,
            steps: Some(8),
            ..Options::default()
        };
        let mut chat = Conversation::new(
            &loaded.model,
            tok.as_ref(),
            &template,
            options,
            3,
            Some("be brief".into()),
        );
        assert_eq!(
            tok.decode(&chat.prompt_ids("12+7=").unwrap()),
            "<system>be brief\n<user>12+7=\n<assistant>"
        );
        let first = chat.turn("12+7=").unwrap();
        assert_eq!(chat.messages().len(), 3);
        assert_eq!(chat.messages()[2]["content"], first.as_str());
        // The second prompt holds the whole conversation, the first reply included.
        let second = tok.decode(&chat.prompt_ids("and 2+2=").unwrap());
        assert_eq!(
            second,
            format!(
                "<system>be brief\n<user>12+7=\n<assistant>{first}\n<user>and 2+2=\n<assistant>"
            )
        );
        chat.turn("and 2+2=").unwrap();
        assert_eq!(chat.messages().len(), 5);
        chat.reset();
        assert_eq!(chat.messages().len(), 1);
        // A conversation that cannot fit the context is refused, not truncated.
        let long = "x".repeat(loaded.model.config().max_seq_len);
        let e = chat.turn(&long).unwrap_err().to_string();
        assert!(e.contains("context"), "{e}");
        assert_eq!(chat.messages().len(), 1, "a failed turn leaves no trace");
    }
}
