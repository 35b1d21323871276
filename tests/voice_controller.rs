//! The conversation controller in virtual time, driven through the test doubles: end of
//! turn, barge-in, silence and call-length timers, breakers and their fallbacks, memory.

mod voice_support;

use std::time::{Duration, Instant};

use sofia_voice::{
    Action, BreakerConfig, BreakerState, Config, Event, HandoffConfig, HangUpReason, Llm, Memory,
    Prompt, Role, Stage, State, Stt, Tts,
};
use voice_support::{is_prompt, FakeTts, Harness, ScriptedLlm, ScriptedStt, VecMemory, FRAME};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Stages {
    stt: ScriptedStt,
    llm: ScriptedLlm,
    tts: FakeTts,
    memory: VecMemory,
}

impl Stages {
    fn new() -> Self {
        Self {
            stt: ScriptedStt::default(),
            llm: ScriptedLlm::default(),
            tts: FakeTts::default(),
            memory: VecMemory::default(),
        }
    }
    fn refs(&self) -> (&dyn Stt, &dyn Llm, &dyn Tts, &dyn Memory) {
        (&self.stt, &self.llm, &self.tts, &self.memory)
    }
}

fn origin() -> Instant {
    Instant::now()
}

fn harness<'a>(cfg: Config, stages: &'a Stages) -> Harness<'a> {
    Harness::new(cfg, origin(), "1001", "call-1", stages.refs())
}

fn is_transcribe(a: &Action) -> bool {
    matches!(a, Action::Transcribe { .. })
}

#[test]
fn new_caller_is_greeted_from_the_prompt_cache() {
    let s = Stages::new();
    let h = harness(Config::default(), &s);
    assert!(
        matches!(h.log.first(), Some((d, Action::PlayPrompt { prompt: Prompt::Greeting, .. })) if d.is_zero()),
        "{:?}",
        h.log
    );
    assert_eq!(h.conv.state(), State::Speaking);
}

/// The default configuration without early transcription, so that the `Transcribe`
/// action marks the end of the turn.
fn late_stt() -> Config {
    Config {
        early_stt_silence: None,
        ..Config::default()
    }
}

#[test]
fn end_of_turn_after_silence() {
    let s = Stages::new();
    let mut h = harness(late_stt(), &s);
    h.until_listening();
    s.stt.say("I need a table for two.");
    h.speak(ms(1000));
    h.silence(ms(580));
    assert_eq!(
        h.count(is_transcribe),
        0,
        "turn ended before 600 ms of silence"
    );
    h.frame(false);
    let (at, action) = h
        .log
        .iter()
        .find(|(_, a)| is_transcribe(a))
        .expect("turn ended");
    assert_eq!(
        *at,
        h.elapsed(),
        "ended on the frame that completed 600 ms of silence"
    );
    let Action::Transcribe { audio, speech, .. } = action else {
        unreachable!()
    };
    // 300 ms pre-roll + 1 s speech + 200 ms trailing silence.
    assert_eq!(audio.len(), 16 * 1500);
    assert_eq!(speech.voiced, ms(1000));
    h.until_listening();
    let spoken = s.tts.spoken.lock().unwrap().join(" ");
    assert!(
        spoken.contains("You said you need a table for two."),
        "{spoken}"
    );
}

#[test]
fn early_transcription_is_used_when_the_caller_stays_silent() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.stt_delay = ms(250);
    h.until_listening();
    s.stt.say("I need a table for two.");
    h.speak(ms(1000));
    let spoke_until = h.elapsed();
    h.silence(ms(260)); // 13 frames: past 250 ms
    assert_eq!(h.count(is_transcribe), 1, "transcription starts at 250 ms");
    h.silence(ms(340)); // 600 ms in all
                        // The turn ends at 600 ms of silence; the transcript (ready at 500 ms) is used at
                        // once: the reply is being synthesized on the same frame.
    let (at, _) = h
        .log
        .iter()
        .find(|(at, a)| *at > spoke_until && matches!(a, Action::Synthesize { .. }))
        .expect("reply synthesized");
    assert_eq!(*at, spoke_until + ms(600), "{}", h.summary());
    h.until_listening();
    assert_eq!(h.count(is_transcribe), 1, "{}", h.summary());
    let spoken = s.tts.spoken.lock().unwrap().join(" ");
    assert!(
        spoken.contains("You said you need a table for two."),
        "{spoken}"
    );
}

