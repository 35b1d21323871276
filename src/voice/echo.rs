//! The echo check of an agent call, on the shell's side: it tells
//! [`sofia_voice::EchoDetector`] what was actually sent to the phone, frame by frame,
//! and asks it about the caller's frames the voice activity detector calls speech.
//!
//! The media session owns the playback queue and drains it on its 20 ms schedule; the
//! call task sees only how much is still queued and how many packets went out. So this
//! keeps a 16 kHz copy of everything queued, and on each turn of the call's loop moves
//! what has drained since the last turn to the detector, with silence for the packets
//! sent while nothing was queued (comfort silence is what the phone heard then).

use std::collections::VecDeque;
use std::time::Duration;

use sofia_media::{ClipResampler, MediaSession};
use sofia_voice::{EchoDetector, SAMPLE_RATE};
use tracing::debug;

/// The agent's playout and the detector that compares the caller's audio with it.
pub struct EchoCheck {
    detector: EchoDetector,
    /// Queued playout not yet sent, at 16 kHz.
    unsent: VecDeque<f32>,
    /// From the rate of the clips (Piper's) to 16 kHz.
    resampler: Option<ClipResampler>,
    /// The session's playback queue and packet count when last looked at.
    queued: Duration,
    packets_sent: u64,
}

impl Default for EchoCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoCheck {
    pub fn new() -> Self {
        Self {
            detector: EchoDetector::new(),
            unsent: VecDeque::new(),
            resampler: None,
            queued: Duration::ZERO,
            packets_sent: 0,
        }
    }

    /// `samples` (at `rate`) were just queued on `session` for playback.
    pub fn queued(&mut self, session: &MediaSession, samples: &[f32], rate: u32) {
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.from_rate() != rate)
        {
            self.resampler = ClipResampler::new(rate, SAMPLE_RATE).ok();
        }
        let mut at_16k =
            Vec::with_capacity(samples.len() * SAMPLE_RATE as usize / rate.max(1) as usize + 1);
        match self
            .resampler
            .as_mut()
            .map(|r| r.process(samples, &mut at_16k))
        {
            Some(Ok(())) => self.unsent.extend(at_16k),
            // Without a copy the detector sees silence, and the check lets everything
            // through: the guard alone decides, as without the check.
            other => debug!("echo check: cannot resample the playout ({other:?})"),
        }
        self.queued = session.queued_playback();
    }

    /// The session's playback queue was flushed (barge-in).
    pub fn flushed(&mut self) {
        self.unsent.clear();
        self.queued = Duration::ZERO;
    }

    /// Hands the detector what `session` has sent since the last call: the playout that
    /// drained and silence for the rest of the packets.
    pub fn handle_sent(&mut self, session: &MediaSession) {
        let packets = session.stats().packets_sent;
        let new_packets = packets.saturating_sub(self.packets_sent);
        self.packets_sent = packets;
        let queued = session.queued_playback();
        let drained = self.queued.saturating_sub(queued);
        let was_playing = !self.queued.is_zero();
        self.queued = queued;
        if new_packets == 0 {
            return;
        }
        let frame = u64::from(session.params().ptime_ms.clamp(10, 120)) * 16;
        let total = (new_packets * frame) as usize;
        let audio = ((drained.as_secs_f64() * f64::from(SAMPLE_RATE)).round() as usize)
            .min(self.unsent.len())
            .min(total);
        let played: Vec<f32> = self.unsent.drain(..audio).collect();
        let silence = vec![0.0; total - audio];
        // A talkspurt that ended in these packets played first; one that started, last.
        if was_playing {
            self.detector.handle_playout(&played);
            self.detector.handle_playout(&silence);
        } else {
            self.detector.handle_playout(&silence);
            self.detector.handle_playout(&played);
        }
    }

    /// A received 16 kHz frame and the voice activity detector's verdict on it: whether
    /// it is caller speech, that is speech the playout does not explain.
    pub fn caller_speech(&mut self, frame: &[f32], speech: bool) -> bool {
        self.detector.handle_received(frame);
        if !speech {
            return false;
        }
        let verdict = self.detector.verdict();
        !verdict.explained_by_playout()
    }
}
