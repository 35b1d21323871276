//! A `MediaSession` driven by arbitrary datagrams (RTP of the negotiated, event and
//! comfort-noise payload types and of others, RFC 4733 events, RTCP, STUN, garbage)
//! from a few source addresses, arbitrary steps of virtual time, playback, re-INVITE
//! updates and echo toggles: the RTP/RTCP/STUN demux, symmetric-RTP latching, SSRC
//! pinning, the DTMF detector, the decoders and the jitter buffer behind them.
//!
//! Invariants after every step: no panic; `poll_transmit` runs dry within a bounded
//! number of calls; everything sent is non-empty and classifies as RTP or RTCP (an
//! RTCP one parses as a compound packet); audio events carry finite samples at the
//! configured output rate; once everything due at `now` is done, `poll_timeout` is
//! in the future (a shell driving the session would otherwise spin).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sofia_media::dtmf::EventPayload;
use sofia_media::offer_answer::{Direction, MediaParams, TelephoneEvent};
use sofia_media::rtcp::{classify, parse_compound, PacketKind};
use sofia_media::rtp::{write_packet, RtpHeader};
use sofia_media::{CodecKind, Event, IdleMode, MediaSession, SessionConfig};

const SDP_RTP: &str = "198.51.100.7:4000";
const SDP_RTCP: &str = "198.51.100.7:4001";
/// Sources: the SDP address, its RTCP port, the same phone behind a NAT, an attacker.
const SOURCES: [&str; 4] = [SDP_RTP, SDP_RTCP, "203.0.113.5:31000", "192.0.2.66:5004"];
const SSRCS: [u32; 3] = [0x1111_1111, 0x2222_2222, 0];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address literal")
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

impl Codec {
    fn kind(self) -> CodecKind {
        match self {
            Self::Pcmu => CodecKind::Pcmu,
            Self::Pcma => CodecKind::Pcma,
            Self::Opus => CodecKind::Opus,
        }
    }
}

/// Parameters as a negotiation can produce them.
#[derive(Debug, Arbitrary, Clone, Copy)]
struct Params {
    codec: Codec,
    dynamic_pt: u8,
    telephone_event: Option<(u8, bool)>,
    rtcp_mux: bool,
    direction: u8,
    ptime: u8,
    remote: u8,
}

