//! The jitter buffer through its public API: inserts (audio and skip slots, in and
//! out of order, duplicates, restarts), pops at arbitrary times, jitter and frame
//! duration changes, resets.
//!
//! Invariants: no panic; `pop` plays nothing before `poll_timeout`; played packets come
//! out in strictly increasing sequence order between resets and restarts, and each at
//! most once; the buffer never holds more than its hard cap (512) of frames; the
//! target delay stays within the configured bounds.
#![no_main]

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sofia_media::jitter::{Inserted, JitterBuffer, Playout, Slot};
use sofia_media::JitterConfig;

#[derive(Debug, Arbitrary)]
enum Op {
    /// Audio for the sequence number `delta` after the last one inserted.
    Audio {
        delta: i16,
        late_ms: u8,
    },
    Skip {
        delta: i16,
    },
    /// A far jump (a restarted stream or garbage).
    Jump {
        delta: i32,
    },
    AdvanceMs(u16),
    Pop,
    SetJitter(u16),
    SetFrame(u8),
    Reset,
}

#[derive(Debug, Arbitrary)]
struct Input {
    min_ms: u8,
    max_ms: u16,
    frame_ms: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let min = Duration::from_millis(u64::from(input.min_ms));
    let max = min + Duration::from_millis(u64::from(input.max_ms % 2000));
    let config = JitterConfig {
        min_delay: min,
        max_delay: max,
    };
    let start = Instant::now();
    let mut now = start;
    let mut jb = JitterBuffer::new(config, Duration::from_millis(u64::from(input.frame_ms)));
    let mut seq: i64 = 1 << 20;
    // The last sequence number played since the last reset or restart.
    let mut last_played: Option<i64> = None;
    for op in input.ops.into_iter().take(2048) {
        let insert = |jb: &mut JitterBuffer, s: i64, slot: Slot, last: &mut Option<i64>| {
            if jb.insert(now, s, slot) == Inserted::Restarted {
                *last = None;
            }
        };
        match op {
            Op::Audio { delta, late_ms } => {
                seq += i64::from(delta);
                let arrival = now
                    .checked_sub(Duration::from_millis(u64::from(late_ms)))
                    .unwrap_or(now);
                let slot = Slot::Audio {
                    payload: seq.to_be_bytes().to_vec(),
                    arrival,
                };
                insert(&mut jb, seq, slot, &mut last_played);
            }
            Op::Skip { delta } => {
                seq += i64::from(delta);
                insert(&mut jb, seq, Slot::Skip, &mut last_played);
            }
            Op::Jump { delta } => {
                seq += i64::from(delta);
                let slot = Slot::Audio {
                    payload: seq.to_be_bytes().to_vec(),
                    arrival: now,
                };
                insert(&mut jb, seq, slot, &mut last_played);
            }
            Op::AdvanceMs(ms) => now += Duration::from_millis(u64::from(ms % 5000)),
            Op::Pop => {
                let due = jb.poll_timeout();
                let mut pops = 0;
                while let Some(p) = jb.pop(now) {
                    assert!(due.is_some_and(|d| d <= now), "played before its tick");
                    pops += 1;
                    assert!(pops <= 100_000, "pop does not run dry");
                    if let Playout::Packet(payload) = p {
                        let played = i64::from_be_bytes(payload.try_into().expect("8 bytes"));
                        if let Some(last) = last_played {
                            assert!(played > last, "played {played} after {last}");
                        }
                        last_played = Some(played);
                    }
                }
            }
            Op::SetJitter(ms) => jb.set_jitter(Duration::from_micros(u64::from(ms) * 100)),
            Op::SetFrame(ms) => jb.set_frame_duration(Duration::from_millis(u64::from(ms))),
            Op::Reset => {
                jb.reset();
                last_played = None;
            }
        }
        assert!(jb.depth() <= 512, "depth {}", jb.depth());
        let target = jb.target_delay();
        assert!(
            target >= min.min(max) && target <= max.max(min),
            "target {target:?}"
        );
    }
});
