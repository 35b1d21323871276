//! Test doubles for the voice stages and a virtual-time shell that drives a
//! `Conversation` with them: 20 ms frames, a simulated playout queue, stage results that
//! arrive after a configurable virtual delay. No threads, no sleeps, no clock but the
//! single origin instant.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support"
)]

pub mod audio;

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sofia_voice::{
    Action, Audio, CallInfo, ClipId, Config, Conversation, Event, GenerateRequest, HangUpReason,
    Llm, Memory, PlaybackProgress, Prompt, Recollection, Remembered, ReplyChunk, Role, SpeechStats,
    StageError, State, Stt, Transcript, Tts, TurnId, TurnRecord,
};

pub const FRAME: Duration = Duration::from_millis(20);
pub const FRAME_SAMPLES: usize = 320;

/// Whether `action` plays `prompt`.
pub fn is_prompt(action: &Action, prompt: Prompt) -> bool {
    matches!(action, Action::PlayPrompt { prompt: p, .. } if *p == prompt)
}

// ---- doubles -------------------------------------------------------------------------

/// Answers with scripted transcripts, in order; an exhausted script hears nothing.
#[derive(Default)]
pub struct ScriptedStt {
    script: Mutex<VecDeque<Result<String, StageError>>>,
    pub heard: Mutex<Vec<(usize, SpeechStats)>>,
}

impl ScriptedStt {
    pub fn say(&self, text: &str) {
        self.script.lock().unwrap().push_back(Ok(text.to_string()));
    }
    pub fn fail(&self) {
        self.script
            .lock()
            .unwrap()
            .push_back(Err(StageError::Inference("scripted failure".into())));
    }
}

impl Stt for ScriptedStt {
    fn transcribe(&self, audio: &[f32], speech: SpeechStats) -> Result<Transcript, StageError> {
        self.heard.lock().unwrap().push((audio.len(), speech));
        match self.script.lock().unwrap().pop_front() {
            Some(Ok(text)) => Ok(Transcript::heard(text)),
            Some(Err(e)) => Err(e),
            None => Ok(Transcript::default()),
        }
    }
}

/// Streams scripted replies; `fail_next(n)` makes the next n calls fail.
#[derive(Default)]
pub struct ScriptedLlm {
    replies: Mutex<VecDeque<Vec<String>>>,
    failures: Mutex<u32>,
    pub calls: Mutex<Vec<GenerateRequest>>,
}

impl ScriptedLlm {
    pub fn reply(&self, chunks: &[&str]) {
        self.replies
            .lock()
            .unwrap()
            .push_back(chunks.iter().map(|c| c.to_string()).collect());
    }
    pub fn fail_next(&self, n: u32) {
        *self.failures.lock().unwrap() = n;
    }
}

impl Llm for ScriptedLlm {
    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), StageError> {
        self.calls.lock().unwrap().push(request.clone());
        {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(StageError::Unreachable("scripted outage".into()));
            }
        }
        let chunks = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| vec!["Okay.".to_string()]);
        for c in chunks {
            if on_text(&c).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// Speech of 60 ms per character at 8 kHz (silence); can be told to fail.
#[derive(Default)]
pub struct FakeTts {
    pub failing: Mutex<bool>,
    pub spoken: Mutex<Vec<String>>,
}

pub fn speech_length(text: &str) -> Duration {
    FRAME * 3 * text.chars().count() as u32
}

impl Tts for FakeTts {
    fn synthesize(&self, text: &str) -> Result<Audio, StageError> {
        if *self.failing.lock().unwrap() {
            return Err(StageError::Inference("scripted TTS failure".into()));
        }
        self.spoken.lock().unwrap().push(text.to_string());
        // 60 ms per character at 8 kHz.
        let n = text.chars().count() * 480;
        Ok(Audio {
            samples: vec![0.0; n],
            sample_rate: 8000,
        })
    }
}

/// Memory in a vector: a test double for the conversation's state machine. It recalls
/// every turn of the caller's earlier calls and greets with the last thing they said.
#[derive(Default)]
pub struct VecMemory {
    pub turns: Mutex<Vec<TurnRecord>>,
}

impl VecMemory {
    fn earlier(&self, caller: &str, call_id: &str) -> Vec<Remembered> {
        let turns = self.turns.lock().unwrap();
        turns
            .iter()
            .filter(|t| t.caller == caller && t.call_id != call_id)
            .map(|t| Remembered {
                role: t.role,
                text: t.text.clone(),
                unix_ms: t.unix_ms,
                call_id: t.call_id.clone(),
                score: 1.0,
            })
            .collect()
    }
}

impl Memory for VecMemory {
    fn open_call(
        &self,
        caller: &str,
        call_id: &str,
        _now_ms: i64,
    ) -> Result<Recollection, StageError> {
        let earlier = self.earlier(caller, call_id);
        // Names as the real memory's consolidation finds them: an answer to "your name?".
        let mut name = None;
        let mut asked = false;
        for t in &earlier {
            match t.role {
                Role::Agent => asked = t.text.to_lowercase().contains("your name"),
                Role::Caller => {
                    if let Some(n) = sofia_voice::text::extract_name(&t.text, asked) {
                        name = Some(n);
                    }
                }
            }
        }
        let last_topic = earlier
            .iter()
            .rev()
            .find(|t| t.role == Role::Caller && t.text.split_whitespace().count() >= 3)
            .cloned();
        Ok(Recollection {
            name,
            last_topic,
            turns: earlier,
            ..Recollection::default()
        })
    }
    fn recall(&self, caller: &str, _query: &str, _now_ms: i64) -> Result<Recollection, StageError> {
        Ok(Recollection {
            turns: self.earlier(caller, ""),
            ..Recollection::default()
        })
    }
    fn remember(&self, turn: &TurnRecord) -> Result<(), StageError> {
        self.turns.lock().unwrap().push(turn.clone());
        Ok(())
    }
    fn close_call(&self, _caller: &str, _call_id: &str) -> Result<(), StageError> {
        Ok(())
    }
}

// ---- the virtual shell ----------------------------------------------------------------

/// A stage result waiting for its virtual completion time.
enum Due {
    Transcript(TurnId, Result<Transcript, StageError>),
    Reply(TurnId, ReplyChunk),
    Audio(ClipId, Result<Audio, StageError>),
}

pub struct Harness<'a> {
    pub conv: Conversation,
    pub now: Instant,
    pub origin: Instant,
    pub stt: &'a dyn Stt,
    pub llm: &'a dyn Llm,
    pub tts: &'a dyn Tts,
    pub memory: &'a dyn Memory,
    /// Virtual latencies of the stages.
    pub stt_delay: Duration,
    pub llm_delay: Duration,
    pub tts_delay: Duration,
    due: Vec<(Instant, Due)>,
    /// (clip, length, played) in playout order.
    pub playout: VecDeque<(ClipId, Duration, Duration)>,
    /// Every action, with the time it was taken.
    pub log: Vec<(Duration, Action)>,
    pub events: Vec<(Duration, Event)>,
    pub hung_up: bool,
    pub caller: String,
    /// Every turn the conversation asked memory to store, in order.
    pub remembered: Vec<TurnRecord>,
    /// Targets of the transfers the conversation asked for.
    pub transfers: Vec<String>,
}

