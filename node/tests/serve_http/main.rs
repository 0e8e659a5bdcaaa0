//! The completion API over a real loopback socket, served by `serve::run` exactly as `node serve`
//! does, on the committed `tiny` base: a completion, a streamed completion read by a plain SSE
//! client (its deltas concatenate to the non-streamed text), every error status, the 429 of a
//! full server, the cancellation of a generation whose client disconnects, and chat completions
//! (a served chat template, the chat shapes streamed and not, and their refusals).

mod client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ruvdllm_node::serve::{self, Config, ModelHandle, State};

struct Server {
    addr: SocketAddr,
    state: State,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: Config) -> Server {
        let (loaded, tok) = ruvdllm_node::model_arg::load(None).expect("tiny base loads");
        let handle = ModelHandle::from_loaded("tiny", loaded, tok).unwrap();
        let state = State::new(handle, config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            state,
            stop,
            task,
        }
    }

    async fn post(&self, body: &Value) -> client::Response {
        let bytes = serde_json::to_vec(body).unwrap();
        client::send(self.addr, "POST", "/v1/completions", Some(&bytes)).await
    }

    /// Graceful shutdown; the server task must end cleanly.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// A small, fast request: 8 tokens, 8 steps, EOS forbidden so every position carries text.
fn small(prompt: Value, stream: bool) -> Value {
    json!({
        "model": "tiny", "prompt": prompt, "max_tokens": 8, "steps": 8, "block_length": 8,
        "seed": 11, "temperature": 0.7, "no_eos": true, "stream": stream
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_a_completion() {
    let server = Server::start(Config::default()).await;

    let resp = client::send(server.addr, "GET", "/v1/models", None).await;
    assert_eq!(resp.head.status, 200);
    let v = resp.json().await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["object"], "model");

    let resp = server.post(&small(json!("12+7="), false)).await;
    assert_eq!(resp.head.status, 200);
    assert_eq!(resp.head.header("content-type"), Some("application/json"));
    let v = resp.json().await;
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert!(v["created"].as_u64().unwrap() > 0);
    assert_eq!(v["model"], "tiny");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert!(choices[0]["logprobs"].is_null());
    assert_eq!(choices[0]["finish_reason"], "length");
    let text = choices[0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert_eq!(v["usage"]["prompt_tokens"], 6); // BOS + "12+7="
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], 14);
    assert_eq!(v["ruvdllm"]["seed"], 11);
    assert_eq!(v["ruvdllm"]["steps"], 8);
    assert_eq!(v["ruvdllm"]["model_version"], 0);

    // A batch (two prompts × n = 2) with a stop sequence, greedy: rows of one prompt agree.
    let mut batch = small(json!(["a", "b"]), false);
    batch["n"] = json!(2);
    batch["temperature"] = json!(0.0);
    batch["stop"] = json!(["\n"]);
    let v = server.post(&batch).await.json().await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert!(!c["text"].as_str().unwrap().contains('\n'));
    }
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert_eq!(choices[2]["text"], choices[3]["text"]);

    // Replacing the model affects the next request only.
    let (loaded, _) = ruvdllm_node::model_arg::load(None).unwrap();
    assert_eq!(
        server
            .state
            .handle()
            .replace(Arc::new(loaded.model))
            .unwrap(),
        1
    );
    let v = server.post(&small(json!("x"), false)).await.json().await;
    assert_eq!(v["ruvdllm"]["model_version"], 1);

    server.stop().await;
}

