//! Adaptive jitter buffer: reorders packets by extended sequence number and plays
//! them out on a steady virtual clock, one frame per tick.
//!
//! Owns: when each frame is played, which packets are late or duplicate, when a gap
//! is a loss (conceal and move on) or an underrun (conceal and wait), and the
//! playout delay, which follows the measured interarrival jitter between
//! [`JitterConfig::min_delay`] and [`JitterConfig::max_delay`]. Must not: decode
//! audio (it hands out payloads; the session decodes in order, which Opus needs) or
//! read a clock.
//!
//! Adaptation: the target depth is `frame + 3 * jitter`, rounded up to whole frames
//! and clamped. Deeper than target+2 frames drops the oldest frame at once; deeper
//! than target for 1 s drops one; deeper than `max_delay` drops down to target. An
//! underrun conceals without advancing, which deepens the buffer by one frame.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Bounds for the playout delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest playout delay.
    pub min_delay: Duration,
    /// Largest playout delay; deeper buffers are cut back (bounded latency).
    pub max_delay: Duration,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(200),
        }
    }
}

/// What arrived for one sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// An audio payload.
    Audio {
        /// Encoded payload.
        payload: Vec<u8>,
        /// When it arrived.
        arrival: Instant,
    },
    /// A sequence number used by a non-audio packet of the same stream (a
    /// telephone-event interleaved with audio): skipped without a gap.
    Skip,
}

/// The result of inserting a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Buffered for playout.
    Accepted,
    /// Its turn has passed.
    Late,
    /// Already buffered.
    Duplicate,
    /// Far outside the current sequence window; kept as a candidate restart.
    OutOfWindow,
    /// Confirmed a restarted stream: the buffer was reset and holds this packet.
    Restarted,
}

/// What to play at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// Decode this payload.
    Packet(Vec<u8>),
    /// A frame is missing: conceal it. `next` is the following payload if it is
    /// already here (Opus FEC).
    Lost {
        /// The next packet's payload, if buffered.
        next: Option<Vec<u8>>,
    },
    /// Nothing to play (not started, or a long gap): silence.
    Silence,
}

/// Counters for statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played from packets.
    pub played: u64,
    /// Frames concealed (loss or underrun).
    pub concealed: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames dropped to bring the delay back to target.
    pub dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Buffering,
    Playing,
}

/// RFC 3550 A.1: a jump of more than this many packets ahead, or MAX_MISORDER behind,
/// is a restart or garbage until confirmed by the next sequential packet.
const MAX_DROPOUT: i64 = 3000;
const MAX_MISORDER: i64 = 100;
/// Underrun frames concealed before switching to silence and re-buffering.
const MAX_UNDERRUN_CONCEAL: u32 = 5;
/// Hard cap on buffered slots (memory bound whatever the peer sends).
const MAX_SLOTS: usize = 512;

/// The jitter buffer of one received stream.
#[derive(Debug)]
pub struct JitterBuffer {
    config: JitterConfig,
    slots: BTreeMap<i64, Slot>,
    next_seq: Option<i64>,
    next_tick: Option<Instant>,
    state: State,
    frame: Duration,
    jitter: Duration,
    underrun_run: u32,
    over_target_ticks: u32,
    candidate_restart: Option<i64>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer expecting frames of `frame` duration.
    pub fn new(config: JitterConfig, frame: Duration) -> Self {
        Self {
            config,
            slots: BTreeMap::new(),
            next_seq: None,
            next_tick: None,
            state: State::Buffering,
            frame: clamp_frame(frame),
            jitter: Duration::ZERO,
            underrun_run: 0,
            over_target_ticks: 0,
            candidate_restart: None,
            stats: JitterStats::default(),
        }
    }

    /// Updates the measured interarrival jitter (RFC 3550 A.8).
    pub fn set_jitter(&mut self, jitter: Duration) {
        self.jitter = jitter;
    }

    /// Updates the frame duration (from the last decoded frame).
    pub fn set_frame_duration(&mut self, frame: Duration) {
        self.frame = clamp_frame(frame);
    }

    /// The frame duration used for ticks.
    pub fn frame_duration(&self) -> Duration {
        self.frame
    }

