//! Handing a caller from the voice agent to a person, with real phones and the real
//! models: baresip as 1000 calls 5555 and says "Please connect me to a person."
//! (espeak-ng); the agent says it is connecting and the call is put through to 1001 (the
//! profile's `agent.handoff_extension`), a second baresip that answers by itself. Each
//! phone then plays its own tone and must hear the other's. With nobody registered as
//! 1001, the caller is told so by the agent, which goes on listening.

mod agent_support;
mod common;
mod voice_support;

use std::path::Path;
use std::process::Stdio;

use agent_support::{transcribe, whisper, ONE_CALL_AT_A_TIME, PHONE_RATE};
use common::baresip::{Baresip, Options};
use common::{free_port, tone_share, Server};
use voice_support::audio::{espeak, models_dir, read_wav, resample, silence, write_wav, RATE};

const USERS: &str = "1000:agent-secret,1001:person-secret";

fn start(data: &Path, port: u16) -> Server {
    let models = models_dir();
    let server = Server::start_with(
        data,
        port,
        Some(USERS),
        Path::new("sip-profiles/default.toml"),
        &[("SOFIA_MODELS_DIR", models.to_str().unwrap())],
    );
    server.wait_for("voice agent ready");
    server
}

fn tone(rate: u32, freq: f32, seconds: f32) -> Vec<f32> {
    (0..(rate as f32 * seconds) as usize)
        .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.3)
        .collect()
}

/// The share of `freq` in `audio[from..to]` seconds (at `rate`).
fn share_between(audio: &[f32], rate: u32, from: f32, to: f32, freq: f32) -> f32 {
    let a = ((from * rate as f32) as usize).min(audio.len());
    let b = ((to * rate as f32) as usize).min(audio.len());
    tone_share(&audio[a..b], rate, freq)
}

/// The person: a baresip registered as 1001 that answers by itself, its microphone
/// `mic`, recording what it hears; returns once the switch saved its registration.
fn person(data: &Path, port: u16, mic: &Path) -> (Baresip, std::process::Child) {
    let person = Baresip::new_as(
        "1001",
        port,
        mic,
        Options {
            password: "person-secret",
            codec: "PCMU",
            rate: PHONE_RATE,
            record: true,
            console: false,
        },
    );
    let run = person
        .wait_for_calls(60)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip runs");
    common::wait_saved_registration(data, "\"1001\"");
    (person, run)
}

#[test]
fn asking_for_a_person_connects_the_caller_to_the_handoff_extension() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let stt = whisper();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port);

    // The person: answers by itself and plays 1200 Hz for 12 s.
    let person_mic = words.path().join("person.wav");
    write_wav(
        &person_mic,
        PHONE_RATE,
        &[
            tone(PHONE_RATE, 1200.0, 12.0),
            vec![0.0; PHONE_RATE as usize],
        ]
        .concat(),
    );
    let (person, person_run) = person(data.path(), port, &person_mic);

    // The caller: greeting, the request, time to hear "connecting" and be put through,
    // then 500 Hz for 5 s, then hang up.
    let request = espeak("Please connect me to a person.", words.path());
    let said_end = 4.0 + request.len() as f32 / RATE as f32;
    let tone_start = said_end + 8.0;
    let mic16 = [silence(4.0), request, silence(8.0)].concat();
    let caller_mic = words.path().join("caller.wav");
    write_wav(
        &caller_mic,
        PHONE_RATE,
        &[
            resample(&mic16, RATE, PHONE_RATE),
            tone(PHONE_RATE, 500.0, 5.0),
            vec![0.0; PHONE_RATE as usize],
        ]
        .concat(),
    );
    let caller = Baresip::new_as(
        "1000",
        port,
        &caller_mic,
        Options {
            password: "agent-secret",
            codec: "PCMU",
            rate: PHONE_RATE,
            record: true,
            console: false,
        },
    );
    let caller_log = caller.call("5555", 40);
    let log = server.wait_for("call to 5555 over").join("\n");
    let person_out = person_run.wait_with_output().unwrap();
    let person_log = String::from_utf8_lossy(&person_out.stdout).to_string()
        + &String::from_utf8_lossy(&person_out.stderr);
    server.terminate();
    assert!(log.contains("handing 1000 to 1001"), "{log}");
    assert!(log.contains("1001 answered"), "{log}");

    let (heard, rate) = read_wav(&std::fs::read(caller.heard(&caller_log)).unwrap());
    let heard16 = resample(&heard, rate, RATE);
    let connecting = transcribe(
        &stt,
        &heard16[(said_end * RATE as f32) as usize..][..(5 * RATE) as usize],
    );
    eprintln!("the agent said: {connecting:?}");
    assert!(
        connecting.contains("connecting"),
        "the agent did not say it was connecting: {connecting:?}"
    );
    let end = heard.len() as f32 / rate as f32;
    let share = share_between(&heard, rate, tone_start, end - 1.0, 1200.0);
    assert!(
        share > 0.5,
        "the caller did not hear the person's 1200 Hz after the hand-off: share {share:.2}"
    );
    let (person_heard, prate) = read_wav(&std::fs::read(person.heard(&person_log)).unwrap());
    let pend = person_heard.len() as f32 / prate as f32;
    // The person's call started at the hand-off; the caller's tone is in its last 6 s.
    let share = share_between(&person_heard, prate, (pend - 6.5).max(0.0), pend, 500.0);
    assert!(
        share > 0.3,
        "the person did not hear the caller's 500 Hz: share {share:.2}"
    );
}

