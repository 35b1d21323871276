//! Sending DTMF as RFC 4733 telephone events (a B2BUA passing a key press from one
//! leg to the other), in virtual time: what goes on the wire, and that a second
//! session fed those packets reports the digit exactly once.

mod common;

use common::{addr, t0, tone, PEER_ADDR};
use sofia_media::dtmf::EventPayload;
use sofia_media::rtcp::{classify, PacketKind};
use sofia_media::rtp::RtpPacket;
use sofia_media::session::{DtmfSendError, DTMF_DEFAULT_DURATION, DTMF_MAX_QUEUED};
use sofia_media::{
    negotiate, CodecKind, Direction, Event, IdleMode, MediaConfig, MediaParams, MediaSession,
    SessionConfig,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const PT_EVENT: u8 = 101;

#[derive(Debug, Clone)]
struct Sent {
    at: Duration,
    pt: u8,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
    bytes: Vec<u8>,
}

impl Sent {
    fn event(&self) -> EventPayload {
        assert_eq!(self.pt, PT_EVENT, "{self:?}");
        EventPayload::parse(&self.payload).expect("a 4-byte event payload")
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        output_rate: None,
        ..SessionConfig::default()
    }
}

/// Drives `s` from `from` to `to` in 1 ms steps, collecting RTP; `actions` run
/// first at each instant.
fn drive(
    s: &mut MediaSession,
    start: Instant,
    from: Duration,
    to: Duration,
    actions: &mut dyn FnMut(&mut MediaSession, Instant, Duration),
) -> Vec<Sent> {
    let mut sent = Vec::new();
    let mut t = from;
    while t < to {
        let now = start + t;
        actions(s, now, t);
        s.handle_timeout(now);
        while let Some(tx) = s.poll_transmit(now) {
            if classify(&tx.bytes) != PacketKind::Rtp {
                continue;
            }
            let p = RtpPacket::parse(&tx.bytes).expect("we send valid RTP");
            sent.push(Sent {
                at: t,
                pt: p.header.payload_type,
                seq: p.header.sequence_number,
                ts: p.header.timestamp,
                marker: p.header.marker,
                payload: p.payload.to_vec(),
                bytes: tx.bytes.clone(),
            });
        }
        while s.poll_event().is_some() {}
        t += Duration::from_millis(1);
    }
    sent
}

/// Sends `digits` (each `duration` long) at `at` and drives one second.
fn send_digits(
    s: &mut MediaSession,
    start: Instant,
    digits: &str,
    duration: Duration,
) -> Vec<Sent> {
    let at = Duration::from_millis(300);
    drive(
        s,
        start,
        Duration::ZERO,
        Duration::from_secs(1),
        &mut |s, now, t| {
            if t == at {
                for d in digits.chars() {
                    s.send_dtmf(now, d, duration).expect("digit queued");
                }
            }
        },
    )
}

/// Feeds `sent` to a fresh session as its peer's stream, at the instants they
/// were sent, and returns the digits it reports.
fn loop_back(params: MediaParams, start: Instant, sent: &[Sent]) -> Vec<(char, Duration)> {
    let mut peer =
        MediaSession::new(start, common::wallclock(), params, config()).expect("session starts");
    let mut digits = Vec::new();
    let mut collect = |peer: &mut MediaSession, now: Instant| {
        peer.handle_timeout(now);
        while let Some(e) = peer.poll_event() {
            if let Event::Dtmf { digit, duration } = e {
                digits.push((digit, duration));
            }
        }
    };
    for p in sent {
        let now = start + p.at;
        peer.handle_datagram(now, addr(PEER_ADDR), &p.bytes);
        collect(&mut peer, now);
    }
    // Long past the detector's timeout for an event whose end was lost.
    collect(&mut peer, start + Duration::from_secs(3));
    digits
}

fn assert_consecutive(sent: &[Sent]) {
    for w in sent.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq.wrapping_add(1),
            "consecutive seq: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
}

#[test]
fn digit_5_for_100_ms_goes_out_as_telephone_events_between_audio() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, config(), start);
    // Audio plays before, during and after the digit.
    s.queue_playback(&tone(440.0, 8_000, 8_000, 0.5), 8_000)
        .unwrap();
    let sent = send_digits(&mut s, start, "5", DTMF_DEFAULT_DURATION);
    assert_eq!(sent.len(), 50, "one packet per 20 ms frame");
    assert_consecutive(&sent);

    let first = sent.iter().position(|p| p.pt == PT_EVENT).expect("events");
    let events = &sent[first..first + 7];
    assert!(sent[..first].iter().all(|p| p.pt == 0));
    assert!(sent[first + 7..].iter().all(|p| p.pt == 0));
    assert_eq!(
        events[0].at,
        Duration::from_millis(300),
        "the frame due then"
    );

    let ts = events[0].ts;
    assert_eq!(
        sent[first - 1].ts,
        ts.wrapping_sub(160),
        "the event's start"
    );
    assert!(events.iter().all(|p| p.ts == ts), "one timestamp per event");
    let markers: Vec<bool> = events.iter().map(|p| p.marker).collect();
    assert_eq!(markers, [true, false, false, false, false, false, false]);
    let payloads: Vec<EventPayload> = events.iter().map(Sent::event).collect();
    assert!(payloads.iter().all(|e| e.event == 5 && e.volume == 10));
    let durations: Vec<u16> = payloads.iter().map(|e| e.duration).collect();
    assert_eq!(durations, [160, 320, 480, 640, 800, 800, 800]);
    let ends: Vec<bool> = payloads.iter().map(|e| e.end).collect();
    assert_eq!(ends, [false, false, false, false, true, true, true]);

    // Audio resumes in step, as a new talkspurt; the voice under the tone (seven
    // frames) was dropped, not delayed: 50 frames took 1 s of the queued second.
    let after = &sent[first + 7];
    assert_eq!(after.ts, ts.wrapping_add(7 * 160));
    assert!(after.marker);
    assert!(!sent[first + 8].marker);
    assert_eq!(s.queued_playback(), Duration::ZERO);
    assert_eq!(s.queued_dtmf(), 0);
    assert_eq!(s.stats().packets_sent, 50);
}