    /// Counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The playout delay the buffer aims for.
    pub fn target_delay(&self) -> Duration {
        let wanted = self.frame + self.jitter * 3;
        let frames = wanted.as_micros().div_ceil(self.frame.as_micros().max(1)) as u32;
        (self.frame * frames).clamp(self.config.min_delay, self.config.max_delay)
    }

    fn target_frames(&self) -> usize {
        (self.target_delay().as_micros() / self.frame.as_micros().max(1)).max(1) as usize
    }

    fn max_frames(&self) -> usize {
        (self.config.max_delay.as_micros() / self.frame.as_micros().max(1)).max(1) as usize
    }

    /// Frames buffered ahead of the playout point.
    pub fn depth(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Audio { .. }))
            .count()
    }

    /// Drops everything (new SSRC, codec change); the next packet starts afresh.
    pub fn reset(&mut self) {
        self.slots.clear();
        self.next_seq = None;
        self.state = State::Buffering;
        self.underrun_run = 0;
        self.over_target_ticks = 0;
        self.candidate_restart = None;
    }

    /// Buffers a packet with extended sequence number `seq`.
    pub fn insert(&mut self, now: Instant, seq: i64, slot: Slot) -> Inserted {
        let reference = self.next_seq.or_else(|| self.slots.keys().next().copied());
        if let Some(reference) = reference {
            let highest = self.slots.keys().next_back().copied().unwrap_or(reference);
            if seq > highest.max(reference) + MAX_DROPOUT || seq < reference - MAX_MISORDER {
                if self.candidate_restart == Some(seq - 1) {
                    self.reset();
                    self.slots.insert(seq, slot);
                    self.schedule_first(now);
                    return Inserted::Restarted;
                }
                self.candidate_restart = Some(seq);
                return Inserted::OutOfWindow;
            }
        }
        self.candidate_restart = None;
        if self.next_seq.is_some_and(|next| seq < next) {
            self.stats.late += 1;
            return Inserted::Late;
        }
        if self.slots.contains_key(&seq) {
            self.stats.duplicates += 1;
            return Inserted::Duplicate;
        }
        self.slots.insert(seq, slot);
        while self.slots.len() > MAX_SLOTS {
            self.slots.pop_first();
            self.stats.dropped += 1;
        }
        self.schedule_first(now);
        Inserted::Accepted
    }

    fn schedule_first(&mut self, now: Instant) {
        if self.next_tick.is_none() {
            self.next_tick = Some(now + self.target_delay());
        }
    }

    /// When the next frame is due; `None` before the first packet.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    /// Plays the frame due at or before `now`, or `None` if none is due. Call until
    /// it returns `None`.
    pub fn pop(&mut self, now: Instant) -> Option<Playout> {
        let tick = self.next_tick?;
        if tick > now {
            return None;
        }
        self.next_tick = Some(tick + self.frame);
        Some(self.play(now))
    }

    fn skip_markers(&mut self) {
        while let Some(next) = self.next_seq {
            match self.slots.first_key_value() {
                Some((&seq, Slot::Skip)) if seq <= next => {
                    self.slots.pop_first();
                    if seq == next {
                        self.next_seq = Some(next + 1);
                    }
                }
                Some((&seq, _)) if seq < next => {
                    self.slots.pop_first();
                }
                _ => break,
            }
        }
    }

    fn oldest_audio(&self) -> Option<(i64, Instant)> {
        self.slots.iter().find_map(|(&seq, slot)| match slot {
            Slot::Audio { arrival, .. } => Some((seq, *arrival)),
            Slot::Skip => None,
        })
    }

    fn drop_oldest(&mut self) {
        if let Some((seq, _)) = self.oldest_audio() {
            self.slots.retain(|&s, _| s > seq);
            self.next_seq = Some(seq + 1);
            self.stats.dropped += 1;
        }
    }

    fn play(&mut self, now: Instant) -> Playout {
        if self.state == State::Buffering {
            let Some((seq, arrival)) = self.oldest_audio() else {
                return Playout::Silence;
            };
            let waited = now.saturating_duration_since(arrival);
            if waited < self.target_delay() && self.depth() < self.target_frames() {
                return Playout::Silence;
            }
            self.state = State::Playing;
            self.underrun_run = 0;
            if self.next_seq.is_none_or(|next| seq > next) {
                self.next_seq = Some(seq);
            }
        }
        self.skip_markers();

        // Keep latency bounded and near the target. The surplus is what waits
        // behind the frame played now: the newest packet plays `surplus` ticks later.
        let surplus = self.depth().saturating_sub(1);
        let target = self.target_frames();
        if surplus > self.max_frames() {
            while self.depth().saturating_sub(1) > target {
                self.drop_oldest();
            }
            self.over_target_ticks = 0;
        } else if surplus > target + 2 {
            self.drop_oldest();
            self.over_target_ticks = 0;
        } else if surplus > target {
            self.over_target_ticks += 1;
            // 1 s of consistently surplus delay.
            if u128::from(self.over_target_ticks) * self.frame.as_millis() >= 1000 {
                self.drop_oldest();
                self.over_target_ticks = 0;
            }
        } else {
            self.over_target_ticks = 0;
        }
        self.skip_markers();

        let Some(next) = self.next_seq else {
            return Playout::Silence;
        };
        match self.slots.remove(&next) {
            Some(Slot::Audio { payload, .. }) => {
                self.next_seq = Some(next + 1);
                self.underrun_run = 0;
                self.stats.played += 1;
                Playout::Packet(payload)
            }
            Some(Slot::Skip) | None => {
                self.stats.concealed += 1;
                if self.slots.keys().any(|&s| s > next) {
                    // Later packets are here, so this one is lost: move on.
                    self.next_seq = Some(next + 1);
                    self.underrun_run = 0;
                    let next_payload = match self.slots.get(&(next + 1)) {
                        Some(Slot::Audio { payload, .. }) => Some(payload.clone()),
                        _ => None,
                    };
                    Playout::Lost { next: next_payload }
                } else {
                    // Underrun: the packet may still come; wait a frame longer.
                    self.underrun_run += 1;
                    if self.underrun_run > MAX_UNDERRUN_CONCEAL {
                        self.stats.concealed -= 1;
                        self.state = State::Buffering;
                        return Playout::Silence;
                    }
                    Playout::Lost { next: None }
                }
            }
        }
    }
}

