//! Audio helpers for the real-model tests and the benchmark: WAV reading, band-limited
//! resampling, G.711 mu-law, espeak-ng speech and the models directory.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the support"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const RATE: u32 = 16_000;

/// The models directory exactly as the product resolves it.
pub fn models_dir() -> PathBuf {
    sofia_phone::config::load(None, &sofia_phone::config::ProcessEnv, &Default::default())
        .expect("the built-in profile loads")
        .models_dir
}

/// Mono samples and rate of a 16-bit PCM WAV file.
pub fn read_wav(bytes: &[u8]) -> (Vec<f32>, u32) {
    assert!(
        bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE",
        "not a WAV file"
    );
    let u16_at = |p: usize| u16::from_le_bytes([bytes[p], bytes[p + 1]]);
    let u32_at =
        |p: usize| u32::from_le_bytes([bytes[p], bytes[p + 1], bytes[p + 2], bytes[p + 3]]);
    let (mut pos, mut format) = (12, None);
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        // espeak-ng writing to a pipe leaves the size as 0xFFFFFFFF: clamp it.
        let size = (u32_at(pos + 4) as usize).min(bytes.len() - pos - 8);
        let body = pos + 8;
        match id {
            b"fmt " => {
                format = Some((
                    u16_at(body),
                    u16_at(body + 2),
                    u32_at(body + 4),
                    u16_at(body + 14),
                ))
            }
            b"data" => {
                let (tag, channels, rate, bits) = format.expect("WAV data before fmt chunk");
                assert_eq!((tag, bits), (1, 16), "expected 16-bit PCM");
                let channels = usize::from(channels);
                let samples = bytes[body..body + size]
                    .chunks_exact(2 * channels)
                    .map(|frame| {
                        let sum: i32 = frame
                            .chunks_exact(2)
                            .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                            .sum();
                        sum as f32 / (32768.0 * channels as f32)
                    })
                    .collect();
                return (samples, rate);
            }
            _ => {}
        }
        pos = body + size + (size & 1);
    }
    panic!("WAV file has no data chunk");
}

/// Writes mono samples as a 16-bit PCM WAV at `rate`.
/// `freq` Hz at amplitude 0.3 for `seconds` at `rate`, then `silence` seconds of
/// silence, as a mono WAV: a phone's microphone in the softphone tests.
pub fn write_tone_wav(path: &Path, rate: u32, freq: f32, seconds: f32, silence: f32) {
    let tone = (rate as f32 * seconds) as usize;
    let total = tone + (rate as f32 * silence) as usize;
    let samples: Vec<f32> = (0..total)
        .map(|i| {
            if i < tone {
                (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.3
            } else {
                0.0
            }
        })
        .collect();
    write_wav(path, rate, &samples);
}

pub fn write_wav(path: &Path, rate: u32, samples: &[f32]) {
    let data_len = (samples.len() * 2) as u32;
    let mut bytes = Vec::with_capacity(44 + data_len as usize);
    bytes.extend_from_slice(b"RIFF");
    bytes.extend_from_slice(&(36 + data_len).to_le_bytes());
    bytes.extend_from_slice(b"WAVEfmt ");
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes()); // PCM
    bytes.extend_from_slice(&1u16.to_le_bytes()); // mono
    bytes.extend_from_slice(&rate.to_le_bytes());
    bytes.extend_from_slice(&(rate * 2).to_le_bytes());
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&16u16.to_le_bytes());
    bytes.extend_from_slice(b"data");
    bytes.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write WAV");
}

/// Hann-windowed sinc resampling (16 zero crossings each side).
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return input.to_vec();
    }
    const HALF_WIDTH: f64 = 16.0;
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0) * 0.95;
    let reach = HALF_WIDTH / cutoff;
    let n_out = (input.len() as f64 * ratio).floor() as usize;
    (0..n_out)
        .map(|n| {
            let centre = n as f64 / ratio;
            let first = (centre - reach).ceil().max(0.0) as usize;
            let last = ((centre + reach).floor() as usize).min(input.len() - 1);
            let mut acc = 0.0;
            for (k, &x) in input.iter().enumerate().take(last + 1).skip(first) {
                let t = k as f64 - centre;
                let arg = std::f64::consts::PI * cutoff * t;
                let sinc = if arg == 0.0 { 1.0 } else { arg.sin() / arg };
                let window = 0.5 + 0.5 * (std::f64::consts::PI * t / reach).cos();
                acc += f64::from(x) * cutoff * sinc * window;
            }
            acc as f32
        })
        .collect()
}

/// G.711 mu-law encoding of one sample (ITU-T G.711, with the usual bias of 0x84).
pub fn mulaw_encode(sample: f32) -> u8 {
    let s = (sample.clamp(-1.0, 1.0) * 32767.0) as i32;
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = (s.abs() + 0x84).min(0x7FFF);
    let exponent = (15 - (magnitude as u16).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

pub fn mulaw_decode(code: u8) -> f32 {
    let code = !code;
    let sign = code & 0x80;
    let exponent = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let s = if sign != 0 { -magnitude } else { magnitude };
    s as f32 / 32768.0
}

/// 16 kHz audio through a phone line: down to 8 kHz, mu-law, back up to 16 kHz.
pub fn phone_line(audio_16k: &[f32]) -> Vec<f32> {
    let narrow = resample(audio_16k, RATE, 8_000);
    let coded: Vec<f32> = narrow
        .iter()
        .map(|&s| mulaw_decode(mulaw_encode(s)))
        .collect();
    resample(&coded, 8_000, RATE)
}

/// `text` spoken by espeak-ng, as 16 kHz samples, without padding.
pub fn espeak(text: &str, dir: &Path) -> Vec<f32> {
    let wav = dir.join(format!("espeak-{}.wav", text.len()));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("cannot run espeak-ng ({e}): apt-get install espeak-ng"));
    assert!(status.success(), "espeak-ng failed: {status}");
    let (samples, rate) = read_wav(&std::fs::read(&wav).expect("read espeak-ng output"));
    resample(&samples, rate, RATE)
}

pub fn silence(seconds: f32) -> Vec<f32> {
    vec![0.0; (seconds * RATE as f32) as usize]
}

/// Deterministic white noise at `level` (a small xorshift generator).
pub fn noise(seconds: f32, level: f32, seed: u64) -> Vec<f32> {
    let mut x = seed.max(1);
    (0..(seconds * RATE as f32) as usize)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * level
        })
        .collect()
}

/// Lower-case words without punctuation.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The words of `expected` missing from `heard`.
pub fn missing_words(expected: &str, heard: &str) -> Vec<String> {
    let heard = words(heard);
    words(expected)
        .into_iter()
        .filter(|w| !heard.contains(w))
        .collect()
}

/// Stretches of `audio` (16 kHz) louder than -40 dBFS in 20 ms frames, as (start, end)
/// in seconds, with gaps up to `max_gap` bridged: when a phone heard the agent speak.
pub fn voiced_spans(audio: &[f32], max_gap: f32) -> Vec<(f32, f32)> {
    let frame = (RATE / 50) as usize;
    let mut spans: Vec<(f32, f32)> = Vec::new();
    for (i, chunk) in audio.chunks(frame).enumerate() {
        let rms = (chunk.iter().map(|x| x * x).sum::<f32>() / chunk.len() as f32).sqrt();
        if rms < 0.01 {
            continue;
        }
        let (start, end) = (i as f32 * 0.02, (i + 1) as f32 * 0.02);
        match spans.last_mut() {
            Some(last) if start - last.1 <= max_gap => last.1 = end,
            _ => spans.push((start, end)),
        }
    }
    spans
}
