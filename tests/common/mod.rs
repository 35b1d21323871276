//! Helpers shared by the end-to-end tests: a `serve` process on loopback, free ports,
//! and SIPp runs.
#![allow(dead_code)] // each test binary uses a different subset

pub mod baresip;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_sofia-phone");

/// The binary with a clean environment: tests must not depend on the caller's.
pub fn sofia() -> Command {
    let mut cmd = Command::new(BIN);
    // Tests must not depend on the caller's environment.
    for var in [
        "SOFIA_CONFIG",
        "SOFIA_SIP_PORT",
        "SOFIA_SIP_LISTEN",
        "SOFIA_RTP_PORTS",
        "SOFIA_EXTERNAL_ADDR",
        "SOFIA_HTTP_ADDR",
        "SOFIA_DATA_DIR",
        "SOFIA_USERS",
        "SOFIA_LOG_FORMAT",
        "SOFIA_SIP_TLS_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A running `serve`, killed on drop so a failing test leaves nothing behind.
pub struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(data_dir: &Path, port: u16, users: Option<&str>) -> Server {
        Server::start_with(
            data_dir,
            port,
            users,
            Path::new("sip-profiles/default.toml"),
            &[],
        )
    }

    /// `serve` with a given profile and extra environment.
    pub fn start_with(
        data_dir: &Path,
        port: u16,
        users: Option<&str>,
        profile: &Path,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = sofia();
        // Tests that do not call the agent do not load its models (seconds of CPU per
        // server, which the timing-sensitive media tests would feel): an empty models
        // dir makes it unavailable at once. Agent tests pass SOFIA_MODELS_DIR.
        cmd.arg("serve")
            .arg("--config")
            .arg(profile)
            .env("SOFIA_MODELS_DIR", data_dir.join("no-models"))
            // Each server gets its own health/metrics port (the log line names it).
            .env("SOFIA_HTTP_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data_dir)
            .env("SOFIA_SIP_LISTEN", "127.0.0.1")
            .env("SOFIA_SIP_PORT", port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(users) = users {
            cmd.env("SOFIA_USERS", users);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Server { child, lines }
    }

    /// Collects output until a line contains `needle`; fails after 30 s of silence.
    pub fn wait_for(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let done = line.contains(needle);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line containing {needle:?}; got {seen:#?}"),
            }
        }
    }

    /// Sends SIGTERM and returns at once.
    pub fn signal_term(&self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: no drain, no flush, as in a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn free_port() -> u16 {
    // A port free for both UDP and TCP at the time of asking.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A plain HTTP/1.0 GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("http connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("read timeout");
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

/// The address of the switch's health and metrics listener, read from its start-up
/// log (the line comes after "listening for SIP on tcp").
pub fn http_addr(server: &Server) -> String {
    let lines = server.wait_for("health and metrics on http://");
    lines
        .last()
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|l| l.split('/').next())
        .unwrap()
        .to_string()
}

/// Runs one SIPp scenario from fixtures/sipp against `127.0.0.1:server_port` until it
/// completes once (`-m 1`); SIPp exits 0 only if every step matched. Gives up after 30 s.
pub fn sipp(scenario: &str, server_port: u16, extra: &[&str]) -> std::process::Output {
    sipp_from(free_port(), scenario, server_port, extra)
}

/// As [`sipp`], from a given local SIP port (a phone that keeps its address).
pub fn sipp_from(
    local_port: u16,
    scenario: &str,
    server_port: u16,
    extra: &[&str],
) -> std::process::Output {
    let local_port = local_port.to_string();
    let media_port = free_port().to_string();
    let output = Command::new("sipp")
        .arg(format!("127.0.0.1:{server_port}"))
        .args(["-sf", &format!("fixtures/sipp/{scenario}")])
        .args(["-i", "127.0.0.1", "-p", &local_port, "-mp", &media_port])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(extra)
        .output()
        .expect("sipp runs (Debian package sip-tester; scripts/setup.sh test installs it)");
    output
}

/// The user the call tests register and call as.
pub const USERS: &str = "1000:secret-1000";

/// SIPp arguments for a call from user 1000 (digest credentials, as in [`USERS`]) to
/// `extension`, whose offer names `rtp_port`, plus `extra`.
pub fn call_args<'a>(extension: &'a str, rtp_port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-s",
        extension,
        "-au",
        "1000",
        "-ap",
        "secret-1000",
        "-key",
        "caller",
        "1000",
        "-key",
        "rtp_port",
        rtp_port,
    ];
    args.extend_from_slice(extra);
    args
}

/// Asserts a SIPp run succeeded, showing its output if not.
pub fn assert_sipp_ok(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: sipp exited {:?}\n{}\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Share of the signal's power at `freq` (Goertzel), for mono samples at `rate`: near 1
/// for a clean tone at that frequency, near 0 for anything else.
pub fn tone_share(samples: &[f32], rate: u32, freq: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq / rate as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0f32, 0f32);
    for &x in samples {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let total: f32 = samples.iter().map(|x| x * x).sum::<f32>() * samples.len() as f32 / 2.0;
    if total == 0.0 {
        0.0
    } else {
        power / total
    }
}

/// As [`sipp_from`], but started in the background (a phone that waits for calls):
/// its output is captured; collect it with `wait_with_output`. SIPp gives up after
/// 30 s by itself.
pub fn sipp_spawn(local_port: u16, scenario: &str, server_port: u16, extra: &[&str]) -> Child {
    let local_port = local_port.to_string();
    let media_port = free_port().to_string();
    Command::new("sipp")
        .arg(format!("127.0.0.1:{server_port}"))
        .args(["-sf", &format!("fixtures/sipp/{scenario}")])
        .args(["-i", "127.0.0.1", "-p", &local_port, "-mp", &media_port])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sipp runs (Debian package sip-tester; scripts/setup.sh test installs it)")
}

/// Waits until the switch's saved registrations (`<data_dir>/registrations.json`,
/// written within about half a second of a change) contain `needle`, e.g. a binding's
/// source `127.0.0.1:PORT`; fails after 15 s.
pub fn wait_saved_registration(data_dir: &Path, needle: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(15);
    let file = data_dir.join("registrations.json");
    loop {
        let saved = std::fs::read_to_string(&file).unwrap_or_default();
        if saved.contains(needle) {
            return;
        }
        assert!(
            std::time::Instant::now() < until,
            "no registration with {needle:?} saved: {saved}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
