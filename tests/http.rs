//! The health and metrics listener of a running switch: `/health` reports the agent's
//! state, `/metrics` counts what SIPp did to the switch, `/livez` and `/readyz` are the
//! orchestrator's probes.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use common::{assert_sipp_ok, call_args, free_port, http_addr, http_get, sipp, Server, USERS};

#[test]
fn health_and_metrics_report_the_agent_and_the_calls() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(data.path(), port, Some(USERS));
    let addr = http_addr(&server);
    // The tests' servers have no models, so the agent cannot load.
    server.wait_for("voice agent unavailable");

    let (status, body) = http_get(&addr, "/health");
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "degraded", "{body}");
    assert_eq!(health["agent"]["state"], "unavailable", "{body}");
    assert_eq!(health["sip"][0], format!("udp 127.0.0.1:{port}"), "{body}");

    let out = sipp(
        "rejected_404.xml",
        port,
        &call_args(
            "4040",
            "40000",
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&out, "a call to an unknown extension");
    let (status, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sofia_calls_rejected_total{status=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE sofia_agent_turn_latency_seconds histogram"),
        "{metrics}"
    );
    assert_eq!(http_get(&addr, "/nothing").0, 404);
    server.terminate();
}

fn get_json(addr: &str, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(addr, path);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, value)
}

fn reasons(body: &serde_json::Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons: {body}"))
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn livez_is_ok_and_readyz_is_503_while_the_agent_in_the_dialplan_is_unavailable() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), free_port(), Some(USERS));
    let addr = http_addr(&server);
    // The tests' servers have no models, so the agent cannot load.
    server.wait_for("voice agent unavailable");
    assert_eq!(http_get(&addr, "/livez"), (200, "ok".to_string()));
    let (status, body) = get_json(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(reasons(&body), ["agent unavailable"], "{body}");
    assert_eq!(body["agent"], "unavailable", "{body}");
    assert_eq!(body["sip_bound"], true, "{body}");
    assert_eq!(body["draining"], false, "{body}");
    assert_eq!(body["calls_active"], 0, "{body}");
    // The default RTP range holds 100 calls.
    let max_calls = body["max_calls"].as_u64().unwrap();
    assert!((1..=100).contains(&max_calls), "{body}");
    server.terminate();
}

#[test]
fn readyz_is_200_when_the_dialplan_has_no_agent() {
    let data = tempfile::tempdir().unwrap();
    // drain.toml routes only the echo test.
    let server = Server::start_with(
        data.path(),
        free_port(),
        Some(USERS),
        Path::new("tests/profiles/drain.toml"),
        &[],
    );
    let addr = http_addr(&server);
    let (status, body) = get_json(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(reasons(&body), Vec::<String>::new(), "{body}");
    assert_eq!(body["agent"], "not in the dialplan", "{body}");
    let (status, health) = get_json(&addr, "/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok", "{health}");
    server.terminate();
}

/// An even port P such that P and P+1 are free: the switch's whole RTP range.
fn free_rtp_pair() -> u16 {
    loop {
        let p = free_port();
        let p = p - p % 2;
        if p >= 1024
            && UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

#[test]
fn readyz_is_503_at_capacity_and_while_draining_and_livez_stays_ok() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    // One RTP pair: room for one call, so calls.max_calls (automatic) is 1.
    let range = format!("{rtp}-{}", rtp + 1);
    // The default profile: calls get 30 s to end on SIGTERM.
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some(USERS),
        Path::new("sip-profiles/default.toml"),
        &[("SOFIA_RTP_PORTS", &range)],
    );
    let addr = http_addr(&server);
    server.wait_for("voice agent unavailable");
    let (_, body) = get_json(&addr, "/readyz");
    assert_eq!(body["max_calls"], 1, "{body}");
    assert_eq!(reasons(&body), ["agent unavailable"], "{body}");

    let call = std::thread::spawn(move || {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let phone_port = phone.local_addr().unwrap().port().to_string();
        sipp(
            "call.xml",
            sip_port,
            &call_args("9196", &phone_port, &["-d", "3000"]),
        )
    });
    server.wait_for("call to 9196 (echo) from 1000 answered");
    let (status, body) = get_json(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["calls_active"], 1, "{body}");
    assert_eq!(
        reasons(&body),
        [
            "agent unavailable",
            "at capacity: 1 of 1 calls (calls.max_calls)"
        ],
        "{body}"
    );

    server.signal_term();
    server.wait_for("shutting down: new calls get 503");
    let (status, body) = get_json(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["draining"], true, "{body}");
    assert!(reasons(&body).contains(&"draining".to_string()), "{body}");
    assert_eq!(http_get(&addr, "/livez"), (200, "ok".to_string()));
    // The call ends by itself (SIPp's BYE after 3 s) and the switch exits.
    assert_sipp_ok(&call.join().unwrap(), "the call in progress at SIGTERM");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the switch exits after draining");
    assert!(status.success(), "{status:?}");
}
