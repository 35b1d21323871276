//! End to end check of the Whisper converter: convert the real tiny.en CTranslate2 model
//! with `ct2_to_ggml`, load the result with whisper-rs (whisper.cpp), and transcribe a
//! sentence spoken by espeak-ng.
//!
//! Needs the model fetched by `sofia-phone models fetch` (in the models dir of the default
//! profile, which keeps the CTranslate2 source beside the GGML file) and the `espeak-ng`
//! program. Missing either
//! is a failure, not a skip: this is the test that proves the speech stack works.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sofia_phone::models::ct2_to_ggml;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

const CT2_DIR: &str = "whisper-tiny.en-ct2";
const SENTENCE: &str =
    "Hello, thank you for calling. Please leave your name and number after the tone.";
const WHISPER_RATE: u32 = 16_000;

/// The models dir exactly as `serve` and `models fetch` resolve it.
fn models_dir() -> PathBuf {
    use sofia_phone::config;
    config::load(None, &config::ProcessEnv, &config::CliOverrides::default())
        .expect("built-in profile loads")
        .models_dir
}

/// The CTranslate2 model directory, or a one-line failure saying how to get it.
fn ct2_model_dir() -> PathBuf {
    let dir = models_dir().join(CT2_DIR);
    for file in ["model.bin", "config.json", "vocabulary.txt"] {
        if !dir.join(file).is_file() {
            panic!(
                "Whisper tiny.en model missing ({} not found): run `sofia-phone models fetch`",
                dir.join(file).display()
            );
        }
    }
    dir
}

/// Mono PCM samples and sample rate of a 16-bit PCM WAV file.
fn read_wav(bytes: &[u8]) -> (Vec<f32>, u32) {
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
        // espeak-ng writing to a pipe leaves the data size as 0xFFFFFFFF: clamp it.
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

/// Band-limited resampling with a Hann-windowed sinc (16 zero crossings each side).
fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return input.to_vec();
    }
    const HALF_WIDTH: f64 = 16.0;
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0) * 0.95; // of the input Nyquist, with a little margin
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

/// Speaks `text` with espeak-ng and returns 16 kHz mono samples.
fn speak(text: &str, dir: &Path) -> Vec<f32> {
    let wav = dir.join("speech.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .unwrap_or_else(|e| panic!("cannot run espeak-ng ({e}): apt-get install espeak-ng"));
    assert!(status.success(), "espeak-ng failed: {status}");
    let (samples, rate) = read_wav(&std::fs::read(&wav).expect("read espeak-ng output"));
    // Half a second of silence either side, as a caller's pauses would give.
    let pad = vec![0.0; WHISPER_RATE as usize / 2];
    let speech = resample(&samples, rate, WHISPER_RATE);
    [pad.as_slice(), &speech, &pad].concat()
}

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn whisper_transcribes_speech_with_converted_tiny_en() {
    let ct2_dir = ct2_model_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ggml = tmp.path().join("ggml-tiny.en.bin");

    let started = Instant::now();
    let summary = ct2_to_ggml::convert(&ct2_dir, &ggml).expect("convert tiny.en");
    eprintln!(
        "converted {} -> {} bytes, {} tensors, {} tokens in {:.2?}",
        ct2_dir.display(),
        summary.bytes_written,
        summary.n_tensors,
        summary.n_tokens,
        started.elapsed()
    );
    let hp = summary.hparams;
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_audio_state,
            hp.n_audio_head,
            hp.n_audio_layer
        ),
        (51864, 384, 6, 4)
    );
    assert_eq!((hp.n_audio_ctx, hp.n_text_ctx, hp.n_mels), (1500, 448, 80));
    assert_eq!(
        (hp.n_text_state, hp.n_text_head, hp.n_text_layer),
        (384, 6, 4)
    );
    assert_eq!(summary.n_tokens, 50256);
    assert_eq!(summary.n_tensors, 11 + 15 * 4 + 24 * 4);

    let audio = speak(SENTENCE, tmp.path());
    eprintln!("speech: {:.2} s", audio.len() as f32 / WHISPER_RATE as f32);

    let ctx = WhisperContext::new_with_params(&ggml, WhisperContextParameters::default())
        .expect("whisper.cpp rejected the converted model");
    assert!(!ctx.is_multilingual());
    assert_eq!(ctx.model_n_vocab(), 51864);
    let mut state = ctx.create_state().expect("whisper state");
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_language(Some("en"));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    params.set_n_threads(threads as i32);
    params.set_no_timestamps(true);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_special(false);
    params.set_print_timestamps(false);

    let started = Instant::now();
    state.full(params, &audio).expect("whisper inference");
    let transcript: String = state
        .as_iter()
        .map(|segment| segment.to_str_lossy().expect("segment text").into_owned())
        .collect();
    eprintln!("transcript ({:.2?}): {transcript:?}", started.elapsed());

    let heard = words(&transcript);
    let missing: Vec<String> = words(SENTENCE)
        .into_iter()
        .filter(|w| !heard.contains(w))
        .collect();
    assert!(
        missing.is_empty(),
        "transcript {transcript:?} lacks {missing:?}"
    );
}
