//! Send path in virtual time: 20 ms pacing, continuous sequence numbers and
//! timestamps across prompts and silence, marker bits, barge-in flush.

mod common;

use common::{addr, t0, tone};
use sofia_media::rtcp::{classify, PacketKind};
use sofia_media::rtp::RtpPacket;
use sofia_media::{CodecKind, Component, IdleMode, MediaSession, SessionConfig, Transmit};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Sent {
    at: Duration,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// Drives `session` from `from` to `to` in 1 ms steps, collecting RTP packets;
/// `actions` run at their instants.
fn drive(
    session: &mut MediaSession,
    start: Instant,
    from: Duration,
    to: Duration,
    actions: &mut dyn FnMut(&mut MediaSession, Duration),
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut t = from;
    while t < to {
        let now = start + t;
        actions(session, t);
        session.handle_timeout(now);
        while let Some(Transmit {
            bytes, component, ..
        }) = session.poll_transmit(now)
        {
            if classify(&bytes) != PacketKind::Rtp {
                continue;
            }
            assert_eq!(component, Component::Rtp);
            let p = RtpPacket::parse(&bytes).expect("we send valid RTP");
            sent.push(Sent {
                at: t,
                seq: p.header.sequence_number,
                ts: p.header.timestamp,
                marker: p.header.marker,
                payload: p.payload.to_vec(),
            });
        }
        assert!(session.poll_timeout() > now, "poll_timeout moves forward");
        t += Duration::from_millis(1);
    }
    sent
}

fn is_silence(payload: &[u8]) -> bool {
    payload.iter().all(|&b| b == 0xFF)
}

#[test]
fn paces_500_packets_in_10_s_with_continuous_seq_and_ts_across_two_prompts() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, SessionConfig::default(), start);
    let sent = drive(
        &mut s,
        start,
        Duration::ZERO,
        Duration::from_secs(10),
        &mut |s, t| {
            if t == Duration::from_secs(1) {
                // A Piper prompt: 1 s at 22050 Hz.
                s.queue_playback(&tone(440.0, 22_050, 22_050, 0.5), 22_050)
                    .unwrap();
            }
            if t == Duration::from_secs(4) {
                // A second prompt at another rate, after 2 s of silence.
                s.queue_playback(&tone(660.0, 16_000, 8_000, 0.5), 16_000)
                    .unwrap();
            }
        },
    );
    assert_eq!(sent.len(), 500);
    for (i, p) in sent.iter().enumerate() {
        assert_eq!(
            p.at,
            Duration::from_millis(20 * i as u64),
            "packet {i} on time"
        );
        assert_eq!(p.payload.len(), 160);
    }
    for w in sent.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "seq continuous");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "ts continuous");
    }
    let markers: Vec<Duration> = sent.iter().filter(|p| p.marker).map(|p| p.at).collect();
    assert_eq!(
        markers,
        vec![
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(4)
        ],
        "marker on stream start and on each talkspurt"
    );
    let talking = sent.iter().filter(|p| !is_silence(&p.payload)).count();
    // 1 s + 0.5 s of audio = 75 frames (a resampler tail may round up one frame).
    assert!((75..=77).contains(&talking), "{talking} frames of speech");
    assert!(is_silence(&sent[49].payload) && !is_silence(&sent[50].payload));
}

#[test]
fn suppressed_idle_sends_nothing_but_keeps_timestamps_in_step() {
    let start = t0();
    let config = SessionConfig {
        idle: IdleMode::Suppress,
        ..SessionConfig::default()
    };
    let mut s = common::session(CodecKind::Pcma, config, start);
    let sent = drive(
        &mut s,
        start,
        Duration::ZERO,
        Duration::from_secs(3),
        &mut |s, t| {
            if t == Duration::from_millis(100) || t == Duration::from_millis(2_000) {
                s.queue_playback(&tone(440.0, 8_000, 1_600, 0.5), 8_000)
                    .unwrap();
            }
        },
    );
    assert_eq!(sent.len(), 20);
    let (a, b) = (&sent[9], &sent[10]);
    assert_eq!(
        b.seq,
        a.seq.wrapping_add(1),
        "no sequence gap across silence"
    );
    let elapsed = (b.at - a.at).as_millis() as u32;
    assert_eq!(
        b.ts.wrapping_sub(a.ts),
        elapsed * 8,
        "timestamp follows real time"
    );
    assert!(sent[0].marker && sent[10].marker);
    assert_eq!(sent.iter().filter(|p| p.marker).count(), 2);
}

