//! The SIP endpoint driven in virtual time by an arbitrary sequence of operations:
//! requests from one of four sources built from templates (INVITE, ACK, BYE, CANCEL,
//! REGISTER, OPTIONS, ...) that reuse a few Call-IDs, branches, tags and CSeqs so that
//! they form dialogs, answer digest challenges correctly when asked to, and are then
//! mutated byte-wise; softphone captures (mutated); raw datagrams; bytes over TCP
//! through a `StreamFramer` per source (framing errors go to
//! `handle_framing_error`), raw or templated; calls the endpoint places (`invite`,
//! `cancel`); responses to the requests the endpoint sent (INVITE, BYE, CANCEL,
//! OPTIONS) with any status, with or without To tag, Contact and SDP; steps of virtual
//! time and timer runs; and the call commands (ring, provisional, answer, reject,
//! hangup) on every call the endpoint announced or placed.
//!
//! Invariants after every operation: no panic; live server transactions at most
//! `max_server_transactions`; calls at most `max_calls` plus the calls we placed that
//! have not ended (the limit is for incoming INVITEs); every transmit is non-empty
//! with a well-formed start line, requests we send parse, and responses parse unless
//! they are stateless errors (400, 505, 513) echoing a malformed request; after
//! `handle_timeout(now)`, `poll_timeout()` is in the future.
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sofia_sip::auth::{digest_response, DigestAlgorithm};
use sofia_sip::{
    parse, Body, CallHandle, Config, Endpoint, Event, Framing, Message, OutgoingInvite,
    StreamFramer, Transmit, Transport,
};

const SWITCH: &str = "192.0.2.1";
const SOURCES: [&str; 4] = [
    "192.0.2.10:5060",
    "192.0.2.11:5062",
    "[2001:db8::10]:5060",
    "198.51.100.9:40000",
];
const USERS: [(&str, &str); 3] = [
    ("alice", "wonderland"),
    ("1000", "secret1000"),
    ("mallory", "guess"),
];
const MAX_SERVER_TXS: [usize; 3] = [4, 16, 64];
const MAX_CALLS: [usize; 3] = [1, 2, 4];

const SDP_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

const CAPTURES: [&[u8]; 8] = [
    include_bytes!("../../fixtures/softphones/baresip-1.0.0/002-INVITE.sip"),
    include_bytes!("../../fixtures/softphones/baresip-1.0.0/001-REGISTER.sip"),
    include_bytes!("../../fixtures/softphones/baresip-1.0.0/004-ACK.sip"),
    include_bytes!("../../fixtures/softphones/baresip-1.0.0/007-BYE.sip"),
    include_bytes!("../../fixtures/softphones/zoiper/zoiper_v2.10.19.5_INVITE.sip"),
    include_bytes!("../../fixtures/softphones/zoiper/zoiper_v2.10.19.5_CANCEL.sip"),
    include_bytes!("../../fixtures/softphones/zoiper/zoiper_win2.38_SUBSCRIBE_mwi.sip"),
    include_bytes!("../../fixtures/softphones/linphonec-5.1.65/003-INVITE.sip"),
];

#[derive(Debug, Arbitrary, Clone, Copy, PartialEq)]
enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Subscribe,
    Message,
    Update,
    Prack,
    Notify,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Register => "REGISTER",
            Self::Options => "OPTIONS",
            Self::Info => "INFO",
            Self::Subscribe => "SUBSCRIBE",
            Self::Message => "MESSAGE",
            Self::Update => "UPDATE",
            Self::Prack => "PRACK",
            Self::Notify => "NOTIFY",
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Overwrite { at: u16, byte: u8 },
    Insert { at: u16, bytes: Vec<u8> },
    Remove { at: u16, len: u8 },
    Truncate { at: u16 },
}

