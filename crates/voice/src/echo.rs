//! Echo detection for barge-in: is what the caller's phone sends explained by what the
//! agent has just played to it?
//!
//! A speakerphone, a cheap headset or a PSTN hybrid returns an attenuated, delayed copy
//! of what it hears. The voice activity detector calls that copy speech, and without
//! this check the agent would interrupt itself on its own voice. [`EchoDetector`] is fed
//! the playout (what was sent to the phone) and every received frame, both at 16 kHz,
//! and judges each received frame: explained by the playout of the last ~600 ms at one
//! delay and gain (echo), or not (the caller, possibly talking over the echo).
//!
//! How: both signals are low-passed and decimated to 4 kHz and 1 kHz (echo that went
//! through a narrowband codec carries nothing above 4 kHz, and speech keeps its shape
//! below 2 kHz). A frame is echo when the normalized cross-correlation of the last 60 ms
//! with the playout at some delay reaches [`ECHO_CORRELATION`]: one delayed, scaled copy
//! of the playout accounts for nearly all its energy, whatever the gain (echo return
//! loss) and through G.711's quantization. Caller speech over the echo adds energy the
//! playout does not explain and pulls the correlation down, so double-talk is "not only
//! echo". Silent playout never makes a frame echo.
//!
//! Cost and chance: the delay is searched coarsely at 1 kHz and refined at 4 kHz. The
//! delay of the last echo frame is tried first (±2 ms), then the neighbourhood (±120 ms)
//! of the call's echo path (a delay three echo frames in a row agreed on), and only then
//! every delay. Over every delay an unrelated voice sometimes resembles some stretch of
//! the playout, so a match found there counts only when the next frame matches at the
//! same delay too, and once the call has a path, it must be closer
//! ([`NEW_PATH_CORRELATION`]).
//!
//! Must not: read a clock or keep more than the search window of audio. Pure sample
//! arithmetic; the shell decides what to do with the verdict.

/// Rate of the audio fed in (the conversation's rate).
const INPUT_RATE: usize = 16_000;
/// Decimation per stage: 16 kHz -> 4 kHz -> 1 kHz.
const FACTOR: usize = 4;
/// Longest delay searched, in ms: an echo path up to 500 ms, plus the receiver's jitter
/// buffer, which delays what is received on top of the round trip.
const MAX_DELAY_MS: usize = 640;
/// The shell reports every frame it sends, silence included, so the two timelines
/// advance together. Should the playout trail by more than this (sending stopped: the
/// call is on hold), it is padded with silence to keep the delays meaningful.
const SLACK_MS: usize = 200;
/// How far the playout timeline may lead the received one when the first received
/// frame arrives, in ms: what came before it is taken as silence, and a delay is
/// measured from there, underestimated by at most this much (less than any round trip
/// through a jitter buffer).
const LEAD_MS: usize = 20;
/// Coarse search window at 1 kHz: long enough that an unrelated signal rarely looks like
/// the playout at some delay.
const COARSE_WINDOW: usize = 128;
/// Decision window at 4 kHz (60 ms: the newest frame and the two before it).
const FINE_WINDOW: usize = 240;
/// Refinement around a coarse delay, in 4 kHz samples (a coarse step is 4 of them).
const REFINE: usize = 6;
/// Tracking around the last delay, in 4 kHz samples (±2 ms).
const TRACK: usize = 8;
/// How far from a known echo path (ms) the delay is searched at the usual bar: the
/// phone's and the shell's jitter buffers may grow or shrink the round trip by a few
/// frames between one talkspurt and the next.
const WANDER_MS: usize = 120;
/// Echo frames in a row at one delay that make it the call's echo path.
const CONFIRM: u32 = 3;
/// Normalized cross-correlation from which a frame is the playout's echo. A scaled,
/// delayed copy through G.711 scores above 0.95; caller speech as loud as the echo brings
/// it to about 0.7 (1/sqrt(2)).
pub const ECHO_CORRELATION: f32 = 0.8;
/// The same, for a delay found away from the known echo path: the echo of a clean path
/// scores above 0.9, an unrelated voice that happens to resemble the playout rarely does.
pub const NEW_PATH_CORRELATION: f32 = 0.9;
/// Mean square below which the playout counts as silent (-50 dBFS RMS).
const PLAYOUT_FLOOR: f32 = 1e-5;
/// Mean square below which a received window holds nothing that could be speech (-55
/// dBFS RMS): with the agent talking, such a frame is its faint echo or line noise.
const QUIET_FLOOR: f32 = 3.2e-6;

