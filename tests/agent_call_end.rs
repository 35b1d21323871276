//! Every way an agent call ends keeps its last exchange: with the real models and
//! LanceDB on disk, a call cut by the switch's shutdown (SIGTERM, no drain time), by the
//! maximum call duration, or by the phone going quiet (no RTP: SIPp replays a recording,
//! then sends nothing) leaves what the caller said, and what the agent had played of
//! its answer, in memory, with the call closed (its journal gone), across a restart.

mod agent_support;
mod common;
mod voice_support;

use std::path::Path;
use std::time::Duration;

use agent_support::{call_agent, profile_with, start_server_env, ONE_CALL_AT_A_TIME, PASSWORD};
use common::{free_port, sofia, Server};
use voice_support::audio::{espeak, models_dir, resample, silence, RATE};

/// The switch with the default profile changed by `values` and its agent loaded. The
/// agent's "caller said" / "agent said" lines (debug) mark when a turn goes to memory.
fn start(data: &Path, port: u16, values: &[(&str, &str)]) -> Server {
    let profile = profile_with(data, values);
    let log = "info,sofia_phone::agent=debug,lance=warn,lance_core=warn,lance_index=warn,lance_io=warn,lance_file=warn,lance_table=warn,lance_encoding=warn,lance_datafusion=warn,lancedb=warn";
    start_server_env(data, port, &profile, &[("SOFIA_LOG", log)]).0
}

/// The caller's microphone: something worth remembering, then `after` s of silence.
fn locker_code(after: f32) -> Vec<f32> {
    let words = tempfile::tempdir().unwrap();
    [
        silence(3.0),
        espeak(
            "Please remember that my locker code is four seven two nine.",
            words.path(),
        ),
        silence(after),
    ]
    .concat()
}

