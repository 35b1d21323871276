//! The endpoint: one sans-IO registrar + UAS that owns every transaction, dialog,
//! binding and nonce of a listening profile, in the str0m/quinn-proto shape:
//! `handle_*(now, ...)` in, `poll_transmit` / `poll_event` / `poll_timeout` out.
//!
//! It applies the UAS rules of RFC 3261 8.2 in order (416 scheme, 501 method, 420
//! Require, 415/406 content), matches transactions (17.2.3) and dialogs (12.2.2),
//! detects merged requests (482, 8.2.2.2), challenges with digest (22), routes responses
//! per 18.2.2 with RFC 3581 rport, and turns INVITE dialogs into [`Event`]s and call
//! commands. It does not know the dialplan or SDP: the shell decides what a call is for.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::auth::{AuthPolicy, Authenticator, BlockAction, DigestCredentials, Verdict};
use crate::dialog::{Call, Dialog, DialogKey, DialogState, InviteProgress};
use crate::framer::FramingError;
use crate::ids::{CallHandle, CallId, RequestHandle, Tag, Transport};
use crate::message::{
    parse, reason_phrase, Framing, Headers, Message, Method, ParseFailure, Request, Response,
};
use crate::registrar::{Binding, RegisterSource, Registrar, RegistrarLimits, RegistrarSnapshot};
use crate::rng::TokenSource;
use crate::syntax::quote;
use crate::transaction::{
    ClientPurpose, ClientTransaction, Route, ServerKind, ServerTransaction, TimerConfig,
};
use crate::uri::{Uri, Via, BRANCH_MAGIC_COOKIE};

mod outgoing;
mod refer;
mod reinvite;
pub use outgoing::OutgoingInvite;
pub use refer::sipfrag;
pub use reinvite::glare_wait;

/// Methods this endpoint implements, for Allow (RFC 3261 20.5).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, SUBSCRIBE, REFER, NOTIFY";

/// A user that may register and call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConfig {
    pub username: String,
    pub password: String,
    /// Overrides [`Config::realm`] for this user.
    pub realm: Option<String>,
}

/// Everything an [`Endpoint`] needs; no field is read from the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Default digest realm.
    pub realm: String,
    pub users: Vec<UserConfig>,
    /// Host (name or IP literal) put in our Via and Contact.
    pub advertised_host: String,
    pub udp_port: u16,
    pub tcp_port: u16,
    /// Where SIP over TLS listens (sips:), for our Via and Contact on TLS flows.
    pub tls_port: u16,
    /// Challenge REGISTER (RFC 3261 10.3 step 3).
    pub auth_register: bool,
    /// Challenge out-of-dialog INVITE.
    pub auth_invite: bool,
    pub registrar: RegistrarLimits,
    pub auth: AuthPolicy,
    pub timers: TimerConfig,
    /// Body types accepted in INVITE/ACK (415 otherwise, with Accept).
    pub accepted_content_types: Vec<String>,
    /// Server / User-Agent header value.
    pub user_agent: String,
    /// Larger messages get 513 (RFC 3261 18.1.1 / 21.5.14).
    pub max_message_size: usize,
    /// Live server transactions beyond which a request that would need one gets a
    /// stateless 503 with Retry-After (a flood must not grow memory without bound).
    pub max_server_transactions: usize,
    /// Calls (dialogs) beyond which a new INVITE gets 503 with Retry-After.
    pub max_calls: usize,
    /// Calls of one authenticated caller beyond which a new INVITE gets 486.
    pub max_calls_per_user: usize,
    /// An INVITE the application has not answered after this long gets 408 (a
    /// re-INVITE 500) from the endpoint itself: every INVITE ends in a final response.
    pub max_ringing: Duration,
    /// Secret seed for tags, branches and nonce MACs. Take it from a CSPRNG.
    pub seed: [u8; 32],
}

impl Config {
    /// A configuration with the defaults of a small softswitch.
    pub fn new(
        realm: impl Into<String>,
        advertised_host: impl Into<String>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            realm: realm.into(),
            users: Vec::new(),
            advertised_host: advertised_host.into(),
            udp_port: 5060,
            tcp_port: 5060,
            tls_port: 5061,
            auth_register: true,
            auth_invite: true,
            registrar: RegistrarLimits::default(),
            auth: AuthPolicy::default(),
            timers: TimerConfig::default(),
            accepted_content_types: vec!["application/sdp".to_string()],
            user_agent: "sofia-phone".to_string(),
            max_message_size: 65_535,
            max_server_transactions: 20_000,
            max_calls: usize::MAX,
            max_calls_per_user: usize::MAX,
            max_ringing: Duration::from_secs(180),
            seed,
        }
    }

    pub fn with_user(mut self, username: &str, password: &str) -> Self {
        self.users.push(UserConfig {
            username: username.to_string(),
            password: password.to_string(),
            realm: None,
        });
        self
    }
}

/// A message body: opaque bytes and their Content-Type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub transport: Transport,
    pub bytes: Vec<u8>,
}

/// A new INVITE that passed validation and authentication; the shell routes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    pub call: CallHandle,
    /// The Request-URI user, escapes decoded (the dialled extension).
    pub user: Option<String>,
    pub request_uri: String,
    /// The caller's From URI and display name.
    pub from: String,
    pub from_display: Option<String>,
    /// The digest username that authenticated the INVITE, if it was challenged.
    pub authenticated_user: Option<String>,
    pub call_id: CallId,
    pub source: SocketAddr,
    pub transport: Transport,
    pub body: Option<Body>,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The caller sent BYE.
    RemoteBye,
    /// [`Endpoint::hangup`] sent BYE.
    LocalHangup,
    /// The call was rejected with this status before it was answered.
    Rejected(u16),
    /// Our 2xx was never ACKed (RFC 3261 13.3.1.4); a BYE was sent.
    AckTimeout,
}

/// Something the shell must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    IncomingCall(IncomingCall),
    /// The ACK for our 2xx arrived; it may carry the answer of a late offer.
    CallConfirmed {
        call: CallHandle,
        body: Option<Body>,
    },
    /// The caller cancelled before a final response; 487 was sent. Final for the call.
    CallCancelled {
        call: CallHandle,
    },
    /// The call is over. Final for the call.
    CallEnded {
        call: CallHandle,
        reason: EndReason,
    },
    /// A re-INVITE: answer it with [`Endpoint::answer`] or [`Endpoint::reject`].
    ReInvite {
        call: CallHandle,
        body: Option<Body>,
    },
    /// In-dialog INFO (e.g. SIP INFO DTMF); already answered 200.
    Info {
        call: CallHandle,
        body: Option<Body>,
    },
    /// A request from [`Endpoint::send_options`] or [`Endpoint::notify_refer`]
    /// finished: final status, or `None` on timeout (Timer F).
    RequestCompleted {
        request: RequestHandle,
        status: Option<u16>,
    },
    /// The bindings of this AOR changed (REGISTER or expiry): persist a snapshot.
    BindingsChanged {
        aor: String,
    },
    /// A call we placed got a provisional response (180 Ringing, 183 with early media).
    CallProgress {
        call: CallHandle,
        status: u16,
        body: Option<Body>,
    },
    /// A call we placed was answered; the ACK is sent. The body is the callee's SDP.
    CallAnswered {
        call: CallHandle,
        body: Option<Body>,
    },
    /// A call we placed got a final 300-699, or no answer at all (408, Timer B). Final
    /// for the call.
    CallFailed {
        call: CallHandle,
        status: u16,
    },
    /// Our re-INVITE ([`Endpoint::reinvite`]) was answered; the ACK is sent. The body is
    /// the peer's SDP answer.
    ReInviteAnswered {
        call: CallHandle,
        body: Option<Body>,
    },
    /// Our re-INVITE got a final 300-699 (a 491 only once the peer's own re-INVITE,
    /// answered meanwhile, replaced ours), or no answer (408). The dialog goes on.
    ReInviteFailed {
        call: CallHandle,
        status: u16,
    },
    /// A REFER (RFC 3515) in the call's dialog, already answered 202 Accepted: place
    /// the call to `refer_to` and report it with [`Endpoint::notify_refer`].
    Refer {
        call: CallHandle,
        refer_to: String,
    },
}

