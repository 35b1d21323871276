//! Hostile input never panics: random bytes and mutated real packets into
//! `handle_datagram`, random and mutated SDP into `negotiate`.

mod common;

use common::{addr, rtp, t0};
use proptest::prelude::*;
use sofia_media::offer_answer::SdpSession;
use sofia_media::{negotiate, CodecKind, MediaConfig, SessionConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

fn config() -> MediaConfig {
    MediaConfig::new(
        vec![CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma],
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        16384,
    )
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sdp");
    let mut offers: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sdp"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    offers.sort();
    offers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn handle_datagram_survives_random_bytes(
        datagrams in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40),
        opus in any::<bool>(),
    ) {
        let start = t0();
        let codec = if opus { CodecKind::Opus } else { CodecKind::Pcmu };
        let mut s = common::session(codec, SessionConfig::default(), start);
        for (i, d) in datagrams.iter().enumerate() {
            let now = start + Duration::from_millis(7 * i as u64);
            s.handle_datagram(now, addr(common::PEER_ADDR), d);
            s.handle_timeout(now);
            while s.poll_transmit(now).is_some() {}
            while s.poll_event().is_some() {}
        }
    }

    #[test]
    fn handle_datagram_survives_plausible_rtp_with_garbage_payloads(
        packets in prop::collection::vec(
            (prop::sample::select(vec![0u8, 8, 96, 101, 13, 72, 127]), any::<u16>(), any::<u32>(),
             prop::sample::select(vec![1u32, 2, 0xFFFF_FFFF]), any::<bool>(),
             prop::collection::vec(any::<u8>(), 0..200)),
            1..80),
        opus in any::<bool>(),
    ) {
        let start = t0();
        let codec = if opus { CodecKind::Opus } else { CodecKind::Pcma };
        let mut s = common::session(codec, SessionConfig::default(), start);
        for (i, (pt, seq, ts, ssrc, marker, payload)) in packets.iter().enumerate() {
            let now = start + Duration::from_millis(13 * i as u64);
            s.handle_datagram(now, addr(common::PEER_ADDR), &rtp(*pt, *seq, *ts, *ssrc, *marker, payload));
            s.handle_timeout(now);
            while s.poll_transmit(now).is_some() {}
            while s.poll_event().is_some() {}
        }
    }

    #[test]
    fn negotiate_survives_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = negotiate(&bytes, &config());
        let mut session = SdpSession::new(config(), 1);
        session.create_offer();
        let _ = session.handle_answer(&bytes);
    }

    #[test]
    fn negotiate_survives_mutated_real_offers(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let offers = corpus();
        let mut offer = offers[which.index(offers.len())].clone();
        for (at, byte, op) in edits {
            if offer.is_empty() {
                break;
            }
            let i = at.index(offer.len());
            match op {
                0 => offer[i] = byte,
                1 => { offer.remove(i); }
                _ => offer.insert(i, byte),
            }
        }
        let _ = negotiate(&offer, &config());
    }
}

#[test]
fn sdp_line_soup_does_not_panic() {
    // Valid lines in hostile orders and with hostile values.
    let lines = [
        "v=0",
        "o=- 1 1 IN IP4 1.2.3.4",
        "o=- x y IN IP4 1.2.3.4",
        "s=-",
        "c=IN IP4 1.2.3.4",
        "c=IN IP6 ::1",
        "c=IN IP4",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 99999 RTP/AVP 0",
        "m=audio 4000/2 RTP/AVP 0",
        "m=audio -1 RTP/AVP 0",
        "m=audio 4000 RTP/AVP",
        "a=rtpmap:0",
        "a=rtpmap:96 opus",
        "a=rtpmap:96 opus/x/2",
        "a=rtpmap:300 opus/48000/2",
        "a=rtcp:",
        "a=rtcp:70000",
        "a=ptime:0",
        "a=ptime:-5",
        "a=sendonly",
        "b=AS:64",
        "k=clear:x",
        "z=0 0",
        "r=7d 1h 0 25h",
        "a=",
        "=",
        "",
    ];
    let mut seed = 12345u64;
    for _ in 0..5_000 {
        let mut offer = String::new();
        for _ in 0..(seed % 12) {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offer.push_str(lines[(seed >> 33) as usize % lines.len()]);
            offer.push_str("\r\n");
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        let _ = negotiate(offer.as_bytes(), &config());
    }
}
