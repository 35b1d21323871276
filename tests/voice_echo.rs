//! The echo detector on real speech (espeak-ng) through a simulated phone: the agent's
//! playout goes down a G.711 line, the phone returns an attenuated, delayed copy (and
//! maybe its user's voice) up another G.711 line, and the shell reports each frame sent
//! (silence included) up to a frame late. Silero VAD decides which frames are speech, as in a call, and
//! the conversation's barge-in guard (200 ms of speech, reset by 300 ms of silence) is
//! replayed on what is left after the echo check.

mod voice_support;

use std::time::{Duration, Instant};

use sofia_phone::voice::{SileroVad, VadStream, VoiceModels};
use sofia_voice::{EchoDetector, EchoVerdict};
use voice_support::audio::{espeak, models_dir, phone_line, silence, RATE};

const FRAME: usize = 320;
const GUARD_MS: u32 = 200;
const RESET_MS: u32 = 300;

/// What the agent plays: about six seconds of speech.
const AGENT: &str = "Thank you for calling. I can help you plan your trip, book a table, \
                     or take a message for someone in the office. What would you like to do?";
/// What the caller says over it.
const CALLER: &str = "Sorry, wait, I have a question about my booking.";

fn vad() -> SileroVad {
    let models = VoiceModels::under(&models_dir());
    SileroVad::load(&models.silero_vad, &models.onnxruntime).unwrap_or_else(|e| panic!("{e:#}"))
}

/// The phone: what it returns for `playout` heard through a G.711 line, with `own`
/// (its user's voice) added, sent back through G.711.
fn phone(playout: &[f32], delay_ms: usize, gain_db: f32, own: &[f32]) -> Vec<f32> {
    let heard = phone_line(playout);
    let gain = 10f32.powf(gain_db / 20.0);
    let delay = delay_ms * RATE as usize / 1000;
    let mut mic = vec![0.0; heard.len().max(own.len())];
    for (i, m) in mic.iter_mut().enumerate() {
        let echo = i
            .checked_sub(delay)
            .and_then(|j| heard.get(j))
            .map_or(0.0, |s| s * gain);
        *m = echo + own.get(i).copied().unwrap_or(0.0);
    }
    phone_line(&mic)
}

/// Frame by frame: the VAD's verdict and the detector's (`None` where the VAD heard no
/// speech and the shell does not ask), with the playout reported up to a frame late.
struct Run {
    speech: Vec<bool>,
    verdicts: Vec<Option<EchoVerdict>>,
    /// Time spent in `verdict()`, per asked frame.
    cost: Vec<Duration>,
}

fn run(vad: &SileroVad, playout: &[f32], received: &[f32]) -> Run {
    let mut detector = EchoDetector::new();
    let mut stream = VadStream::new();
    let frames = received.len() / FRAME;
    let mut reported = 0;
    let mut out = Run {
        speech: Vec::new(),
        verdicts: Vec::new(),
        cost: Vec::new(),
    };
    let mut lcg = 12345u32;
    for k in 0..frames {
        // The shell learns what was sent at the next turn of the call's loop, before or
        // after the next received frame.
        lcg = lcg.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let lag = (lcg >> 16) as usize % 2;
        while reported + lag <= k {
            let from = reported * FRAME;
            let frame = playout.get(from..from + FRAME).unwrap_or(&[0.0; FRAME]);
            detector.handle_playout(frame);
            reported += 1;
        }
        let frame = &received[k * FRAME..(k + 1) * FRAME];
        detector.handle_received(frame);
        let speech = stream.push_frame(vad, frame).expect("vad");
        out.speech.push(speech);
        out.verdicts.push(speech.then(|| {
            let asked = Instant::now();
            let v = detector.verdict();
            out.cost.push(asked.elapsed());
            v
        }));
    }
    out
}

impl Run {
    /// When the barge-in guard fires (frame index), counting speech frames the playout
    /// does not explain (all of them with `check` off).
    fn barge_in(&self, check: bool) -> Option<usize> {
        let (mut voiced, mut quiet, mut open) = (0, 0, false);
        for (k, (speech, verdict)) in self.speech.iter().zip(&self.verdicts).enumerate() {
            let explained = check && verdict.is_some_and(|v| v.explained_by_playout());
            let caller = *speech && !explained;
            if caller {
                (voiced, quiet, open) = (voiced + 20, 0, true);
            } else if open {
                quiet += 20;
            }
            if voiced >= GUARD_MS {
                return Some(k);
            }
            if quiet >= RESET_MS {
                (voiced, quiet, open) = (0, 0, false);
            }
        }
        None
    }

    /// Share of the speech frames in `frames` that the playout explains.
    fn explained(&self, frames: std::ops::Range<usize>) -> f32 {
        let asked: Vec<_> = self.verdicts
            [frames.start.min(self.verdicts.len())..frames.end.min(self.verdicts.len())]
            .iter()
            .flatten()
            .collect();
        let n = asked.iter().filter(|v| v.explained_by_playout()).count();
        n as f32 / asked.len().max(1) as f32
    }

