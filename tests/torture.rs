//! Torture over the wire (issue #10): every RFC 4475 and RFC 5118 message, sent over UDP
//! and over TCP to a running `serve` on loopback, gets the answer its expected handling
//! says, and the switch keeps answering (an OPTIONS after each message gets 200).
//!
//! The expected handling is the sans-IO corpus's (crates/sip/tests/corpus.rs): the same
//! `sofia-expected.tsv` files are read here, not copied. What differs on the wire is
//! translated by one rule, [`wire_expectation`]; the only bytes the test changes are the
//! top Via's port over UDP ([`with_top_via_port`]). No message is left out: none is too
//! large for a datagram (the largest, longreq.dat, is 3.5 KB) and each has an
//! expectation on both transports.

mod common;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, http_get, Server, USERS};
use sofia_sip::{parse, Framing, Message, Method, Request};

/// How long a message that must be answered may take (loopback: milliseconds).
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// How long the test listens to conclude that nothing comes back.
const SILENCE: Duration = Duration::from_millis(300);
/// How long the switch may take to close a connection after a framing error.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the liveness OPTIONS may take.
const PROBE_WAIT: Duration = Duration::from_secs(3);

// ----- the corpus and its expectations -------------------------------------------------

/// One corpus message with its row of `sofia-expected.tsv` (file, config, parse, outcome:
/// the format crates/sip/tests/corpus.rs reads).
struct Case {
    name: String,
    bytes: Vec<u8>,
    /// `open` (no digest challenge) or `auth` (REGISTER and INVITE challenged).
    config: String,
    /// Whether the parser must accept it.
    parses: bool,
    /// What the sans-IO endpoint sends: comma-separated statuses, or `drop`.
    outcome: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn load_expectations(path: &Path) -> BTreeMap<String, (String, bool, String)> {
    let text = std::fs::read_to_string(path).expect("expectations file exists");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 4, "bad expectation line: {l}");
            let parses = match cols[2] {
                "ok" => true,
                "reject" => false,
                other => panic!("parse column must be ok/reject, got {other}"),
            };
            (
                cols[0].to_string(),
                (cols[1].to_string(), parses, cols[3].to_string()),
            )
        })
        .collect()
}

/// Every message of both corpora, each with its expectation; a message file without one
/// (or an expectation without its file) fails here rather than being skipped.
fn corpus() -> Vec<Case> {
    let root = fixtures();
    let corpora = [
        (
            root.join("rfc4475"),
            root.join("rfc4475/sofia-expected.tsv"),
        ),
        (
            root.join("rfc5118/wire-crlf"),
            root.join("rfc5118/sofia-expected.tsv"),
        ),
    ];
    let mut cases = Vec::new();
    for (dir, table) in corpora {
        let expectations = load_expectations(&table);
        for entry in std::fs::read_dir(&dir).expect("fixture dir") {
            let name = entry.expect("dir entry").file_name();
            let name = name.to_string_lossy();
            // index.tsv and sofia-expected.tsv describe the messages; the rest are messages.
            if !name.ends_with(".tsv") {
                assert!(
                    expectations.contains_key(name.as_ref()),
                    "{}/{name} has no expectation in {}",
                    dir.display(),
                    table.display()
                );
            }
        }
        for (name, (config, parses, outcome)) in expectations {
            let bytes = std::fs::read(dir.join(&name))
                .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()));
            cases.push(Case {
                name,
                bytes,
                config,
                parses,
                outcome,
            });
        }
    }
    cases
}

// ----- what the wire must show -----------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What becomes of the TCP connection a message was sent on (always `KeptOpen` on UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    /// It stays usable: the liveness OPTIONS goes on it.
    KeptOpen,
    /// The switch closes it after answering: the framing is unrecoverable (RFC 3261
    /// 18.3, RFC 4475 3.1.2.3 and 3.3.9).
    Closed,
    /// The switch waits for the rest of a message that never comes (it would close the
    /// connection after 30 s); the test gives the connection up and opens a new one.
    Waiting,
}