/// What [`EchoDetector::handle_received`] made of a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EchoVerdict {
    /// Nothing was played in the search window: the frame is the caller's.
    NoPlayout,
    /// The frame is near silence while the agent talks: not speech, whatever it is.
    Quiet,
    /// The frame is the playout's echo.
    Echo {
        /// The delay found, in ms, measured between the playout as the shell reported
        /// it and the received audio (the round trip plus the shell's reporting lag).
        delay_ms: f32,
        /// Normalized cross-correlation at that delay.
        correlation: f32,
    },
    /// Something the playout does not explain: the caller (alone or over the echo).
    NotEcho {
        /// The best correlation found.
        correlation: f32,
    },
}

impl EchoVerdict {
    /// The playout explains the frame: it must not count as caller speech.
    pub fn explained_by_playout(&self) -> bool {
        matches!(self, EchoVerdict::Echo { .. } | EchoVerdict::Quiet)
    }
}

/// A streaming low-pass FIR that keeps every `FACTOR`th output.
#[derive(Debug, Clone)]
struct Decimator {
    history: Vec<f32>,
    phase: usize,
}

/// Windowed-sinc low pass (Blackman, 31 taps) at 0.1125 of the input rate: 1.8 kHz at
/// 16 kHz and 450 Hz at 4 kHz, below the new Nyquist of each stage.
fn lowpass_taps() -> [f32; 31] {
    let mut taps = [0f32; 31];
    let cutoff = 0.1125f64;
    let mid = (taps.len() - 1) as f64 / 2.0;
    let n = (taps.len() - 1) as f64;
    for (i, tap) in taps.iter_mut().enumerate() {
        let x = i as f64 - mid;
        let sinc = if x == 0.0 {
            2.0 * cutoff
        } else {
            (2.0 * std::f64::consts::PI * cutoff * x).sin() / (std::f64::consts::PI * x)
        };
        let w = 0.42 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n).cos()
            + 0.08 * (4.0 * std::f64::consts::PI * i as f64 / n).cos();
        *tap = (sinc * w) as f32;
    }
    let sum: f32 = taps.iter().sum();
    taps.iter_mut().for_each(|t| *t /= sum);
    taps
}

impl Decimator {
    fn new(taps: usize) -> Self {
        Self {
            history: vec![0.0; taps - 1],
            phase: 0,
        }
    }

    fn process(&mut self, taps: &[f32], input: &[f32], out: &mut Vec<f32>) {
        let keep = taps.len() - 1;
        self.history.extend_from_slice(input);
        let mut end = keep + FACTOR - self.phase;
        while end <= self.history.len() {
            out.push(dot(taps, &self.history[end - taps.len()..end]));
            end += FACTOR;
        }
        self.phase = (self.phase + input.len()) % FACTOR;
        let excess = self.history.len() - keep;
        self.history.drain(..excess);
    }
}

/// Index of a call's first sample in every [`Window`] (silence before it).
const ORIGIN: u64 = 1 << 32;

/// The latest samples of a signal with their position in it: contiguous for dot
/// products, trimmed in amortized O(1).
#[derive(Debug, Clone)]
struct Window {
    samples: Vec<f32>,
    /// Samples ever pushed (the index one past the newest).
    end: u64,
    keep: usize,
}

impl Window {
    /// Starts full of silence, as if the call had been silent for `keep` samples: a
    /// signal index is then the same in every window of a rate, and the first frames of
    /// a call can be searched at every delay.
    fn new(keep: usize) -> Self {
        let mut samples = Vec::with_capacity(2 * keep);
        samples.resize(keep, 0.0);
        Self {
            samples,
            end: ORIGIN,
            keep,
        }
    }

