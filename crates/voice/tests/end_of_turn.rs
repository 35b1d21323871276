//! The end-of-turn model's state machine ([`EndOfTurn::Model`]) in virtual time, with
//! scripted verdicts: when the model is asked and on what audio, what a complete,
//! incomplete, stale or failed verdict does, the silence fallback, and that the early
//! transcription started with the check is what a complete turn is answered with.
//! (That the real model tells complete from incomplete speech is proved through real
//! calls in the root package's tests/agent_turn.rs.)

use std::time::{Duration, Instant};

use sofia_voice::{
    Action, CallInfo, Config, Conversation, EndOfTurn, Event, ModelTurn, PlaybackProgress,
    Recollection, StageError, State, Transcript, TurnCheckId, TurnId, TurnVerdict,
};

const FRAME: Duration = Duration::from_millis(20);
const FRAME_SAMPLES: usize = 320;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[allow(
    clippy::disallowed_methods,
    reason = "a fixed origin for virtual time in tests"
)]
fn origin() -> Instant {
    Instant::now()
}

fn model_config() -> Config {
    Config {
        end_of_turn: EndOfTurn::Model(ModelTurn::default()),
        ..Config::default()
    }
}

/// A call in virtual time whose playback finishes as soon as it is queued.
struct Call {
    conv: Conversation,
    origin: Instant,
    now: Instant,
    log: Vec<(Duration, Action)>,
    events: Vec<Event>,
}

impl Call {
    fn new(cfg: Config) -> Self {
        let origin = origin();
        let info = CallInfo {
            caller: "1001".into(),
            call_id: "call-1".into(),
            started: origin,
            started_unix_ms: 1_700_000_000_000,
        };
        let mut call = Self {
            conv: Conversation::new(cfg, info, Recollection::default()),
            origin,
            now: origin,
            log: Vec::new(),
            events: Vec::new(),
        };
        call.drain();
        assert_eq!(call.conv.state(), State::Listening, "greeting played");
        call.frames(ms(400), false); // fills the pre-roll
        call
    }

    fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// Takes the queued actions; clips play out at once.
    fn drain(&mut self) {
        while let Some(action) = self.conv.poll_action() {
            let clip = match &action {
                Action::Play { clip, .. } | Action::PlayPrompt { clip, .. } => Some(*clip),
                _ => None,
            };
            self.log.push((self.elapsed(), action));
            if let Some(clip) = clip {
                self.conv.handle_playback_progress(
                    self.now,
                    PlaybackProgress {
                        clip,
                        played: ms(500),
                        total: ms(500),
                    },
                );
            }
        }
        while let Some(e) = self.conv.poll_event() {
            self.events.push(e);
        }
    }

    fn frames(&mut self, d: Duration, speech: bool) {
        let level = if speech { 0.3 } else { 0.0 };
        for _ in 0..d.as_millis() / FRAME.as_millis() {
            self.now += FRAME;
            self.conv
                .handle_audio(self.now, &[level; FRAME_SAMPLES], speech);
            self.drain();
        }
    }

    /// The caller speaks for `speech`, then is silent until the model is asked (200 ms):
    /// returns when the speech ended, the check and the early transcription's turn.
    fn speak_until_asked(&mut self, speech: Duration) -> (Duration, TurnCheckId, TurnId) {
        self.frames(speech, true);
        let spoke_until = self.elapsed();
        self.frames(ms(200), false);
        let (_, check, _) = *self.checks().last().expect("the model was asked");
        let (_, turn) = *self.transcribes().last().expect("transcription started");
        (spoke_until, check, turn)
    }

