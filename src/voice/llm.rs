//! An OpenAI-compatible chat-completions client (OpenAI, Ollama, llama.cpp server, vLLM),
//! streaming by server-sent events so the first sentence can be spoken while the rest is
//! still being generated.
//!
//! The system prompt always carries what is remembered about the caller. Errors map to
//! `StageError` so the controller's breaker can count them: no connection or a 5xx is
//! `Unreachable`, another non-2xx is `Rejected`, a deadline is `Timeout`.
//!
//! The async [`OpenAiLlm::stream`] is what a tokio shell should call (an HTTP wait must
//! not hold a worker-pool thread). The blocking [`Llm`] implementation runs it on a
//! private runtime, for callers that are plain threads.

use std::ops::ControlFlow;
use std::time::Duration;

use serde_json::{json, Value};
use sofia_voice::{GenerateRequest, Llm, Role, StageError};

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiConfig {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Stream with server-sent events (`false`: one JSON answer).
    pub stream: bool,
    /// Connecting and receiving the first piece of text must take no longer than this...
    pub first_text_timeout: Duration,
    /// ...and the whole reply no longer than this.
    pub timeout: Duration,
    pub max_tokens: u32,
    pub temperature: f32,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: "llama3.2".into(),
            api_key: None,
            stream: true,
            first_text_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_tokens: 200,
            temperature: 0.3,
        }
    }
}

pub struct OpenAiLlm {
    config: OpenAiConfig,
    client: reqwest::Client,
    runtime: crate::voice::runtime::PrivateRuntime,
}

const PERSONA: &str = "You are Sofia, a friendly voice assistant answering a phone call. \
Your words are spoken aloud by a speech synthesizer: answer in one to three short, plain \
sentences, with no lists, markdown, emoji or URLs. If you did not understand, say so and \
ask the caller to repeat. Use what you remember about the caller when it helps, and never \
invent memories.";

/// The system prompt: the persona plus what memory recalled for this turn: facts
/// (dated, superseded ones marked), then earlier turns, best first.
pub fn system_prompt(request: &GenerateRequest) -> String {
    use sofia_memory::timecue::describe;
    let mut prompt = String::from(PERSONA);
    prompt.push_str(
        "\n\nWhat you remember about this caller from earlier calls, most relevant first:\n",
    );
    let memory = &request.memory;
    let earlier: Vec<_> = memory
        .turns
        .iter()
        .filter(|t| t.call_id != request.call_id)
        .collect();
    if memory.name.is_none() && memory.facts.is_empty() && earlier.is_empty() {
        prompt.push_str("- Nothing yet: this is their first call.\n");
    }
    if let Some(name) = &memory.name {
        prompt.push_str(&format!("- Their name is {name}.\n"));
    }
    for f in &memory.facts {
        let mark = if f.superseded {
            " (no longer true: a later fact replaced it)"
        } else {
            ""
        };
        prompt.push_str(&format!(
            "- Fact, said {}: {}{mark}\n",
            describe(f.unix_ms, request.unix_ms),
            f.text
        ));
    }
    for t in earlier {
        let who = match t.role {
            Role::Caller => "the caller said",
            Role::Agent => "you said",
        };
        prompt.push_str(&format!(
            "- {}, {who}: {}\n",
            describe(t.unix_ms, request.unix_ms),
            t.text
        ));
    }
    prompt
}

/// The chat messages for a request: system prompt, then this call's history.
pub fn messages(request: &GenerateRequest) -> Vec<Value> {
    let mut out = vec![json!({"role": "system", "content": system_prompt(request)})];
    for m in &request.history {
        let role = match m.role {
            Role::Caller => "user",
            Role::Agent => "assistant",
        };
        out.push(json!({"role": role, "content": m.text}));
    }
    out
}

