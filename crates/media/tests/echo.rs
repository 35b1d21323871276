//! Extension 9196: received audio goes through decode, the jitter buffer and
//! re-encode back to the caller, and a tone survives the trip.

mod common;

use common::{addr, goertzel, rtp, t0, tone, zero_crossing_frequency, PEER_ADDR};
use sofia_media::codec::{Decoder, Encoder};
use sofia_media::rtcp::{classify, PacketKind};
use sofia_media::rtp::RtpPacket;
use sofia_media::{CodecKind, SessionConfig};
use std::time::Duration;

fn echo_tone(codec: CodecKind, freq: f32) -> (Vec<f32>, u32) {
    let rate = codec.clock_rate();
    let spf = codec.samples_per_frame(20);
    let start = t0();
    let config = SessionConfig {
        echo: true,
        output_rate: None,
        ..SessionConfig::default()
    };
    let mut s = common::session(codec, config, start);
    let pt = s.params().payload_type;
    let input = tone(freq, rate, spf * 150, 0.4);
    let mut enc = Encoder::new(codec).unwrap();
    let mut dec = Decoder::new(codec).unwrap();
    let mut echoed = Vec::new();
    let peer = addr(PEER_ADDR);
    for ms in 0..3_500u64 {
        let now = start + Duration::from_millis(ms);
        // The caller sends 3 s of tone, 20 ms per packet, with a little jitter.
        if ms % 20 == 7 && ms / 20 < 150 {
            let i = (ms / 20) as usize;
            let mut payload = Vec::new();
            enc.encode(&input[i * spf..(i + 1) * spf], &mut payload)
                .unwrap();
            s.handle_datagram(
                now,
                peer,
                &rtp(pt, 9_000 + i as u16, (i * spf) as u32, 77, i == 0, &payload),
            );
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit(now) {
            if classify(&t.bytes) == PacketKind::Rtp {
                if ms >= 7 {
                    assert_eq!(t.destination, peer, "echo goes to the latched source");
                }
                let p = RtpPacket::parse(&t.bytes).unwrap();
                dec.decode(p.payload, &mut echoed).unwrap();
            }
        }
        while s.poll_event().is_some() {}
    }
    (echoed, rate)
}

fn assert_tone_survives(codec: CodecKind, freq: f32) {
    let (echoed, rate) = echo_tone(codec, freq);
    let spf = codec.samples_per_frame(20);
    // Skip start-up (jitter buffer fill) and look at 2 s in the middle.
    let window = &echoed[spf * 25..spf * 125];
    let f = zero_crossing_frequency(window, rate);
    assert!(
        (f - freq).abs() < freq * 0.01,
        "{codec:?}: echoed {f} Hz, sent {freq} Hz"
    );
    let on = goertzel(window, rate, freq);
    for off in [freq * 0.5, freq * 1.5, freq * 2.0] {
        assert!(
            on > 100.0 * goertzel(window, rate, off),
            "{codec:?}: {freq} Hz dominates {off} Hz"
        );
    }
    let level = common::rms(window);
    assert!(
        (level - 0.4 / 2f32.sqrt()).abs() < 0.05,
        "{codec:?}: level {level}"
    );
}

#[test]
fn echo_extension_returns_a_pcmu_tone() {
    assert_tone_survives(CodecKind::Pcmu, 1_000.0);
}

#[test]
fn echo_extension_returns_a_pcma_tone() {
    assert_tone_survives(CodecKind::Pcma, 697.0);
}

#[test]
fn echo_extension_returns_an_opus_tone() {
    assert_tone_survives(CodecKind::Opus, 440.0);
}
