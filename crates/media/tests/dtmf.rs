//! RFC 4733 DTMF as real phones send it: exactly one digit per key press.

mod common;

use common::{addr, rtp, t0, PEER_ADDR};
use sofia_media::dtmf::EventPayload;
use sofia_media::{CodecKind, Event, FrameKind, MediaSession, SessionConfig};
use std::time::{Duration, Instant};

const AUDIO_SSRC: u32 = 0x0102_0304;

fn event(digit: u8, end: bool, duration: u16) -> Vec<u8> {
    EventPayload {
        event: digit,
        end,
        volume: 10,
        duration,
    }
    .to_bytes()
    .to_vec()
}

fn session(start: Instant) -> MediaSession {
    common::session(
        CodecKind::Pcmu,
        SessionConfig {
            output_rate: None,
            ..SessionConfig::default()
        },
        start,
    )
}

/// Collects DTMF events and counts concealed frames while driving to `until_ms`.
fn drain(
    s: &mut MediaSession,
    now: Instant,
    digits: &mut Vec<(char, Duration)>,
    concealed: &mut usize,
) {
    s.handle_timeout(now);
    while let Some(e) = s.poll_event() {
        match e {
            Event::Dtmf { digit, duration } => digits.push((digit, duration)),
            Event::Audio(f) if f.kind == FrameKind::Concealed => *concealed += 1,
            _ => {}
        }
    }
}

#[test]
fn baresip_style_events_interleaved_with_audio_give_one_digit() {
    // baresip: audio and events share SSRC and sequence space; the event's packets
    // carry growing durations, then three end packets with increasing seq.
    let start = t0();
    let mut s = session(start);
    let (mut digits, mut concealed) = (Vec::new(), 0);
    let mut seq = 1000u16;
    let event_ts = 160 * 50;
    for i in 0..100u32 {
        let now = start + Duration::from_millis(20 * u64::from(i));
        let ts = 160 * i;
        let payload = if (50..56).contains(&i) {
            let dur = (160 * (i - 49)) as u16;
            event(5, false, dur)
        } else if (56..59).contains(&i) {
            event(5, true, 960)
        } else {
            vec![0xFF; 160]
        };
        let pt = if (50..59).contains(&i) { 101 } else { 0 };
        let pkt_ts = if pt == 101 { event_ts } else { ts };
        s.handle_datagram(
            now,
            addr(PEER_ADDR),
            &rtp(pt, seq, pkt_ts, AUDIO_SSRC, i == 50, &payload),
        );
        seq = seq.wrapping_add(1);
        drain(&mut s, now, &mut digits, &mut concealed);
    }
    assert_eq!(digits, vec![('5', Duration::from_millis(120))]);
}

#[test]
fn linphone_style_identical_end_packets_give_one_digit() {
    let start = t0();
    let mut s = session(start);
    let (mut digits, mut concealed) = (Vec::new(), 0);
    let mut seq = 7u16;
    let mut now = start;
    for (i, digit) in [1u8, 1, 11].into_iter().enumerate() {
        let ts = 100_000 + 8_000 * i as u32;
        for d in [160u16, 320, 480] {
            s.handle_datagram(
                now,
                addr(PEER_ADDR),
                &rtp(101, seq, ts, AUDIO_SSRC, d == 160, &event(digit, false, d)),
            );
            seq += 1;
            now += Duration::from_millis(20);
        }
        for _ in 0..3 {
            // The same packet three times: same seq, same everything.
            s.handle_datagram(
                now,
                addr(PEER_ADDR),
                &rtp(101, seq, ts, AUDIO_SSRC, false, &event(digit, true, 640)),
            );
        }
        seq += 1;
        now += Duration::from_millis(500);
        drain(&mut s, now, &mut digits, &mut concealed);
    }
    let keys: String = digits.iter().map(|d| d.0).collect();
    assert_eq!(keys, "11#", "the same key twice is two presses");
    assert!(digits.iter().all(|d| d.1 == Duration::from_millis(80)));
}

#[test]
fn sipp_pcap_dtmf_with_its_own_ssrc_does_not_disturb_audio() {
    let start = t0();
    let mut s = session(start);
    let (mut digits, mut concealed) = (Vec::new(), 0);
    let dtmf_ssrc = 0xD7F0_0000;
    for i in 0..150u32 {
        let now = start + Duration::from_millis(20 * u64::from(i));
        s.handle_datagram(
            now,
            addr(PEER_ADDR),
            &rtp(0, i as u16, 160 * i, AUDIO_SSRC, false, &[0xFF; 160]),
        );
        if (40..48).contains(&i) {
            let end = i >= 45;
            let dur = if end { 800 } else { (160 * (i - 39)) as u16 };
            s.handle_datagram(
                now,
                addr(PEER_ADDR),
                &rtp(
                    101,
                    30_000 + i as u16,
                    555,
                    dtmf_ssrc,
                    i == 40,
                    &event(0, end, dur),
                ),
            );
        }
        drain(&mut s, now, &mut digits, &mut concealed);
    }
    assert_eq!(digits, vec![('0', Duration::from_millis(100))]);
    assert_eq!(s.stats().ssrc_changes, 0);
    assert_eq!(concealed, 0, "audio kept flowing untouched");
}

#[test]
fn event_whose_end_packets_are_all_lost_is_reported_after_a_timeout() {
    let start = t0();
    let mut s = session(start);
    let (mut digits, mut concealed) = (Vec::new(), 0);
    for (k, d) in [160u16, 320, 480].into_iter().enumerate() {
        let now = start + Duration::from_millis(20 * k as u64);
        s.handle_datagram(
            now,
            addr(PEER_ADDR),
            &rtp(101, k as u16, 4242, AUDIO_SSRC, k == 0, &event(9, false, d)),
        );
        drain(&mut s, now, &mut digits, &mut concealed);
    }
    assert!(digits.is_empty());
    drain(
        &mut s,
        start + Duration::from_secs(1),
        &mut digits,
        &mut concealed,
    );
    assert_eq!(digits, vec![('9', Duration::from_millis(60))]);
    // A late end packet for the same event is not a second press.
    s.handle_datagram(
        start + Duration::from_secs(1),
        addr(PEER_ADDR),
        &rtp(101, 9, 4242, AUDIO_SSRC, false, &event(9, true, 640)),
    );
    drain(
        &mut s,
        start + Duration::from_secs(2),
        &mut digits,
        &mut concealed,
    );
    assert_eq!(digits.len(), 1);
}
