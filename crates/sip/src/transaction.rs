//! Transaction state machines (RFC 3261 17) as plain values driven in virtual time:
//! the INVITE server transaction (17.2.1, with the RFC 6026 Accepted state that keeps
//! retransmitting a 2xx until the ACK), the non-INVITE server transaction (17.2.2), the
//! non-INVITE client transaction (17.1.2) and the INVITE client transaction (17.1.1,
//! with the RFC 6026 Accepted state).
//!
//! A transaction stores the bytes it must resend and the destination they go to; it
//! never builds messages and never touches dialogs. The endpoint matches messages to
//! transactions (17.2.3, 17.1.3) and feeds them in; timers fire through `on_timer(now)`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::ids::{CallHandle, RequestHandle, Transport};

/// RFC 3261 timer base values (table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message remains in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J and L.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Where a transaction sends what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: SocketAddr,
    pub transport: Transport,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Invite,
    NonInvite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE: request received, no response yet.
    Trying,
    /// A provisional response was sent (INVITE transactions start here).
    Proceeding,
    /// INVITE: a 2xx was sent; retransmit it until the ACK (RFC 6026 7.1).
    Accepted,
    /// A final non-2xx (or any final for non-INVITE) was sent.
    Completed,
    /// INVITE: the ACK for a non-2xx arrived (Timer I running).
    Confirmed,
    Terminated,
}

/// What a server transaction's timer produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ServerTimerOutcome {
    pub retransmit: Option<Vec<u8>>,
    /// Timer H fired (no ACK for a non-2xx) or Timer L fired before the 2xx was ACKed.
    pub ack_timeout: bool,
}

#[derive(Debug, Clone)]
pub struct ServerTransaction {
    pub kind: ServerKind,
    pub state: ServerState,
    pub route: Route,
    pub call: Option<CallHandle>,
    /// The request's merge key (RFC 3261 8.2.2.2), removed with the transaction.
    pub merge_key: Option<std::sync::Arc<str>>,
    last_response: Option<(u16, Vec<u8>)>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
    acked: bool,
}

impl ServerTransaction {
    pub fn new(kind: ServerKind, route: Route) -> Self {
        Self {
            kind,
            state: match kind {
                ServerKind::Invite => ServerState::Proceeding,
                ServerKind::NonInvite => ServerState::Trying,
            },
            route,
            call: None,
            merge_key: None,
            last_response: None,
            retransmit_at: None,
            interval: Duration::ZERO,
            timeout_at: None,
            acked: false,
        }
    }

    fn reliable(&self) -> bool {
        self.route.transport.is_reliable()
    }

    pub fn last_status(&self) -> Option<u16> {
        self.last_response.as_ref().map(|(s, _)| *s)
    }

    pub fn has_final(&self) -> bool {
        self.last_status().is_some_and(|s| s >= 200)
    }

