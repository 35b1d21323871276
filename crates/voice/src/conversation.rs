//! The conversation controller: one per call, a plain `&mut self` state machine.
//!
//! It owns end of turn, barge-in, the silence and call-length timers, the order in which
//! reply sentences are synthesized and played, the circuit breakers and their fallbacks,
//! and what goes into memory. It sees 16 kHz PCM, text and times; it never sees RTP,
//! never reads a clock and never runs a model: the shell feeds it `handle_*` inputs and
//! carries out what [`Conversation::poll_action`] asks for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::breaker::{BreakerConfig, BreakerState, StageHealth};
use crate::responder;
use crate::splitter::SentenceSplitter;
use crate::stage::{
    Audio, GenerateRequest, Message, Recollection, Role, SpeechStats, StageError, Transcript,
    TurnRecord,
};
use crate::text;
use crate::turn_words::{self, Words};

/// The controller's audio rate: what Whisper and the voice activity detector take.
pub const SAMPLE_RATE: u32 = 16_000;

/// Tunables. The defaults suit a phone call.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// How the end of the caller's turn is decided.
    pub end_of_turn: EndOfTurn,
    /// Silence after speech that ends the caller's turn ([`EndOfTurn::Silence`], and
    /// [`EndOfTurn::Model`] when a verdict failed).
    pub end_of_turn_silence: Duration,
    /// After this much silence (less than `end_of_turn_silence`) transcription starts
    /// early, on the audio so far; if the caller stays silent until the end of the turn,
    /// its result is used and the transcription time is hidden in the wait. If they
    /// speak again, it is thrown away. `None`: transcribe at the end of the turn.
    pub early_stt_silence: Option<Duration>,
    /// Speech shorter than this (coughs, clicks, line noise) is not a turn.
    pub min_speech: Duration,
    /// Caller speech needed to interrupt the agent (guards against echo and noise).
    pub barge_in_min_speech: Duration,
    /// A silence this long resets a barge-in candidate that had not reached the guard.
    pub barge_in_reset: Duration,
    /// Longer speech is cut here and transcribed.
    pub max_utterance: Duration,
    /// Audio kept from before the detector fired (it fires late on soft onsets).
    pub pre_roll: Duration,
    /// Silence kept after the last speech frame when the utterance is handed to STT.
    pub trailing_audio: Duration,
    /// The voice detector says "silence" about 100-170 ms after the last voiced sample
    /// (Silero's state decays; measured by `bench/turn_model.sh`). When it does, the
    /// frames just before it that were already quiet (RMS below [`Config::quiet_level`])
    /// count as silence too, up to this much, so the end-of-turn timers run from when
    /// the caller actually stopped. Zero: silence counts from the detector's verdict.
    pub vad_lag_credit: Duration,
    /// Frame RMS below which audio is quiet enough to be the silence after speech
    /// (-45 dBFS; a line whose noise is louder gets no credit).
    pub quiet_level: f32,
    /// Caller silence (agent not speaking) before a reprompt.
    pub silence_timeout: Duration,
    /// Reprompts before the agent says goodbye and hangs up.
    pub max_reprompts: u32,
    /// The agent closes the call after this long.
    pub max_call: Duration,
    pub stt_timeout: Duration,
    /// The language model must start answering within this...
    pub llm_first_text_timeout: Duration,
    /// ...and finish within this.
    pub llm_timeout: Duration,
    pub tts_timeout: Duration,
    /// `false`: always use the built-in responder (no endpoint configured).
    pub use_llm: bool,
    pub stt_breaker: BreakerConfig,
    pub llm_breaker: BreakerConfig,
    pub tts_breaker: BreakerConfig,
    /// Sentences synthesized ahead of the one playing.
    pub tts_lookahead: usize,
    /// Messages of this call passed to the language model.
    pub history_limit: usize,
    /// Handing the caller to a person: `None` when the agent cannot transfer.
    pub handoff: Option<HandoffConfig>,
}

/// How the end of the caller's turn is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndOfTurn {
    /// After [`Config::end_of_turn_silence`] of silence.
    Silence,
    /// A learned model (Smart Turn) judges the audio after a short silence
    /// ([`Action::PredictTurnEnd`]): a complete turn ends then, an incomplete one waits
    /// for more speech or for `fallback_silence`.
    Model(ModelTurn),
}

/// The end-of-turn model's timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelTurn {
    /// Silence after enough speech at which the model is asked.
    pub check_silence: Duration,
    /// Silence after enough speech at which the transcription starts, ahead of the check
    /// (at the latest with it): the verdict waits for the words too, and Whisper takes
    /// longer than the model, so starting it first lets both be in at about the same
    /// time. Speech cancels it, as it does any early transcription.
    pub transcribe_silence: Duration,
    /// Silence after which the turn ends whatever the model said: a caller who paused
    /// mid-sentence has usually gone on within a second and a half, and longer
    /// waits make a wrong "incomplete" verdict feel like a dead line.
    pub fallback_silence: Duration,
    /// Probabilities above this are "complete".
    pub threshold: f32,
    /// When the model and the caller's words ([`turn_words`](crate::turn_words))
    /// disagree about whether the sentence is finished, the turn ends after this much
    /// silence: neither the quick answer nor the long wait. Longer than a typical
    /// mid-sentence pause (0.7 s in the bench) by more than the detector's timing
    /// error, shorter than the fallback.
    pub unsure_silence: Duration,
}

impl Default for ModelTurn {
    fn default() -> Self {
        Self {
            check_silence: Duration::from_millis(200),
            transcribe_silence: Duration::from_millis(100),
            fallback_silence: Duration::from_millis(1600),
            threshold: 0.5,
            unsure_silence: Duration::from_millis(900),
        }
    }
}

/// Identifies one [`Action::PredictTurnEnd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnCheckId(pub u64);

/// What decided (or did not decide) the end of a turn in [`EndOfTurn::Model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnVerdict {
    /// The model said the turn is complete and the words read as a finished sentence
    /// (Whisper closed it); it ended at once.
    Complete,
    /// The model said the caller is not done, or their words end in the middle of a
    /// sentence ("I would like to"); the agent keeps listening.
    Incomplete,
    /// The model and the words disagree (the model says "not done" but Whisper closed
    /// the sentence, or the model says "done" but Whisper left it open): the turn ends
    /// after [`ModelTurn::unsure_silence`].
    Unsure,
    /// The silence fallback ended the turn (the model said incomplete or had not
    /// answered).
    Fallback,
    /// The model failed; the silence rule ends this turn.
    Failed,
}

/// Whom the agent may connect a caller to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffConfig {
    /// "Connect me to a person" (or the key 0) goes here.
    pub default_target: Option<String>,
    /// Extensions a caller may ask for by number.
    pub allowed: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            end_of_turn: EndOfTurn::Silence,
            end_of_turn_silence: Duration::from_millis(600),
            early_stt_silence: Some(Duration::from_millis(250)),
            min_speech: Duration::from_millis(200),
            barge_in_min_speech: Duration::from_millis(200),
            barge_in_reset: Duration::from_millis(300),
            max_utterance: Duration::from_secs(15),
            pre_roll: Duration::from_millis(300),
            trailing_audio: Duration::from_millis(200),
            vad_lag_credit: Duration::from_millis(160),
            quiet_level: 0.0056,
            silence_timeout: Duration::from_secs(10),
            max_reprompts: 1,
            max_call: Duration::from_secs(15 * 60),
            stt_timeout: Duration::from_secs(10),
            llm_first_text_timeout: Duration::from_secs(5),
            llm_timeout: Duration::from_secs(30),
            tts_timeout: Duration::from_secs(10),
            use_llm: false,
            stt_breaker: BreakerConfig::default(),
            llm_breaker: BreakerConfig::default(),
            tts_breaker: BreakerConfig::default(),
            tts_lookahead: 2,
            history_limit: 20,
            handoff: None,
        }
    }
}

