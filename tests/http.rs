//! The health and metrics listener of a running switch: `/health` reports the agent's
//! state, `/metrics` counts what SIPp did to the switch.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{assert_sipp_ok, call_args, free_port, sipp, Server, USERS};

/// A plain HTTP/1.0 GET: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn health_and_metrics_report_the_agent_and_the_calls() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(data.path(), port, Some(USERS));
    let lines = server.wait_for("health and metrics on http://");
    let addr = lines
        .last()
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|l| l.split('/').next())
        .unwrap()
        .to_string();
    // The tests' servers have no models, so the agent cannot load.
    server.wait_for("voice agent unavailable");

    let (status, body) = get(&addr, "/health");
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
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sofia_calls_rejected_total{status=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE sofia_agent_turn_latency_seconds histogram"),
        "{metrics}"
    );
    assert_eq!(get(&addr, "/nothing").0, 404);
    server.terminate();
}