#[test]
fn early_transcription_is_dropped_when_the_caller_goes_on() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.stt_delay = ms(100);
    h.until_listening();
    s.stt.say("I need a table");
    s.stt.say("I need a table for two on Friday.");
    h.speak(ms(1000));
    h.silence(ms(400)); // a pause mid-sentence: early transcription starts
    assert_eq!(h.count(is_transcribe), 1);
    h.speak(ms(800));
    assert_eq!(
        h.count(|a| matches!(a, Action::Cancel { .. })),
        1,
        "{}",
        h.summary()
    );
    h.silence(ms(600));
    h.until_listening();
    let audio_lengths: Vec<usize> = h
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Transcribe { audio, .. } => Some(audio.len()),
            _ => None,
        })
        .collect();
    assert_eq!(audio_lengths.len(), 2, "{}", h.summary());
    assert!(audio_lengths[1] > audio_lengths[0] + 16 * 1000);
    let spoken = s.tts.spoken.lock().unwrap().join(" ");
    assert!(spoken.contains("for two on Friday"), "{spoken}");
    assert!(!spoken.contains("You said you need a table."), "{spoken}");
}

#[test]
fn short_click_does_not_end_turn() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    h.speak(ms(60)); // a click
    h.silence(ms(2000));
    h.speak(ms(100)); // a cough
    h.silence(ms(2000));
    assert_eq!(h.count(is_transcribe), 0);
    assert_eq!(h.conv.state(), State::Listening);
    s.stt.say("Hello there.");
    h.speak(ms(800));
    h.silence(ms(700));
    assert_eq!(h.count(is_transcribe), 1);
    let heard = s.stt.heard.lock().unwrap();
    assert_eq!(
        heard[0].1.voiced,
        ms(800),
        "the click and cough are not part of the turn"
    );
}

#[test]
fn long_speech_is_cut_at_the_maximum_utterance_length() {
    let s = Stages::new();
    let cfg = Config {
        max_utterance: Duration::from_secs(5),
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.until_listening();
    h.speak(Duration::from_secs(6));
    assert_eq!(h.count(is_transcribe), 1);
    let heard = s.stt.heard.lock().unwrap();
    assert!(heard[0].0 <= 16_000 * 5, "{} samples", heard[0].0);
}

#[test]
fn barge_in_flushes_playback_immediately() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    // The greeting is playing.
    h.silence(ms(200));
    assert_eq!(h.conv.state(), State::Speaking);
    let before = h.log.len();
    h.speak(ms(180));
    assert!(
        !h.actions_since(before)
            .iter()
            .any(|a| matches!(a, Action::FlushPlayback)),
        "flushed before the 200 ms guard"
    );
    let at_guard = h.log.len();
    h.frame(true);
    assert_eq!(
        h.actions_since(at_guard).first(),
        Some(&&Action::FlushPlayback),
        "the frame that passes the guard flushes playback"
    );
    assert!(h.playout.is_empty());
    assert_eq!(h.conv.state(), State::Listening);
    assert!(h
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::BargeIn { .. })));
    // The interruption itself is the caller's next turn.
    s.stt.say("Wait, I have a question.");
    h.speak(ms(600));
    h.silence(ms(600));
    let heard = s.stt.heard.lock().unwrap();
    assert_eq!(heard.len(), 1);
    assert_eq!(
        heard[0].1.voiced,
        ms(800),
        "speech before and after the guard is kept"
    );
}

