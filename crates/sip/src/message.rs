//! The message layer: turns bytes into [`Request`]/[`Response`] values with the
//! RFC 3261 essentials typed (Via, From, To, Call-ID, CSeq) and prints them back.
//!
//! It owns framing inside one datagram (RFC 3261 18.3: Content-Length bounds the body,
//! trailing octets are ignored), header unfolding (7.3.1), compact names (7.3.3) and the
//! syntactic checks RFC 4475 asks of a robust element. It does not decide what to answer;
//! [`ParseFailure::status`] only says which status a malformed request deserves.
//! Bodies are opaque bytes: this crate knows no SDP.

use std::fmt;

use thiserror::Error;

use crate::ids::CallId;
use crate::syntax::{is_lws, is_token, parse_u32, split_top_level, SyntaxError};
use crate::uri::{parse_name_addr_list, ContactList, NameAddr, Uri, Via};

/// A SIP method (RFC 3261 7.1). Methods are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Message,
    Subscribe,
    Notify,
    Prack,
    Update,
    Refer,
    Publish,
    Extension(String),
}

impl Method {
    pub fn parse(s: &str) -> Self {
        match s {
            "INVITE" => Self::Invite,
            "ACK" => Self::Ack,
            "BYE" => Self::Bye,
            "CANCEL" => Self::Cancel,
            "OPTIONS" => Self::Options,
            "REGISTER" => Self::Register,
            "INFO" => Self::Info,
            "MESSAGE" => Self::Message,
            "SUBSCRIBE" => Self::Subscribe,
            "NOTIFY" => Self::Notify,
            "PRACK" => Self::Prack,
            "UPDATE" => Self::Update,
            "REFER" => Self::Refer,
            "PUBLISH" => Self::Publish,
            other => Self::Extension(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Info => "INFO",
            Self::Message => "MESSAGE",
            Self::Subscribe => "SUBSCRIBE",
            Self::Notify => "NOTIFY",
            Self::Prack => "PRACK",
            Self::Update => "UPDATE",
            Self::Refer => "REFER",
            Self::Publish => "PUBLISH",
            Self::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// RFC 3261 7.3.3 compact forms and the canonical spelling of well-known names.
const KNOWN_HEADERS: &[(&str, Option<char>)] = &[
    ("Accept", None),
    ("Accept-Contact", Some('a')),
    ("Allow", None),
    ("Allow-Events", Some('u')),
    ("Authorization", None),
    ("Call-ID", Some('i')),
    ("Contact", Some('m')),
    ("Content-Encoding", Some('e')),
    ("Content-Length", Some('l')),
    ("Content-Type", Some('c')),
    ("CSeq", None),
    ("Event", Some('o')),
    ("Expires", None),
    ("From", Some('f')),
    ("Max-Forwards", None),
    ("Min-Expires", None),
    ("Proxy-Require", None),
    ("Record-Route", None),
    ("Refer-To", Some('r')),
    ("Referred-By", Some('b')),
    ("Reject-Contact", Some('j')),
    ("Request-Disposition", Some('d')),
    ("Require", None),
    ("Route", None),
    ("Session-Expires", Some('x')),
    ("Subject", Some('s')),
    ("Supported", Some('k')),
    ("To", Some('t')),
    ("Unsupported", None),
    ("User-Agent", None),
    ("Via", Some('v')),
    ("WWW-Authenticate", None),
];

/// Returns the canonical spelling of a header name, expanding compact forms.
pub fn canonical_header_name(name: &str) -> String {
    if name.len() == 1 {
        let c = name.chars().next().map(|c| c.to_ascii_lowercase());
        if let Some((full, _)) = KNOWN_HEADERS.iter().find(|(_, short)| *short == c) {
            return (*full).to_string();
        }
    }
    KNOWN_HEADERS
        .iter()
        .find(|(full, _)| full.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_string(), |(full, _)| (*full).to_string())
}

/// One header line after unfolding, name canonicalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The header fields of a message, in order. Lookups are case-insensitive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) {
        self.0.push(Header {
            name: canonical_header_name(name),
            value: value.into(),
        });
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// All values of `name`, one per header line.
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }

    pub fn count(&self, name: &str) -> usize {
        self.all(name).count()
    }

    /// All comma-separated elements of every `name` line (RFC 3261 7.3.1).
    pub fn list(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.all(name) {
            match split_top_level(v, ',') {
                Ok(parts) => out.extend(
                    parts
                        .into_iter()
                        .map(|p| p.trim_matches(is_lws).to_string())
                        .filter(|p| !p.is_empty()),
                ),
                Err(_) => out.push(v.to_string()),
            }
        }
        out
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }
}

/// Why bytes could not be turned into a message. Each variant names the failure;
/// [`ParseFailure::status`] maps it to a response status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("empty input")]
    Empty,
    #[error("header section is not terminated by an empty line")]
    UnterminatedHeaders,
    #[error("header section is not valid UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    BadStartLine,
    #[error("request line elements must be separated by exactly one SP")]
    BadRequestLineSpacing,
    #[error("malformed method")]
    BadMethod,
    #[error("unsupported SIP version {0:?}")]
    UnsupportedVersion(String),
    #[error("malformed Request-URI: {0}")]
    BadRequestUri(SyntaxError),
    #[error("the Request-URI carries escaped headers")]
    HeadersInRequestUri,
    #[error("malformed status code")]
    BadStatusCode,
    #[error("header line without a colon")]
    MissingColon,
    #[error("malformed header name")]
    BadHeaderName,
    #[error("missing required header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} appears more than once")]
    DuplicateHeader(&'static str),
    #[error("malformed {header} header: {error}")]
    BadHeader {
        header: &'static str,
        error: SyntaxError,
    },
    #[error("Content-Length is malformed")]
    BadContentLength,
    #[error("Content-Length is larger than the body received")]
    ContentLengthExceedsBody,
    #[error("CSeq method does not match the request method")]
    CseqMismatch,
    #[error("Via branch is only the magic cookie")]
    EmptyBranch,
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
}

/// A failed parse, with what was recognised of the request so that a stateless error
/// response can still be addressed (RFC 3261 8.2: a malformed request gets a response
/// when it can be routed; a malformed response is dropped).
#[derive(Debug, Clone)]
pub struct ParseFailure {
    pub error: ParseError,
    /// Set when the start line was a request line: its method and the raw headers.
    pub request: Option<RawRequest>,
}

/// The parts of an unparseable request needed to answer it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub headers: Headers,
}

impl ParseFailure {
    /// The status a UAS should answer with, or `None` when the input must be dropped
    /// (responses, unrecognisable garbage).
    pub fn status(&self) -> Option<u16> {
        self.request.as_ref()?;
        Some(match &self.error {
            ParseError::UnsupportedVersion(_) => 505,
            ParseError::TooLarge { .. } => 513,
            _ => 400,
        })
    }
}

/// Essentials shared by requests and responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// A parsed request. Typed fields are parsed once from `headers`; the headers stay the
/// source for printing.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: CallId,
    pub cseq: CSeq,
    pub max_forwards: Option<u32>,
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub via: Vec<Via>,
    pub from: NameAddr,
    pub to: NameAddr,
    pub call_id: CallId,
    pub cseq: CSeq,
}