fn clamp_frame(frame: Duration) -> Duration {
    frame.clamp(Duration::from_millis(10), Duration::from_millis(120))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(
        clippy::disallowed_methods,
        reason = "origin of the test's virtual clock"
    )]
    fn t0() -> Instant {
        Instant::now()
    }

    fn audio(n: u8, at: Instant) -> Slot {
        Slot::Audio {
            payload: vec![n],
            arrival: at,
        }
    }

    #[test]
    fn reorders_and_skips_dtmf_sequence_numbers() {
        let t = t0();
        let ms = Duration::from_millis;
        let mut jb = JitterBuffer::new(JitterConfig::default(), ms(20));
        assert_eq!(jb.insert(t, 10, audio(10, t)), Inserted::Accepted);
        assert_eq!(jb.insert(t, 12, audio(12, t)), Inserted::Accepted);
        assert_eq!(jb.insert(t, 11, Slot::Skip), Inserted::Accepted);
        assert_eq!(jb.insert(t, 12, audio(12, t)), Inserted::Duplicate);
        let mut now = t;
        let mut played = Vec::new();
        while played.len() < 2 {
            now += ms(20);
            while let Some(p) = jb.pop(now) {
                if let Playout::Packet(p) = p {
                    played.push(p[0]);
                }
            }
        }
        assert_eq!(played, vec![10, 12]);
        assert_eq!(jb.insert(now, 11, audio(11, now)), Inserted::Late);
        assert_eq!(jb.stats().concealed, 0);
    }

    #[test]
    fn restart_needs_two_sequential_packets() {
        let t = t0();
        let mut jb = JitterBuffer::new(JitterConfig::default(), Duration::from_millis(20));
        jb.insert(t, 100, audio(1, t));
        assert_eq!(jb.insert(t, 40_000, audio(2, t)), Inserted::OutOfWindow);
        assert_eq!(jb.insert(t, 40_001, audio(3, t)), Inserted::Restarted);
        assert_eq!(jb.depth(), 1);
    }
}