    fn cost_us(&self) -> (f64, f64) {
        let us: Vec<f64> = self.cost.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        let mean = us.iter().sum::<f64>() / us.len().max(1) as f64;
        (mean, us.iter().copied().fold(0.0, f64::max))
    }
}

#[test]
fn echo_through_g711_at_20_to_400_ms_and_6_to_20_db_does_not_barge_in() {
    let vad = vad();
    let dir = tempfile::tempdir().unwrap();
    let playout = [espeak(AGENT, dir.path()), silence(1.0)].concat();
    let mut fired_without_check = 0;
    for gain_db in [-6.0, -10.0, -20.0] {
        for delay_ms in [20, 120, 250, 400] {
            let received = phone(&playout, delay_ms, gain_db, &[]);
            let r = run(&vad, &playout, &received);
            let speech = r.speech.iter().filter(|s| **s).count();
            let explained = r.explained(0..r.speech.len());
            let (mean, max) = r.cost_us();
            eprintln!(
                "{gain_db} dB, {delay_ms} ms: {speech} speech frames, {:.1}% explained; \
                 verdict {mean:.0} us mean, {max:.0} us max",
                explained * 100.0
            );
            assert!(speech > 50, "the VAD heard too little of the echo to test");
            assert!(
                explained >= 0.97,
                "{gain_db} dB, {delay_ms} ms: only {:.1}% of the echo frames were explained",
                explained * 100.0
            );
            assert_eq!(
                r.barge_in(true),
                None,
                "{gain_db} dB, {delay_ms} ms: the agent's echo barged in"
            );
            fired_without_check += usize::from(r.barge_in(false).is_some());
        }
    }
    // The guard alone does not stop the echo: without the check it barges in.
    assert_eq!(
        fired_without_check, 12,
        "without the check the echo barges in"
    );
}

#[test]
fn the_caller_talking_over_the_echo_still_barges_in() {
    let vad = vad();
    let dir = tempfile::tempdir().unwrap();
    let playout = [espeak(AGENT, dir.path()), silence(1.0)].concat();
    let onset = 2.0;
    let caller = [silence(onset), espeak(CALLER, dir.path())].concat();
    let first = (onset * RATE as f32) as usize / FRAME;
    for (delay_ms, gain_db) in [(120, -10.0), (40, -6.0), (300, -20.0)] {
        let received = phone(&playout, delay_ms, gain_db, &caller);
        let r = run(&vad, &playout, &received);
        let fired = r.barge_in(true);
        let (mean, max) = r.cost_us();
        eprintln!(
            "{gain_db} dB, {delay_ms} ms: barge-in at frame {fired:?} (caller from {first}); \
             {:.1}% of the caller's speech frames explained; verdict {mean:.0} us mean, {max:.0} us max",
            r.explained(first..first + 50) * 100.0
        );
        let fired = fired.unwrap_or_else(|| panic!("{gain_db} dB, {delay_ms} ms: no barge-in"));
        assert!(
            fired >= first,
            "{gain_db} dB, {delay_ms} ms: barged in at frame {fired}, before the caller spoke"
        );
        // 200 ms of speech plus the VAD's onset: within 400 ms of the first word.
        assert!(
            fired <= first + 20,
            "{gain_db} dB, {delay_ms} ms: the caller barged in only at frame {fired} (spoke from {first})"
        );
    }
}

#[test]
fn speech_that_is_not_the_playout_is_not_echo() {
    let vad = vad();
    let dir = tempfile::tempdir().unwrap();
    let playout = [espeak(AGENT, dir.path()), silence(1.0)].concat();
    let caller = [silence(0.5), espeak(CALLER, dir.path())].concat();
    // The phone cancels its echo perfectly: only its user is heard.
    let received = phone(&playout, 0, -200.0, &caller);
    let r = run(&vad, &playout, &received);
    let explained = r.explained(0..r.speech.len());
    eprintln!("independent speech: {:.1}% explained", explained * 100.0);
    assert!(
        explained <= 0.05,
        "{:.1}% of an independent voice was taken for echo",
        explained * 100.0
    );
    assert!(r.barge_in(true).is_some());
}

#[test]
fn silent_playout_never_makes_a_frame_echo() {
    let vad = vad();
    let dir = tempfile::tempdir().unwrap();
    let caller = [silence(0.5), espeak(CALLER, dir.path())].concat();
    let playout = vec![0.0; caller.len()];
    let received = phone(&playout, 120, -10.0, &caller);
    let r = run(&vad, &playout, &received);
    let asked: Vec<_> = r.verdicts.iter().flatten().collect();
    assert!(asked.len() > 50, "the VAD heard too little to test");
    assert!(
        asked.iter().all(|v| **v == EchoVerdict::NoPlayout),
        "{asked:?}"
    );
}