/// Reads a whole event stream; returns the JSON chunks and whether it ended with `[DONE]`.
async fn read_stream(mut resp: client::Response) -> (Vec<Value>, bool) {
    let mut chunks = Vec::new();
    while let Some(data) = resp.next_event().await {
        if data == "[DONE]" {
            assert!(resp.next_event().await.is_none(), "events after [DONE]");
            return (chunks, true);
        }
        chunks.push(serde_json::from_str(&data).unwrap());
    }
    (chunks, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_deltas_concatenate_to_the_completion() {
    let server = Server::start(Config::default()).await;
    for prompts in [json!("The capital of"), json!(["1+1=", "hello"])] {
        let plain = server
            .post(&small(prompts.clone(), false))
            .await
            .json()
            .await;

        let mut req = small(prompts.clone(), true);
        req["stream_options"] = json!({"include_usage": true});
        let resp = server.post(&req).await;
        assert_eq!(resp.head.status, 200);
        assert!(
            resp.head
                .header("content-type")
                .unwrap()
                .starts_with("text/event-stream")
        );
        let (chunks, done) = read_stream(resp).await;
        assert!(done, "the stream ends with data: [DONE]");

        let rows = plain["choices"].as_array().unwrap().len();
        let mut texts = vec![String::new(); rows];
        let mut finishes = vec![Vec::new(); rows];
        let mut usage = None;
        for c in &chunks {
            assert_eq!(c["object"], "text_completion");
            assert_eq!(c["id"], chunks[0]["id"]);
            assert_eq!(c["model"], "tiny");
            if let Some(u) = c.get("usage") {
                assert!(c["choices"].as_array().unwrap().is_empty());
                usage = Some(u.clone());
                continue;
            }
            let choice = &c["choices"][0];
            let i = choice["index"].as_u64().unwrap() as usize;
            texts[i].push_str(choice["text"].as_str().unwrap());
            if !choice["finish_reason"].is_null() {
                finishes[i].push(choice["finish_reason"].clone());
            }
            if let Some(ext) = c.get("ruvdllm") {
                assert!(ext["step"].as_u64().unwrap() < 8);
                assert!(!ext["canvas"].as_str().unwrap().is_empty());
            }
        }
        // The first step of an 8-step, 8-token generation commits one token: 7 masks remain.
        let first_canvas = chunks[0]["ruvdllm"]["canvas"].as_str().unwrap();
        assert_eq!(first_canvas.matches('░').count(), 7, "{first_canvas}");
        for i in 0..rows {
            assert_eq!(texts[i], plain["choices"][i]["text"], "row {i}");
            assert_eq!(
                finishes[i],
                vec![plain["choices"][i]["finish_reason"].clone()]
            );
        }
        assert_eq!(usage.as_ref(), Some(&plain["usage"]));
    }
    server.stop().await;
}

async fn expect_error(resp: client::Response, status: u16) -> Value {
    assert_eq!(resp.head.status, status);
    assert_eq!(resp.head.header("content-type"), Some("application/json"));
    let v = resp.json().await;
    let e = &v["error"];
    assert!(!e["message"].as_str().unwrap().is_empty(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_status() {
    let config = Config {
        max_body_bytes: 4096,
        max_tokens: 16,
        max_steps: 16,
        default_max_tokens: 8,
        ..Config::default()
    };
    let server = Server::start(config).await;
    let truncated = br#"{"model": "tiny", "prompt": "#;
    let resp = client::send(server.addr, "POST", "/v1/completions", Some(truncated)).await;
    let v = expect_error(resp, 400).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let v = expect_error(
        server
            .post(&json!({"model": "tiny", "prompt": "x", "max_tokens": "8"}))
            .await,
        400,
    )
    .await;
    assert_eq!(v["error"]["param"], "max_tokens");

    let v = expect_error(
        server
            .post(&json!({"model": "tiny", "prompt": "x", "max_tokens": 17}))
            .await,
        400,
    )
    .await;
    assert_eq!(v["error"]["code"], "limit_exceeded");

    let v = expect_error(
        server
            .post(&json!({"model": "tiny", "prompt": "x", "n": 2, "best_of": 3}))
            .await,
        400,
    )
    .await;
    assert_eq!(v["error"]["param"], "best_of");

    // An option only the sampler can judge, streamed or not, is a 400 before any event.
    for stream in [false, true] {
        let bad = json!({"model": "tiny", "prompt": "x", "max_tokens": 8, "block_length": 3, "stream": stream});
        let v = expect_error(server.post(&bad).await, 400).await;
        assert_eq!(v["error"]["param"], "block_length");
    }

    let v = expect_error(
        server.post(&json!({"model": "gpt-4", "prompt": "x"})).await,
        404,
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
    let v = expect_error(
        client::send(server.addr, "GET", "/v1/models/gpt-4", None).await,
        404,
    )
    .await;
    assert_eq!(v["error"]["code"], "model_not_found");
    let v = expect_error(
        client::send(server.addr, "GET", "/v1/chat", None).await,
        404,
    )
    .await;
    assert_eq!(v["error"]["code"], "unknown_url");
    expect_error(
        client::send(server.addr, "GET", "/v1/completions", None).await,
        405,
    )
    .await;

    let big = json!({"model": "tiny", "prompt": "y".repeat(5000)});
    let v = expect_error(server.post(&big).await, 413).await;
    assert_eq!(v["error"]["code"], "request_too_large");

    // Only the two block_length requests reached the sampler (which refused them); nothing ran.
    let stats = *server.state.stats().borrow();
    assert_eq!((stats.active, stats.completed, stats.failed), (0, 0, 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_server_429s_and_a_disconnect_cancels() {
    let config = Config {
        max_concurrent: 1,
        max_tokens: 448,
        max_steps: 448,
        ..Config::default()
    };
    let server = Server::start(config).await;
    // Long enough (448 one-token steps, EOS forbidden) that only a cancel ends it soon.
    let long = json!({
        "model": "tiny", "prompt": "a", "max_tokens": 448, "steps": 448, "no_eos": true,
        "stream": true
    });
    let mut holder = server.post(&long).await;
    assert_eq!(holder.head.status, 200);
    let first = holder.next_event().await.expect("a first event");
    assert!(first.starts_with('{'));

    // The one permit is held (it is released when the generation ends, not before): 429.
    let v = expect_error(server.post(&small(json!("x"), false)).await, 429).await;
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(server.state.stats().borrow().rejected_busy, 1);

    // The client goes away: the generation must stop (cancelled), freeing the permit.
    drop(holder);
    let mut stats = server.state.stats();
    let ended = tokio::time::timeout(Duration::from_secs(120), stats.wait_for(|s| s.active == 0))
        .await
        .expect("the generation ends")
        .map(|s| *s)
        .unwrap();
    assert_eq!((ended.cancelled, ended.completed), (1, 0));

    let resp = server.post(&small(json!("x"), false)).await;
    assert_eq!(resp.head.status, 200);
    resp.body().await;
    assert_eq!(server.state.stats().borrow().completed, 1);
    server.stop().await;
}

/// A ChatML template for the byte-vocabulary base (which has none of its own).
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
                      {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_render_the_template_and_stream_in_the_chat_shape() {
    let server = Server::start(Config::default()).await;
    let chat = |body: &Value| {
        let bytes = serde_json::to_vec(body).unwrap();
        let addr = server.addr;
        async move { client::send(addr, "POST", "/v1/chat/completions", Some(&bytes)).await }
    };
    let messages =
        json!([{"role": "system", "content": "terse"}, {"role": "user", "content": "12+7="}]);
    let body = json!({
        "model": "tiny", "messages": messages, "max_completion_tokens": 8, "steps": 8,
        "block_length": 8, "seed": 11, "temperature": 0.7, "no_eos": true
    });

    // The tiny base has no chat template: a 400 that says so, before any generation.
    let v = expect_error(chat(&body).await, 400).await;
    assert_eq!(v["error"]["code"], "chat_template_unavailable");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no chat template")
    );

    server.state.handle().set_chat_template(
        ruvdllm::tokenizer::ChatTemplate::new(CHATML, Default::default()).unwrap(),
    );
    let resp = chat(&body).await;
    assert_eq!(resp.head.status, 200);
    let v = resp.json().await;
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    let choice = &v["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let reply = choice["message"]["content"].as_str().unwrap().to_string();
    assert!(!reply.is_empty());
    assert_eq!(choice["finish_reason"], "length");
    // The prompt is the rendered template, byte for byte, with no BOS added.
    let rendered = "<|im_start|>system\nterse<|im_end|>\n<|im_start|>user\n12+7=<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(v["usage"]["prompt_tokens"], rendered.len());
    assert_eq!(v["usage"]["completion_tokens"], 8);

    // Streamed, the deltas concatenate to the non-streamed reply.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (chunks, done) = read_stream(chat(&streamed).await).await;
    assert!(done);
    let mut text = String::new();
    let mut roles = 0;
    let mut finish = Vec::new();
    let mut usage = None;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        if let Some(u) = c.get("usage") {
            usage = Some(u.clone());
            continue;
        }
        let ch = &c["choices"][0];
        assert!(ch.get("text").is_none(), "chat chunks carry deltas: {c}");
        if ch["delta"]["role"] == "assistant" {
            roles += 1;
        }
        if let Some(t) = ch["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if !ch["finish_reason"].is_null() {
            finish.push(ch["finish_reason"].clone());
        }
    }
    assert_eq!(roles, 1, "the role comes once, in the first chunk");
    assert_eq!(
        chunks[0]["choices"][0]["delta"]["role"], "assistant",
        "{}",
        chunks[0]
    );
    assert_eq!(text, reply);
    assert_eq!(finish, vec![json!("length")]);
    assert_eq!(usage.as_ref(), Some(&v["usage"]));

    // Refusals name the field.
    let mut with_tools = body.clone();
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
    let v = expect_error(chat(&with_tools).await, 400).await;
    assert_eq!(v["error"]["param"], "tools");
    let mut with_prompt = body.clone();
    with_prompt["prompt"] = json!("x");
    let v = expect_error(chat(&with_prompt).await, 400).await;
    assert_eq!(v["error"]["param"], "prompt");
    let mut typo = body.clone();
    typo["stepz"] = json!(3);
    expect_error(chat(&typo).await, 400).await;
    let mut other = body.clone();
    other["model"] = json!("gpt-4");
    expect_error(chat(&other).await, 404).await;

    server.stop().await;
}