    fn checks(&self) -> Vec<(Duration, TurnCheckId, usize)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::PredictTurnEnd { check, audio } => Some((*t, *check, audio.len())),
                _ => None,
            })
            .collect()
    }

    fn transcribes(&self) -> Vec<(Duration, TurnId)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::Transcribe { turn, .. } => Some((*t, *turn)),
                _ => None,
            })
            .collect()
    }

    fn verdict(&mut self, check: TurnCheckId, result: Result<f32, StageError>) {
        self.conv.handle_turn_prediction(self.now, check, result);
        self.drain();
    }

    fn transcript(&mut self, turn: TurnId, text: &str) {
        self.conv
            .handle_transcript(self.now, turn, Ok(Transcript::heard(text)));
        self.drain();
    }

    /// The first reply clip (the answer to the caller's turn), and when it was queued.
    fn answered_at(&self) -> Option<Duration> {
        self.log
            .iter()
            .skip(1) // the greeting
            .find(|(_, a)| matches!(a, Action::Synthesize { .. }))
            .map(|(t, _)| *t)
    }

    fn verdicts(&self) -> Vec<TurnVerdict> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TurnVerdict { verdict, .. } => Some(*verdict),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn the_model_is_asked_after_200_ms_of_silence_with_the_utterance_and_transcription_starts_too() {
    let mut c = Call::new(model_config());
    c.frames(ms(1000), true);
    let spoke_until = c.elapsed();
    c.frames(ms(180), false);
    assert!(c.checks().is_empty(), "asked before 200 ms of silence");
    c.frames(ms(20), false);
    let checks = c.checks();
    assert_eq!(checks.len(), 1, "{:?}", c.log);
    let (at, _, len) = checks[0];
    assert_eq!(at, spoke_until + ms(200));
    // The utterance so far: 300 ms pre-roll (the greeting's silence), 1 s of speech and
    // the 200 ms of silence after it.
    assert_eq!(len, 16 * (300 + 1000 + 200));
    let transcribes = c.transcribes();
    assert_eq!(
        transcribes.len(),
        1,
        "one early transcription, started ahead of the check: {:?}",
        c.log
    );
    assert_eq!(transcribes[0].0, spoke_until + ms(100));
    let sent = c.log.iter().find_map(|(_, a)| match a {
        Action::Transcribe { audio, .. } => Some(audio.len()),
        _ => None,
    });
    assert_eq!(
        sent,
        Some(16 * (300 + 1000 + 200)),
        "Whisper gets the trailing 200 ms of silence though only 100 ms had arrived"
    );
    c.frames(ms(400), false);
    assert_eq!(c.checks().len(), 1, "one check per stretch of speech");
    assert_eq!(c.transcribes().len(), 1, "and one transcription");
}

/// Silero says "silence" 100-170 ms after the voice stops; the quiet frames it still
/// called speech count towards the silence (up to 160 ms), loud ones do not.
#[test]
fn quiet_frames_the_detector_still_called_speech_count_as_silence() {
    let mut c = Call::new(model_config());
    c.frames(ms(1000), true);
    let voice_stopped = c.elapsed();
    // The detector lags: 120 ms more "speech", at line-noise level.
    for _ in 0..6 {
        c.now += FRAME;
        c.conv.handle_audio(c.now, &[0.001; FRAME_SAMPLES], true);
        c.drain();
    }
    c.frames(ms(80), false);
    let checks = c.checks();
    assert_eq!(
        checks.len(),
        1,
        "asked 200 ms after the voice stopped: {:?}",
        c.log
    );
    assert_eq!(checks[0].0, voice_stopped + ms(200));

    // The same lag with the frames still loud is speech: no credit.
    let mut c = Call::new(model_config());
    c.frames(ms(1000), true);
    c.frames(ms(120), true);
    let speech_flag_ended = c.elapsed();
    c.frames(ms(200), false);
    assert_eq!(c.checks()[0].0, speech_flag_ended + ms(200));
}

#[test]
fn speech_after_the_transcription_started_cancels_it_and_the_next_pause_starts_another() {
    let mut c = Call::new(model_config());
    c.frames(ms(1000), true);
    c.frames(ms(120), false);
    let first = c.transcribes();
    assert_eq!(
        first.len(),
        1,
        "transcription starts after 100 ms of silence"
    );
    assert!(c.checks().is_empty(), "the model is asked only at 200 ms");
    c.frames(ms(600), true); // the caller goes on
    let cancelled = c
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::Cancel { turn } if *turn == first[0].1));
    assert!(
        cancelled,
        "the superseded transcription is cancelled: {:?}",
        c.log
    );
    c.frames(ms(200), false);
    assert_eq!(
        c.transcribes().len(),
        2,
        "a new one for the whole utterance"
    );
    assert_eq!(
        c.checks().len(),
        1,
        "and the model asked once, about all of it"
    );
}

#[test]
fn a_complete_verdict_ends_the_turn_at_once_and_answers_with_the_early_transcript() {
    let mut c = Call::new(model_config());
    let (_, check, turn) = c.speak_until_asked(ms(1000));
    c.frames(ms(40), false); // the model takes 40 ms
    c.transcript(turn, "I need a table for two.");
    assert_eq!(
        c.conv.state(),
        State::Listening,
        "not answered before the verdict"
    );
    assert!(c.answered_at().is_none());
    c.verdict(check, Ok(0.93));
    assert_eq!(c.verdicts(), vec![TurnVerdict::Complete]);
    let answered = c.answered_at().expect("answered");
    assert_eq!(answered, c.elapsed(), "answered on the verdict");
    assert_eq!(c.transcribes().len(), 1, "the early transcription was used");
}