#[test]
fn with_nobody_there_the_agent_says_so_and_keeps_the_caller() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let stt = whisper();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port);
    let request = espeak("Please connect me to a person.", words.path());
    let said_end = 4.0 + request.len() as f32 / RATE as f32;
    let mic = [silence(4.0), request, silence(12.0)].concat();
    let heard = agent_support::call_agent(port, &mic);
    let log = server.wait_for("call to 5555 over").join("\n");
    server.terminate();
    assert!(log.contains("did not take the caller (480)"), "{log}");
    let after = transcribe(&stt, &heard[(said_end * RATE as f32) as usize..]);
    eprintln!("after the request: {after:?}");
    assert!(after.contains("connecting"), "{after:?}");
    // "I'm still here" comes back as "still hear" on some runs (Whisper tiny, through
    // G.711); the offer of more help says the same.
    assert!(
        after.contains("not available")
            && (after.contains("still here") || after.contains("how else can i help")),
        "the agent did not say nobody was there and keep the caller: {after:?}"
    );
}

/// A caller transfers itself from the agent with REFER (RFC 3515 blind transfer): a
/// SIPp caller (1000) calls 5555, talks (the sip-tester speech pcap) and sends REFER
/// to <sip:1001@...>; its scenario (fixtures/sipp/refer_agent.xml) passes only with
/// 202, a NOTIFY "SIP/2.0 100 Trying" and then "SIP/2.0 200 OK" as message/sipfrag.
/// 1001, a baresip that answers by itself, must then hear the caller's speech.
#[test]
fn a_refer_from_the_caller_puts_it_through_to_1001_with_sipfrag_notifies() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start(data.path(), port);
    let person_mic = words.path().join("person.wav");
    write_wav(&person_mic, PHONE_RATE, &tone(PHONE_RATE, 1200.0, 20.0));
    let (person, person_run) = person(data.path(), port, &person_mic);

    let caller = common::sipp(
        "refer_agent.xml",
        port,
        &[
            "-s",
            "5555",
            "-au",
            "1000",
            "-ap",
            "agent-secret",
            "-key",
            "caller",
            "1000",
        ],
    );
    common::assert_sipp_ok(&caller, "1000's REFER from the agent to 1001");
    let log = server.wait_for("call to 5555 over").join("\n");
    // The call is over: baresip has closed its recording; it can go.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &person_run.id().to_string()])
        .status();
    let out = person_run.wait_with_output().unwrap();
    let person_log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    server.terminate();
    assert!(log.contains("REFER from 1000 to 1001 accepted"), "{log}");
    assert!(log.contains("1001 answered"), "{log}");

    // 1001 heard the caller's speech (loud somewhere in its recording).
    let (heard, rate) = read_wav(&std::fs::read(person.heard(&person_log)).unwrap());
    let window = rate as usize / 2;
    let loudest = heard
        .chunks(window)
        .map(|c| (c.iter().map(|x| x * x).sum::<f32>() / c.len() as f32).sqrt())
        .fold(0f32, f32::max);
    assert!(
        loudest > 0.02,
        "1001 did not hear the caller: loudest rms {loudest:.3}\n{log}"
    );
}