    /// A retransmission of the request arrived: the bytes to resend, if any
    /// (17.2.1: the most recent provisional or the final; 17.2.2 likewise).
    pub fn on_request_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            ServerState::Proceeding | ServerState::Completed | ServerState::Accepted => {
                self.last_response.as_ref().map(|(_, b)| b.clone())
            }
            _ => None,
        }
    }

    /// Records a response the TU sends through this transaction. Returns false if the
    /// transaction can no longer send it (a final was already sent).
    pub fn respond(
        &mut self,
        now: Instant,
        status: u16,
        bytes: Vec<u8>,
        timers: &TimerConfig,
    ) -> bool {
        if self.has_final() || self.state == ServerState::Terminated {
            return false;
        }
        self.last_response = Some((status, bytes));
        match (self.kind, status) {
            (_, 100..=199) => self.state = ServerState::Proceeding,
            (ServerKind::Invite, 200..=299) => {
                // RFC 6026 7.1 / RFC 3261 13.3.1.4: the 2xx is retransmitted (even on
                // reliable transports the TU keeps it until the ACK) starting at T1.
                self.state = ServerState::Accepted;
                if !self.reliable() {
                    self.interval = timers.t1;
                    self.retransmit_at = Some(now + timers.t1);
                }
                self.timeout_at = Some(now + timers.timeout());
            }
            (ServerKind::Invite, _) => {
                self.state = ServerState::Completed;
                if !self.reliable() {
                    // Timer G.
                    self.interval = timers.t1;
                    self.retransmit_at = Some(now + timers.t1);
                }
                // Timer H.
                self.timeout_at = Some(now + timers.timeout());
            }
            (ServerKind::NonInvite, _) => {
                self.state = ServerState::Completed;
                // Timer J: 64*T1 on unreliable transports, zero on reliable ones.
                self.timeout_at = Some(if self.reliable() {
                    now
                } else {
                    now + timers.timeout()
                });
            }
        }
        true
    }

    /// An ACK matched this transaction (for a non-2xx via the branch, 17.2.1; for a 2xx
    /// via the dialog). Returns true the first time.
    pub fn on_ack(&mut self, now: Instant, timers: &TimerConfig) -> bool {
        match self.state {
            ServerState::Completed if self.kind == ServerKind::Invite => {
                self.state = ServerState::Confirmed;
                self.retransmit_at = None;
                // Timer I: T4 on unreliable transports, zero on reliable ones.
                self.timeout_at = Some(if self.reliable() {
                    now
                } else {
                    now + timers.t4
                });
                true
            }
            ServerState::Accepted if !self.acked => {
                self.acked = true;
                self.retransmit_at = None;
                true
            }
            _ => false,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timer(&mut self, now: Instant, timers: &TimerConfig) -> ServerTimerOutcome {
        let mut out = ServerTimerOutcome::default();
        if self.timeout_at.is_some_and(|t| now >= t) {
            out.ack_timeout = match self.state {
                ServerState::Completed => self.kind == ServerKind::Invite,
                ServerState::Accepted => !self.acked,
                _ => false,
            };
            self.state = ServerState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            return out;
        }
        if let Some(at) = self.retransmit_at.filter(|t| now >= *t) {
            // Timer G (and the 2xx schedule of 13.3.1.4): double up to T2.
            self.interval = (self.interval * 2).min(timers.t2);
            self.retransmit_at = Some(at + self.interval);
            out.retransmit = self.last_response.as_ref().map(|(_, b)| b.clone());
        }
        out
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}

/// Why the endpoint sent a request of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPurpose {
    Bye(CallHandle),
    Options,
    Cancel,
    /// A request of a dialog whose outcome the application hears of (NOTIFY).
    InDialog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What a client transaction's timer produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientTimerOutcome {
    pub retransmit: Option<Vec<u8>>,
    /// Timer F fired without a final response.
    pub timed_out: bool,
}

/// Non-INVITE client transaction (RFC 3261 17.1.2).
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    pub state: ClientState,
    pub route: Route,
    pub handle: RequestHandle,
    pub purpose: ClientPurpose,
    request: Vec<u8>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    timeout_at: Option<Instant>,
}