/// Who is calling and when the call started (on both clocks, so memory records carry
/// wall-clock times without this crate reading a clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInfo {
    pub caller: String,
    pub call_id: String,
    pub started: Instant,
    pub started_unix_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for, or collecting, the caller's speech.
    Listening,
    /// A caller turn is being transcribed or answered; nothing is playing yet.
    Thinking,
    /// Agent audio has been handed to playback.
    Speaking,
    /// The caller is being connected to a person ([`Action::Transfer`]); the agent is
    /// silent and ignores audio until [`Conversation::handle_transfer_failed`].
    Transferring,
    /// The call is over; inputs are ignored.
    Ended,
}

/// Identifies one exchange (a caller turn and its reply, or an agent-initiated prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TurnId(pub u64);

/// Identifies one piece of agent audio (a sentence or a cached prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClipId(pub u64);

/// Fixed phrases the shell synthesizes once at start-up and plays from a cache, so they
/// play at once and still play when text-to-speech is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    Greeting,
    Reprompt,
    SilenceGoodbye,
    TimeLimitGoodbye,
    SttRetry,
    SttGoodbye,
    TtsApology,
}

impl Prompt {
    pub const ALL: [Prompt; 7] = [
        Prompt::Greeting,
        Prompt::Reprompt,
        Prompt::SilenceGoodbye,
        Prompt::TimeLimitGoodbye,
        Prompt::SttRetry,
        Prompt::SttGoodbye,
        Prompt::TtsApology,
    ];

    pub fn text(self) -> &'static str {
        match self {
            Prompt::Greeting => responder::NEW_CALLER_GREETING,
            Prompt::Reprompt => "Are you still there?",
            Prompt::SilenceGoodbye => "I haven't heard anything, so I'll hang up now. Goodbye!",
            Prompt::TimeLimitGoodbye => {
                "I'm sorry, we've reached the time limit for this call. Goodbye!"
            }
            Prompt::SttRetry => "Sorry, I didn't catch that. Could you say it again?",
            Prompt::SttGoodbye => {
                "Sorry, I'm having trouble understanding right now. Please call back later. Goodbye!"
            }
            Prompt::TtsApology => "Sorry, I'm having trouble speaking right now. Please bear with me.",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUpReason {
    /// The caller said goodbye and the agent answered.
    Goodbye,
    SilenceTimeout,
    MaxCallDuration,
    /// Speech-to-text is failing; the agent apologised.
    SttUnavailable,
}

/// A stage, for breaker reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Stt,
    Llm,
    Tts,
}

/// Work for the shell. Results come back through the matching `handle_*` method with
/// the same id; results for a turn or clip the controller has given up on are ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the end-of-turn model whether the caller has finished, on the utterance so far
    /// (16 kHz: pre-roll, speech and the silence after it); answer with
    /// [`Conversation::handle_turn_prediction`].
    PredictTurnEnd { check: TurnCheckId, audio: Vec<f32> },
    /// Run speech-to-text on 16 kHz audio; answer with [`Conversation::handle_transcript`].
    Transcribe {
        turn: TurnId,
        audio: Vec<f32>,
        speech: SpeechStats,
    },
    /// Run the language model; stream into [`Conversation::handle_reply_text`].
    Generate {
        turn: TurnId,
        request: GenerateRequest,
    },
    /// Stop an outstanding `Generate` (timed out); text still arriving is ignored.
    CancelGenerate { turn: TurnId },
    /// Synthesize one sentence; answer with [`Conversation::handle_tts_audio`].
    Synthesize { clip: ClipId, text: String },
    /// Append audio to the playout queue; report with
    /// [`Conversation::handle_playback_progress`].
    Play { clip: ClipId, audio: Audio },
    /// Append a cached prompt to the playout queue; report progress as for `Play`.
    PlayPrompt { clip: ClipId, prompt: Prompt },
    /// Drop everything queued for playout, now.
    FlushPlayback,
    /// Abandon all work of this turn (the caller barged in or the call is closing).
    Cancel { turn: TurnId },
    /// Store a turn in memory (and the call transcript).
    Remember(TurnRecord),
    /// Connect the caller to `target` (an extension); the agent has said so. Report
    /// failure with [`Conversation::handle_transfer_failed`]; on success the call is
    /// the person's, and the conversation is over ([`Conversation::handle_hangup`]).
    Transfer { target: String },
    /// End the call (send BYE). Nothing follows.
    HangUp { reason: HangUpReason },
}

/// A reply chunk from the language model.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyChunk {
    Text(String),
    /// The reply is complete.
    End,
    Failed(StageError),
}

/// How far playback of a clip has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaybackProgress {
    pub clip: ClipId,
    pub played: Duration,
    /// The clip's full length; `played >= total` means it finished.
    pub total: Duration,
}

/// Per-turn timestamps, for latency metrics. The shell adds the first RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnTimings {
    pub turn: TurnId,
    pub end_of_speech: Option<Instant>,
    pub stt_done: Option<Instant>,
    pub first_text: Option<Instant>,
    pub first_audio: Option<Instant>,
    /// When the first `Play`/`PlayPrompt` of the reply was issued.
    pub first_play: Option<Instant>,
    pub barged_in: bool,
}

impl TurnTimings {
    fn new(turn: TurnId) -> Self {
        Self {
            turn,
            end_of_speech: None,
            stt_done: None,
            first_text: None,
            first_audio: None,
            first_play: None,
            barged_in: false,
        }
    }
}

/// Things worth logging or counting; the controller works the same if they are ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    StateChanged(State),
    /// The caller interrupted the agent; playback was flushed.
    BargeIn {
        turn: TurnId,
    },
    /// A turn finished (played out, interrupted or abandoned).
    TurnFinished(TurnTimings),
    Breaker {
        stage: Stage,
        state: BreakerState,
    },
    /// The built-in responder answered because the language model was off or failing.
    FallbackReply {
        turn: TurnId,
    },
    Dtmf(char),
    /// Whisper heard nothing trustworthy.
    EmptyTranscript {
        turn: TurnId,
    },
    /// The caller's turn ended after this much silence (whatever decided it).
    EndOfTurn {
        silence: Duration,
    },
    /// The end-of-turn model's part in a turn ([`EndOfTurn::Model`]); `probability` is
    /// the model's answer when it gave one.
    TurnVerdict {
        verdict: TurnVerdict,
        probability: Option<f32>,
    },
}

// ---- internal state --------------------------------------------------------------------

/// Caller speech being collected.
#[derive(Debug)]
struct Utterance {
    /// Tells utterances apart (an early transcription belongs to one).
    serial: u64,
    audio: Vec<f32>,
    voiced_samples: usize,
    silence_samples: usize,
    /// Index in `audio` just past the last speech frame.
    speech_end: usize,
    /// The quiet frames at the end of the speech so far ([`Config::vad_lag_credit`]).
    quiet_tail: usize,
}

#[derive(Debug)]
enum ClipSource {
    Tts,
    Prompt(Prompt),
}

#[derive(Debug, PartialEq)]
enum ClipStatus {
    /// Waiting for its turn to be synthesized.
    Pending,
    Synthesizing {
        deadline: Instant,
    },
    Ready(Audio),
    /// Handed to playback.
    Queued,
    Played,
}

#[derive(Debug)]
struct Clip {
    id: ClipId,
    text: String,
    source: ClipSource,
    status: ClipStatus,
    played: Duration,
    total: Option<Duration>,
}

#[derive(Debug, PartialEq)]
enum LlmPhase {
    /// No model call (built-in responder, prompt, or finished).
    Idle,
    Waiting {
        first_deadline: Instant,
        deadline: Instant,
    },
    Streaming {
        deadline: Instant,
    },
}

/// What the agent is saying (or about to say) in answer to a turn.
#[derive(Debug)]
struct Reply {
    turn: TurnId,
    llm: LlmPhase,
    splitter: SentenceSplitter,
    /// All text has arrived.
    text_done: bool,
    clips: Vec<Clip>,
    hang_up: Option<HangUpReason>,
    /// Once this reply has played, connect the caller here.
    transfer: Option<String>,
    interruptible: bool,
    /// Played instead of failed speech (and everything after it) in this reply.
    tts_fallback: Prompt,
    fell_back: bool,
    /// The caller's words this answers, committed to memory when the answer starts.
    caller_text: Option<String>,
    caller_committed: bool,
    /// Whether what is played goes into memory (not for the greeting).
    remember_played: bool,
    timings: TurnTimings,
}