#[derive(Debug, Arbitrary)]
enum BodyKind {
    None,
    Offer,
    Garbage(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Req {
    source: u8,
    method: Method,
    /// Which of four dialogs (Call-ID, From tag).
    call: u8,
    /// Branch number; `None` reuses the branch of the dialog's last INVITE (CANCEL,
    /// ACK of a non-2xx, retransmissions).
    branch: Option<u8>,
    /// CSeq number; `None` reuses the dialog's last INVITE CSeq (ACK, CANCEL).
    cseq: Option<u16>,
    /// Put the To tag the endpoint gave this dialog.
    to_tag: bool,
    /// Which user is in From and the Request-URI.
    user: u8,
    body: BodyKind,
    contact: bool,
    expires: Option<u16>,
    /// Answer the last challenge sent to this source (`Some(false)`: wrong password).
    auth: Option<bool>,
    edits: Vec<Edit>,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Request(Req),
    Capture {
        source: u8,
        which: u8,
        edits: Vec<Edit>,
    },
    Raw {
        source: u8,
        bytes: Vec<u8>,
    },
    /// Bytes on a TCP connection from this source.
    Stream {
        source: u8,
        bytes: Vec<u8>,
    },
    /// A templated request on a TCP connection.
    StreamRequest(Req),
    /// Answers a request the endpoint sent (most recent first).
    Respond {
        back: u8,
        status: u16,
        to_tag: bool,
        contact: bool,
        sdp: bool,
    },
    /// Places a call to one of the sources.
    Invite {
        dest: u8,
        sdp: bool,
        display: Option<String>,
        asserted: bool,
    },
    Cancel(u8),
    AdvanceMs(u16),
    AdvanceSecs(u8),
    Timeout,
    /// Jumps to the endpoint's next deadline and fires it.
    NextDeadline,
    Ring(u8),
    Provisional(u8, u16),
    Answer(u8, bool),
    Reject(u8, u16),
    Hangup(u8),
    Options(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    config: u8,
    limits: u8,
    ops: Vec<Op>,
}

#[derive(Default, Clone)]
struct Dialog {
    invite_branch: u32,
    invite_cseq: u32,
    to_tag: Option<String>,
}

struct Harness {
    ep: Endpoint,
    now: Instant,
    max_server: usize,
    max_calls: usize,
    dialogs: HashMap<String, Dialog>,
    /// Last digest challenge (realm, nonce, algorithm) sent to each source.
    challenges: HashMap<SocketAddr, (String, String, DigestAlgorithm)>,
    nc: u32,
    calls: Vec<CallHandle>,
    /// Calls we placed that have not ended.
    outgoing: HashSet<CallHandle>,
    /// Requests the endpoint sent, for `Op::Respond`.
    sent_requests: Vec<(SocketAddr, Vec<u8>)>,
    framers: HashMap<SocketAddr, StreamFramer>,
}

fn source(i: u8) -> SocketAddr {
    SOURCES[usize::from(i) % SOURCES.len()]
        .parse()
        .expect("address literal")
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits.iter().take(8) {
        let at = |a: u16, len: usize| usize::from(a) % (len + 1);
        match e {
            Edit::Overwrite { at: a, byte } => {
                if !bytes.is_empty() {
                    let i = usize::from(*a) % bytes.len();
                    bytes[i] = *byte;
                }
            }
            Edit::Insert { at: a, bytes: ins } => {
                let i = at(*a, bytes.len());
                bytes.splice(i..i, ins.iter().copied().take(64));
            }
            Edit::Remove { at: a, len } => {
                let i = at(*a, bytes.len());
                let j = (i + usize::from(*len)).min(bytes.len());
                bytes.drain(i..j);
            }
            Edit::Truncate { at: a } => {
                let i = at(*a, bytes.len());
                bytes.truncate(i);
            }
        }
    }
    bytes
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn challenge_param(www: &str, name: &str) -> Option<String> {
    let start = www.find(&format!("{name}="))? + name.len() + 1;
    let rest = &www[start..];
    Some(match rest.strip_prefix('"') {
        Some(r) => r[..r.find('"')?].to_string(),
        None => rest.split([',', ' ']).next().unwrap_or("").to_string(),
    })
}

impl Harness {
    fn new(input_config: u8, limits: u8) -> Self {
        let now = Instant::now();
        let mut config = Config::new("sofia.test", SWITCH, [42; 32]);
        for (u, p) in &USERS[..2] {
            config = config.with_user(u, p);
        }
        config.auth_register = input_config & 1 != 0;
        config.auth_invite = input_config & 2 != 0;
        config.max_calls_per_user = if input_config & 4 != 0 { 1 } else { usize::MAX };
        config.max_ringing = if input_config & 8 != 0 {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(180)
        };
        config.max_message_size = if input_config & 16 != 0 {
            1_500
        } else {
            65_535
        };
        if input_config & 32 != 0 {
            config.auth.algorithms = vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5];
        }
        config.max_server_transactions = MAX_SERVER_TXS[usize::from(limits) % 3];
        config.max_calls = MAX_CALLS[usize::from(limits / 3) % 3];
        let max_server = config.max_server_transactions;
        let max_calls = config.max_calls;
        Self {
            ep: Endpoint::new(config, now),
            now,
            max_server,
            max_calls,
            dialogs: HashMap::new(),
            challenges: HashMap::new(),
            nc: 0,
            calls: Vec::new(),
            outgoing: HashSet::new(),
            sent_requests: Vec::new(),
            framers: HashMap::new(),
        }
    }

    fn build(&mut self, r: &Req) -> (SocketAddr, Vec<u8>) {
        let from = source(r.source);
        let call_id = format!("fz-{}@fuzz", r.call % 4);
        let from_tag = format!("ft-{}", r.call % 4);
        let d = self.dialogs.entry(call_id.clone()).or_default().clone();
        let branch = match r.branch {
            Some(b) => u32::from(b),
            None => d.invite_branch,
        };
        let cseq = r.cseq.map_or(d.invite_cseq, u32::from);
        if r.method == Method::Invite {
            let d = self.dialogs.get_mut(&call_id).expect("entry exists");
            d.invite_branch = branch;
            d.invite_cseq = cseq;
        }
        let (user, password) = USERS[usize::from(r.user) % USERS.len()];
        let method = r.method.name();
        let uri = if r.method == Method::Register {
            format!("sip:{SWITCH}")
        } else {
            format!("sip:{user}@{SWITCH}")
        };
        let to_tag = match (&d.to_tag, r.to_tag) {
            (Some(t), true) => format!(";tag={t}"),
            _ => String::new(),
        };
        let mut s = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-fz-{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@{SWITCH}>;tag={from_tag}\r\nTo: <sip:{user}@{SWITCH}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
        );
        if r.contact {
            s.push_str(&format!("Contact: <sip:{user}@{from}>\r\n"));
        }
        if let Some(e) = r.expires {
            s.push_str(&format!("Expires: {}\r\n", e % 4000));
        }
        if let Some(right) = r.auth {
            if let Some((realm, nonce, alg)) = self.challenges.get(&from).cloned() {
                self.nc += 1;
                let nc = format!("{:08x}", self.nc);
                let password = if right { password } else { "wrong" };
                let resp = digest_response(
                    alg, user, &realm, password, method, &uri, &nonce, &nc, "c0ffee", "auth",
                );
                s.push_str(&format!(
                    "Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}, cnonce=\"c0ffee\", qop=auth, nc={nc}\r\n",
                    alg.token()
                ));
            }
        }
        let body: Vec<u8> = match &r.body {
            BodyKind::None => Vec::new(),
            BodyKind::Offer => SDP_OFFER.as_bytes().to_vec(),
            BodyKind::Garbage(g) => g.iter().copied().take(512).collect(),
        };
        if !body.is_empty() {
            s.push_str("Content-Type: application/sdp\r\n");
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = s.into_bytes();
        bytes.extend_from_slice(&body);
        (from, apply(bytes, &r.edits))
    }

    /// Checks and records everything the endpoint sent.
    fn drain(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            self.check_transmit(&t);
        }
        while let Some(e) = self.ep.poll_event() {
            match e {
                Event::IncomingCall(c) if self.calls.len() < 32 => self.calls.push(c.call),
                Event::CallFailed { call, .. }
                | Event::CallEnded { call, .. }
                | Event::CallCancelled { call } => {
                    self.outgoing.remove(&call);
                }
                _ => {}
            }
        }
    }

    fn check_transmit(&mut self, t: &Transmit) {
        assert!(!t.bytes.is_empty(), "empty transmit");
        let parsed = parse(&t.bytes, Framing::Datagram);
        if let Some(rest) = t.bytes.strip_prefix(b"SIP/2.0 ") {
            let status: u16 = rest
                .get(..3)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| {
                    panic!("bad status line: {:?}", String::from_utf8_lossy(&t.bytes))
                });
            assert!((100..700).contains(&status), "status {status}");
            match parsed {
                Ok(Message::Response(resp)) => {
                    let text = String::from_utf8_lossy(&t.bytes);
                    if let Some(d) = self.dialogs.get_mut(resp.call_id.as_str()) {
                        if let Some(tag) = resp.to.tag() {
                            d.to_tag = Some(tag.to_string());
                        }
                    }
                    // A challenge (the application may also reject with a bare 401).
                    let www = header(&text, "WWW-Authenticate")
                        .or_else(|| header(&text, "Proxy-Authenticate"));
                    if let Some(www) = www {
                        assert!(matches!(status, 401 | 407), "{status} with a challenge");
                        let realm = challenge_param(www, "realm").expect("realm");
                        let nonce = challenge_param(www, "nonce").expect("nonce");
                        let alg = if www.contains("SHA-256") {
                            DigestAlgorithm::Sha256
                        } else {
                            DigestAlgorithm::Md5
                        };
                        self.challenges.insert(t.destination, (realm, nonce, alg));
                    }
                }
                Ok(Message::Request(_)) => panic!("a status line parsed as a request"),
                Err(e) => assert!(
                    matches!(status, 400 | 505 | 513),
                    "our {status} response does not parse ({:?}):\n{}",
                    e.error,
                    String::from_utf8_lossy(&t.bytes)
                ),
            }
        } else {
            match parsed {
                Ok(Message::Request(_)) => {
                    if self.sent_requests.len() >= 16 {
                        self.sent_requests.remove(0);
                    }
                    self.sent_requests.push((t.destination, t.bytes.clone()));
                }
                other => panic!(
                    "we sent something that is not a request: {other:?}\n{}",
                    String::from_utf8_lossy(&t.bytes)
                ),
            }
        }
    }

    fn respond(
        &mut self,
        back: u8,
        status: u16,
        to_tag: bool,
        contact: bool,
        sdp: bool,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let n = self.sent_requests.len();
        if n == 0 {
            return None;
        }
        let (peer, req) = self.sent_requests[n - 1 - usize::from(back) % n].clone();
        let Ok(Message::Request(req)) = parse(&req, Framing::Datagram) else {
            return None;
        };
        let status = 100 + status % 600;
        let mut s = format!("SIP/2.0 {status} Fuzz\r\n");
        for v in req.headers.all("Via") {
            s.push_str(&format!("Via: {v}\r\n"));
        }
        let to = req.headers.first("To").unwrap_or_default();
        let tag = if to_tag && req.to.tag().is_none() {
            ";tag=fz-remote"
        } else {
            ""
        };
        s.push_str(&format!(
            "From: {}\r\nTo: {to}{tag}\r\nCall-ID: {}\r\nCSeq: {}\r\n",
            req.headers.first("From").unwrap_or_default(),
            req.call_id,
            req.cseq
        ));
        if contact {
            s.push_str(&format!("Contact: <sip:alice@{peer}>\r\n"));
        }
        if sdp {
            s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_OFFER}",
                SDP_OFFER.len()
            ));
        } else {
            s.push_str("Content-Length: 0\r\n\r\n");
        }
        Some((peer, s.into_bytes()))
    }

    fn stream(&mut self, from: SocketAddr, bytes: &[u8]) {
        let framer = self
            .framers
            .entry(from)
            .or_insert_with(|| StreamFramer::new(8_192));
        framer.push(bytes);
        let mut frames = Vec::new();
        let mut error = None;
        loop {
            match framer.pop() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if error.is_some() {
            // The shell closes the connection.
            self.framers.remove(&from);
        }
        for f in frames {
            if let sofia_sip::Frame::Message(m) = f {
                self.ep.handle_message(self.now, from, Transport::Tcp, &m);
            }
        }
        if let Some(e) = error {
            self.ep
                .handle_framing_error(self.now, from, Transport::Tcp, &e);
        }
    }

    fn call(&self, i: u8) -> Option<CallHandle> {
        (!self.calls.is_empty()).then(|| self.calls[usize::from(i) % self.calls.len()])
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Request(r) => {
                let (from, bytes) = self.build(&r);
                self.ep
                    .handle_datagram(self.now, from, Transport::Udp, &bytes);
            }
            Op::Capture {
                source: s,
                which,
                edits,
            } => {
                let bytes = apply(
                    CAPTURES[usize::from(which) % CAPTURES.len()].to_vec(),
                    &edits,
                );
                self.ep
                    .handle_datagram(self.now, source(s), Transport::Udp, &bytes);
            }
            Op::Raw { source: s, bytes } => {
                self.ep
                    .handle_datagram(self.now, source(s), Transport::Udp, &bytes);
            }
            Op::Stream { source: s, bytes } => self.stream(source(s), &bytes),
            Op::StreamRequest(r) => {
                let (from, bytes) = self.build(&r);
                self.stream(from, &bytes);
            }
            Op::Respond {
                back,
                status,
                to_tag,
                contact,
                sdp,
            } => {
                if let Some((from, bytes)) = self.respond(back, status, to_tag, contact, sdp) {
                    self.ep
                        .handle_datagram(self.now, from, Transport::Udp, &bytes);
                }
            }
            Op::AdvanceMs(ms) => self.now += Duration::from_millis(u64::from(ms)),
            Op::AdvanceSecs(s) => self.now += Duration::from_secs(u64::from(s)),
            Op::Timeout => self.timeout(),
            Op::NextDeadline => {
                if let Some(at) = self.ep.poll_timeout() {
                    self.now = self.now.max(at);
                }
                self.timeout();
            }
            Op::Ring(i) => {
                if let Some(c) = self.call(i) {
                    let _ = self.ep.ring(self.now, c);
                }
            }
            Op::Provisional(i, status) => {
                if let Some(c) = self.call(i) {
                    let _ = self.ep.provisional(self.now, c, status % 700);
                }
            }
            Op::Answer(i, with_sdp) => {
                if let Some(c) = self.call(i) {
                    let body = Body {
                        content_type: "application/sdp".into(),
                        bytes: if with_sdp {
                            SDP_OFFER.as_bytes().to_vec()
                        } else {
                            Vec::new()
                        },
                    };
                    let _ = self.ep.answer(self.now, c, body);
                }
            }
            Op::Reject(i, status) => {
                if let Some(c) = self.call(i) {
                    let _ = self.ep.reject(self.now, c, status % 700);
                }
            }
            Op::Invite {
                dest,
                sdp,
                display,
                asserted,
            } => {
                let to = source(dest);
                let out = OutgoingInvite {
                    destination: to,
                    transport: Transport::Udp,
                    request_uri: format!("sip:alice@{to}"),
                    to: "sip:alice@sofia.test".into(),
                    from_user: "1000".into(),
                    from_display: display.map(|d| d.chars().take(32).collect()),
                    asserted_identity: asserted.then(|| "<sip:1000@sofia.test>".into()),
                    body: sdp.then(|| Body {
                        content_type: "application/sdp".into(),
                        bytes: SDP_OFFER.as_bytes().to_vec(),
                    }),
                };
                if let Ok(call) = self.ep.invite(self.now, out) {
                    self.outgoing.insert(call);
                    if self.calls.len() < 32 {
                        self.calls.push(call);
                    }
                }
            }
            Op::Cancel(i) => {
                if let Some(c) = self.call(i) {
                    let _ = self.ep.cancel(self.now, c);
                }
            }
            Op::Hangup(i) => {
                if let Some(c) = self.call(i) {
                    let _ = self.ep.hangup(self.now, c);
                }
            }
            Op::Options(s) => {
                let to = source(s);
                let uri = format!("sip:{to}");
                let _ = self.ep.send_options(self.now, to, Transport::Udp, &uri);
            }
        }
        self.drain();
        let (server, _client) = self.ep.transaction_count();
        assert!(
            server <= self.max_server,
            "{server} server transactions, limit {}",
            self.max_server
        );
        assert!(
            self.ep.call_count() <= self.max_calls + self.outgoing.len(),
            "{} calls, limit {} plus {} placed",
            self.ep.call_count(),
            self.max_calls,
            self.outgoing.len()
        );
    }

    fn timeout(&mut self) {
        self.ep.handle_timeout(self.now);
        self.drain();
        if let Some(at) = self.ep.poll_timeout() {
            assert!(
                at > self.now,
                "poll_timeout at or before now after handle_timeout"
            );
        }
    }
}

fuzz_target!(|input: Input| {
    let mut h = Harness::new(input.config, input.limits);
    for op in input.ops.into_iter().take(256) {
        h.step(op);
    }
});
