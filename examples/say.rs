//! Piper says each text into a wav file at 8 kHz, 16-bit mono, as a phone would send it
//! (bench/turn.sh's caller voice when CALLER=piper). One voice load for every file.
//!
//!     cargo run --release --example say -- OUT.wav "text" [OUT2.wav "text2" ...]

#[path = "../tests/voice_support/audio.rs"]
mod audio;

use std::path::Path;

use anyhow::{bail, Context};
use sofia_phone::voice::{PiperTts, VoiceModels};
use sofia_voice::Tts;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.len() % 2 != 0 {
        bail!("usage: say OUT.wav \"text\" [OUT2.wav \"text2\" ...]");
    }
    let models = VoiceModels::under(&audio::models_dir());
    let tts = PiperTts::load(
        &models.piper_model,
        &models.piper_config,
        &models.onnxruntime,
    )
    .context("loading the Piper voice (run `sofia-phone models fetch`)")?;
    for pair in args.chunks(2) {
        let speech = tts
            .synthesize(&pair[1])
            .with_context(|| format!("synthesizing {:?}", pair[1]))?;
        let narrow = audio::resample(&speech.samples, speech.sample_rate, 8_000);
        audio::write_wav(Path::new(&pair[0]), 8_000, &narrow);
    }
    Ok(())
}