/// A transcription started before the end of the turn was certain
/// ([`Config::early_stt_silence`]).
#[derive(Debug)]
struct Early {
    turn: TurnId,
    /// The utterance it transcribes, and how far the speech in it went.
    utterance: u64,
    speech_end: usize,
    issued: Instant,
    /// Its result, if it arrived before the end of the turn.
    result: Option<Result<Transcript, StageError>>,
}

/// The end-of-turn model's verdict on the current utterance, asked for or received.
#[derive(Debug)]
struct TurnCheck {
    id: TurnCheckId,
    /// The utterance and how far its speech went when the model was asked: a verdict
    /// only counts while the caller has not spoken since.
    utterance: u64,
    speech_end: usize,
    /// The model's answer (a probability, or `Err` when it failed); `None` while it
    /// is working.
    model: Option<Result<f32, ()>>,
    /// Decided from the model's answer and the early transcript's words.
    verdict: Option<TurnVerdict>,
}

/// A caller turn being transcribed.
#[derive(Debug)]
struct Pending {
    turn: TurnId,
    audio: Vec<f32>,
    voiced_samples: usize,
    deadline: Instant,
    timings: TurnTimings,
}

pub struct Conversation {
    cfg: Config,
    call: CallInfo,
    /// What memory recalled: at call start, then refreshed for each caller turn.
    memory: Recollection,
    state: State,
    history: Vec<Message>,
    pre_roll: VecDeque<f32>,
    utterance: Option<Utterance>,
    /// Audio of a turn abandoned because the caller kept talking; it leads the next one.
    carry: Option<(Vec<f32>, usize)>,
    pending: Option<Pending>,
    early: Option<Early>,
    turn_check: Option<TurnCheck>,
    next_turn_check: u64,
    reply: Option<Reply>,
    next_turn: u64,
    next_utterance: u64,
    next_clip: u64,
    /// The stages' breakers: shared by every call of the process (see
    /// [`Conversation::with_health`]), or this call's own.
    health: Arc<StageHealth>,
    last_activity: Instant,
    last_frame: Option<Instant>,
    reprompts: u32,
    closing: bool,
    hang_up_deadline: Option<Instant>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
}

/// How long a closing prompt may take before the agent hangs up regardless.
const CLOSING_GRACE: Duration = Duration::from_secs(20);

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(SAMPLE_RATE)).round() as usize
}

fn duration_of(n: usize) -> Duration {
    Duration::from_secs_f64(n as f64 / f64::from(SAMPLE_RATE))
}

impl Conversation {
    /// Starts a call that has just been answered: queues the greeting. `memory` is what
    /// [`Memory::open_call`](crate::Memory::open_call) returned for this caller. The
    /// call's breakers are its own; a process with many calls shares them through
    /// [`with_health`](Self::with_health).
    pub fn new(cfg: Config, call: CallInfo, memory: Recollection) -> Self {
        let health = Arc::new(StageHealth::new(
            cfg.stt_breaker,
            cfg.llm_breaker,
            cfg.tts_breaker,
        ));
        Self::with_health(cfg, call, memory, health)
    }

