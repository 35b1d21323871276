//! Voice activity detection with Silero VAD (ONNX, through the same ONNX Runtime as
//! Piper), turned into one speech/no-speech decision per 20 ms frame for the controller.
//!
//! Silero works on 512-sample windows (32 ms at 16 kHz) with a recurrent state and 64
//! samples of context from the previous window. The model is shared by all calls;
//! each call keeps its own [`VadStream`] (state, context, hysteresis).

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use crate::voice::models::single_thread_session;

/// Samples per Silero window at 16 kHz.
pub const WINDOW: usize = 512;
/// Samples of the previous window prepended as context.
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

#[derive(Debug, thiserror::Error)]
#[error("voice activity detection failed: {0}")]
pub struct VadError(String);

/// The loaded model, shared across calls.
pub struct SileroVad {
    session: Mutex<Session>,
}

impl SileroVad {
    pub fn load(model: &Path, onnxruntime: &Path) -> anyhow::Result<Self> {
        let session = single_thread_session(model, onnxruntime, "Silero VAD")?;
        Ok(Self {
            session: Mutex::new(session),
        })
    }

    /// Speech probability of one window; updates `state` and `context`.
    fn infer(
        &self,
        window: &[f32],
        state: &mut Vec<f32>,
        context: &mut Vec<f32>,
    ) -> Result<f32, VadError> {
        let err = |e: ort::Error| VadError(e.to_string());
        let mut input = Vec::with_capacity(CONTEXT + WINDOW);
        input.extend_from_slice(context);
        input.extend_from_slice(window);
        let input = Tensor::from_array(([1usize, CONTEXT + WINDOW], input)).map_err(err)?;
        let state_in = Tensor::from_array(([2usize, 1, 128], state.clone())).map_err(err)?;
        let sr = Tensor::from_array(([1usize], vec![16_000i64])).map_err(err)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| VadError("a VAD inference panicked earlier".into()))?;
        let outputs = session
            .run(ort::inputs!["input" => input, "state" => state_in, "sr" => sr])
            .map_err(err)?;
        let (_, prob) = outputs["output"].try_extract_tensor::<f32>().map_err(err)?;
        let (_, new_state) = outputs["stateN"].try_extract_tensor::<f32>().map_err(err)?;
        state.clear();
        state.extend_from_slice(new_state);
        context.clear();
        context.extend_from_slice(&window[WINDOW - CONTEXT..]);
        Ok(prob.first().copied().unwrap_or(0.0))
    }
}

/// Per-call detector state: buffers 20 ms frames into Silero windows and applies
/// hysteresis (speech starts above `on`, ends below `off`), so a single quiet window in
/// the middle of a word does not flip the decision.
pub struct VadStream {
    state: Vec<f32>,
    context: Vec<f32>,
    pending: Vec<f32>,
    probability: f32,
    speaking: bool,
    pub on: f32,
    pub off: f32,
}

impl Default for VadStream {
    fn default() -> Self {
        Self {
            state: vec![0.0; STATE_LEN],
            context: vec![0.0; CONTEXT],
            pending: Vec::with_capacity(2 * WINDOW),
            probability: 0.0,
            speaking: false,
            on: 0.5,
            off: 0.35,
        }
    }
}

impl VadStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// The most recent window's speech probability.
    pub fn probability(&self) -> f32 {
        self.probability
    }

    /// Feeds a frame of 16 kHz audio (any length, normally 320 samples) and returns the
    /// decision for it.
    pub fn push_frame(&mut self, model: &SileroVad, frame: &[f32]) -> Result<bool, VadError> {
        self.pending.extend_from_slice(frame);
        while self.pending.len() >= WINDOW {
            let window: Vec<f32> = self.pending.drain(..WINDOW).collect();
            self.probability = model.infer(&window, &mut self.state, &mut self.context)?;
            if self.speaking {
                self.speaking = self.probability >= self.off;
            } else {
                self.speaking = self.probability >= self.on;
            }
        }
        Ok(self.speaking)
    }
}
