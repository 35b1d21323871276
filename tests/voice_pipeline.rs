//! The whole voice pipeline without SIP: espeak-ng speech in 20 ms frames -> Silero VAD
//! -> the conversation controller -> Whisper -> built-in responder -> Piper, with
//! memory in LanceDB; then a second call from the same caller is greeted with what was
//! said in the first. Virtual time for the controller, real models for every stage.

mod voice_support;

use std::time::{Duration, Instant};

use sofia_phone::memory::service::{MemoryConfig, MemoryService};
use sofia_phone::voice::{PiperTts, SileroVad, VadStream, VoiceModels, WhisperConfig, WhisperStt};
use sofia_voice::{Action, Config, Memory, SpeechStats, Stt};
use voice_support::audio::{self, espeak, missing_words, models_dir, resample, RATE};
use voice_support::{Harness, ScriptedLlm, FRAME_SAMPLES};

const SAID: &str = "I would like to book a table for two on Friday.";

fn synthesized(h: &Harness) -> Vec<String> {
    h.log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Synthesize { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn caller_is_heard_answered_and_remembered_on_the_next_call() {
    let models = VoiceModels::under(&models_dir());
    models.require_all().unwrap_or_else(|e| panic!("{e}"));
    let vad = SileroVad::load(&models.silero_vad, &models.onnxruntime).expect("vad");
    let stt = WhisperStt::load(&models.whisper, WhisperConfig::default()).expect("whisper");
    let tts = PiperTts::load(
        &models.piper_model,
        &models.piper_config,
        &models.onnxruntime,
    )
    .expect("piper");
    let llm = ScriptedLlm::default(); // unused: no endpoint configured
    let data = tempfile::tempdir().expect("tempdir");
    let open = || {
        MemoryService::open(
            &data.path().join("memory"),
            &models.minilm_dir,
            MemoryConfig::default(),
        )
        .expect("memory")
    };
    let memory = open();

    // First call.
    let dir = tempfile::tempdir().expect("tempdir");
    let caller_audio = [
        audio::silence(2.5),
        espeak(SAID, dir.path()),
        audio::silence(1.0),
    ]
    .concat();
    let started = Instant::now();
    {
        let mut h = Harness::new(
            Config::default(),
            Instant::now(),
            "1001",
            "call-1",
            (&stt, &llm, &tts, &memory),
        );
        let mut stream = VadStream::new();
        for frame in caller_audio.chunks_exact(FRAME_SAMPLES) {
            let speech = stream.push_frame(&vad, frame).expect("vad");
            h.frame_audio(frame, speech);
        }
        h.until_listening();
        let said = synthesized(&h).join(" ");
        eprintln!(
            "agent said: {said:?} ({:.2?} wall clock)",
            started.elapsed()
        );
        assert!(
            said.contains("table for two"),
            "the reply does not restate the caller: {said:?}"
        );

        // The reply audio itself says those words.
        let reply_audio: Vec<f32> = h
            .log
            .iter()
            .filter_map(|(_, a)| match a {
                Action::Play { audio, .. } => {
                    Some(resample(&audio.samples, audio.sample_rate, RATE))
                }
                _ => None,
            })
            .flatten()
            .collect();
        let total = Duration::from_secs_f64(reply_audio.len() as f64 / f64::from(RATE));
        let heard = stt
            .transcribe(
                &reply_audio,
                SpeechStats {
                    voiced: total,
                    total,
                },
            )
            .expect("transcribe reply");
        eprintln!("the reply, heard back: {:?}", heard.text);
        assert!(
            missing_words("table for two", &heard.text).is_empty(),
            "{:?}",
            heard.text
        );
    }

    // The call ends; the process restarts: reopen the memory, call again.
    memory.close_call("1001", "call-1").expect("close");
    memory.flush();
    drop(memory);
    let memory = open();
    let mut h = Harness::new(
        Config::default(),
        Instant::now(),
        "1001",
        "call-2",
        (&stt, &llm, &tts, &memory),
    );
    h.until_listening();
    let greeting = synthesized(&h).join(" ");
    eprintln!("second call greeting: {greeting:?}");
    assert!(greeting.starts_with("Welcome back!"), "{greeting:?}");
    assert!(greeting.contains("table for two"), "{greeting:?}");
}