    /// As [`new`](Self::new), with the stages' breakers shared with other calls: what
    /// one call learns about a failing stage, the next call acts on at once. The
    /// breaker settings in `cfg` are then those `health` was made with.
    pub fn with_health(
        cfg: Config,
        call: CallInfo,
        memory: Recollection,
        health: Arc<StageHealth>,
    ) -> Self {
        let now = call.started;
        let mut c = Self {
            health,
            cfg,
            call,
            memory,
            state: State::Listening,
            history: Vec::new(),
            pre_roll: VecDeque::new(),
            utterance: None,
            carry: None,
            pending: None,
            early: None,
            turn_check: None,
            next_turn_check: 0,
            reply: None,
            next_turn: 0,
            next_utterance: 0,
            next_clip: 0,
            last_activity: now,
            last_frame: None,
            reprompts: 0,
            closing: false,
            hang_up_deadline: None,
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        let turn = c.new_turn();
        let greeting = responder::greeting(&c.memory, c.call.started_unix_ms);
        let mut reply = c.new_reply(turn, TurnTimings::new(turn));
        // The greeting is made from memory; storing it would feed memory its own words.
        reply.remember_played = false;
        if greeting == Prompt::Greeting.text() {
            c.push_prompt_clip(&mut reply, Prompt::Greeting);
        } else {
            reply.tts_fallback = Prompt::Greeting;
            let mut sentences = reply.splitter.push(&greeting);
            sentences.extend(reply.splitter.finish());
            for sentence in sentences {
                c.push_tts_clip(&mut reply, sentence);
            }
        }
        reply.text_done = true;
        c.reply = Some(reply);
        c.pump(now);
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The breaker of a stage, as health checks show it.
    pub fn breaker_state(&self, stage: Stage, now: Instant) -> BreakerState {
        self.health.state(stage, now)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Ended {
            return None;
        }
        let mut t = vec![self.call.started + self.cfg.max_call];
        t.extend(self.hang_up_deadline);
        if let (Some(_), Some(last)) = (&self.utterance, self.last_frame) {
            // Frames stopped arriving mid-utterance (an RTP gap): end the turn anyway.
            t.push(last + self.cfg.end_of_turn_silence);
        }
        if let Some(p) = &self.pending {
            t.push(p.deadline);
        }
        if let Some(r) = &self.reply {
            match r.llm {
                LlmPhase::Idle => {}
                LlmPhase::Waiting {
                    first_deadline,
                    deadline,
                } => t.push(first_deadline.min(deadline)),
                LlmPhase::Streaming { deadline } => t.push(deadline),
            }
            for clip in &r.clips {
                if let ClipStatus::Synthesizing { deadline } = clip.status {
                    t.push(deadline);
                }
            }
        }
        if self.is_idle() {
            t.push(self.last_activity + self.cfg.silence_timeout);
        }
        t.into_iter().min()
    }

    /// Nothing in progress: the silence timer runs.
    fn is_idle(&self) -> bool {
        self.state == State::Listening
            && self.utterance.is_none()
            && self.pending.is_none()
            && self.reply.is_none()
            && !self.closing
    }

    // ---- audio in --------------------------------------------------------------------

    /// One frame (normally 20 ms) of 16 kHz caller audio and the detector's verdict on it.
    pub fn handle_audio(&mut self, now: Instant, frame: &[f32], is_speech: bool) {
        if matches!(self.state, State::Ended | State::Transferring) {
            return;
        }
        self.last_frame = Some(now);
        match self.utterance.as_mut() {
            None if !is_speech => {
                self.pre_roll.extend(frame.iter().copied());
                let keep = samples(self.cfg.pre_roll);
                let excess = self.pre_roll.len().saturating_sub(keep);
                self.pre_roll.drain(..excess);
                return;
            }
            None => {
                let mut audio: Vec<f32> = self.pre_roll.drain(..).collect();
                audio.extend_from_slice(frame);
                self.next_utterance += 1;
                self.utterance = Some(Utterance {
                    serial: self.next_utterance,
                    speech_end: audio.len(),
                    audio,
                    voiced_samples: frame.len(),
                    silence_samples: 0,
                    quiet_tail: 0,
                });
            }
            Some(u) => {
                u.audio.extend_from_slice(frame);
                if is_speech {
                    u.voiced_samples += frame.len();
                    u.silence_samples = 0;
                    u.speech_end = u.audio.len();
                    let quiet = crate::echo::mean_square(frame) < self.cfg.quiet_level.powi(2);
                    u.quiet_tail = if quiet { u.quiet_tail + frame.len() } else { 0 };
                } else {
                    if u.silence_samples == 0 {
                        // The detector has only now noticed: the quiet frames it still
                        // called speech were the start of this silence.
                        u.silence_samples = u.quiet_tail.min(samples(self.cfg.vad_lag_credit));
                    }
                    u.silence_samples += frame.len();
                }
            }
        }
        let u = self
            .utterance
            .as_ref()
            .expect("an utterance was started or extended above");
        let (voiced, silence, len) = (u.voiced_samples, u.silence_samples, u.audio.len());
        let serial = u.serial;
        if is_speech && self.early.as_ref().is_some_and(|e| e.utterance == serial) {
            // The caller goes on: the early transcription is of a sentence half said.
            self.cancel_early();
        }

        let agent_busy = self.state != State::Listening;
        if agent_busy {
            if voiced >= samples(self.cfg.barge_in_min_speech) {
                self.barge_in(now);
            } else if silence >= samples(self.cfg.barge_in_reset) {
                self.drop_utterance();
            }
            return;
        }
        if let EndOfTurn::Model(model) = self.cfg.end_of_turn {
            self.model_end_of_turn(now, model, voiced, silence, len);
            return;
        }
        if let Some(early) = self.cfg.early_stt_silence {
            let due = silence >= samples(early)
                && silence < samples(self.cfg.end_of_turn_silence)
                && voiced >= samples(self.cfg.min_speech);
            if due && self.early.as_ref().is_none_or(|e| e.utterance != serial) {
                self.start_early(now);
            }
        }
        if silence >= samples(self.cfg.end_of_turn_silence) {
            if voiced >= samples(self.cfg.min_speech) {
                self.end_of_turn(now);
            } else {
                self.drop_utterance(); // a click or a cough
            }
        } else if len >= samples(self.cfg.max_utterance) && voiced >= samples(self.cfg.min_speech) {
            self.end_of_turn(now);
        }
    }

    /// The end-of-turn rules of [`EndOfTurn::Model`], after a frame of the current
    /// utterance while the agent is listening.
    fn model_end_of_turn(
        &mut self,
        now: Instant,
        model: ModelTurn,
        voiced: usize,
        silence: usize,
        len: usize,
    ) {
        let Some(u) = self.utterance.as_ref() else {
            return;
        };
        let (serial, speech_end) = (u.serial, u.speech_end);
        if self
            .turn_check
            .as_ref()
            .is_some_and(|c| c.utterance != serial || c.speech_end != speech_end)
        {
            // The caller went on: a verdict on the audio before is stale.
            self.turn_check = None;
        }
        if voiced < samples(self.cfg.min_speech) {
            if silence >= samples(self.cfg.end_of_turn_silence) {
                self.drop_utterance(); // a click or a cough
            }
            return;
        }
        let verdict = self.turn_check.as_ref().and_then(|c| c.verdict);
        let silence_rule = self.verdict_silence_reached(model, verdict, silence);
        if silence >= samples(model.fallback_silence) {
            if verdict != Some(TurnVerdict::Failed) {
                self.events.push_back(Event::TurnVerdict {
                    verdict: TurnVerdict::Fallback,
                    probability: None,
                });
            }
            self.turn_check = None;
            self.end_of_turn(now);
        } else if silence_rule || len >= samples(self.cfg.max_utterance) {
            self.turn_check = None;
            self.end_of_turn(now);
        } else {
            if silence >= samples(model.transcribe_silence.min(model.check_silence)) {
                self.start_early_once(now);
            }
            if silence >= samples(model.check_silence) && self.turn_check.is_none() {
                self.check_turn(now);
            }
        }
    }

    /// Starts the early transcription unless one of the audio as it now stands (the
    /// same utterance, nothing said since) is already running or done.
    fn start_early_once(&mut self, now: Instant) {
        let current = self.utterance.as_ref().is_some_and(|u| {
            self.early
                .as_ref()
                .is_some_and(|e| e.utterance == u.serial && e.speech_end == u.speech_end)
        });
        if !current {
            self.start_early(now);
        }
    }

    /// Asks the end-of-turn model about the utterance so far (with the audio carried
    /// over from an abandoned turn in front, which is the same sentence), and makes
    /// sure its transcription has started: if the verdict is "complete", the turn is
    /// answered with the transcript as soon as it is ready.
    fn check_turn(&mut self, now: Instant) {
        let Some(u) = self.utterance.as_ref() else {
            return;
        };
        let mut audio = self
            .carry
            .as_ref()
            .map(|(earlier, _)| earlier.clone())
            .unwrap_or_default();
        audio.extend_from_slice(&u.audio);
        self.next_turn_check += 1;
        let id = TurnCheckId(self.next_turn_check);
        self.turn_check = Some(TurnCheck {
            id,
            utterance: u.serial,
            speech_end: u.speech_end,
            model: None,
            verdict: None,
        });
        self.push_action(Action::PredictTurnEnd { check: id, audio });
        self.start_early_once(now);
    }

    /// The end-of-turn model's answer to [`Action::PredictTurnEnd`]: the probability that
    /// the caller has finished. Complete (above the threshold) and nothing said since:
    /// the turn ends now. Incomplete: the agent keeps listening (until more speech or the
    /// fallback silence). A failure: the silence rule ends this turn. A verdict on audio
    /// the caller has since added to is ignored.
    pub fn handle_turn_prediction(
        &mut self,
        now: Instant,
        check: TurnCheckId,
        result: Result<f32, StageError>,
    ) {
        let EndOfTurn::Model(model) = self.cfg.end_of_turn else {
            return;
        };
        if self.state != State::Listening {
            return;
        }
        let Some(c) = self
            .turn_check
            .as_mut()
            .filter(|c| c.id == check && c.verdict.is_none())
        else {
            return; // stale or answered
        };
        let current = self
            .utterance
            .as_ref()
            .is_some_and(|u| u.serial == c.utterance && u.speech_end == c.speech_end);
        if !current {
            self.turn_check = None; // the caller spoke again
            return;
        }
        c.model = Some(result.map_err(|_| ()));
        self.decide_turn(now, model);
    }

    /// Decides the end of the turn once the model has answered and, when an early
    /// transcription of the same audio is under way, once its words are in too (the
    /// reply needs them anyway, so waiting for them costs nothing). The words can
    /// overrule the model both ways: a sentence that ends mid-phrase keeps the agent
    /// listening whatever the model heard, and a finished sentence the model doubts
    /// ends after [`ModelTurn::unsure_silence`] instead of the full fallback.
    fn decide_turn(&mut self, now: Instant, model: ModelTurn) {
        let Some(c) = self.turn_check.as_ref().filter(|c| c.verdict.is_none()) else {
            return;
        };
        let Some(answer) = c.model else {
            return; // the model is still working
        };
        let words = match self
            .early
            .as_ref()
            .filter(|e| e.utterance == c.utterance && e.speech_end == c.speech_end)
        {
            Some(e) => match &e.result {
                None => return, // the transcript is on its way
                Some(Ok(t)) => turn_words::judge(&t.text),
                Some(Err(_)) => Words::Unknown,
            },
            None => Words::Unknown,
        };
        let verdict = match (answer, words) {
            (Err(()), _) => TurnVerdict::Failed,
            (Ok(_), Words::Unfinished) => TurnVerdict::Incomplete,
            (Ok(p), Words::Finished) if p > model.threshold => TurnVerdict::Complete,
            // One of the two says the caller is done, the other is silent or says not:
            // Whisper leaves a sentence it hears as going on without its full stop
            // ("my favorite colors", "if you book a table for it"), so a confident model
            // alone does not end the turn at once.
            (Ok(p), Words::Unknown) if p > model.threshold => TurnVerdict::Unsure,
            (Ok(_), Words::Finished) => TurnVerdict::Unsure,
            (Ok(_), Words::Unknown) => TurnVerdict::Incomplete,
        };
        let silence = self.utterance.as_ref().map_or(0, |u| u.silence_samples);
        if let Some(c) = self.turn_check.as_mut() {
            c.verdict = Some(verdict);
        }
        self.events.push_back(Event::TurnVerdict {
            verdict,
            probability: answer.ok(),
        });
        if verdict == TurnVerdict::Complete
            || self.verdict_silence_reached(model, Some(verdict), silence)
        {
            self.turn_check = None;
            self.end_of_turn(now);
        }
    }

    /// Whether `silence` is long enough to end the turn under a verdict that leaves it
    /// to a silence rule: the plain rule when the model failed, the shorter wait when
    /// the model and the words disagree.
    fn verdict_silence_reached(
        &self,
        model: ModelTurn,
        verdict: Option<TurnVerdict>,
        silence: usize,
    ) -> bool {
        match verdict {
            Some(TurnVerdict::Failed) => silence >= samples(self.cfg.end_of_turn_silence),
            Some(TurnVerdict::Unsure) => silence >= samples(model.unsure_silence),
            _ => false,
        }
    }

    fn drop_utterance(&mut self) {
        if let Some(u) = self.utterance.take() {
            // Its tail is the most recent audio: it is the pre-roll of whatever comes next.
            let keep = samples(self.cfg.pre_roll).min(u.audio.len());
            self.pre_roll = u.audio[u.audio.len() - keep..].iter().copied().collect();
        }
    }

    /// Caller speech passed the guard while the agent was thinking or speaking.
    fn barge_in(&mut self, now: Instant) {
        if self.reply.as_ref().is_some_and(|r| !r.interruptible) {
            // Closing words are not interruptible; what the caller says now is dropped.
            self.utterance = None;
            return;
        }
        self.last_activity = now;
        if let Some(pending) = self.pending.take() {
            // Still transcribing: the caller is continuing; transcribe it all together.
            self.push_action(Action::Cancel { turn: pending.turn });
            self.carry = Some((pending.audio, pending.voiced_samples));
        }
        if let Some(mut reply) = self.reply.take() {
            let queued = reply
                .clips
                .iter()
                .any(|c| matches!(c.status, ClipStatus::Queued | ClipStatus::Played));
            if queued {
                self.push_action(Action::FlushPlayback);
                self.events.push_back(Event::BargeIn { turn: reply.turn });
                reply.timings.barged_in = true;
                self.finish_reply(now, reply, false);
            } else {
                // Nothing played yet: the caller has more to say. Keep their earlier
                // words and answer everything together.
                self.push_action(Action::Cancel { turn: reply.turn });
                if let Some(text) = reply.caller_text.take() {
                    self.carry_text(now, text);
                }
                self.events.push_back(Event::TurnFinished(reply.timings));
            }
        }
        self.set_state(State::Listening);
    }

    /// Words of an abandoned turn whose audio is gone: keep them in the history (and in
    /// memory) so the next request sees them.
    fn carry_text(&mut self, now: Instant, text: String) {
        self.history.push(Message {
            role: Role::Caller,
            text: text.clone(),
        });
        let record = self.record_of(now, Role::Caller, text);
        self.push_action(Action::Remember(record));
    }

    /// The utterance's audio as it is handed to speech-to-text: up to the end of its
    /// speech plus a little trailing audio.
    fn utterance_audio(&self, u: &Utterance) -> Vec<f32> {
        let end = u.speech_end + samples(self.cfg.trailing_audio);
        let mut audio = u.audio[..end.min(u.audio.len())].to_vec();
        if u.silence_samples > 0 {
            // An early transcription can start before that much silence has arrived
            // (100 ms after the voice, in model mode); Whisper tiny, given a clip that
            // stops right after the last word, repeats the sentence ("...on Friday,
            // Friday, I would like to book a table for two on"), so the rest of the
            // silence is added as zeros. (Speech cut at the maximum length stays as is.)
            audio.resize(end, 0.0);
        }
        audio
    }

    /// Starts transcribing the current utterance before the end of the turn is certain.
    /// Only with a closed breaker (a trial call is for a real turn) and nothing carried
    /// over from an abandoned turn.
    fn start_early(&mut self, now: Instant) {
        self.cancel_early();
        let closed = matches!(
            self.health.state(Stage::Stt, now),
            BreakerState::Closed { .. }
        );
        let Some(u) = self
            .utterance
            .as_ref()
            .filter(|_| closed && self.carry.is_none())
        else {
            return;
        };
        let audio = self.utterance_audio(u);
        let early = Early {
            turn: TurnId(0), // set below, once `u` is no longer borrowed
            utterance: u.serial,
            speech_end: u.speech_end,
            issued: now,
            result: None,
        };
        let speech = SpeechStats {
            voiced: duration_of(u.voiced_samples),
            total: duration_of(audio.len()),
        };
        let turn = self.new_turn();
        self.push_action(Action::Transcribe {
            turn,
            audio,
            speech,
        });
        self.early = Some(Early { turn, ..early });
    }

    fn cancel_early(&mut self) {
        if let Some(e) = self.early.take() {
            self.push_action(Action::Cancel { turn: e.turn });
        }
    }

    fn end_of_turn(&mut self, now: Instant) {
        let u = self
            .utterance
            .take()
            .expect("end_of_turn is called with an utterance");
        self.events.push_back(Event::EndOfTurn {
            silence: duration_of(u.silence_samples),
        });
        let mut audio = self.utterance_audio(&u);
        let early = self.early.take();
        if let Some(e) = early {
            if e.utterance == u.serial && e.speech_end == u.speech_end && self.carry.is_none() {
                // Nothing was said since the early transcription started: it is this turn's.
                self.last_activity = now;
                self.reprompts = 0;
                let mut timings = TurnTimings::new(e.turn);
                timings.end_of_speech = Some(now);
                self.pending = Some(Pending {
                    turn: e.turn,
                    audio,
                    voiced_samples: u.voiced_samples,
                    deadline: e.issued + self.cfg.stt_timeout,
                    timings,
                });
                self.set_state(State::Thinking);
                if let Some(result) = e.result {
                    self.handle_transcript(now, e.turn, result);
                }
                return;
            }
            self.push_action(Action::Cancel { turn: e.turn });
        }
        let mut voiced = u.voiced_samples;
        if let Some((mut earlier, v)) = self.carry.take() {
            earlier.extend_from_slice(&audio);
            audio = earlier;
            voiced += v;
        }
        self.last_activity = now;
        self.reprompts = 0;
        let turn = self.new_turn();
        let mut timings = TurnTimings::new(turn);
        timings.end_of_speech = Some(now);
        if !self.health.try_acquire(Stage::Stt, now) {
            self.stt_unavailable(now, turn, timings);
            return;
        }
        let speech = SpeechStats {
            voiced: duration_of(voiced),
            total: duration_of(audio.len()),
        };
        self.push_action(Action::Transcribe {
            turn,
            audio: audio.clone(),
            speech,
        });
        self.pending = Some(Pending {
            turn,
            audio,
            voiced_samples: voiced,
            deadline: now + self.cfg.stt_timeout,
            timings,
        });
        self.set_state(State::Thinking);
    }

    // ---- stage results ---------------------------------------------------------------

    pub fn handle_transcript(
        &mut self,
        now: Instant,
        turn: TurnId,
        result: Result<Transcript, StageError>,
    ) {
        if self.state == State::Ended || self.closing {
            self.late_transcript(now, turn, result);
            return;
        }
        if let Some(early) = self.early.as_mut().filter(|e| e.turn == turn) {
            early.result = Some(result); // kept for the end of the turn
            if let EndOfTurn::Model(model) = self.cfg.end_of_turn {
                if self.state == State::Listening {
                    self.decide_turn(now, model); // the words were what it waited for
                }
            }
            return;
        }
        let Some(pending) = self.pending.take_if(|p| p.turn == turn) else {
            return; // abandoned
        };
        let mut timings = pending.timings;
        timings.stt_done = Some(now);
        match result {
            Err(_) => {
                self.record(Stage::Stt, now, false);
                if self.health.is_open(Stage::Stt, now) {
                    self.stt_unavailable(now, turn, timings);
                } else {
                    let mut reply = self.new_reply(turn, timings);
                    self.push_prompt_clip(&mut reply, Prompt::SttRetry);
                    reply.text_done = true;
                    self.reply = Some(reply);
                    self.pump(now);
                }
            }
            Ok(t) if t.text.trim().is_empty() => {
                self.record(Stage::Stt, now, true);
                self.events.push_back(Event::EmptyTranscript { turn });
                self.events.push_back(Event::TurnFinished(timings));
                self.last_activity = now;
                self.set_state(State::Listening);
            }
            Ok(t) => {
                self.record(Stage::Stt, now, true);
                self.answer(now, turn, timings, t.text.trim().to_string());
            }
        }
    }

    /// A caller turn transcribed after the call ended or began to close (the far end
    /// hung up, the switch is stopping, the time limit): nothing answers it any more,
    /// but the caller's words are the call's last and go into memory.
    fn late_transcript(
        &mut self,
        now: Instant,
        turn: TurnId,
        result: Result<Transcript, StageError>,
    ) {
        if self.pending.take_if(|p| p.turn == turn).is_none() {
            return;
        }
        self.record(Stage::Stt, now, result.is_ok());
        if let Ok(t) = result {
            let text = t.text.trim();
            if !text.is_empty() {
                let record = self.record_of(now, Role::Caller, text.to_string());
                self.push_action(Action::Remember(record));
            }
        }
    }

    /// Whether a caller turn is still being transcribed. After the end of the call the
    /// shell waits for it (as long as the transcription may take) and hands it to
    /// [`handle_transcript`](Self::handle_transcript), so that what the caller said
    /// last is remembered.
    pub fn awaiting_transcript(&self) -> bool {
        self.pending.is_some()
    }

    /// Speech-to-text is down: apologise and end the call.
    fn stt_unavailable(&mut self, now: Instant, turn: TurnId, timings: TurnTimings) {
        let mut reply = self.new_reply(turn, timings);
        reply.interruptible = false;
        reply.hang_up = Some(HangUpReason::SttUnavailable);
        self.push_prompt_clip(&mut reply, Prompt::SttGoodbye);
        reply.text_done = true;
        self.start_closing(now);
        self.reply = Some(reply);
        self.pump(now);
    }

    /// Starts the reply to the caller's `text`.
    fn answer(&mut self, now: Instant, turn: TurnId, timings: TurnTimings, text: String) {
        let mut reply = self.new_reply(turn, timings);
        reply.caller_text = Some(text.clone());
        let target = self
            .cfg
            .handoff
            .as_ref()
            .and_then(|h| text::handoff_target(&text, h.default_target.as_deref(), &h.allowed));
        if let Some(target) = target {
            // Said, then done: the transfer starts once the caller has heard it.
            reply.transfer = Some(target.clone());
            reply.interruptible = false;
            reply.timings.first_text.get_or_insert(now);
            self.push_tts_clip(
                &mut reply,
                format!("Connecting you to extension {target}. One moment, please."),
            );
            reply.text_done = true;
            self.reply = Some(reply);
            self.pump(now);
            return;
        }
        if text::is_goodbye(&text) {
            reply.hang_up = Some(HangUpReason::Goodbye);
        }
        let request = self.request(now, &text);
        if self.cfg.use_llm && self.health.try_acquire(Stage::Llm, now) {
            reply.llm = LlmPhase::Waiting {
                first_deadline: now + self.cfg.llm_first_text_timeout,
                deadline: now + self.cfg.llm_timeout,
            };
            self.push_action(Action::Generate { turn, request });
            self.reply = Some(reply);
            self.set_state(State::Thinking);
        } else {
            if self.cfg.use_llm {
                self.events.push_back(Event::FallbackReply { turn });
            }
            self.builtin_reply(now, &mut reply, &request);
            self.reply = Some(reply);
            self.pump(now);
        }
    }

    fn builtin_reply(&mut self, now: Instant, reply: &mut Reply, request: &GenerateRequest) {
        let answer = responder::reply(request);
        if answer.hang_up {
            reply.hang_up = Some(HangUpReason::Goodbye);
        }
        reply.llm = LlmPhase::Idle;
        reply.timings.first_text.get_or_insert(now);
        let sentences = reply.splitter.push(&answer.text);
        for s in sentences.into_iter().chain(reply.splitter.finish()) {
            self.push_tts_clip(reply, s);
        }
        reply.text_done = true;
    }

    fn request(&self, now: Instant, caller_text: &str) -> GenerateRequest {
        let mut history: Vec<Message> = self
            .history
            .iter()
            .skip(self.history.len().saturating_sub(self.cfg.history_limit))
            .cloned()
            .collect();
        history.push(Message {
            role: Role::Caller,
            text: caller_text.to_string(),
        });
        GenerateRequest {
            caller: self.call.caller.clone(),
            call_id: self.call.call_id.clone(),
            unix_ms: self.unix_ms(now),
            memory: self.memory.clone(),
            history,
        }
    }

    /// A chunk of the language model's streamed reply to `turn`.
    pub fn handle_reply_text(&mut self, now: Instant, turn: TurnId, chunk: ReplyChunk) {
        if self.state == State::Ended {
            return;
        }
        let Some(mut reply) = self.reply.take_if(|r| r.turn == turn) else {
            return;
        };
        if reply.llm == LlmPhase::Idle {
            self.reply = Some(reply); // late text after a timeout or a fallback
            return;
        }
        match chunk {
            ReplyChunk::Text(text) => {
                reply.timings.first_text.get_or_insert(now);
                if let LlmPhase::Waiting { deadline, .. } = reply.llm {
                    reply.llm = LlmPhase::Streaming { deadline };
                }
                for sentence in reply.splitter.push(&text) {
                    self.push_tts_clip(&mut reply, sentence);
                }
            }
            ReplyChunk::End => {
                self.record(Stage::Llm, now, true);
                self.end_llm_text(&mut reply);
            }
            ReplyChunk::Failed(_) => {
                self.record(Stage::Llm, now, false);
                self.llm_failed(now, &mut reply);
            }
        }
        self.reply = Some(reply);
        self.pump(now);
    }

    fn end_llm_text(&mut self, reply: &mut Reply) {
        reply.llm = LlmPhase::Idle;
        if let Some(rest) = reply.splitter.finish() {
            self.push_tts_clip(reply, rest);
        }
        reply.text_done = true;
    }

    /// The model failed or timed out: fall back to the built-in responder if it had said
    /// nothing, else keep what it said.
    fn llm_failed(&mut self, now: Instant, reply: &mut Reply) {
        if reply.timings.first_text.is_none() {
            self.events
                .push_back(Event::FallbackReply { turn: reply.turn });
            let request = self.request(now, reply.caller_text.as_deref().unwrap_or(""));
            self.builtin_reply(now, reply, &request);
        } else {
            self.end_llm_text(reply);
        }
    }

    /// Audio for a sentence asked for with [`Action::Synthesize`].
    pub fn handle_tts_audio(
        &mut self,
        now: Instant,
        clip: ClipId,
        result: Result<Audio, StageError>,
    ) {
        if self.state == State::Ended {
            return;
        }
        let Some(mut reply) = self.reply.take() else {
            return;
        };
        let Some(idx) = reply
            .clips
            .iter()
            .position(|c| c.id == clip && matches!(c.status, ClipStatus::Synthesizing { .. }))
        else {
            self.reply = Some(reply);
            return;
        };
        match result {
            Ok(audio) => {
                self.record(Stage::Tts, now, true);
                reply.timings.first_audio.get_or_insert(now);
                reply.clips[idx].total = Some(audio.duration());
                reply.clips[idx].status = ClipStatus::Ready(audio);
            }
            Err(_) => {
                self.record(Stage::Tts, now, false);
                self.tts_failed(&mut reply, idx);
            }
        }
        self.reply = Some(reply);
        self.pump(now);
    }

    /// Replace the failed clip and everything after it with the cached apology.
    fn tts_failed(&mut self, reply: &mut Reply, idx: usize) {
        // Clips after it that are still synthesizing finish unheard; their results are
        // ignored because the clips are gone.
        reply.clips.truncate(idx);
        if !reply.fell_back {
            reply.fell_back = true;
            let prompt = reply.tts_fallback;
            self.push_prompt_clip(reply, prompt);
        }
        // Text still streaming in is not spoken either.
        if reply.llm != LlmPhase::Idle {
            reply.llm = LlmPhase::Idle;
            self.push_action(Action::CancelGenerate { turn: reply.turn });
        }
        reply.text_done = true;
    }

    /// Playback position of a clip handed over with `Play` or `PlayPrompt`.
    pub fn handle_playback_progress(&mut self, now: Instant, progress: PlaybackProgress) {
        if self.state == State::Ended {
            return;
        }
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        let Some(clip) = reply.clips.iter_mut().find(|c| c.id == progress.clip) else {
            return;
        };
        if clip.status != ClipStatus::Queued {
            return;
        }
        clip.played = progress.played.min(progress.total);
        clip.total = Some(progress.total);
        if progress.played >= progress.total {
            clip.status = ClipStatus::Played;
        }
        self.pump(now);
    }

    /// A DTMF digit (RFC 4733 event or SIP INFO) from the caller.
    pub fn handle_dtmf(&mut self, now: Instant, digit: char) {
        if matches!(self.state, State::Ended | State::Transferring) {
            return;
        }
        self.events.push_back(Event::Dtmf(digit));
        self.last_activity = now;
        match self.state {
            State::Speaking => {
                // A keypress interrupts like speech does, and is answered.
                self.barge_in(now);
                if self.state == State::Listening && self.reply.is_none() {
                    self.dtmf_turn(now, digit);
                }
            }
            State::Listening if self.reply.is_none() && self.pending.is_none() && !self.closing => {
                self.dtmf_turn(now, digit);
            }
            _ => {}
        }
    }

    fn dtmf_turn(&mut self, now: Instant, digit: char) {
        self.utterance = None;
        let turn = self.new_turn();
        self.answer(now, turn, TurnTimings::new(turn), format!("[DTMF {digit}]"));
    }

    /// The caller hung up (BYE received). Whatever was played is remembered.
    pub fn handle_hangup(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        if let Some(reply) = self.reply.take() {
            self.finish_reply(now, reply, false);
        }
        self.set_state(State::Ended);
    }

    /// The transfer asked for with [`Action::Transfer`] did not connect (`status`: the
    /// SIP status the target's phones gave, 408 for no answer): the agent says so and
    /// listens again.
    pub fn handle_transfer_failed(&mut self, now: Instant, target: &str, status: u16) {
        if self.state != State::Transferring {
            return;
        }
        let why = match status {
            486 | 600 => "is busy",
            480 | 404 => "is not available right now",
            _ => "did not answer",
        };
        let turn = self.new_turn();
        let mut reply = self.new_reply(turn, TurnTimings::new(turn));
        self.push_tts_clip(
            &mut reply,
            format!("Sorry, extension {target} {why}. I'm still here. How else can I help?"),
        );
        reply.text_done = true;
        self.last_activity = now;
        self.set_state(State::Listening);
        self.reply = Some(reply);
        self.pump(now);
    }

    /// Timers: end of turn when audio stopped, stage timeouts, silence, call length.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Ended {
            return;
        }
        if self.state == State::Transferring {
            // The person's phone rings; no reprompts. The call limit still holds.
            if now >= self.call.started + self.cfg.max_call {
                self.hang_up(HangUpReason::MaxCallDuration);
            }
            return;
        }
        if self.hang_up_deadline.is_some_and(|d| now >= d) {
            let reason = self
                .reply
                .as_ref()
                .and_then(|r| r.hang_up)
                .unwrap_or(HangUpReason::MaxCallDuration);
            self.hang_up(reason);
            return;
        }
        if now >= self.call.started + self.cfg.max_call && !self.closing {
            self.close_call(now, Prompt::TimeLimitGoodbye, HangUpReason::MaxCallDuration);
            return;
        }
        if let (Some(_), Some(last)) = (&self.utterance, self.last_frame) {
            if now >= last + self.cfg.end_of_turn_silence {
                let u = self.utterance.as_ref().expect("checked above");
                if self.state == State::Listening
                    && u.voiced_samples >= samples(self.cfg.min_speech)
                {
                    self.end_of_turn(now);
                } else {
                    self.drop_utterance();
                }
            }
        }
        if self.pending.as_ref().is_some_and(|p| now >= p.deadline) {
            let turn = self
                .pending
                .as_ref()
                .map(|p| p.turn)
                .expect("checked above");
            self.push_action(Action::Cancel { turn });
            self.handle_transcript(now, turn, Err(StageError::Timeout));
        }
        if let Some(mut reply) = self.reply.take() {
            let expired = match reply.llm {
                LlmPhase::Idle => false,
                LlmPhase::Waiting {
                    first_deadline,
                    deadline,
                } => now >= first_deadline.min(deadline),
                LlmPhase::Streaming { deadline } => now >= deadline,
            };
            if expired {
                self.push_action(Action::CancelGenerate { turn: reply.turn });
                self.record(Stage::Llm, now, false);
                self.llm_failed(now, &mut reply);
            }
            if let Some(idx) = reply.clips.iter().position(
                |c| matches!(c.status, ClipStatus::Synthesizing { deadline } if now >= deadline),
            ) {
                self.record(Stage::Tts, now, false);
                self.tts_failed(&mut reply, idx);
            }
            self.reply = Some(reply);
            self.pump(now);
        }
        if self.is_idle() && now >= self.last_activity + self.cfg.silence_timeout {
            self.reprompts += 1;
            if self.reprompts > self.cfg.max_reprompts {
                self.close_call(now, Prompt::SilenceGoodbye, HangUpReason::SilenceTimeout);
            } else {
                let turn = self.new_turn();
                let mut reply = self.new_reply(turn, TurnTimings::new(turn));
                self.push_prompt_clip(&mut reply, Prompt::Reprompt);
                reply.text_done = true;
                self.reply = Some(reply);
                self.pump(now);
            }
        }
    }