#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Request {
    /// The Contact header: `*`, a list, or `None` when absent.
    pub fn contacts(&self) -> Result<Option<ContactList>, ParseError> {
        parse_contacts(&self.headers)
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.first("Content-Type")
    }

    pub fn top_via(&self) -> &Via {
        // Invariant: parse() rejects requests without a Via.
        &self.via[0]
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        print_message(&start, &self.headers, &self.body)
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}", self.status, self.reason);
        print_message(&start, &self.headers, &self.body)
    }
}

pub(crate) fn parse_contacts(headers: &Headers) -> Result<Option<ContactList>, ParseError> {
    let values: Vec<&str> = headers.all("Contact").collect();
    if values.is_empty() {
        return Ok(None);
    }
    if values.iter().any(|v| v.trim_matches(is_lws) == "*") {
        if values.len() > 1 {
            return Err(ParseError::BadHeader {
                header: "Contact",
                error: SyntaxError::TrailingText,
            });
        }
        return Ok(Some(ContactList::Star));
    }
    let mut all = Vec::new();
    for v in values {
        all.extend(
            parse_name_addr_list(v).map_err(|error| ParseError::BadHeader {
                header: "Contact",
                error,
            })?,
        );
    }
    Ok(Some(ContactList::Addresses(all)))
}