/// Why a call command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    #[error("no such call")]
    UnknownCall,
    #[error("the call has no INVITE waiting for an answer")]
    NothingToAnswer,
    #[error("status {0} is not valid for this command")]
    BadStatus(u16),
    #[error("request URI is not a SIP URI")]
    BadUri,
    #[error("the dialog is not confirmed yet")]
    NotConfirmed,
    #[error("a re-INVITE of ours is already under way on this call")]
    InviteInProgress,
    #[error("the call has no transfer (REFER) to report on")]
    NoSubscription,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerTarget {
    Server(Arc<str>),
    Client(String),
    /// An INVITE client transaction, by branch.
    Invite(String),
    /// A re-INVITE client transaction, by branch.
    ReInvite(String),
    /// The end of the wait after a 491 to our re-INVITE of this call (RFC 3261 14.1).
    ReInviteRetry(CallHandle),
    /// The longest our re-INVITE (by branch) may go without a final response.
    ReInviteExpiry(String),
    /// The longest an INVITE (this server transaction of this call) may wait for the
    /// application's answer.
    Answer(CallHandle, String),
}

/// What the endpoint has counted since it started, for the shell's metrics. Counters
/// only go up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Requests received, by method (extension methods count as `OTHER`, so a scanner
    /// cannot grow the label set).
    pub requests: BTreeMap<&'static str, u64>,
    /// Responses sent (retransmissions included), by status code.
    pub responses: BTreeMap<u16, u64>,
    /// Failed credential checks that counted toward blocking.
    pub auth_failures: u64,
    /// Requests refused because their source (or source and user) is blocked.
    pub blocked_requests: u64,
    /// Stateless 503s because `max_server_transactions` was reached.
    pub transaction_overload: u64,
    /// INVITEs refused for `max_calls`.
    pub max_calls_rejects: u64,
    /// INVITEs refused for `max_calls_per_user`.
    pub max_calls_per_user_rejects: u64,
    /// INVITEs the application left unanswered past `max_ringing`.
    pub unanswered_invites: u64,
}

fn method_label(method: &Method) -> &'static str {
    match method {
        Method::Invite => "INVITE",
        Method::Ack => "ACK",
        Method::Bye => "BYE",
        Method::Cancel => "CANCEL",
        Method::Options => "OPTIONS",
        Method::Register => "REGISTER",
        Method::Info => "INFO",
        Method::Subscribe => "SUBSCRIBE",
        Method::Message => "MESSAGE",
        Method::Refer => "REFER",
        Method::Notify => "NOTIFY",
        _ => "OTHER",
    }
}

struct UserEntry {
    password: String,
    realm: String,
}

/// The sans-IO SIP endpoint. See the crate docs for the driving loop.
pub struct Endpoint {
    config: Config,
    users: HashMap<String, UserEntry>,
    tokens: TokenSource,
    auth: Authenticator,
    registrar: Registrar,
    /// Keys are shared with the timer queue and the merge map, not copied: under a
    /// registration storm tens of thousands of transactions wait out Timer J.
    server_txs: HashMap<Arc<str>, ServerTransaction>,
    /// (Call-ID, From tag, CSeq, method) -> transaction key, for 482 (RFC 3261 8.2.2.2).
    merged: HashMap<Arc<str>, Arc<str>>,
    client_txs: HashMap<String, ClientTransaction>,
    /// INVITEs we sent, by branch, and the branch of each call we placed until it is
    /// answered or fails.
    outgoing: HashMap<String, outgoing::Outgoing>,
    outgoing_calls: HashMap<CallHandle, String>,
    /// Our re-INVITEs: per call, and their client transactions by branch.
    reinvites: HashMap<CallHandle, reinvite::ReInvite>,
    reinvite_txs: HashMap<String, reinvite::ReInviteTx>,
    /// Calls whose REFER subscription is active (one per call).
    refers: std::collections::HashSet<CallHandle>,
    calls: HashMap<CallHandle, Call>,
    dialogs: HashMap<DialogKey, CallHandle>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerTarget)>>,
    timer_seq: u64,
    housekeeping_at: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_handle: u64,
    stats: EndpointStats,
}