impl ClientTransaction {
    pub fn new(
        now: Instant,
        request: Vec<u8>,
        route: Route,
        handle: RequestHandle,
        purpose: ClientPurpose,
        timers: &TimerConfig,
    ) -> Self {
        let reliable = route.transport.is_reliable();
        Self {
            state: ClientState::Trying,
            route,
            handle,
            purpose,
            request,
            // Timer E, only on unreliable transports.
            retransmit_at: (!reliable).then(|| now + timers.t1),
            interval: timers.t1,
            // Timer F.
            timeout_at: Some(now + timers.timeout()),
        }
    }

    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// A response matched this transaction. Returns the status to report to the TU for
    /// the first final response, `None` otherwise.
    pub fn on_response(&mut self, now: Instant, status: u16, timers: &TimerConfig) -> Option<u16> {
        match (self.state, status) {
            (ClientState::Trying, 100..=199) => {
                self.state = ClientState::Proceeding;
                None
            }
            (ClientState::Trying | ClientState::Proceeding, 200..=699) => {
                self.state = ClientState::Completed;
                self.retransmit_at = None;
                // Timer K: T4 on unreliable transports, zero on reliable ones.
                self.timeout_at = Some(if self.route.transport.is_reliable() {
                    now
                } else {
                    now + timers.t4
                });
                Some(status)
            }
            _ => None,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timer(&mut self, now: Instant, timers: &TimerConfig) -> ClientTimerOutcome {
        let mut out = ClientTimerOutcome::default();
        if self.timeout_at.is_some_and(|t| now >= t) {
            out.timed_out = self.state != ClientState::Completed;
            self.state = ClientState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            return out;
        }
        if let Some(at) = self.retransmit_at.filter(|t| now >= *t) {
            // Timer E: doubles up to T2 while Trying, stays at T2 once Proceeding.
            self.interval = match self.state {
                ClientState::Proceeding => timers.t2,
                _ => (self.interval * 2).min(timers.t2),
            };
            self.retransmit_at = Some(at + self.interval);
            out.retransmit = Some(self.request.clone());
        }
        out
    }

    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}

/// INVITE client transaction states (RFC 3261 17.1.1.2, RFC 6026 7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteClientState {
    /// INVITE sent, nothing heard yet: Timer A retransmits, Timer B gives up.
    Calling,
    /// A provisional response arrived: no retransmission, no timeout (the TU's own
    /// ring timer ends an unanswered call with CANCEL).
    Proceeding,
    /// A 300-699 arrived and was ACKed; retransmissions of it are ACKed again until
    /// Timer D.
    Completed,
    /// A 2xx arrived (RFC 6026): further 2xx (retransmissions, or other forks') go to
    /// the TU, which ACKs them itself, until Timer M.
    Accepted,
    Terminated,
}

/// What an INVITE client transaction tells the endpoint about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteResponseAction {
    /// Pass the response to the TU (provisional, first final, or any 2xx in Accepted).
    Report,
    /// The first 300-699: pass it up, and send the ACK (built by the endpoint from the
    /// request and this response, then handed in with `set_ack`).
    ReportAndAck,
    /// A retransmitted 300-699: resend the stored ACK, tell nobody.
    ResendAck,
    /// Nothing to do (e.g. a late provisional).
    Absorb,
}

/// What an INVITE client transaction's timer produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InviteClientTimerOutcome {
    /// Timer A: resend the INVITE.
    pub retransmit: Option<Vec<u8>>,
    /// Timer B fired while Calling: no response at all; report 408 to the TU.
    pub timed_out: bool,
}

/// INVITE client transaction (RFC 3261 17.1.1, RFC 6026). Like the others it stores
/// bytes and deadlines and never builds a message: the ACK for a non-2xx final
/// response is built by the endpoint (it needs the response's To tag) and stored here
/// for retransmissions.
#[derive(Debug, Clone)]
pub struct InviteClientTransaction {
    pub state: InviteClientState,
    pub route: Route,
    request: Vec<u8>,
    ack: Option<Vec<u8>>,
    /// Timer A.
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// Timer B while Calling, Timer D while Completed, Timer M while Accepted.
    timeout_at: Option<Instant>,
}

impl InviteClientTransaction {
    pub fn new(now: Instant, request: Vec<u8>, route: Route, timers: &TimerConfig) -> Self {
        let reliable = route.transport.is_reliable();
        Self {
            state: InviteClientState::Calling,
            route,
            request,
            ack: None,
            // Timer A, only on unreliable transports; it doubles without the T2 cap
            // (17.1.1.2), so Timer B's 64*T1 allows six retransmissions.
            retransmit_at: (!reliable).then(|| now + timers.t1),
            interval: timers.t1,
            timeout_at: Some(now + timers.timeout()),
        }
    }

    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The ACK of a non-2xx final response, once the endpoint built it.
    pub fn ack(&self) -> Option<&[u8]> {
        self.ack.as_deref()
    }

    pub fn set_ack(&mut self, ack: Vec<u8>) {
        self.ack = Some(ack);
    }

    /// A response matched this transaction (17.1.3).
    pub fn on_response(
        &mut self,
        now: Instant,
        status: u16,
        timers: &TimerConfig,
    ) -> InviteResponseAction {
        use InviteClientState::*;
        match (self.state, status) {
            (Calling | Proceeding, 100..=199) => {
                self.state = Proceeding;
                self.retransmit_at = None;
                self.timeout_at = None;
                InviteResponseAction::Report
            }
            (Calling | Proceeding, 200..=299) => {
                self.state = Accepted;
                self.retransmit_at = None;
                // Timer M: 64*T1, so that 2xx retransmissions and other forks' 2xx
                // still reach the TU (which ACKs, or ACKs and BYEs, each).
                self.timeout_at = Some(now + timers.timeout());
                InviteResponseAction::Report
            }
            (Accepted, 200..=299) => InviteResponseAction::Report,
            (Calling | Proceeding, 300..=699) => {
                self.state = Completed;
                self.retransmit_at = None;
                // Timer D: at least 32 s on unreliable transports, zero on reliable.
                self.timeout_at = Some(if self.route.transport.is_reliable() {
                    now
                } else {
                    now + Duration::from_secs(32).max(timers.timeout() / 2)
                });
                InviteResponseAction::ReportAndAck
            }
            (Completed, 300..=699) => InviteResponseAction::ResendAck,
            _ => InviteResponseAction::Absorb,
        }
    }