/// Prints a message with the canonical header names and a recomputed Content-Length.
pub(crate) fn print_message(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(start.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Reason phrases for the statuses this crate sends (RFC 3261 21).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => match status / 100 {
            1 => "Trying",
            2 => "OK",
            3 => "Redirect",
            4 => "Client Error",
            5 => "Server Error",
            _ => "Global Failure",
        },
    }
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A whole UDP datagram: Content-Length may be absent (body = rest), must not
    /// exceed what arrived, and octets beyond it are ignored (RFC 3261 18.3).
    Datagram,
    /// A message cut out of a stream by [`crate::StreamFramer`]: same rules.
    Stream,
}

/// Parses one message. Never panics; every failure is a [`ParseFailure`].
pub fn parse(bytes: &[u8], framing: Framing) -> Result<Message, ParseFailure> {
    let fail = |error| ParseFailure {
        error,
        request: None,
    };
    // RFC 3261 7.5: ignore CRLFs before the start line.
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .ok_or_else(|| fail(ParseError::Empty))?;
    let bytes = &bytes[start..];
    // A datagram ends the message: tolerate a header section whose closing empty line
    // is missing (the RFC 4475 and RFC 5118 archive copies have such messages).
    let (head, body_start) = match (split_head(bytes), framing) {
        (Some(found), _) => found,
        (None, Framing::Datagram) => (bytes, bytes.len()),
        (None, Framing::Stream) => return Err(fail(ParseError::UnterminatedHeaders)),
    };
    let head = match head
        .strip_suffix(b"\r\n")
        .or_else(|| head.strip_suffix(b"\n"))
    {
        Some(h) => h,
        None => head,
    };
    let head = std::str::from_utf8(head).map_err(|_| fail(ParseError::NotUtf8))?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().ok_or_else(|| fail(ParseError::BadStartLine))?;
    let start = parse_start_line(start_line);
    let raw_method = match &start {
        Ok(StartLine::Request { method, .. }) => Some(method.to_string()),
        Err(StartLineError { method, .. }) => method.clone(),
        Ok(StartLine::Response { .. }) => None,
    };
    let headers_result = parse_header_lines(lines);
    let fail_req = |error, headers: Option<&Headers>| ParseFailure {
        error,
        request: raw_method.as_ref().map(|m| RawRequest {
            method: m.clone(),
            headers: headers.cloned().unwrap_or_default(),
        }),
    };
    let headers = headers_result.map_err(|e| fail_req(e, None))?;
    let start = start.map_err(|e| fail_req(e.error, Some(&headers)))?;
    let body =
        frame_body(&bytes[body_start..], &headers).map_err(|e| fail_req(e, Some(&headers)))?;
    let essentials = parse_essentials(&headers).map_err(|e| fail_req(e, Some(&headers)))?;
    match start {
        StartLine::Request { method, uri } => {
            let method_parsed = Method::parse(method);
            if essentials.cseq.method != method_parsed {
                return Err(fail_req(ParseError::CseqMismatch, Some(&headers)));
            }
            if essentials.via[0].branch() == Some(crate::uri::BRANCH_MAGIC_COOKIE) {
                return Err(fail_req(ParseError::EmptyBranch, Some(&headers)));
            }
            let max_forwards =
                match single(&headers, "Max-Forwards").map_err(|e| fail_req(e, Some(&headers)))? {
                    Some(v) => match parse_u32(v) {
                        Ok(n) => Some(n),
                        // RFC 4475 3.1.2.4: an overlarge Max-Forwards may be treated as absent.
                        Err(SyntaxError::NumberOutOfRange) => None,
                        Err(error) => {
                            return Err(fail_req(
                                ParseError::BadHeader {
                                    header: "Max-Forwards",
                                    error,
                                },
                                Some(&headers),
                            ))
                        }
                    },
                    None => None,
                };
            let max_forwards = max_forwards.filter(|n| *n <= 255);
            Ok(Message::Request(Request {
                method: method_parsed,
                uri,
                headers,
                body,
                via: essentials.via,
                from: essentials.from,
                to: essentials.to,
                call_id: essentials.call_id,
                cseq: essentials.cseq,
                max_forwards,
            }))
        }
        StartLine::Response { status, reason } => Ok(Message::Response(Response {
            status,
            reason: reason.to_string(),
            headers,
            body,
            via: essentials.via,
            from: essentials.from,
            to: essentials.to,
            call_id: essentials.call_id,
            cseq: essentials.cseq,
        })),
    }
}