/// The answer to one message on one transport.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wire {
    /// Status codes of the responses, in order; empty: nothing comes back. (A request
    /// from the switch would show as 0.)
    statuses: Vec<u16>,
    connection: Connection,
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.statuses.is_empty() {
            f.write_str("drop")?;
        } else {
            let codes: Vec<String> = self.statuses.iter().map(u16::to_string).collect();
            f.write_str(&codes.join(","))?;
        }
        match self.connection {
            Connection::KeptOpen => Ok(()),
            Connection::Closed => f.write_str(" (connection closed)"),
            Connection::Waiting => f.write_str(" (connection left waiting)"),
        }
    }
}

/// THE MAPPING RULE: what the switch must answer on the wire, given the sans-IO
/// expectation. Two things differ from the corpus test's endpoint; everything else
/// (the Request-URIs and hosts naming other hosts, which a UAS and registrar answers
/// anyway; the Via hosts, see [`with_top_via_port`]) does not change the answer.
///
/// 1. Authentication ([`after_authentication`]). `serve` runs the default profile, which
///    challenges REGISTER and INVITE (the corpus's `auth` config); most rows were judged
///    in the `open` config. A message the endpoint refuses before it looks at
///    credentials keeps its answer; a REGISTER or out-of-dialog INVITE that would get
///    past that point is challenged instead: 401.
/// 2. Stream framing, over TCP only ([`over_a_stream`]). The corpus cuts messages as
///    datagrams; a stream is cut by Content-Length (RFC 3261 18.3).
///
/// Where to listen: over UDP the answer goes to the top Via's port (the test makes it
/// its socket's, [`with_top_via_port`]), over TCP back on the connection. "drop" (a
/// response, an unparseable response, garbage) is judged by [`SILENCE`] with nothing
/// coming back; then, after every message, an OPTIONS must get 200 ([`probe`]), and
/// anything else arriving meanwhile counts as a late answer to the message.
fn wire_expectation(case: &Case, transport: Transport) -> Wire {
    let corpus: Vec<u16> = match case.outcome.as_str() {
        "drop" => Vec::new(),
        list => list
            .split(',')
            .map(|s| s.parse().expect("outcome lists status codes"))
            .collect(),
    };
    let statuses = after_authentication(case, corpus);
    match transport {
        Transport::Udp => Wire {
            statuses,
            connection: Connection::KeptOpen,
        },
        Transport::Tcp => over_a_stream(case, statuses),
    }
}

/// Rule 1. The endpoint applies RFC 3261 8.2 in order: 416 (scheme), 501 (method), 420
/// (Require), 415/406 (INVITE body and Accept), 481 (in-dialog request without a
/// dialog), and, for REGISTER, 400 when To is not a SIP/SIPS AOR; all of those come
/// before the digest step and stand. Parse rejections (400, 505, drop) come before
/// anything and stand. What comes after the digest step (an INVITE handed to the
/// application, `100`; a REGISTER's binding answer, 200/403/404/423, or the registrar's
/// 400 for a bad Contact) becomes the challenge: 401, sent statelessly, nothing else.
fn after_authentication(case: &Case, corpus: Vec<u16>) -> Vec<u16> {
    if case.config == "auth" || !case.parses {
        return corpus;
    }
    let Ok(Message::Request(req)) = parse(&case.bytes, Framing::Datagram) else {
        return corpus;
    };
    if reaches_digest(&req, &corpus) {
        vec![401]
    } else {
        corpus
    }
}

/// Whether, in the `open` config, the endpoint got past the point where the default
/// profile asks for credentials (see [`after_authentication`]).
fn reaches_digest(req: &Request, corpus: &[u16]) -> bool {
    match (&req.method, corpus) {
        (Method::Invite, [100]) => req.to.tag().is_none(),
        (Method::Register, [200 | 403 | 404 | 423]) => true,
        (Method::Register, [400]) => req.to.uri.as_sip().is_some(),
        _ => false,
    }
}