/// `sofia-phone memory show 1000` on `data` (the switch is stopped).
fn remembered(data: &Path) -> String {
    let out = sofia()
        .args([
            "memory",
            "show",
            "1000",
            "--config",
            "sip-profiles/default.toml",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("SOFIA_MODELS_DIR", models_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{out:?}");
    text
}

/// Files left in the memory's journal: a call not closed in memory keeps one.
fn open_journals(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("memory/journal"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Memory holds the caller's words and, when the agent had played some of its answer
/// (the switch's `log` says so), that too; and the call is closed.
fn assert_exchange_kept(data: &Path, memory: &str, log: &[String]) {
    let memory = memory.to_lowercase();
    assert!(
        memory
            .lines()
            .any(|l| l.contains(" caller ") && l.contains("locker")),
        "what the caller said is not in memory:\n{memory}"
    );
    if log.iter().any(|l| l.contains("agent said:")) {
        assert!(
            memory
                .lines()
                .any(|l| l.starts_with("turn") && l.contains(" agent ")),
            "what the agent played is not in memory:\n{memory}"
        );
    }
    assert!(
        open_journals(data).is_empty(),
        "the call was not closed in memory: {:?}",
        open_journals(data)
    );
}

#[test]
fn a_call_cut_by_shutdown_keeps_what_the_caller_said_and_what_was_played() {
    let _one = ONE_CALL_AT_A_TIME.lock();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    // No drain time: SIGTERM hangs up on the call at once.
    let server = start(data.path(), port, &[("drain_secs", "0")]);
    let mic = locker_code(25.0);
    let phone = std::thread::spawn(move || call_agent(port, &mic));
    // The reply has started playing (the caller's words are handed to memory as it
    // starts); let a second of it play, then stop the switch mid-reply.
    let before = server.wait_for("caller said:");
    std::thread::sleep(Duration::from_millis(1500));
    server.signal_term();
    let after = server.wait_for("call to 5555 over");
    let log = [before, after].concat();
    assert!(
        log.iter().any(|l| l.contains("the switch is stopping")),
        "the call was not ended by the shutdown: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("agent said:")),
        "the reply that was playing was not committed: {log:#?}"
    );
    assert_eq!(
        server
            .wait_exit(Duration::from_secs(30))
            .and_then(|s| s.code()),
        Some(0)
    );
    phone.join().unwrap();
    let memory = remembered(data.path());
    eprintln!("{memory}");
    assert_exchange_kept(data.path(), &memory, &log);
}

#[test]
fn a_call_cut_by_the_maximum_duration_keeps_what_the_caller_said_and_what_was_played() {
    let _one = ONE_CALL_AT_A_TIME.lock();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port, &[("max_duration_secs", "10")]);
    // The answer starts about 8 s in (later on a loaded machine: the words may still be
    // in transcription); the time-limit goodbye cuts in at 10 s.
    let mic = locker_code(20.0);
    call_agent(port, &mic);
    let log = server.wait_for("call to 5555 over");
    assert!(
        log.iter().any(|l| l.contains("MaxCallDuration")),
        "the call did not end at the time limit: {log:#?}"
    );
    assert_eq!(server.terminate().code(), Some(0));
    let memory = remembered(data.path());
    eprintln!("{memory}");
    assert_exchange_kept(data.path(), &memory, &log);
}

/// A pcap of the RTP a phone sends while saying `mic` (16 kHz): PCMA, 20 ms a packet,
/// over Ethernet, IPv4 and UDP (what SIPp's `play_pcap_audio` replays; it rewrites the
/// addresses).
fn rtp_pcap(path: &Path, mic: &[f32]) {
    let samples = resample(mic, RATE, 8_000);
    let mut out: Vec<u8> = Vec::new();
    // Global header: magic, version 2.4, no zone, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for field in [0u32, 0, 65_535, 1] {
        out.extend_from_slice(&field.to_le_bytes());
    }
    for (n, frame) in samples.chunks(160).enumerate() {
        let n = n as u32;
        let mut rtp = vec![0x80, 8];
        rtp.extend_from_slice(&(n as u16).to_be_bytes());
        rtp.extend_from_slice(&(n * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5eed_1234u32.to_be_bytes());
        rtp.extend(
            frame
                .iter()
                .map(|&x| sofia_media::g711::linear_to_alaw((x.clamp(-1.0, 1.0) * 32767.0) as i16)),
        );
        let udp_len = 8 + rtp.len() as u16;
        let mut packet = vec![0u8; 12];
        packet.extend_from_slice(&[0x08, 0x00]); // IPv4
        packet.extend_from_slice(&[0x45, 0, 0, 0]);
        packet[16..18].copy_from_slice(&(20 + udp_len).to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        packet.extend_from_slice(&6000u16.to_be_bytes());
        packet.extend_from_slice(&6002u16.to_be_bytes());
        packet.extend_from_slice(&udp_len.to_be_bytes());
        packet.extend_from_slice(&[0, 0]);
        packet.extend_from_slice(&rtp);
        let micros = n * 20_000;
        for field in [
            micros / 1_000_000,
            micros % 1_000_000,
            packet.len() as u32,
            packet.len() as u32,
        ] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&packet);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_call_whose_rtp_stops_keeps_what_the_caller_said() {
    let _one = ONE_CALL_AT_A_TIME.lock();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port, &[("rtp_timeout_secs", "3")]);
    // SIPp listens to the greeting, says something, then sends nothing and waits for
    // the BYE.
    let pcap = data.path().join("speech.pcap");
    rtp_pcap(&pcap, &locker_code(0.5));
    let sipp = common::sipp(
        "agent_rtp_stops.xml",
        port,
        &[
            "-s",
            "5555",
            "-au",
            "1000",
            "-ap",
            PASSWORD,
            "-key",
            "caller",
            "1000",
            "-key",
            "pcap",
            pcap.to_str().unwrap(),
        ],
    );
    common::assert_sipp_ok(
        &sipp,
        "the switch hangs up on a phone that stopped sending RTP",
    );
    let log = server.wait_for("call to 5555 over");
    assert!(
        log.iter().any(|l| l.contains("no RTP for 3s")),
        "the call did not end on the RTP timeout: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("caller said:")),
        "the caller's words did not reach memory: {log:#?}"
    );
    assert_eq!(server.terminate().code(), Some(0));
    let memory = remembered(data.path());
    eprintln!("{memory}");
    assert_exchange_kept(data.path(), &memory, &log);
}