impl Params {
    fn build(self) -> MediaParams {
        let codec = self.codec.kind();
        let payload_type = codec
            .static_payload_type()
            .unwrap_or(96 + self.dynamic_pt % 32);
        let ptimes: &[u32] = match codec {
            CodecKind::Opus => &[10, 20, 40, 60],
            _ => &[10, 20, 30, 40, 60],
        };
        let ptime_ms = ptimes[usize::from(self.ptime) % ptimes.len()];
        let (rtp, rtcp) = match self.remote % 3 {
            0 => (addr(SDP_RTP), addr(SDP_RTCP)),
            // A c=0.0.0.0 hold.
            1 => (addr("0.0.0.0:4000"), addr("0.0.0.0:4001")),
            _ => (addr("203.0.113.5:31000"), addr("203.0.113.5:31001")),
        };
        MediaParams {
            codec,
            payload_type,
            clock_rate: codec.clock_rate(),
            channels: codec.sdp_channels(),
            telephone_event: self.telephone_event.map(|(pt, wide)| TelephoneEvent {
                payload_type: 96 + pt % 32,
                clock_rate: if wide { 48_000 } else { 8_000 },
            }),
            remote_rtp: rtp,
            remote_rtcp: if self.rtcp_mux { rtp } else { rtcp },
            rtcp_mux: self.rtcp_mux,
            direction: match self.direction % 4 {
                0 => Direction::SendRecv,
                1 => Direction::SendOnly,
                2 => Direction::RecvOnly,
                _ => Direction::Inactive,
            },
            ptime_ms,
            remote_ptime_ms: Some(ptime_ms),
            srtp: None,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum PayloadType {
    /// The negotiated audio payload type.
    Audio,
    /// The negotiated telephone-event type.
    Event,
    /// Comfort noise (13).
    ComfortNoise,
    Other(u8),
}

#[derive(Debug, Arbitrary)]
enum Packet {
    Rtp {
        pt: PayloadType,
        marker: bool,
        /// Added to the stream's last sequence number.
        seq_step: i8,
        /// Added to the stream's last timestamp.
        ts_step: i16,
        ssrc: u8,
        payload: Vec<u8>,
    },
    /// An RFC 4733 event packet on the telephone-event type.
    Dtmf {
        event: u8,
        end: bool,
        volume: u8,
        duration: u16,
        new_event: bool,
        seq_step: i8,
    },
    /// Bytes behind a valid RTCP common header (SR, RR, SDES, BYE, APP).
    Rtcp {
        count: u8,
        pt: u8,
        body: Vec<u8>,
    },
    /// Bytes behind a STUN header with the magic cookie.
    Stun {
        body: Vec<u8>,
    },
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Datagram {
        source: u8,
        packet: Packet,
    },
    AdvanceMs(u16),
    AdvanceSecs(u8),
    /// Runs the session's own timers up to its next deadline.
    NextDeadline,
    Playback {
        samples: u16,
        rate: u8,
        level: i8,
    },
    Flush,
    Update(Params),
    Echo(bool),
}

#[derive(Debug, Arbitrary)]
struct Input {
    params: Params,
    suppress_idle: bool,
    /// 16 kHz output (through the resampler) when a multiple of 4, else the codec's
    /// rate: the resampler dominates the cost of an input.
    output: u8,
    ops: Vec<Op>,
}

struct Stream {
    seq: u16,
    ts: u32,
    event_ts: u32,
}

fn check_transmits(s: &mut MediaSession, now: Instant) {
    for _ in 0..10_000 {
        let Some(t) = s.poll_transmit(now) else {
            return;
        };
        assert!(!t.bytes.is_empty(), "empty transmit");
        match classify(&t.bytes) {
            PacketKind::Rtp => {}
            PacketKind::Rtcp => assert!(
                parse_compound(&t.bytes).is_some(),
                "our RTCP does not parse: {:02x?}",
                t.bytes
            ),
            other => panic!("we sent a {other:?} packet: {:02x?}", t.bytes),
        }
    }
    panic!("poll_transmit does not run dry");
}

fn check_events(s: &mut MediaSession, rate: Option<u32>) {
    while let Some(e) = s.poll_event() {
        if let Event::Audio(frame) = e {
            if let Some(rate) = rate {
                assert_eq!(frame.sample_rate, rate);
            }
            assert!(
                frame.samples.iter().all(|x| x.is_finite()),
                "non-finite audio"
            );
        }
    }
}

/// Does everything due at `now`, as a shell would, and checks the next deadline.
fn settle(s: &mut MediaSession, now: Instant, rate: Option<u32>) {
    s.handle_timeout(now);
    check_transmits(s, now);
    check_events(s, rate);
    // Bounded: a timer that does not move on after it fired would spin a shell.
    for _ in 0..64 {
        if s.poll_timeout() > now {
            return;
        }
        s.handle_timeout(now);
        check_transmits(s, now);
        check_events(s, rate);
    }
    panic!("poll_timeout stays at or before now after everything due was done");
}

fuzz_target!(|input: Input| {
    let start = Instant::now();
    let mut now = start;
    let config = SessionConfig {
        seed: 1,
        // Short, so that inactivity is reached without long jumps: every jump plays
        // out (decodes and resamples) each frame it skips.
        inactivity_timeout: Some(Duration::from_secs(3)),
        idle: if input.suppress_idle {
            IdleMode::Suppress
        } else {
            IdleMode::ComfortSilence
        },
        output_rate: input.output.is_multiple_of(4).then_some(16_000),
        ..SessionConfig::default()
    };
    let rate = config.output_rate;
    let mut params = input.params.build();
    let Ok(mut s) = MediaSession::new(
        now,
        UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        params.clone(),
        config,
    ) else {
        return;
    };
    let mut stream = Stream {
        seq: 1000,
        ts: 160_000,
        event_ts: 0,
    };
    for op in input.ops.into_iter().take(512) {
        match op {
            Op::Datagram { source, packet } => {
                let from = addr(SOURCES[usize::from(source) % SOURCES.len()]);
                let mut bytes = Vec::new();
                match packet {
                    Packet::Rtp {
                        pt,
                        marker,
                        seq_step,
                        ts_step,
                        ssrc,
                        payload,
                    } => {
                        let payload_type = match pt {
                            PayloadType::Audio => params.payload_type,
                            PayloadType::Event => {
                                params.telephone_event.map_or(101, |te| te.payload_type)
                            }
                            PayloadType::ComfortNoise => 13,
                            PayloadType::Other(pt) => pt & 0x7F,
                        };
                        stream.seq = stream.seq.wrapping_add(seq_step as u16);
                        stream.ts = stream.ts.wrapping_add(ts_step as u32);
                        let header = RtpHeader {
                            marker,
                            payload_type,
                            sequence_number: stream.seq,
                            timestamp: stream.ts,
                            ssrc: SSRCS
                                .get(usize::from(ssrc))
                                .copied()
                                .unwrap_or(u32::from(ssrc) << 16),
                        };
                        write_packet(&header, &payload, &mut bytes);
                    }
                    Packet::Dtmf {
                        event,
                        end,
                        volume,
                        duration,
                        new_event,
                        seq_step,
                    } => {
                        if new_event {
                            stream.event_ts = stream.ts;
                        }
                        stream.seq = stream.seq.wrapping_add(seq_step as u16);
                        let header = RtpHeader {
                            marker: new_event,
                            payload_type: params.telephone_event.map_or(101, |te| te.payload_type),
                            sequence_number: stream.seq,
                            timestamp: stream.event_ts,
                            ssrc: SSRCS[0],
                        };
                        let payload = EventPayload {
                            event: event % 20,
                            end,
                            volume,
                            duration,
                        }
                        .to_bytes();
                        write_packet(&header, &payload, &mut bytes);
                    }
                    Packet::Rtcp { count, pt, body } => {
                        let words = body.len().div_ceil(4) as u16;
                        bytes.push(0x80 | (count & 0x1F));
                        bytes.push(200 + pt % 5);
                        bytes.extend_from_slice(&words.to_be_bytes());
                        bytes.extend_from_slice(&body);
                    }
                    Packet::Stun { body } => {
                        bytes.extend_from_slice(&[0x00, 0x01]);
                        bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
                        bytes.extend_from_slice(&0x2112_A442u32.to_be_bytes());
                        bytes.extend_from_slice(&[0; 12]);
                        bytes.extend_from_slice(&body);
                    }
                    Packet::Raw(raw) => bytes = raw,
                }
                s.handle_datagram(now, from, &bytes);
            }
            Op::AdvanceMs(ms) => now += Duration::from_millis(u64::from(ms % 1000)),
            Op::AdvanceSecs(secs) => now += Duration::from_secs(u64::from(secs % 8)),
            Op::NextDeadline => now = now.max(s.poll_timeout()),
            Op::Playback {
                samples,
                rate,
                level,
            } => {
                let rates = [8_000, 16_000, 22_050, 24_000, 44_100, 48_000];
                let sample_rate = rates[usize::from(rate) % rates.len()];
                let amp = f32::from(level) / 64.0;
                let samples: Vec<f32> = (0..samples % 4096)
                    .map(|i| amp * ((f32::from(i) * 0.3).sin()))
                    .collect();
                let _ = s.queue_playback(&samples, sample_rate);
            }
            Op::Flush => s.flush_playback(),
            Op::Update(p) => {
                let _ = s.update(now, p.build());
                params = s.params().clone();
            }
            Op::Echo(on) => s.set_echo(on),
        }
        settle(&mut s, now, rate);
        let stats = s.stats();
        assert!(stats.packets_lost >= 0);
    }
});