impl OpenAiLlm {
    pub fn new(config: OpenAiConfig) -> Result<Self, StageError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.first_text_timeout)
            .build()
            .map_err(|e| StageError::Unreachable(format!("HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StageError::Unreachable(format!("runtime: {e}")))?;
        Ok(Self {
            config,
            client,
            runtime: crate::voice::runtime::PrivateRuntime::new(runtime),
        })
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Generates a reply, handing text to `on_text` as it arrives; `Break` from
    /// `on_text` stops reading (not an error).
    pub async fn stream<F>(
        &self,
        request: &GenerateRequest,
        on_text: &mut F,
    ) -> Result<(), StageError>
    where
        F: FnMut(&str) -> ControlFlow<()> + ?Sized,
    {
        match tokio::time::timeout(self.config.timeout, self.stream_inner(request, on_text)).await {
            Ok(result) => result,
            Err(_) => Err(StageError::Timeout),
        }
    }

    async fn stream_inner<F>(
        &self,
        request: &GenerateRequest,
        on_text: &mut F,
    ) -> Result<(), StageError>
    where
        F: FnMut(&str) -> ControlFlow<()> + ?Sized,
    {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let body = json!({
            "model": self.config.model,
            "messages": messages(request),
            "stream": self.config.stream,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        });
        let mut http = self.client.post(&url).json(&body);
        if let Some(key) = &self.config.api_key {
            http = http.bearer_auth(key);
        }
        let first = self.config.first_text_timeout;
        let response = tokio::time::timeout(first, http.send())
            .await
            .map_err(|_| StageError::Timeout)?
            .map_err(|e| {
                if e.is_timeout() {
                    StageError::Timeout
                } else {
                    StageError::Unreachable(format!("{url}: {e}"))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            let detail = response.text().await.unwrap_or_default();
            let detail: String = detail.chars().take(200).collect();
            let message = format!("{url} answered {status}: {detail}");
            return Err(if status.is_server_error() {
                StageError::Unreachable(message)
            } else {
                StageError::Rejected(message)
            });
        }
        if !self.config.stream {
            let value: Value = tokio::time::timeout(first, response.json())
                .await
                .map_err(|_| StageError::Timeout)?
                .map_err(|e| StageError::Rejected(format!("{url}: not a completion: {e}")))?;
            let text = value["choices"][0]["message"]["content"]
                .as_str()
                .ok_or_else(|| StageError::Rejected(format!("{url}: no message content")))?;
            let _ = on_text(text);
            return Ok(());
        }
        self.read_events(response, on_text, &url).await
    }

    /// Reads `data:` lines of a server-sent event stream until `[DONE]` or the end.
    async fn read_events<F>(
        &self,
        mut response: reqwest::Response,
        on_text: &mut F,
        url: &str,
    ) -> Result<(), StageError>
    where
        F: FnMut(&str) -> ControlFlow<()> + ?Sized,
    {
        let mut buffer: Vec<u8> = Vec::new();
        let mut got_text = false;
        loop {
            let next = if got_text {
                response.chunk().await
            } else {
                tokio::time::timeout(self.config.first_text_timeout, response.chunk())
                    .await
                    .map_err(|_| StageError::Timeout)?
            };
            let Some(bytes) =
                next.map_err(|e| StageError::Unreachable(format!("{url}: stream broke: {e}")))?
            else {
                return Ok(()); // the server closed without [DONE]: take what came
            };
            buffer.extend_from_slice(&bytes);
            while let Some(nl) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim();
                let Some(data) = line.strip_prefix("data:") else {
                    continue; // comments, event names, blank separators
                };
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(());
                }
                let value: Value = serde_json::from_str(data)
                    .map_err(|e| StageError::Rejected(format!("{url}: bad event {data:?}: {e}")))?;
                if let Some(message) = value["error"]["message"].as_str() {
                    return Err(StageError::Rejected(format!("{url}: {message}")));
                }
                if let Some(text) = value["choices"][0]["delta"]["content"].as_str() {
                    if text.is_empty() {
                        continue;
                    }
                    got_text = true;
                    if on_text(text).is_break() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Llm for OpenAiLlm {
    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), StageError> {
        // A current-thread runtime: the (non-`Send`) callback runs right here, as text
        // arrives.
        self.runtime.block_on(self.stream(request, on_text))
    }
}
