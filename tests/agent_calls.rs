//! The voice agent end to end with a real softphone: baresip (Debian package) registers
//! as 1000, dials 5555 and speaks (its microphone is a WAV of espeak-ng speech); it
//! records what it hears. Real Silero VAD, Whisper, built-in responder, Piper and LanceDB
//! on disk. The test listens to the recording with Whisper. Then the switch restarts and
//! 1000 calls again: the greeting names what was said in the first call.

mod agent_support;
mod common;
mod voice_support;

use agent_support::{call_agent, start_server, transcribe, whisper, ONE_CALL_AT_A_TIME};
use common::free_port;
use voice_support::audio::{espeak, silence, voiced_spans, RATE};

#[test]
fn caller_is_greeted_heard_answered_and_remembered_after_a_restart() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let stt = whisper();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();

    // First call: listen to the greeting, say something, hear it answered.
    let server = start_server(data.path(), port);
    let mic = [
        silence(3.0),
        espeak("I am planning a trip to Paris next month.", words.path()),
        silence(7.0),
    ]
    .concat();
    let heard = call_agent(port, &mic);
    let greeting = transcribe(&stt, &heard[..(4 * RATE) as usize]);
    eprintln!("first call, greeting heard: {greeting:?}");
    assert!(
        greeting.contains("how can i help"),
        "the new-caller greeting was not heard: {greeting:?}"
    );
    let reply = transcribe(&stt, &heard[(5 * RATE) as usize..]);
    eprintln!("first call, reply heard: {reply:?}");
    assert!(
        ["paris", "trip", "next month"]
            .iter()
            .any(|w| reply.contains(w)),
        "the reply does not take up what the caller said: {reply:?}"
    );
    let log = server.wait_for("call to 5555 over").join("\n");
    assert!(log.contains("agent turn 1"), "no turn was logged:\n{log}");
    assert_eq!(server.terminate().code(), Some(0));

    // The switch restarts; the caller calls again and is greeted with what they said.
    let server = start_server(data.path(), port);
    let heard = call_agent(port, &silence(9.0));
    let greeting = transcribe(&stt, &heard);
    eprintln!("second call, greeting heard: {greeting:?}");
    assert!(
        greeting.contains("welcome back"),
        "a returning caller was greeted as new: {greeting:?}"
    );
    // Whisper tiny hears "Paris" as "pairs" on some runs (the agent's transcript of the
    // caller, or the test's of the greeting); "trip" and "next month" are the
    // caller's words too.
    assert!(
        ["paris", "trip", "next month"]
            .iter()
            .any(|w| greeting.contains(w)),
        "the greeting does not say what was remembered: {greeting:?}"
    );
    server.terminate();
}

#[test]
fn talking_over_the_reply_stops_it_and_only_what_was_played_is_remembered() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_server(data.path(), port);
    let said = espeak(
        "I need help planning a long trip to Paris with my whole family next month.",
        words.path(),
    );
    let interruption = espeak("Wait, stop, stop please.", words.path());
    // The reply to `said` starts 0.5-1.8 s after it ends (a turn both judges call
    // finished, or the fallback silence) and has run for 2.5 s or more in every run
    // seen (it depends on what Whisper heard); the caller talks over it 2.3 s after
    // the sentence ends.
    let lead = 3.0;
    let said_end = lead + said.len() as f32 / RATE as f32;
    let barge_at = said_end + 2.3;
    let mic = [
        silence(lead),
        said,
        silence(2.3),
        interruption,
        silence(6.0),
    ]
    .concat();
    let heard = call_agent(port, &mic);
    let log = server.wait_for("call to 5555 over").join("\n");
    server.terminate();

    let spans = voiced_spans(&heard, 0.5);
    eprintln!("agent audio heard (s): {spans:?}; caller talked over it at {barge_at:.2}");
    // The reply: the first stretch of agent audio that starts after the caller's words.
    let reply = spans
        .iter()
        .find(|(start, _)| *start > said_end)
        .unwrap_or_else(|| panic!("no reply heard: {spans:?}\n{log}"));
    assert!(
        reply.0 < barge_at,
        "the reply had not started when the caller talked over it: {reply:?}"
    );
    let stopped_after = reply.1 - barge_at;
    eprintln!("the reply stopped {stopped_after:.2} s after the caller started talking");
    assert!(
        (0.0..1.0).contains(&stopped_after),
        "the reply did not stop within a second of the caller talking over it: {reply:?}\n{log}"
    );
    assert!(log.contains("caller barged in"), "{log}");

    // Memory and the transcript hold what was played, not the whole reply (which ends
    // by asking the caller's name).
    let transcripts = data.path().join("transcripts");
    let transcript = std::fs::read_dir(&transcripts)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    eprintln!("transcript:\n{transcript}");
    let lines: Vec<&str> = transcript.lines().collect();
    let asked = lines
        .iter()
        .position(|l| {
            let l = l.to_lowercase();
            l.contains("caller:") && (l.contains("paris") || l.contains("trip"))
        })
        .unwrap_or_else(|| panic!("the caller's words are not in the transcript:\n{transcript}"));
    let reply_line = lines[asked + 1..]
        .iter()
        .find(|l| l.contains("agent:"))
        .unwrap_or_else(|| panic!("the interrupted reply is not in the transcript:\n{transcript}"));
    assert!(
        !reply_line.contains("your name"),
        "the transcript holds words the caller never heard: {reply_line}"
    );
}