#[test]
fn a_complete_verdict_before_the_transcript_answers_when_the_transcript_arrives() {
    let mut c = Call::new(model_config());
    let (_, check, turn) = c.speak_until_asked(ms(800));
    c.verdict(check, Ok(0.8));
    assert_eq!(
        c.conv.state(),
        State::Listening,
        "the words are awaited before deciding"
    );
    c.frames(ms(300), false);
    c.transcript(turn, "What time do you open?");
    assert_eq!(c.verdicts(), vec![TurnVerdict::Complete]);
    assert_eq!(c.answered_at(), Some(c.elapsed()));
    assert_eq!(c.transcribes().len(), 1);
}

#[test]
fn words_that_stop_mid_phrase_keep_listening_though_the_model_says_complete() {
    let mut c = Call::new(model_config());
    let (spoke, check, turn) = c.speak_until_asked(ms(1200));
    c.verdict(check, Ok(0.95));
    c.transcript(turn, "My account number is.");
    assert_eq!(c.verdicts(), vec![TurnVerdict::Incomplete]);
    c.frames(ms(1300), false); // 1.5 s of silence in all
    assert_eq!(c.conv.state(), State::Listening, "not cut after \"is\"");
    c.frames(ms(100), false);
    assert_eq!(
        c.verdicts(),
        vec![TurnVerdict::Incomplete, TurnVerdict::Fallback]
    );
    assert_eq!(c.conv.state(), State::Thinking);
    assert_eq!(c.elapsed(), spoke + ms(1600), "ended by the fallback");
}

#[test]
fn a_finished_sentence_the_model_doubts_ends_after_the_unsure_silence() {
    let mut c = Call::new(model_config());
    let (spoke, check, turn) = c.speak_until_asked(ms(1200));
    c.frames(ms(40), false);
    c.transcript(turn, "My favourite colour is blue.");
    assert!(c.verdicts().is_empty(), "the model is awaited");
    c.verdict(check, Ok(0.02));
    assert_eq!(c.verdicts(), vec![TurnVerdict::Unsure]);
    c.frames(ms(640), false); // 880 ms of silence
    assert_eq!(c.conv.state(), State::Listening);
    c.frames(ms(20), false);
    assert_eq!(c.conv.state(), State::Thinking, "ended at 900 ms");
    assert_eq!(c.elapsed(), spoke + ms(900));
    assert_eq!(
        c.answered_at(),
        Some(spoke + ms(900)),
        "with the early words"
    );
}

#[test]
fn a_confident_model_on_words_without_a_full_stop_ends_after_the_unsure_silence() {
    let mut c = Call::new(model_config());
    let (spoke, check, turn) = c.speak_until_asked(ms(1200));
    c.transcript(turn, "My favorite colors"); // Whisper heard a sentence going on
    c.verdict(check, Ok(0.95));
    assert_eq!(c.verdicts(), vec![TurnVerdict::Unsure]);
    assert_eq!(c.conv.state(), State::Listening, "not ended at once");
    c.frames(ms(680), false);
    assert_eq!(c.conv.state(), State::Listening, "not before 900 ms");
    c.frames(ms(20), false);
    assert_eq!(c.conv.state(), State::Thinking, "ended at 900 ms");
    assert_eq!(c.answered_at(), Some(spoke + ms(900)));
}

#[test]
fn an_incomplete_verdict_keeps_listening_and_the_rest_of_the_sentence_is_one_turn() {
    let mut c = Call::new(model_config());
    c.frames(ms(900), true); // "I would like to"
    c.frames(ms(200), false);
    let (_, first, _) = c.checks()[0];
    let (_, early) = c.transcribes()[0];
    c.verdict(first, Ok(0.1));
    assert!(c.verdicts().is_empty(), "the words are awaited");
    c.transcript(early, "I would like to.");
    assert_eq!(c.verdicts(), vec![TurnVerdict::Incomplete]);
    c.frames(ms(500), false); // a 700 ms pause in all
    assert_eq!(c.conv.state(), State::Listening, "not cut at the pause");
    c.frames(ms(800), true); // "order a pizza"
    let spoke_until = c.elapsed();
    c.frames(ms(200), false);
    let checks = c.checks();
    assert_eq!(checks.len(), 2, "asked again after the second half");
    let (_, second, len) = checks[1];
    assert_eq!(
        len,
        16 * (300 + 900 + 700 + 800 + 200),
        "the whole sentence"
    );
    let transcribes = c.transcribes();
    assert_eq!(
        transcribes.len(),
        2,
        "the first early transcription was dropped"
    );
    assert!(
        c.log
            .iter()
            .any(|(_, a)| matches!(a, Action::Cancel { turn } if *turn == transcribes[0].1)),
        "the transcription of the first half was cancelled"
    );
    c.verdict(second, Ok(0.9));
    c.transcript(transcribes[1].1, "I would like to order a pizza.");
    assert_eq!(c.answered_at(), Some(spoke_until + ms(200)));
}

