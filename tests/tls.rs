//! SIP over TLS with a real softphone: the switch listens for TLS with the self-signed
//! certificate it generates on first start; baresip, told to trust that certificate,
//! registers over TLS, calls the echo extension and hears itself. A client that does
//! not speak TLS to the TLS port is refused without harm.

mod common;
mod voice_support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::baresip::{Baresip, Options};
use common::{free_port, tone_share, Server};
use voice_support::audio::{read_wav, write_wav};

fn tls_profile(dir: &Path) -> std::path::PathBuf {
    let profile = std::fs::read_to_string("sip-profiles/default.toml")
        .unwrap()
        .replace(
            "transports = [\"udp\", \"tcp\"]",
            "transports = [\"udp\", \"tcp\", \"tls\"]",
        );
    assert!(profile.contains("\"tls\"]"));
    let path = dir.join("tls.toml");
    std::fs::write(&path, profile).unwrap();
    path
}

#[test]
fn baresip_registers_and_calls_over_tls_with_the_generated_certificate() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (sip_port, tls_port) = (free_port(), free_port());
    let tls_port_text = tls_port.to_string();
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some("1000:tls-secret-1000"),
        &tls_profile(files.path()),
        &[("SOFIA_SIP_TLS_PORT", &tls_port_text)],
    );
    let lines = server.wait_for("listening for SIP on tls").join("\n");
    assert!(lines.contains("self-signed"), "{lines}");
    let cert = data.path().join("tls/cert.pem");
    let key = data.path().join("tls/key.pem");
    assert!(cert.exists(), "no certificate generated");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key is readable by others");
    }

    // 3 s of 700 Hz, then 2 s of silence; baresip hangs up when it ends.
    let rate = 8000;
    let mic = files.path().join("mic.wav");
    let samples: Vec<f32> = (0..rate * 5)
        .map(|i| {
            if i < rate * 3 {
                (2.0 * std::f32::consts::PI * 700.0 * i as f32 / rate as f32).sin() * 0.3
            } else {
                0.0
            }
        })
        .collect();
    write_wav(&mic, rate as u32, &samples);
    let phone = Baresip::new(
        sip_port,
        &mic,
        Options {
            password: "tls-secret-1000",
            codec: "PCMU",
            rate: rate as u32,
            record: true,
            console: false,
        },
    )
    .over_tls(tls_port, &cert);
    let log = phone.call("9196", 15);
    let saved = std::fs::read_to_string(data.path().join("registrations.json")).unwrap();
    assert!(
        saved.contains("\"Tls\"") || saved.to_lowercase().contains("tls"),
        "1000 is not registered over TLS: {saved}"
    );
    server.wait_for("call to 9196 over");
    let (heard, heard_rate) = read_wav(&std::fs::read(phone.heard(&log)).unwrap());
    let window = heard_rate as usize / 2;
    let (best, _) = (0..heard.len().saturating_sub(window))
        .step_by(window / 4)
        .map(|i| (i, heard[i..i + window].iter().map(|x| x * x).sum::<f32>()))
        .fold((0, 0f32), |a, b| if b.1 > a.1 { b } else { a });
    let share = tone_share(&heard[best..best + window], heard_rate, 700.0);
    assert!(
        share > 0.5,
        "the echo over a TLS-signalled call: share {share:.2}"
    );

    // Plain text to the TLS port: no answer, the connection is closed, TLS goes on.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let _ = plain.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n");
    let mut buf = [0u8; 512];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"SIP/2.0"),
        "plain SIP was answered on the TLS port"
    );
    server.terminate();
}
