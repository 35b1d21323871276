//! The voice agent with a language model that fails, end to end: baresip calls 5555
//! and speaks (espeak-ng), with the real models, and the profile's `agent.llm_url`
//! points at a tiny server in this test that takes the request and then stays silent.
//! The agent must fall back to its built-in responder, after the first-text timeout,
//! and once the shared circuit breaker is open, at once for every later call.

mod agent_support;
mod common;
mod voice_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_support::{call_agent, profile_with as profile, start_server_env, ONE_CALL_AT_A_TIME};
use common::{free_port, Server};
use voice_support::audio::{espeak, silence};

/// What the language model endpoint does after reading a request.
#[derive(Clone, Copy)]
enum Hang {
    /// Says nothing at all: no status line, no headers.
    Silent,
    /// Sends `200 OK` and event-stream headers, then nothing: the stream is open and no
    /// words come.
    HeadersOnly,
}

/// A chat-completions endpoint on loopback that never answers. Counts the requests it
/// took; holds every connection open until the test ends.
struct HungLlm {
    base_url: String,
    requests: Arc<AtomicUsize>,
}

impl HungLlm {
    fn start(hang: Hang) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if read_request(&mut stream).is_none() {
                    continue;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                if let Hang::HeadersOnly = hang {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                    );
                    let _ = stream.flush();
                }
                held.push(stream);
            }
        });
        Self { base_url, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP request (head and a Content-Length body).
fn read_request(stream: &mut TcpStream) -> Option<()> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()
}

/// The switch with its agent loaded (and its log so far), the language model at `llm`.
fn start(data: &Path, port: u16, profile: &Path, llm: &HungLlm) -> (Server, Vec<String>) {
    start_server_env(data, port, profile, &[("SOFIA_LLM_URL", &llm.base_url)])
}

/// One call from 1000 that asks a question after `before` seconds of silence and stays
/// on for `after`; returns the switch's log of the call.
fn ask(server: &Server, port: u16, before: f32, after: f32) -> Vec<String> {
    let words = tempfile::tempdir().unwrap();
    let mic = [
        silence(before),
        espeak("Can you tell me the opening hours?", words.path()),
        silence(after),
    ]
    .concat();
    call_agent(port, &mic);
    server.wait_for("call to 5555 over")
}

/// A caller turn's times from the agent's turn log line, in ms from the end of the
/// caller's speech: (transcribed, first reply text).
fn caller_turn(lines: &[String]) -> (u64, u64) {
    let ms = |line: &str, label: &str| -> Option<u64> {
        let rest = line.split(label).nth(1)?;
        rest.split_whitespace()
            .next()?
            .strip_suffix("ms")?
            .parse()
            .ok()
    };
    lines
        .iter()
        .filter(|l| l.contains("agent turn"))
        .find_map(|l| Some((ms(l, " stt ")?, ms(l, " first text ")?)))
        .unwrap_or_else(|| panic!("no caller turn logged: {lines:#?}"))
}

/// GET `path` from the switch's health/metrics listener (its address is in the log).
fn http_get(log: &[String], path: &str) -> String {
    let addr = log
        .iter()
        .find_map(|l| l.split("health and metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no health address logged: {log:#?}"))
        .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_hung_language_model_trips_the_shared_breaker_and_the_next_call_falls_back_at_once() {
    let _one = ONE_CALL_AT_A_TIME.lock();
    let llm = HungLlm::start(Hang::Silent);
    let data = tempfile::tempdir().unwrap();
    let first_text_ms = 6000;
    let profile = profile(
        data.path(),
        &[
            ("llm_first_text_timeout_ms", &first_text_ms.to_string()),
            ("llm_timeout_secs", "30"),
            ("breaker_failures", "1"),
            ("breaker_open_secs", "600"),
        ],
    );
    let port = free_port();
    let (server, mut log) = start(data.path(), port, &profile, &llm);

    // Call 1 pays the timeout, and its failure opens the breaker.
    let first = ask(&server, port, 3.0, 16.0);
    log.extend(first.iter().cloned());
    let (stt, text) = caller_turn(&first);
    eprintln!("first call: stt {stt} ms, first text {text} ms");
    assert_eq!(llm.requests(), 1, "{first:#?}");
    assert!(
        text - stt >= first_text_ms - 500,
        "the first call did not wait for the model: {first:#?}"
    );
    assert!(
        first.iter().any(|l| l.contains("Llm breaker open")),
        "{first:#?}"
    );

    // Call 2, after it: the built-in responder answers at once and the model is not
    // asked.
    let second = ask(&server, port, 10.0, 14.0);
    log.extend(second.iter().cloned());
    let (stt, text) = caller_turn(&second);
    eprintln!("second call: stt {stt} ms, first text {text} ms");
    assert!(
        second.iter().any(|l| l.contains("built-in responder")),
        "{second:#?}"
    );
    assert!(
        text - stt < 1500,
        "the second call waited for a model the breaker knows is down: {second:#?}"
    );
    assert_eq!(llm.requests(), 1, "the open breaker let a request through");

    // Health and metrics show the shared breaker.
    let health = http_get(&log, "/health");
    assert!(health.contains(r#""llm":"open""#), "{health}");
    assert!(health.contains(r#""status":"degraded""#), "{health}");
    let metrics = http_get(&log, "/metrics");
    for line in [
        "sofia_stage_breaker_state{stage=\"llm\"} 2",
        "sofia_stage_breaker_state{stage=\"stt\"} 0",
        "sofia_stage_breaker_trips_total{stage=\"llm\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "no {line}: {metrics}");
    }
    server.terminate();
}

#[test]
fn the_first_text_timeout_alone_ends_a_stream_that_sends_headers_and_no_words() {
    let _one = ONE_CALL_AT_A_TIME.lock();
    let llm = HungLlm::start(Hang::HeadersOnly);
    let data = tempfile::tempdir().unwrap();
    // Far apart: only the first-text timeout can end the wait within the call.
    let profile = profile(
        data.path(),
        &[
            ("llm_first_text_timeout_ms", "1000"),
            ("llm_timeout_secs", "20"),
        ],
    );
    let port = free_port();
    let (server, _) = start(data.path(), port, &profile, &llm);
    let lines = ask(&server, port, 3.0, 10.0);
    let (stt, text) = caller_turn(&lines);
    let waited = Duration::from_millis(text - stt);
    eprintln!("waited {waited:?} for the model's first words");
    assert_eq!(llm.requests(), 1);
    assert!(
        lines.iter().any(|l| l.contains("built-in responder")),
        "{lines:#?}"
    );
    // About the first-text timeout (plus memory recall and a loaded machine), and far
    // below the 20 s overall timeout.
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}: {lines:#?}"
    );
    server.terminate();
}
