//! The admin listener (`http.listen`, loopback by default): `GET /health` (JSON),
//! `GET /livez`, `GET /readyz` (JSON) and `GET /metrics` (Prometheus text format).
//! Read-only; nothing here changes the switch.
//!
//! `/health` answers 200 while the process serves SIP, with `"status": "starting"` while
//! the voice agent loads and `"degraded"` when it is unavailable or a stage's circuit
//! breaker (one per stage, shared by all calls) is open or half-open, its trial request
//! not yet back: a failing language model must not get the switch
//! restarted (and its calls dropped) by an orchestrator's liveness probe. Alert on the
//! status field or the metrics instead.
//!
//! `/livez` is the liveness probe: 200 whenever the process serves HTTP. `/readyz` is the
//! readiness probe: 200 when the switch should be sent new calls, else 503, with the
//! reasons in its JSON body (the agent loading or unavailable, draining after SIGTERM,
//! `calls.max_calls` calls in progress).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sofia_voice::BreakerState;
use tokio::net::TcpListener;

use crate::metrics::{stage_name, AgentState, Metrics};

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    /// What SIP listens on, e.g. `udp 127.0.0.1:5060`.
    sip: Arc<Vec<String>>,
    /// Whether the dialplan has an agent at all.
    agent_configured: bool,
    /// Calls in progress at which the switch is not ready (`calls.max_calls`, resolved).
    max_calls: usize,
}

/// Binds the admin listener (so a port in use is a start-up error) and returns the task
/// that serves it until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    sip: Vec<String>,
    agent_configured: bool,
    max_calls: usize,
) -> anyhow::Result<(SocketAddr, TcpListener, Router)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the health/metrics listener {addr} (http.listen)"))?;
    let local = listener.local_addr()?;
    let state = AdminState {
        metrics,
        sip: Arc::new(sip),
        agent_configured,
        max_calls,
    };
    let router = Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    Ok((local, listener, router))
}

async fn health(State(state): State<AdminState>) -> Json<Value> {
    Json(health_body(&state))
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, Json<Value>) {
    let (ready, body) = readiness(&state);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

fn agent_state_name(state: AgentState) -> &'static str {
    match state {
        AgentState::Loading => "loading",
        AgentState::Ready => "ready",
        AgentState::Unavailable => "unavailable",
    }
}

/// Whether the switch should be sent new calls, and the body of `/readyz` saying why.
fn readiness(state: &AdminState) -> (bool, Value) {
    let m = &state.metrics;
    let mut reasons: Vec<String> = Vec::new();
    let sip_bound = !state.sip.is_empty();
    if !sip_bound {
        reasons.push("sip not bound".to_string());
    }
    let agent = if state.agent_configured {
        let agent_state = m.agent_state();
        if agent_state != AgentState::Ready {
            reasons.push(format!("agent {}", agent_state_name(agent_state)));
        }
        agent_state_name(agent_state)
    } else {
        "not in the dialplan"
    };
    let draining = m.draining();
    if draining {
        reasons.push("draining".to_string());
    }
    let calls_active = m.calls_active_total().max(0);
    let calls = usize::try_from(calls_active).unwrap_or(usize::MAX);
    if calls >= state.max_calls {
        reasons.push(format!(
            "at capacity: {calls} of {} calls (calls.max_calls)",
            state.max_calls
        ));
    }
    let ready = reasons.is_empty();
    let body = json!({
        "ready": ready,
        "reasons": reasons,
        "sip_bound": sip_bound,
        "agent": agent,
        "draining": draining,
        "calls_active": calls_active,
        "max_calls": state.max_calls,
    });
    (ready, body)
}

