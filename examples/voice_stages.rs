//! Benchmark of the voice stages on this machine (run by `bench/voice_stages.sh`):
//! median Whisper time per utterance length with the full 30 s window and with
//! `audio_ctx` fitted to the utterance, Piper's real-time factor, time to the first TTS
//! audio of a multi-sentence reply, Silero VAD cost per frame, and the echo check's
//! cost per frame (the barge-in guard).
//!
//!     cargo run --release --example voice_stages -- [repetitions]

#[path = "../tests/voice_support/audio.rs"]
mod audio;

use std::time::{Duration, Instant};

use sofia_phone::voice::whisper::fitted_audio_ctx;
use sofia_phone::voice::{PiperTts, SileroVad, VadStream, VoiceModels, WhisperConfig, WhisperStt};
use sofia_voice::echo::EchoDetector;
use sofia_voice::{SentenceSplitter, Tts};

const PARAGRAPH: &str = "Good morning, I am calling about my reservation for next Friday. \
We are a group of four people and we would like a table near the window if possible. \
One of us is vegetarian, so please let the kitchen know in advance. \
We expect to arrive around seven thirty in the evening. Thank you very much.";

const REPLY: &str = "Of course, I have noted a table for four by the window. \
The kitchen will prepare a vegetarian option. We look forward to seeing you on Friday at half past seven.";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let models = VoiceModels::under(&audio::models_dir());
    models.require_all()?;
    let cfg = WhisperConfig::default();
    println!(
        "threads per transcription: {}; repetitions: {reps}",
        cfg.threads
    );
    let stt = WhisperStt::load(&models.whisper, cfg.clone())?;
    let dir = tempfile::tempdir()?;
    let speech = audio::espeak(PARAGRAPH, dir.path());
    println!("\n== Whisper tiny.en: median time per utterance");
    println!(
        "{:>9} {:>10} {:>12} {:>10} {:>8}  words (fitted)",
        "length", "full 30 s", "audio_ctx", "fitted", "speed-up"
    );
    for secs in [1.0f32, 2.0, 3.0, 5.0, 8.0] {
        let n = ((secs * audio::RATE as f32) as usize).min(speech.len());
        let clip = &speech[..n];
        let ctx = fitted_audio_ctx(clip.len(), cfg.audio_ctx_margin);
        let mut full = Vec::new();
        let mut fit = Vec::new();
        let mut text = String::new();
        stt.transcribe_with_ctx(clip, Some(ctx))
            .map_err(anyhow::Error::msg)?; // warm-up
        for _ in 0..reps {
            let t = Instant::now();
            stt.transcribe_with_ctx(clip, None)
                .map_err(anyhow::Error::msg)?;
            full.push(t.elapsed());
            let t = Instant::now();
            text = stt
                .transcribe_with_ctx(clip, Some(ctx))
                .map_err(anyhow::Error::msg)?
                .0;
            fit.push(t.elapsed());
        }
        let (full, fit) = (median(full), median(fit));
        println!(
            "{:>8.1}s {:>9.0}ms {:>12} {:>8.0}ms {:>7.1}x  {text:?}",
            secs,
            full.as_secs_f64() * 1e3,
            ctx,
            fit.as_secs_f64() * 1e3,
            full.as_secs_f64() / fit.as_secs_f64()
        );
    }

    println!("\n== Piper (Joe, medium)");
    let started = Instant::now();
    let tts = PiperTts::load(
        &models.piper_model,
        &models.piper_config,
        &models.onnxruntime,
    )?;
    println!(
        "voice load: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    tts.synthesize("Warm up.").map_err(anyhow::Error::msg)?;
    let mut rtf = Vec::new();
    for sentence in [
        "Hello! How can I help you today?",
        "Your table for two is booked for Friday evening.",
        "I have noted a table for four by the window, and the kitchen will prepare a vegetarian option.",
    ] {
        let mut times = Vec::new();
        let mut length = Duration::ZERO;
        for _ in 0..reps {
            let t = Instant::now();
            let audio = tts.synthesize(sentence).map_err(anyhow::Error::msg)?;
            times.push(t.elapsed());
            length = audio.duration();
        }
        let took = median(times);
        let factor = took.as_secs_f64() / length.as_secs_f64();
        rtf.push(factor);
        println!(
            "{:>5.2} s of speech in {:>4.0} ms (real-time factor {factor:.3}): {sentence:?}",
            length.as_secs_f64(),
            took.as_secs_f64() * 1e3
        );
    }

    println!(
        "\n== Time to first TTS audio for a {}-character reply",
        REPLY.len()
    );
    let mut first = Vec::new();
    let mut whole = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let mut splitter = SentenceSplitter::new();
        let sentences: Vec<String> = splitter
            .push(REPLY)
            .into_iter()
            .chain(splitter.finish())
            .collect();
        tts.synthesize(&sentences[0]).map_err(anyhow::Error::msg)?;
        first.push(t.elapsed());
        let t = Instant::now();
        tts.synthesize(REPLY).map_err(anyhow::Error::msg)?;
        whole.push(t.elapsed());
    }
    println!(
        "first sentence: {:.0} ms; whole reply in one piece: {:.0} ms",
        median(first).as_secs_f64() * 1e3,
        median(whole).as_secs_f64() * 1e3
    );

    println!("\n== Silero VAD");
    let vad = SileroVad::load(&models.silero_vad, &models.onnxruntime)?;
    let mut stream = VadStream::new();
    let t = Instant::now();
    let frames = speech.chunks_exact(320).count();
    for f in speech.chunks_exact(320) {
        stream.push_frame(&vad, f)?;
    }
    println!(
        "{frames} frames of 20 ms in {:.0} ms ({:.3} ms per frame)",
        t.elapsed().as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3 / frames as f64
    );

    // The echo check runs on every frame the caller sends while the agent speaks, on a
    // core that also runs Whisper: its verdict per 20 ms frame, while the echo's path is
    // known (the caller's line returns the reply 150 ms late at -10 dB) and while it
    // searches every delay (the caller talks over the reply in another voice).
    println!(
        "
== Echo check (barge-in guard)"
    );
    let reply = tts.synthesize(REPLY).map_err(anyhow::Error::msg)?;
    let playout = audio::resample(&reply.samples, reply.sample_rate, audio::RATE);
    let echo: Vec<f32> = (0..playout.len())
        .map(|i| i.checked_sub(150 * 16).map_or(0.0, |j| playout[j] * 0.3))
        .collect();
    for (name, received) in [
        ("echo, path known", &echo),
        ("another voice, searching", &speech),
    ] {
        let mut detector = EchoDetector::new();
        let mut spent = Vec::new();
        for (p, r) in playout.chunks_exact(320).zip(received.chunks_exact(320)) {
            detector.handle_playout(p);
            detector.handle_received(r);
            let t = Instant::now();
            std::hint::black_box(detector.verdict());
            spent.push(t.elapsed());
        }
        let max = spent.iter().max().copied().unwrap_or_default();
        println!(
            "{name:>26}: median {:.1} us, max {:.1} us per 20 ms frame",
            median(spent).as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6
        );
    }
    Ok(())
}
