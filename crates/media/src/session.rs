//! One call's media: the receive path (demultiplexing, symmetric RTP latching, SSRC
//! changes, jitter buffer, decoding, DTMF), the send path (playback queue, 20 ms
//! pacing, encoding) and RTCP, as one sans-IO state machine.
//!
//! Owns: all per-call media state. Must not: touch sockets or clocks (the per-call
//! driver in the shell passes `now` and datagrams in, and sends what
//! [`MediaSession::poll_transmit`] returns), or know about SIP.
//!
//! Decisions:
//! - Idle sending: by default an RTP packet of encoded silence goes out every frame
//!   while nothing is queued ([`IdleMode::ComfortSilence`]), so NAT bindings stay
//!   open and a peer's latching and jitter buffer see a steady stream. Sequence
//!   numbers and timestamps advance continuously either way; the marker bit is set
//!   on the first packet of the stream and on the first packet of each talkspurt
//!   (RFC 3551 4.1). [`IdleMode::Suppress`] sends nothing while idle.
//! - Symmetric RTP (RFC 4961): the first valid RTP packet's source becomes the
//!   destination, replacing the SDP address (phones behind NAT send from another
//!   address than their SDP's), but packets from the SDP address win over that first
//!   latch. Once latched, RTP is played only from the latched source and its SSRC;
//!   anything else is dropped and counted ([`Stats::rtp_rejected`]), so a stranger
//!   who guesses the port can neither inject audio nor DTMF. Another source takes
//!   over only after the latched one has been silent for [`RELATCH_SILENCE`] and the
//!   new one sent [`RELATCH_PACKETS`] packets of one consistent stream: a flood
//!   while the real phone keeps sending never moves the latch. A re-INVITE with a
//!   new address ([`MediaSession::update`]) latches afresh.
//! - SSRC (RFC 3550 8.2): the audio SSRC seen on the latched source is pinned; a new
//!   one from the same source is accepted when the old one has been silent for
//!   [`SSRC_IDLE`] (a phone that restarts its stream, e.g. after hold), at once after
//!   a re-INVITE ([`MediaSession::update`]) or a re-latch. Telephone events may use
//!   one SSRC of their own (SIPp's pcap replay), pinned until either of those.
//! - RTCP: the first RTCP source is latched; after that RTCP is read only from it,
//!   or from the latched RTP source's IP with the RTCP port (the phone moved), and
//!   anything else is counted in [`Stats::rtcp_rejected`].

use crate::codec::{CodecError, Decoder, Encoder};
use crate::dtmf::DtmfDetector;
use crate::dtmf::{event_code, EventPayload};
use crate::jitter::{Inserted, JitterBuffer, JitterConfig, JitterStats, Playout, Slot};
use crate::offer_answer::MediaParams;
use crate::resample::{ClipResampler, ResampleError, StreamResampler};
use crate::rtcp::{self, PacketKind, ReceiverStats, SenderInfo};
use crate::rtp::{self, RtpHeader, RtpPacket, SeqUnwrapper};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// How long the latched source must have sent no RTP before another may take over.
/// A live stream sends every ptime (10-120 ms) and even a bad Wi-Fi stall rarely
/// lasts more than a few hundred ms, so a second of nothing means the old path is
/// gone (NAT rebinding, a switch from Wi-Fi to mobile data); and a phone that really
/// moved is heard again about a second later. (A phone that suppresses silence
/// without sending comfort noise leaves a window while it is quiet; a stranger then
/// still needs [`RELATCH_PACKETS`] packets of one stream.)
pub const RELATCH_SILENCE: Duration = Duration::from_secs(1);
/// Packets of one consistent stream (one SSRC, sequence numbers each
/// 1..=[`RELATCH_MAX_SEQ_STEP`] ahead of the last) a new source must send before
/// symmetric RTP re-latches to it: enough that stray or replayed packets do not
/// count, few enough (100 ms at 20 ms ptime) not to lengthen a real move.
pub const RELATCH_PACKETS: u32 = 5;
/// Largest forward step between sequence numbers of a re-latch candidate's
/// consecutive packets: a few lost packets do not break its stream.
pub const RELATCH_MAX_SEQ_STEP: u16 = 4;
/// Silence of the pinned audio SSRC after which a new SSRC from the latched source
/// takes over (a sender restart; ten packets at 20 ms, well beyond normal jitter).
pub const SSRC_IDLE: Duration = Duration::from_millis(200);
/// RTP payload type of comfort noise (RFC 3389); its sequence numbers are skipped.
const PT_COMFORT_NOISE: u8 = 13;
/// The send schedule catches up at most this many frames after a late wake-up;
/// beyond that the missed time is skipped (timestamps still advance).
const MAX_CATCH_UP_FRAMES: u32 = 5;
/// Echo mode keeps at most this much audio queued, so its delay stays bounded.
const ECHO_MAX_QUEUED: Duration = Duration::from_millis(100);
/// Shortest DTMF event [`MediaSession::send_dtmf`] sends; shorter requests are
/// lengthened to it (ITU-T Q.24 receivers need 40 ms of tone).
pub const DTMF_MIN_DURATION: Duration = Duration::from_millis(40);
/// A good duration for [`MediaSession::send_dtmf`]: what most phones send per key.
pub const DTMF_DEFAULT_DURATION: Duration = Duration::from_millis(100);
/// Digits [`MediaSession::send_dtmf`] queues at most (the one on the wire included).
pub const DTMF_MAX_QUEUED: usize = 32;
/// Volume of the events we send, in -dBm0 (RFC 4733 2.3.2; phones send 10).
const DTMF_VOLUME: u8 = 10;
/// Packets carrying the E bit per event (RFC 4733 2.5.1.4).
const DTMF_END_PACKETS: u8 = 3;

