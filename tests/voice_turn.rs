//! Smart Turn v3.2 with the real model: the Rust log-mel features match the reference
//! feature code shipped with the model (`_whisper_features.py`, run with numpy) on real
//! speech, and the model tells a finished sentence from one that stops mid-way.

mod voice_support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use sofia_phone::voice::turn::{LogMel, N_FRAMES, N_MELS};
use sofia_phone::voice::{SmartTurn, VoiceModels};
use voice_support::audio::{espeak, models_dir, phone_line, silence};

/// Largest difference allowed between a Rust and a reference feature value. The
/// features are normalised log-mel values in about [-1, 1.5] (0.25 per decade of power);
/// 1e-3 is a 0.4 % power difference in one band of one frame, far below what changes a
/// verdict, and far above f32/f64 rounding (the two differ by about 1e-6).
const TOLERANCE: f32 = 1e-3;

/// A Python with numpy: the one on PATH, else the system's (Debian's python3-numpy).
fn python_with_numpy() -> String {
    for python in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(python)
            .args(["-c", "import numpy"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python.to_string();
        }
    }
    panic!("no python3 with numpy: apt-get install python3-numpy (scripts/setup.sh test)");
}

/// The reference features of `audio`, as the reference caller prepares it (its last
/// 8 s, zero-padded at the front), from `_whisper_features.py` in the models dir.
fn reference_features(audio: &[f32], dir: &Path) -> Vec<f32> {
    let reference = models_dir().join("smart-turn");
    assert!(
        reference.join("_whisper_features.py").exists(),
        "{}/_whisper_features.py is missing: run `sofia-phone models fetch`",
        reference.display()
    );
    let input = dir.join("audio.f32");
    let output = dir.join("features.f32");
    let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&input, bytes).expect("write audio");
    let script = r#"
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from _whisper_features import compute_whisper_log_mel_features
audio = np.fromfile(sys.argv[2], dtype="<f4")
n = 8 * 16000
audio = audio[-n:] if audio.size > n else np.pad(audio, (n - audio.size, 0))
features = compute_whisper_log_mel_features(audio, do_normalize=True)
assert features.shape == (80, 800), features.shape
features.astype("<f4").tofile(sys.argv[3])
"#;
    let out = Command::new(python_with_numpy())
        .arg("-c")
        .arg(script)
        .arg(&reference)
        .arg(&input)
        .arg(&output)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reference features failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output)
        .expect("read features")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn compare(what: &str, audio: &[f32], dir: &Path) {
    let features = LogMel::new();
    let started = Instant::now();
    let ours = features.features(audio);
    let took = started.elapsed();
    let reference = reference_features(audio, dir);
    assert_eq!(ours.len(), N_MELS * N_FRAMES);
    assert_eq!(reference.len(), ours.len());
    let (worst, at) = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0f32, 0),
            |(w, i), (j, d)| if d > w { (d, j) } else { (w, i) },
        );
    let mean = ours
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / ours.len() as f32;
    eprintln!(
        "{what}: {} s of audio, features in {took:.1?}; max |diff| {worst:.2e} (band {}, frame {}), mean {mean:.2e}",
        audio.len() as f32 / 16_000.0,
        at / N_FRAMES,
        at % N_FRAMES
    );
    assert!(
        worst <= TOLERANCE,
        "{what}: feature {at} differs by {worst} (ours {}, reference {})",
        ours[at],
        reference[at]
    );
    // Not a constant: real speech spreads over the range.
    let (lo, hi) = ours
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi - lo > 1.0, "{what}: features span only {lo}..{hi}");
}

#[test]
fn log_mel_features_match_the_reference_on_real_speech() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Shorter than the window: zero-padded at the front.
    let short = [
        espeak("I would like to order a large pizza, please.", dir.path()),
        silence(0.2),
    ]
    .concat();
    compare("short", &short, dir.path());
    // Longer than the window: only the last 8 s count.
    let long = [
        espeak(
            "Good morning. I am calling about the order I placed last week, the one with the blue chairs.",
            dir.path(),
        ),
        silence(0.5),
        espeak(
            "It has not arrived yet and I would like to know when it will be delivered.",
            dir.path(),
        ),
    ]
    .concat();
    assert!(long.len() > 8 * 16_000, "the long clip must exceed 8 s");
    compare("long", &long, dir.path());
}

fn load() -> SmartTurn {
    let models = VoiceModels::under(&models_dir());
    let started = Instant::now();
    let model = SmartTurn::load(&models.smart_turn, &models.onnxruntime)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("Smart Turn loaded in {:.1?}", started.elapsed());
    model
}

/// espeak-ng ends most phrases with a final fall, and Smart Turn listens to prosody as
/// much as to words, so many sentence halves sound finished to it; these two are clear
/// cases either way, wideband and after a G.711 phone line.
#[test]
fn smart_turn_tells_a_finished_sentence_from_one_stopped_mid_way() {
    let model = load();
    let dir = tempfile::tempdir().expect("tempdir");
    // What the conversation has when it asks: pre-roll, speech, 200 ms of silence.
    let utterance = |text: &str| [silence(0.3), espeak(text, dir.path()), silence(0.2)].concat();
    let finished = utterance("What time do you open tomorrow?");
    let unfinished = utterance("I need to change my");
    let time = |audio: &[f32]| {
        let started = Instant::now();
        let p = model.predict(audio).expect("predict");
        (p, started.elapsed())
    };
    let _ = time(&finished); // the first run sets up the session's buffers
    for (line, finished, unfinished) in [
        ("wideband", finished.clone(), unfinished.clone()),
        ("phone line", phone_line(&finished), phone_line(&unfinished)),
    ] {
        let (complete, took) = time(&finished);
        let (incomplete, took2) = time(&unfinished);
        eprintln!(
            "{line}: finished sentence p={complete:.3} ({took:.1?}); stopped mid-way p={incomplete:.3} ({took2:.1?})"
        );
        assert!(
            complete > 0.5,
            "{line}: a finished sentence scored {complete}"
        );
        assert!(
            incomplete < 0.5,
            "{line}: a sentence stopped mid-way scored {incomplete}"
        );
    }
}

#[test]
fn smart_turn_answers_silence_and_odd_lengths_without_panicking() {
    let model = load();
    for audio in [Vec::new(), silence(0.01), silence(12.0)] {
        let p = model.predict(&audio).expect("predict");
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
}

#[test]
fn a_missing_smart_turn_file_is_reported_with_the_fetch_hint() {
    let models = VoiceModels::under(&models_dir());
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("smart-turn/smart-turn-v3.2-cpu.onnx");
    let err = match SmartTurn::load(&missing, &models.onnxruntime) {
        Ok(_) => panic!("a missing model loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("smart-turn-v3.2-cpu.onnx") && err.contains("sofia-phone models fetch"),
        "{err}"
    );
}