    fn push(&mut self, new: &[f32]) {
        self.samples.extend_from_slice(new);
        self.end += new.len() as u64;
        if self.samples.len() >= 2 * self.keep {
            let excess = self.samples.len() - self.keep;
            self.samples.drain(..excess);
        }
    }

    /// The newest `len` samples (fewer at the start of the call).
    fn latest(&self, len: usize) -> &[f32] {
        &self.samples[self.samples.len().saturating_sub(len)..]
    }
}

/// One signal (the playout or the received audio) at 4 kHz and 1 kHz.
#[derive(Debug, Clone)]
struct Signal {
    to_4k: Decimator,
    to_1k: Decimator,
    /// 4 kHz: tracking, refinement and the verdict.
    fine: Window,
    /// 1 kHz: the coarse delay search.
    coarse: Window,
}

impl Signal {
    /// Keeping the search range plus a window of the playout, a window of the rest.
    fn new(taps: usize, delays: bool) -> Self {
        let (fine, coarse) = if delays {
            (
                MAX_DELAY_MS * 4 + FINE_WINDOW + 2 * REFINE,
                MAX_DELAY_MS + COARSE_WINDOW + 2 * REFINE,
            )
        } else {
            (FINE_WINDOW, COARSE_WINDOW)
        };
        Self {
            to_4k: Decimator::new(taps),
            to_1k: Decimator::new(taps),
            fine: Window::new(fine),
            coarse: Window::new(coarse),
        }
    }

    fn push(&mut self, taps: &[f32], samples: &[f32]) {
        let mut at_4k = Vec::with_capacity(samples.len() / FACTOR + 1);
        self.to_4k.process(taps, samples, &mut at_4k);
        self.fine.push(&at_4k);
        let mut at_1k = Vec::with_capacity(at_4k.len() / FACTOR + 1);
        self.to_1k.process(taps, &at_4k, &mut at_1k);
        self.coarse.push(&at_1k);
    }
}

/// Judges received frames against the recent playout. One per call.
#[derive(Debug, Clone)]
pub struct EchoDetector {
    taps: [f32; 31],
    playout: Signal,
    received: Signal,
    /// 16 kHz samples of playout and of received audio fed so far; the two timelines
    /// are kept within [`SLACK_MS`] of each other by padding the playout with silence.
    playout_in: u64,
    received_in: u64,
    /// The delay (4 kHz samples) that explained the last frame, if it was echo.
    last: Option<u64>,
    /// Echo frames in a row at about that delay.
    run: u32,
    /// The call's echo path: a delay confirmed by [`CONFIRM`] echo frames in a row.
    path: Option<u64>,
}

impl Default for EchoDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoDetector {
    pub fn new() -> Self {
        let taps = lowpass_taps();
        Self {
            playout: Signal::new(taps.len(), true),
            received: Signal::new(taps.len(), false),
            taps,
            playout_in: 0,
            received_in: 0,
            last: None,
            run: 0,
            path: None,
        }
    }

    /// Audio (16 kHz) that has just been sent to the phone, in order.
    pub fn handle_playout(&mut self, samples: &[f32]) {
        self.playout_in += samples.len() as u64;
        self.push_playout(samples);
    }

    fn push_playout(&mut self, samples: &[f32]) {
        self.playout.push(&self.taps, samples);
    }

    /// A received frame (16 kHz, normally 20 ms). Every frame must be fed, in order,
    /// for the timelines to stay aligned; [`EchoDetector::verdict`] judges the newest.
    pub fn handle_received(&mut self, frame: &[f32]) {
        if self.received_in == 0 {
            // Received audio starts late: the jitter buffer fills before its first
            // frame. Until then the phone was heard as silence. Only here: later, the
            // two streams run at the same pace, and padding either on a scheduling
            // hiccup would shift the delay for good.
            let lead = (LEAD_MS * INPUT_RATE / 1000) as u64;
            let missing = self.playout_in.saturating_sub(lead + frame.len() as u64);
            self.push_received(&vec![0.0; missing as usize]);
        }
        self.push_received(frame);
        let slack = (SLACK_MS * INPUT_RATE / 1000) as u64;
        if self.playout_in + slack < self.received_in {
            // Nothing reported sent for a while (sending stopped): that was silence.
            let missing = (self.received_in - slack - self.playout_in) as usize;
            self.playout_in += missing as u64;
            self.push_playout(&vec![0.0; missing]);
        }
    }