fn health_body(state: &AdminState) -> Value {
    let m = &state.metrics;
    // Until the agent has loaded there are no breakers to show (the status says
    // "starting" or "degraded" then).
    let stages = m.stage_breakers(Instant::now());
    let breakers: serde_json::Map<String, Value> = stages
        .iter()
        .flatten()
        .map(|(stage, state)| (stage_name(*stage).to_string(), json!(state.name())))
        .collect();
    let any_open = stages
        .iter()
        .flatten()
        .any(|(_, state)| !matches!(state, BreakerState::Closed { .. }));
    let agent_state = m.agent_state();
    let agent = if state.agent_configured {
        json!({
            "state": agent_state_name(agent_state),
            "breakers": breakers,
        })
    } else {
        json!({ "state": "not in the dialplan" })
    };
    let degraded = state.agent_configured && (agent_state == AgentState::Unavailable || any_open);
    let starting = state.agent_configured && agent_state == AgentState::Loading;
    let status = if degraded {
        "degraded"
    } else if starting {
        "starting"
    } else {
        "ok"
    };
    json!({
        "status": status,
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
            max_calls: 2,
        }
    }

    #[test]
    fn health_says_starting_while_the_agent_loads() {
        let s = state(true);
        assert_eq!(s.metrics.agent_state(), AgentState::Loading);
        assert_eq!(health_body(&s)["status"], "starting");
        assert_eq!(health_body(&s)["agent"]["state"], "loading");
        s.metrics.set_agent_state(AgentState::Ready);
        assert_eq!(health_body(&s)["status"], "ok");
        // Without an agent there is nothing to wait for.
        assert_eq!(health_body(&state(false))["status"], "ok");
    }

    #[test]
    fn ready_once_the_agent_is_loaded_until_draining_or_at_capacity() {
        let s = state(true);
        let (ready, body) = readiness(&s);
        assert!(!ready);
        assert_eq!(body["reasons"], json!(["agent loading"]), "{body}");
        s.metrics.set_agent_state(AgentState::Unavailable);
        let (ready, body) = readiness(&s);
        assert!(!ready);
        assert_eq!(body["reasons"], json!(["agent unavailable"]), "{body}");
        assert_eq!(body["agent"], "unavailable");
        s.metrics.set_agent_state(AgentState::Ready);
        let (ready, body) = readiness(&s);
        assert!(ready, "{body}");
        assert_eq!(body["reasons"], json!([]));
        assert_eq!(body["sip_bound"], true);
        assert_eq!(body["draining"], false);
        assert_eq!(body["max_calls"], 2);

        let first = crate::metrics::ActiveCall::start(&s.metrics, "echo");
        assert!(readiness(&s).0, "1 of 2 calls");
        let second = crate::metrics::ActiveCall::start(&s.metrics, "agent");
        let (ready, body) = readiness(&s);
        assert!(!ready);
        assert_eq!(body["calls_active"], 2);
        assert!(
            body["reasons"][0]
                .as_str()
                .unwrap()
                .starts_with("at capacity"),
            "{body}"
        );
        drop((first, second));
        assert!(readiness(&s).0);

        s.metrics.set_draining(true);
        let (ready, body) = readiness(&s);
        assert!(!ready);
        assert_eq!(body["reasons"], json!(["draining"]));
        assert_eq!(body["draining"], true);
    }

    #[test]
    fn without_an_agent_in_the_dialplan_readiness_ignores_the_agent() {
        let s = state(false);
        s.metrics.set_agent_state(AgentState::Unavailable);
        let (ready, body) = readiness(&s);
        assert!(ready, "{body}");
        assert_eq!(body["agent"], "not in the dialplan");
    }

    #[test]
    fn health_is_degraded_while_the_agent_is_unavailable_or_a_breaker_is_open() {
        let s = state(true);
        let cool_down = std::time::Duration::from_millis(50);
        let config = sofia_voice::BreakerConfig {
            failure_threshold: 1,
            cool_down,
        };
        let health = Arc::new(sofia_voice::StageHealth::new(config, config, config));
        s.metrics.set_stage_health(Arc::clone(&health));
        s.metrics.set_agent_state(AgentState::Ready);
        assert_eq!(health_body(&s)["status"], "ok");
        assert_eq!(health_body(&s)["agent"]["breakers"]["llm"], "closed");
        health.record(sofia_voice::Stage::Llm, Instant::now(), false);
        let body = health_body(&s);
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["agent"]["breakers"]["llm"], "open");
        assert_eq!(body["agent"]["breakers"]["stt"], "closed");
        // After the cool-down it waits for a trial: still not healthy.
        std::thread::sleep(cool_down);
        let body = health_body(&s);
        assert_eq!(body["agent"]["breakers"]["llm"], "half-open");
        assert_eq!(body["status"], "degraded");
        health.record(sofia_voice::Stage::Llm, Instant::now(), true);
        assert_eq!(health_body(&s)["status"], "ok");
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
