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
        "smart-turn-v3.2",
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

#[test]
fn check_config_reports_an_external_addr_that_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unresolvable.toml");
    let text = std::fs::read_to_string("sip-profiles/default.toml")
        .unwrap()
        .replace(
            "external_addr = \"\"",
            "external_addr = \"no-such-host.invalid\"",
        );
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
    assert!(err.contains("unresolvable.toml"), "{err}");
    assert!(err.contains("`sip.external_addr`"), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
    assert!(
        err.contains("use an IP address or a name that resolves"),
        "{err}"
    );
    // A name that resolves is shown with its address, and the limits are listed.
    let out = sofia()
        .args(["check-config", "--config", "sip-profiles/default.toml"])
        .env("SOFIA_EXTERNAL_ADDR", "localhost")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("external  localhost"), "{text}");
    assert!(text.contains("localhost resolves to 127.0.0.1"), "{text}");
    assert!(text.contains("calls     at most "), "{text}");
    assert!(text.contains("(automatic), 8 per caller"), "{text}");
    assert!(text.contains("20000 sip transactions"), "{text}");
}

/// Output lines of a `serve` started with `args` before the subcommand (and `env`),
/// up to the one containing `needle`; the process is killed afterwards.
fn serve_lines(global_args: &[&str], env: &[(&str, &str)], needle: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let mut child = sofia()
        .args(global_args)
        .args([
            "serve",
            "--config",
            "sip-profiles/default.toml",
            "--data-dir",
        ])
        .arg(data.path())
        .env("SOFIA_SIP_LISTEN", "127.0.0.1")
        .env("SOFIA_SIP_PORT", free_port().to_string())
        .env("SOFIA_HTTP_ADDR", "127.0.0.1:0")
        .env("SOFIA_MODELS_DIR", data.path().join("no-models"))
        .env("SOFIA_USERS", "1000:secret123")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => {
                let done = line.contains(needle);
                lines.push(line);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("no line containing {needle:?}; got {lines:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

fn assert_json_log(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall: {lines:#?}"));
        assert!(value.is_object(), "{line}");
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["fields"].is_object(), "no fields: {line}");
    }
}

#[test]
fn serve_with_log_format_json_logs_one_json_object_a_line() {
    let lines = serve_lines(&["--log-format", "json"], &[], "listening for SIP on tcp");
    assert_json_log(&lines);
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "INFO", "{last}");
    assert!(
        last["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("listening for SIP on tcp 127.0.0.1:"),
        "{last}"
    );
    // The environment variable does the same; the flag wins over it.
    let lines = serve_lines(
        &[],
        &[("SOFIA_LOG_FORMAT", "json")],
        "listening for SIP on tcp",
    );
    assert_json_log(&lines);
    let lines = serve_lines(
        &["--log-format", "text"],
        &[("SOFIA_LOG_FORMAT", "json")],
        "listening for SIP on tcp",
    );
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{lines:#?}"
    );
}

#[test]
fn bad_log_format_is_a_usage_error_naming_the_choices() {
    let out = sofia()
        .args(["--log-format", "xml", "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid value 'xml'"), "{err}");
    assert!(err.contains("--log-format"), "{err}");
    assert!(err.contains("text") && err.contains("json"), "{err}");
    let out = sofia()
        .arg("check-config")
        .env("SOFIA_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("invalid value 'yaml'"), "{err}");
}

/// The quick start (`scripts/serve.sh --data-dir DIR`: `models fetch`, then
/// `serve --data-dir DIR`) must find the models whatever DIR is: models are a cache
/// shared by every data dir, not state under it.
#[test]
fn serve_with_a_fresh_data_dir_finds_the_fetched_models_and_the_agent_gets_ready() {
    let data = tempfile::tempdir().unwrap();
    // What scripts/setup.sh runs (no data dir), and what it would have fetched; no pip
    // on PATH, so a model it does not find is a failure, not a download.
    let fetch = sofia()
        .args(["models", "fetch", "--config", "sip-profiles/default.toml"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let fetched = String::from_utf8_lossy(&fetch.stdout).to_string();
    assert!(fetch.status.success(), "{fetched}{fetch:?}");
    let models_line = fetched
        .lines()
        .find(|l| l.starts_with("models in "))
        .unwrap_or_else(|| panic!("no models dir in {fetched}"));
    let check = sofia()
        .args(["check-config", "--config", "sip-profiles/default.toml"])
        .output()
        .unwrap();
    let checked = String::from_utf8_lossy(&check.stdout).to_string();
    let models_dir = models_line.trim_start_matches("models in ");
    assert!(
        checked
            .lines()
            .any(|l| l == format!("models    {models_dir}")),
        "check-config and models fetch disagree on the models dir: {checked}"
    );
    // serve with a data dir of its own, as `scripts/serve.sh --data-dir DIR` runs it.
    let port = free_port();
    let server = Server::start_with(
        data.path(),
        port,
        Some("1000:secret123"),
        std::path::Path::new("sip-profiles/default.toml"),
        // The models dir as an operator's environment gives it (unset: the default).
        &[(
            "SOFIA_MODELS_DIR",
            &std::env::var("SOFIA_MODELS_DIR").unwrap_or_default(),
        )],
    );
    let lines = server.wait_for("voice agent");
    let last = lines.last().unwrap();
    assert!(last.contains("voice agent ready"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("models dir {models_dir}"))),
        "{lines:#?}"
    );
    assert!(
        !data.path().join("models").exists(),
        "models are not per data dir"
    );
}