    fn push_received(&mut self, samples: &[f32]) {
        self.received_in += samples.len() as u64;
        self.received.push(&self.taps, samples);
    }

    /// Whether the playout explains the newest received frame. Cheap when nothing was
    /// played (no search at all) and while the echo path's delay holds; a search over
    /// every delay costs about a hundred thousand multiply-adds. The shell asks only
    /// about frames the voice activity detector calls speech.
    pub fn verdict(&mut self) -> EchoVerdict {
        let played = self.playout.fine.latest(MAX_DELAY_MS * 4 + FINE_WINDOW);
        if mean_square(played) < PLAYOUT_FLOOR {
            return EchoVerdict::NoPlayout;
        }
        let received = self.received.fine.latest(FINE_WINDOW);
        if mean_square(received) < QUIET_FLOOR {
            return EchoVerdict::Quiet;
        }
        // The delay that explained the last echo frame, give or take jitter; then the
        // neighbourhood of the call's echo path (a jitter buffer that grew or shrank).
        let end = self.received.fine.end;
        let tracked = self.last.and_then(|delay| {
            best_delay(&self.playout.fine, received, end, around(delay, TRACK))
                .filter(|(_, c)| *c >= ECHO_CORRELATION)
        });
        let near_path = || {
            let path = self.path?;
            self.search(around(path / FACTOR as u64, WANDER_MS))
                .filter(|(_, c)| *c >= ECHO_CORRELATION)
        };
        if let Some((delay, correlation)) = tracked.or_else(near_path) {
            self.confirm(delay);
            return EchoVerdict::Echo {
                delay_ms: delay as f32 / 4.0,
                correlation,
            };
        }
        // Anywhere else: a new path (the phone's own buffering changed), or an unrelated
        // voice resembling some stretch of the playout by chance. A chance resemblance
        // rarely holds at the same delay for the next frame too, so one frame alone is
        // not believed.
        match self.search(0..=MAX_DELAY_MS as u64) {
            Some((delay, correlation)) if correlation >= self.new_path_correlation() => {
                self.confirm(delay);
                if self.run < 2 {
                    return EchoVerdict::NotEcho { correlation };
                }
                EchoVerdict::Echo {
                    delay_ms: delay as f32 / 4.0,
                    correlation,
                }
            }
            other => {
                self.run = 0;
                self.last = None;
                EchoVerdict::NotEcho {
                    correlation: other.map_or(0.0, |(_, c)| c),
                }
            }
        }
    }

    /// What a match away from the known echo path must reach. Before there is a path
    /// (the greeting's first frames) the usual bar: the call's first echo must be
    /// caught at once, and the caller rarely talks over the first words.
    fn new_path_correlation(&self) -> f32 {
        if self.path.is_some() {
            NEW_PATH_CORRELATION
        } else {
            ECHO_CORRELATION
        }
    }

    /// Coarse search at 1 kHz over `coarse` (ms), refined at 4 kHz.
    fn search(&self, coarse: std::ops::RangeInclusive<u64>) -> Option<(u64, f32)> {
        let (played, received) = (&self.playout, &self.received);
        let (delay, _) = best_delay(
            &played.coarse,
            received.coarse.latest(COARSE_WINDOW),
            received.coarse.end,
            coarse,
        )?;
        best_delay(
            &played.fine,
            received.fine.latest(FINE_WINDOW),
            received.fine.end,
            around(delay * FACTOR as u64, REFINE),
        )
    }

    /// An echo frame at `delay`: [`CONFIRM`] in a row at about the same delay make it
    /// the call's echo path.
    fn confirm(&mut self, delay: u64) {
        let steady = self.last.is_some_and(|d| d.abs_diff(delay) <= TRACK as u64);
        self.run = if steady { self.run + 1 } else { 1 };
        self.last = Some(delay);
        if self.run >= CONFIRM {
            self.path = Some(delay);
        }
    }
}

