//! Receive path in virtual time: jitter buffer and concealment under seeded loss,
//! reordering, duplication and bursts; wraparound; SSRC changes; symmetric RTP
//! latching; STUN and RTCP on the media port; inactivity.

mod common;

use common::{addr, rtp, t0, PEER_ADDR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sofia_media::g711::{i16_to_f32, mulaw_to_linear};
use sofia_media::offer_answer::Direction;
use sofia_media::rtcp::{write_report, ReportBlock, STUN_MAGIC_COOKIE};
use sofia_media::{CodecKind, Event, FrameKind, MediaSession, SessionConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const SSRC: u32 = 0x1234_5678;

/// A packet index written into the first two mu-law codes of a payload.
fn payload_for(index: u32) -> Vec<u8> {
    let mut p = vec![0xFFu8; 160];
    p[0] = 0x80 | ((index >> 6) & 0x3F) as u8;
    p[1] = 0x80 | (index & 0x3F) as u8;
    p
}

/// Reads the index back from a decoded frame.
fn index_of(samples: &[f32]) -> u32 {
    let codes: HashMap<u32, u8> = (0x80..=0xFFu8)
        .map(|c| (i16_to_f32(mulaw_to_linear(c)).to_bits(), c))
        .collect();
    let hi = codes[&samples[0].to_bits()] & 0x3F;
    let lo = codes[&samples[1].to_bits()] & 0x3F;
    (u32::from(hi) << 6) | u32::from(lo)
}

struct Arrival {
    at: Duration,
    bytes: Vec<u8>,
    from: SocketAddr,
}

/// Sends `count` 20 ms packets starting at seq `seq0` through a network with the
/// given behaviour (with loss, also 3-5 packet bursts and 2% duplicates);
/// returns arrivals sorted by time.
fn network(seed: u64, count: u32, seq0: u16, loss: f64, max_jitter_ms: u64) -> Vec<Arrival> {
    let bursts = if loss > 0.0 { 0.005 } else { 0.0 };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut burst = 0;
    for i in 0..count {
        let sent = Duration::from_millis(20 * u64::from(i));
        if burst > 0 {
            burst -= 1;
            continue;
        }
        if rng.gen_bool(bursts) {
            burst = rng.gen_range(2..5); // a burst loss of 3-5 packets
            continue;
        }
        if rng.gen_bool(loss) {
            continue;
        }
        let bytes = rtp(
            0,
            seq0.wrapping_add(i as u16),
            (i * 160).wrapping_add(0xFFFF_F000),
            SSRC,
            i == 0,
            &payload_for(i),
        );
        let copies = if loss > 0.0 && rng.gen_bool(0.02) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = Duration::from_millis(20 + rng.gen_range(0..=max_jitter_ms));
            out.push(Arrival {
                at: sent + delay,
                bytes: bytes.clone(),
                from: addr(PEER_ADDR),
            });
        }
    }
    out.sort_by_key(|a| a.at);
    out
}

struct Played {
    at: Duration,
    kind: FrameKind,
    index: Option<u32>,
}

fn run(
    session: &mut MediaSession,
    start: Instant,
    arrivals: &[Arrival],
    until: Duration,
) -> Vec<Played> {
    let mut played = Vec::new();
    let mut next = 0;
    let mut t = Duration::ZERO;
    while t < until {
        let now = start + t;
        while next < arrivals.len() && arrivals[next].at <= t {
            session.handle_datagram(now, arrivals[next].from, &arrivals[next].bytes);
            next += 1;
        }
        session.handle_timeout(now);
        while session.poll_transmit(now).is_some() {}
        while let Some(e) = session.poll_event() {
            if let Event::Audio(f) = e {
                assert_eq!(f.sample_rate, 8_000);
                assert_eq!(f.samples.len(), 160);
                let index = (f.kind == FrameKind::Received).then(|| index_of(&f.samples));
                played.push(Played {
                    at: t,
                    kind: f.kind,
                    index,
                });
            }
        }
        t += Duration::from_millis(1);
    }
    played
}

fn codec_rate_config() -> SessionConfig {
    SessionConfig {
        output_rate: None,
        ..SessionConfig::default()
    }
}

#[test]
fn clean_stream_plays_every_frame_in_order_with_minimum_delay() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    let arrivals = network(1, 250, 100, 0.0, 0);
    let played = run(
        &mut s,
        start,
        &arrivals,
        Duration::from_secs(5) + Duration::from_millis(100),
    );
    let received: Vec<u32> = played.iter().filter_map(|p| p.index).collect();
    assert_eq!(received, (0..250).collect::<Vec<_>>());
    let last = played.iter().rposition(|p| p.index.is_some()).unwrap();
    assert!(
        played[..last].iter().all(|p| p.kind == FrameKind::Received),
        "nothing concealed mid-stream"
    );
    // After the stream ends, a few frames are concealed before silence.
    assert!(played[last + 1..]
        .iter()
        .all(|p| p.kind != FrameKind::Received));
    // 20 ms network + 40 ms minimum playout delay.
    assert_eq!(played[0].at, Duration::from_millis(60));
}