    /// Stops whatever is going on, says `prompt` and hangs up after it.
    fn close_call(&mut self, now: Instant, prompt: Prompt, reason: HangUpReason) {
        // A turn still being transcribed is not cancelled: its words are remembered when
        // they arrive ([`Self::late_transcript`]), though nothing answers them.
        if let Some(reply) = self.reply.take() {
            let queued = reply.clips.iter().any(|c| c.status == ClipStatus::Queued);
            if queued {
                self.push_action(Action::FlushPlayback);
            }
            self.finish_reply(now, reply, false);
        }
        self.utterance = None;
        self.carry = None;
        let turn = self.new_turn();
        let mut reply = self.new_reply(turn, TurnTimings::new(turn));
        reply.interruptible = false;
        reply.hang_up = Some(reason);
        self.push_prompt_clip(&mut reply, prompt);
        reply.text_done = true;
        self.start_closing(now);
        self.reply = Some(reply);
        self.pump(now);
    }

    fn start_closing(&mut self, now: Instant) {
        self.closing = true;
        self.hang_up_deadline = Some(now + CLOSING_GRACE);
    }

    fn hang_up(&mut self, reason: HangUpReason) {
        self.push_action(Action::HangUp { reason });
        self.set_state(State::Ended);
    }

    // ---- the reply pipeline -----------------------------------------------------------