/// Rule 2, TCP. The corpus's answer holds for a message that is exactly one stream
/// message; otherwise:
/// - no empty line ends the header section (baddn.dat as archived; the fixed copy is
///   baddn.fixed-crlf.dat.variant), or Content-Length claims more than follows
///   (clerr.dat: RFC 4475 3.1.2.2 says "over TCP: wait for more data"): the message
///   never ends, nothing is answered, the connection waits;
/// - Content-Length is unusable (negative, ncl.dat; two values, mcl01.dat): a framing
///   error, 400 and the switch closes the connection (RFC 4475 3.1.2.3, 3.3.9);
/// - octets follow the Content-Length: on a stream they are the next message, not junk
///   to ignore as in a datagram (RFC 4475 3.1.1.8 is about UDP), and each gets its own
///   answer ([`next_message_answer`]). dblreq.dat's trailing INVITE is a whole request
///   (challenged), and its Content-Length (150) stops 5 octets short of its SDP, so
///   `C` CRLF CRLF is one more "message", garbage with no request line (dropped).
///   inv2543.dat has no Content-Length (RFC 2543 syntax; over TCP it counts as 0, so
///   the INVITE ends at its header section, which changes nothing before the digest
///   step) and its SDP is left as the start of a message that never ends: the
///   connection waits.
fn over_a_stream(case: &Case, mut statuses: Vec<u16>) -> Wire {
    let wire = |statuses, connection| Wire {
        statuses,
        connection,
    };
    let mut rest = match stream_cut(&case.bytes) {
        Cut::Incomplete => return wire(Vec::new(), Connection::Waiting),
        Cut::BadLength => return wire(vec![400], Connection::Closed),
        Cut::Complete(end) => trim_leading_crlf(&case.bytes[end..]),
    };
    // Bounded: each round consumes at least the 4 octets of an empty line.
    while !rest.is_empty() {
        match stream_cut(rest) {
            Cut::Complete(end) => {
                statuses.extend(next_message_answer(case, &rest[..end]));
                rest = trim_leading_crlf(&rest[end..]);
            }
            Cut::Incomplete => return wire(statuses, Connection::Waiting),
            Cut::BadLength => panic!(
                "{}: no wire rule for a bad Content-Length in the octets after the message",
                case.name
            ),
        }
    }
    wire(statuses, Connection::KeptOpen)
}

/// The answer to a message that follows a corpus message on a stream: a REGISTER or
/// out-of-dialog INVITE without credentials is challenged (401), as any is; octets
/// with no request line are dropped, as the corpus drops such a datagram. Nothing else
/// occurs in the corpus; a new case must be decided here.
fn next_message_answer(case: &Case, bytes: &[u8]) -> Option<u16> {
    match parse(bytes, Framing::Stream) {
        Ok(Message::Request(req))
            if matches!(req.method, Method::Invite | Method::Register)
                && req.to.tag().is_none() =>
        {
            Some(401)
        }
        Err(failure) if failure.status().is_none() => None,
        other => panic!(
            "{}: no wire rule for a message after it on a stream: {other:?}",
            case.name
        ),
    }
}

/// Where a stream message ends (RFC 3261 18.3: after the empty line and Content-Length
/// octets of body).
enum Cut {
    Complete(usize),
    Incomplete,
    BadLength,
}

fn stream_cut(bytes: &[u8]) -> Cut {
    let Some(head_end) = find(bytes, b"\r\n\r\n") else {
        return Cut::Incomplete;
    };
    let body_start = head_end + 4;
    let values = content_lengths(&bytes[..body_start]);
    let length = match values.as_slice() {
        // Required over TCP (RFC 3261 20.14); the switch takes a missing one as 0.
        [] => 0,
        [one] => match one.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Cut::BadLength,
        },
        _ => return Cut::BadLength,
    };
    if body_start + length > bytes.len() {
        Cut::Incomplete
    } else {
        Cut::Complete(body_start + length)
    }
}

/// The values of the Content-Length (or compact `l`) header fields of a header section.
fn content_lengths(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter(|line| !line.starts_with([' ', '\t']))
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| {
            let name = name.trim();
            name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")
        })
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

