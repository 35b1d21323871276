//! The `sofia-phone` binary as an operator uses it: exit codes, configuration errors,
//! `serve` binding its sockets, `models fetch` being a no-op the second time.

mod common;

use std::net::{TcpStream, UdpSocket};

use common::{free_port, sofia, Server};

#[test]
fn check_config_prints_what_serve_would_bind() {
    let out = sofia()
        .args(["check-config", "--config", "sip-profiles/default.toml"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sip       udp 0.0.0.0:5060"), "{text}");
    assert!(text.contains("sip       tcp 0.0.0.0:5060"), "{text}");
    assert!(text.contains("rtp       udp 16384-16583"), "{text}");
    assert!(text.contains("dialplan  5555 -> agent"), "{text}");
    assert!(text.contains("dialplan  9196 -> echo"), "{text}");
}

#[test]
fn check_config_rejects_a_broken_profile_naming_file_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let text = std::fs::read_to_string("sip-profiles/default.toml")
        .unwrap()
        .replace("ports = \"16384-16583\"", "ports = \"16384-16000\"");
    std::fs::write(&path, text).unwrap();
    let out = sofia()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("broken.toml"), "{err}");
    assert!(err.contains("`rtp.ports`"), "{err}");
    assert!(err.contains("e.g. \"16384-16583\""), "{err}");
}

#[test]
fn bad_usage_exits_2_and_runtime_failure_exits_1() {
    let out = sofia().arg("no-such-command").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A SIP port already taken is a runtime failure, with the address in the message.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let data = tempfile::tempdir().unwrap();
    let out = sofia()
        .args(["serve", "--config", "sip-profiles/default.toml"])
        .env("SOFIA_SIP_LISTEN", "127.0.0.1")
        .env("SOFIA_SIP_PORT", port.to_string())
        .env("SOFIA_DATA_DIR", data.path())
        .env("SOFIA_USERS", "1000:secret123")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn serve_binds_sip_on_udp_and_tcp_logs_it_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(data.path(), port, Some("1000:secret123"));
    let lines = server.wait_for("listening for SIP on tcp");
    let log = lines.join("\n");
    assert!(
        log.contains(&format!("listening for SIP on udp 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    // The UDP port is taken by the server.
    assert!(UdpSocket::bind(("127.0.0.1", port)).is_err());
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_generates_a_private_password_per_user_once() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), free_port(), None);
    let lines = server.wait_for("listening for SIP on tcp");
    let generated: Vec<_> = lines
        .iter()
        .filter(|l| l.starts_with("generated SIP password for"))
        .collect();
    assert_eq!(generated.len(), 2, "{lines:#?}");
    server.terminate();
    let stored = std::fs::read_to_string(data.path().join("credentials.toml")).unwrap();
    for line in &generated {
        let password = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
        assert!(password.len() >= 16, "{password}");
        assert!(stored.contains(password));
    }
    // A restart reuses the stored passwords and prints none.
    let server = Server::start(data.path(), free_port(), None);
    let lines = server.wait_for("listening for SIP on tcp");
    assert!(
        !lines.iter().any(|l| l.contains("generated SIP password")),
        "{lines:#?}"
    );
    server.terminate();
}

#[test]
fn models_fetch_second_run_downloads_nothing() {
    // The test command runs `models fetch` before the tests; here it must find every
    // file present and intact, and touch the network for none.
    let out = sofia()
        .args(["models", "fetch", "--config", "sip-profiles/default.toml"])
        .env("PATH", "/nonexistent") // no python3, so no pip: any download would fail
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for model in [
        "whisper-tiny.en",
        "piper-joe",
        "silero-vad",
        "all-minilm-l6-v2",
        "onnxruntime",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(model) && l.contains("present")),
            "{model} not present: {text}"
        );
    }
}
