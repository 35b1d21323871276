//! Speech to text with whisper.cpp (whisper-rs), tuned for short phone utterances.
//!
//! Two things matter for a phone agent on a small CPU. Speed: Whisper's encoder always
//! works on a 30 s window unless told otherwise, so `audio_ctx` is fitted to the
//! utterance (the encoder cost falls roughly in proportion). Trust: on silence or noise
//! Whisper invents text ("Thank you.", "you"), and on a short clip it repeats itself
//! ("Goodbye Goodbye ..."), so repeats are collapsed and a transcript is dropped when
//! the model itself says there was probably no speech, or when the voice activity
//! detector heard too little speech for that many words.

use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sofia_voice::{text, SpeechStats, StageError, Stt, Transcript};
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use crate::models::fetch::require;

/// Whisper's input rate.
pub const WHISPER_RATE: usize = 16_000;
/// Encoder positions per second of audio (one per 20 ms).
const CTX_PER_SECOND: f64 = 50.0;
/// Whisper's full window, in encoder positions (30 s).
const FULL_CTX: i32 = 1500;
/// Generous upper bound on tokens per second of speech (fast speech is ~4).
const MAX_TOKENS_PER_SECOND: f32 = 6.0;

#[derive(Debug, Clone, PartialEq)]
pub struct WhisperConfig {
    /// Threads per transcription.
    pub threads: usize,
    /// Fit `audio_ctx` to the utterance (false: the full 30 s window).
    pub fit_audio_ctx: bool,
    /// Extra encoder positions beyond the audio, before rounding up to a multiple of 64.
    pub audio_ctx_margin: i32,
    /// Above this no-speech probability the transcript is dropped, unless the detector
    /// heard at least `detector_outweighs` of speech.
    pub no_speech_threshold: f32,
    /// Detected speech from which the detector's verdict outweighs Whisper's no-speech
    /// probability.
    pub detector_outweighs: std::time::Duration,
    /// Voiced time the detector must have heard per transcribed word; a transcript
    /// with more words than that is dropped as invented.
    pub min_voiced_per_word: std::time::Duration,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            fit_audio_ctx: true,
            // Measured: a margin brought no better words on phone-like speech, only time.
            audio_ctx_margin: 0,
            // Measured on tiny.en (see `run`): clean speech up to 0.56 (a "Bye" at
            // -30 dB), line noise from 0.87.
            no_speech_threshold: 0.6,
            // Short words over a noisy line (espeak-ng "Bye.", "Yes." with noise 20 dB
            // down) score 0.67-0.83 while the detector hears 380-740 ms of them; a click
            // or a cough that passes the detector's 200 ms minimum is shorter.
            detector_outweighs: std::time::Duration::from_millis(400),
            // Ten words a second, twice a fast talker's rate: a detector that missed half
            // of real speech still passes; words over near-silence do not.
            min_voiced_per_word: std::time::Duration::from_millis(100),
        }
    }
}

/// The encoder context for `samples` of 16 kHz audio: enough positions for the audio
/// plus a margin, rounded up to a multiple of 64, between 64 and the full 1500.
pub fn fitted_audio_ctx(samples: usize, margin: i32) -> i32 {
    let needed = (samples as f64 / WHISPER_RATE as f64 * CTX_PER_SECOND).ceil() as i32 + margin;
    let rounded = (needed + 63) / 64 * 64;
    rounded.clamp(64, FULL_CTX)
}

/// Tokens a fast talker could produce in `samples` of 16 kHz audio, plus a few for
/// punctuation.
fn token_budget(samples: usize) -> i32 {
    let seconds = samples as f32 / WHISPER_RATE as f32;
    (seconds * MAX_TOKENS_PER_SECOND).ceil() as i32 + 8
}

/// Whisper with one decoding state per concurrent transcription (states are reused:
/// creating one allocates its compute buffers).
pub struct WhisperStt {
    ctx: WhisperContext,
    states: Mutex<Vec<WhisperState>>,
    config: WhisperConfig,
}

impl WhisperStt {
    /// Loads a GGML model file (checked with `models::fetch::require`).
    pub fn load(model: &Path, config: WhisperConfig) -> anyhow::Result<Self> {
        require(model)?;
        install_logging_hook();
        let ctx = WhisperContext::new_with_params(model, WhisperContextParameters::default())
            .map_err(|e| anyhow::anyhow!("whisper.cpp cannot load {}: {e}", model.display()))?;
        Ok(Self {
            ctx,
            states: Mutex::new(Vec::new()),
            config,
        })
    }