#[test]
fn echo_shorter_than_the_guard_does_not_interrupt() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    for _ in 0..5 {
        h.speak(ms(100));
        h.silence(ms(400));
    }
    assert_eq!(h.count(|a| matches!(a, Action::FlushPlayback)), 0);
}

#[test]
fn only_played_text_is_remembered() {
    let s = Stages::new();
    let cfg = Config {
        use_llm: true,
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.until_listening();
    s.stt.say("Tell me a story.");
    s.llm.reply(&[
        "Once upon a time. ",
        "There was a phone that could talk and it talked all day long. ",
        "The end.",
    ]);
    h.speak(ms(600));
    h.silence(ms(600));
    // Let the first sentence play out and about half of the second.
    let first = voice_support::speech_length("Once upon a time.");
    let second = voice_support::speech_length(
        "There was a phone that could talk and it talked all day long.",
    );
    h.silence(first + second / 2 - ms(200));
    h.speak(ms(200)); // barge in
    let agent = h.agent_memory();
    let last = agent.last().expect("agent turn remembered");
    assert!(
        last.starts_with("Once upon a time. There was a phone"),
        "{last}"
    );
    assert!(
        !last.contains("all day long"),
        "unplayed words remembered: {last}"
    );
    assert!(
        !last.contains("The end"),
        "unplayed sentence remembered: {last}"
    );
    let callers: Vec<String> = s
        .memory
        .turns
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t.role == Role::Caller)
        .map(|t| t.text.clone())
        .collect();
    assert_eq!(callers, ["Tell me a story."]);
}

#[test]
fn silence_timeout_reprompts_then_hangs_up() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    let idle_from = h.elapsed();
    h.silence(Duration::from_secs(10) - FRAME);
    assert_eq!(h.count(|a| is_prompt(a, Prompt::Reprompt)), 0);
    h.frame(false);
    let (at, _) = h
        .log
        .iter()
        .find(|(_, a)| {
            matches!(
                a,
                Action::PlayPrompt {
                    prompt: Prompt::Reprompt,
                    ..
                }
            )
        })
        .expect("reprompted");
    assert_eq!(*at - idle_from, Duration::from_secs(10));
    h.until_listening();
    h.silence(Duration::from_secs(10));
    assert!(h.played_prompt(Prompt::SilenceGoodbye));
    assert!(!h.hung_up, "hangs up only after saying goodbye");
    h.silence(Duration::from_secs(10));
    assert_eq!(h.last_hang_up(), Some(HangUpReason::SilenceTimeout));
    assert_eq!(h.conv.state(), State::Ended);
    assert_eq!(h.conv.poll_timeout(), None);
}

#[test]
fn speaking_resets_the_reprompt_count() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    h.silence(Duration::from_secs(10));
    h.until_listening();
    s.stt.say("Still here.");
    h.speak(ms(500));
    h.silence(ms(600));
    h.until_listening();
    h.silence(Duration::from_secs(10));
    h.until_listening();
    assert!(!h.hung_up);
    assert_eq!(
        h.count(|a| is_prompt(a, Prompt::Reprompt)),
        2,
        "{}",
        h.summary()
    );
}

