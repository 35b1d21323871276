//! The four pipeline stages as small traits, and the plain data that flows between the
//! controller and them.
//!
//! The methods are blocking and async-free on purpose: inference is CPU-bound, so the
//! shell runs every call on a bounded worker pool (never on a tokio worker) and feeds the
//! result back into the [`Conversation`](crate::Conversation). A stage that is naturally
//! async (an HTTP client, LanceDB) blocks on its own small runtime inside the trait
//! method, and may offer async inherent methods to a shell that prefers them.
//! Implementations must be `Send + Sync` so one loaded model serves every call.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Why a stage gave no result. The controller only needs to know that it failed (for the
/// breaker) and whether it was a timeout (for logs); the detail is for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("timed out")]
    Timeout,
    #[error("the worker pool is full")]
    Busy,
    #[error("cancelled")]
    Cancelled,
    #[error("backend unreachable: {0}")]
    Unreachable(String),
    #[error("backend answered with an error: {0}")]
    Rejected(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("storage failed: {0}")]
    Storage(String),
}

/// Mono PCM audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl Audio {
    pub fn duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.sample_rate))
    }
}

/// What the voice activity detector saw in an utterance; speech-to-text uses it to reject
/// Whisper's inventions on near-silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpeechStats {
    /// Time the detector marked as speech.
    pub voiced: Duration,
    /// Length of the audio handed over.
    pub total: Duration,
}

/// A transcription. `text` is empty when nothing trustworthy was heard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    pub text: String,
    /// Whisper's probability that the audio held no speech (0 when unknown).
    pub no_speech_prob: f32,
    /// Why text was thrown away, if it was (a known hallucination, for instance).
    pub dropped: Option<String>,
}

impl Transcript {
    pub fn heard(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Caller,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Caller => "caller",
            Role::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "caller" => Some(Role::Caller),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// One thing said in a call, as memory stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRecord {
    /// Who called: the SIP user (AOR user part), never a display name.
    pub caller: String,
    /// The SIP Call-ID of the call it was said in.
    pub call_id: String,
    /// Wall-clock time in Unix milliseconds (given by the shell, never read here).
    pub unix_ms: i64,
    pub role: Role,
    pub text: String,
}

/// A line of the conversation so far, for the language model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

/// What memory brought back for a call or a turn: facts about the caller and earlier
/// turns, ranked and dated. Empty for a first-time caller (or when memory is down).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recollection {
    /// The caller's name, when they gave it in an earlier call.
    pub name: Option<String>,
    /// What to mention in the greeting: the most salient episode of their last call.
    pub last_topic: Option<Remembered>,
    /// Facts about the caller, best first (superseded ones marked, only when asked).
    pub facts: Vec<RememberedFact>,
    /// Earlier turns that bear on what the caller just said, best first.
    pub turns: Vec<Remembered>,
}

impl Recollection {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.last_topic.is_none()
            && self.facts.is_empty()
            && self.turns.is_empty()
    }
}

/// Something said in an earlier call (or earlier in this one).
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub role: Role,
    pub text: String,
    pub unix_ms: i64,
    pub call_id: String,
    /// Relevance, higher is better (comparable within one recollection only).
    pub score: f32,
}

/// A consolidated fact: one value of one slot ("home" = "Berlin").
#[derive(Debug, Clone, PartialEq)]
pub struct RememberedFact {
    pub slot: String,
    pub value: String,
    /// A sentence about the caller: "You live in Berlin."
    pub text: String,
    pub unix_ms: i64,
    /// A later fact replaced it ("I moved from Paris to Berlin").
    pub superseded: bool,
}

/// Everything the reply step needs: what the caller said now, earlier in this call, and
/// what memory recalled for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub caller: String,
    pub call_id: String,
    /// Wall-clock time of the request (Unix ms), for dating memories.
    pub unix_ms: i64,
    /// What memory recalled: at call start, then for the caller's newest words.
    pub memory: Recollection,
    /// This call so far, oldest first; the last entry is the caller's new turn.
    pub history: Vec<Message>,
}

impl GenerateRequest {
    /// The caller's newest words (empty if the history does not end with them).
    pub fn caller_text(&self) -> &str {
        match self.history.last() {
            Some(m) if m.role == Role::Caller => &m.text,
            _ => "",
        }
    }
}

/// Speech to text: 16 kHz mono samples in, text out.
pub trait Stt: Send + Sync {
    fn transcribe(&self, audio_16k: &[f32], speech: SpeechStats) -> Result<Transcript, StageError>;

    /// [`transcribe`](Self::transcribe) for work the controller may drop before it is
    /// done (an early transcription the caller talked over, a turn abandoned by
    /// barge-in): once `cancelled` is set the answer is [`StageError::Cancelled`] and
    /// the CPU goes to the next job. This default only checks before it starts, which
    /// already skips work that waited in a queue; an implementation that can stop
    /// mid-way (whisper.cpp's abort callback) overrides it.
    fn transcribe_cancellable(
        &self,
        audio_16k: &[f32],
        speech: SpeechStats,
        cancelled: &Arc<AtomicBool>,
    ) -> Result<Transcript, StageError> {
        if cancelled.load(Ordering::Relaxed) {
            return Err(StageError::Cancelled);
        }
        self.transcribe(audio_16k, speech)
    }
}

/// The reply step. Text is streamed into `on_text` as it is produced; `on_text`
/// returning `Break` asks the implementation to stop early (the caller hung up or barged
/// in), which is not an error.
pub trait Llm: Send + Sync {
    fn generate(
        &self,
        request: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<(), StageError>;
}

/// Text to speech: one sentence in, audio at the voice's own rate out.
pub trait Tts: Send + Sync {
    fn synthesize(&self, text: &str) -> Result<Audio, StageError>;
}

/// The caller's memory as the conversation needs it. Implementations must answer within
/// their own time budget: these are called from the shell off the call's media loop.
pub trait Memory: Send + Sync {
    /// Gets ready for a call from `caller` (loads what `open_call` will need). Blocking.
    fn prefetch(&self, _caller: &str) {}
    /// At call start: the caller's name, facts and the episode to greet with.
    fn open_call(
        &self,
        caller: &str,
        call_id: &str,
        now_ms: i64,
    ) -> Result<Recollection, StageError>;
    /// What bears on `query` (the caller's newest words).
    fn recall(&self, caller: &str, query: &str, now_ms: i64) -> Result<Recollection, StageError>;
    /// Stores a turn (durably before it returns, or queued to a writer that is).
    fn remember(&self, turn: &TurnRecord) -> Result<(), StageError>;
    /// The call is over, however it ended: its turns are written and consolidated.
    fn close_call(&self, caller: &str, call_id: &str) -> Result<(), StageError>;
    /// Returns once everything queued is stored (shutdown). Blocking.
    fn flush(&self) {}
}