#[test]
fn loop_back_to_a_second_session_reports_the_digit_exactly_once() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, config(), start);
    let sent = send_digits(&mut s, start, "5", DTMF_DEFAULT_DURATION);
    let digits = loop_back(common::params(CodecKind::Pcmu), start, &sent);
    assert_eq!(digits, [('5', Duration::from_millis(100))]);
}

#[test]
fn queued_digits_follow_back_to_back_as_separate_events() {
    let start = t0();
    let mut s = common::session(
        CodecKind::Pcma,
        SessionConfig {
            idle: IdleMode::Suppress,
            ..config()
        },
        start,
    );
    // Events go out even when idle audio is suppressed; 10 ms is raised to 40 ms.
    let sent = drive(
        &mut s,
        start,
        Duration::ZERO,
        Duration::from_secs(1),
        &mut |s, now, t| {
            if t == Duration::from_millis(100) {
                s.send_dtmf(now, '1', Duration::from_millis(10)).unwrap();
                s.send_dtmf(now, '#', Duration::from_millis(100)).unwrap();
                s.send_dtmf(now, 'd', Duration::from_millis(60)).unwrap();
                assert_eq!(s.queued_dtmf(), 3);
            }
        },
    );
    assert!(
        sent.iter().all(|p| p.pt == PT_EVENT),
        "nothing else while idle"
    );
    assert_consecutive(&sent);
    let summary: Vec<(u8, u16, bool, bool)> = sent
        .iter()
        .map(|p| {
            let e = p.event();
            (e.event, e.duration, e.end, p.marker)
        })
        .collect();
    let mut expected = vec![(1, 160, false, true), (1, 320, true, false)];
    expected.extend([(1, 320, true, false); 2]);
    expected.push((11, 160, false, true));
    expected.extend([320, 480, 640].map(|d| (11, d, false, false)));
    expected.extend([(11, 800, true, false); 3]);
    expected.push((15, 160, false, true));
    expected.push((15, 320, false, false));
    expected.extend([(15, 480, true, false); 3]);
    assert_eq!(summary, expected);
    // Each event has its own timestamp: its first frame's.
    assert_eq!(sent[4].ts, sent[0].ts.wrapping_add(4 * 160));
    assert_eq!(sent[11].ts, sent[4].ts.wrapping_add(7 * 160));
    assert_eq!(sent[0].at, Duration::from_millis(100));
    assert_eq!(
        sent.last().unwrap().at,
        Duration::from_millis(100 + 15 * 20)
    );

    let digits = loop_back(common::params(CodecKind::Pcma), start, &sent);
    let keys: Vec<(char, u64)> = digits
        .iter()
        .map(|&(d, t)| (d, t.as_millis() as u64))
        .collect();
    assert_eq!(keys, [('1', 40), ('#', 100), ('D', 60)]);
}