/// What to send while the playback queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleMode {
    /// One packet of encoded silence per frame.
    #[default]
    ComfortSilence,
    /// Nothing (timestamps keep advancing, so the next talkspurt is in time).
    Suppress,
}

/// Per-call settings that do not come from SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Seed for the SSRC, initial sequence number and timestamp, and RTCP timing.
    pub seed: u64,
    /// Jitter buffer bounds.
    pub jitter: JitterConfig,
    /// No RTP for this long while we expect to receive -> [`Event::Inactive`].
    pub inactivity_timeout: Option<Duration>,
    /// Average RTCP report interval (RFC 3550 6.2: 5 s minimum).
    pub rtcp_interval: Duration,
    /// Rate of [`Event::Audio`] frames: `Some(16_000)` for speech recognition,
    /// `None` for the codec's rate.
    pub output_rate: Option<u32>,
    /// What to send while idle.
    pub idle: IdleMode,
    /// RTCP CNAME (RFC 3550 6.5.1).
    pub cname: String,
    /// Echo decoded audio back to the caller (extension 9196).
    pub echo: bool,
    /// Longest playback queue accepted.
    pub max_playback: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            jitter: JitterConfig::default(),
            inactivity_timeout: Some(Duration::from_secs(30)),
            rtcp_interval: Duration::from_secs(5),
            output_rate: Some(16_000),
            idle: IdleMode::ComfortSilence,
            cname: "sofia-phone".into(),
            echo: false,
            max_playback: Duration::from_secs(600),
        }
    }
}

/// Which of the call's two ports a datagram leaves from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The RTP port.
    Rtp,
    /// The RTCP port (the RTP port itself with rtcp-mux).
    Rtcp,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// From which local port.
    pub component: Component,
    /// The packet.
    pub bytes: Vec<u8>,
}

/// Where a frame's audio came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded from a received packet.
    Received,
    /// Concealment of a lost or late packet.
    Concealed,
    /// Nothing was received (before the stream, or during a long gap).
    Silence,
}

/// A block of decoded mono audio, 20 ms at `output_rate` (or one packet's worth at
/// the codec rate when `output_rate` is `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Their rate in Hz.
    pub sample_rate: u32,
    /// Where the (last) audio in this frame came from.
    pub kind: FrameKind,
}

/// Something the shell or the conversation should know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Received audio, in order, one frame per playout tick.
    Audio(Frame),
    /// A DTMF key press (RFC 4733), reported once when it ends.
    Dtmf {
        /// `0`-`9`, `*`, `#`, `A`-`D`.
        digit: char,
        /// How long it was held.
        duration: Duration,
    },
    /// No RTP arrived for the configured timeout (the shell ends the call).
    Inactive,
    /// RTP now goes to this address (symmetric RTP latched or re-latched).
    Latched {
        /// The peer's actual media address.
        destination: SocketAddr,
    },
}

/// The peer's view of our stream, from its last RTCP report block about us.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteReport {
    /// Fraction of our packets lost in the last interval, 0..=1.
    pub fraction_lost: f32,
    /// Our packets lost in total.
    pub cumulative_lost: i32,
    /// Interarrival jitter the peer measured.
    pub jitter: Duration,
    /// Round-trip time from LSR/DLSR (RFC 3550 6.4.1), if the peer echoed our SR.
    pub round_trip: Option<Duration>,
}

/// Call statistics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    /// RTP packets accepted (audio and events).
    pub packets_received: u64,
    /// Audio packets expected but never received (RFC 3550 A.3).
    pub packets_lost: i64,
    /// Interarrival jitter of the received stream.
    pub jitter: Duration,
    /// Jitter buffer counters.
    pub playout: JitterStats,
    /// Datagrams dropped: STUN, unknown payload types, malformed.
    pub ignored: u64,
    /// RTP packets of a negotiated payload type dropped because of their source:
    /// another address than the latched one, or another SSRC than the pinned one
    /// (injection attempts, or the stream of a phone before it re-latches).
    pub rtp_rejected: u64,
    /// RTCP packets accepted.
    pub rtcp_received: u64,
    /// RTCP packets dropped because they came from another address than the
    /// latched RTCP (or RTP) source.
    pub rtcp_rejected: u64,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub octets_sent: u64,
    /// Times the audio SSRC changed.
    pub ssrc_changes: u64,
    /// What the peer reports about our stream.
    pub remote: Option<RemoteReport>,
}

/// Why a session could not be set up or updated.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The codec could not be initialised.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A resampler could not be built for the rates involved.
    #[error(transparent)]
    Resample(#[from] ResampleError),
}

/// Why audio could not be queued for playback.
#[derive(Debug, Error)]
pub enum PlaybackError {
    /// The input rate cannot be converted.
    #[error(transparent)]
    Resample(#[from] ResampleError),
    /// The queue already holds [`SessionConfig::max_playback`] of audio.
    #[error("playback queue is full")]
    QueueFull,
}

/// Why [`MediaSession::send_dtmf`] could not queue a digit.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum DtmfSendError {
    /// The peer did not negotiate telephone-event (RFC 4733): send the digit
    /// another way (SIP INFO) or not at all.
    #[error("no telephone-event payload type was negotiated")]
    NotNegotiated,
    /// Not one of `0`-`9`, `*`, `#`, `A`-`D`.
    #[error("{0:?} is not a DTMF digit")]
    InvalidDigit(char),
    /// The stream does not send now (hold, recvonly or inactive).
    #[error("the media stream does not send")]
    NotSending,
    /// [`DTMF_MAX_QUEUED`] digits are already waiting.
    #[error("too many DTMF digits queued")]
    QueueFull,
}