const HOUSEKEEPING: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("server_txs", &self.server_txs.len())
            .field("client_txs", &self.client_txs.len())
            .field("calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

/// Where a response to `via` goes (RFC 3261 18.2.2, RFC 3581 4): back over the
/// connection for reliable transports; else to the source IP, at the source port when
/// `rport` was requested and at the sent-by port otherwise.
fn response_route(top_via: Option<&Via>, source: SocketAddr, transport: Transport) -> Route {
    if transport.is_reliable() {
        return Route {
            destination: source,
            transport,
        };
    }
    let port = match top_via {
        Some(v) if v.rport().is_none() => v.port.unwrap_or(transport.default_port()),
        _ => source.port(),
    };
    Route {
        destination: SocketAddr::new(source.ip(), port),
        transport,
    }
}

fn body_of(req: &Request) -> Option<Body> {
    (!req.body.is_empty()).then(|| Body {
        content_type: req
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_string(),
        bytes: req.body.clone(),
    })
}

fn media_type(v: &str) -> String {
    v.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

impl Endpoint {
    /// Builds an endpoint; `now` is the epoch for nonce timestamps.
    pub fn new(config: Config, now: Instant) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                (
                    u.username.clone(),
                    UserEntry {
                        password: u.password.clone(),
                        realm: u.realm.clone().unwrap_or_else(|| config.realm.clone()),
                    },
                )
            })
            .collect();
        Self {
            tokens: TokenSource::new(config.seed),
            auth: Authenticator::new(config.auth.clone(), now),
            registrar: Registrar::new(config.registrar.clone()),
            users,
            config,
            server_txs: HashMap::new(),
            merged: HashMap::new(),
            client_txs: HashMap::new(),
            outgoing: HashMap::new(),
            outgoing_calls: HashMap::new(),
            reinvites: HashMap::new(),
            reinvite_txs: HashMap::new(),
            refers: std::collections::HashSet::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            housekeeping_at: now + HOUSEKEEPING,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_handle: 1,
            stats: EndpointStats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- driving interface ---------------------------------------------------------

    /// One UDP datagram (or any self-delimited message).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        // Bare CRLF keep-alives (RFC 5626 4.4.1 over UDP is STUN, but softphones send
        // CRLFs anyway): nothing to do.
        if bytes
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t' | 0))
        {
            return;
        }
        let result = parse(bytes, Framing::Datagram);
        if bytes.len() > self.config.max_message_size {
            self.reply_to_unparsed(now, source, transport, result, 513);
            return;
        }
        match result {
            Ok(Message::Request(req)) => self.handle_request(now, source, transport, req),
            Ok(Message::Response(resp)) => self.handle_response(now, resp),
            Err(failure) => {
                if let Some(status) = failure.status() {
                    self.stateless_error(now, source, transport, &failure, status);
                }
            }
        }
    }

    /// One complete message cut from a stream by [`crate::StreamFramer`].
    pub fn handle_message(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        self.handle_datagram(now, source, transport, bytes);
    }

    /// A stream framing error: queues 513 or 400 when the header section allows an
    /// answer. The shell closes the connection afterwards.
    pub fn handle_framing_error(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        error: &FramingError,
    ) {
        let (headers, status) = match error {
            FramingError::MessageTooLarge {
                headers: Some(h), ..
            } => (h, 513),
            FramingError::BadContentLength { headers } => (headers, 400),
            FramingError::MessageTooLarge { headers: None, .. } => return,
        };
        let mut head = headers.clone();
        // Strip the body-length claim so the header section parses on its own.
        head = strip_content_length(&head);
        let result = parse(&head, Framing::Stream);
        self.reply_to_unparsed(now, source, transport, result, status);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, target))) = self.timers.pop() else {
                break;
            };
            match target {
                TimerTarget::Server(key) => self.fire_server_timer(now, &key),
                TimerTarget::Client(branch) => self.fire_client_timer(now, &branch),
                TimerTarget::Answer(call, key) => self.fire_answer_timer(now, call, &key),
                TimerTarget::Invite(branch) => self.fire_invite_timer(now, &branch),
                TimerTarget::ReInvite(branch) => self.fire_reinvite_timer(now, &branch),
                TimerTarget::ReInviteRetry(call) => self.send_reinvite(now, call),
                TimerTarget::ReInviteExpiry(branch) => self.expire_reinvite(now, &branch),
            }
        }
        if now >= self.housekeeping_at {
            self.housekeeping_at = now + HOUSEKEEPING;
            self.auth.purge(now);
            for aor in self.registrar.purge(now) {
                self.events.push_back(Event::BindingsChanged { aor });
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] should next be called. May be early, never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
        Some(timer.map_or(self.housekeeping_at, |t| t.min(self.housekeeping_at)))
    }

    // ----- registrar access ----------------------------------------------------------

    /// Live bindings of a user, for routing calls to registered phones and for pings.
    pub fn bindings(&self, now: Instant, aor: &str) -> Vec<Binding> {
        self.registrar.bindings(now, aor)
    }

    /// Serialisable bindings; `unix_now` is the shell's wall clock reading at `now`.
    pub fn registrar_snapshot(&self, now: Instant, unix_now: u64) -> RegistrarSnapshot {
        self.registrar.snapshot(now, unix_now)
    }

    /// Reloads bindings saved by [`Endpoint::registrar_snapshot`].
    pub fn restore_registrar(&mut self, now: Instant, unix_now: u64, snapshot: &RegistrarSnapshot) {
        self.registrar.restore(now, unix_now, snapshot);
    }

    // ----- call commands -------------------------------------------------------------

    /// Sends 180 Ringing for the call's pending INVITE.
    pub fn ring(&mut self, now: Instant, call: CallHandle) -> Result<(), CallError> {
        self.provisional(now, call, 180)
    }

    /// Sends a provisional response (101-199) for the call's pending INVITE.
    pub fn provisional(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
    ) -> Result<(), CallError> {
        if !(101..=199).contains(&status) {
            return Err(CallError::BadStatus(status));
        }
        let c = self.calls.get(&call).ok_or(CallError::UnknownCall)?;
        if c.progress != InviteProgress::AwaitingAnswer {
            return Err(CallError::NothingToAnswer);
        }
        let (req, key, tag) = (
            c.invite.clone(),
            c.invite_tx.clone(),
            c.dialog.key.local_tag.clone(),
        );
        let contact = self.contact_header(c.dialog.peer.transport);
        self.respond(
            now,
            &key,
            &req,
            status,
            Some(&tag),
            &[("Contact", contact)],
            None,
        );
        Ok(())
    }

    /// Answers the pending INVITE (initial or re-INVITE) with 200 and a body.
    pub fn answer(&mut self, now: Instant, call: CallHandle, body: Body) -> Result<(), CallError> {
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        if c.progress != InviteProgress::AwaitingAnswer {
            return Err(CallError::NothingToAnswer);
        }
        c.progress = InviteProgress::AwaitingAck;
        c.dialog.state = DialogState::Confirmed;
        let (req, key, tag, transport) = (
            c.invite.clone(),
            c.invite_tx.clone(),
            c.dialog.key.local_tag.clone(),
            c.dialog.peer.transport,
        );
        let headers = [
            ("Contact", self.contact_header(transport)),
            ("Allow", ALLOW.to_string()),
            ("Supported", String::new()),
        ];
        self.respond(now, &key, &req, 200, Some(&tag), &headers, Some(&body));
        Ok(())
    }

    /// Rejects the pending INVITE with a final status (300-699). Rejecting the initial
    /// INVITE ends the call; rejecting a re-INVITE keeps the dialog (RFC 3261 14.2).
    pub fn reject(&mut self, now: Instant, call: CallHandle, status: u16) -> Result<(), CallError> {
        if !(300..=699).contains(&status) {
            return Err(CallError::BadStatus(status));
        }
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        if c.progress != InviteProgress::AwaitingAnswer {
            return Err(CallError::NothingToAnswer);
        }
        c.progress = InviteProgress::Idle;
        let (req, key, tag, initial) = (
            c.invite.clone(),
            c.invite_tx.clone(),
            c.dialog.key.local_tag.clone(),
            c.initial,
        );
        let extra: Vec<(&str, String)> = match status {
            491 | 500 | 503 | 480 | 486 | 600 => vec![("Retry-After", "1".to_string())],
            _ => Vec::new(),
        };
        self.respond(now, &key, &req, status, Some(&tag), &extra, None);
        if initial {
            self.end_call(call, EndReason::Rejected(status));
        } else {
            self.send_reinvite(now, call);
        }
        Ok(())
    }

    /// Ends the call: 480 before an answer, BYE after (deferred until the ACK if the
    /// 2xx is not yet acknowledged, RFC 3261 15).
    pub fn hangup(&mut self, now: Instant, call: CallHandle) -> Result<(), CallError> {
        if self.is_unanswered_outgoing(call) {
            return self.cancel(now, call);
        }
        let c = self.calls.get_mut(&call).ok_or(CallError::UnknownCall)?;
        match (c.initial, c.progress) {
            (true, InviteProgress::AwaitingAnswer) => self.reject(now, call, 480),
            (true, InviteProgress::AwaitingAck) => {
                c.hangup_after_ack = true;
                Ok(())
            }
            (false, InviteProgress::AwaitingAnswer) => {
                self.reject(now, call, 487)?;
                self.send_bye(now, call, EndReason::LocalHangup);
                Ok(())
            }
            _ => {
                self.send_bye(now, call, EndReason::LocalHangup);
                Ok(())
            }
        }
    }

    /// Sends an out-of-dialog OPTIONS (keep-alive ping to a NATed contact).
    pub fn send_options(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        transport: Transport,
        request_uri: &str,
    ) -> Result<RequestHandle, CallError> {
        let uri = Uri::parse(request_uri).map_err(|_| CallError::BadUri)?;
        if uri.as_sip().is_none() {
            return Err(CallError::BadUri);
        }
        let branch = self.new_branch();
        let via = self.via_value(transport, &branch);
        let tag = self.tokens.next_hex("tag", 16);
        let call_id = format!(
            "{}@{}",
            self.tokens.next_hex("call-id", 24),
            self.config.advertised_host
        );
        let host = crate::uri::Host::from_name(&self.config.advertised_host);
        let mut s = String::with_capacity(400);
        let _ = write!(
            s,
            "OPTIONS {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        );
        let _ = write!(s, "From: <sip:{host}>;tag={tag}\r\nTo: <{uri}>\r\n");
        let _ = write!(s, "Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n");
        let _ = write!(
            s,
            "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            self.config.user_agent
        );
        let handle = RequestHandle(self.next_id());
        self.start_client(
            now,
            branch,
            s.into_bytes(),
            Route {
                destination,
                transport,
            },
            handle,
            ClientPurpose::Options,
        );
        Ok(handle)
    }

    // ----- inbound requests ----------------------------------------------------------

    fn handle_request(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        req: Request,
    ) {
        let route = response_route(Some(req.top_via()), source, transport);
        *self
            .stats
            .requests
            .entry(method_label(&req.method))
            .or_default() += 1;
        if self.auth.is_blocked(now, source.ip(), &claimed_user(&req)) {
            self.stats.blocked_requests += 1;
            if self.auth.policy().block_action == BlockAction::Forbidden
                && req.method != Method::Ack
            {
                let bytes =
                    build_response(&req, 403, None, &[], None, source, &self.config.user_agent);
                self.send(route, bytes);
            }
            return;
        }
        if req.method == Method::Ack {
            self.handle_ack(now, &req);
            return;
        }
        let key: Arc<str> = transaction_key(&req, &req.method).into();
        if let Some(tx) = self.server_txs.get(&key) {
            // RFC 3261 17.2.1 / 17.2.2: a retransmission; resend the last response.
            if let Some(bytes) = tx.on_request_retransmission() {
                self.send(tx.route, bytes);
            }
            return;
        }
        if self.server_txs.len() >= self.config.max_server_transactions {
            // Overloaded: refuse without keeping state (RFC 3261 21.5.4); the
            // Retry-After spreads the retries out.
            self.stats.transaction_overload += 1;
            if req.method != Method::Cancel {
                let tag = req.to.tag().is_none().then(|| self.derived_tag(&key));
                let bytes = build_response(
                    &req,
                    503,
                    tag.as_ref(),
                    &[("Retry-After", "5".to_string())],
                    None,
                    route.destination,
                    &self.config.user_agent,
                );
                self.send(route, bytes);
            }
            return;
        }
        let kind = if req.method == Method::Invite {
            ServerKind::Invite
        } else {
            ServerKind::NonInvite
        };
        self.server_txs
            .insert(key.clone(), ServerTransaction::new(kind, route));
        // RFC 3261 8.2.2.2: same From tag, Call-ID and CSeq on a different transaction
        // without a To tag is a merged request.
        if req.to.tag().is_none() && req.method != Method::Cancel {
            let merge_key: Arc<str> = format!(
                "{}|{}|{}|{}",
                req.call_id,
                req.from.tag().unwrap_or_default(),
                req.cseq.seq,
                req.method
            )
            .into();
            match self.merged.get(&merge_key) {
                Some(other) if *other != key && self.server_txs.contains_key(other) => {
                    self.respond_stateless(&key, &req, 482, &[]);
                    return;
                }
                _ => {
                    if let Some(tx) = self.server_txs.get_mut(&key) {
                        tx.merge_key = Some(merge_key.clone());
                    }
                    self.merged.insert(merge_key, key.clone());
                }
            }
        }
        self.process_request(now, &key, req, source, transport);
    }

    fn process_request(
        &mut self,
        now: Instant,
        key: &str,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        if req.method == Method::Cancel {
            self.handle_cancel(now, key, &req);
            return;
        }
        // RFC 3261 8.2.2.1: only SIP/SIPS Request-URIs.
        if req.uri.as_sip().is_none() {
            self.respond_stateless(key, &req, 416, &[]);
            return;
        }
        // RFC 3261 8.2.1: methods we do not implement.
        let implemented = matches!(
            req.method,
            Method::Invite
                | Method::Bye
                | Method::Options
                | Method::Register
                | Method::Info
                | Method::Subscribe
                | Method::Message
                | Method::Refer
                | Method::Notify
        );
        if !implemented {
            self.respond_stateless(key, &req, 501, &[("Allow", ALLOW.to_string())]);
            return;
        }
        // RFC 3261 8.2.2.3: we support no extensions, so every Require tag is unknown.
        let required = req.headers.list("Require");
        if !required.is_empty() {
            let unsupported = required.join(", ");
            self.respond_stateless(key, &req, 420, &[("Unsupported", unsupported)]);
            return;
        }
        if req.method == Method::Invite {
            if let Some(status) = self.check_invite_content(&req) {
                let accept = self.config.accepted_content_types.join(", ");
                self.respond_stateless(key, &req, status, &[("Accept", accept)]);
                return;
            }
        }
        if req.to.tag().is_some() && req.method != Method::Register {
            self.handle_in_dialog(now, key, req);
            return;
        }
        match req.method {
            Method::Register => self.handle_register(now, key, &req, source, transport),
            Method::Invite => self.handle_invite(now, key, req, source, transport),
            // Out of a dialog, OPTIONS (a scanner's favourite probe) and every refusal
            // are answered statelessly: no transaction waits out Timer J for them.
            Method::Options => {
                let headers = self.capability_headers();
                self.respond_stateless(key, &req, 200, &headers);
            }
            // Instant messages are not part of this product: say so (RFC 3428 allows 405).
            Method::Message => {
                self.respond_stateless(key, &req, 405, &[("Allow", ALLOW.to_string())])
            }
            // RFC 6665 4.2.1.1: no event packages supported.
            Method::Subscribe => self.respond_stateless(key, &req, 489, &[]),
            // BYE / INFO outside a dialog (RFC 3261 12.2.2).
            _ => self.respond_stateless(key, &req, 481, &[]),
        }
    }

    /// RFC 3261 8.2.3 (415) and 8.2.1-style Accept check (406, RFC 4475 3.3.15).
    fn check_invite_content(&self, req: &Request) -> Option<u16> {
        let accepted = |t: &str| {
            self.config
                .accepted_content_types
                .iter()
                .any(|a| a.eq_ignore_ascii_case(t))
        };
        if !req.body.is_empty() {
            let ct = req.content_type().map(media_type).unwrap_or_default();
            if !accepted(&ct) {
                return Some(415);
            }
            if let Some(enc) = req.headers.first("Content-Encoding") {
                if !enc.trim().eq_ignore_ascii_case("identity") {
                    return Some(415);
                }
            }
        }
        let accept = req.headers.list("Accept");
        if !accept.is_empty() {
            let ok = accept.iter().any(|a| {
                let t = media_type(a);
                t == "*/*"
                    || accepted(&t)
                    || self.config.accepted_content_types.iter().any(|c| {
                        c.split('/')
                            .next()
                            .is_some_and(|major| t == format!("{}/*", major.to_ascii_lowercase()))
                    })
            });
            if !ok {
                return Some(406);
            }
        }
        None
    }

    fn capability_headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("Allow", ALLOW.to_string()),
            ("Accept", self.config.accepted_content_types.join(", ")),
            ("Accept-Encoding", "identity".to_string()),
            ("Supported", String::new()),
        ]
    }

    fn handle_cancel(&mut self, now: Instant, key: &str, req: &Request) {
        let invite_key = transaction_key(req, &Method::Invite);
        // CANCEL is answered statelessly: a retransmitted CANCEL finds the INVITE
        // already answered and just gets its 200 again.
        let Some(invite_tx) = self.server_txs.get(invite_key.as_str()) else {
            // RFC 3261 9.2: no matching transaction.
            self.respond_stateless(key, req, 481, &[]);
            return;
        };
        let call = invite_tx.call;
        let has_final = invite_tx.has_final();
        // RFC 3261 9.2: the 200 carries the To tag the INVITE's responses carry.
        let tag = call
            .and_then(|h| self.calls.get(&h))
            .map(|c| c.dialog.key.local_tag.clone());
        self.respond_stateless_tagged(key, req, 200, &[], tag);
        if has_final {
            return;
        }
        let Some(handle) = call else {
            return;
        };
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        c.progress = InviteProgress::Idle;
        let (invite, tag, initial) = (c.invite.clone(), c.dialog.key.local_tag.clone(), c.initial);
        self.respond(now, &invite_key, &invite, 487, Some(&tag), &[], None);
        if initial {
            self.remove_call(handle);
            self.events.push_back(Event::CallCancelled { call: handle });
        } else {
            self.send_reinvite(now, handle);
        }
    }

    fn handle_ack(&mut self, now: Instant, req: &Request) {
        let key = transaction_key(req, &Method::Invite);
        let timers = self.config.timers;
        if let Some(tx) = self.server_txs.get_mut(key.as_str()) {
            if tx.state == crate::transaction::ServerState::Completed {
                tx.on_ack(now, &timers);
                self.schedule_server(&key);
                return;
            }
        }
        // ACK for a 2xx: a new transaction matched to the dialog (RFC 3261 13.3.1.4).
        let Some(handle) = self.find_dialog(req) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&handle) else {
            return;
        };
        if c.progress != InviteProgress::AwaitingAck || req.cseq.seq != c.invite.cseq.seq {
            return;
        }
        c.progress = InviteProgress::Idle;
        let (tx_key, initial, hangup) = (c.invite_tx.clone(), c.initial, c.hangup_after_ack);
        if let Some(tx) = self.server_txs.get_mut(tx_key.as_str()) {
            tx.on_ack(now, &timers);
        }
        self.schedule_server(&tx_key);
        if initial {
            self.events.push_back(Event::CallConfirmed {
                call: handle,
                body: body_of(req),
            });
        }
        if hangup {
            self.send_bye(now, handle, EndReason::LocalHangup);
        } else {
            // The peer's INVITE transaction is over: a re-INVITE of ours may go.
            self.send_reinvite(now, handle);
        }
    }

    fn find_dialog(&self, req: &Request) -> Option<CallHandle> {
        let key = DialogKey {
            call_id: req.call_id.clone(),
            local_tag: Tag::new(req.to.tag()?),
            remote_tag: Tag::new(req.from.tag().unwrap_or_default()),
        };
        self.dialogs.get(&key).copied()
    }

    fn handle_in_dialog(&mut self, now: Instant, key: &str, req: Request) {
        let Some(call) = self
            .find_dialog(&req)
            .and_then(|handle| self.calls.get_mut(&handle))
        else {
            self.respond_stateless(key, &req, 481, &[]);
            return;
        };
        let handle = call.handle;
        // RFC 3261 12.2.2: lower CSeq than the last one is out of order.
        if req.cseq.seq <= call.dialog.remote_cseq {
            self.respond(
                now,
                key,
                &req,
                500,
                None,
                &[("Retry-After", "1".to_string())],
                None,
            );
            return;
        }
        call.dialog.remote_cseq = req.cseq.seq;
        match req.method {
            Method::Bye => {
                let pending = (call.progress == InviteProgress::AwaitingAnswer).then(|| {
                    (
                        call.invite.clone(),
                        call.invite_tx.clone(),
                        call.dialog.key.local_tag.clone(),
                    )
                });
                self.respond(now, key, &req, 200, None, &[], None);
                // RFC 3261 15.1.2: a pending INVITE gets 487.
                if let Some((invite, tx, tag)) = pending {
                    self.respond(now, &tx, &invite, 487, Some(&tag), &[], None);
                }
                self.end_call(handle, EndReason::RemoteBye);
            }
            Method::Invite => {
                // RFC 3261 14.2: an INVITE while another INVITE transaction of this dialog
                // is in progress gets 491 (as PJSIP does also while our 2xx awaits ACK),
                // ours included.
                let ours_in_flight = self.reinvite_in_flight(handle);
                let Some(call) = self.calls.get_mut(&handle) else {
                    return;
                };
                if call.progress != InviteProgress::Idle || ours_in_flight {
                    self.respond(
                        now,
                        key,
                        &req,
                        491,
                        None,
                        &[("Retry-After", "1".to_string())],
                        None,
                    );
                    return;
                }
                call.progress = InviteProgress::AwaitingAnswer;
                call.initial = false;
                call.invite = req.clone();
                call.invite_tx = key.to_string();
                if let Ok(Some(crate::uri::ContactList::Addresses(list))) = req.contacts() {
                    if let Some(first) = list.first() {
                        call.dialog.remote_target = first.uri.clone();
                    }
                }
                if let Some(tx) = self.server_txs.get_mut(key) {
                    tx.call = Some(handle);
                }
                // Ours, if it waits out a 491, is replaced by this one (14.1).
                self.supersede_reinvite(handle);
                self.push_timer(
                    now + self.config.max_ringing,
                    TimerTarget::Answer(handle, key.to_string()),
                );
                self.respond(now, key, &req, 100, None, &[], None);
                self.events.push_back(Event::ReInvite {
                    call: handle,
                    body: body_of(&req),
                });
            }
            Method::Info => {
                self.respond(now, key, &req, 200, None, &[], None);
                self.events.push_back(Event::Info {
                    call: handle,
                    body: body_of(&req),
                });
            }
            Method::Options => {
                let headers = self.capability_headers();
                self.respond(now, key, &req, 200, None, &headers, None);
            }
            Method::Subscribe => self.respond(now, key, &req, 489, None, &[], None),
            Method::Refer => self.handle_refer(now, key, &req, handle),
            // No subscription of ours for the peer to notify (RFC 6665 4.1.3).
            Method::Notify => self.respond(now, key, &req, 481, None, &[], None),
            _ => self.respond(
                now,
                key,
                &req,
                405,
                None,
                &[("Allow", ALLOW.to_string())],
                None,
            ),
        }
    }

    fn handle_register(
        &mut self,
        now: Instant,
        key: &str,
        req: &Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        // RFC 3261 10.3 step 5: the To header must be a valid AOR.
        let Some(to_uri) = req.to.uri.as_sip() else {
            self.respond_stateless(key, req, 400, &[]);
            return;
        };
        let aor = to_uri.user_decoded().unwrap_or_default();
        if self.config.auth_register {
            let Some(user) = self.authenticate(now, key, req, source, &aor) else {
                return;
            };
            // RFC 3261 10.3 step 4: the authenticated user must own the AOR.
            if user != aor {
                self.respond_stateless(key, req, 403, &[]);
                return;
            }
        } else if !self.users.contains_key(&aor) {
            self.respond_stateless(key, req, 404, &[]);
            return;
        }
        let changes = !matches!(req.contacts(), Ok(None));
        let result = self.registrar.register(
            now,
            &aor,
            req,
            RegisterSource {
                addr: source,
                transport,
            },
        );
        match result {
            Ok(bindings) => {
                let mut headers: Vec<(&str, String)> = bindings
                    .iter()
                    .map(|b| {
                        let mut v =
                            format!("<{}>;expires={}", b.contact, b.expires_in(now).as_secs());
                        if let Some(i) = &b.instance {
                            let _ = write!(v, ";+sip.instance={}", quote(i));
                        }
                        if let Some(r) = b.reg_id {
                            let _ = write!(v, ";reg-id={r}");
                        }
                        ("Contact", v)
                    })
                    .collect();
                headers.push((
                    "Expires",
                    self.registrar.limits().default_expires.to_string(),
                ));
                self.respond(now, key, req, 200, None, &headers, None);
                if changes {
                    self.events.push_back(Event::BindingsChanged { aor });
                }
            }
            Err(e) => {
                let headers: Vec<(&str, String)> = match e {
                    crate::registrar::RegisterError::IntervalTooBrief { min_expires } => {
                        vec![("Min-Expires", min_expires.to_string())]
                    }
                    _ => Vec::new(),
                };
                self.respond_stateless(key, req, e.status(), &headers);
            }
        }
    }

    /// Digest-authenticates `req`; on failure the 401/403 is already sent and `None`
    /// returned. `target_user` picks the realm of the challenge.
    fn authenticate(
        &mut self,
        now: Instant,
        key: &str,
        req: &Request,
        source: SocketAddr,
        target_user: &str,
    ) -> Option<String> {
        let default_realm = self.config.realm.clone();
        let challenge_realm = self
            .users
            .get(target_user)
            .map_or(default_realm.clone(), |u| u.realm.clone());
        let creds = req
            .headers
            .all("Authorization")
            .find_map(|v| DigestCredentials::parse(v).ok());
        let Some(creds) = creds else {
            self.challenge(now, key, req, &challenge_realm, false);
            return None;
        };
        let (password, realm) = match self.users.get(&creds.username) {
            Some(u) => (Some(u.password.clone()), u.realm.clone()),
            None => (None, default_realm),
        };
        let verdict = self.auth.verify(
            now,
            req.method.as_str(),
            &creds,
            &realm,
            password.as_deref(),
            source.ip(),
            &self.tokens,
        );
        match verdict {
            Verdict::Authenticated(user) => Some(user),
            Verdict::Stale => {
                self.challenge(now, key, req, &realm, true);
                None
            }
            Verdict::Replay => {
                self.challenge(now, key, req, &realm, false);
                None
            }
            Verdict::Failed => {
                self.stats.auth_failures += 1;
                self.auth.record_failure(now, source.ip(), &creds.username);
                // Unknown user and wrong password get the same fresh challenge.
                self.challenge(now, key, req, &challenge_realm, false);
                None
            }
            // Not a nonce this source was sent: nothing to count, just a new challenge
            // (the same answer as a counted failure, so it reveals nothing).
            Verdict::Unverified => {
                self.challenge(now, key, req, &challenge_realm, false);
                None
            }
        }
    }

    /// Answers 401 statelessly, as RFC 3261 26.3.2.4 recommends toward unauthenticated
    /// requests: one response, no retransmission, and no transaction left behind. A
    /// retransmitted request gets a fresh challenge with the same To tag (derived from
    /// the transaction key), and a flood of unauthenticated requests costs no memory; a
    /// transaction would otherwise live for Timer J (32 s on UDP) holding its 401.
    fn challenge(&mut self, now: Instant, key: &str, req: &Request, realm: &str, stale: bool) {
        let Some(route) = self.server_txs.get(key).map(|tx| tx.route) else {
            return;
        };
        // The nonce is bound to where the challenge goes: only that source can use it.
        let values = self
            .auth
            .challenge(now, realm, stale, route.destination.ip(), &self.tokens);
        let headers: Vec<(&str, String)> = values
            .into_iter()
            .map(|v| ("WWW-Authenticate", v))
            .collect();
        self.respond_stateless(key, req, 401, &headers);
    }

    /// Answers without keeping the transaction (RFC 3261 8.2.7 allows a stateless UAS):
    /// a retransmitted request is simply answered again, with the same To tag (derived
    /// from the transaction key), so unauthenticated floods and refusals cost no memory.
    fn respond_stateless(
        &mut self,
        key: &str,
        req: &Request,
        status: u16,
        extra: &[(&str, String)],
    ) {
        self.respond_stateless_tagged(key, req, status, extra, None);
    }

    /// As [`Self::respond_stateless`], with a given To tag instead of the derived one.
    fn respond_stateless_tagged(
        &mut self,
        key: &str,
        req: &Request,
        status: u16,
        extra: &[(&str, String)],
        tag: Option<Tag>,
    ) {
        let Some(tx) = self.forget_server_transaction(key) else {
            return;
        };
        let to_tag = (status > 100 && req.to.tag().is_none())
            .then(|| tag.unwrap_or_else(|| self.derived_tag(key)));
        let bytes = build_response(
            req,
            status,
            to_tag.as_ref(),
            extra,
            None,
            tx.route.destination,
            &self.config.user_agent,
        );
        self.send(tx.route, bytes);
    }

    /// Removes a server transaction and its entry in the merged-request map.
    fn forget_server_transaction(&mut self, key: &str) -> Option<ServerTransaction> {
        let tx = self.server_txs.remove(key)?;
        if let Some(merge_key) = &tx.merge_key {
            if self.merged.get(merge_key).is_some_and(|k| **k == *key) {
                self.merged.remove(merge_key);
            }
        }
        Some(tx)
    }

    fn handle_invite(
        &mut self,
        now: Instant,
        key: &str,
        req: Request,
        source: SocketAddr,
        transport: Transport,
    ) {
        let from_user = req
            .from
            .uri
            .as_sip()
            .and_then(|u| u.user_decoded())
            .unwrap_or_default();
        // Admission after the challenge: the challenge is stateless and cheap, and a
        // caller is told "try later" only once it has shown it may call at all.
        let authenticated_user = if self.config.auth_invite {
            match self.authenticate(now, key, &req, source, &from_user) {
                Some(u) => Some(u),
                None => return,
            }
        } else {
            None
        };
        if self.calls.len() >= self.config.max_calls {
            self.stats.max_calls_rejects += 1;
            self.respond_stateless(key, &req, 503, &[("Retry-After", "5".to_string())]);
            return;
        }
        if let Some(user) = &authenticated_user {
            let of_user = self
                .calls
                .values()
                .filter(|c| c.caller.as_deref() == Some(user.as_str()))
                .count();
            if of_user >= self.config.max_calls_per_user {
                self.stats.max_calls_per_user_rejects += 1;
                self.respond_stateless(key, &req, 486, &[("Retry-After", "5".to_string())]);
                return;
            }
        }
        let handle = CallHandle(self.next_id());
        let local_tag = Tag::new(self.tokens.next_hex("tag", 16));
        let Some(route) = self.server_txs.get(key).map(|tx| tx.route) else {
            return;
        };
        // In-dialog requests go back to where the INVITE came from (symmetric signalling).
        let peer = Route {
            destination: if transport.is_reliable() {
                source
            } else {
                route.destination
            },
            transport,
        };
        let local_cseq = (self.tokens.next_counter() as u32) & 0xffff;
        let dialog = Dialog::from_invite(&req, local_tag, peer, local_cseq);
        self.dialogs.insert(dialog.key.clone(), handle);
        if let Some(tx) = self.server_txs.get_mut(key) {
            tx.call = Some(handle);
        }
        let event = IncomingCall {
            call: handle,
            user: req.uri.as_sip().and_then(|u| u.user_decoded()),
            request_uri: req.uri.to_string(),
            from: req.from.uri.to_string(),
            from_display: req.from.display_name(),
            authenticated_user,
            call_id: req.call_id.clone(),
            source,
            transport,
            body: body_of(&req),
        };
        self.calls.insert(
            handle,
            Call {
                handle,
                dialog,
                progress: InviteProgress::AwaitingAnswer,
                invite: req.clone(),
                invite_tx: key.to_string(),
                initial: true,
                hangup_after_ack: false,
                caller: event.authenticated_user.clone(),
                call_id_owner: false,
            },
        );
        self.push_timer(
            now + self.config.max_ringing,
            TimerTarget::Answer(handle, key.to_string()),
        );
        // RFC 3261 17.2.1: 100 Trying right away so the caller stops retransmitting.
        self.respond(now, key, &req, 100, None, &[], None);
        self.events.push_back(Event::IncomingCall(event));
    }

    // ----- inbound responses ---------------------------------------------------------

    fn handle_response(&mut self, now: Instant, resp: Response) {
        let Some(branch) = resp.via.first().and_then(|v| v.branch()) else {
            return;
        };
        let branch = branch.to_string();
        // RFC 3261 17.1.3: a response matches by branch and CSeq method (a CANCEL shares
        // its INVITE's branch).
        match resp.cseq.method {
            Method::Invite if self.is_reinvite_branch(&branch) => {
                self.handle_reinvite_response(now, &branch, resp);
                return;
            }
            Method::Invite => {
                self.handle_invite_response(now, &branch, resp);
                return;
            }
            Method::Cancel => {
                let key = format!("{branch}|CANCEL");
                if let Some(tx) = self.client_txs.get_mut(&key) {
                    let timers = self.config.timers;
                    tx.on_response(now, resp.status, &timers);
                    self.schedule_client(&key);
                }
                return;
            }
            _ => {}
        }
        let timers = self.config.timers;
        let Some(tx) = self.client_txs.get_mut(&branch) else {
            // RFC 3261 18.1.2: no transaction; an endpoint discards it (RFC 4475 3.3.10).
            return;
        };
        if let Some(status) = tx.on_response(now, resp.status, &timers) {
            if matches!(tx.purpose, ClientPurpose::Options | ClientPurpose::InDialog) {
                self.events.push_back(Event::RequestCompleted {
                    request: tx.handle,
                    status: Some(status),
                });
            }
        }
        self.schedule_client(&branch);
    }

    // ----- sending ---------------------------------------------------------------------

    /// Builds and sends a response through the server transaction `key`.
    #[allow(clippy::too_many_arguments)] // reason: a response is status + headers + body
    fn respond(
        &mut self,
        now: Instant,
        key: &str,
        req: &Request,
        status: u16,
        to_tag: Option<&Tag>,
        extra: &[(&str, String)],
        body: Option<&Body>,
    ) {
        let generated;
        let to_tag = match to_tag {
            Some(t) => Some(t),
            None if status > 100 && req.to.tag().is_none() => {
                generated = self.derived_tag(key);
                Some(&generated)
            }
            None => None,
        };
        let Some(tx) = self.server_txs.get(key) else {
            return;
        };
        let route = tx.route;
        let source = route.destination;
        let bytes = build_response(
            req,
            status,
            to_tag,
            extra,
            body,
            source,
            &self.config.user_agent,
        );
        let timers = self.config.timers;
        let Some(tx) = self.server_txs.get_mut(key) else {
            return;
        };
        if tx.respond(now, status, bytes.clone(), &timers) {
            self.send(route, bytes);
            self.schedule_server(key);
        }
    }

    /// A To tag that is stable for one transaction, so retransmitted answers match.
    fn derived_tag(&self, key: &str) -> Tag {
        let mac = self.tokens.mac(&[b"to-tag", key.as_bytes()]);
        Tag::new(hex::encode(&mac[..8]))
    }

    fn stateless_error(
        &mut self,
        _now: Instant,
        source: SocketAddr,
        transport: Transport,
        failure: &ParseFailure,
        status: u16,
    ) {
        let Some(raw) = &failure.request else {
            return;
        };
        if raw.method == "ACK" {
            return;
        }
        let top_via = raw
            .headers
            .all("Via")
            .next()
            .and_then(|v| crate::syntax::split_top_level(v, ',').ok())
            .and_then(|parts| parts.first().and_then(|p| Via::parse(p).ok()));
        let route = response_route(top_via.as_ref(), source, transport);
        let bytes = build_raw_response(
            &raw.headers,
            status,
            source,
            &self.config.user_agent,
            &self.derived_tag(&format!("{source}")),
        );
        self.send(route, bytes);
    }

    fn reply_to_unparsed(
        &mut self,
        now: Instant,
        source: SocketAddr,
        transport: Transport,
        result: Result<Message, ParseFailure>,
        status: u16,
    ) {
        match result {
            Ok(Message::Request(req)) if req.method != Method::Ack => {
                let route = response_route(Some(req.top_via()), source, transport);
                let tag = self.derived_tag(&format!("{source}"));
                let tag = req.to.tag().is_none().then_some(&tag);
                let bytes = build_response(
                    &req,
                    status,
                    tag,
                    &[],
                    None,
                    source,
                    &self.config.user_agent,
                );
                self.send(route, bytes);
            }
            Err(failure) if failure.request.is_some() => {
                self.stateless_error(now, source, transport, &failure, status);
            }
            _ => {}
        }
    }

    fn send(&mut self, route: Route, bytes: Vec<u8>) {
        if let Some(code) = bytes
            .strip_prefix(b"SIP/2.0 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u16>().ok())
        {
            *self.stats.responses.entry(code).or_default() += 1;
        }
        self.transmits.push_back(Transmit {
            destination: route.destination,
            transport: route.transport,
            bytes,
        });
    }

    fn contact_header(&self, transport: Transport) -> String {
        let host = crate::uri::Host::from_name(&self.config.advertised_host);
        match transport {
            Transport::Udp => format!("<sip:{host}:{}>", self.config.udp_port),
            Transport::Tcp => format!("<sip:{host}:{};transport=tcp>", self.config.tcp_port),
            // sip: with transport=tls rather than sips: (RFC 5630 6.3): sips: promises
            // TLS on every hop to the end, which the switch cannot promise for the
            // other leg, and phones (baresip) fail the dialog on a sips: Contact.
            Transport::Tls => format!("<sip:{host}:{};transport=tls>", self.config.tls_port),
        }
    }

    fn via_value(&self, transport: Transport, branch: &str) -> String {
        let host = crate::uri::Host::from_name(&self.config.advertised_host);
        let port = match transport {
            Transport::Udp => self.config.udp_port,
            Transport::Tcp => self.config.tcp_port,
            Transport::Tls => self.config.tls_port,
        };
        format!(
            "SIP/2.0/{} {host}:{port};branch={branch};rport",
            transport.via_token()
        )
    }

    fn new_branch(&mut self) -> String {
        format!(
            "{BRANCH_MAGIC_COOKIE}{}",
            self.tokens.next_hex("branch", 20)
        )
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_handle;
        self.next_handle += 1;
        id
    }

    fn send_bye(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let transport = call.dialog.peer.transport;
        let branch = self.new_branch();
        let via = self.via_value(transport, &branch);
        let ua = self.config.user_agent.clone();
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let bytes = call.dialog.build_request(Method::Bye, &via, &ua);
        let route = call.dialog.peer;
        let request = RequestHandle(self.next_id());
        self.start_client(
            now,
            branch,
            bytes,
            route,
            request,
            ClientPurpose::Bye(handle),
        );
        self.end_call(handle, reason);
    }

    fn start_client(
        &mut self,
        now: Instant,
        branch: String,
        bytes: Vec<u8>,
        route: Route,
        handle: RequestHandle,
        purpose: ClientPurpose,
    ) {
        let tx = ClientTransaction::new(
            now,
            bytes.clone(),
            route,
            handle,
            purpose,
            &self.config.timers,
        );
        self.client_txs.insert(branch.clone(), tx);
        self.send(route, bytes);
        self.schedule_client(&branch);
    }

    fn end_call(&mut self, handle: CallHandle, reason: EndReason) {
        if self.remove_call(handle) {
            self.events.push_back(Event::CallEnded {
                call: handle,
                reason,
            });
        }
    }

    fn remove_call(&mut self, handle: CallHandle) -> bool {
        self.reinvites.remove(&handle);
        self.refers.remove(&handle);
        match self.calls.remove(&handle) {
            Some(call) => {
                self.dialogs.remove(&call.dialog.key);
                true
            }
            None => false,
        }
    }

    // ----- timers ----------------------------------------------------------------------

    fn push_timer(&mut self, at: Instant, target: TimerTarget) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, target)));
    }

    fn schedule_server(&mut self, key: &str) {
        let due = self
            .server_txs
            .get_key_value(key)
            .and_then(|(key, tx)| Some((tx.deadline()?, key.clone())));
        if let Some((at, key)) = due {
            self.push_timer(at, TimerTarget::Server(key));
        }
    }

    fn schedule_client(&mut self, branch: &str) {
        let Some(tx) = self.client_txs.get(branch) else {
            return;
        };
        if let Some(at) = tx.deadline() {
            self.push_timer(at, TimerTarget::Client(branch.to_string()));
        }
    }

    fn fire_server_timer(&mut self, now: Instant, key: &str) {
        let timers = self.config.timers;
        let Some(tx) = self.server_txs.get_mut(key) else {
            return;
        };
        // Entries for superseded deadlines are skipped; the live one is also queued.
        if tx.deadline().is_none_or(|d| d > now) {
            return;
        }
        let out = tx.on_timer(now, &timers);
        let (route, call, terminated) = (tx.route, tx.call, tx.is_terminated());
        if let Some(bytes) = out.retransmit {
            self.send(route, bytes);
        }
        if terminated {
            self.forget_server_transaction(key);
            if out.ack_timeout {
                if let Some(handle) = call {
                    let awaiting_ack = self.calls.get(&handle).is_some_and(|c| {
                        c.invite_tx == key && c.progress == InviteProgress::AwaitingAck
                    });
                    if awaiting_ack {
                        // RFC 3261 13.3.1.4: no ACK for the 2xx; end the session with BYE.
                        self.send_bye(now, handle, EndReason::AckTimeout);
                    }
                }
            }
        } else {
            self.schedule_server(key);
        }
    }

    /// An INVITE still unanswered at `max_ringing`: the application is stuck or lost
    /// it, and the caller must not ring (and hold state here) forever.
    fn fire_answer_timer(&mut self, now: Instant, call: CallHandle, key: &str) {
        let pending = self
            .calls
            .get(&call)
            .filter(|c| c.invite_tx == key && c.progress == InviteProgress::AwaitingAnswer)
            .map(|c| c.initial);
        let Some(initial) = pending else {
            return;
        };
        self.stats.unanswered_invites += 1;
        let status = if initial { 408 } else { 500 };
        let _ = self.reject(now, call, status);
    }

    fn fire_client_timer(&mut self, now: Instant, branch: &str) {
        let timers = self.config.timers;
        let Some(tx) = self.client_txs.get_mut(branch) else {
            return;
        };
        if tx.deadline().is_none_or(|d| d > now) {
            return;
        }
        let out = tx.on_timer(now, &timers);
        let (route, handle, purpose, terminated) =
            (tx.route, tx.handle, tx.purpose, tx.is_terminated());
        if let Some(bytes) = out.retransmit {
            self.send(route, bytes);
        }
        if out.timed_out && matches!(purpose, ClientPurpose::Options | ClientPurpose::InDialog) {
            self.events.push_back(Event::RequestCompleted {
                request: handle,
                status: None,
            });
        }
        if terminated {
            self.client_txs.remove(branch);
        } else {
            self.schedule_client(branch);
        }
    }

    /// Number of live server and client transactions (for tests and metrics).
    pub fn transaction_count(&self) -> (usize, usize) {
        (
            self.server_txs.len(),
            self.client_txs.len() + self.outgoing.len(),
        )
    }

    /// Number of live calls.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// What the endpoint has counted so far.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// (source, user) pairs and sources blocked now, and failure records held.
    pub fn blocking(&self, now: Instant) -> (usize, usize) {
        (self.auth.blocked_count(now), self.auth.tracked())
    }
}