    fn new_turn(&mut self) -> TurnId {
        self.next_turn += 1;
        TurnId(self.next_turn)
    }

    fn new_reply(&self, turn: TurnId, timings: TurnTimings) -> Reply {
        Reply {
            turn,
            llm: LlmPhase::Idle,
            splitter: SentenceSplitter::with_first_clause(),
            text_done: false,
            clips: Vec::new(),
            hang_up: None,
            transfer: None,
            interruptible: true,
            tts_fallback: Prompt::TtsApology,
            fell_back: false,
            caller_text: None,
            caller_committed: false,
            remember_played: true,
            timings,
        }
    }

    fn new_clip_id(&mut self) -> ClipId {
        self.next_clip += 1;
        ClipId(self.next_clip)
    }

    fn push_tts_clip(&mut self, reply: &mut Reply, text: String) {
        if reply.fell_back {
            return; // speech is failing for this reply; the apology stands in for it
        }
        let id = self.new_clip_id();
        reply.clips.push(Clip {
            id,
            text,
            source: ClipSource::Tts,
            status: ClipStatus::Pending,
            played: Duration::ZERO,
            total: None,
        });
    }

    fn push_prompt_clip(&mut self, reply: &mut Reply, prompt: Prompt) {
        let id = self.new_clip_id();
        reply.clips.push(Clip {
            id,
            text: prompt.text().to_string(),
            source: ClipSource::Prompt(prompt),
            status: ClipStatus::Ready(Audio {
                samples: Vec::new(),
                sample_rate: 0,
            }),
            played: Duration::ZERO,
            total: None,
        });
    }

