//! sofia-voice: the sans-IO conversation core of the voice agent.
//!
//! What it owns: the per-call [`Conversation`] controller (listening, thinking, speaking;
//! end of turn, barge-in, silence and call-length timers), the [`CircuitBreaker`] and the
//! process-wide [`StageHealth`] (one breaker per stage shared by all calls), the
//! streaming [`SentenceSplitter`], the [`EchoDetector`] that keeps the agent's own echo
//! from counting as barge-in, the built-in offline [`responder`], and one small trait
//! per pipeline stage ([`Stt`], [`Llm`], [`Tts`], [`Memory`]).
//!
//! What it must not do: read a clock, spawn threads, touch sockets, files, models or a
//! database (`crates/clippy.toml` enforces the first three). It sees 16 kHz PCM and text,
//! never RTP or SIP. The root package implements the stages and drives the controller.

pub mod breaker;
pub mod conversation;
pub mod echo;
pub mod responder;
pub mod splitter;
pub mod stage;
pub mod text;
pub mod turn_words;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, StageHealth};
pub use conversation::{
    Action, CallInfo, ClipId, Config, Conversation, EndOfTurn, Event, HandoffConfig, HangUpReason,
    ModelTurn, PlaybackProgress, Prompt, ReplyChunk, Stage, State, TurnCheckId, TurnId,
    TurnTimings, TurnVerdict, SAMPLE_RATE,
};
pub use echo::{EchoDetector, EchoVerdict};
pub use splitter::SentenceSplitter;
pub use stage::{
    Audio, GenerateRequest, Llm, Memory, Message, Recollection, Remembered, RememberedFact, Role,
    SpeechStats, StageError, Stt, Transcript, Tts, TurnRecord,
};