    /// The transport failed (17.1.4): the transaction is over; the TU hears 503.
    pub fn on_transport_error(&mut self) {
        self.state = InviteClientState::Terminated;
        self.retransmit_at = None;
        self.timeout_at = None;
    }

    pub fn deadline(&self) -> Option<Instant> {
        match (self.retransmit_at, self.timeout_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn on_timer(&mut self, now: Instant, _timers: &TimerConfig) -> InviteClientTimerOutcome {
        let mut out = InviteClientTimerOutcome::default();
        if self.timeout_at.is_some_and(|t| now >= t) {
            out.timed_out = self.state == InviteClientState::Calling;
            self.state = InviteClientState::Terminated;
            self.retransmit_at = None;
            self.timeout_at = None;
            return out;
        }
        if let Some(at) = self.retransmit_at.filter(|t| now >= *t) {
            self.interval *= 2;
            self.retransmit_at = Some(at + self.interval);
            out.retransmit = Some(self.request.clone());
        }
        out
    }

    pub fn is_terminated(&self) -> bool {
        self.state == InviteClientState::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One real instant as the origin of virtual time.
    #[allow(clippy::disallowed_methods)] // reason: tests need an Instant to offset from
    fn origin() -> Instant {
        Instant::now()
    }

    fn route(transport: Transport) -> Route {
        Route {
            destination: "127.0.0.1:5060".parse().expect("literal address"),
            transport,
        }
    }

    #[test]
    fn timer_g_doubles_to_t2_and_timer_h_ends() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx = ServerTransaction::new(ServerKind::Invite, route(Transport::Udp));
        assert!(tx.respond(t0, 486, b"486".to_vec(), &timers));
        let mut fired = Vec::new();
        let mut now = t0;
        while let Some(d) = tx.deadline() {
            now = d;
            let out = tx.on_timer(now, &timers);
            if out.retransmit.is_some() {
                fired.push((now - t0).as_millis());
            }
            if out.ack_timeout {
                break;
            }
        }
        assert_eq!(&fired[..5], &[500, 1500, 3500, 7500, 11500]);
        assert_eq!(now - t0, timers.timeout());
        assert!(tx.is_terminated());
    }

    #[test]
    fn ack_stops_retransmissions_and_timer_i_runs() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx = ServerTransaction::new(ServerKind::Invite, route(Transport::Udp));
        tx.respond(t0, 401, b"401".to_vec(), &timers);
        assert!(tx.on_ack(t0, &timers));
        assert_eq!(tx.state, ServerState::Confirmed);
        assert_eq!(tx.deadline(), Some(t0 + timers.t4));
        let out = tx.on_timer(t0 + timers.t4, &timers);
        assert_eq!(out, ServerTimerOutcome::default());
        assert!(tx.is_terminated());
    }

    #[test]
    fn non_invite_over_tcp_terminates_at_once() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx = ServerTransaction::new(ServerKind::NonInvite, route(Transport::Tcp));
        tx.respond(t0, 200, b"200".to_vec(), &timers);
        assert_eq!(tx.deadline(), Some(t0));
        tx.on_timer(t0, &timers);
        assert!(tx.is_terminated());
    }