#[test]
fn without_telephone_event_or_a_valid_digit_nothing_is_queued() {
    let start = t0();
    let mut params = common::params(CodecKind::Pcmu);
    params.telephone_event = None;
    let mut s = MediaSession::new(start, common::wallclock(), params, config()).unwrap();
    assert_eq!(
        s.send_dtmf(start, '5', DTMF_DEFAULT_DURATION),
        Err(DtmfSendError::NotNegotiated)
    );

    let mut s = common::session(CodecKind::Pcmu, config(), start);
    for bad in ['E', 'x', ' ', '\u{663}'] {
        assert_eq!(
            s.send_dtmf(start, bad, DTMF_DEFAULT_DURATION),
            Err(DtmfSendError::InvalidDigit(bad))
        );
    }
    for _ in 0..DTMF_MAX_QUEUED {
        s.send_dtmf(start, '0', DTMF_DEFAULT_DURATION).unwrap();
    }
    assert_eq!(
        s.send_dtmf(start, '0', DTMF_DEFAULT_DURATION),
        Err(DtmfSendError::QueueFull)
    );

    // On hold nothing is sent: new digits are refused, queued ones dropped.
    let mut held = common::params(CodecKind::Pcmu);
    held.direction = Direction::RecvOnly;
    s.update(start, held).unwrap();
    assert_eq!(
        s.send_dtmf(start, '5', DTMF_DEFAULT_DURATION),
        Err(DtmfSendError::NotSending)
    );
    assert!(s.poll_transmit(start + Duration::from_millis(40)).is_none());
    assert_eq!(s.queued_dtmf(), 0);
}

#[test]
fn opus_next_to_telephone_event_8000_keeps_48_khz_timestamps_and_8_khz_durations() {
    // baresip offers only telephone-event/8000 next to opus/48000; the answer keeps it.
    let offer = include_bytes!("../../../fixtures/sdp/baresip-1.0.0-opus.sdp");
    let media = MediaConfig::new(
        vec![CodecKind::Opus, CodecKind::Pcma],
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        16384,
    );
    let params = negotiate(offer, &media).expect("negotiates").params;
    assert_eq!((params.codec, params.clock_rate), (CodecKind::Opus, 48_000));
    let te = params.telephone_event.expect("telephone-event negotiated");
    assert_eq!((te.payload_type, te.clock_rate), (PT_EVENT, 8_000));

    let start = t0();
    let mut s = MediaSession::new(start, common::wallclock(), params.clone(), config()).unwrap();
    let sent = send_digits(&mut s, start, "#", DTMF_DEFAULT_DURATION);
    assert_consecutive(&sent);
    let first = sent.iter().position(|p| p.pt == PT_EVENT).expect("events");
    let events = &sent[first..first + 7];
    assert!(events.iter().all(|p| p.ts == events[0].ts));
    let durations: Vec<(u16, bool)> = events
        .iter()
        .map(|p| (p.event().duration, p.event().end))
        .collect();
    assert_eq!(
        durations,
        [
            (160, false),
            (320, false),
            (480, false),
            (640, false),
            (800, true),
            (800, true),
            (800, true)
        ],
        "durations on the 8 kHz event clock"
    );
    assert_eq!(sent[first - 1].ts, events[0].ts.wrapping_sub(960));
    assert_eq!(sent[first + 7].ts, events[0].ts.wrapping_add(7 * 960));
    assert!(sent[first + 7..]
        .iter()
        .all(|p| p.pt == params.payload_type));

    let digits = loop_back(params, start, &sent);
    assert_eq!(digits, [('#', Duration::from_millis(100))]);
}