    pub fn config(&self) -> &WhisperConfig {
        &self.config
    }

    /// Transcribes with an explicit `audio_ctx` (`None`: the full window): the raw text
    /// and the no-speech probability. For benchmarks; [`Stt::transcribe`] picks the
    /// context from the configuration.
    pub fn transcribe_with_ctx(
        &self,
        audio: &[f32],
        audio_ctx: Option<i32>,
    ) -> Result<(String, f32), StageError> {
        self.transcribe_raw(audio, audio_ctx, None)
    }

    fn transcribe_raw(
        &self,
        audio: &[f32],
        audio_ctx: Option<i32>,
        cancelled: Option<&Arc<AtomicBool>>,
    ) -> Result<(String, f32), StageError> {
        let mut state = match self.states.lock().ok().and_then(|mut s| s.pop()) {
            Some(state) => state,
            None => self
                .ctx
                .create_state()
                .map_err(|e| StageError::Inference(format!("whisper state: {e}")))?,
        };
        CANCELLED.with(|c| *c.borrow_mut() = cancelled.cloned());
        let result = self.run(&mut state, audio, audio_ctx);
        let was_cancelled = CANCELLED
            .with(|c| c.borrow_mut().take())
            .is_some_and(|f| f.load(Ordering::Relaxed));
        if let Ok(mut states) = self.states.lock() {
            states.push(state);
        }
        if was_cancelled {
            return Err(StageError::Cancelled);
        }
        result
    }

    fn run(
        &self,
        state: &mut WhisperState,
        audio: &[f32],
        audio_ctx: Option<i32>,
    ) -> Result<(String, f32), StageError> {
        // The token budget counts the caller's audio, not the padding below.
        let max_tokens = token_budget(audio.len());
        // whisper.cpp skips input shorter than 1 s; pad short utterances with silence.
        let min_len = WHISPER_RATE * 11 / 10;
        let padded;
        let audio = if audio.len() < min_len {
            padded = [audio, &vec![0.0; min_len - audio.len()]].concat();
            &padded[..]
        } else {
            audio
        };
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_language(Some("en"));
        params.set_n_threads(self.config.threads as i32);
        // Timestamps stay on although they are not used: whisper.cpp reads the no-speech
        // probability after the last prompt token, and `no_timestamps` appends
        // <|notimestamps|> to the prompt, after which it is always about 0. Measured
        // with tiny.en on espeak-ng speech and line noise through G.711: with timestamps,
        // clean speech 0.14-0.56 and noise 0.87-0.97; without, 0.00 for both.
        params.set_no_timestamps(false);
        params.set_single_segment(true);
        params.set_no_context(true);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        // Repetition loops ("Goodbye Goodbye ...") are Whisper's other failure on short
        // clips. whisper.cpp's entropy check only judges sequences of more than 32
        // tokens, so on a phone turn the bound that counts is the token budget: what a
        // fast talker could say in this much audio. `collapse_repeats` removes what is
        // left of a loop inside that budget.
        params.set_max_tokens(max_tokens);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        if let Some(ctx) = audio_ctx {
            params.set_audio_ctx(ctx);
        }
        set_abort_callback(&mut params, abort_requested);
        state
            .full(params, audio)
            .map_err(|e| StageError::Inference(format!("whisper: {e}")))?;
        let mut text = String::new();
        let mut no_speech: f32 = 0.0;
        for segment in state.as_iter() {
            no_speech = no_speech.max(segment.no_speech_probability());
            let s = segment
                .to_str_lossy()
                .map_err(|e| StageError::Inference(format!("whisper text: {e}")))?;
            text.push_str(&s);
        }
        Ok((text.trim().to_string(), no_speech))
    }

    /// Applies the hallucination guards to a raw transcript. Whisper invents words
    /// ("Thank you.", "you", "Okay") on noise and silence, and the same words are real
    /// when a caller says them, so the guard weighs evidence, not the words: Whisper's
    /// own no-speech probability where the voice activity detector heard little, and
    /// whether the detector heard enough speech to carry that many words.
    pub fn judge(&self, raw: String, no_speech_prob: f32, speech: SpeechStats) -> Transcript {
        let cleaned = strip_annotations(&raw);
        // Noise can decode to a lone broken UTF-8 piece ("\u{fffd}") or punctuation.
        let cleaned = if cleaned.chars().any(char::is_alphanumeric) {
            text::collapse_repeats(&cleaned)
        } else {
            String::new()
        };
        let drop = |reason: &str| Transcript {
            text: String::new(),
            no_speech_prob,
            dropped: Some(format!("{reason}: {raw:?}")),
        };
        if cleaned.is_empty() {
            return drop("no words");
        }
        if no_speech_prob > self.config.no_speech_threshold
            && speech.voiced < self.config.detector_outweighs
        {
            return drop("no-speech probability above threshold, little detected speech");
        }
        let words = text::words(&cleaned).len() as u32;
        if speech.voiced < self.config.min_voiced_per_word * words {
            return drop(&format!(
                "{words} words but only {} ms of detected speech",
                speech.voiced.as_millis()
            ));
        }
        Transcript {
            text: cleaned,
            no_speech_prob,
            dropped: None,
        }
    }
}

