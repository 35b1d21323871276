//! RFC 4733 telephone-event payloads and their de-duplication into digits.
//!
//! Owns: parsing the 4-byte event payload (RFC 4733 2.3) and turning the stream of
//! start, update and (retransmitted) end packets into exactly one digit per key
//! press. Must not: touch audio or the jitter buffer.
//!
//! Senders differ: baresip sends three end packets with increasing sequence
//! numbers, linphone three identical ones, SIPp's pcap replay uses an SSRC of its
//! own. An event is identified by (SSRC, RTP timestamp) (RFC 4733 2.5.1.2: all
//! packets of one event share the timestamp of its start), which covers all three.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One RFC 4733 event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPayload {
    /// Event code (0-9, 10 `*`, 11 `#`, 12-15 A-D, 16 flash; RFC 4733 3.2).
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume in -dBm0 (0..=63).
    pub volume: u8,
    /// Duration so far, in timestamp units of the event's clock rate.
    pub duration: u16,
}

impl EventPayload {
    /// Parses the first event in a payload (RFC 4733 2.3); `None` if shorter than 4.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b = payload.get(..4)?;
        Some(Self {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3F,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Writes the payload (for tests and for sending DTMF).
    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d[0],
            d[1],
        ]
    }
}

/// The digit an event code stands for (RFC 4733 3.2, table 3); `None` for codes
/// that are not DTMF digits (flash and beyond).
pub fn digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some(char::from(b'0' + event)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + event - 12)),
        _ => None,
    }
}

/// The event code of a DTMF digit (RFC 4733 3.2, table 3): `0`-`9`, `*`, `#`,
/// `A`-`D` (also `a`-`d`); `None` for anything else. The inverse of [`digit`].
pub fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// A key press that has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// `0`-`9`, `*`, `#`, `A`-`D`.
    pub digit: char,
    /// How long the key was held.
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    ssrc: u32,
    timestamp: u32,
    event: u8,
    duration: u16,
    last_seen: Instant,
}

/// Turns telephone-event packets into digits, one per event.
#[derive(Debug)]
pub struct DtmfDetector {
    clock_rate: u32,
    pending: Option<Pending>,
    /// Events already reported, so late retransmissions are ignored.
    done: VecDeque<(u32, u32)>,
}

/// How long an event may go without packets before it is reported although its end
/// packets were lost (RFC 4733 2.5.1.4 says three end packets are sent; all three
/// can still be lost).
pub const EVENT_TIMEOUT: Duration = Duration::from_millis(500);
const REMEMBERED: usize = 16;

impl DtmfDetector {
    /// A detector for events at `clock_rate` Hz (the telephone-event rtpmap rate).
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            pending: None,
            done: VecDeque::with_capacity(REMEMBERED),
        }
    }

    fn duration(&self, units: u16) -> Duration {
        Duration::from_micros(u64::from(units) * 1_000_000 / u64::from(self.clock_rate))
    }

    fn finish(&mut self, ssrc: u32, timestamp: u32, event: u8, units: u16) -> Option<Digit> {
        if self.done.len() == REMEMBERED {
            self.done.pop_front();
        }
        self.done.push_back((ssrc, timestamp));
        Some(Digit {
            digit: digit(event)?,
            duration: self.duration(units),
        })
    }

    /// Handles one telephone-event packet. Returns up to two digits: a previous
    /// event whose end was lost, and this one if it just ended.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
    ) -> [Option<Digit>; 2] {
        let mut out = [None, None];
        let Some(ev) = EventPayload::parse(payload) else {
            return out;
        };
        if self.done.contains(&(ssrc, timestamp)) {
            return out;
        }
        if let Some(p) = self.pending {
            if (p.ssrc, p.timestamp) != (ssrc, timestamp) {
                self.pending = None;
                out[0] = self.finish(p.ssrc, p.timestamp, p.event, p.duration);
            }
        }
        if ev.end {
            self.pending = None;
            out[1] = self.finish(ssrc, timestamp, ev.event, ev.duration);
        } else {
            let duration = self
                .pending
                .map_or(ev.duration, |p| p.duration.max(ev.duration));
            self.pending = Some(Pending {
                ssrc,
                timestamp,
                event: ev.event,
                duration,
                last_seen: now,
            });
        }
        out
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.map(|p| p.last_seen + EVENT_TIMEOUT)
    }

    /// Reports an event whose end packets never came.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Digit> {
        let p = self.pending?;
        if now < p.last_seen + EVENT_TIMEOUT {
            return None;
        }
        self.pending = None;
        self.finish(p.ssrc, p.timestamp, p.event, p.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_map_per_rfc4733_table_3() {
        let all: String = (0..16).filter_map(digit).collect();
        assert_eq!(all, "0123456789*#ABCD");
        assert_eq!(digit(16), None);
    }

    #[test]
    fn event_codes_invert_digits() {
        for code in 0..16 {
            let d = digit(code).unwrap();
            assert_eq!(event_code(d), Some(code));
            assert_eq!(event_code(d.to_ascii_lowercase()), Some(code));
        }
        for c in ['E', 'e', 'F', ' ', '\u{0}', '\u{ff}', '\u{663}'] {
            assert_eq!(event_code(c), None, "{c:?}");
        }
    }

    #[test]
    fn payload_round_trips() {
        let p = EventPayload {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(EventPayload::parse(&p.to_bytes()), Some(p));
        assert_eq!(EventPayload::parse(&[1, 2]), None);
    }
}
