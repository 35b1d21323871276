//! The OpenAI-compatible client against a small chat-completions server started by the
//! test on loopback: streaming and non-streaming replies, HTTP errors, timeouts, and the
//! caller's memory in the system prompt. No external network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use sofia_phone::voice::{OpenAiConfig, OpenAiLlm};
use sofia_voice::{GenerateRequest, Llm, Message, Recollection, Remembered, Role, StageError};

/// What the server does with the one request it takes.
enum Reply {
    Stream(Vec<&'static str>),
    /// Sends these chunks, then stalls without closing.
    StreamThenStall(Vec<&'static str>),
    Json(&'static str),
    Status(u16, &'static str),
    /// Reads the request and never answers.
    Silent,
}

struct Server {
    base_url: String,
    request: mpsc::Receiver<(String, Value)>,
    /// Dropping it releases a stalled connection.
    release: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.release.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn read_request(stream: &mut TcpStream) -> (String, Value) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("request line");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().expect("length");
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (head, serde_json::from_slice(&body).expect("JSON body"))
}

fn sse(delta: &str) -> String {
    let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": delta}}]});
    format!("data: {event}\n\n")
}

fn serve(reply: Reply) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (req_tx, req_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let request = read_request(&mut stream);
        let _ = req_tx.send(request);
        let w = &mut stream;
        match reply {
            Reply::Stream(chunks) => {
                // The client may stop reading early: write errors are fine here.
                let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
                let _ = w.write_all(b": keep-alive comment\n\n");
                for c in chunks {
                    let _ = w.write_all(sse(c).as_bytes());
                    let _ = w.flush();
                }
                let _ = w.write_all(b"data: [DONE]\n\n");
            }
            Reply::StreamThenStall(chunks) => {
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                )
                .unwrap();
                for c in chunks {
                    w.write_all(sse(c).as_bytes()).unwrap();
                }
                w.flush().unwrap();
                let _ = release_rx.recv();
            }
            Reply::Json(content) => {
                let body = serde_json::json!({
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]
                })
                .to_string();
                write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            Reply::Status(code, body) => {
                write!(
                    w,
                    "HTTP/1.1 {code} Oops\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
            Reply::Silent => {
                let _ = release_rx.recv();
            }
        }
    });
    Server {
        base_url,
        request: req_rx,
        release: Some(release_tx),
        handle: Some(handle),
    }
}

fn client(base_url: &str, stream: bool) -> OpenAiLlm {
    OpenAiLlm::new(OpenAiConfig {
        base_url: base_url.to_string(),
        model: "test-model".into(),
        api_key: Some("sk-test".into()),
        stream,
        first_text_timeout: Duration::from_millis(500),
        timeout: Duration::from_secs(2),
        ..OpenAiConfig::default()
    })
    .expect("client")
}

fn request() -> GenerateRequest {
    GenerateRequest {
        caller: "1001".into(),
        call_id: "call-2".into(),
        unix_ms: 1_700_000_000_000,
        memory: Recollection {
            turns: vec![Remembered {
                role: Role::Caller,
                text: "I need to fix my bike before Saturday.".into(),
                unix_ms: 1_699_900_000_000,
                call_id: "call-1".into(),
                score: 1.0,
            }],
            ..Recollection::default()
        },
        history: vec![
            Message {
                role: Role::Agent,
                text: "Welcome back!".into(),
            },
            Message {
                role: Role::Caller,
                text: "Any news?".into(),
            },
        ],
    }
}

fn generate(llm: &OpenAiLlm) -> (Result<(), StageError>, Vec<String>) {
    let mut chunks = Vec::new();
    let r = llm.generate(&request(), &mut |t| {
        chunks.push(t.to_string());
        ControlFlow::Continue(())
    });
    (r, chunks)
}

#[test]
fn streams_reply_text_as_it_arrives() {
    let server = serve(Reply::Stream(vec![
        "Your bike",
        " is ready",
        ". Anything else?",
    ]));
    let (r, chunks) = generate(&client(&server.base_url, true));
    r.expect("generate");
    assert_eq!(chunks, ["Your bike", " is ready", ". Anything else?"]);
    let (head, body) = server.request.recv().expect("request seen");
    assert!(head.starts_with("POST /v1/chat/completions "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("authorization: bearer sk-test"),
        "{head}"
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(
        system.contains("I need to fix my bike before Saturday."),
        "{system}"
    );
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[2],
        serde_json::json!({"role": "user", "content": "Any news?"})
    );
}

#[test]
fn non_streaming_reply() {
    let server = serve(Reply::Json("Hello from the model."));
    let (r, chunks) = generate(&client(&server.base_url, false));
    r.expect("generate");
    assert_eq!(chunks, ["Hello from the model."]);
    let (_, body) = server.request.recv().unwrap();
    assert_eq!(body["stream"], false);
}

#[test]
fn server_error_is_unreachable_and_client_error_is_rejected() {
    let server = serve(Reply::Status(500, r#"{"error":{"message":"boom"}}"#));
    let (r, _) = generate(&client(&server.base_url, true));
    assert!(
        matches!(r, Err(StageError::Unreachable(ref m)) if m.contains("500")),
        "{r:?}"
    );

    let server = serve(Reply::Status(401, r#"{"error":{"message":"bad key"}}"#));
    let (r, _) = generate(&client(&server.base_url, true));
    assert!(
        matches!(r, Err(StageError::Rejected(ref m)) if m.contains("401") && m.contains("bad key")),
        "{r:?}"
    );
}

#[test]
fn silent_server_times_out() {
    let server = serve(Reply::Silent);
    let started = Instant::now();
    let (r, chunks) = generate(&client(&server.base_url, true));
    assert_eq!(r, Err(StageError::Timeout));
    assert!(chunks.is_empty());
    // It gives up (at its deadline), rather than hanging; the bound leaves room for a
    // loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn stalled_stream_times_out_after_partial_text() {
    let server = serve(Reply::StreamThenStall(vec!["Let me check"]));
    let started = Instant::now();
    let (r, chunks) = generate(&client(&server.base_url, true));
    assert_eq!(r, Err(StageError::Timeout));
    assert_eq!(chunks, ["Let me check"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn refused_connection_is_unreachable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (r, _) = generate(&client(&format!("http://127.0.0.1:{port}/v1"), true));
    assert!(matches!(r, Err(StageError::Unreachable(_))), "{r:?}");
}

#[test]
fn break_stops_reading() {
    let server = serve(Reply::Stream(vec!["One.", " Two.", " Three."]));
    let llm = client(&server.base_url, true);
    let mut chunks = Vec::new();
    let r = llm.generate(&request(), &mut |t| {
        chunks.push(t.to_string());
        ControlFlow::Break(())
    });
    r.expect("a requested stop is not an error");
    assert_eq!(chunks, ["One."]);
}

#[test]
fn first_call_prompt_says_nothing_is_remembered() {
    let mut req = request();
    req.memory = Recollection::default();
    let system = sofia_phone::voice::llm::system_prompt(&req);
    assert!(
        system.contains("Nothing yet: this is their first call."),
        "{system}"
    );
}