fn trim_leading_crlf(mut bytes: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = bytes {
        bytes = rest;
    }
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ----- the one change made to the bytes ---------------------------------------------------

/// The message with its top Via's sent-by port set to `port` (added when the sent-by
/// names none). RFC 3261 18.2.2 sends a UDP response to the source IP at the sent-by
/// port (at the source port only with rport, RFC 3581; see `response_route` in
/// crates/sip/src/endpoint.rs), and the corpus's Vias name ports (mostly 5060, by
/// default) that are not the test's socket. Everything else stays byte-exact, the
/// sent-by host included (the RFC 5118 IPv6 references), and Content-Length counts the
/// body only, so it stays right. A message without a Via (test.dat) is sent as it is:
/// the answer, if any, can only go to the source.
fn with_top_via_port(bytes: &[u8], port: u16) -> Vec<u8> {
    let head_end = find(bytes, b"\r\n\r\n").map_or(bytes.len(), |i| i + 2);
    let Some(first_eol) = find(&bytes[..head_end], b"\r\n") else {
        return bytes.to_vec();
    };
    let mut line_start = first_eol + 2;
    while line_start < head_end {
        let line_end =
            find(&bytes[line_start..head_end], b"\r\n").map_or(head_end, |i| line_start + i);
        let line = &bytes[line_start..line_end];
        let folded = matches!(line.first(), Some(b' ' | b'\t'));
        if let (false, Some(colon)) = (folded, line.iter().position(|&b| b == b':')) {
            let name = String::from_utf8_lossy(&line[..colon]);
            let name = name.trim();
            if name.eq_ignore_ascii_case("via") || name.eq_ignore_ascii_case("v") {
                let (start, end) =
                    sent_by_port(bytes, line_start + colon + 1).unwrap_or_else(|| {
                        panic!(
                            "cannot find the sent-by of the top Via in:\n{}",
                            String::from_utf8_lossy(bytes)
                        )
                    });
                let mut out = bytes[..start].to_vec();
                if start == end {
                    out.extend_from_slice(format!(":{port}").as_bytes());
                } else {
                    out.extend_from_slice(port.to_string().as_bytes());
                }
                out.extend_from_slice(&bytes[end..]);
                return out;
            }
        }
        line_start = line_end + 2;
    }
    bytes.to_vec()
}

/// The span of the port digits of the sent-by that follows the sent-protocol at `i`
/// (RFC 3261 20.42: `SIP / 2.0 / UDP host:port`, with LWS, folding included, around
/// the slashes), or an empty span just after the host when it has no port.
fn sent_by_port(b: &[u8], mut i: usize) -> Option<(usize, usize)> {
    let is_token = |c: u8| c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c);
    for part in 0..3 {
        i = skip_lws(b, i);
        if part > 0 {
            if b.get(i) != Some(&b'/') {
                return None;
            }
            i = skip_lws(b, i + 1);
        }
        let start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    i = skip_lws(b, i);
    let host_start = i;
    if b.get(i) == Some(&b'[') {
        i += find(&b[i..], b"]")? + 1;
    } else {
        while i < b.len() && !b":;, \t\r\n".contains(&b[i]) {
            i += 1;
        }
    }
    if i == host_start {
        return None;
    }
    if b.get(i) != Some(&b':') {
        return Some((i, i));
    }
    let digits = i + 1;
    let mut end = digits;
    while end < b.len() && b[end].is_ascii_digit() {
        end += 1;
    }
    (end > digits).then_some((digits, end))
}

fn skip_lws(b: &[u8], mut i: usize) -> usize {
    loop {
        match &b[i.min(b.len())..] {
            [b' ' | b'\t', ..] => i += 1,
            [b'\r', b'\n', b' ' | b'\t', ..] => i += 3,
            _ => return i,
        }
    }
}

// ----- talking to the switch ---------------------------------------------------------------

enum Received {
    Message(Vec<u8>),
    Timeout,
    /// The switch closed the connection (TCP).
    Closed,
}

/// The test's end of one transport.
enum Peer {
    Udp {
        socket: UdpSocket,
        switch: SocketAddr,
    },
    Tcp {
        stream: TcpStream,
        buf: Vec<u8>,
        switch: SocketAddr,
    },
}

impl Peer {
    fn new(transport: Transport, switch: SocketAddr) -> Peer {
        match transport {
            Transport::Udp => Peer::Udp {
                socket: UdpSocket::bind("127.0.0.1:0").expect("udp socket"),
                switch,
            },
            Transport::Tcp => Peer::Tcp {
                stream: connect(switch),
                buf: Vec::new(),
                switch,
            },
        }
    }

    fn transport(&self) -> Transport {
        match self {
            Peer::Udp { .. } => Transport::Udp,
            Peer::Tcp { .. } => Transport::Tcp,
        }
    }

    fn local_port(&self) -> u16 {
        match self {
            Peer::Udp { socket, .. } => socket.local_addr().expect("bound").port(),
            Peer::Tcp { stream, .. } => stream.local_addr().expect("connected").port(),
        }
    }

    /// Sends one corpus message or probe; over UDP the top Via's port is the socket's.
    fn send(&mut self, bytes: &[u8]) {
        match self {
            Peer::Udp { socket, switch } => {
                let port = socket.local_addr().expect("bound").port();
                socket
                    .send_to(&with_top_via_port(bytes, port), *switch)
                    .expect("udp send");
            }
            Peer::Tcp { stream, .. } => {
                // A write to a connection the switch has closed shows up as Closed on
                // the next read.
                let _ = stream.write_all(bytes);
            }
        }
    }

    /// The next message from the switch, waiting at most until `deadline`.
    fn recv(&mut self, deadline: Instant) -> Received {
        match self {
            Peer::Udp { socket, .. } => {
                let mut buf = vec![0u8; 65_535];
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return Received::Timeout;
                };
                socket
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .expect("read timeout");
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => Received::Message(buf[..n].to_vec()),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        Received::Timeout
                    }
                    Err(e) => panic!("udp receive: {e}"),
                }
            }
            Peer::Tcp { stream, buf, .. } => loop {
                if let Cut::Complete(end) = stream_cut(buf) {
                    return Received::Message(buf.drain(..end).collect());
                }
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    return Received::Timeout;
                };
                stream
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .expect("read timeout");
                let mut chunk = [0u8; 16 * 1024];
                match stream.read(&mut chunk) {
                    Ok(0) => return Received::Closed,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return Received::Timeout
                    }
                    Err(_) => return Received::Closed,
                }
            },
        }
    }

    /// A fresh connection (TCP), after the switch closed the last one or left it waiting.
    fn reconnect(&mut self) {
        if let Peer::Tcp {
            stream,
            buf,
            switch,
        } = self
        {
            *stream = connect(*switch);
            buf.clear();
        }
    }
}