#[test]
fn the_fallback_silence_ends_a_turn_the_model_called_incomplete() {
    let mut c = Call::new(model_config());
    let (spoke_until, check, turn) = c.speak_until_asked(ms(1000));
    c.transcript(turn, "So I was thinking");
    c.verdict(check, Ok(0.2));
    c.frames(ms(1380), false);
    assert!(c.answered_at().is_none(), "ended before the fallback");
    c.frames(ms(20), false);
    assert_eq!(c.answered_at(), Some(spoke_until + ms(1600)));
    assert_eq!(
        c.verdicts(),
        vec![TurnVerdict::Incomplete, TurnVerdict::Fallback]
    );
}

#[test]
fn the_fallback_silence_ends_the_turn_when_the_model_never_answers() {
    let mut c = Call::new(model_config());
    c.frames(ms(1000), true);
    let spoke_until = c.elapsed();
    c.frames(ms(200), false);
    let (_, turn) = c.transcribes()[0];
    c.transcript(turn, "Hello there.");
    c.frames(ms(1400), false);
    assert_eq!(c.answered_at(), Some(spoke_until + ms(1600)));
    assert_eq!(c.verdicts(), vec![TurnVerdict::Fallback]);
}

#[test]
fn a_verdict_on_audio_the_caller_has_since_added_to_is_ignored() {
    let mut c = Call::new(model_config());
    let (_, stale, _) = c.speak_until_asked(ms(1000));
    c.frames(ms(300), true); // the caller goes on before the model answers
    c.verdict(stale, Ok(0.99));
    assert!(c.verdicts().is_empty(), "a stale verdict is not counted");
    assert_eq!(
        c.conv.state(),
        State::Listening,
        "a stale 'complete' ends nothing"
    );
    c.frames(ms(100), false);
    assert_eq!(c.conv.state(), State::Listening);
    assert_eq!(
        c.checks().len(),
        1,
        "not asked again before 200 ms of silence"
    );
}

#[test]
fn a_failed_verdict_falls_back_to_the_silence_rule() {
    let mut c = Call::new(model_config());
    let (spoke_until, check, turn) = c.speak_until_asked(ms(1000));
    c.transcript(turn, "Hello there.");
    c.verdict(check, Err(StageError::Busy));
    assert_eq!(c.verdicts(), vec![TurnVerdict::Failed]);
    c.frames(ms(380), false);
    assert!(
        c.answered_at().is_none(),
        "ended before end_of_turn_silence"
    );
    c.frames(ms(20), false);
    assert_eq!(c.answered_at(), Some(spoke_until + ms(600)));
}

#[test]
fn a_failure_reported_after_the_silence_rule_was_due_ends_the_turn_at_once() {
    let mut c = Call::new(model_config());
    let (_, check, turn) = c.speak_until_asked(ms(1000));
    c.transcript(turn, "Hello there.");
    c.frames(ms(700), false);
    assert!(c.answered_at().is_none());
    c.verdict(check, Err(StageError::Timeout));
    assert_eq!(c.answered_at(), Some(c.elapsed()));
}

#[test]
fn a_cough_asks_nothing_and_silence_mode_never_asks() {
    let mut c = Call::new(model_config());
    c.frames(ms(100), true); // shorter than min_speech
    c.frames(ms(1000), false);
    assert!(c.checks().is_empty());
    assert!(c.transcribes().is_empty());
    let mut c = Call::new(Config::default());
    c.frames(ms(1000), true);
    c.frames(ms(600), false);
    assert!(c.checks().is_empty(), "silence mode does not ask the model");
    assert_eq!(c.transcribes().len(), 1);
    assert_eq!(c.conv.state(), State::Thinking);
}
