//! Helpers for the tests that call the voice agent with a real softphone: a switch with
//! the real models, a baresip call to 5555 whose microphone plays a recording, and
//! Whisper to hear what came back. Needs `mod common;` and `mod voice_support;` beside it.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

use sofia_phone::voice::{VoiceModels, WhisperConfig, WhisperStt};
use sofia_voice::{SpeechStats, Stt};

use crate::common::baresip::{Baresip, Options};
use crate::common::Server;
use crate::voice_support::audio::{models_dir, read_wav, resample, write_wav, RATE};

/// Two agents transcribing and synthesizing at once on two cores would slow each other
/// past the timings these calls are scripted with (and measure each other).
pub static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whisper, to hear what the phone recorded; fails if any model is missing.
pub fn whisper() -> WhisperStt {
    let models = VoiceModels::under(&models_dir());
    models.require_all().unwrap_or_else(|e| panic!("{e}"));
    WhisperStt::load(&models.whisper, WhisperConfig::default()).expect("whisper")
}

/// The password of extension 1000 in these tests.
pub const PASSWORD: &str = "agent-secret";
/// The rate baresip's microphone and recording use.
pub const PHONE_RATE: u32 = 8_000;

/// `serve` with the default profile, 1000 as the only user and the real models; returns
/// once the agent has loaded.
pub fn start_server(data: &Path, port: u16) -> Server {
    start_server_with(data, port, Path::new("sip-profiles/default.toml")).0
}

/// [`start_server`] with another profile; also returns the log up to the agent being
/// ready (it names the metrics address).
pub fn start_server_with(data: &Path, port: u16, profile: &Path) -> (Server, Vec<String>) {
    start_server_env(data, port, profile, &[])
}

/// [`start_server_with`] with more environment for `serve`.
pub fn start_server_env(
    data: &Path,
    port: u16,
    profile: &Path,
    env: &[(&str, &str)],
) -> (Server, Vec<String>) {
    let models = models_dir();
    let mut vars = vec![("SOFIA_MODELS_DIR", models.to_str().unwrap())];
    vars.extend_from_slice(env);
    let server = Server::start_with(
        data,
        port,
        Some(&format!("1000:{PASSWORD}")),
        profile,
        &vars,
    );
    let log = server.wait_for("voice agent ready");
    (server, log)
}

/// One baresip call from 1000 to 5555 whose microphone plays `mic` (16 kHz samples);
/// baresip hangs up when the WAV ends. Returns what it heard, at 16 kHz.
pub fn call_agent(sip_port: u16, mic: &[f32]) -> Vec<f32> {
    call_agent_for(sip_port, mic, mic.len() as u32 / RATE + 15)
}

/// [`call_agent`] with baresip quitting `seconds` after it starts: it waits that long
/// even when the switch ends the call sooner.
pub fn call_agent_for(sip_port: u16, mic: &[f32], seconds: u32) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mic.wav");
    write_wav(&wav, PHONE_RATE, &resample(mic, RATE, PHONE_RATE));
    let phone = Baresip::new(
        sip_port,
        &wav,
        Options {
            password: PASSWORD,
            codec: "PCMU",
            rate: PHONE_RATE,
            record: true,
            console: false,
        },
    );
    let log = phone.call("5555", seconds);
    let (samples, rate) = read_wav(&std::fs::read(phone.heard(&log)).unwrap());
    resample(&samples, rate, RATE)
}

/// What Whisper hears in `audio` (16 kHz), lower-cased.
pub fn transcribe(stt: &WhisperStt, audio: &[f32]) -> String {
    let total = std::time::Duration::from_secs_f64(audio.len() as f64 / f64::from(RATE));
    let heard = stt
        .transcribe(
            audio,
            SpeechStats {
                voiced: total,
                total,
            },
        )
        .expect("transcribe");
    heard.text.to_lowercase()
}

/// A copy of the default profile in `dir` with the keys named set to the values given
/// (each key's first line `key = ...` is replaced; keys are unique across sections in
/// the default profile).
pub fn profile_with(dir: &Path, values: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string("sip-profiles/default.toml").unwrap();
    for (key, value) in values {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in the default profile"))
            .to_string();
        text = text.replacen(&line, &format!("{key} = {value}"), 1);
    }
    let path = dir.join("profile.toml");
    std::fs::write(&path, text).unwrap();
    path
}
