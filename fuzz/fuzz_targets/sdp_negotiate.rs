//! The SDP offer/answer negotiator on arbitrary bodies: answering a remote offer
//! (`SdpSession::negotiate`, twice on one session as a re-INVITE does) and taking a
//! remote answer to our offer (`create_offer` + `handle_answer`), with the first
//! byte choosing our codec preferences, rtcp-mux and direction. Agreed parameters
//! start a `MediaSession` (as the shell does) and run it for a few frames.
//!
//! Invariants: no panic; our answer is SDP that our own parser reads back and that
//! names the agreed payload type; a session starts from every set of agreed
//! parameters.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sofia_media::offer_answer::SdpSession;
use sofia_media::{
    CodecKind, Direction, MediaConfig, MediaParams, MediaSession, NegotiationError, SessionConfig,
};

fn config(selector: u8) -> MediaConfig {
    let codecs = match selector % 4 {
        0 => vec![CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma],
        1 => vec![CodecKind::Pcmu],
        2 => vec![CodecKind::Pcma, CodecKind::Opus],
        _ => vec![CodecKind::Opus],
    };
    let ip = if selector & 0x04 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    };
    let mut c = MediaConfig::new(codecs, ip, 16_384);
    c.rtcp_mux = selector & 0x08 != 0;
    c.direction = match (selector >> 4) % 4 {
        0 => Direction::SendRecv,
        1 => Direction::SendOnly,
        2 => Direction::RecvOnly,
        _ => Direction::Inactive,
    };
    c.ptime_ms = if selector & 0x40 == 0 { 20 } else { 30 };
    c
}

/// Starts a session from agreed parameters and runs it for 100 ms.
fn run_media(params: &MediaParams) {
    let start = Instant::now();
    let session = MediaSession::new(
        start,
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        params.clone(),
        SessionConfig::default(),
    );
    let mut s = session.expect("a session starts from negotiated parameters");
    for step in 0..5u32 {
        let now = start + Duration::from_millis(20) * step;
        s.handle_timeout(now);
        let mut n = 0;
        while s.poll_transmit(now).is_some() {
            n += 1;
            assert!(n < 1000);
        }
        while s.poll_event().is_some() {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut session = SdpSession::new(config(selector), 0x1234_5678);
    for _ in 0..2 {
        match session.negotiate(body) {
            Ok(negotiated) => {
                // Our answer must be readable SDP (by our own parser, as an offer).
                let mut reader = SdpSession::new(config(selector), 1);
                match reader.negotiate(&negotiated.answer_sdp) {
                    Err(NegotiationError::Malformed(e)) => panic!(
                        "our answer does not parse ({e}):\n{}",
                        String::from_utf8_lossy(&negotiated.answer_sdp)
                    ),
                    Ok(again) => {
                        assert_eq!(again.params.payload_type, negotiated.params.payload_type)
                    }
                    Err(_) => {}
                }
                run_media(&negotiated.params);
            }
            Err(e) => {
                let _ = e.is_not_acceptable();
            }
        }
    }
    let offer = session.create_offer();
    assert!(!offer.is_empty());
    if let Ok(params) = session.handle_answer(body) {
        run_media(&params);
    }
});