/// A telephone event queued or on the wire.
#[derive(Debug, Clone, Copy)]
struct OutgoingEvent {
    /// RFC 4733 event code.
    event: u8,
    /// Requested duration, in units of the event's clock rate.
    units: u32,
    /// It starts on the first frame due at or after this.
    not_before: Instant,
    /// RTP timestamp of its first packet, once sent.
    start: Option<u32>,
    /// Duration in its end packets, set with the first of them.
    final_units: u16,
    /// End packets sent so far.
    ends_sent: u8,
}

/// A source other than the latched one that sends RTP: the stream it has sent so far.
#[derive(Debug, Clone, Copy)]
struct RelatchCandidate {
    source: SocketAddr,
    ssrc: u32,
    /// Sequence number of its last packet.
    seq: u16,
    /// Packets of its stream so far, this one included.
    packets: u32,
}

/// The media state of one call.
pub struct MediaSession {
    params: MediaParams,
    config: SessionConfig,
    rng: StdRng,
    start: Instant,
    wallclock: SystemTime,
    events: VecDeque<Event>,
    stats: Stats,

    // Receive.
    decoder: Decoder,
    jitter: JitterBuffer,
    dtmf: Option<DtmfDetector>,
    /// The pinned audio SSRC.
    audio_ssrc: Option<u32>,
    /// When audio under `audio_ssrc` last arrived; `None` after a re-INVITE or a
    /// re-latch, when the next SSRC is taken at once.
    last_audio_at: Option<Instant>,
    /// The SSRC of telephone events, when it is not the audio SSRC.
    event_ssrc: Option<u32>,
    seq: SeqUnwrapper,
    receiver: ReceiverStats,
    to_output: Option<StreamResampler>,
    output: Vec<f32>,
    pcm: Vec<f32>,
    last_rtp_at: Instant,
    inactive_reported: bool,

    // Symmetric RTP.
    rtp_destination: SocketAddr,
    latched: Option<SocketAddr>,
    /// The latch came from the first packet, not from the SDP address: packets from
    /// the SDP address still take it over.
    latched_provisionally: bool,
    /// When RTP (of a negotiated payload type) last came from the latched source.
    latched_heard_at: Instant,
    relatch: Option<RelatchCandidate>,
    rtcp_destination: SocketAddr,
    rtcp_latched: Option<SocketAddr>,

    // Send.
    encoder: Encoder,
    ssrc: u32,
    seq_out: u16,
    ts_out: u32,
    next_send: Instant,
    playback: VecDeque<f32>,
    playback_resampler: Option<ClipResampler>,
    talking: bool,
    sent_any: bool,
    sent_since_report: bool,
    /// DTMF to send as telephone events, the one on the wire first.
    dtmf_out: VecDeque<OutgoingEvent>,

    // RTCP.
    next_rtcp: Instant,
    last_sr: Option<(u32, Instant)>,
    pending: VecDeque<Transmit>,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("codec", &self.params.codec)
            .field("ssrc", &self.ssrc)
            .field("destination", &self.rtp_destination)
            .finish_non_exhaustive()
    }
}

