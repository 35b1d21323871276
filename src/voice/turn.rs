//! Smart Turn v3.2: a learned end-of-turn detector (Whisper-tiny encoder plus a
//! classifier, int8 ONNX) that says whether the caller has finished their turn, from the
//! last 8 s of their audio. The conversation asks for a verdict after a short silence
//! ([`sofia_voice::Action::PredictTurnEnd`]); this module computes it.
//!
//! The model was trained on Whisper log-mel features as `_whisper_features.py` (shipped
//! beside it) computes them, so [`LogMel`] reproduces that code step by step: waveform
//! normalisation in f32, a reflect-padded, centred STFT (400-point periodic Hann, hop 160)
//! in f64, the power spectrum, an 80-band Slaney mel filterbank with area normalisation,
//! log10 with a 1e-10 floor, the last frame dropped, then `max(x, max - 8)` and
//! `(x + 4) / 4`. `tests/voice_turn.rs` compares every value with the reference.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::Tensor;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};
use sofia_voice::StageError;

use crate::voice::models::single_thread_session;

/// The model's window: the last 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
pub const N_MELS: usize = 80;
/// Feature frames in the window (10 ms each).
pub const N_FRAMES: usize = 800;
const N_FFT: usize = 400;
const HOP: usize = 160;
const N_BINS: usize = N_FFT / 2 + 1;
const SAMPLE_RATE: f64 = 16_000.0;
const MEL_FLOOR: f64 = 1e-10;
const NORM_VARIANCE_EPS: f32 = 1e-7;

/// One mel band: the FFT bin its non-zero weights start at, and the weights.
struct Band {
    first_bin: usize,
    weights: Vec<f64>,
}

/// Whisper-style log-mel features for Smart Turn. Holds the FFT plan, the window and
/// the filterbank; [`LogMel::features`] itself is a pure function of its input.
pub struct LogMel {
    fft: Arc<dyn Fft<f64>>,
    window: Vec<f64>,
    bands: Vec<Band>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

impl LogMel {
    pub fn new() -> Self {
        // np.hanning(N + 1)[:-1]: the periodic window torch.hann_window gives.
        let window = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        Self {
            fft: FftPlanner::new().plan_fft_forward(N_FFT),
            window,
            bands: slaney_filterbank(),
        }
    }

    /// Features of `audio` (16 kHz) as the model takes them: its last 8 s, zero-padded
    /// at the front when shorter (as the reference caller does). Returns
    /// `N_MELS * N_FRAMES` values, band-major (`[80, 800]`).
    pub fn features(&self, audio: &[f32]) -> Vec<f32> {
        let mut x = vec![0f32; WINDOW_SAMPLES];
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        x[WINDOW_SAMPLES - tail.len()..].copy_from_slice(tail);
        self.features_of_window(&x)
    }

    /// Features of exactly one 8 s window.
    fn features_of_window(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), WINDOW_SAMPLES);
        // Zero mean, unit variance, in f32 like the reference (its statistics are
        // summed more exactly here, a difference far below the test's tolerance).
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (mean, std) = (mean as f32, (var as f32 + NORM_VARIANCE_EPS).sqrt());
        let normalized: Vec<f64> = x.iter().map(|&v| f64::from((v - mean) / std)).collect();

        // Centred frames: reflect-pad N_FFT/2 on each side (np.pad mode="reflect" does
        // not repeat the edge sample).
        let pad = N_FFT / 2;
        let len = normalized.len();
        let mut padded = Vec::with_capacity(len + 2 * pad);
        padded.extend(normalized[1..=pad].iter().rev());
        padded.extend_from_slice(&normalized);
        padded.extend(normalized[len - 1 - pad..len - 1].iter().rev());
        let frames = 1 + len / HOP; // 801; the last is dropped below
        let mut log_spec = vec![0f64; N_MELS * N_FRAMES];
        let mut buffer = vec![Complex::new(0.0, 0.0); N_FFT];
        let mut scratch = vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = [0f64; N_BINS];
        for t in 0..frames.min(N_FRAMES) {
            let frame = &padded[t * HOP..t * HOP + N_FFT];
            for ((slot, x), w) in buffer.iter_mut().zip(frame).zip(&self.window) {
                *slot = Complex::new(x * w, 0.0);
            }
            self.fft.process_with_scratch(&mut buffer, &mut scratch);
            for (p, c) in power.iter_mut().zip(&buffer[..N_BINS]) {
                *p = c.norm_sqr();
            }
            for (m, band) in self.bands.iter().enumerate() {
                let energy: f64 = band
                    .weights
                    .iter()
                    .zip(&power[band.first_bin..])
                    .map(|(w, p)| w * p)
                    .sum();
                log_spec[m * N_FRAMES + t] = energy.max(MEL_FLOOR).log10();
            }
        }
        let max = log_spec.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        log_spec
            .into_iter()
            .map(|v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }
}