#[test]
fn llm_breaker_falls_back_to_builtin_responder() {
    let s = Stages::new();
    let cfg = Config {
        use_llm: true,
        llm_breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(30),
        },
        silence_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.until_listening();
    s.llm.fail_next(2);
    for text in ["I like trains.", "I like boats.", "I like planes."] {
        s.stt.say(text);
        h.speak(ms(500));
        h.silence(ms(600));
        h.until_listening();
    }
    // Two failed calls opened the breaker; the third turn did not try the model.
    assert_eq!(s.llm.calls.lock().unwrap().len(), 2);
    let fallbacks = h
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::FallbackReply { .. }))
        .count();
    assert_eq!(fallbacks, 3);
    let spoken = s.tts.spoken.lock().unwrap().clone();
    for said in [
        "You said you like trains.",
        "You said you like boats.",
        "You said you like planes.",
    ] {
        assert!(
            spoken.iter().any(|t| t == said),
            "{said:?} not in {spoken:?}"
        );
    }
    assert!(matches!(
        h.conv.breaker_state(Stage::Llm, h.now),
        BreakerState::Open { .. }
    ));
    // After the cool-down one trial goes through and closes the breaker.
    h.silence(Duration::from_secs(30));
    s.llm.reply(&["Model is back."]);
    s.stt.say("Are you there?");
    h.speak(ms(500));
    h.silence(ms(600));
    h.until_listening();
    assert_eq!(s.llm.calls.lock().unwrap().len(), 3);
    assert!(s
        .tts
        .spoken
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "Model is back."));
    assert_eq!(
        h.conv.breaker_state(Stage::Llm, h.now),
        BreakerState::Closed { failures: 0 }
    );
}

#[test]
fn llm_timeout_falls_back_to_builtin_responder() {
    let s = Stages::new();
    let cfg = Config {
        use_llm: true,
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.llm_delay = Duration::from_secs(60);
    h.until_listening();
    s.stt.say("I like trains.");
    h.speak(ms(500));
    h.silence(ms(600));
    let asked = h.elapsed();
    h.silence(Duration::from_secs(5) + FRAME);
    assert!(h
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::CancelGenerate { .. })));
    let (at, _) = h
        .log
        .iter()
        .find(|(_, a)| matches!(a, Action::Synthesize { text, .. } if text == "You said you like trains."))
        .expect("built-in reply after the first-text timeout");
    assert!(*at - asked <= Duration::from_secs(5) + FRAME);
}

#[test]
fn tts_failure_plays_cached_apology() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    *s.tts.failing.lock().unwrap() = true;
    s.stt.say("I need a table for two.");
    h.speak(ms(600));
    h.silence(ms(600));
    assert!(
        h.log.iter().any(|(_, a)| matches!(
            a,
            Action::PlayPrompt {
                prompt: Prompt::TtsApology,
                ..
            }
        )),
        "{:?}",
        h.log
    );
    h.until_listening();
    let agent = h.agent_memory();
    assert!(
        agent.is_empty(),
        "neither the canned apology nor the unspoken reply is remembered: {agent:?}"
    );
}

#[test]
fn returning_caller_greeted_with_memory() {
    let s = Stages::new();
    // First call: name, a topic, goodbye.
    {
        let mut h = harness(Config::default(), &s);
        h.until_listening();
        s.stt.say("I need to fix my bike before Saturday.");
        h.speak(ms(1500));
        h.silence(ms(600));
        h.until_listening();
        s.stt.say("Ada.");
        h.speak(ms(400));
        h.silence(ms(600));
        h.until_listening();
        s.stt.say("Bye!");
        h.speak(ms(400));
        h.silence(ms(600));
        h.until_listening();
        assert_eq!(h.last_hang_up(), Some(HangUpReason::Goodbye));
        assert!(s
            .tts
            .spoken
            .lock()
            .unwrap()
            .iter()
            .any(|t| t == "Goodbye, Ada!"));
    }
    // Second call from the same caller.
    let mut h = Harness::new(Config::default(), origin(), "1001", "call-2", s.refs());
    let Some((_, Action::Synthesize { text, .. })) = h.log.first() else {
        panic!("returning greeting is synthesized: {:?}", h.log);
    };
    assert_eq!(
        text, "Welcome back, Ada!",
        "greeting is split into sentences for streaming"
    );
    h.until_listening();
    let spoken = s.tts.spoken.lock().unwrap().join(" ");
    assert!(
        spoken.contains("Last time you told me that you need to fix your bike before Saturday."),
        "{spoken}"
    );
    s.stt.say("What did I tell you last time?");
    h.speak(ms(800));
    h.silence(ms(600));
    h.until_listening();
    let spoken = s.tts.spoken.lock().unwrap().clone();
    assert_eq!(
        spoken.last().map(String::as_str),
        Some("Last time you told me that you need to fix your bike before Saturday.")
    );
    // Another caller is a stranger.
    let h = Harness::new(Config::default(), origin(), "2002", "call-3", s.refs());
    assert!(matches!(
        h.log.first(),
        Some((
            _,
            Action::PlayPrompt {
                prompt: Prompt::Greeting,
                ..
            }
        ))
    ));
}

