//! Helpers shared by the integration tests: a virtual clock origin, a remote peer
//! that writes RTP, and signal measurements.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use sofia_media::offer_answer::{Direction, MediaParams, TelephoneEvent};
use sofia_media::rtp::{write_packet, RtpHeader};
use sofia_media::{CodecKind, MediaSession, SessionConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The origin of a test's virtual clock; nothing waits on it.
#[allow(
    clippy::disallowed_methods,
    reason = "origin of the test's virtual clock"
)]
pub fn t0() -> Instant {
    Instant::now()
}

pub fn wallclock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub const SDP_ADDR: &str = "198.51.100.7:4000";
pub const PEER_ADDR: &str = "192.0.2.50:31000";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address parses")
}

pub fn params(codec: CodecKind) -> MediaParams {
    let payload_type = codec.static_payload_type().unwrap_or(96);
    MediaParams {
        codec,
        payload_type,
        clock_rate: codec.clock_rate(),
        channels: codec.sdp_channels(),
        telephone_event: Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 8_000,
        }),
        remote_rtp: addr(SDP_ADDR),
        remote_rtcp: addr("198.51.100.7:4001"),
        rtcp_mux: false,
        direction: Direction::SendRecv,
        ptime_ms: 20,
        remote_ptime_ms: Some(20),
        srtp: None,
    }
}

pub fn session(codec: CodecKind, config: SessionConfig, now: Instant) -> MediaSession {
    MediaSession::new(now, wallclock(), params(codec), config).expect("session starts")
}

pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_packet(
        &RtpHeader {
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
        },
        payload,
        &mut out,
    );
    out
}

pub fn tone(freq: f32, rate: u32, n: usize, amplitude: f32) -> Vec<f32> {
    (0..n)
        .map(|i| amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
        .collect()
}

pub fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Power of `freq` in `x` (Goertzel).
pub fn goertzel(x: &[f32], rate: u32, freq: f32) -> f32 {
    let w = 2.0 * std::f32::consts::PI * freq / rate as f32;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len().max(1) as f32).powi(2)
}

/// Frequency estimated from rising zero crossings.
pub fn zero_crossing_frequency(x: &[f32], rate: u32) -> f32 {
    let crossings = x.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
    crossings as f32 * rate as f32 / x.len() as f32
}
