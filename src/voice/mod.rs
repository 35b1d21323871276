//! The real voice stages behind the `sofia-voice` traits, and what they need to run:
//! Whisper speech-to-text, Piper text-to-speech, the Silero voice activity detector,
//! the Smart Turn end-of-turn model,
//! the OpenAI-compatible language-model client, the bounded worker pool
//! the CPU-heavy stages run on, the cache of fixed prompts, and the playout reference of
//! the echo check.
//!
//! Nothing here decides anything about a conversation; that is `sofia_voice::Conversation`.
//! Inference never runs on a tokio worker: it goes through [`pool::WorkerPool`].

pub mod dispatch;
pub mod echo;
pub mod llm;
pub mod models;
pub mod piper;
pub mod pool;
pub mod prompts;
pub mod runtime;
pub mod turn;
pub mod vad;
pub mod whisper;

pub use dispatch::{InFlight, MediaCommand, StageResult, Stages};
pub use llm::{OpenAiConfig, OpenAiLlm};
pub use models::VoiceModels;
pub use piper::PiperTts;
pub use pool::WorkerPool;
pub use prompts::PromptCache;
pub use turn::SmartTurn;
pub use vad::{SileroVad, VadStream};
pub use whisper::{WhisperConfig, WhisperStt};