#[test]
fn jitter_buffer_survives_loss_reordering_duplication_and_bursts() {
    for seed in 0..4 {
        let start = t0();
        let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
        // 5% loss, delay 20..80 ms (reordering within 60 ms), 2% duplicates,
        // occasional 3-5 packet bursts; seq and timestamps wrap during the run.
        let arrivals = network(seed, 1_000, 65_000, 0.05, 60);
        let sent_indices: std::collections::BTreeSet<u32> =
            arrivals.iter().map(|a| index_of_packet(&a.bytes)).collect();
        let until = Duration::from_millis(20_000 + 400);
        let played = run(&mut s, start, &arrivals, until);

        let received: Vec<u32> = played.iter().filter_map(|p| p.index).collect();
        assert!(
            received.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: in order, no duplicates"
        );
        // Nearly everything that arrived was played (a few late packets may be dropped).
        let ratio = received.len() as f64 / sent_indices.len() as f64;
        assert!(
            ratio > 0.97,
            "seed {seed}: played {ratio:.3} of what arrived"
        );
        // Output is continuous: one frame per 20 ms from the first frame on.
        for w in played.windows(2) {
            assert_eq!(
                w[1].at - w[0].at,
                Duration::from_millis(20),
                "seed {seed}: steady playout"
            );
        }
        // Gaps are concealed, not skipped: every lost index between two played
        // frames is covered by a concealed frame (or a dropped-for-latency one).
        let concealed = played
            .iter()
            .filter(|p| p.kind == FrameKind::Concealed)
            .count();
        let stats = s.stats().playout;
        assert!(concealed > 0, "seed {seed}: losses were concealed");
        let first = received[0];
        let last = *received.last().unwrap();
        let span = (last - first + 1) as u64;
        assert!(
            (received.len() as u64 + stats.concealed + stats.dropped + 2) >= span,
            "seed {seed}: every frame slot is played, concealed or dropped"
        );
        // Latency is bounded: send time + network + at most max_delay + one frame.
        for p in played.iter().filter(|p| p.index.is_some()) {
            let sent = Duration::from_millis(20 * u64::from(p.index.unwrap()));
            let latency = p.at - sent;
            assert!(
                latency <= Duration::from_millis(80 + 200 + 20),
                "seed {seed}: latency {latency:?}"
            );
        }
        let st = s.stats();
        assert!(
            st.playout.duplicates > 0,
            "seed {seed}: duplicates seen and dropped"
        );
        assert!(st.packets_lost > 0);
        assert!(
            st.jitter > Duration::from_millis(5),
            "jitter measured: {:?}",
            st.jitter
        );
    }
}

fn index_of_packet(bytes: &[u8]) -> u32 {
    let p = sofia_media::rtp::RtpPacket::parse(bytes).unwrap();
    (u32::from(p.payload[0] & 0x3F) << 6) | u32::from(p.payload[1] & 0x3F)
}

#[test]
fn playout_delay_adapts_to_jitter_and_back() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    // Heavy jitter (0..100 ms) for 10 s: the delay grows.
    let mut arrivals = network(9, 500, 0, 0.0, 100);
    // Then a calm network for 20 s (same stream, continuing indices).
    let calm = network(10, 1_500, 0, 0.0, 0);
    arrivals.extend(calm.into_iter().skip(500).map(|mut a| {
        a.at += Duration::ZERO;
        a
    }));
    arrivals.sort_by_key(|a| a.at);
    let played = run(
        &mut s,
        start,
        &arrivals,
        Duration::from_secs(30) + Duration::from_millis(300),
    );
    let latency = |from: u32, to: u32| {
        let l: Vec<Duration> = played
            .iter()
            .filter(|p| p.index.is_some_and(|i| (from..to).contains(&i)))
            .map(|p| p.at - Duration::from_millis(20 * u64::from(p.index.unwrap())))
            .collect();
        l.iter().sum::<Duration>() / l.len() as u32
    };
    let jittery = latency(300, 500);
    let calm = latency(1_300, 1_500);
    assert!(
        jittery >= Duration::from_millis(100),
        "jittery latency {jittery:?}"
    );
    assert!(
        calm <= Duration::from_millis(80),
        "calm latency {calm:?} came back down"
    );
    let concealed_in_calm = played
        .iter()
        .filter(|p| {
            (Duration::from_secs(25)..Duration::from_secs(30)).contains(&p.at)
                && p.kind != FrameKind::Received
        })
        .count();
    assert!(
        concealed_in_calm < 5,
        "{concealed_in_calm} frames not received: {:?}",
        played
            .iter()
            .filter(
                |p| (Duration::from_secs(25)..Duration::from_secs(30)).contains(&p.at)
                    && p.kind != FrameKind::Received
            )
            .map(|p| (p.at, p.kind))
            .collect::<Vec<_>>()
    );
}

