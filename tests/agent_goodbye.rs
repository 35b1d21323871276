//! A caller who says only "Bye." (or "Goodbye.", or "Thank you, bye.") is taken at their
//! word: baresip (Debian package) calls 5555 and speaks it (espeak-ng), the real Silero
//! VAD, Whisper and built-in responder hear it, the agent says its goodbye and the switch
//! hangs up; calling again, the caller is not told "Last time you told me that bye".
//! Whisper used to drop a short "Bye" as a phantom and to loop on "Goodbye",
//! which the responder then read back; the scripted STT of the controller tests cannot
//! show either.

mod agent_support;
mod common;
mod voice_support;

use agent_support::{call_agent_for, start_server, transcribe, whisper, ONE_CALL_AT_A_TIME};
use common::free_port;
use voice_support::audio::{espeak, silence, voiced_spans, RATE};

/// When the caller speaks: after the greeting ("Hello! How can I help you today?").
const LEAD: f32 = 3.5;
/// Silence the phone's microphone plays after the goodbye; baresip itself hangs up only
/// when it ends, so a call that ends sooner was hung up by the switch.
const TAIL: f32 = 12.0;

#[test]
fn a_spoken_goodbye_ends_the_call() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let stt = whisper();
    let data = tempfile::tempdir().unwrap();
    let words = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_server(data.path(), port);
    for said in ["Bye.", "Goodbye.", "Thank you, bye."] {
        let speech = espeak(said, words.path());
        let said_end = LEAD + speech.len() as f32 / RATE as f32;
        let mic = [silence(LEAD), speech, silence(TAIL)].concat();
        // baresip quits soon after its microphone runs out, not 15 s later.
        let heard = call_agent_for(port, &mic, (LEAD + TAIL) as u32 + 4);
        let log = server.wait_for("call to 5555 over").join("\n");
        let call_len = heard.len() as f32 / RATE as f32;
        // The end of the last 20 ms frame louder than -40 dBFS.
        let goodbye_end = voiced_spans(&heard, 0.0).last().map_or(0.0, |s| s.1);
        let answer = transcribe(&stt, &heard[(said_end * RATE as f32) as usize..]);
        // From the second call on the caller is known; a call that was only a goodbye
        // left nothing to bring up ("Last time you told me that bye").
        let greeting = transcribe(&stt, &heard[..(LEAD * RATE as f32) as usize]);
        eprintln!("{said:?}: greeted with {greeting:?}");
        assert!(
            !greeting.contains("told me"),
            "the greeting brings up a goodbye: {greeting:?}"
        );
        eprintln!(
            "{said:?} (said by {said_end:.2} s): heard {answer:?}; the agent's audio ended at \
             {goodbye_end:.2} s, the call at {call_len:.2} s"
        );
        assert!(
            log.contains("the agent hangs up (Goodbye)"),
            "the agent did not hang up on {said:?}:\n{log}"
        );
        // "Goodbye! Thanks for calling." (tiny.en does not always catch its first word).
        assert!(
            answer.contains("thanks for calling"),
            "the agent did not say goodbye to {said:?}: {answer:?}\n{log}"
        );
        // The goodbye is all it said: nothing read back, no reprompt, no "say it again".
        assert!(
            !answer.contains("you said")
                && !answer.contains("still there")
                && !answer.contains("catch that"),
            "the agent did not take {said:?} for a goodbye: {answer:?}"
        );
        // The phone heard the call end (the switch's BYE) long before its microphone
        // ran out, within a few seconds of the goodbye's last sound.
        assert!(
            call_len < said_end + TAIL - 3.0,
            "the call to {said:?} lasted {call_len:.2} s: the phone hung up, not the switch"
        );
        assert!(
            call_len - goodbye_end < 3.0,
            "the switch hung up {:.2} s after the goodbye to {said:?}",
            call_len - goodbye_end
        );
    }
    server.terminate();
}