fn connect(switch: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&switch, Duration::from_secs(5)).expect("tcp connect")
}

fn status(message: &[u8]) -> u16 {
    message
        .strip_prefix(b"SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok()?.parse().ok())
        .unwrap_or(0)
}

/// Sends an OPTIONS and waits for its 200, collecting whatever else arrives meanwhile
/// (late answers to the message before).
fn probe(peer: &mut Peer, n: usize, late: &mut Vec<u16>) -> Result<(), ProbeError> {
    let transport = peer.transport();
    let call_id = format!("torture-probe-{transport}-{n}@127.0.0.1");
    let message = format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n\
         Via: SIP/2.0/{} 127.0.0.1:{};branch=z9hG4bK-torture-{transport}-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=probe-{n}\r\n\
         To: <sip:probe@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        transport.to_string().to_uppercase(),
        peer.local_port(),
    );
    peer.send(message.as_bytes());
    let deadline = Instant::now() + PROBE_WAIT;
    loop {
        match peer.recv(deadline) {
            Received::Message(m) if find(&m, call_id.as_bytes()).is_some() => {
                return match status(&m) {
                    200 => Ok(()),
                    other => Err(ProbeError::Failed(format!("OPTIONS got {other}"))),
                };
            }
            Received::Message(m) => late.push(status(&m)),
            Received::Timeout => {
                return Err(ProbeError::Failed(format!(
                    "no answer to OPTIONS within {PROBE_WAIT:?}"
                )))
            }
            Received::Closed => return Err(ProbeError::Closed),
        }
    }
}

/// Why the liveness OPTIONS got no 200.
#[derive(Debug, PartialEq, Eq)]
enum ProbeError {
    /// The connection it went on is closed (TCP).
    Closed,
    Failed(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Closed => f.write_str("the connection closed before OPTIONS was answered"),
            ProbeError::Failed(why) => f.write_str(why),
        }
    }
}

struct Report {
    transport: Transport,
    handled: usize,
    total: usize,
    mismatches: Vec<String>,
    /// Whether the switch answered the OPTIONS after every message.
    alive: bool,
}

impl Report {
    fn line(&self) -> String {
        format!(
            "torture over {}: handled as expected {} of {}",
            self.transport, self.handled, self.total
        )
    }

    fn assert_all_handled(&self) {
        assert!(
            self.alive && self.handled == self.total,
            "{}; mismatches:\n{}",
            self.line(),
            self.mismatches.join("\n")
        );
    }
}