#[test]
fn symmetric_rtp_latches_to_the_real_source_and_relatches_only_on_a_sustained_change() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    assert_eq!(s.destination(), addr(common::SDP_ADDR));
    let nat = addr("192.0.2.99:40000");
    let other = addr("192.0.2.77:50000");
    let mut seq = 0u16;
    let mut send = |s: &mut MediaSession, ms: u64, from: SocketAddr, n: usize| {
        for _ in 0..n {
            s.handle_datagram(
                start + Duration::from_millis(ms),
                from,
                &rtp(0, seq, u32::from(seq) * 160, SSRC, false, &[0xFF; 160]),
            );
            seq += 1;
        }
    };
    send(&mut s, 0, nat, 1);
    assert_eq!(s.destination(), nat);
    assert_eq!(s.poll_event(), Some(Event::Latched { destination: nat }));
    // Stray packets from elsewhere do not steal the stream, even ten in a row.
    send(&mut s, 20, other, 5);
    send(&mut s, 40, nat, 1);
    send(&mut s, 60, other, 10);
    assert_eq!(s.destination(), nat);
    // A sustained change (the phone moved: nothing from the old address for a
    // second, a steady stream from the new one) does.
    send(&mut s, 1_039, other, 1);
    assert_eq!(s.destination(), nat, "999 ms of silence is not yet a move");
    send(&mut s, 1_040, other, 1);
    assert_eq!(s.destination(), other);
    let t = s.poll_transmit(start).unwrap();
    assert_eq!(t.destination, other);
    // Packets with a payload type we did not negotiate latch nothing.
    let mut s2 = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    s2.handle_datagram(start, nat, &rtp(18, 1, 1, SSRC, false, &[0; 20]));
    assert_eq!(s2.destination(), addr(common::SDP_ADDR));
}

#[test]
fn stun_and_garbage_are_ignored_and_rtcp_is_read_into_stats() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    let mut stun = vec![0x00, 0x01, 0x00, 0x00];
    stun.extend_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
    stun.extend_from_slice(&[7; 12]);
    s.handle_datagram(start, addr(PEER_ADDR), &stun);
    s.handle_datagram(start, addr(PEER_ADDR), b"\r\n\r\n");
    s.handle_datagram(start, addr(PEER_ADDR), &[]);
    assert_eq!(s.stats().ignored, 3);
    assert_eq!(
        s.destination(),
        addr(common::SDP_ADDR),
        "STUN does not latch"
    );

    // The peer's RR about our stream: 10% loss, 80 samples of jitter.
    let mut rr = Vec::new();
    let block = ReportBlock {
        ssrc: s.ssrc(),
        fraction_lost: 26,
        cumulative_lost: 12,
        extended_highest_seq: 1000,
        jitter: 80,
        last_sr: 0,
        delay_since_last_sr: 0,
    };
    write_report(0xABCD, None, Some(block), "peer", &mut rr);
    s.handle_datagram(start, addr("198.51.100.7:4001"), &rr);
    let remote = s.stats().remote.expect("RR read");
    assert_eq!(remote.cumulative_lost, 12);
    assert!((remote.fraction_lost - 0.1016).abs() < 0.001);
    assert_eq!(remote.jitter, Duration::from_millis(10));
    assert_eq!(s.stats().rtcp_received, 1);
}

#[test]
fn sends_rtcp_reports_about_every_5_s_to_the_rtcp_port() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    let peer = addr(PEER_ADDR);
    let mut reports = Vec::new();
    for ms in 0..30_000u64 {
        let now = start + Duration::from_millis(ms);
        if ms % 20 == 0 {
            let i = (ms / 20) as u16;
            s.handle_datagram(
                now,
                peer,
                &rtp(0, i, u32::from(i) * 160, SSRC, false, &[0xFF; 160]),
            );
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now) {
            if sofia_media::rtcp::classify(&t.bytes) == sofia_media::rtcp::PacketKind::Rtcp {
                assert_eq!(t.component, sofia_media::Component::Rtcp);
                assert_eq!(t.destination, addr("198.51.100.7:4001"));
                reports.push(sofia_media::rtcp::parse_compound(&t.bytes).expect("valid RTCP"));
            }
        }
    }
    assert!(
        (4..=9).contains(&reports.len()),
        "{} reports in 30 s",
        reports.len()
    );
    let last = reports.last().unwrap();
    assert_eq!(last.sender_ssrc, Some(s.ssrc()));
    assert!(
        last.sr_ntp_middle.is_some(),
        "we send audio, so it is an SR"
    );
    assert_eq!(last.reports.len(), 1);
    assert_eq!(last.reports[0].ssrc, SSRC);
    assert_eq!(last.reports[0].fraction_lost, 0);
}