fn hz_to_mel_slaney(hz: f64) -> f64 {
    if hz >= 1000.0 {
        15.0 + (hz / 1000.0).ln() * (27.0 / 6.4f64.ln())
    } else {
        3.0 * hz / 200.0
    }
}

fn mel_to_hz_slaney(mel: f64) -> f64 {
    if mel >= 15.0 {
        1000.0 * ((6.4f64.ln() / 27.0) * (mel - 15.0)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// Triangular filters on the Slaney mel scale from 0 to 8 kHz, each scaled to unit area
/// (`2 / (f[m+2] - f[m])`), as `_build_mel_filterbank` builds them; only the non-zero
/// weights are kept.
fn slaney_filterbank() -> Vec<Band> {
    let mel_max = hz_to_mel_slaney(SAMPLE_RATE / 2.0);
    // np.linspace(0, mel_max, N_MELS + 2): start + i * step, the last point exact.
    let step = mel_max / (N_MELS + 1) as f64;
    let edges: Vec<f64> = (0..N_MELS + 2)
        .map(|i| {
            let mel = if i == N_MELS + 1 {
                mel_max
            } else {
                i as f64 * step
            };
            mel_to_hz_slaney(mel)
        })
        .collect();
    let bin_hz = (SAMPLE_RATE / 2.0) / (N_BINS - 1) as f64;
    (0..N_MELS)
        .map(|m| {
            let (lower, centre, upper) = (edges[m], edges[m + 1], edges[m + 2]);
            let enorm = 2.0 / (upper - lower);
            let weight = |bin: usize| {
                let f = bin as f64 * bin_hz;
                let down = (f - lower) / (centre - lower);
                let up = (upper - f) / (upper - centre);
                down.min(up).max(0.0) * enorm
            };
            let first_bin = (0..N_BINS).find(|&b| weight(b) > 0.0).unwrap_or(0);
            let last_bin = (0..N_BINS).rev().find(|&b| weight(b) > 0.0).unwrap_or(0);
            Band {
                first_bin,
                weights: (first_bin..=last_bin.max(first_bin)).map(weight).collect(),
            }
        })
        .collect()
}

/// The loaded model, shared by every call. One inference at a time (a mutex around the
/// session), on one intra-op thread: Whisper runs beside it on a 2-core machine.
pub struct SmartTurn {
    session: Mutex<Session>,
    output: String,
    features: LogMel,
}

impl SmartTurn {
    pub fn load(model: &Path, onnxruntime: &Path) -> anyhow::Result<Self> {
        // As the reference runs it: sequential execution, one inter-op thread, every
        // graph optimisation (ONNX Runtime's defaults), and one intra-op thread.
        let session = single_thread_session(model, onnxruntime, "Smart Turn")?;
        let output = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| anyhow::anyhow!("Smart Turn {} has no output", model.display()))?;
        Ok(Self {
            session: Mutex::new(session),
            output,
            features: LogMel::new(),
        })
    }

    /// The probability that the turn in `audio` (16 kHz, the utterance so far with its
    /// trailing silence) is complete. Blocking (tens of ms): run it on a worker pool.
    pub fn predict(&self, audio: &[f32]) -> Result<f32, StageError> {
        let err = |e: ort::Error| StageError::Inference(format!("Smart Turn: {e}"));
        let features = self.features.features(audio);
        let input = Tensor::from_array(([1usize, N_MELS, N_FRAMES], features)).map_err(err)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| StageError::Inference("a Smart Turn inference panicked earlier".into()))?;
        let outputs = session
            .run(ort::inputs!["input_features" => input])
            .map_err(err)?;
        let (_, probability) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(err)?;
        probability
            .first()
            .copied()
            .filter(|p| p.is_finite())
            .ok_or_else(|| StageError::Inference("Smart Turn returned no probability".into()))
    }
}
