//! Silero VAD through `VadStream`: speech frames are marked as speech, silence and
//! low noise are not.

mod voice_support;

use sofia_phone::voice::{SileroVad, VadStream, VoiceModels};
use voice_support::audio::{self, espeak, models_dir};

const FRAME: usize = 320;

fn decisions(vad: &SileroVad, audio: &[f32]) -> Vec<bool> {
    let mut stream = VadStream::new();
    audio
        .chunks_exact(FRAME)
        .map(|f| stream.push_frame(vad, f).expect("vad"))
        .collect()
}

#[test]
fn vad_marks_speech_and_silence_on_real_audio() {
    let models = VoiceModels::under(&models_dir());
    let vad = SileroVad::load(&models.silero_vad, &models.onnxruntime)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().expect("tempdir");
    let speech = espeak("The quick brown fox jumps over the lazy dog.", dir.path());
    let lead = audio::silence(1.0);
    let tail = audio::noise(1.0, 0.003, 3);
    let clip = [lead.as_slice(), &speech, &tail].concat();
    let d = decisions(&vad, &clip);
    let (a, b) = (lead.len() / FRAME, (lead.len() + speech.len()) / FRAME);
    let share = |r: &[bool]| r.iter().filter(|&&x| x).count() as f32 / r.len().max(1) as f32;
    let (before, during, after) = (share(&d[..a]), share(&d[a..b]), share(&d[b + 10..]));
    eprintln!("speech share: silence {before:.2}, speech {during:.2}, noise {after:.2}");
    assert_eq!(before, 0.0, "silence marked as speech");
    assert!(
        during > 0.7,
        "only {during:.2} of the speech frames marked as speech"
    );
    assert!(after < 0.05, "{after:.2} of the low noise marked as speech");
}