/// Finds the empty line ending the header section; accepts bare LF line ends.
fn split_head(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let next = &bytes[i + 1..];
            if next.starts_with(b"\r\n") {
                return Some((&bytes[..i], i + 3));
            }
            if next.starts_with(b"\n") {
                return Some((&bytes[..i], i + 2));
            }
        }
        i += 1;
    }
    None
}

enum StartLine<'a> {
    Request { method: &'a str, uri: Uri },
    Response { status: u16, reason: &'a str },
}

struct StartLineError {
    error: ParseError,
    method: Option<String>,
}

fn parse_start_line(line: &str) -> Result<StartLine<'_>, StartLineError> {
    let plain = |error| StartLineError {
        error,
        method: None,
    };
    if let Some(rest) = line.strip_prefix("SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (RFC 3261 7.2).
        let (version, rest) = rest
            .split_once(' ')
            .ok_or_else(|| plain(ParseError::BadStartLine))?;
        if version != "2.0" {
            return Err(plain(ParseError::UnsupportedVersion(format!(
                "SIP/{version}"
            ))));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(plain(ParseError::BadStatusCode));
        }
        let status: u16 = code.parse().map_err(|_| plain(ParseError::BadStatusCode))?;
        if !(100..=699).contains(&status) {
            return Err(plain(ParseError::BadStatusCode));
        }
        return Ok(StartLine::Response { status, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (RFC 3261 7.1).
    let (method, rest) = line
        .split_once(' ')
        .ok_or_else(|| plain(ParseError::BadStartLine))?;
    if !is_token(method) {
        return Err(plain(ParseError::BadMethod));
    }
    let with_method = |error| StartLineError {
        error,
        method: Some(method.to_string()),
    };
    let (uri, version) = rest
        .rsplit_once(' ')
        .ok_or_else(|| with_method(ParseError::BadStartLine))?;
    if uri.is_empty() || version.is_empty() || uri.contains(' ') || uri.contains('\t') {
        return Err(with_method(ParseError::BadRequestLineSpacing));
    }
    let looks_like_version = version
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"));
    if !looks_like_version {
        return Err(with_method(ParseError::BadStartLine));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(with_method(ParseError::UnsupportedVersion(
            version.to_string(),
        )));
    }
    let uri = Uri::parse(uri).map_err(|e| with_method(ParseError::BadRequestUri(e)))?;
    if let Uri::Sip(u) = &uri {
        // RFC 3261 19.1.5 forbids headers in a Request-URI; RFC 4475 3.1.2.11 lets us 400.
        if u.headers.is_some() {
            return Err(with_method(ParseError::HeadersInRequestUri));
        }
    }
    Ok(StartLine::Request { method, uri })
}

/// Unfolds continuation lines and splits `name: value` (RFC 3261 7.3.1).
fn parse_header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, ParseError> {
    let mut unfolded: Vec<String> = Vec::new();
    for line in lines {
        if line.starts_with(is_lws) {
            let last = unfolded.last_mut().ok_or(ParseError::BadHeaderName)?;
            last.push(' ');
            last.push_str(line.trim_start_matches(is_lws));
        } else {
            unfolded.push(line.to_string());
        }
    }
    let mut headers = Headers::new();
    for line in &unfolded {
        let (name, value) = line.split_once(':').ok_or(ParseError::MissingColon)?;
        let name = name.trim_end_matches(is_lws);
        if !is_token(name) {
            return Err(ParseError::BadHeaderName);
        }
        headers.push(name, value.trim_matches(is_lws));
    }
    Ok(headers)
}

fn frame_body(rest: &[u8], headers: &Headers) -> Result<Vec<u8>, ParseError> {
    match single(headers, "Content-Length")? {
        None => Ok(rest.to_vec()),
        Some(v) => {
            let len = parse_u32(v).map_err(|_| ParseError::BadContentLength)? as usize;
            if len > rest.len() {
                return Err(ParseError::ContentLengthExceedsBody);
            }
            Ok(rest[..len].to_vec())
        }
    }
}

/// The value of a header that must appear at most once (RFC 3261 7.3.1, RFC 4475
/// 3.3.8/3.3.9).
fn single<'a>(headers: &'a Headers, name: &'static str) -> Result<Option<&'a str>, ParseError> {
    let mut it = headers.all(name);
    let first = it.next();
    if it.next().is_some() {
        return Err(ParseError::DuplicateHeader(name));
    }
    Ok(first)
}

struct Essentials {
    via: Vec<Via>,
    from: NameAddr,
    to: NameAddr,
    call_id: CallId,
    cseq: CSeq,
}

fn parse_essentials(headers: &Headers) -> Result<Essentials, ParseError> {
    let bad = |header: &'static str| move |error| ParseError::BadHeader { header, error };
    let mut via = Vec::new();
    for v in headers.all("Via") {
        for part in split_top_level(v, ',').map_err(bad("Via"))? {
            via.push(Via::parse(part).map_err(bad("Via"))?);
        }
    }
    if via.is_empty() {
        return Err(ParseError::MissingHeader("Via"));
    }
    let from = single(headers, "From")?.ok_or(ParseError::MissingHeader("From"))?;
    let from = NameAddr::parse(from).map_err(bad("From"))?;
    let to = single(headers, "To")?.ok_or(ParseError::MissingHeader("To"))?;
    let to = NameAddr::parse(to).map_err(bad("To"))?;
    let call_id = single(headers, "Call-ID")?.ok_or(ParseError::MissingHeader("Call-ID"))?;
    if call_id.is_empty() || call_id.contains(is_lws) {
        return Err(ParseError::BadHeader {
            header: "Call-ID",
            error: SyntaxError::Empty,
        });
    }
    let cseq = single(headers, "CSeq")?.ok_or(ParseError::MissingHeader("CSeq"))?;
    let (num, method) =
        cseq.trim_matches(is_lws)
            .split_once(is_lws)
            .ok_or(ParseError::BadHeader {
                header: "CSeq",
                error: SyntaxError::Empty,
            })?;
    let seq = parse_u32(num).map_err(bad("CSeq"))?;
    // RFC 3261 8.1.1.5: the sequence number MUST be less than 2**31.
    if seq >= 1 << 31 {
        return Err(ParseError::BadHeader {
            header: "CSeq",
            error: SyntaxError::NumberOutOfRange,
        });
    }
    let method = method.trim_matches(is_lws);
    if !is_token(method) {
        return Err(ParseError::BadHeader {
            header: "CSeq",
            error: SyntaxError::BadParam,
        });
    }
    for name in ["Content-Type", "Expires"] {
        single(headers, name)?;
    }
    Ok(Essentials {
        via,
        from,
        to,
        call_id: CallId::new(call_id),
        cseq: CSeq {
            seq,
            method: Method::parse(method),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Request, ParseFailure> {
        match parse(s.as_bytes(), Framing::Datagram)? {
            Message::Request(r) => Ok(r),
            Message::Response(_) => panic!("expected a request"),
        }
    }

    const OPTIONS: &str = "OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";

    #[test]
    fn minimal_request_round_trips() {
        let r = req(OPTIONS).unwrap();
        assert_eq!(r.method, Method::Options);
        assert_eq!(r.call_id.as_str(), "c1");
        let again = req(std::str::from_utf8(&r.to_bytes()).unwrap()).unwrap();
        assert_eq!(again.cseq, r.cseq);
    }

    #[test]
    fn version_and_spacing_errors() {
        let e = req(&OPTIONS.replace("SIP/2.0\r\nVia", "SIP/7.0\r\nVia")).unwrap_err();
        assert_eq!(e.status(), Some(505));
        let e = req(&OPTIONS.replace("OPTIONS sip", "OPTIONS  sip")).unwrap_err();
        assert_eq!(e.status(), Some(400));
    }

    #[test]
    fn duplicate_and_mismatch_are_rejected() {
        let e = req(&OPTIONS.replace("Call-ID: c1\r\n", "Call-ID: c1\r\ni: c2\r\n")).unwrap_err();
        assert_eq!(e.error, ParseError::DuplicateHeader("Call-ID"));
        let e = req(&OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE")).unwrap_err();
        assert_eq!(e.error, ParseError::CseqMismatch);
    }

    #[test]
    fn datagram_framing_by_content_length() {
        let with_body = OPTIONS.replace("l: 0", "l: 3") + "abcdef";
        assert_eq!(req(&with_body).unwrap().body, b"abc");
        let short = OPTIONS.replace("l: 0", "l: 30") + "abc";
        assert_eq!(
            req(&short).unwrap_err().error,
            ParseError::ContentLengthExceedsBody
        );
        let negative = OPTIONS.replace("l: 0", "l: -1");
        assert_eq!(
            req(&negative).unwrap_err().error,
            ParseError::BadContentLength
        );
    }
}
