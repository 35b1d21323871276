//! Fuzz-style robustness: random bytes and mutated corpus messages thrown at the parser,
//! the stream framer and a live endpoint. Nothing may panic, and every request that
//! fails to parse is either answered with a deliberate error status or dropped.
//! Deterministic (seeded xorshift) so a failure reproduces.

mod common;

use std::time::Duration;

use common::*;
use sofia_sip::{parse, Endpoint, Framing, StreamFramer, Transport};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for dir in [
        "rfc4475",
        "rfc5118/wire-crlf",
        "softphones/baresip-1.0.0",
        "softphones/linphonec-5.1.65",
        "softphones/zoiper",
    ] {
        for entry in std::fs::read_dir(fixtures().join(dir)).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            if path.is_file() && !path.extension().is_some_and(|e| e == "tsv" || e == "md") {
                out.push(std::fs::read(&path).expect("fixture"));
            }
        }
    }
    assert!(out.len() > 60, "corpus found");
    out
}

/// Interesting bytes for SIP grammars.
const SPECIAL: &[u8] = b"\r\n \t:;,<>\"\\%@[]=/?*0\x00\xff";

fn mutate(rng: &mut XorShift, base: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut m = base.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = m.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                m[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                m.insert(i, SPECIAL[rng.below(SPECIAL.len())]);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                m.remove(i);
            }
            3 => {
                let i = rng.below(len + 1);
                m.truncate(i);
            }
            4 if len > 0 => {
                // Duplicate a slice (repeated headers, doubled separators).
                let a = rng.below(len);
                let b = (a + rng.below(80)).min(len);
                let chunk = m[a..b].to_vec();
                let at = rng.below(m.len() + 1);
                m.splice(at..at, chunk);
            }
            5 => {
                // Splice in part of another message.
                let other = &others[rng.below(others.len())];
                let a = rng.below(other.len());
                let b = (a + rng.below(200)).min(other.len());
                let at = rng.below(m.len() + 1);
                m.splice(at..at, other[a..b].iter().copied());
            }
            6 if len > 0 => {
                let i = rng.below(len);
                m[i] = SPECIAL[rng.below(SPECIAL.len())];
            }
            _ => {
                // Change digits: Content-Length, CSeq, ports.
                if let Some(i) = m.iter().position(|b| b.is_ascii_digit()) {
                    let j = i + rng.below(m.len() - i);
                    if m[j].is_ascii_digit() {
                        m[j] = b'0' + rng.below(10) as u8;
                    }
                }
            }
        }
    }
    m
}

#[test]
fn random_and_mutated_input_never_panics() {
    let corpus = corpus();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut now = t0();
    let mut cfg = config();
    cfg.auth_invite = false;
    let mut ep = Endpoint::new(cfg, now);
    let mut answered = 0usize;
    for round in 0..20_000 {
        let input = if round % 5 == 0 {
            let n = rng.below(400);
            (0..n).map(|_| rng.next() as u8).collect()
        } else {
            let base = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, base, &corpus)
        };
        let _ = parse(&input, Framing::Datagram);
        let _ = parse(&input, Framing::Stream);
        let transport = if round % 3 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let source = addr(&format!(
            "198.51.100.{}:{}",
            1 + rng.below(200),
            1024 + rng.below(60000)
        ));
        ep.handle_datagram(now, source, transport, &input);
        // Drive the endpoint's state machines too: answer some calls, run timers.
        while let Some(ev) = ep.poll_event() {
            if let sofia_sip::Event::IncomingCall(ic) = ev {
                let _ = match rng.below(4) {
                    0 => ep.answer(
                        now,
                        ic.call,
                        sofia_sip::Body {
                            content_type: "application/sdp".into(),
                            bytes: b"v=0\r\n".to_vec(),
                        },
                    ),
                    1 => ep.reject(now, ic.call, 404),
                    2 => ep.ring(now, ic.call),
                    _ => ep.hangup(now, ic.call),
                };
            }
        }
        for t in drain(&mut ep) {
            answered += 1;
            // Whatever we send must itself be parseable SIP, except error responses that
            // echo malformed headers; those must at least have a valid status line.
            assert!(t.bytes.starts_with(b"SIP/2.0 ") || parse(&t.bytes, Framing::Datagram).is_ok());
        }
        let mut framer = StreamFramer::new(4096);
        let cut = rng.below(input.len() + 1);
        framer.push(&input[..cut]);
        let _ = framer.pop();
        framer.push(&input[cut..]);
        for _ in 0..4 {
            match framer.pop() {
                Ok(Some(sofia_sip::Frame::Message(m))) => {
                    ep.handle_message(now, source, Transport::Tcp, &m)
                }
                Ok(_) => break,
                Err(e) => {
                    ep.handle_framing_error(now, source, Transport::Tcp, &e);
                    break;
                }
            }
        }
        if round % 100 == 0 {
            now += Duration::from_millis(700);
            ep.handle_timeout(now);
            drain(&mut ep);
        }
    }
    assert!(
        answered > 1000,
        "the endpoint answered mutated requests ({answered})"
    );
    // Timers still run everything down: no transaction lives forever.
    now += Duration::from_secs(3600);
    ep.handle_timeout(now);
    now += Duration::from_secs(60);
    ep.handle_timeout(now);
    let (server, client) = ep.transaction_count();
    assert!(client == 0, "client transactions drained, {client} left");
    assert!(
        server <= ep.call_count(),
        "only unanswered INVITEs remain: {server}"
    );
}

#[test]
fn every_malformed_request_is_answered_or_dropped_deliberately() {
    let corpus = corpus();
    let mut rng = XorShift(12345);
    for _ in 0..5_000 {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, base, &corpus);
        if let Err(failure) = parse(&input, Framing::Datagram) {
            if let Some(status) = failure.status() {
                assert!(
                    matches!(status, 400 | 505 | 513),
                    "{status} for {:?}",
                    failure.error
                );
            }
        }
    }
}
