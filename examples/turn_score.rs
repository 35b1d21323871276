//! What Smart Turn says about finished sentences and about sentences stopped at a
//! mid-sentence pause, for each way the bench can make a caller's voice (run by
//! `bench/turn_model.sh`). Each clip goes through a G.711 phone line and ends 200 ms
//! after its last voiced sample, which is what the conversation holds when it asks the
//! model (`TURN_TRAILING_MS=120` asks earlier).
//!
//! Voices: `espeak` (espeak-ng, each half said as an utterance of its own: a final fall
//! before the pause), `espeak-break` (espeak-ng, the whole sentence with an SSML break
//! at the pause, as a person who pauses mid-thought keeps the sentence's tune), `piper`
//! (Piper's voice, each half on its own), `piper...` and `piper,` (Piper saying the
//! whole sentence with "..." or "," at the pause, cut where it paused). Also: how long
//! after the last voiced sample Silero VAD says "silence".
//!
//!     bench/turn_model.sh   (cargo run --release --example turn_score)

#[path = "../tests/voice_support/audio.rs"]
mod audio;

use std::path::Path;
use std::process::Command;

use sofia_phone::voice::{PiperTts, SileroVad, SmartTurn, VadStream, VoiceModels};
use sofia_voice::Tts;

use audio::{phone_line, read_wav, resample, silence, RATE};

/// Sentences the bench answers (they must score complete).
const FINISHED: &[&str] = &[
    "I would like to book a table for two on Friday.",
    "My favourite colour is blue.",
    "I am planning a trip to Paris next month.",
    "The weather here has been sunny all week.",
    "Can you remind me to call my sister tomorrow?",
    "What time do you open tomorrow?",
];

/// The bench's paused sentences: the part before the pause must score incomplete.
const PAUSED: &[&str] = &[
    "I would like to|order a pizza.",
    "Can you tell me|when the shop opens?",
    "My favourite colour is|dark blue.",
    "I am planning a trip to|Paris next month.",
    "Please remind me to|call my sister tomorrow.",
    "The weather here has been|sunny all week.",
    "I need to change|my delivery address.",
    "Could you book a table for|four people on Friday?",
    "I was wondering if|you have any rooms left.",
    "My account number is|one two three four.",
    "I think the problem is|with my internet connection.",
    "We are looking for|a flat near the station.",
    "Can I speak to|someone about my bill?",
    "The package arrived but|the box was damaged.",
    "I would rather have|the vegetarian option.",
    "Is it possible to|pay by card?",
    "My daughter starts school|next September.",
    "I have been waiting for|almost an hour.",
    "Do you know if|the museum is open on Sunday?",
    "I wanted to ask about|the price of a ticket.",
];

fn espeak(args: &[&str], text: &str, dir: &Path) -> Vec<f32> {
    let wav = dir.join("espeak.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160"])
        .args(args)
        .arg("-w")
        .arg(&wav)
        .arg(text)
        .status()
        .expect("espeak-ng runs (apt-get install espeak-ng)");
    assert!(status.success(), "espeak-ng failed");
    let (samples, rate) = read_wav(&std::fs::read(&wav).expect("espeak-ng output"));
    resample(&samples, rate, RATE)
}

/// espeak-ng's SSML rendering with a break where `|` is, cut at the break: the speech
/// before it.
fn espeak_before_break(sentence: &str, dir: &Path) -> Vec<f32> {
    let (first, second) = sentence
        .split_once('|')
        .expect("a | in each paused sentence");
    let ssml = format!("<speak>{first} <break time=\"700ms\"/> {second}</speak>");
    before_longest_gap(&espeak(&["-m"], &ssml, dir))
}

/// The speech before the longest run of near-silence inside `whole` (its pause).
fn before_longest_gap(whole: &[f32]) -> Vec<f32> {
    let frame = (RATE / 100) as usize;
    let loud: Vec<bool> = whole
        .chunks(frame)
        .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32 > 1e-6)
        .collect();
    let (mut best, mut run, mut best_end) = (0, 0, 0);
    let first_voiced = loud.iter().position(|&l| l).unwrap_or(0);
    for (i, &l) in loud.iter().enumerate().skip(first_voiced) {
        if l {
            run = 0;
        } else {
            run += 1;
            if run > best {
                best = run;
                best_end = i + 1;
            }
        }
    }
    let pause_start = (best_end - best) * frame;
    whole[..pause_start].to_vec()
}

/// Piper saying the whole sentence with "..." at the pause, cut at its pause.
fn piper_before_pause(tts: &PiperTts, sentence: &str, mark: &str) -> Vec<f32> {
    let (first, second) = sentence
        .split_once('|')
        .expect("a | in each paused sentence");
    before_longest_gap(&piper(tts, &format!("{first}{mark} {second}")))
}

fn piper(tts: &PiperTts, text: &str) -> Vec<f32> {
    let audio = tts.synthesize(text).expect("piper");
    resample(&audio.samples, audio.sample_rate, RATE)
}