#[test]
fn barge_in_flushes_playback_within_one_frame() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, SessionConfig::default(), start);
    let flush_at = Duration::from_millis(1_210);
    let sent = drive(
        &mut s,
        start,
        Duration::ZERO,
        Duration::from_secs(3),
        &mut |s, t| {
            if t == Duration::from_secs(1) {
                s.queue_playback(&tone(440.0, 8_000, 40_000, 0.5), 8_000)
                    .unwrap();
            }
            if t == flush_at {
                s.flush_playback();
                assert_eq!(s.queued_playback(), Duration::ZERO);
            }
        },
    );
    let last_speech = sent
        .iter()
        .filter(|p| !is_silence(&p.payload))
        .map(|p| p.at)
        .max()
        .unwrap();
    assert!(
        last_speech < flush_at,
        "nothing after the flush: {last_speech:?}"
    );
    assert!(flush_at - last_speech <= Duration::from_millis(20));
    assert_eq!(sent.len(), 150, "the stream itself goes on");
}

#[test]
fn late_driver_catches_up_a_little_then_skips() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, SessionConfig::default(), start);
    let mut seqs = Vec::new();
    let mut tss = Vec::new();
    for now in [
        start,
        start + Duration::from_millis(60),
        start + Duration::from_millis(1_000),
    ] {
        while let Some(t) = s.poll_transmit(now) {
            if let Ok(p) = RtpPacket::parse(&t.bytes) {
                if classify(&t.bytes) == PacketKind::Rtp {
                    seqs.push(p.header.sequence_number);
                    tss.push(p.header.timestamp);
                }
            }
        }
    }
    // 0 ms: 1 packet; 60 ms: 3 more (20, 40, 60); 1000 ms: skip to the schedule.
    assert_eq!(seqs.len(), 5);
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert_eq!(tss[3].wrapping_sub(tss[0]), 480);
    assert_eq!(
        tss[4].wrapping_sub(tss[0]),
        8_000,
        "timestamp of t = 1000 ms"
    );
}

#[test]
fn ssrc_and_initial_numbers_come_from_the_seed() {
    let start = t0();
    let make = |seed| {
        let config = SessionConfig {
            seed,
            ..SessionConfig::default()
        };
        let mut s = common::session(CodecKind::Pcmu, config, start);
        let t = s.poll_transmit(start).unwrap();
        assert_eq!(t.destination, addr(common::SDP_ADDR));
        let p = RtpPacket::parse(&t.bytes).unwrap().header;
        (p.ssrc, p.sequence_number, p.timestamp)
    };
    assert_eq!(make(1), make(1));
    assert_ne!(make(1), make(2));
}

#[test]
fn honours_a_30_ms_ptime() {
    let start = t0();
    let mut params = common::params(CodecKind::Pcma);
    params.ptime_ms = 30;
    let mut s =
        MediaSession::new(start, common::wallclock(), params, SessionConfig::default()).unwrap();
    let sent = drive(
        &mut s,
        start,
        Duration::ZERO,
        Duration::from_millis(300),
        &mut |_, _| {},
    );
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|p| p.payload.len() == 240));
    assert!(sent
        .windows(2)
        .all(|w| w[1].at - w[0].at == Duration::from_millis(30)
            && w[1].ts.wrapping_sub(w[0].ts) == 240));
}