    /// Moves the current reply forward: asks for synthesis within the look-ahead, hands
    /// ready clips to playback in order, and finishes the reply when all has played.
    fn pump(&mut self, now: Instant) {
        let Some(mut reply) = self.reply.take() else {
            return;
        };
        // Synthesis look-ahead: clips synthesizing, synthesized or queued behind the one
        // playing (on barge-in they are wasted work).
        let queued = reply
            .clips
            .iter()
            .filter(|c| c.status == ClipStatus::Queued)
            .count();
        let mut ahead = reply
            .clips
            .iter()
            .filter(|c| {
                matches!(
                    c.status,
                    ClipStatus::Synthesizing { .. } | ClipStatus::Ready(_)
                )
            })
            .count()
            + queued.saturating_sub(1);
        let mut tts_refused = None;
        for idx in 0..reply.clips.len() {
            if ahead >= self.cfg.tts_lookahead.max(1) {
                break;
            }
            if reply.clips[idx].status != ClipStatus::Pending {
                continue;
            }
            let first = reply.clips[..idx]
                .iter()
                .all(|c| matches!(c.source, ClipSource::Prompt(_)));
            let allowed = if first {
                self.health.try_acquire(Stage::Tts, now)
            } else {
                !self.health.is_open(Stage::Tts, now)
            };
            if !allowed {
                tts_refused = Some(idx);
                break;
            }
            let clip = &mut reply.clips[idx];
            clip.status = ClipStatus::Synthesizing {
                deadline: now + self.cfg.tts_timeout,
            };
            let (id, text) = (clip.id, clip.text.clone());
            self.push_action(Action::Synthesize { clip: id, text });
            ahead += 1;
        }
        if let Some(idx) = tts_refused {
            self.tts_failed(&mut reply, idx);
        }
        // Hand ready clips to playback, in order.
        for idx in 0..reply.clips.len() {
            match &reply.clips[idx].status {
                ClipStatus::Queued | ClipStatus::Played => continue,
                ClipStatus::Ready(_) => {}
                _ => break,
            }
            let ClipStatus::Ready(audio) =
                std::mem::replace(&mut reply.clips[idx].status, ClipStatus::Queued)
            else {
                unreachable!("matched Ready above");
            };
            let clip = &reply.clips[idx];
            let action = match clip.source {
                ClipSource::Prompt(prompt) => Action::PlayPrompt {
                    clip: clip.id,
                    prompt,
                },
                ClipSource::Tts => Action::Play {
                    clip: clip.id,
                    audio,
                },
            };
            if reply.timings.first_play.is_none() {
                reply.timings.first_play = Some(now);
                self.commit_caller_text(now, &mut reply);
            }
            self.push_action(action);
            self.set_state(State::Speaking);
        }
        let all_played = reply.clips.iter().all(|c| c.status == ClipStatus::Played);
        if reply.text_done && all_played {
            let hang_up = reply.hang_up;
            let transfer = reply.transfer.clone();
            self.finish_reply(now, reply, true);
            self.last_activity = now;
            if let Some(target) = transfer {
                self.push_action(Action::Transfer { target });
                self.set_state(State::Transferring);
                return;
            }
            match hang_up {
                Some(reason) => self.hang_up(reason),
                None => self.set_state(if self.pending.is_some() {
                    State::Thinking
                } else {
                    State::Listening
                }),
            }
            return;
        }
        self.reply = Some(reply);
        // If a pump was triggered before any clip was queued, say so.
        if self.state == State::Listening && self.reply.is_some() {
            self.set_state(State::Thinking);
        }
    }