/// Silence after the last voiced sample when the model is asked: the conversation's
/// check silence (200 ms by default; `TURN_TRAILING_MS` tries another).
fn trailing() -> f32 {
    match std::env::var("TURN_TRAILING_MS") {
        Err(_) => 0.2,
        Ok(v) => v
            .parse::<f32>()
            .map(|ms| ms / 1000.0)
            .unwrap_or_else(|_| panic!("TURN_TRAILING_MS={v}: a number of milliseconds, e.g. 120")),
    }
}

/// Index of the last sample above -45 dBFS (the conversation's quiet level), if any.
fn last_voiced(samples: &[f32]) -> Option<usize> {
    let floor = 10f32.powf(-45.0 / 20.0);
    samples.iter().rposition(|x| x.abs() > floor)
}

/// The clip ends `trailing` seconds after its last voiced sample, as the
/// conversation's does when it asks (it counts silence from the caller's last sound).
fn score(model: &SmartTurn, mut speech: Vec<f32>, trailing: f32) -> f32 {
    speech.truncate(last_voiced(&speech).map_or(0, |i| i + 1));
    let clip = [silence(0.3), speech, silence(trailing)].concat();
    model.predict(&phone_line(&clip)).expect("predict")
}

fn summary(name: &str, finished: &[f32], halves: &[f32]) {
    let complete = finished.iter().filter(|&&p| p > 0.5).count();
    let cut = halves.iter().filter(|&&p| p > 0.5).count();
    println!(
        "{name:>13}: finished sentences scored complete {complete}/{}; halves before the pause scored complete {cut}/{}",
        finished.len(),
        halves.len()
    );
}

fn main() -> anyhow::Result<()> {
    let models = VoiceModels::under(&audio::models_dir());
    models.require_all()?;
    let model = SmartTurn::load(&models.smart_turn, &models.onnxruntime)?;
    let tts = PiperTts::load(
        &models.piper_model,
        &models.piper_config,
        &models.onnxruntime,
    )?;
    let dir = tempfile::tempdir()?;
    let vad = SileroVad::load(&models.silero_vad, &models.onnxruntime)?;
    let trailing = trailing();

    // How long after the last voiced sample (-45 dB) Silero VAD says "silence", in the
    // 20 ms frames the agent feeds it: that much of every pause is heard as speech.
    let mut lags = Vec::new();
    for s in FINISHED {
        let speech = phone_line(&piper(&tts, s));
        let last_voiced = last_voiced(&speech).unwrap_or(0);
        let clip = [silence(0.3), speech, silence(0.6)].concat();
        let last_voiced = last_voiced + silence(0.3).len();
        let mut stream = VadStream::new();
        let mut off_at = None;
        for (i, frame) in clip.chunks(320).enumerate() {
            let speaking = stream.push_frame(&vad, frame)?;
            let end = (i + 1) * 320;
            if end > last_voiced && !speaking && off_at.is_none() {
                off_at = Some(end);
            } else if speaking {
                off_at = None;
            }
        }
        if let Some(off) = off_at {
            lags.push((off.saturating_sub(last_voiced)) as f32 / RATE as f32 * 1000.0);
        }
    }
    lags.sort_by(f32::total_cmp);
    println!(
        "VAD silence starts after the last voiced sample: median {:.0} ms (of {:?} ms)",
        lags.get(lags.len() / 2).copied().unwrap_or(f32::NAN),
        lags.iter().map(|l| l.round() as i32).collect::<Vec<_>>()
    );

    println!(
        "Smart Turn probability of a complete turn (> 0.5 = complete), after a G.711 line, \
         asked {:.0} ms after the last voiced sample:",
        trailing * 1000.0
    );
    println!("{:<52} {:>7} {:>7}", "finished sentence", "espeak", "piper");
    let (mut fin_espeak, mut fin_piper) = (Vec::new(), Vec::new());
    for s in FINISHED {
        let e = score(&model, espeak(&[], s, dir.path()), trailing);
        let p = score(&model, piper(&tts, s), trailing);
        println!("{s:<52} {e:>7.3} {p:>7.3}");
        fin_espeak.push(e);
        fin_piper.push(p);
    }
    println!();
    println!(
        "{:<30} {:>7} {:>13} {:>7} {:>9} {:>9}",
        "before the pause", "espeak", "espeak-break", "piper", "piper...", "piper,"
    );
    let (mut cut_espeak, mut cut_break, mut cut_piper) = (Vec::new(), Vec::new(), Vec::new());
    for s in PAUSED {
        let first = s.split_once('|').expect("|").0;
        let e = score(&model, espeak(&[], first, dir.path()), trailing);
        let b = score(&model, espeak_before_break(s, dir.path()), trailing);
        let p = score(&model, piper(&tts, first), trailing);
        let pd = score(&model, piper_before_pause(&tts, s, "..."), trailing);
        let pc = score(&model, piper_before_pause(&tts, s, ","), trailing);
        println!("{first:<30} {e:>7.3} {b:>13.3} {p:>7.3} {pd:>9.3} {pc:>9.3}");
        cut_espeak.push(e);
        cut_break.push(b);
        cut_piper.push(p);
    }
    println!();
    summary("espeak", &fin_espeak, &cut_espeak);
    summary("espeak-break", &fin_espeak, &cut_break);
    summary("piper", &fin_piper, &cut_piper);
    Ok(())
}
