//! The admin listener (`http.listen`, loopback by default): `GET /health` (JSON) and
//! `GET /metrics` (Prometheus text format). Read-only; nothing here changes the switch.
//!
//! `/health` answers 200 while the process serves SIP, with `"status": "degraded"` when
//! the voice agent is unavailable or a stage's circuit breaker is open in some call: a
//! failing language model must not get the switch restarted (and its calls dropped) by
//! an orchestrator's liveness probe. Alert on the status field or the metrics instead.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sofia_voice::Stage;
use tokio::net::TcpListener;

use crate::metrics::{stage_name, AgentState, Metrics};

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    /// What SIP listens on, e.g. `udp 127.0.0.1:5060`.
    sip: Arc<Vec<String>>,
    /// Whether the dialplan has an agent at all.
    agent_configured: bool,
}

/// Binds the admin listener (so a port in use is a start-up error) and returns the task
/// that serves it until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    sip: Vec<String>,
    agent_configured: bool,
) -> anyhow::Result<(SocketAddr, TcpListener, Router)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health/metrics listener {addr} (http.listen)"))?;
    let local = listener.local_addr()?;
    let state = AdminState {
        metrics,
        sip: Arc::new(sip),
        agent_configured,
    };
    let router = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    Ok((local, listener, router))
}

async fn health(State(state): State<AdminState>) -> Json<Value> {
    Json(health_body(&state))
}

fn health_body(state: &AdminState) -> Value {
    let m = &state.metrics;
    let breakers: serde_json::Map<String, Value> = [Stage::Stt, Stage::Llm, Stage::Tts]
        .into_iter()
        .map(|stage| {
            let open = m.breakers_open(stage);
            let text = if open > 0 {
                format!("open in {open} calls")
            } else {
                "closed".to_string()
            };
            (stage_name(stage).to_string(), Value::String(text))
        })
        .collect();
    let any_open = [Stage::Stt, Stage::Llm, Stage::Tts]
        .into_iter()
        .any(|s| m.breakers_open(s) > 0);
    let agent_state = m.agent_state();
    let agent = if state.agent_configured {
        json!({
            "state": match agent_state {
                AgentState::Loading => "loading",
                AgentState::Ready => "ready",
                AgentState::Unavailable => "unavailable",
            },
            "breakers": breakers,
        })
    } else {
        json!({ "state": "not in the dialplan" })
    };
    let degraded = state.agent_configured && (agent_state == AgentState::Unavailable || any_open);
    json!({
        "status": if degraded { "degraded" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "sip": *state.sip,
        "agent": agent,
    })
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(agent_configured: bool) -> AdminState {
        AdminState {
            metrics: Arc::new(Metrics::new()),
            sip: Arc::new(vec!["udp 127.0.0.1:5060".into()]),
            agent_configured,
        }
    }

    #[test]
    fn health_is_degraded_while_the_agent_is_unavailable_or_a_breaker_is_open() {
        let s = state(true);
        s.metrics.set_agent_state(AgentState::Ready);
        assert_eq!(health_body(&s)["status"], "ok");
        assert_eq!(health_body(&s)["agent"]["breakers"]["llm"], "closed");
        let llm = s
            .metrics
            .agent_breakers_open
            .get_or_create(&Metrics::stage(Stage::Llm))
            .clone();
        llm.inc();
        let body = health_body(&s);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["agent"]["breakers"]["llm"], "open in 1 calls");
        llm.dec();
        s.metrics.set_agent_state(AgentState::Unavailable);
        assert_eq!(health_body(&s)["status"], "degraded");
        assert_eq!(health_body(&s)["agent"]["state"], "unavailable");
    }

    #[test]
    fn without_an_agent_in_the_dialplan_health_is_ok() {
        let s = state(false);
        s.metrics.set_agent_state(AgentState::Unavailable);
        assert_eq!(health_body(&s)["status"], "ok");
    }
}