    #[test]
    fn client_timer_e_and_f() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx = ClientTransaction::new(
            t0,
            b"BYE".to_vec(),
            route(Transport::Udp),
            RequestHandle(1),
            ClientPurpose::Options,
            &timers,
        );
        let mut sends = Vec::new();
        let mut timed_out = false;
        while let Some(d) = tx.deadline() {
            let out = tx.on_timer(d, &timers);
            if out.retransmit.is_some() {
                sends.push((d - t0).as_millis());
            }
            timed_out |= out.timed_out;
        }
        assert_eq!(&sends[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
        assert!(timed_out);
    }

    fn run_invite(tx: &mut InviteClientTransaction, t0: Instant) -> (Vec<u128>, bool, Instant) {
        let timers = TimerConfig::default();
        let (mut sends, mut timed_out, mut now) = (Vec::new(), false, t0);
        while let Some(d) = tx.deadline() {
            now = d;
            let out = tx.on_timer(d, &timers);
            if out.retransmit.is_some() {
                sends.push((d - t0).as_millis());
            }
            timed_out |= out.timed_out;
        }
        (sends, timed_out, now)
    }

    #[test]
    fn invite_timer_a_doubles_without_a_cap_and_timer_b_times_out() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx =
            InviteClientTransaction::new(t0, b"INVITE".to_vec(), route(Transport::Udp), &timers);
        let (sends, timed_out, end) = run_invite(&mut tx, t0);
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s: six retransmissions, then Timer B at 32 s.
        assert_eq!(sends, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert!(timed_out);
        assert_eq!(end - t0, timers.timeout());
        assert!(tx.is_terminated());
    }

    #[test]
    fn invite_over_tcp_is_not_retransmitted() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx =
            InviteClientTransaction::new(t0, b"INVITE".to_vec(), route(Transport::Tcp), &timers);
        let (sends, timed_out, _) = run_invite(&mut tx, t0);
        assert!(sends.is_empty());
        assert!(timed_out, "Timer B still runs on reliable transports");
    }

    #[test]
    fn provisional_stops_retransmission_and_the_timeout() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx =
            InviteClientTransaction::new(t0, b"INVITE".to_vec(), route(Transport::Udp), &timers);
        let out = tx.on_timer(t0 + timers.t1, &timers);
        assert!(out.retransmit.is_some());
        assert_eq!(
            tx.on_response(t0 + timers.t1, 180, &timers),
            InviteResponseAction::Report
        );
        assert_eq!(tx.state, InviteClientState::Proceeding);
        assert_eq!(
            tx.deadline(),
            None,
            "ringing may last as long as the TU lets it"
        );
    }

    #[test]
    fn non_2xx_final_is_acked_once_and_retransmissions_get_the_same_ack() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx =
            InviteClientTransaction::new(t0, b"INVITE".to_vec(), route(Transport::Udp), &timers);
        tx.on_response(t0, 100, &timers);
        assert_eq!(
            tx.on_response(t0, 486, &timers),
            InviteResponseAction::ReportAndAck
        );
        tx.set_ack(b"ACK".to_vec());
        assert_eq!(
            tx.on_response(t0, 486, &timers),
            InviteResponseAction::ResendAck
        );
        assert_eq!(tx.ack(), Some(&b"ACK"[..]));
        // Timer D: 32 s on UDP, then gone; no timeout reported.
        assert_eq!(tx.deadline(), Some(t0 + Duration::from_secs(32)));
        let out = tx.on_timer(t0 + Duration::from_secs(32), &timers);
        assert!(!out.timed_out);
        assert!(tx.is_terminated());
    }

    #[test]
    fn every_2xx_reaches_the_tu_until_timer_m() {
        let timers = TimerConfig::default();
        let t0 = origin();
        let mut tx =
            InviteClientTransaction::new(t0, b"INVITE".to_vec(), route(Transport::Udp), &timers);
        assert_eq!(
            tx.on_response(t0, 200, &timers),
            InviteResponseAction::Report
        );
        assert_eq!(tx.state, InviteClientState::Accepted);
        // A retransmitted 2xx, or another fork's, is the TU's to ACK.
        assert_eq!(
            tx.on_response(t0, 200, &timers),
            InviteResponseAction::Report
        );
        assert_eq!(
            tx.on_response(t0, 486, &timers),
            InviteResponseAction::Absorb
        );
        assert_eq!(tx.deadline(), Some(t0 + timers.timeout()));
        let (sends, timed_out, _) = run_invite(&mut tx, t0);
        assert!(sends.is_empty(), "a 2xx stops Timer A");
        assert!(!timed_out);
        assert!(tx.is_terminated());
    }
}