    fn commit_caller_text(&mut self, now: Instant, reply: &mut Reply) {
        if reply.caller_committed {
            return;
        }
        reply.caller_committed = true;
        if let Some(text) = reply.caller_text.clone() {
            self.history.push(Message {
                role: Role::Caller,
                text: text.clone(),
            });
            let record = self.record_of(now, Role::Caller, text);
            self.push_action(Action::Remember(record));
        }
    }

    /// Closes a reply: commits the caller's words and exactly the agent text that was
    /// played (whole sentences, plus the played share of an interrupted one).
    fn finish_reply(&mut self, now: Instant, mut reply: Reply, completed: bool) {
        if reply.llm != LlmPhase::Idle {
            self.push_action(Action::CancelGenerate { turn: reply.turn });
        }
        let unfinished = reply.clips.iter().any(|c| c.status != ClipStatus::Played);
        if !completed && unfinished {
            self.push_action(Action::Cancel { turn: reply.turn });
        }
        self.commit_caller_text(now, &mut reply);
        let played: Vec<String> = reply.clips.iter().filter_map(played_text).collect();
        let played = played.join(" ");
        if !played.is_empty() {
            self.history.push(Message {
                role: Role::Agent,
                text: played.clone(),
            });
        }
        // Memory keeps what the agent said in answer, never canned prompts (greeting,
        // reprompts, apologies, goodbyes): those would crowd out the caller's words.
        let answered: Vec<String> = reply
            .clips
            .iter()
            .filter(|c| matches!(c.source, ClipSource::Tts))
            .filter_map(played_text)
            .collect();
        let answered = answered.join(" ");
        if reply.remember_played && !answered.is_empty() {
            let record = self.record_of(now, Role::Agent, answered);
            self.push_action(Action::Remember(record));
        }
        self.events.push_back(Event::TurnFinished(reply.timings));
    }

    fn unix_ms(&self, now: Instant) -> i64 {
        let offset = now.saturating_duration_since(self.call.started);
        self.call.started_unix_ms + offset.as_millis() as i64
    }

    /// What memory recalled for the caller's newest words (the shell asks for it when a
    /// transcript arrives, within a time budget). Name and greeting topic are kept.
    pub fn set_recollection(&mut self, recalled: Recollection) {
        let Recollection { facts, turns, .. } = recalled;
        self.memory.facts = facts;
        self.memory.turns = turns;
    }

    fn record_of(&self, now: Instant, role: Role, text: String) -> TurnRecord {
        TurnRecord {
            caller: self.call.caller.clone(),
            call_id: self.call.call_id.clone(),
            unix_ms: self.unix_ms(now),
            role,
            text,
        }
    }

    // ---- bookkeeping ------------------------------------------------------------------

    fn record(&mut self, stage: Stage, now: Instant, ok: bool) {
        // Only the call whose outcome changed the shared state reports the change.
        if let Some(state) = self.health.record(stage, now, ok) {
            self.events.push_back(Event::Breaker { stage, state });
        }
    }

    fn push_action(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn set_state(&mut self, state: State) {
        if self.state != state && self.state != State::Ended {
            self.state = state;
            self.events.push_back(Event::StateChanged(state));
        }
    }
}

/// The words of a clip the caller actually heard.
fn played_text(clip: &Clip) -> Option<String> {
    match clip.status {
        ClipStatus::Played => Some(clip.text.clone()),
        ClipStatus::Queued => {
            let total = clip.total?;
            if total.is_zero() || clip.played.is_zero() {
                return None;
            }
            let fraction = (clip.played.as_secs_f64() / total.as_secs_f64()).min(1.0);
            let words: Vec<&str> = clip.text.split_whitespace().collect();
            let n = (words.len() as f64 * fraction).floor() as usize;
            (n > 0).then(|| words[..n].join(" "))
        }
        _ => None,
    }
}
