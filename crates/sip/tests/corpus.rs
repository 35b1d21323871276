//! Corpus tests: RFC 4475 torture messages, RFC 5118 IPv6 messages and real softphone
//! captures. Each corpus has one data-driven `check(path)`; the expected outcome of every
//! file lives next to it in `sofia-expected.tsv` (file, config, parse, outcome).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use sofia_sip::{parse, Config, Endpoint, Framing, Message, Transport};

/// What a file must do: whether it parses, and what the endpoint answers.
struct Expectation {
    config: String,
    parses: bool,
    outcome: String,
}

fn load_expectations(path: &Path) -> BTreeMap<String, Expectation> {
    let text = std::fs::read_to_string(path).expect("expectations file exists");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 4, "bad expectation line: {l}");
            (
                cols[0].to_string(),
                Expectation {
                    config: cols[1].to_string(),
                    parses: match cols[2] {
                        "ok" => true,
                        "reject" => false,
                        other => panic!("parse column must be ok/reject, got {other}"),
                    },
                    outcome: cols[3].to_string(),
                },
            )
        })
        .collect()
}

fn corpus_config(kind: &str) -> Config {
    let mut c = Config::new("example.com", SWITCH, SEED)
        .with_user("user", "pw")
        .with_user("null-\u{0}-null", "pw")
        .with_user("j_user", "pw")
        .with_user("j.user", "pw")
        .with_user("watson", "pw");
    c.auth_register = kind == "auth";
    c.auth_invite = kind == "auth";
    c
}

/// The essentials that must survive print-then-parse.
fn essentials(m: &Message) -> String {
    match m {
        Message::Request(r) => format!(
            "{} {} | via={:?} | from={} | to={} | {} | {} | mf={:?} | body={}",
            r.method,
            r.uri,
            r.via,
            r.from,
            r.to,
            r.call_id,
            r.cseq,
            r.max_forwards,
            r.body.len()
        ),
        Message::Response(r) => format!(
            "{} | via={:?} | from={} | to={} | {} | {} | body={}",
            r.status,
            r.via,
            r.from,
            r.to,
            r.call_id,
            r.cseq,
            r.body.len()
        ),
    }
}

/// Parses, round-trips and feeds one file through an endpoint; returns a description of
/// any mismatch against the expectation.
fn check(path: &Path, expected: &Expectation) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read: {e}"))?;
    let parsed = parse(&bytes, Framing::Datagram);
    match (&parsed, expected.parses) {
        (Ok(m), true) => {
            let printed = match m {
                Message::Request(r) => r.to_bytes(),
                Message::Response(r) => r.to_bytes(),
            };
            let again = parse(&printed, Framing::Datagram)
                .map_err(|e| format!("printed form does not parse: {:?}", e.error))?;
            if essentials(m) != essentials(&again) {
                return Err(format!(
                    "round trip changed essentials:\n  {}\n  {}",
                    essentials(m),
                    essentials(&again)
                ));
            }
        }
        (Err(e), true) => return Err(format!("expected to parse, got {:?}", e.error)),
        (Ok(_), false) => return Err("expected a parse rejection, but it parsed".to_string()),
        (Err(_), false) => {}
    }
    let mut ep = Endpoint::new(corpus_config(&expected.config), t0());
    let now = t0();
    ep.handle_datagram(now, addr("198.51.100.7:5060"), Transport::Udp, &bytes);
    let sent = drain(&mut ep);
    let got: Vec<String> = statuses(&sent).iter().map(u16::to_string).collect();
    let got = if got.is_empty() {
        "drop".to_string()
    } else {
        got.join(",")
    };
    if got != expected.outcome {
        return Err(format!(
            "endpoint answered {got}, expected {}",
            expected.outcome
        ));
    }
    Ok(got)
}

fn run_corpus(dir: &Path, expectations: &Path) {
    let expectations = load_expectations(expectations);
    let mut failures = Vec::new();
    for (file, exp) in &expectations {
        let path = dir.join(file);
        // A panic anywhere is a failure too; catch it to report every file at once.
        let result = std::panic::catch_unwind(|| check(&path, exp))
            .unwrap_or_else(|_| Err("PANIC".to_string()));
        if let Err(e) = result {
            failures.push(format!("{file}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus files failed:\n{}",
        failures.len(),
        expectations.len(),
        failures.join("\n")
    );
}

#[test]
fn rfc4475_torture_messages() {
    let dir = fixtures().join("rfc4475");
    run_corpus(&dir, &dir.join("sofia-expected.tsv"));
    // Every .dat file of the corpus has an expectation.
    let listed = load_expectations(&dir.join("sofia-expected.tsv"));
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".dat") {
            assert!(listed.contains_key(&name), "{name} has no expectation");
        }
    }
}

#[test]
fn rfc5118_ipv6_messages() {
    let dir = fixtures().join("rfc5118");
    run_corpus(&dir.join("wire-crlf"), &dir.join("sofia-expected.tsv"));
}

#[test]
fn softphone_captures() {
    let dir = fixtures().join("softphones");
    run_corpus(&dir, &dir.join("sofia-expected.tsv"));
}
