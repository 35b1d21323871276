//! Sample-rate conversion with rubato's windowed-sinc resampler.
//!
//! Owns: one-shot conversion of a whole prompt (text-to-speech output at any rate to
//! the codec rate) and streaming conversion of decoded audio to the rate speech
//! recognition wants (16 kHz). Must not: keep audio longer than one chunk, or know
//! about codecs and RTP.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, Resampler as _, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};
use thiserror::Error;

/// Why a conversion could not be done.
#[derive(Debug, Error)]
pub enum ResampleError {
    /// A rate of zero, or a ratio rubato cannot handle.
    #[error("cannot resample from {from} Hz to {to} Hz")]
    UnsupportedRates {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
    },
    /// rubato reported an error while processing (a buffer-size invariant broke).
    #[error("resampler failed: {0}")]
    Processing(String),
}

/// Highest rate accepted, to keep filter tables bounded.
const MAX_RATE: u32 = 384_000;

fn sinc(from: u32, to: u32, chunk: usize, sinc_len: usize) -> Result<Async<f32>, ResampleError> {
    if from == 0 || to == 0 || from > MAX_RATE || to > MAX_RATE {
        return Err(ResampleError::UnsupportedRates { from, to });
    }
    let params = SincInterpolationParameters {
        sinc_len,
        f_cutoff: None,
        oversampling_factor: 128,
        interpolation: SincInterpolationType::Linear,
        window: WindowFunction::BlackmanHarris2,
    };
    Async::<f32>::new_sinc(
        f64::from(to) / f64::from(from),
        1.0,
        &params,
        chunk,
        1,
        FixedAsync::Input,
    )
    .map_err(|_| ResampleError::UnsupportedRates { from, to })
}

/// Converts whole clips from one rate to another, keeping the filter tables between
/// calls. Output length is exactly `ceil(len * to / from)` and the filter delay is trimmed,
/// so a clip comes out time-aligned.
pub struct ClipResampler {
    from: u32,
    to: u32,
    inner: Option<Async<f32>>,
}

impl std::fmt::Debug for ClipResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClipResampler({} -> {} Hz)", self.from, self.to)
    }
}

impl ClipResampler {
    /// A resampler from `from` Hz to `to` Hz.
    pub fn new(from: u32, to: u32) -> Result<Self, ResampleError> {
        let inner = if from == to {
            None
        } else {
            Some(sinc(from, to, 1024, 128)?)
        };
        Ok(Self { from, to, inner })
    }

    /// Input rate.
    pub fn from_rate(&self) -> u32 {
        self.from
    }

    /// Converts `input` (mono), appending to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        if input.is_empty() {
            return Ok(());
        }
        let adapter = InterleavedSlice::new(input, 1, input.len())
            .map_err(|e| ResampleError::Processing(e.to_string()))?;
        let result = inner
            .process_all(&adapter, input.len(), None)
            .map_err(|e| ResampleError::Processing(e.to_string()))?;
        let mut data = result.take_data();
        // rubato sizes the output as ceil(len * ratio) in floating point, which can be
        // one sample long when len * to / from is an exact integer; use exact
        // arithmetic so clip lengths are deterministic.
        let exact = (input.len() as u64 * u64::from(self.to)).div_ceil(u64::from(self.from));
        data.resize(exact as usize, 0.0);
        out.extend_from_slice(&data);
        Ok(())
    }
}

/// One-shot conversion of a clip (convenience over [`ClipResampler`]).
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, ResampleError> {
    let mut out = Vec::new();
    ClipResampler::new(from, to)?.process(input, &mut out)?;
    Ok(out)
}

/// Converts a continuous stream chunk by chunk, carrying filter state across calls
/// so there are no seams between frames. Adds the filter delay (a few ms) once at
/// the start of the stream.
pub struct StreamResampler {
    inner: Option<Async<f32>>,
    chunk: usize,
    pending: Vec<f32>,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamResampler(chunk {})", self.chunk)
    }
}

impl StreamResampler {
    /// A stream resampler that consumes input in chunks of `chunk` samples.
    pub fn new(from: u32, to: u32, chunk: usize) -> Result<Self, ResampleError> {
        let chunk = chunk.max(1);
        let inner = if from == to {
            None
        } else {
            Some(sinc(from, to, chunk, 64)?)
        };
        let scratch_len = inner.as_ref().map_or(0, |r| r.output_frames_max());
        Ok(Self {
            inner,
            chunk,
            pending: Vec::with_capacity(chunk * 2),
            scratch: vec![0.0; scratch_len],
        })
    }

    /// Feeds `input`, appending whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleError> {
        let Some(inner) = self.inner.as_mut() else {
            out.extend_from_slice(input);
            return Ok(());
        };
        self.pending.extend_from_slice(input);
        let mut used = 0;
        while self.pending.len() - used >= self.chunk {
            let src = &self.pending[used..used + self.chunk];
            let adapter = InterleavedSlice::new(src, 1, self.chunk)
                .map_err(|e| ResampleError::Processing(e.to_string()))?;
            let frames = self.scratch.len();
            let mut dst = InterleavedSlice::new_mut(&mut self.scratch[..], 1, frames)
                .map_err(|e| ResampleError::Processing(e.to_string()))?;
            let (consumed, produced) = inner
                .process_into_buffer(&adapter, &mut dst, None)
                .map_err(|e| ResampleError::Processing(e.to_string()))?;
            out.extend_from_slice(&self.scratch[..produced]);
            used += consumed.max(1);
        }
        self.pending.drain(..used);
        Ok(())
    }
}