/// `center` ± `reach`.
fn around(center: u64, reach: usize) -> std::ops::RangeInclusive<u64> {
    center.saturating_sub(reach as u64)..=center + reach as u64
}

/// The delay in `delays` at which the playout best explains `received` (the newest
/// samples, ending at index `end`), as (delay, |normalized cross-correlation|). The
/// magnitude: some hybrids invert the signal. `None` when no delay has playout to
/// compare with. The playout's energy slides along with the delay, so each delay costs
/// one dot product.
fn best_delay(
    playout: &Window,
    received: &[f32],
    end: u64,
    delays: std::ops::RangeInclusive<u64>,
) -> Option<(u64, f32)> {
    let len = received.len();
    let received_energy = dot(received, received);
    if len == 0 || received_energy <= 0.0 {
        return None;
    }
    // Delay d compares `received` with playout [end - len - d, end - d).
    let held = playout.end - playout.samples.len() as u64;
    let from = end.saturating_sub(len as u64 + delays.end()).max(held);
    let to = end.saturating_sub(*delays.start()).min(playout.end);
    if to < from + len as u64 {
        return None;
    }
    let span = &playout.samples[(from - held) as usize..(to - held) as usize];
    let mut played_energy = dot(&span[..len], &span[..len]);
    let mut best: Option<(u64, f32)> = None;
    for offset in 0..=span.len() - len {
        if offset > 0 {
            let (enter, leave) = (span[offset + len - 1], span[offset - 1]);
            played_energy += enter * enter - leave * leave;
        }
        if played_energy < PLAYOUT_FLOOR * len as f32 {
            continue;
        }
        let played = &span[offset..offset + len];
        let correlation = dot(received, played).abs() / (received_energy * played_energy).sqrt();
        let delay = end - len as u64 - from - offset as u64;
        if best.is_none_or(|(_, c)| correlation > c) {
            best = Some((delay, correlation.min(1.0)));
        }
    }
    best
}

pub(crate) fn mean_square(x: &[f32]) -> f32 {
    if x.is_empty() {
        0.0
    } else {
        dot(x, x) / x.len() as f32
    }
}