/// The user a request claims to be, for blocking: the Authorization username when
/// there is one, else the From user.
fn claimed_user(req: &Request) -> String {
    req.headers
        .all("Authorization")
        .find_map(|v| DigestCredentials::parse(v).ok())
        .map(|c| c.username)
        .or_else(|| req.from.uri.as_sip().and_then(|u| u.user_decoded()))
        .unwrap_or_default()
}

/// Server transaction key (RFC 3261 17.2.3): branch + sent-by + method, with ACK
/// matching its INVITE; RFC 2543 peers without the magic cookie are keyed by Call-ID,
/// From tag, CSeq number and sent-by.
fn transaction_key(req: &Request, method: &Method) -> String {
    let via = req.top_via();
    let method = if *method == Method::Ack {
        &Method::Invite
    } else {
        method
    };
    match via.branch() {
        Some(b) if b.starts_with(BRANCH_MAGIC_COOKIE) => format!("{b}|{}|{method}", via.sent_by()),
        _ => format!(
            "2543|{}|{}|{}|{}|{method}",
            req.call_id,
            req.from.tag().unwrap_or_default(),
            req.cseq.seq,
            via.sent_by()
        ),
    }
}

/// Builds a response to a parsed request (RFC 3261 8.2.6).
fn build_response(
    req: &Request,
    status: u16,
    to_tag: Option<&Tag>,
    extra: &[(&str, String)],
    body: Option<&Body>,
    source: SocketAddr,
    user_agent: &str,
) -> Vec<u8> {
    let mut headers = Headers::new();
    for (i, via) in req.via.iter().enumerate() {
        if i == 0 {
            headers.push("Via", stamp_via(via, source).to_string());
        } else {
            headers.push("Via", via.to_string());
        }
    }
    // RFC 3261 12.1.1: a response that establishes a dialog copies every Record-Route
    // of the request, in order, so the proxies that asked stay on the path.
    if req.method == Method::Invite && (101..300).contains(&status) && req.to.tag().is_none() {
        for rr in req.headers.all("Record-Route") {
            headers.push("Record-Route", rr.to_string());
        }
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = req.headers.first(name) {
            let mut v = v.to_string();
            if name == "To" {
                if let Some(tag) = to_tag {
                    if req.to.tag().is_none() {
                        let _ = write!(v, ";tag={tag}");
                    }
                }
            }
            headers.push(name, v);
        }
    }
    headers.push("Server", user_agent);
    for (name, value) in extra {
        headers.push(name, value.clone());
    }
    let body_bytes: &[u8] = match body {
        Some(b) => {
            headers.push("Content-Type", b.content_type.clone());
            &b.bytes
        }
        None => &[],
    };
    let start = format!("SIP/2.0 {status} {}", reason_phrase(status));
    crate::message::print_message(&start, &headers, body_bytes)
}

