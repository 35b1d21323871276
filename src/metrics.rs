//! What the switch counts, for `/metrics` (Prometheus text format) and `/health`.
//!
//! One [`Metrics`] per process, shared by the SIP shell, the call tasks and the agent.
//! Counters only ever go up; gauges are moved by the task that owns what they measure
//! (a call task increments `calls_active` when it starts and decrements it in `Drop`, so
//! no end path can leak it).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sofia_voice::Stage;

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
    /// Replies from the built-in responder because the language model was off or failing.
    pub agent_fallback_replies: Counter,
    /// Seconds from the end of the caller's speech to the reply's first audio frame
    /// queued for sending.
    pub agent_turn_latency: Histogram,
    /// Calls whose breaker for a stage is open right now.
    pub agent_breakers_open: Family<StageLabel, Gauge>,
    /// Bindings in the registrar, refreshed by the SIP task.
    pub registrations: Gauge,
    /// Memory recalls for a caller turn or a call start, by outcome: `ok`, `late` (past
    /// the budget: the reply went without), `error`.
    pub memory_recalls: Family<OutcomeLabel, Counter>,
    /// Seconds a memory recall took (embedding and search), when it finished in time.
    pub memory_recall_latency: Histogram,
    /// 0 while loading, 1 ready, -1 unavailable.
    agent_state: Arc<AtomicI64>,
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
        let agent_breakers_open = Family::<StageLabel, Gauge>::default();
        registry.register(
            "agent_breakers_open",
            "Calls whose circuit breaker for a stage is open",
            agent_breakers_open.clone(),
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
        let agent_state = Arc::new(AtomicI64::new(0));
        Self {
            registry,
            calls_answered,
            calls_rejected,
            calls_active,
            agent_turns,
            agent_barge_ins,
            agent_fallback_replies,
            agent_turn_latency,
            agent_breakers_open,
            registrations,
            memory_recalls,
            memory_recall_latency,
            agent_state,
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

    pub fn rejected(&self, status: u16) {
        self.calls_rejected
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Calls with `stage`'s breaker open now.
    pub fn breakers_open(&self, stage: Stage) -> i64 {
        self.agent_breakers_open
            .get_or_create(&Self::stage(stage))
            .get()
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

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
        Self {
            metrics: Arc::clone(metrics),
            label,
        }
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.metrics.calls_active.get_or_create(&self.label).dec();
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
        m.agent_breakers_open
            .get_or_create(&Metrics::stage(Stage::Llm))
            .inc();
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
        assert!(
            text.contains("sofia_agent_breakers_open{stage=\"llm\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sofia_agent_turn_latency_seconds_count 1"),
            "{text}"
        );
        drop(call);
        assert!(m
            .encode()
            .contains("sofia_calls_active{application=\"echo\"} 0"));
        assert_eq!(m.breakers_open(Stage::Llm), 1);
    }
}
