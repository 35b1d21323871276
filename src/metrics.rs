//! What the switch counts, for `/metrics` (Prometheus text format) and `/health`.
//!
//! One [`Metrics`] per process, shared by the SIP shell, the call tasks and the agent.
//! Counters only ever go up; gauges are moved by the task that owns what they measure
//! (a call task increments `calls_active` when it starts and decrements it in `Drop`, so
//! no end path can leak it).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sofia_voice::{BreakerState, Stage, StageHealth};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplicationLabel {
    pub application: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// SIP methods counted under their own name; anything else a peer sends is `other`, so
/// that a stream of made-up methods cannot grow the label set without bound.
const SIP_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

/// Admission-control reasons for [`Metrics::admission_reject`].
pub const REJECT_MAX_CALLS: &str = "max_calls";
pub const REJECT_AGENT_MAX_CALLS: &str = "agent_max_calls";
pub const REJECT_MAX_CALLS_PER_USER: &str = "max_calls_per_user";
pub const REJECT_TRANSACTIONS: &str = "transactions";

pub fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Stt => "stt",
        Stage::Llm => "llm",
        Stage::Tts => "tts",
    }
}

pub struct Metrics {
    registry: Registry,
    /// Calls answered, by application.
    pub calls_answered: Family<ApplicationLabel, Counter>,
    /// Calls refused before answering, by SIP status.
    pub calls_rejected: Family<StatusLabel, Counter>,
    /// Calls in progress, by application.
    pub calls_active: Family<ApplicationLabel, Gauge>,
    /// Agent turns answered.
    pub agent_turns: Counter,
    /// Caller interruptions of the agent.
    pub agent_barge_ins: Counter,
    /// Caller frames the voice activity detector called speech that were the agent's own
    /// echo: not counted toward barge-in or a turn.
    pub agent_echo_frames: Counter,
    /// Replies from the built-in responder because the language model was off or failing.
    pub agent_fallback_replies: Counter,
    /// Seconds from the end of the caller's speech to the reply's first audio frame
    /// queued for sending.
    pub agent_turn_latency: Histogram,
    /// Each stage's circuit breaker (one per process, shared by all calls): 0 closed,
    /// 1 half-open, 2 open. Read from the breakers at every scrape.
    pub stage_breaker_state: Family<StageLabel, Gauge>,
    /// Times a stage's breaker opened (from closed, or again after a failed trial).
    pub stage_breaker_trips: Family<StageLabel, Counter>,
    /// End-of-turn model verdicts (complete, incomplete, fallback: the silence fallback
    /// ended the turn, failed), in agent.end_of_turn = "model".
    pub agent_turn_verdicts: Family<OutcomeLabel, Counter>,
    /// Smart Turn inference time (features and model), per verdict.
    pub agent_turn_model_latency: Histogram,
    /// Bindings in the registrar, refreshed by the SIP task.
    pub registrations: Gauge,
    /// Memory recalls for a caller turn or a call start, by outcome: `ok`, `late` (past
    /// the budget: the reply went without), `error`.
    pub memory_recalls: Family<OutcomeLabel, Counter>,
    /// Seconds a memory recall took (embedding and search), when it finished in time.
    pub memory_recall_latency: Histogram,
    /// SIP requests received, by method (unknown methods: `other`).
    pub sip_requests: Family<MethodLabel, Counter>,
    /// SIP responses sent, by status code.
    pub sip_responses: Family<CodeLabel, Counter>,
    /// Digest authentication failures.
    pub auth_failures: Counter,
    /// Source addresses blocked for failing authentication, now.
    pub blocked_sources: Gauge,
    /// Live SIP transactions, by kind (`server`, `client`).
    pub sip_transactions: Family<KindLabel, Gauge>,
    /// Open SIP TCP connections.
    pub tcp_connections: Gauge,
    /// SIP TCP connections refused (over `sip.max_tcp_connections` or the per-source
    /// limit).
    pub tcp_connections_refused: Counter,
    /// RTP packets dropped: from an unexpected source, malformed, or not RTP.
    pub rtp_rejected_packets: Counter,
    /// Calls refused by admission control, by reason (`max_calls`, `agent_max_calls`,
    /// `max_calls_per_user`, `transactions`).
    pub admission_rejects: Family<ReasonLabel, Counter>,
    /// Requests answered with a stateless 503 because of overload.
    pub stateless_overload_responses: Counter,
    /// Calls placed to registered phones for calls between phones (one per fork).
    pub bridge_legs: Counter,
    /// Callers the agent handed to a person, by outcome: `connected`, `failed`.
    pub agent_transfers: Family<OutcomeLabel, Counter>,
    /// Re-INVITEs the switch sent (hold and unhold mirrored onto a bridged call's
    /// other leg).
    pub reinvites_sent: Counter,
    /// REFERs (RFC 3515 blind transfers) from phones, by outcome: `accepted` (202),
    /// `refused` (403 and other refusals), `connected`, `failed` (the target did not
    /// take the call).
    pub transfers: Family<OutcomeLabel, Counter>,
    /// TLS handshakes on the SIP TLS port, by outcome: `ok`, `failed`, `timeout`.
    pub tls_handshakes: Family<OutcomeLabel, Counter>,
    /// SRTP/SRTCP packets refused: failed authentication, replays, undecryptable.
    pub srtp_auth_failures: Counter,
    /// 0 while loading, 1 ready, -1 unavailable.
    agent_state: Arc<AtomicI64>,
    /// The stages' breakers, once the agent has loaded.
    stage_health: OnceLock<Arc<StageHealth>>,
    /// Calls in progress over every application (what `calls_active` sums to).
    calls_active_total: AtomicI64,
    /// Set when the switch starts draining on SIGTERM.
    draining: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sofia");
        let calls_answered = Family::<ApplicationLabel, Counter>::default();
        registry.register("calls_answered", "Calls answered", calls_answered.clone());
        let calls_rejected = Family::<StatusLabel, Counter>::default();
        registry.register(
            "calls_rejected",
            "Calls refused before answering, by SIP status",
            calls_rejected.clone(),
        );
        let calls_active = Family::<ApplicationLabel, Gauge>::default();
        registry.register("calls_active", "Calls in progress", calls_active.clone());
        let agent_turns = Counter::default();
        registry.register("agent_turns", "Agent turns answered", agent_turns.clone());
        let agent_barge_ins = Counter::default();
        registry.register(
            "agent_barge_ins",
            "Times a caller interrupted the agent",
            agent_barge_ins.clone(),
        );
        let agent_echo_frames = Counter::default();
        registry.register(
            "agent_echo_suppressed_frames",
            "Caller audio frames taken for speech that were the agent's own echo (no barge-in)",
            agent_echo_frames.clone(),
        );
        let agent_fallback_replies = Counter::default();
        registry.register(
            "agent_fallback_replies",
            "Replies from the built-in responder while the language model was off or failing",
            agent_fallback_replies.clone(),
        );
        let agent_turn_latency =
            Histogram::new([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0]);
        registry.register(
            "agent_turn_latency_seconds",
            "End of the caller's speech to the first reply frame queued for sending",
            agent_turn_latency.clone(),
        );
        let stage_breaker_state = Family::<StageLabel, Gauge>::default();
        registry.register(
            "stage_breaker_state",
            "A stage's circuit breaker, shared by all calls: 0 closed, 1 half-open, 2 open",
            stage_breaker_state.clone(),
        );
        let stage_breaker_trips = Family::<StageLabel, Counter>::default();
        registry.register(
            "stage_breaker_trips",
            "Times a stage's circuit breaker opened",
            stage_breaker_trips.clone(),
        );
        let agent_turn_verdicts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "agent_turn_verdicts",
            "End-of-turn model verdicts (complete, incomplete, fallback, failed)",
            agent_turn_verdicts.clone(),
        );
        let agent_turn_model_latency =
            Histogram::new([0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0]);
        registry.register(
            "agent_turn_model_latency_seconds",
            "End-of-turn model inference time (log-mel features and Smart Turn)",
            agent_turn_model_latency.clone(),
        );
        let registrations = Gauge::default();
        registry.register(
            "registrations",
            "Contact bindings in the registrar",
            registrations.clone(),
        );
        let memory_recalls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "memory_recalls",
            "Memory recalls by outcome (ok, late: past the budget, error)",
            memory_recalls.clone(),
        );
        let memory_recall_latency =
            Histogram::new([0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0]);
        registry.register(
            "memory_recall_latency_seconds",
            "Memory recall time (embedding and search) of recalls within the budget",
            memory_recall_latency.clone(),
        );
        let sip_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "sip_requests",
            "SIP requests received, by method",
            sip_requests.clone(),
        );
        let sip_responses = Family::<CodeLabel, Counter>::default();
        registry.register(
            "sip_responses",
            "SIP responses sent, by status code",
            sip_responses.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Digest authentication failures",
            auth_failures.clone(),
        );
        let blocked_sources = Gauge::default();
        registry.register(
            "blocked_sources",
            "Source addresses blocked for failing authentication",
            blocked_sources.clone(),
        );
        let sip_transactions = Family::<KindLabel, Gauge>::default();
        registry.register(
            "sip_transactions",
            "Live SIP transactions, by kind (server, client)",
            sip_transactions.clone(),
        );
        let tcp_connections = Gauge::default();
        registry.register(
            "tcp_connections",
            "Open SIP TCP connections",
            tcp_connections.clone(),
        );
        let tcp_connections_refused = Counter::default();
        registry.register(
            "tcp_connections_refused",
            "SIP TCP connections refused over the connection limits",
            tcp_connections_refused.clone(),
        );
        let rtp_rejected_packets = Counter::default();
        registry.register(
            "rtp_rejected_packets",
            "RTP packets dropped (unexpected source, malformed)",
            rtp_rejected_packets.clone(),
        );
        let admission_rejects = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "admission_rejects",
            "Calls refused by admission control, by reason",
            admission_rejects.clone(),
        );
        let stateless_overload_responses = Counter::default();
        registry.register(
            "stateless_overload_responses",
            "Requests answered with a stateless 503 under overload",
            stateless_overload_responses.clone(),
        );
        let bridge_legs = Counter::default();
        registry.register(
            "bridge_legs",
            "Calls placed to registered phones for calls between phones (one per phone rung)",
            bridge_legs.clone(),
        );
        let agent_transfers = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "agent_transfers",
            "Callers the agent handed to a person, by outcome (connected, failed)",
            agent_transfers.clone(),
        );
        let reinvites_sent = Counter::default();
        registry.register(
            "reinvites_sent",
            "Re-INVITEs the switch sent (hold and unhold mirrored across a bridged call)",
            reinvites_sent.clone(),
        );
        let transfers = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "transfers",
            "REFER transfers from phones, by outcome (accepted, refused, connected, failed)",
            transfers.clone(),
        );
        let tls_handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the SIP TLS port, by outcome (ok, failed, timeout)",
            tls_handshakes.clone(),
        );
        let srtp_auth_failures = Counter::default();
        registry.register(
            "srtp_auth_failures",
            "SRTP/SRTCP packets refused (failed authentication, replays)",
            srtp_auth_failures.clone(),
        );
        let agent_state = Arc::new(AtomicI64::new(0));
        Self {
            registry,
            calls_answered,
            calls_rejected,
            calls_active,
            agent_turns,
            agent_barge_ins,
            agent_echo_frames,
            agent_fallback_replies,
            agent_turn_latency,
            stage_breaker_state,
            stage_breaker_trips,
            agent_turn_verdicts,
            agent_turn_model_latency,
            registrations,
            memory_recalls,
            memory_recall_latency,
            sip_requests,
            sip_responses,
            auth_failures,
            blocked_sources,
            sip_transactions,
            tcp_connections,
            tcp_connections_refused,
            rtp_rejected_packets,
            admission_rejects,
            stateless_overload_responses,
            bridge_legs,
            agent_transfers,
            reinvites_sent,
            transfers,
            tls_handshakes,
            srtp_auth_failures,
            agent_state,
            stage_health: OnceLock::new(),
            calls_active_total: AtomicI64::new(0),
            draining: AtomicBool::new(false),
        }
    }

    pub fn application(application: impl ToString) -> ApplicationLabel {
        ApplicationLabel {
            application: application.to_string(),
        }
    }

    pub fn stage(stage: Stage) -> StageLabel {
        StageLabel {
            stage: stage_name(stage).to_string(),
        }
    }

    /// Counts a TLS handshake's outcome.
    pub fn tls_handshake(&self, outcome: &str) {
        self.tls_handshakes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a REFER transfer's step (see [`Metrics::transfers`]).
    pub fn transfer(&self, outcome: &str) {
        self.transfers
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a hand-off from the agent to a person.
    pub fn agent_transfer(&self, outcome: &str) {
        self.agent_transfers
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a memory recall's outcome (and its time when it was in time).
    pub fn memory_recall(&self, outcome: &str, took: Option<std::time::Duration>) {
        self.memory_recalls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.memory_recall_latency.observe(took.as_secs_f64());
        }
    }

    /// Counts an end-of-turn verdict.
    pub fn agent_turn_verdict(&self, verdict: sofia_voice::TurnVerdict) {
        use sofia_voice::TurnVerdict;
        let outcome = match verdict {
            TurnVerdict::Complete => "complete",
            TurnVerdict::Incomplete => "incomplete",
            TurnVerdict::Fallback => "fallback",
            TurnVerdict::Failed => "failed",
            TurnVerdict::Unsure => "unsure",
        };
        self.agent_turn_verdicts
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn rejected(&self, status: u16) {
        self.calls_rejected
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Hands over the agent's stage breakers, for `/health` and the state gauge.
    pub fn set_stage_health(&self, health: Arc<StageHealth>) {
        let _ = self.stage_health.set(health);
    }

    /// Each stage's breaker as of `now`; `None` before the agent has loaded.
    pub fn stage_breakers(&self, now: Instant) -> Option<[(Stage, BreakerState); 3]> {
        let health = self.stage_health.get()?;
        Some([Stage::Stt, Stage::Llm, Stage::Tts].map(|s| (s, health.state(s, now))))
    }

    /// Counts a breaker opening (the call whose failure opened it reports it).
    pub fn stage_breaker_tripped(&self, stage: Stage) {
        self.stage_breaker_trips
            .get_or_create(&Self::stage(stage))
            .inc();
    }

    pub fn set_agent_state(&self, state: AgentState) {
        self.agent_state.store(state as i64, Ordering::Relaxed);
    }

    pub fn agent_state(&self) -> AgentState {
        match self.agent_state.load(Ordering::Relaxed) {
            1 => AgentState::Ready,
            -1 => AgentState::Unavailable,
            _ => AgentState::Loading,
        }
    }

    /// Counts a SIP request received.
    pub fn sip_request(&self, method: &str) {
        self.sip_requests_received(method, 1);
    }

    /// Counts `n` SIP requests received (an increment of the endpoint's own counter).
    pub fn sip_requests_received(&self, method: &str, n: u64) {
        let method = SIP_METHODS
            .iter()
            .find(|m| m.eq_ignore_ascii_case(method))
            .copied()
            .unwrap_or("other");
        self.sip_requests
            .get_or_create(&MethodLabel {
                method: method.to_string(),
            })
            .inc_by(n);
    }

    /// Counts a SIP response sent.
    pub fn sip_response(&self, code: u16) {
        self.sip_responses_sent(code, 1);
    }

    /// Counts `n` SIP responses sent with `code`.
    pub fn sip_responses_sent(&self, code: u16, n: u64) {
        let code = if (100..700).contains(&code) {
            code.to_string()
        } else {
            "other".to_string()
        };
        self.sip_responses
            .get_or_create(&CodeLabel { code })
            .inc_by(n);
    }

    /// Counts a digest authentication failure.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Source addresses blocked now.
    pub fn set_blocked_sources(&self, count: usize) {
        self.blocked_sources.set(saturating_i64(count));
    }

    /// Live transactions now: `server` and `client`.
    pub fn set_sip_transactions(&self, server: usize, client: usize) {
        for (kind, count) in [("server", server), ("client", client)] {
            self.sip_transactions
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .set(saturating_i64(count));
        }
    }

    /// Live transactions of `kind` (`server` or `client`).
    pub fn sip_transactions(&self, kind: &str) -> i64 {
        self.sip_transactions
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .get()
    }

    /// A SIP TCP connection was accepted.
    pub fn tcp_connection_opened(&self) {
        self.tcp_connections.inc();
    }

    /// A SIP TCP connection closed (for whatever reason).
    pub fn tcp_connection_closed(&self) {
        self.tcp_connections.dec();
    }

    /// A SIP TCP connection was refused over a limit.
    pub fn tcp_connection_refused(&self) {
        self.tcp_connections_refused.inc();
    }

    /// An RTP packet was dropped.
    pub fn rtp_rejected_packet(&self) {
        self.rtp_rejected_packets.inc();
    }

    /// A call refused by admission control; `reason` is one of the `REJECT_*` names.
    pub fn admission_reject(&self, reason: &str) {
        self.admission_rejects_by(reason, 1);
    }

    /// Counts `n` calls refused by admission control for `reason`.
    pub fn admission_rejects_by(&self, reason: &str, n: u64) {
        self.admission_rejects
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// A request answered with a stateless 503 because of overload.
    pub fn stateless_overload_response(&self) {
        self.stateless_overload_responses.inc();
    }

    /// Calls in progress, over every application.
    pub fn calls_active_total(&self) -> i64 {
        self.calls_active_total.load(Ordering::Relaxed)
    }

    /// Marks the switch as draining (SIGTERM): it takes no new calls.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        // A breaker moves from open to half-open by time alone: read it now.
        for (stage, state) in self.stage_breakers(Instant::now()).into_iter().flatten() {
            let value = match state {
                BreakerState::Closed { .. } => 0,
                BreakerState::HalfOpen { .. } => 1,
                BreakerState::Open { .. } => 2,
            };
            self.stage_breaker_state
                .get_or_create(&Self::stage(stage))
                .set(value);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum AgentState {
    Loading = 0,
    Ready = 1,
    Unavailable = -1,
}

/// Decrements a call's `calls_active` gauge when the call task ends, however it ends.
pub struct ActiveCall {
    metrics: Arc<Metrics>,
    label: ApplicationLabel,
}

impl ActiveCall {
    pub fn start(metrics: &Arc<Metrics>, application: impl ToString) -> Self {
        let label = Metrics::application(application);
        metrics.calls_answered.get_or_create(&label).inc();
        metrics.calls_active.get_or_create(&label).inc();
        metrics.calls_active_total.fetch_add(1, Ordering::Relaxed);
        Self {
            metrics: Arc::clone(metrics),
            label,
        }
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.metrics.calls_active.get_or_create(&self.label).dec();
        self.metrics
            .calls_active_total
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_calls_and_breakers_and_active_calls_fall_on_drop() {
        let m = Arc::new(Metrics::new());
        let call = ActiveCall::start(&m, "echo");
        m.rejected(404);
        let health = Arc::new(StageHealth::new(
            sofia_voice::BreakerConfig::default(),
            sofia_voice::BreakerConfig {
                failure_threshold: 1,
                ..sofia_voice::BreakerConfig::default()
            },
            sofia_voice::BreakerConfig::default(),
        ));
        m.set_stage_health(Arc::clone(&health));
        health.record(Stage::Llm, Instant::now(), false);
        m.stage_breaker_tripped(Stage::Llm);
        m.agent_turn_latency.observe(0.8);
        let text = m.encode();
        assert!(
            text.contains("sofia_calls_answered_total{application=\"echo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sofia_calls_active{application=\"echo\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sofia_calls_rejected_total{status=\"404\"} 1"),
            "{text}"
        );
        for line in [
            "sofia_stage_breaker_state{stage=\"llm\"} 2",
            "sofia_stage_breaker_state{stage=\"stt\"} 0",
            "sofia_stage_breaker_trips_total{stage=\"llm\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            text.contains("sofia_agent_turn_latency_seconds_count 1"),
            "{text}"
        );
        drop(call);
        assert!(m
            .encode()
            .contains("sofia_calls_active{application=\"echo\"} 0"));
    }

    #[test]
    fn calls_active_total_sums_applications_and_draining_is_a_flag() {
        let m = Arc::new(Metrics::new());
        assert_eq!(m.calls_active_total(), 0);
        let echo = ActiveCall::start(&m, "echo");
        let agent = ActiveCall::start(&m, "agent");
        assert_eq!(m.calls_active_total(), 2);
        drop(echo);
        assert_eq!(m.calls_active_total(), 1);
        drop(agent);
        assert_eq!(m.calls_active_total(), 0);
        assert!(!m.draining());
        m.set_draining(true);
        assert!(m.draining());
    }

    #[test]
    fn exposition_carries_sip_overload_and_admission_metrics() {
        let m = Metrics::new();
        m.sip_request("INVITE");
        m.sip_request("invite");
        m.sip_request("FROBNICATE");
        m.sip_requests_received("REGISTER", 3);
        m.sip_response(503);
        m.sip_responses_sent(200, 4);
        m.admission_rejects_by(REJECT_TRANSACTIONS, 0);
        m.sip_response(1000);
        m.auth_failure();
        m.set_blocked_sources(3);
        m.set_sip_transactions(5, 2);
        m.tcp_connection_opened();
        m.tcp_connection_opened();
        m.tcp_connection_closed();
        m.tcp_connection_refused();
        m.rtp_rejected_packet();
        for reason in [
            REJECT_MAX_CALLS,
            REJECT_AGENT_MAX_CALLS,
            REJECT_MAX_CALLS_PER_USER,
            REJECT_TRANSACTIONS,
            REJECT_MAX_CALLS,
        ] {
            m.admission_reject(reason);
        }
        m.stateless_overload_response();
        let text = m.encode();
        for line in [
            "sofia_sip_requests_total{method=\"INVITE\"} 2",
            "sofia_sip_requests_total{method=\"other\"} 1",
            "sofia_sip_requests_total{method=\"REGISTER\"} 3",
            "sofia_sip_responses_total{code=\"200\"} 4",
            "sofia_sip_responses_total{code=\"503\"} 1",
            "sofia_sip_responses_total{code=\"other\"} 1",
            "sofia_auth_failures_total 1",
            "sofia_blocked_sources 3",
            "sofia_sip_transactions{kind=\"server\"} 5",
            "sofia_sip_transactions{kind=\"client\"} 2",
            "sofia_tcp_connections 1",
            "sofia_tcp_connections_refused_total 1",
            "sofia_rtp_rejected_packets_total 1",
            "sofia_admission_rejects_total{reason=\"max_calls\"} 2",
            "sofia_admission_rejects_total{reason=\"agent_max_calls\"} 1",
            "sofia_admission_rejects_total{reason=\"max_calls_per_user\"} 1",
            "sofia_admission_rejects_total{reason=\"transactions\"} 1",
            "sofia_stateless_overload_responses_total 1",
            "# TYPE sofia_sip_requests counter",
            "# TYPE sofia_tcp_connections gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert_eq!(m.sip_transactions("server"), 5);
    }
}
