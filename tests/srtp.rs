//! SRTP with SDES keys (RFC 4568) with a real softphone: baresip with its srtp module
//! calls the echo extension with RTP/SAVP (`srtp-mand`: SRTP or nothing) and with a
//! best-effort RTP/AVP offer carrying a=crypto (`srtp`), and hears itself: only
//! possible if the switch decrypts what baresip sends and encrypts what it sends back.
//! Under `rtp.srtp = "required"` a plain offer gets 488.

mod common;
mod voice_support;

use std::path::Path;

use common::baresip::{Baresip, Options};
use common::{assert_sipp_ok, call_args, free_port, sipp, tone_share, Server};
use voice_support::audio::{read_wav, write_wav};

fn profile_with_srtp(dir: &Path, policy: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string("sip-profiles/default.toml")
        .unwrap()
        .replace("srtp = \"optional\"", &format!("srtp = \"{policy}\""));
    assert!(text.contains(&format!("srtp = \"{policy}\"")));
    let path = dir.join(format!("srtp-{policy}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn echo_over_srtp(mediaenc: &str, policy: &str) {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some("1000:srtp-secret-1000"),
        &profile_with_srtp(files.path(), policy),
        &[],
    );
    server.wait_for("listening for SIP on tcp");
    let rate = 8000usize;
    let mic = files.path().join("mic.wav");
    let samples: Vec<f32> = (0..rate * 5)
        .map(|i| {
            if i < rate * 3 {
                (2.0 * std::f32::consts::PI * 600.0 * i as f32 / rate as f32).sin() * 0.3
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
            password: "srtp-secret-1000",
            codec: "PCMU",
            rate: rate as u32,
            record: true,
            console: false,
        },
    )
    .with_mediaenc(mediaenc);
    let log = phone.call("9196", 15);
    let lines = server.wait_for("call to 9196 over").join("\n");
    server.terminate();
    assert!(
        lines.contains("call to 9196: media encrypted (SRTP)"),
        "{mediaenc}: the call's media was not encrypted:\n{lines}"
    );
    let (heard, heard_rate) = read_wav(&std::fs::read(phone.heard(&log)).unwrap());
    let window = heard_rate as usize / 2;
    assert!(heard.len() > 2 * window, "nothing heard:\n{log}");
    let (best, energy) = (0..heard.len() - window)
        .step_by(window / 4)
        .map(|i| (i, heard[i..i + window].iter().map(|x| x * x).sum::<f32>()))
        .fold((0, 0f32), |a, b| if b.1 > a.1 { b } else { a });
    let rms = (energy / window as f32).sqrt();
    let share = tone_share(&heard[best..best + window], heard_rate, 600.0);
    assert!(
        rms > 0.03 && share > 0.5,
        "{mediaenc}: the echo did not come back through SRTP (rms {rms:.3}, share {share:.2})\n{log}"
    );
}

#[test]
fn baresip_with_mandatory_srtp_hears_its_echo() {
    echo_over_srtp("srtp-mand", "required");
}

#[test]
fn baresip_with_best_effort_srtp_hears_its_echo() {
    echo_over_srtp("srtp", "optional");
}

#[test]
fn a_plain_offer_under_required_srtp_gets_488() {
    let data = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some(common::USERS),
        &profile_with_srtp(files.path(), "required"),
        &[],
    );
    server.wait_for("listening for SIP on tcp");
    let out = sipp(
        "rejected_488.xml",
        sip_port,
        &call_args(
            "9196",
            "40000",
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&out, "plain RTP offer under rtp.srtp = required");
    server.terminate();
}