pub fn call_info(origin: Instant, caller: &str, call_id: &str) -> CallInfo {
    CallInfo {
        caller: caller.into(),
        call_id: call_id.into(),
        started: origin,
        started_unix_ms: 1_700_000_000_000,
    }
}

impl<'a> Harness<'a> {
    pub fn new(
        cfg: Config,
        origin: Instant,
        caller: &str,
        call_id: &str,
        stages: (&'a dyn Stt, &'a dyn Llm, &'a dyn Tts, &'a dyn Memory),
    ) -> Self {
        let (stt, llm, tts, memory) = stages;
        let info = call_info(origin, caller, call_id);
        let recollection = memory
            .open_call(caller, call_id, info.started_unix_ms)
            .expect("open_call");
        let conv = Conversation::new(cfg, info, recollection);
        let mut h = Self {
            conv,
            now: origin,
            origin,
            stt,
            llm,
            tts,
            memory,
            stt_delay: Duration::ZERO,
            llm_delay: Duration::ZERO,
            tts_delay: Duration::ZERO,
            due: Vec::new(),
            playout: VecDeque::new(),
            log: Vec::new(),
            events: Vec::new(),
            hung_up: false,
            caller: caller.to_string(),
            remembered: Vec::new(),
            transfers: Vec::new(),
        };
        h.drain();
        h
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// Runs the actions and events the controller has queued.
    pub fn drain(&mut self) {
        while let Some(action) = self.conv.poll_action() {
            self.log.push((self.elapsed(), action.clone()));
            self.execute(action);
        }
        while let Some(e) = self.conv.poll_event() {
            self.events.push((self.elapsed(), e));
        }
        self.deliver_due();
    }

    fn execute(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Transcribe {
                turn,
                audio,
                speech,
            } => {
                let r = self.stt.transcribe(&audio, speech);
                self.due
                    .push((now + self.stt_delay, Due::Transcript(turn, r)));
            }
            Action::Generate { turn, request } => {
                let mut chunks = Vec::new();
                let r = self.llm.generate(&request, &mut |t| {
                    chunks.push(ReplyChunk::Text(t.to_string()));
                    ControlFlow::Continue(())
                });
                chunks.push(match r {
                    Ok(()) => ReplyChunk::End,
                    Err(e) => ReplyChunk::Failed(e),
                });
                for c in chunks {
                    self.due.push((now + self.llm_delay, Due::Reply(turn, c)));
                }
            }
            Action::Synthesize { clip, text } => {
                let r = self.tts.synthesize(&text);
                self.due.push((now + self.tts_delay, Due::Audio(clip, r)));
            }
            Action::Play { clip, audio } => {
                self.playout
                    .push_back((clip, audio.duration(), Duration::ZERO));
            }
            Action::PlayPrompt { clip, prompt } => {
                self.playout
                    .push_back((clip, speech_length(prompt.text()), Duration::ZERO));
            }
            Action::FlushPlayback => self.playout.clear(),
            Action::Cancel { turn } | Action::CancelGenerate { turn } => {
                self.due.retain(|(_, d)| match d {
                    Due::Transcript(t, _) | Due::Reply(t, _) => *t != turn,
                    Due::Audio(..) => true,
                });
            }
            Action::Remember(turn) => {
                self.memory.remember(&turn).expect("remember");
                self.remembered.push(turn);
            }
            Action::HangUp { .. } => self.hung_up = true,
            Action::Transfer { target } => self.transfers.push(target),
            // The harness runs the silence rule (Config::default); the end-of-turn
            // model's state machine has its own tests in crates/voice.
            Action::PredictTurnEnd { .. } => {}
        }
    }