impl Stt for WhisperStt {
    fn transcribe(&self, audio: &[f32], speech: SpeechStats) -> Result<Transcript, StageError> {
        self.transcribe_until(audio, speech, None)
    }

    /// Stops whisper.cpp mid-way (its abort callback) once `cancelled` is set.
    fn transcribe_cancellable(
        &self,
        audio: &[f32],
        speech: SpeechStats,
        cancelled: &Arc<AtomicBool>,
    ) -> Result<Transcript, StageError> {
        if cancelled.load(Ordering::Relaxed) {
            return Err(StageError::Cancelled);
        }
        self.transcribe_until(audio, speech, Some(cancelled))
    }
}

impl WhisperStt {
    fn transcribe_until(
        &self,
        audio: &[f32],
        speech: SpeechStats,
        cancelled: Option<&Arc<AtomicBool>>,
    ) -> Result<Transcript, StageError> {
        let ctx = self
            .config
            .fit_audio_ctx
            .then(|| fitted_audio_ctx(audio.len().max(WHISPER_RATE), self.config.audio_ctx_margin));
        let (raw, no_speech) = self.transcribe_raw(audio, ctx, cancelled)?;
        Ok(self.judge(raw, no_speech, speech))
    }
}

thread_local! {
    /// The cancel flag of the transcription running on this thread. whisper.cpp polls
    /// its abort callback from the thread that called `whisper_full` (ggml's compute
    /// thread 0 is the caller), so the callback finds the flag here.
    static CANCELLED: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// whisper.cpp's abort callback. It is a plain function on purpose: whisper-rs 0.16's
/// `set_abort_callback_safe` hands the C side a pointer to a boxed `dyn FnMut` but calls
/// it back as the closure type itself, which is only sound for a closure without
/// captures (zero-sized). So the flag comes from a thread-local, not a capture.
fn set_abort_callback<F: FnMut() -> bool + 'static>(params: &mut FullParams, callback: F) {
    assert_eq!(
        std::mem::size_of::<F>(),
        0,
        "only a callback without captures is sound with whisper-rs 0.16"
    );
    params.set_abort_callback_safe::<Option<F>, F>(Some(callback));
}

fn abort_requested() -> bool {
    CANCELLED.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    })
}

/// Removes bracketed annotations Whisper emits instead of words ("[BLANK_AUDIO]",
/// "(music)", "*coughs*").
fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut in_stars = false;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            '*' => in_stars = !in_stars,
            _ if depth == 0 && !in_stars => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// whisper.cpp logs every model load and inference to stderr; the hooks (without the
/// `log`/`tracing` backend features) swallow it. Process-wide, installed once.
fn install_logging_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(whisper_rs::install_logging_hooks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_ctx_fits_the_utterance() {
        assert_eq!(fitted_audio_ctx(16_000, 0), 64);
        assert_eq!(fitted_audio_ctx(16_000 * 2, 0), 128);
        assert_eq!(fitted_audio_ctx(16_000 * 3, 64), 256);
        assert_eq!(fitted_audio_ctx(16_000 * 4, 0), 256);
        assert_eq!(fitted_audio_ctx(16_000 * 60, 64), 1500);
    }

    #[test]
    fn token_budget_counts_the_audio_not_the_padding() {
        // 0.8 s is padded to 1.1 s for whisper.cpp; the budget is that of 0.8 s.
        assert_eq!(token_budget(16_000 * 8 / 10), 13);
        assert_eq!(token_budget(16_000 * 4), 32);
    }

    #[test]
    fn annotations() {
        assert_eq!(strip_annotations("[BLANK_AUDIO]"), "");
        assert_eq!(
            strip_annotations("Hello (coughs) there *sighs*"),
            "Hello there"
        );
    }
}