/// RFC 3261 18.2.1 `received` and RFC 3581 4 `rport` on the top Via.
fn stamp_via(via: &Via, source: SocketAddr) -> Via {
    let mut via = via.clone();
    let source_host = crate::uri::Host::from_ip(source.ip());
    let rport = via.rport().is_some();
    if rport || via.host.ip() != Some(source.ip()) {
        let received = source_host
            .as_str()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        via.set_param("received", Some(received));
    }
    if rport {
        via.set_param("rport", Some(source.port().to_string()));
    }
    via
}

/// Builds a response from the raw headers of a request that failed to parse.
fn build_raw_response(
    raw: &Headers,
    status: u16,
    _source: SocketAddr,
    user_agent: &str,
    tag: &Tag,
) -> Vec<u8> {
    let mut headers = Headers::new();
    for v in raw.all("Via") {
        headers.push("Via", v);
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = raw.first(name) {
            let mut v = v.to_string();
            if name == "To" && !v.to_ascii_lowercase().contains("tag=") {
                let _ = write!(v, ";tag={tag}");
            }
            headers.push(name, v);
        }
    }
    headers.push("Server", user_agent);
    let start = format!("SIP/2.0 {status} {}", reason_phrase(status));
    crate::message::print_message(&start, &headers, &[])
}

fn strip_content_length(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim();
        if crate::message::canonical_header_name(name) == "Content-Length" {
            continue;
        }
        out.push_str(line);
    }
    out.into_bytes()
}