    fn deliver_due(&mut self) {
        loop {
            let now = self.now;
            let Some(i) = self.due.iter().position(|(t, _)| *t <= now) else {
                return;
            };
            let (_, due) = self.due.remove(i);
            match due {
                Due::Transcript(turn, r) => {
                    // As the shell does: recall by the meaning of the words first.
                    if let Ok(t) = &r {
                        if !t.text.is_empty() {
                            let now_ms = 1_700_000_000_000 + (now - self.origin).as_millis() as i64;
                            if let Ok(recalled) = self.memory.recall(&self.caller, &t.text, now_ms)
                            {
                                self.conv.set_recollection(recalled);
                            }
                        }
                    }
                    self.conv.handle_transcript(now, turn, r)
                }
                Due::Reply(turn, c) => self.conv.handle_reply_text(now, turn, c),
                Due::Audio(clip, r) => self.conv.handle_tts_audio(now, clip, r),
            }
            self.drain();
        }
    }

    /// One 20 ms frame of caller audio (speech or silence).
    pub fn frame(&mut self, speech: bool) {
        let level = if speech { 0.3 } else { 0.0 };
        self.frame_audio(&[level; FRAME_SAMPLES], speech);
    }

    /// One 20 ms frame of real caller audio with the detector's verdict.
    pub fn frame_audio(&mut self, samples: &[f32], speech: bool) {
        self.now += FRAME;
        let now = self.now;
        // Playout advances by one frame.
        if let Some((clip, total, played)) = self.playout.front_mut() {
            *played = (*played + FRAME).min(*total);
            let progress = PlaybackProgress {
                clip: *clip,
                played: *played,
                total: *total,
            };
            if progress.played >= progress.total {
                self.playout.pop_front();
            }
            self.conv.handle_playback_progress(now, progress);
            self.drain();
        }
        self.conv.handle_audio(now, samples, speech);
        self.drain();
        if self.conv.poll_timeout().is_some_and(|t| t <= now) {
            self.conv.handle_timeout(now);
            self.drain();
        }
    }

    pub fn speak(&mut self, d: Duration) {
        for _ in 0..d.as_millis() / FRAME.as_millis() {
            self.frame(true);
        }
    }

    pub fn silence(&mut self, d: Duration) {
        for _ in 0..d.as_millis() / FRAME.as_millis() {
            self.frame(false);
        }
    }

    /// Silence until the agent is listening with nothing queued (or a limit passes).
    pub fn until_listening(&mut self) {
        for _ in 0..3000 {
            if self.hung_up
                || (self.conv.state() == State::Listening
                    && self.playout.is_empty()
                    && self.due.is_empty())
            {
                return;
            }
            self.frame(false);
        }
        panic!(
            "agent never went back to listening: {:?}",
            self.conv.state()
        );
    }

    /// The action log without audio samples, one line per action.
    pub fn summary(&self) -> String {
        self.log
            .iter()
            .map(|(t, a)| {
                let a = match a {
                    Action::Transcribe { turn, speech, .. } => {
                        format!("Transcribe {turn:?} {speech:?}")
                    }
                    Action::Play { clip, audio } => format!("Play {clip:?} {:?}", audio.duration()),
                    a => format!("{a:?}"),
                };
                format!("{t:>8.2?} {a}\n")
            })
            .collect()
    }

    pub fn actions_since(&self, since: usize) -> Vec<&Action> {
        self.log[since..].iter().map(|(_, a)| a).collect()
    }

    /// Whether `prompt` was played at any point.
    pub fn played_prompt(&self, prompt: Prompt) -> bool {
        self.log.iter().any(|(_, a)| is_prompt(a, prompt))
    }

    /// The reason of the hang-up, if the last action was one.
    pub fn last_hang_up(&self) -> Option<HangUpReason> {
        match self.log.last() {
            Some((_, Action::HangUp { reason })) => Some(*reason),
            _ => None,
        }
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(_, a)| pred(a)).count()
    }

    /// Texts the agent remembered saying, in order.
    pub fn agent_memory(&self) -> Vec<String> {
        self.remembered
            .iter()
            .filter(|t| t.role == sofia_voice::Role::Agent)
            .map(|t| t.text.clone())
            .collect()
    }
}
