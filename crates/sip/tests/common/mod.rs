//! Shared helpers for the integration tests: endpoint configurations, a clock origin,
//! and a tiny scripted UAC that builds requests and computes digest answers.
#![allow(dead_code)] // reason: each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sofia_sip::auth::{digest_response, DigestAlgorithm};
use sofia_sip::{Config, Endpoint, Event, Message, Transmit, Transport};

pub const SEED: [u8; 32] = [42; 32];
pub const SWITCH: &str = "192.0.2.1";

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn config() -> Config {
    Config::new("sofia.test", SWITCH, SEED)
        .with_user("alice", "wonderland")
        .with_user("1000", "secret1000")
}

/// The test clock origin; all other times are offsets from it.
#[allow(clippy::disallowed_methods)] // reason: tests need an Instant to offset from
pub fn t0() -> Instant {
    Instant::now()
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address literal")
}

pub fn drain(ep: &mut Endpoint) -> Vec<Transmit> {
    std::iter::from_fn(|| ep.poll_transmit()).collect()
}

pub fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// Parses a transmit as a response and returns it.
pub fn response(t: &Transmit) -> sofia_sip::Response {
    match sofia_sip::parse(&t.bytes, sofia_sip::Framing::Datagram) {
        Ok(Message::Response(r)) => r,
        other => panic!(
            "expected a response, got {other:?}\n{}",
            String::from_utf8_lossy(&t.bytes)
        ),
    }
}

pub fn request(t: &Transmit) -> sofia_sip::Request {
    match sofia_sip::parse(&t.bytes, sofia_sip::Framing::Datagram) {
        Ok(Message::Request(r)) => r,
        other => panic!(
            "expected a request, got {other:?}\n{}",
            String::from_utf8_lossy(&t.bytes)
        ),
    }
}

/// Status codes of the responses among `ts`, read from the status line only (error
/// responses echo the malformed headers they answer, so they need not parse).
pub fn statuses(ts: &[Transmit]) -> Vec<u16> {
    ts.iter()
        .filter_map(|t| {
            let rest = t.bytes.strip_prefix(b"SIP/2.0 ")?;
            std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
        })
        .collect()
}

/// Runs the endpoint's timers up to `until`, collecting what it sent on the way.
pub fn run_until(
    ep: &mut Endpoint,
    now: &mut Instant,
    until: Instant,
) -> Vec<(Duration, Transmit)> {
    let start = *now;
    let mut out = Vec::new();
    while let Some(at) = ep.poll_timeout() {
        if at > until {
            break;
        }
        *now = at.max(*now);
        ep.handle_timeout(*now);
        for t in drain(ep) {
            out.push((*now - start, t));
        }
    }
    *now = until;
    ep.handle_timeout(until);
    for t in drain(ep) {
        out.push((until - start, t));
    }
    out
}

/// A response from a called phone to `req`, with `to_tag` (added unless the request
/// already has one) and extra header lines.
pub fn reply(
    req: &sofia_sip::Request,
    status: u16,
    to_tag: Option<&str>,
    extra: &[&str],
    body: &[u8],
) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {status} Whatever\r\n");
    for v in req.headers.all("Via") {
        s.push_str(&format!("Via: {v}\r\n"));
    }
    s.push_str(&format!("From: {}\r\n", req.headers.first("From").unwrap()));
    let to = req.headers.first("To").unwrap();
    match to_tag {
        Some(tag) if req.to.tag().is_none() => s.push_str(&format!("To: {to};tag={tag}\r\n")),
        _ => s.push_str(&format!("To: {to}\r\n")),
    }
    s.push_str(&format!("Call-ID: {}\r\n", req.call_id));
    s.push_str(&format!("CSeq: {} {}\r\n", req.cseq.seq, req.cseq.method));
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    if !body.is_empty() {
        s.push_str("Content-Type: application/sdp\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut b = s.into_bytes();
    b.extend_from_slice(body);
    b
}

/// A scripted user agent: builds requests for one phone.
pub struct Uac {
    pub user: String,
    pub password: String,
    pub addr: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub branch_counter: u32,
    pub nc: u32,
}

impl Uac {
    pub fn new(user: &str, password: &str, addr: &str) -> Self {
        Self {
            user: user.to_string(),
            password: password.to_string(),
            addr: self::addr(addr),
            call_id: format!("{user}-call-1"),
            from_tag: format!("{user}-tag"),
            cseq: 1,
            branch_counter: 0,
            nc: 0,
        }
    }

    pub fn branch(&mut self) -> String {
        self.branch_counter += 1;
        format!("z9hG4bK-{}-{}", self.user, self.branch_counter)
    }

    /// Builds a request; `extra` are additional header lines (without CRLF).
    pub fn request(
        &mut self,
        method: &str,
        uri: &str,
        to: &str,
        extra: &[String],
        body: &[u8],
    ) -> Vec<u8> {
        let branch = self.branch();
        self.request_with_branch(method, uri, to, extra, body, &branch)
    }

    pub fn request_with_branch(
        &mut self,
        method: &str,
        uri: &str,
        to: &str,
        extra: &[String],
        body: &[u8],
        branch: &str,
    ) -> Vec<u8> {
        let mut s = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{}@{SWITCH}>;tag={}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            self.addr, self.user, self.from_tag, self.call_id, self.cseq
        );
        for e in extra {
            s.push_str(e);
            s.push_str("\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut b = s.into_bytes();
        b.extend_from_slice(body);
        b
    }

    /// The Authorization header answering a challenge response.
    pub fn authorization(
        &mut self,
        challenge: &sofia_sip::Response,
        method: &str,
        uri: &str,
    ) -> String {
        let www = challenge
            .headers
            .first("WWW-Authenticate")
            .expect("challenge carries WWW-Authenticate");
        let param = |name: &str| -> String {
            let start = www.find(&format!("{name}=")).expect("challenge param") + name.len() + 1;
            let rest = &www[start..];
            if let Some(r) = rest.strip_prefix('"') {
                r[..r.find('"').expect("closing quote")].to_string()
            } else {
                rest.split([',', ' ']).next().unwrap_or("").to_string()
            }
        };
        let realm = param("realm");
        let nonce = param("nonce");
        let alg = if www.contains("SHA-256") {
            DigestAlgorithm::Sha256
        } else {
            DigestAlgorithm::Md5
        };
        self.authorization_for(&realm, &nonce, alg, method, uri)
    }

    pub fn authorization_for(
        &mut self,
        realm: &str,
        nonce: &str,
        alg: DigestAlgorithm,
        method: &str,
        uri: &str,
    ) -> String {
        self.nc += 1;
        let nc = format!("{:08x}", self.nc);
        let cnonce = "0a4f113b";
        let resp = digest_response(
            alg,
            &self.user,
            realm,
            &self.password,
            method,
            uri,
            nonce,
            &nc,
            cnonce,
            "auth",
        );
        format!(
            "Authorization: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, cnonce=\"{cnonce}\", qop=auth, nc={nc}",
            self.user,
            alg.token()
        )
    }
}

pub fn udp() -> Transport {
    Transport::Udp
}
