//! Calls between phones through the switch (B2BUA): two real baresip phones registered
//! as 1000 and 1001 on loopback; 1000 dials 1001, which answers; each plays its own
//! tone and records what it hears, and each must hear the other's tone. With the
//! callee on Opus and the caller on PCMU, the switch transcodes. Also: dialling a user
//! with no phone registered gets 480.

mod common;
mod voice_support;

use std::path::Path;
use std::process::Stdio;

use common::baresip::{Baresip, Options};
use common::{assert_sipp_ok, call_args, free_port, sipp, tone_share, Server};
use voice_support::audio::{read_wav, write_tone_wav};

const USERS: &str = "1000:secret-1000,1001:secret-1001";

/// The share of `freq` in the loudest half second of what a phone recorded.
fn loudest_share(wav: &Path, freq: f32) -> (f32, f32) {
    let (heard, rate) = read_wav(&std::fs::read(wav).unwrap());
    let window = rate as usize / 2;
    assert!(
        heard.len() > window * 2,
        "only {} samples heard",
        heard.len()
    );
    let (best, _) = (0..heard.len() - window)
        .step_by(window / 4)
        .map(|i| (i, heard[i..i + window].iter().map(|x| x * x).sum::<f32>()))
        .fold((0, 0f32), |a, b| if b.1 > a.1 { b } else { a });
    let slice = &heard[best..best + window];
    let level = (slice.iter().map(|x| x * x).sum::<f32>() / window as f32).sqrt();
    (tone_share(slice, rate, freq), level)
}

fn phone_to_phone(caller_codec: &str, caller_rate: u32, callee_codec: &str, callee_rate: u32) {
    let data = tempfile::tempdir().unwrap();
    let mics = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(USERS));
    server.wait_for("listening for SIP on tcp");

    // The callee talks longer than the caller, so the caller's hang-up ends the call.
    let callee_mic = mics.path().join("callee.wav");
    write_tone_wav(&callee_mic, callee_rate, 1200.0, 8.0, 2.0);
    let callee = Baresip::new_as(
        "1001",
        sip_port,
        &callee_mic,
        Options {
            password: "secret-1001",
            codec: callee_codec,
            rate: callee_rate,
            record: true,
            console: false,
        },
    );
    let callee_run = callee
        .wait_for_calls(25)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip runs");
    common::wait_saved_registration(data.path(), "\"1001\"");

    let caller_mic = mics.path().join("caller.wav");
    write_tone_wav(&caller_mic, caller_rate, 500.0, 4.0, 1.0);
    let caller = Baresip::new_as(
        "1000",
        sip_port,
        &caller_mic,
        Options {
            password: "secret-1000",
            codec: caller_codec,
            rate: caller_rate,
            record: true,
            console: false,
        },
    );
    let caller_log = caller.call("1001", 20);
    // The caller hung up when its tone ended: the switch ends the callee's leg too.
    let lines = server.wait_for("call to 1001 over");
    let callee_out = callee_run.wait_with_output().unwrap();
    let callee_log = String::from_utf8_lossy(&callee_out.stdout).to_string()
        + &String::from_utf8_lossy(&callee_out.stderr);
    assert!(
        callee_log.contains("Call established") || callee_log.contains("established"),
        "the callee never answered:\n{callee_log}"
    );
    assert!(
        callee_log.to_lowercase().contains("terminated") || callee_log.contains("closed"),
        "the callee's leg was not ended when the caller hung up:\n{callee_log}"
    );
    server.terminate();

    let (share, level) = loudest_share(&caller.heard(&caller_log), 1200.0);
    assert!(
        level > 0.03 && share > 0.5,
        "the caller ({caller_codec}) did not hear the callee's 1200 Hz: share {share:.2}, rms {level:.3}\n{lines:#?}"
    );
    let (share, level) = loudest_share(&callee.heard(&callee_log), 500.0);
    assert!(
        level > 0.03 && share > 0.5,
        "the callee ({callee_codec}) did not hear the caller's 500 Hz: share {share:.2}, rms {level:.3}"
    );
}

#[test]
fn two_phones_call_each_other_and_each_hears_the_other() {
    phone_to_phone("PCMU", 8000, "PCMU", 8000);
}

#[test]
fn a_pcmu_phone_and_an_opus_phone_hear_each_other_through_transcoding() {
    phone_to_phone("PCMU", 8000, "opus", 48000);
}

#[test]
fn calling_a_user_with_no_phone_registered_gets_480() {
    let data = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(USERS));
    server.wait_for("listening for SIP on tcp");
    let out = sipp(
        "rejected_480.xml",
        sip_port,
        &call_args(
            "1001",
            "40000",
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&out, "call to 1001 with nobody registered");
    server.wait_for("no phone registered, 480");
    server.terminate();
}