#[test]
fn stt_failure_apologises_then_ends_politely() {
    let s = Stages::new();
    let cfg = Config {
        stt_breaker: BreakerConfig {
            failure_threshold: 2,
            cool_down: Duration::from_secs(60),
        },
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.until_listening();
    s.stt.fail();
    h.speak(ms(600));
    h.silence(ms(600));
    assert!(h.played_prompt(Prompt::SttRetry));
    h.until_listening();
    assert!(!h.hung_up);
    s.stt.fail();
    h.speak(ms(600));
    h.silence(ms(600));
    assert!(h.played_prompt(Prompt::SttGoodbye));
    h.until_listening();
    assert_eq!(h.last_hang_up(), Some(HangUpReason::SttUnavailable));
}

#[test]
fn stt_timeout_counts_as_a_failure() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.stt_delay = Duration::from_secs(60);
    h.until_listening();
    s.stt.say("Too late.");
    h.speak(ms(600));
    h.silence(ms(600));
    h.silence(Duration::from_secs(10));
    assert!(h.played_prompt(Prompt::SttRetry));
    assert_eq!(
        h.conv.breaker_state(Stage::Stt, h.now),
        BreakerState::Closed { failures: 1 }
    );
}

#[test]
fn speech_while_transcribing_is_joined_to_the_same_turn() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.stt_delay = Duration::from_secs(2);
    h.until_listening();
    s.stt.say("ignored, cancelled");
    s.stt.say("I want a table and a high chair.");
    h.speak(ms(800));
    h.silence(ms(700)); // turn ends; transcription takes 2 s
    h.speak(ms(600)); // ...but the caller goes on
    h.silence(ms(600));
    assert!(h
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::Cancel { .. })));
    let heard = s.stt.heard.lock().unwrap().clone();
    assert_eq!(heard.len(), 2);
    assert_eq!(
        heard[1].1.voiced,
        ms(1400),
        "the second request carries both parts"
    );
}

#[test]
fn max_call_duration_says_goodbye_and_hangs_up() {
    let s = Stages::new();
    let cfg = Config {
        max_call: Duration::from_secs(30),
        silence_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.silence(Duration::from_secs(30));
    assert!(h.played_prompt(Prompt::TimeLimitGoodbye));
    // Not interruptible.
    h.speak(Duration::from_secs(1));
    h.silence(Duration::from_secs(10));
    assert_eq!(h.last_hang_up(), Some(HangUpReason::MaxCallDuration));
}

#[test]
fn dtmf_digit_is_answered() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    h.conv.handle_dtmf(h.now, '5');
    h.drain();
    h.until_listening();
    assert!(s
        .tts
        .spoken
        .lock()
        .unwrap()
        .iter()
        .any(|t| t == "You pressed 5."));
}

#[test]
fn remote_hangup_mid_reply_remembers_the_played_part_and_never_the_greeting() {
    let s = Stages::new();
    let mut h = harness(Config::default(), &s);
    h.until_listening();
    s.stt.say("I need a table for two.");
    h.speak(ms(600));
    h.silence(ms(600));
    // Part of the reply's first sentence has been played when the caller hangs up.
    h.silence(ms(900));
    h.conv.handle_hangup(h.now);
    h.drain();
    assert_eq!(h.conv.state(), State::Ended);
    let agent = h.agent_memory();
    assert_eq!(agent.len(), 1, "{agent:?}");
    let reply = "You said you need a table for two.";
    assert!(
        !agent[0].is_empty() && reply.starts_with(&agent[0]) && agent[0].len() < reply.len(),
        "{agent:?}"
    );
    assert!(
        !agent.iter().any(|t| t.contains("How can I help")),
        "the greeting is a canned prompt, never remembered: {agent:?}"
    );
}