#[test]
fn audio_ssrc_change_is_followed_after_the_old_stream_stops() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, codec_rate_config(), start);
    let peer = addr(PEER_ADDR);
    let mut kinds = Vec::new();
    for ms in 0..4_000u64 {
        let now = start + Duration::from_millis(ms);
        if ms % 20 == 0 {
            let i = (ms / 20) as u32;
            // First SSRC for 2 s, then a new SSRC with a new sequence space.
            let (ssrc, seq) = if ms < 2_000 {
                (SSRC, i as u16)
            } else {
                (0xBEEF, 40_000 + i as u16)
            };
            s.handle_datagram(
                now,
                peer,
                &rtp(0, seq, i * 160, ssrc, false, &payload_for(i)),
            );
        }
        s.handle_timeout(now);
        while let Some(Event::Audio(f)) = s.poll_event() {
            kinds.push(f.kind);
        }
    }
    assert_eq!(s.stats().ssrc_changes, 1);
    let tail = &kinds[kinds.len() - 50..];
    assert!(
        tail.iter().all(|k| *k == FrameKind::Received),
        "new stream plays"
    );
}

#[test]
fn inactivity_is_reported_once_and_not_while_on_hold() {
    let start = t0();
    let config = SessionConfig {
        inactivity_timeout: Some(Duration::from_secs(10)),
        ..codec_rate_config()
    };
    let mut s = common::session(CodecKind::Pcmu, config.clone(), start);
    let mut inactive = Vec::new();
    for secs in 0..30u64 {
        let now = start + Duration::from_secs(secs);
        if secs < 5 {
            s.handle_datagram(
                now,
                addr(PEER_ADDR),
                &rtp(0, secs as u16, 0, SSRC, false, &[0xFF; 160]),
            );
        }
        s.handle_timeout(now);
        while let Some(e) = s.poll_event() {
            if e == Event::Inactive {
                inactive.push(secs);
            }
        }
    }
    assert_eq!(inactive, vec![14]);

    // The peer put us on hold with a=inactive: no RTP is expected.
    let mut params = common::params(CodecKind::Pcmu);
    params.direction = Direction::Inactive;
    let mut held = MediaSession::new(start, common::wallclock(), params, config).unwrap();
    for secs in 0..30u64 {
        let now = start + Duration::from_secs(secs);
        held.handle_timeout(now);
        while held.poll_transmit(now).is_some() {}
        while let Some(e) = held.poll_event() {
            assert_ne!(e, Event::Inactive);
        }
    }
    assert_eq!(held.stats().packets_sent, 0, "inactive: no RTP sent");
}

#[test]
fn decoded_audio_comes_out_at_16_khz_in_20_ms_frames() {
    let start = t0();
    let mut s = common::session(CodecKind::Pcmu, SessionConfig::default(), start);
    let pcm = common::tone(1_000.0, 8_000, 8_000, 0.5);
    let mut out = Vec::new();
    for ms in 0..1_200u64 {
        let now = start + Duration::from_millis(ms);
        if ms % 20 == 0 && ms < 1_000 {
            let i = (ms / 20) as usize;
            let mut payload = Vec::new();
            sofia_media::g711::Law::Mu.encode(&pcm[i * 160..(i + 1) * 160], &mut payload);
            s.handle_datagram(
                now,
                addr(PEER_ADDR),
                &rtp(0, i as u16, i as u32 * 160, SSRC, false, &payload),
            );
        }
        s.handle_timeout(now);
        while let Some(e) = s.poll_event() {
            if let Event::Audio(f) = e {
                assert_eq!(f.sample_rate, 16_000);
                assert_eq!(f.samples.len(), 320);
                out.extend(f.samples);
            }
        }
    }
    let steady = &out[3_200..14_000];
    let f = common::zero_crossing_frequency(steady, 16_000);
    assert!((f - 1_000.0).abs() < 10.0, "{f} Hz");
    let db = 20.0 * (common::rms(steady) / common::rms(&pcm)).log10();
    assert!(db.abs() < 1.0, "{db} dB");
}
