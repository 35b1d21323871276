//! Sans-IO media core of sofia-phone: RTP/RTCP, SDP offer/answer, jitter buffer,
//! G.711 and Opus, RFC 4733 DTMF, resampling and 20 ms pacing.
//!
//! Everything here is a plain state machine: time (`now: Instant`) and randomness
//! (a seed) are inputs, datagrams go in through [`MediaSession::handle_datagram`],
//! packets come out of [`MediaSession::poll_transmit`], audio and DTMF out of
//! [`MediaSession::poll_event`]. No sockets, clocks, threads or files (enforced by
//! `crates/clippy.toml`), no tokio, and no knowledge of SIP.

pub mod codec;
pub mod dtmf;
pub mod g711;
pub mod jitter;
pub mod offer_answer;
pub mod ports;
pub mod resample;
pub mod rtcp;
pub mod rtp;
pub mod session;

pub use codec::{CodecError, CodecKind, Decoder, Encoder};
pub use dtmf::Digit;
pub use jitter::JitterConfig;
pub use offer_answer::{
    negotiate, offered_direction, Direction, MediaConfig, MediaParams, Negotiated,
    NegotiationError, SdpSession, SrtpKeys, SrtpPolicy, TelephoneEvent, SRTP_KEY_LEN,
};
pub use ports::{PortAllocator, PortPair, PortRangeError};
pub use resample::{resample, ClipResampler, ResampleError, StreamResampler};
pub use session::{
    Component, Event, Frame, FrameKind, IdleMode, MediaSession, PlaybackError, RemoteReport,
    SessionConfig, SessionError, Stats, Transmit,
};
