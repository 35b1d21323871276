//! RTP injection and hijacking (issue #10, finding 6), in virtual time: once the
//! phone's stream is latched, a stranger who guesses the port can neither play
//! audio into the call, nor press keys, nor take the stream over; a phone that
//! really moves is still followed.

mod common;

use common::{addr, rtp, t0, PEER_ADDR, SDP_ADDR};
use sofia_media::dtmf::EventPayload;
use sofia_media::rtcp::{classify, write_report, PacketKind, ReportBlock};
use sofia_media::{CodecKind, Event, FrameKind, MediaSession, SessionConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PHONE_SSRC: u32 = 0x1111_1111;
const ATTACKER_SSRC: u32 = 0x6666_6666;
const ATTACKER: &str = "203.0.113.66:40000";
/// mu-law silence: decodes to 0.
const QUIET: u8 = 0xFF;
/// mu-law near full scale: decodes to about +0.98.
const LOUD: u8 = 0x80;

/// A session at the codec rate (8 kHz frames of 160 samples) and what came out of it.
struct Call {
    s: MediaSession,
    start: Instant,
    /// Received frames whose audio is loud (injected).
    loud: usize,
    /// Received frames.
    received: usize,
    latched: Vec<(Duration, SocketAddr)>,
    digits: Vec<char>,
    /// Destinations of RTP sent.
    sent_to: Vec<SocketAddr>,
}

impl Call {
    fn new() -> Self {
        let start = t0();
        let config = SessionConfig {
            output_rate: None,
            ..SessionConfig::default()
        };
        Self {
            s: common::session(CodecKind::Pcmu, config, start),
            start,
            loud: 0,
            received: 0,
            latched: Vec::new(),
            digits: Vec::new(),
            sent_to: Vec::new(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    fn audio(&mut self, ms: u64, from: &str, ssrc: u32, seq: u16, fill: u8) {
        let bytes = rtp(0, seq, u32::from(seq) * 160, ssrc, false, &[fill; 160]);
        self.s.handle_datagram(self.at(ms), addr(from), &bytes);
    }

    /// Runs timers and collects what came out, at `ms`.
    fn tick(&mut self, ms: u64) {
        let now = self.at(ms);
        self.s.handle_timeout(now);
        while let Some(t) = self.s.poll_transmit(now) {
            if classify(&t.bytes) == PacketKind::Rtp {
                self.sent_to.push(t.destination);
            }
        }
        while let Some(e) = self.s.poll_event() {
            match e {
                Event::Audio(f) if f.kind == FrameKind::Received => {
                    self.received += 1;
                    if f.samples.iter().any(|x| x.abs() > 0.5) {
                        self.loud += 1;
                    }
                }
                Event::Latched { destination } => {
                    self.latched.push((Duration::from_millis(ms), destination));
                }
                Event::Dtmf { digit, .. } => self.digits.push(digit),
                _ => {}
            }
        }
    }
}

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

#[test]
fn injected_audio_from_a_second_address_is_not_played_and_is_counted() {
    // The attacker sends loud audio under its own SSRC, and then under the
    // phone's SSRC with sequence numbers just ahead of the phone's.
    for attacker_ssrc in [ATTACKER_SSRC, PHONE_SSRC] {
        let mut c = Call::new();
        let mut injected = 0;
        for ms in 0..3_000u64 {
            if ms % 20 == 0 {
                let i = (ms / 20) as u16;
                c.audio(ms, PEER_ADDR, PHONE_SSRC, i, QUIET);
                if i >= 10 {
                    // Bursts of three: a short run of its own each time.
                    for k in 0..3 {
                        c.audio(ms + 1, ATTACKER, attacker_ssrc, i + k, LOUD);
                        injected += 1;
                    }
                }
            }
            c.tick(ms);
        }
        assert_eq!(
            c.loud, 0,
            "attacker SSRC {attacker_ssrc:#x}: nothing injected plays"
        );
        assert!(c.received > 100, "the phone's audio plays ({})", c.received);
        let stats = c.s.stats();
        assert_eq!(stats.rtp_rejected, injected);
        assert_eq!(stats.packets_received, 150);
        assert_eq!(stats.ssrc_changes, 0);
        assert_eq!(c.latched, vec![(Duration::ZERO, addr(PEER_ADDR))]);
    }
}

#[test]
fn injected_dtmf_from_a_second_address_is_not_read() {
    let mut c = Call::new();
    for ms in 0..2_000u64 {
        if ms % 20 == 0 {
            let i = (ms / 20) as u16;
            c.audio(ms, PEER_ADDR, PHONE_SSRC, i, QUIET);
            if (20..30).contains(&i) {
                let end = i >= 27;
                let bytes = rtp(
                    101,
                    500 + i,
                    4242,
                    ATTACKER_SSRC,
                    i == 20,
                    &event(1, end, 160),
                );
                c.s.handle_datagram(c.at(ms + 1), addr(ATTACKER), &bytes);
            }
        }
        c.tick(ms);
    }
    assert!(c.digits.is_empty(), "no key pressed: {:?}", c.digits);
    assert_eq!(c.s.stats().rtp_rejected, 10);
}

#[test]
fn a_flood_from_a_new_address_never_relatches_while_the_phone_keeps_sending() {
    // Ten, then a hundred consistent packets from the attacker between two of the
    // phone's, then a flood of one per millisecond for four seconds.
    let mut c = Call::new();
    let mut aseq = 30_000u16;
    let mut burst = |c: &mut Call, ms: u64, n: usize| {
        for _ in 0..n {
            c.audio(ms, ATTACKER, ATTACKER_SSRC, aseq, LOUD);
            aseq = aseq.wrapping_add(1);
        }
    };
    for ms in 0..5_000u64 {
        if ms % 20 == 0 {
            c.audio(ms, PEER_ADDR, PHONE_SSRC, (ms / 20) as u16, QUIET);
        }
        match ms {
            105 => burst(&mut c, ms, 10),
            205 => burst(&mut c, ms, 100),
            1_000.. => burst(&mut c, ms, 1),
            _ => {}
        }
        c.tick(ms);
    }
    assert_eq!(c.latched, vec![(Duration::ZERO, addr(PEER_ADDR))]);
    assert_eq!(c.s.destination(), addr(PEER_ADDR));
    assert!(c.sent_to.len() > 200);
    assert!(c.sent_to[1..].iter().all(|d| *d == addr(PEER_ADDR)));
    assert_eq!(c.loud, 0);
    assert_eq!(c.s.stats().rtp_rejected, 110 + 4_000);
}

#[test]
fn a_phone_that_moves_is_followed_once_its_old_address_goes_silent() {
    // NAT rebinding: the same stream (SSRC, sequence numbers) carries on from a
    // new address at 2 s; then the phone restarts its stream (new SSRC and
    // sequence space) from a third address at 5 s.
    let moved = "192.0.2.51:31002";
    let moved_again = "192.0.2.52:31004";
    let mut c = Call::new();
    for ms in 0..8_000u64 {
        if ms % 20 == 0 {
            let i = (ms / 20) as u16;
            if ms < 2_000 {
                c.audio(ms, PEER_ADDR, PHONE_SSRC, i, QUIET);
            } else if ms < 5_000 {
                c.audio(ms, moved, PHONE_SSRC, i, QUIET);
            } else {
                c.audio(ms, moved_again, 0xABCD, 9_000 + i, QUIET);
            }
        }
        c.tick(ms);
    }
    // The old address last sent at 1 980 ms: the move is followed at the first
    // packet a second after that, not before.
    assert_eq!(
        c.latched,
        vec![
            (Duration::ZERO, addr(PEER_ADDR)),
            (Duration::from_millis(2_980), addr(moved)),
            (Duration::from_millis(5_980), addr(moved_again)),
        ]
    );
    assert_eq!(c.s.destination(), addr(moved_again));
    assert_eq!(c.sent_to.last(), Some(&addr(moved_again)));
    assert_eq!(c.s.stats().ssrc_changes, 1);
    // The 49 packets from each new address before its latch were dropped.
    assert_eq!(c.s.stats().rtp_rejected, 98);
    // The stream plays after each move.
    let before = c.received;
    for ms in 8_000..9_000u64 {
        if ms % 20 == 0 {
            c.audio(ms, moved_again, 0xABCD, 9_000 + (ms / 20) as u16, QUIET);
        }
        c.tick(ms);
    }
    assert!(c.received - before >= 45, "{}", c.received - before);
}

#[test]
fn a_second_ssrc_from_the_latched_address_is_rejected_while_the_first_is_live() {
    let mut c = Call::new();
    let mut injected = 0;
    for ms in 0..3_000u64 {
        if ms % 20 == 0 {
            let i = (ms / 20) as u16;
            c.audio(ms, PEER_ADDR, PHONE_SSRC, i, QUIET);
            if i >= 10 {
                for k in 0..4 {
                    c.audio(ms + 1, PEER_ADDR, ATTACKER_SSRC, 4 * i + k, LOUD);
                    injected += 1;
                }
            }
        }
        c.tick(ms);
    }
    assert_eq!(c.loud, 0);
    assert_eq!(c.s.stats().ssrc_changes, 0);
    assert_eq!(c.s.stats().rtp_rejected, injected);
}

#[test]
fn a_new_ssrc_is_taken_after_the_old_one_goes_quiet_or_at_once_after_a_reinvite() {
    let mut c = Call::new();
    for i in 0..50u16 {
        c.audio(20 * u64::from(i), PEER_ADDR, PHONE_SSRC, i, QUIET);
    }
    // 100 ms after the last packet: too soon for a new SSRC.
    c.audio(1_080, PEER_ADDR, 0xAAAA, 1, QUIET);
    assert_eq!(c.s.stats().rtp_rejected, 1);
    // 200 ms: the old stream has stopped, the new one is the phone's.
    c.audio(1_180, PEER_ADDR, 0xAAAA, 2, QUIET);
    assert_eq!(c.s.stats().ssrc_changes, 1);
    assert_eq!(c.s.stats().rtp_rejected, 1);
    // A re-INVITE (here, hold and resume with the same address): the phone may
    // start a new SSRC at once, with no gap.
    c.audio(1_200, PEER_ADDR, 0xAAAA, 3, QUIET);
    let params = c.s.params().clone();
    c.s.update(c.at(1_210), params).unwrap();
    let received = c.s.stats().packets_received;
    c.audio(1_220, PEER_ADDR, 0xBBBB, 500, QUIET);
    assert_eq!(c.s.stats().packets_received, received + 1);
    assert_eq!(c.s.stats().ssrc_changes, 2);
    // And that one is pinned in turn.
    c.audio(1_230, PEER_ADDR, 0xAAAA, 4, LOUD);
    assert_eq!(c.s.stats().rtp_rejected, 2);
}

#[test]
fn the_sdp_address_wins_over_a_first_packet_from_elsewhere() {
    // The attacker races the phone to the first packet; the phone sends from the
    // address its SDP gave.
    let mut c = Call::new();
    c.audio(0, ATTACKER, ATTACKER_SSRC, 1, LOUD);
    for ms in 0..2_000u64 {
        if ms % 20 == 0 && ms > 0 {
            let i = (ms / 20) as u16;
            c.audio(ms, SDP_ADDR, PHONE_SSRC, i, QUIET);
            c.audio(ms + 1, ATTACKER, ATTACKER_SSRC, 1 + i, LOUD);
        }
        c.tick(ms);
    }
    assert_eq!(
        c.latched,
        vec![
            (Duration::ZERO, addr(ATTACKER)),
            (Duration::from_millis(20), addr(SDP_ADDR)),
        ]
    );
    assert_eq!(c.s.destination(), addr(SDP_ADDR));
    assert_eq!(c.s.stats().rtp_rejected, 99);
}

#[test]
fn a_reinvite_with_a_new_address_latches_afresh() {
    let mut c = Call::new();
    for i in 0..10u16 {
        c.audio(20 * u64::from(i), PEER_ADDR, PHONE_SSRC, i, QUIET);
        c.tick(20 * u64::from(i));
    }
    let mut params = c.s.params().clone();
    params.remote_rtp = addr("198.51.100.9:5000");
    c.s.update(c.at(200), params).unwrap();
    let elsewhere = "192.0.2.60:6000";
    c.audio(220, elsewhere, 0x7777, 1, QUIET);
    c.tick(220);
    assert_eq!(c.s.destination(), addr(elsewhere));
    assert_eq!(
        c.latched.last(),
        Some(&(Duration::from_millis(220), addr(elsewhere)))
    );
}

fn receiver_report(about: u32, cumulative_lost: i32) -> Vec<u8> {
    let block = ReportBlock {
        ssrc: about,
        fraction_lost: 0,
        cumulative_lost,
        extended_highest_seq: 1000,
        jitter: 8,
        last_sr: 0,
        delay_since_last_sr: 0,
    };
    let mut rr = Vec::new();
    write_report(0xABCD, None, Some(block), "peer", &mut rr);
    rr
}

#[test]
fn rtcp_from_a_foreign_address_is_rejected_after_rtcp_latches() {
    let mut c = Call::new();
    let ours = c.s.ssrc();
    c.audio(0, PEER_ADDR, PHONE_SSRC, 0, QUIET);
    let phone_rtcp = addr("192.0.2.50:31001");
    c.s.handle_datagram(c.at(10), phone_rtcp, &receiver_report(ours, 3));
    // A forged report (claiming heavy loss) from elsewhere is not read.
    c.s.handle_datagram(c.at(20), addr(ATTACKER), &receiver_report(ours, 999));
    let stats = c.s.stats();
    assert_eq!(stats.remote.map(|r| r.cumulative_lost), Some(3));
    assert_eq!((stats.rtcp_received, stats.rtcp_rejected), (1, 1));
    // Nor from the phone's IP on another port.
    c.s.handle_datagram(
        c.at(30),
        addr("192.0.2.50:9999"),
        &receiver_report(ours, 999),
    );
    assert_eq!(c.s.stats().rtcp_rejected, 2);
    // Our reports still go to the phone.
    let mut rtcp_to = Vec::new();
    for ms in 0..6_000u64 {
        let now = c.at(ms);
        while let Some(t) = c.s.poll_transmit(now) {
            if classify(&t.bytes) == PacketKind::Rtcp {
                rtcp_to.push(t.destination);
            }
        }
    }
    assert!(!rtcp_to.is_empty());
    assert!(rtcp_to.iter().all(|d| *d == phone_rtcp), "{rtcp_to:?}");
}

#[test]
fn rtcp_follows_a_phone_that_moved_to_a_new_ip() {
    let mut c = Call::new();
    let ours = c.s.ssrc();
    c.audio(0, PEER_ADDR, PHONE_SSRC, 0, QUIET);
    c.s.handle_datagram(
        c.at(10),
        addr("192.0.2.50:31001"),
        &receiver_report(ours, 3),
    );
    // The phone moves to a new IP, keeping its ports.
    let moved = "192.0.2.70:31000";
    for i in 1..=60u16 {
        c.audio(1_000 + 20 * u64::from(i), moved, PHONE_SSRC, i, QUIET);
    }
    assert_eq!(c.s.destination(), addr(moved));
    c.s.handle_datagram(
        c.at(2_500),
        addr("192.0.2.70:31001"),
        &receiver_report(ours, 4),
    );
    let stats = c.s.stats();
    assert_eq!(stats.remote.map(|r| r.cumulative_lost), Some(4));
    assert_eq!(stats.rtcp_rejected, 0);
}

#[test]
fn with_rtcp_mux_rtcp_is_read_only_from_the_latched_rtp_source() {
    let start = t0();
    let mut params = common::params(CodecKind::Pcmu);
    params.rtcp_mux = true;
    params.remote_rtcp = params.remote_rtp;
    let mut s =
        MediaSession::new(start, common::wallclock(), params, SessionConfig::default()).unwrap();
    let ours = s.ssrc();
    s.handle_datagram(
        start,
        addr(PEER_ADDR),
        &rtp(0, 0, 0, PHONE_SSRC, false, &[QUIET; 160]),
    );
    s.handle_datagram(start, addr(ATTACKER), &receiver_report(ours, 999));
    s.handle_datagram(start, addr(PEER_ADDR), &receiver_report(ours, 3));
    let stats = s.stats();
    assert_eq!(stats.remote.map(|r| r.cumulative_lost), Some(3));
    assert_eq!((stats.rtcp_received, stats.rtcp_rejected), (1, 1));
}