/// Sends every corpus message to the switch at `switch` over `transport`, each followed
/// by an OPTIONS, and compares what comes back with [`wire_expectation`].
fn run_corpus(switch: SocketAddr, transport: Transport) -> Report {
    let cases = corpus();
    let mut report = Report {
        transport,
        handled: 0,
        total: cases.len(),
        mismatches: Vec::new(),
        alive: true,
    };
    let mut peer = Peer::new(transport, switch);
    // The switch is up before the first message is judged.
    let mut ignored = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = probe(&mut peer, 0, &mut ignored) {
        assert!(Instant::now() < deadline, "the switch does not answer: {e}");
        peer.reconnect();
    }
    for (n, case) in cases.iter().enumerate() {
        let expected = wire_expectation(case, transport);
        peer.send(&case.bytes);
        let finals = expected.statuses.iter().filter(|s| **s >= 200).count();
        let deadline = Instant::now() + if finals == 0 { SILENCE } else { ANSWER_WAIT };
        let mut statuses = Vec::new();
        let mut closed = false;
        loop {
            match peer.recv(deadline) {
                Received::Message(m) => {
                    statuses.push(status(&m));
                    if finals > 0 && statuses.iter().filter(|s| **s >= 200).count() >= finals {
                        break;
                    }
                }
                Received::Timeout => break,
                Received::Closed => {
                    closed = true;
                    break;
                }
            }
        }
        if expected.connection == Connection::Closed && !closed {
            let deadline = Instant::now() + CLOSE_WAIT;
            loop {
                match peer.recv(deadline) {
                    Received::Message(m) => statuses.push(status(&m)),
                    Received::Timeout => break,
                    Received::Closed => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        if closed || expected.connection == Connection::Waiting {
            peer.reconnect();
        }
        // Liveness. A connection the switch turns out to have closed after all is
        // reconnected once (and counts as closed).
        let mut alive = probe(&mut peer, n + 1, &mut statuses);
        if alive == Err(ProbeError::Closed) {
            closed = true;
            peer.reconnect();
            alive = probe(&mut peer, n + 1, &mut statuses);
        }
        let observed = Wire {
            statuses,
            connection: match (closed, expected.connection) {
                (true, _) => Connection::Closed,
                (false, Connection::Waiting) => Connection::Waiting,
                (false, _) => Connection::KeptOpen,
            },
        };
        if observed == expected {
            report.handled += 1;
        } else {
            report.mismatches.push(format!(
                "{}: got {observed}, expected {expected} (corpus outcome {}, {} config)",
                case.name, case.outcome, case.config
            ));
        }
        if let Err(e) = alive {
            report.alive = false;
            report.mismatches.push(format!(
                "{}: the switch stopped answering after it: {e}; {} messages not sent",
                case.name,
                cases.len() - n - 1
            ));
            break;
        }
    }
    report
}

/// A switch with the default profile on loopback: (server, SIP address, HTTP address).
fn start_switch(data: &Path) -> (Server, SocketAddr, String) {
    let port = free_port();
    let server = Server::start(data, port, Some(USERS));
    let lines = server.wait_for("health and metrics on http://");
    let http = lines
        .last()
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|l| l.split('/').next())
        .expect("the log line names the address")
        .to_string();
    (server, SocketAddr::from(([127, 0, 0, 1], port)), http)
}

#[test]
fn torture_over_udp() {
    let data = tempfile::tempdir().unwrap();
    let (server, switch, _) = start_switch(data.path());
    let report = run_corpus(switch, Transport::Udp);
    println!("{}", report.line());
    report.assert_all_handled();
    server.terminate();
}

#[test]
fn torture_over_tcp() {
    let data = tempfile::tempdir().unwrap();
    let (server, switch, _) = start_switch(data.path());
    let report = run_corpus(switch, Transport::Tcp);
    println!("{}", report.line());
    report.assert_all_handled();
    server.terminate();
}

// ----- state ---------------------------------------------------------------------------------

/// The sum of the samples of `series`: one series (`name{labels}`, or a name without
/// labels) or, given a bare family name, all its labelled series. `None` when the text
/// has none.
fn total(metrics: &str, series: &str) -> Option<f64> {
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(series)?;
            let rest = match rest.strip_prefix('{') {
                Some(labels) if !series.contains('{') => &labels[labels.find('}')? + 1..],
                _ => rest,
            };
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// After both corpora, the switch holds nothing for them: no server transaction, no
/// connection, no call, no registration. Under the default profile every answer to the
/// corpus is stateless (challenges, refusals, OPTIONS, parse errors; responses and the
/// unanswered are dropped), so no transaction waits out Timer J or H: zero must show
/// in the first metrics snapshot taken after the traffic (the shell refreshes the
/// gauges once a second). A stateful answer would linger up to 32 s (64*T1) and fail
/// the 5 s bound.
#[test]
fn torture_messages_leave_no_state_behind() {
    let data = tempfile::tempdir().unwrap();
    let (server, switch, http) = start_switch(data.path());
    // The transport tests judge the answers; here only the switch's liveness counts.
    for transport in [Transport::Udp, Transport::Tcp] {
        let report = run_corpus(switch, transport);
        assert!(
            report.alive,
            "{}\n{}",
            report.line(),
            report.mismatches.join("\n")
        );
    }
    // Every TCP connection of the runs is closed by now (the peers are dropped).
    let traffic_end = Instant::now();
    let bound = Duration::from_secs(5);
    // (series, whether it must be present: a labelled family such as calls_active has
    // no series until a call is counted, and none is here: every INVITE is challenged).
    let watched = [
        ("sofia_sip_transactions{kind=\"server\"}", true),
        ("sofia_sip_transactions{kind=\"client\"}", true),
        ("sofia_tcp_connections", true),
        ("sofia_registrations", true),
        ("sofia_blocked_sources", true),
        ("sofia_calls_active", false),
    ];
    loop {
        let (code, metrics) = http_get(&http, "/metrics");
        assert_eq!(code, 200, "{metrics}");
        let values: Vec<Option<f64>> = watched
            .iter()
            .map(|(series, required)| match total(&metrics, series) {
                None if !required => Some(0.0),
                value => value,
            })
            .collect();
        // Two refreshes after the last message: the snapshot shows the end of the traffic.
        let fresh = traffic_end.elapsed() >= Duration::from_millis(2_100);
        if fresh && values.iter().all(|v| *v == Some(0.0)) {
            // The counters are live and the corpus reached the endpoint: every probe
            // OPTIONS was counted, and the INVITEs and REGISTERs that parse.
            let options = total(&metrics, "sofia_sip_requests_total{method=\"OPTIONS\"}");
            assert!(
                options.is_some_and(|n| n >= 2.0 * corpus().len() as f64),
                "OPTIONS counter {options:?}\n{metrics}"
            );
            for method in ["INVITE", "REGISTER"] {
                let series = format!("sofia_sip_requests_total{{method=\"{method}\"}}");
                assert!(
                    total(&metrics, &series).is_some_and(|n| n > 0.0),
                    "{series}\n{metrics}"
                );
            }
            println!(
                "no state left {:.1} s after the torture traffic",
                traffic_end.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            traffic_end.elapsed() < bound,
            "state left {bound:?} after the torture traffic: {:?}\n{metrics}",
            watched.iter().map(|w| w.0).zip(&values).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server.terminate();
}

#[test]
fn the_via_port_is_the_only_change() {
    // Port replaced, host byte-exact (an IPv6 reference).
    let ipv6 = b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z\r\n\r\n";
    assert_eq!(
        with_top_via_port(ipv6, 4242),
        b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::9:1]:4242;branch=z\r\n\r\n"
    );
    // Port added after a host without one, across folded LWS (wsinv.dat), compact name.
    let folded =
        b"INVITE sip:x SIP/2.0\r\nv  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=b\r\n\r\n";
    assert_eq!(
        with_top_via_port(folded, 4242),
        b"INVITE sip:x SIP/2.0\r\nv  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2:4242;branch=b\r\n\r\n"
    );
    // Only the top Via; no Via, no change.
    let two = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=1\r\nVia: SIP/2.0/UDP b:7;branch=2\r\n\r\n";
    assert_eq!(
        with_top_via_port(two, 9),
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a:9;branch=1\r\nVia: SIP/2.0/UDP b:7;branch=2\r\n\r\n"
    );
    let none = b"INVITE sip:x\r\nTO : x\r\n\r\n";
    assert_eq!(with_top_via_port(none, 9), none);
    // Every corpus message gets the port, but test.dat, which has no Via.
    for case in corpus() {
        let sent = with_top_via_port(&case.bytes, 65_000);
        assert!(
            sent == case.bytes || find(&sent, b":65000").is_some(),
            "{}",
            case.name
        );
    }
}