fn with_handoff() -> Config {
    Config {
        handoff: Some(HandoffConfig {
            default_target: Some("1001".into()),
            allowed: vec!["1001".into(), "1002".into()],
        }),
        ..late_stt()
    }
}

#[test]
fn asking_for_a_person_is_answered_then_transferred_and_the_agent_goes_quiet() {
    let s = Stages::new();
    let mut h = harness(with_handoff(), &s);
    h.until_listening();
    s.stt.say("Can you connect me to a person, please?");
    h.speak(ms(1200));
    h.silence(ms(700));
    for _ in 0..200 {
        if !h.transfers.is_empty() {
            break;
        }
        h.frame(false);
    }
    assert_eq!(h.transfers, vec!["1001".to_string()]);
    let spoken = s.tts.spoken.lock().unwrap().clone();
    assert!(
        spoken
            .iter()
            .any(|t| t.contains("Connecting you to extension 1001")),
        "{spoken:?}"
    );
    assert_eq!(h.conv.state(), State::Transferring);
    // While the person's phone rings the agent neither listens nor reprompts.
    let before = h.log.len();
    h.speak(ms(1500));
    h.silence(ms(15_000));
    assert_eq!(h.count(is_transcribe), 1, "{}", h.summary());
    assert!(
        h.actions_since(before).is_empty(),
        "{:?}",
        h.actions_since(before)
    );
    // What the caller heard is remembered, so the next call knows about the hand-off.
    assert!(
        h.agent_memory()
            .iter()
            .any(|t| t.contains("Connecting you")),
        "{:?}",
        h.agent_memory()
    );
}

#[test]
fn a_transfer_nobody_answers_brings_the_caller_back_to_the_agent() {
    let s = Stages::new();
    let mut h = harness(with_handoff(), &s);
    h.until_listening();
    h.conv.handle_dtmf(h.now, '0');
    h.drain();
    for _ in 0..200 {
        if !h.transfers.is_empty() {
            break;
        }
        h.frame(false);
    }
    assert_eq!(h.transfers, vec!["1001".to_string()]);
    h.conv.handle_transfer_failed(h.now, "1001", 408);
    h.drain();
    h.until_listening();
    let spoken = s.tts.spoken.lock().unwrap().clone();
    assert!(
        spoken
            .iter()
            .any(|t| t.contains("extension 1001 did not answer") && t.contains("still here")),
        "{spoken:?}"
    );
    // And it answers the caller again.
    s.stt.say("What time is it?");
    h.speak(ms(1000));
    h.silence(ms(700));
    h.until_listening();
    assert_eq!(h.count(is_transcribe), 1);
}

#[test]
fn without_a_handoff_configured_asking_for_a_person_is_just_a_turn() {
    let s = Stages::new();
    let mut h = harness(late_stt(), &s);
    h.until_listening();
    s.stt.say("Connect me to a person.");
    h.speak(ms(1000));
    h.silence(ms(700));
    h.until_listening();
    assert!(h.transfers.is_empty());
}

/// What was said and played in the last exchange, as memory got it.
fn last_exchange(h: &Harness) -> (Vec<String>, Vec<String>) {
    let caller = h
        .remembered
        .iter()
        .filter(|t| t.role == Role::Caller)
        .map(|t| t.text.clone())
        .collect();
    (caller, h.agent_memory())
}

// Every way a call ends commits its last exchange. The shell ends a call for its own
// reasons (the far end's BYE, shutdown, no RTP) through `handle_hangup`; the time limit
// is the conversation's own.