/// Dot product in eight independent lanes, so the compiler can vectorize it (a single
/// running sum is a dependency chain it must keep in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 8];
    let chunks = n / 8;
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for i in chunks * 8..n {
        sum += a[i] * b[i];
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: usize = 320;

    /// A speech-like test signal: voiced bursts (a few harmonics of a gliding pitch,
    /// and breath noise) of random length and loudness with pauses, from a seeded generator.
    fn babble(seconds: f32, seed: u32) -> Vec<f32> {
        // splitmix64: nearby seeds give unrelated sequences.
        let mut x = u64::from(seed);
        let mut next = move || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z >> 40) as f32 / (1u64 << 24) as f32
        };
        let n = (seconds * INPUT_RATE as f32) as usize;
        let mut out = Vec::with_capacity(n);
        let mut phase = 0f32;
        while out.len() < n {
            let burst = (0.08 + 0.25 * next()) * INPUT_RATE as f32;
            let pause = 0.1 * next() * INPUT_RATE as f32;
            let (f0, glide, level) = (90.0 + 150.0 * next(), next() - 0.5, 0.05 + 0.2 * next());
            for i in 0..burst as usize {
                let t = i as f32 / burst;
                let f = f0 * (1.0 + 0.3 * glide * t);
                phase += 2.0 * std::f32::consts::PI * f / INPUT_RATE as f32;
                let envelope = (std::f32::consts::PI * t).sin();
                let s: f32 = (1..6).map(|h| (phase * h as f32).sin() / h as f32).sum();
                // Breath: voices are not exactly periodic.
                let breath = next() - 0.5;
                out.push(level * envelope * (s + breath));
            }
            out.extend(std::iter::repeat_n(0.0, pause as usize));
        }
        out.truncate(n);
        out
    }

    fn delayed(x: &[f32], delay: usize, gain: f32) -> Vec<f32> {
        (0..x.len())
            .map(|i| i.checked_sub(delay).map_or(0.0, |j| x[j] * gain))
            .collect()
    }

    /// Verdicts on the frames of `received` louder than -45 dBFS.
    fn verdicts(playout: &[f32], received: &[f32]) -> Vec<EchoVerdict> {
        let mut d = EchoDetector::new();
        let mut out = Vec::new();
        for (p, r) in playout
            .chunks_exact(FRAME)
            .zip(received.chunks_exact(FRAME))
        {
            d.handle_playout(p);
            d.handle_received(r);
            if mean_square(r) > 3e-5 {
                out.push(d.verdict());
            }
        }
        out
    }

    fn share_explained(v: &[EchoVerdict]) -> f32 {
        v.iter().filter(|v| v.explained_by_playout()).count() as f32 / v.len() as f32
    }

    #[test]
    fn a_delayed_attenuated_copy_is_echo() {
        let playout = babble(4.0, 1);
        for (delay_ms, gain) in [(30, 0.5), (200, 0.3), (450, 0.1)] {
            let received = delayed(&playout, delay_ms * 16, gain);
            let v = verdicts(&playout, &received);
            assert!(share_explained(&v) > 0.97, "{delay_ms} ms: {v:?}");
            let found = v.iter().find_map(|v| match v {
                EchoVerdict::Echo { delay_ms, .. } => Some(*delay_ms),
                _ => None,
            });
            let found = found.expect("an echo verdict");
            assert!(
                (found - delay_ms as f32).abs() < 1.0,
                "{found} vs {delay_ms}"
            );
        }
    }

    #[test]
    fn an_independent_signal_and_one_over_the_echo_are_not_echo() {
        let playout = babble(4.0, 1);
        let other = babble(4.0, 7);
        let v = verdicts(&playout, &other);
        assert!(share_explained(&v) < 0.05, "{v:?}");
        let echo = delayed(&playout, 120 * 16, 0.3);
        let both: Vec<f32> = echo.iter().zip(&other).map(|(e, o)| e + o).collect();
        let v = verdicts(&playout, &both);
        assert!(share_explained(&v) < 0.2, "{v:?}");
    }

    #[test]
    fn received_audio_that_starts_late_is_still_aligned_with_the_playout() {
        // The jitter buffer delivers its first frame 300 ms into the call; the echo
        // comes back 150 ms after it was sent.
        let playout = babble(4.0, 1);
        let received = delayed(&playout, 150 * 16, 0.3);
        let mut d = EchoDetector::new();
        let mut v = Vec::new();
        for (k, p) in playout.chunks_exact(FRAME).enumerate() {
            d.handle_playout(p);
            if k >= 15 {
                let r = &received[(k - 15) * FRAME + 300 * 16..][..FRAME];
                d.handle_received(r);
                if mean_square(r) > 3e-5 {
                    v.push(d.verdict());
                }
            }
            if k >= 180 {
                break;
            }
        }
        assert!(share_explained(&v) > 0.95, "{v:?}");
    }

    #[test]
    fn silent_playout_never_explains_a_frame() {
        let playout = vec![0.0; 4 * INPUT_RATE];
        let v = verdicts(&playout, &babble(4.0, 3));
        assert!(v.iter().all(|v| *v == EchoVerdict::NoPlayout), "{v:?}");
    }

    #[test]
    fn the_decimator_passes_low_tones_and_stops_high_ones() {
        let taps = lowpass_taps();
        let tone = |f: f32| -> f32 {
            let x: Vec<f32> = (0..1600)
                .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / 16_000.0).sin())
                .collect();
            let mut d = Decimator::new(taps.len());
            let mut out = Vec::new();
            // Uneven chunks: the phase must carry across calls.
            for chunk in x.chunks(77) {
                d.process(&taps, chunk, &mut out);
            }
            assert_eq!(out.len(), 400);
            mean_square(&out[50..]).sqrt() * 2f32.sqrt()
        };
        assert!((tone(500.0) - 1.0).abs() < 0.05);
        assert!(tone(3000.0) < 0.01);
    }
}