impl MediaSession {
    /// Starts the media of a call at `now`. `wallclock` is the wall-clock time at
    /// `now`, used only for RTCP's NTP timestamps.
    pub fn new(
        now: Instant,
        wallclock: SystemTime,
        params: MediaParams,
        config: SessionConfig,
    ) -> Result<Self, SessionError> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let frame = Duration::from_millis(u64::from(params.ptime_ms.clamp(10, 120)));
        let to_output = output_resampler(&params, &config)?;
        let first_rtcp = config.rtcp_interval.mul_f64(rng.gen_range(0.25..0.75));
        Ok(Self {
            decoder: Decoder::new(params.codec)?,
            encoder: Encoder::new(params.codec)?,
            jitter: JitterBuffer::new(config.jitter, frame),
            dtmf: params
                .telephone_event
                .map(|te| DtmfDetector::new(te.clock_rate)),
            audio_ssrc: None,
            last_audio_at: None,
            event_ssrc: None,
            seq: SeqUnwrapper::default(),
            receiver: ReceiverStats::default(),
            to_output,
            output: Vec::new(),
            pcm: Vec::new(),
            last_rtp_at: now,
            inactive_reported: false,
            rtp_destination: params.remote_rtp,
            latched: None,
            latched_provisionally: false,
            latched_heard_at: now,
            relatch: None,
            rtcp_destination: params.remote_rtcp,
            rtcp_latched: None,
            ssrc: rng.gen(),
            seq_out: rng.gen(),
            ts_out: rng.gen(),
            next_send: now,
            playback: VecDeque::new(),
            playback_resampler: None,
            talking: false,
            sent_any: false,
            sent_since_report: false,
            dtmf_out: VecDeque::new(),
            next_rtcp: now + first_rtcp,
            last_sr: None,
            pending: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            params,
            config,
            rng,
            start: now,
            wallclock,
        })
    }

    /// The negotiated parameters in force.
    pub fn params(&self) -> &MediaParams {
        &self.params
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Where RTP goes now (the latched source, or the SDP address before any RTP).
    pub fn destination(&self) -> SocketAddr {
        self.rtp_destination
    }

    /// Statistics so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.packets_lost = self.receiver.cumulative_lost().max(0);
        s.jitter = units_to_duration(u64::from(self.receiver.jitter()), self.params.clock_rate);
        s.playout = self.jitter.stats();
        s
    }

    /// Turns echo mode (extension 9196) on or off.
    pub fn set_echo(&mut self, echo: bool) {
        self.config.echo = echo;
    }

    /// Applies a renegotiation (re-INVITE): hold/resume, a new address, or a new codec.
    /// A new remote address latches afresh; the phone may start a new SSRC, so the
    /// next one from the latched source is accepted at once.
    pub fn update(&mut self, now: Instant, params: MediaParams) -> Result<(), SessionError> {
        self.last_audio_at = None;
        self.event_ssrc = None;
        if params.codec != self.params.codec || params.payload_type != self.params.payload_type {
            self.decoder = Decoder::new(params.codec)?;
            self.encoder = Encoder::new(params.codec)?;
            self.to_output = output_resampler(&params, &self.config)?;
            self.playback_resampler = None;
            self.playback.clear();
            self.jitter.reset();
            self.audio_ssrc = None;
            self.receiver.reset();
            self.jitter
                .set_frame_duration(Duration::from_millis(u64::from(params.ptime_ms)));
        }
        if params.telephone_event != self.params.telephone_event {
            self.dtmf = params
                .telephone_event
                .map(|te| DtmfDetector::new(te.clock_rate));
            // Our events' payload type or clock went away or changed mid-event.
            self.dtmf_out.clear();
        }
        if params.remote_rtp != self.params.remote_rtp {
            // The peer moved (or resumed from a c=0.0.0.0 hold): latch afresh.
            self.rtp_destination = params.remote_rtp;
            self.latched = None;
            self.relatch = None;
        }
        if params.remote_rtcp != self.params.remote_rtcp {
            self.rtcp_destination = params.remote_rtcp;
            self.rtcp_latched = None;
        }
        if params.direction.receives() && !self.params.direction.receives() {
            self.last_rtp_at = now;
            self.inactive_reported = false;
        }
        self.params = params;
        Ok(())
    }

    /// Handles one datagram that arrived on the call's RTP or RTCP port.
    /// Anything malformed or unexpected is counted and dropped; nothing panics.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        match rtcp::classify(bytes) {
            PacketKind::Rtp => self.handle_rtp(now, source, bytes),
            PacketKind::Rtcp => self.handle_rtcp(now, source, bytes),
            // STUN consent checks and keepalives from ICE-capable phones (linphone)
            // need no answer without ICE; other traffic is not ours.
            PacketKind::Stun | PacketKind::Other => self.stats.ignored += 1,
        }
    }

    fn handle_rtp(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        let Ok(packet) = RtpPacket::parse(bytes) else {
            self.stats.ignored += 1;
            return;
        };
        let h = packet.header;
        let is_audio = h.payload_type == self.params.payload_type;
        let is_event = self
            .params
            .telephone_event
            .is_some_and(|te| te.payload_type == h.payload_type);
        let is_cn = h.payload_type == PT_COMFORT_NOISE && !is_audio;
        if !(is_audio || is_event || is_cn) {
            self.stats.ignored += 1;
            return;
        }
        // Source, then SSRC: only the latched phone's stream is played or refreshes
        // the inactivity timer.
        let accepted = self.latch(now, source, &h)
            && if is_audio {
                self.accept_ssrc(now, h.ssrc)
            } else if is_event {
                self.accept_event_ssrc(h.ssrc)
            } else {
                // Comfort noise belongs to the audio stream.
                self.audio_ssrc.is_none_or(|s| s == h.ssrc)
            };
        if !accepted {
            self.stats.rtp_rejected += 1;
            return;
        }
        self.last_rtp_at = now;
        self.inactive_reported = false;
        self.stats.packets_received += 1;

        if !is_audio {
            if is_event {
                if let Some(dtmf) = self.dtmf.as_mut() {
                    for digit in dtmf
                        .handle_packet(now, h.ssrc, h.timestamp, packet.payload)
                        .into_iter()
                        .flatten()
                    {
                        self.events.push_back(Event::Dtmf {
                            digit: digit.digit,
                            duration: digit.duration,
                        });
                    }
                }
            }
            // Events and comfort noise in the audio stream use up sequence numbers.
            if self.audio_ssrc == Some(h.ssrc) {
                let ext = self.seq.unwrap(h.sequence_number);
                self.jitter.insert(now, ext, Slot::Skip);
            }
            return;
        }

        let ext = self.seq.unwrap(h.sequence_number);
        let arrival = self.elapsed_units(now);
        let inserted = self.jitter.insert(
            now,
            ext,
            Slot::Audio {
                payload: packet.payload.to_vec(),
                arrival: now,
            },
        );
        match inserted {
            Inserted::Accepted | Inserted::Late => {
                self.receiver.record(ext, h.timestamp, arrival);
            }
            Inserted::Restarted => {
                // A sender restart (new sequence space, same SSRC): new statistics.
                self.receiver.reset();
                self.seq = SeqUnwrapper::default();
                let ext = self.seq.unwrap(h.sequence_number);
                self.jitter.reset();
                self.jitter.insert(
                    now,
                    ext,
                    Slot::Audio {
                        payload: packet.payload.to_vec(),
                        arrival: now,
                    },
                );
                self.receiver.record(ext, h.timestamp, arrival);
            }
            Inserted::Duplicate | Inserted::OutOfWindow => {}
        }
        self.jitter.set_jitter(units_to_duration(
            u64::from(self.receiver.jitter()),
            self.params.clock_rate,
        ));
    }

    /// Whether audio under `ssrc` from the latched source is played. The pinned SSRC
    /// is; another takes over only when the pinned one has been silent for
    /// [`SSRC_IDLE`] (a sender restart), or at once when none is pinned (the start,
    /// after a re-INVITE, after a re-latch). Otherwise a second stream from the same
    /// address, while the first is live, is rejected.
    fn accept_ssrc(&mut self, now: Instant, ssrc: u32) -> bool {
        if self.audio_ssrc == Some(ssrc) {
            self.last_audio_at = Some(now);
            return true;
        }
        let idle = self
            .last_audio_at
            .is_none_or(|t| now.saturating_duration_since(t) >= SSRC_IDLE);
        if !idle {
            return false;
        }
        if self.audio_ssrc.is_some() {
            self.stats.ssrc_changes += 1;
            self.jitter.reset();
            self.receiver.reset();
            if let Ok(d) = Decoder::new(self.params.codec) {
                self.decoder = d;
            }
        }
        self.seq = SeqUnwrapper::default();
        self.audio_ssrc = Some(ssrc);
        self.last_audio_at = Some(now);
        true
    }

    /// Whether a telephone event (RFC 4733) under `ssrc` from the latched source is
    /// read: under the audio SSRC, or under the one other SSRC first seen on events
    /// (SIPp's pcap replay sends them with an SSRC of their own). Events are sparse,
    /// so silence says nothing about their sender: that SSRC stays pinned until a
    /// re-INVITE or a re-latch.
    fn accept_event_ssrc(&mut self, ssrc: u32) -> bool {
        if self.audio_ssrc == Some(ssrc) {
            return true;
        }
        *self.event_ssrc.get_or_insert(ssrc) == ssrc
    }

    /// Symmetric RTP (RFC 4961): whether an RTP packet from `source` comes from the
    /// latched source, latching or re-latching when the rules allow:
    /// - the first packet latches, whatever its address (NAT);
    /// - while that first latch is not the SDP address, a packet from the SDP
    ///   address takes over at once (someone who raced the phone to the first packet
    ///   loses the latch);
    /// - otherwise another source takes over only when the latched one has sent
    ///   nothing for [`RELATCH_SILENCE`] and the new one has sent
    ///   [`RELATCH_PACKETS`] packets of one consistent stream.
    fn latch(&mut self, now: Instant, source: SocketAddr, h: &RtpHeader) -> bool {
        let Some(current) = self.latched else {
            self.set_latched(now, source, source != self.params.remote_rtp);
            return true;
        };
        if source == current {
            self.latched_heard_at = now;
            return true;
        }
        if self.latched_provisionally && source == self.params.remote_rtp {
            self.set_latched(now, source, false);
            return true;
        }
        // One candidate at a time: a packet that does not continue its stream (other
        // address, other SSRC, a sequence jump) starts a new one.
        let packets = match self.relatch {
            Some(c)
                if c.source == source
                    && c.ssrc == h.ssrc
                    && (1..=RELATCH_MAX_SEQ_STEP)
                        .contains(&h.sequence_number.wrapping_sub(c.seq)) =>
            {
                c.packets + 1
            }
            _ => 1,
        };
        let silent = now.saturating_duration_since(self.latched_heard_at) >= RELATCH_SILENCE;
        if silent && packets >= RELATCH_PACKETS {
            self.set_latched(now, source, false);
            return true;
        }
        self.relatch = Some(RelatchCandidate {
            source,
            ssrc: h.ssrc,
            seq: h.sequence_number,
            packets,
        });
        false
    }

    fn set_latched(&mut self, now: Instant, source: SocketAddr, provisionally: bool) {
        self.latched = Some(source);
        self.latched_provisionally = provisionally;
        self.latched_heard_at = now;
        self.relatch = None;
        self.rtp_destination = source;
        // A new sender may use new SSRCs: the next ones are taken at once (the same
        // SSRC, as after a NAT rebinding, just carries on).
        self.last_audio_at = None;
        self.event_ssrc = None;
        self.events.push_back(Event::Latched {
            destination: source,
        });
    }

    /// Whether RTCP from `source` is read. With rtcp-mux it shares the RTP source.
    /// Otherwise the first RTCP source is latched; after that only it is accepted,
    /// or the latched RTP source's IP with the RTCP port (the latched RTCP port, or
    /// the RTP port + 1 of RFC 3550 11): the phone moved, and RTCP follows it.
    fn latch_rtcp(&mut self, source: SocketAddr) -> bool {
        if self.params.rtcp_mux {
            return self.latched.is_none_or(|rtp| rtp == source);
        }
        let Some(current) = self.rtcp_latched else {
            self.rtcp_latched = Some(source);
            return true;
        };
        if source == current {
            return true;
        }
        let moved = self.latched.is_some_and(|rtp| {
            rtp.ip() == source.ip()
                && (source.port() == current.port()
                    || Some(source.port()) == rtp.port().checked_add(1))
        });
        if moved {
            self.rtcp_latched = Some(source);
        }
        moved
    }

    fn handle_rtcp(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        let Some(info) = rtcp::parse_compound(bytes) else {
            self.stats.ignored += 1;
            return;
        };
        if !self.latch_rtcp(source) {
            self.stats.rtcp_rejected += 1;
            return;
        }
        self.stats.rtcp_received += 1;
        if let Some(middle) = info.sr_ntp_middle {
            self.last_sr = Some((middle, now));
        }
        for block in info.reports.iter().filter(|b| b.ssrc == self.ssrc) {
            let round_trip = (block.last_sr != 0).then(|| {
                // RFC 3550 6.4.1: RTT = A - LSR - DLSR, in 1/65536 s.
                let a = (self.ntp_at(now) >> 16) as u32;
                let rtt = a
                    .wrapping_sub(block.last_sr)
                    .wrapping_sub(block.delay_since_last_sr);
                Duration::from_micros(u64::from(rtt) * 1_000_000 / 65_536)
            });
            self.stats.remote = Some(RemoteReport {
                fraction_lost: f32::from(block.fraction_lost) / 256.0,
                cumulative_lost: block.cumulative_lost,
                jitter: units_to_duration(u64::from(block.jitter), self.params.clock_rate),
                // A bogus LSR/DLSR gives a huge value; no sane call has 60 s RTT.
                round_trip: round_trip.filter(|d| *d < Duration::from_secs(60)),
            });
        }
    }

    /// Advances timers: plays out due frames, reports DTMF whose end was lost, and
    /// detects RTP inactivity.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(playout) = self.jitter.pop(now) {
            self.render(playout);
        }
        if let Some(dtmf) = self.dtmf.as_mut() {
            if let Some(d) = dtmf.handle_timeout(now) {
                self.events.push_back(Event::Dtmf {
                    digit: d.digit,
                    duration: d.duration,
                });
            }
        }
        if let Some(deadline) = self.inactivity_deadline() {
            if now >= deadline {
                self.inactive_reported = true;
                self.events.push_back(Event::Inactive);
            }
        }
    }

    fn inactivity_deadline(&self) -> Option<Instant> {
        let timeout = self.config.inactivity_timeout?;
        (!self.inactive_reported && self.params.direction.receives())
            .then(|| self.last_rtp_at + timeout)
    }

    fn render(&mut self, playout: Playout) {
        let rate = self.params.clock_rate;
        let frame_samples = duration_to_units(self.jitter.frame_duration(), rate) as usize;
        let mut pcm = std::mem::take(&mut self.pcm);
        pcm.clear();
        let kind = match playout {
            Playout::Packet(payload) => match self.decoder.decode(&payload, &mut pcm) {
                Ok(n) if n > 0 => {
                    self.jitter
                        .set_frame_duration(units_to_duration(n as u64, rate));
                    FrameKind::Received
                }
                _ => {
                    pcm.clear();
                    self.conceal(frame_samples, None, &mut pcm);
                    FrameKind::Concealed
                }
            },
            Playout::Lost { next } => {
                self.conceal(frame_samples, next.as_deref(), &mut pcm);
                FrameKind::Concealed
            }
            Playout::Silence => {
                pcm.resize(frame_samples, 0.0);
                FrameKind::Silence
            }
        };
        if self.config.echo && kind != FrameKind::Silence {
            self.playback.extend(pcm.iter().copied());
            let cap = duration_to_units(ECHO_MAX_QUEUED, rate) as usize;
            if self.playback.len() > cap {
                let excess = self.playback.len() - cap;
                self.playback.drain(..excess);
            }
        }
        match (self.to_output.as_mut(), self.config.output_rate) {
            (Some(resampler), Some(out_rate)) => {
                if resampler.process(&pcm, &mut self.output).is_err() {
                    self.output.clear();
                }
                let chunk = (out_rate / 50) as usize;
                let mut taken = 0;
                while self.output.len() - taken >= chunk {
                    self.events.push_back(Event::Audio(Frame {
                        samples: self.output[taken..taken + chunk].to_vec(),
                        sample_rate: out_rate,
                        kind,
                    }));
                    taken += chunk;
                }
                self.output.drain(..taken);
            }
            _ => self.events.push_back(Event::Audio(Frame {
                samples: pcm.clone(),
                sample_rate: rate,
                kind,
            })),
        }
        self.pcm = pcm;
    }

    fn conceal(&mut self, samples: usize, next: Option<&[u8]>, out: &mut Vec<f32>) {
        if self.decoder.conceal(samples, next, out).is_err() {
            out.clear();
            out.resize(samples, 0.0);
        }
    }

    /// The next audio or DTMF event, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues audio for sending, converting `sample_rate` to the codec's rate.
    /// Consecutive calls play back to back.
    pub fn queue_playback(
        &mut self,
        samples: &[f32],
        sample_rate: u32,
    ) -> Result<(), PlaybackError> {
        let rate = self.params.clock_rate;
        let cap = duration_to_units(self.config.max_playback, rate) as usize;
        let incoming = (samples.len() as u64 * u64::from(rate)) / u64::from(sample_rate.max(1));
        if self.playback.len() as u64 + incoming > cap as u64 {
            return Err(PlaybackError::QueueFull);
        }
        if self
            .playback_resampler
            .as_ref()
            .is_none_or(|r| r.from_rate() != sample_rate)
        {
            self.playback_resampler = Some(ClipResampler::new(sample_rate, rate)?);
        }
        let mut converted = Vec::with_capacity(incoming as usize + 1);
        if let Some(r) = self.playback_resampler.as_mut() {
            r.process(samples, &mut converted)?;
        }
        self.playback.extend(converted);
        Ok(())
    }

    /// Drops all queued playback (barge-in): nothing more is sent after the frame
    /// already on the wire; the stream continues with silence.
    pub fn flush_playback(&mut self) {
        self.playback.clear();
    }

    /// Queued playback, at the codec rate.
    pub fn queued_playback(&self) -> Duration {
        units_to_duration(self.playback.len() as u64, self.params.clock_rate)
    }

    /// Queues a DTMF digit to send as an RFC 4733 telephone event (a B2BUA passing a
    /// key press from one leg to the other; call it with [`Event::Dtmf`]'s digit
    /// and duration, or [`DTMF_DEFAULT_DURATION`]).
    ///
    /// The event starts on the first frame of the send schedule due at or after
    /// `now` and replaces the audio frames while it lasts (RFC 4733 2.5): one packet
    /// per ptime on the telephone-event payload type, all with the RTP timestamp of
    /// its first frame, the marker bit on the first, the duration growing by one
    /// frame each, volume 10, and the E bit on the last, which goes out three times
    /// (new sequence numbers, same content). Sequence numbers and timestamps stay
    /// continuous with the audio before and after; the first audio packet after an
    /// event carries the marker bit (a new talkspurt).
    ///
    /// - Timestamps stay on the stream's (the audio codec's) clock; the duration
    ///   field is in units of the telephone-event clock rate, which may differ
    ///   (telephone-event/8000 next to opus/48000, as baresip offers).
    /// - The duration is raised to [`DTMF_MIN_DURATION`], rounded up to whole
    ///   frames, and capped at what the 16-bit duration field holds (8.19 s at
    ///   8000 Hz; no long-event segmentation).
    /// - Playback queued meanwhile is dropped, a frame per event packet, as phones
    ///   mute the voice while they send a digit; what is queued after the event
    ///   plays on. The idle mode does not matter: events are sent even with
    ///   [`IdleMode::Suppress`].
    /// - Digits sent while one is on the wire are queued (up to
    ///   [`DTMF_MAX_QUEUED`]) and follow back to back, each a new event with a new
    ///   timestamp; the two repeated end packets leave two frames between them.
    /// - Queued digits are dropped when the stream stops sending (hold) or a
    ///   re-INVITE changes the telephone-event payload.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        digit: char,
        duration: Duration,
    ) -> Result<(), DtmfSendError> {
        let event = event_code(digit).ok_or(DtmfSendError::InvalidDigit(digit))?;
        let te = self
            .params
            .telephone_event
            .ok_or(DtmfSendError::NotNegotiated)?;
        if !self.params.direction.sends() {
            return Err(DtmfSendError::NotSending);
        }
        if self.dtmf_out.len() >= DTMF_MAX_QUEUED {
            return Err(DtmfSendError::QueueFull);
        }
        let units = duration_to_units(duration.max(DTMF_MIN_DURATION), te.clock_rate)
            .clamp(1, u64::from(u16::MAX)) as u32;
        self.dtmf_out.push_back(OutgoingEvent {
            event,
            units,
            not_before: now,
            start: None,
            final_units: 0,
            ends_sent: 0,
        });
        Ok(())
    }

    /// DTMF digits queued by [`send_dtmf`](Self::send_dtmf) and not yet fully
    /// sent, the one on the wire included.
    pub fn queued_dtmf(&self) -> usize {
        self.dtmf_out.len()
    }

    /// The telephone-event packet for the frame at `timestamp` (`samples` long),
    /// when a queued event is due; the frame's audio is dropped.
    fn next_event_packet(&mut self, timestamp: u32, samples: u32) -> Option<Transmit> {
        if !self.params.direction.sends() {
            self.dtmf_out.clear();
            return None;
        }
        let te = self.params.telephone_event?;
        let frame = Duration::from_millis(u64::from(self.params.ptime_ms.clamp(10, 120)));
        // `poll_transmit` has moved the schedule past this frame already.
        let due = self.next_send.checked_sub(frame).unwrap_or(self.next_send);
        let ev = self.dtmf_out.front_mut()?;
        let first = ev.start.is_none();
        if first && due < ev.not_before {
            return None;
        }
        let start = *ev.start.get_or_insert(timestamp);
        let elapsed = (u64::from(timestamp.wrapping_sub(start)) + u64::from(samples))
            * u64::from(te.clock_rate)
            / u64::from(self.params.clock_rate.max(1));
        let (end, duration) = if ev.ends_sent > 0 {
            (true, ev.final_units)
        } else if elapsed < u64::from(ev.units) {
            (false, elapsed as u16)
        } else {
            ev.final_units = elapsed.min(u64::from(u16::MAX)) as u16;
            (true, ev.final_units)
        };
        let payload = EventPayload {
            event: ev.event,
            end,
            volume: DTMF_VOLUME,
            duration,
        }
        .to_bytes();
        if end {
            ev.ends_sent += 1;
            if ev.ends_sent >= DTMF_END_PACKETS {
                self.dtmf_out.pop_front();
            }
        }
        let header = RtpHeader {
            marker: first,
            payload_type: te.payload_type,
            sequence_number: self.seq_out,
            timestamp: start,
            ssrc: self.ssrc,
        };
        let mut bytes = Vec::with_capacity(rtp::FIXED_HEADER_LEN + payload.len());
        rtp::write_packet(&header, &payload, &mut bytes);
        // The voice under the tone is muted, not delayed.
        let muted = (samples as usize).min(self.playback.len());
        self.playback.drain(..muted);
        self.seq_out = self.seq_out.wrapping_add(1);
        self.talking = false;
        self.sent_any = true;
        self.sent_since_report = true;
        self.stats.packets_sent += 1;
        self.stats.octets_sent += payload.len() as u64;
        Some(Transmit {
            destination: self.rtp_destination,
            component: Component::Rtp,
            bytes,
        })
    }

    /// The next datagram to send at `now`: a due RTCP report, or the RTP packet of
    /// the frame due on the 20 ms schedule. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if now >= self.next_rtcp {
            self.queue_rtcp(now);
        }
        while let Some(t) = self.pending.pop_front() {
            if routable(t.destination) {
                return Some(t);
            }
        }
        while now >= self.next_send {
            let frame = Duration::from_millis(u64::from(self.params.ptime_ms.clamp(10, 120)));
            let behind = now.saturating_duration_since(self.next_send);
            if behind > frame * MAX_CATCH_UP_FRAMES {
                // The driver slept too long: skip the missed frames rather than
                // bursting them, keeping timestamps in step with real time.
                let skipped = (behind.as_micros() / frame.as_micros().max(1)) as u32;
                self.next_send += frame * skipped;
                self.ts_out = self.ts_out.wrapping_add(self.frame_units() * skipped);
                self.talking = false;
            }
            self.next_send += frame;
            if let Some(t) = self.next_rtp_packet().filter(|t| routable(t.destination)) {
                return Some(t);
            }
        }
        None
    }

    fn frame_units(&self) -> u32 {
        self.params.clock_rate / 1000 * self.params.ptime_ms.clamp(10, 120)
    }

    fn next_rtp_packet(&mut self) -> Option<Transmit> {
        let samples = self.frame_units();
        let timestamp = self.ts_out;
        self.ts_out = self.ts_out.wrapping_add(samples);
        if let Some(t) = self.next_event_packet(timestamp, samples) {
            return Some(t);
        }
        if !self.params.direction.sends() {
            self.talking = false;
            return None;
        }
        let has_audio = !self.playback.is_empty()
            && (!self.config.echo || self.playback.len() >= samples as usize);
        if !has_audio && self.config.idle == IdleMode::Suppress {
            self.talking = false;
            return None;
        }
        let mut frame: Vec<f32> = if has_audio {
            let n = (samples as usize).min(self.playback.len());
            self.playback.drain(..n).collect()
        } else {
            Vec::new()
        };
        frame.resize(samples as usize, 0.0);
        let mut bytes = Vec::with_capacity(rtp::FIXED_HEADER_LEN + samples as usize);
        let header = RtpHeader {
            marker: !self.sent_any || (has_audio && !self.talking),
            payload_type: self.params.payload_type,
            sequence_number: self.seq_out,
            timestamp,
            ssrc: self.ssrc,
        };
        let mut payload = Vec::with_capacity(samples as usize);
        if self.encoder.encode(&frame, &mut payload).is_err() {
            return None;
        }
        rtp::write_packet(&header, &payload, &mut bytes);
        self.seq_out = self.seq_out.wrapping_add(1);
        self.talking = has_audio;
        self.sent_any = true;
        self.sent_since_report = true;
        self.stats.packets_sent += 1;
        self.stats.octets_sent += payload.len() as u64;
        Some(Transmit {
            destination: self.rtp_destination,
            component: Component::Rtp,
            bytes,
        })
    }

    fn ntp_at(&self, now: Instant) -> u64 {
        rtcp::ntp_timestamp(self.wallclock + now.saturating_duration_since(self.start))
    }

    fn queue_rtcp(&mut self, now: Instant) {
        let interval = self
            .config
            .rtcp_interval
            .mul_f64(self.rng.gen_range(0.5..1.5));
        self.next_rtcp = now + interval.max(Duration::from_millis(100));
        let sender = self.sent_since_report.then(|| {
            // The RTP timestamp that corresponds to `now` on our send schedule.
            let ahead = duration_to_units(
                self.next_send.saturating_duration_since(now),
                self.params.clock_rate,
            );
            SenderInfo {
                ntp: self.ntp_at(now),
                rtp_timestamp: self.ts_out.wrapping_sub(ahead as u32),
                packet_count: self.stats.packets_sent as u32,
                octet_count: self.stats.octets_sent as u32,
            }
        });
        self.sent_since_report = false;
        let (lsr, dlsr) = match self.last_sr {
            Some((middle, at)) => {
                let delay = now.saturating_duration_since(at);
                (middle, (delay.as_micros() * 65_536 / 1_000_000) as u32)
            }
            None => (0, 0),
        };
        let block = self
            .audio_ssrc
            .and_then(|s| self.receiver.report_block(s, lsr, dlsr));
        let mut bytes = Vec::with_capacity(96);
        rtcp::write_report(self.ssrc, sender, block, &self.config.cname, &mut bytes);
        let (destination, component) = if self.params.rtcp_mux {
            (self.rtp_destination, Component::Rtp)
        } else {
            (
                self.rtcp_latched.unwrap_or(self.rtcp_destination),
                Component::Rtcp,
            )
        };
        self.pending.push_back(Transmit {
            destination,
            component,
            bytes,
        });
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) has work.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_send.min(self.next_rtcp);
        for other in [
            self.jitter.poll_timeout(),
            self.inactivity_deadline(),
            self.dtmf.as_ref().and_then(DtmfDetector::poll_timeout),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(other);
        }
        t
    }

    fn elapsed_units(&self, now: Instant) -> i64 {
        duration_to_units(
            now.saturating_duration_since(self.start),
            self.params.clock_rate,
        ) as i64
    }
}

fn output_resampler(
    params: &MediaParams,
    config: &SessionConfig,
) -> Result<Option<StreamResampler>, ResampleError> {
    match config.output_rate {
        Some(rate) if rate != params.clock_rate => Ok(Some(StreamResampler::new(
            params.clock_rate,
            rate,
            (params.clock_rate / 50) as usize,
        )?)),
        _ => Ok(None),
    }
}

/// `c=0.0.0.0` (RFC 3264 8.4 hold) or port 0: there is nowhere to send to (and
/// sending to 0.0.0.0 would reach the local host on Linux).
fn routable(destination: SocketAddr) -> bool {
    !destination.ip().is_unspecified() && destination.port() != 0
}

fn units_to_duration(units: u64, rate: u32) -> Duration {
    Duration::from_micros(units.saturating_mul(1_000_000) / u64::from(rate.max(1)))
}

fn duration_to_units(d: Duration, rate: u32) -> u64 {
    (d.as_micros() * u128::from(rate) / 1_000_000).min(u128::from(u64::MAX)) as u64
}