#[test]
fn time_limit_mid_reply_remembers_what_the_caller_said_and_the_played_part() {
    let s = Stages::new();
    let cfg = Config {
        max_call: Duration::from_secs(8),
        silence_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.until_listening();
    s.stt.say("My locker code is four seven two nine.");
    h.speak(ms(800));
    h.silence(ms(600));
    // The reply is playing when the limit comes.
    let limit = h.origin + Duration::from_secs(8);
    assert!(
        h.now < limit && h.conv.state() == State::Speaking,
        "{}",
        h.summary()
    );
    while h.now < limit {
        h.frame(false);
    }
    assert!(h.played_prompt(Prompt::TimeLimitGoodbye));
    let (caller, agent) = last_exchange(&h);
    assert_eq!(caller, ["My locker code is four seven two nine."]);
    assert_eq!(agent.len(), 1, "{agent:?}");
    assert!(!agent[0].is_empty(), "{agent:?}");
    assert!(
        !agent.iter().any(|t| t.contains("time limit")),
        "the canned goodbye is not memory: {agent:?}"
    );
}

#[test]
fn hangup_while_the_model_thinks_remembers_what_the_caller_said() {
    let s = Stages::new();
    let cfg = Config {
        use_llm: true,
        ..Config::default()
    };
    let mut h = harness(cfg, &s);
    h.llm_delay = Duration::from_secs(3);
    s.llm.reply(&["Noted."]);
    h.until_listening();
    s.stt.say("My locker code is four seven two nine.");
    h.speak(ms(800));
    h.silence(ms(900));
    assert_eq!(h.conv.state(), State::Thinking, "{}", h.summary());
    assert!(
        h.remembered.is_empty(),
        "nothing is committed before the answer"
    );
    h.conv.handle_hangup(h.now);
    h.drain();
    let (caller, agent) = last_exchange(&h);
    assert_eq!(caller, ["My locker code is four seven two nine."]);
    assert!(agent.is_empty(), "nothing was played: {agent:?}");
}

#[test]
fn hangup_while_transcribing_remembers_the_words_when_they_arrive() {
    let s = Stages::new();
    let mut h = harness(late_stt(), &s);
    h.stt_delay = Duration::from_secs(3);
    h.until_listening();
    s.stt.say("My locker code is four seven two nine.");
    h.speak(ms(800));
    h.silence(ms(700));
    assert!(h.conv.awaiting_transcript(), "{}", h.summary());
    h.conv.handle_hangup(h.now);
    h.drain();
    assert!(h.remembered.is_empty());
    // The shell waits for the transcription; its words are the call's last.
    h.silence(Duration::from_secs(3));
    assert!(!h.conv.awaiting_transcript());
    let (caller, agent) = last_exchange(&h);
    assert_eq!(caller, ["My locker code is four seven two nine."]);
    assert!(agent.is_empty(), "{agent:?}");
    assert!(
        !h.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Synthesize { .. })),
        "an ended call answered: {}",
        h.summary()
    );
}

#[test]
fn time_limit_while_transcribing_says_goodbye_and_still_remembers_the_words() {
    let s = Stages::new();
    let cfg = Config {
        max_call: Duration::from_secs(6),
        silence_timeout: Duration::from_secs(600),
        ..late_stt()
    };
    let mut h = harness(cfg, &s);
    h.stt_delay = Duration::from_secs(4);
    h.until_listening();
    s.stt.say("My locker code is four seven two nine.");
    h.speak(ms(800));
    h.silence(ms(700));
    let limit = h.origin + Duration::from_secs(6);
    assert!(h.now + Duration::from_secs(4) > limit, "{}", h.summary());
    h.silence(Duration::from_secs(10));
    assert!(h.played_prompt(Prompt::TimeLimitGoodbye));
    assert_eq!(h.last_hang_up(), Some(HangUpReason::MaxCallDuration));
    let (caller, agent) = last_exchange(&h);
    assert_eq!(caller, ["My locker code is four seven two nine."]);
    assert!(agent.is_empty(), "the words were not answered: {agent:?}");
}
