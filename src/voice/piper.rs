//! Text to speech with Piper (piper-rs over ONNX Runtime), one sentence at a time.
//!
//! The voice is loaded once and shared; espeak-ng (inside piper-rs) keeps global state,
//! so synthesis is serialised by a mutex. At about 0.15 real-time factor on two cores
//! one voice keeps up with several calls speaking at once.

use std::path::Path;
use std::sync::Mutex;

use piper_rs::Piper;
use sofia_voice::{Audio, StageError, Tts};

use crate::models::fetch::require;
use crate::voice::models::init_onnxruntime;

/// Piper starts each clip with a short stretch of near silence; the caller hears the
/// reply only from its first sound, so that stretch is pure latency. Trimmed down to
/// this much lead-in (a hard onset on the very first sample can click).
const LEAD_IN: f32 = 0.010;
/// A 5 ms window quieter than this (RMS, -46 dBFS) is silence. Piper's own noise floor
/// is far lower, and its softest onsets (fricatives) rise above it within a few ms;
/// windows, not samples, so a lone click at the clip's start does not count as sound.
pub const SILENCE_RMS: f32 = 0.005;
const WINDOW: f32 = 0.005;

/// Where the first sound of `samples` starts: the first 5 ms window above
/// [`SILENCE_RMS`]. `None`: all silence.
pub fn first_sound(samples: &[f32], sample_rate: u32) -> Option<usize> {
    let window = ((WINDOW * sample_rate as f32) as usize).max(1);
    samples
        .chunks(window)
        .position(|w| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt() > SILENCE_RMS)
        .map(|i| i * window)
}

/// Drops the silence before the first sound of a clip, keeping [`LEAD_IN`].
pub fn trim_leading_silence(samples: &mut Vec<f32>, sample_rate: u32) {
    let Some(first) = first_sound(samples, sample_rate) else {
        return; // all silence: leave it for the caller to judge
    };
    let keep = (LEAD_IN * sample_rate as f32) as usize;
    samples.drain(..first.saturating_sub(keep));
}

pub struct PiperTts {
    voice: Mutex<Piper>,
}

impl PiperTts {
    /// Loads the voice (`.onnx` plus its `.onnx.json`), loading ONNX Runtime from
    /// `onnxruntime` first if this process has not yet.
    pub fn load(model: &Path, config: &Path, onnxruntime: &Path) -> anyhow::Result<Self> {
        require(model)?;
        require(config)?;
        init_onnxruntime(onnxruntime)?;
        let voice = Piper::new(model, config)
            .map_err(|e| anyhow::anyhow!("cannot load the Piper voice {}: {e}", model.display()))?;
        Ok(Self {
            voice: Mutex::new(voice),
        })
    }
}

impl Tts for PiperTts {
    fn synthesize(&self, text: &str) -> Result<Audio, StageError> {
        let mut voice = self
            .voice
            .lock()
            .map_err(|_| StageError::Inference("a Piper synthesis panicked earlier".into()))?;
        let (mut samples, sample_rate) = voice
            .create(text, false, None, None, None, None)
            .map_err(|e| StageError::Inference(format!("piper: {e}")))?;
        trim_leading_silence(&mut samples, sample_rate);
        Ok(Audio {
            samples,
            sample_rate,
        })
    }
}
