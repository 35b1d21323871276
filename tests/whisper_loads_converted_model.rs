//! End to end check of the Whisper converter: convert the real tiny.en CTranslate2 model
//! with `ct2_to_ggml`, load the result with whisper-rs (whisper.cpp), and transcribe a
//! sentence spoken by espeak-ng.
//!
//! Needs the model fetched by `sofia-phone models fetch` (in the models dir of the default
//! profile, which keeps the CTranslate2 source beside the GGML file) and the `espeak-ng`
//! program. Missing either
//! is a failure, not a skip: this is the test that proves the speech stack works.

mod voice_support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use sofia_phone::models::ct2_to_ggml;
use voice_support::audio::{espeak, models_dir, silence, words, RATE as WHISPER_RATE};
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

const CT2_DIR: &str = "whisper-tiny.en-ct2";
const SENTENCE: &str =
    "Hello, thank you for calling. Please leave your name and number after the tone.";

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

/// `text` spoken by espeak-ng at 16 kHz, with half a second of silence either side, as
/// a caller's pauses would give.
fn speak(text: &str, dir: &Path) -> Vec<f32> {
    [silence(0.5), espeak(text, dir), silence(0.5)].concat()
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
