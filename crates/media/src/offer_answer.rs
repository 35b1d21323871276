//! SDP offer/answer (RFC 3264) over SDP (RFC 4566) for one audio stream.
//!
//! Owns: choosing the codec and telephone-event payload type, where to send RTP and
//! RTCP, the stream direction (hold and resume), and writing our SDP (answers, and
//! offers for INVITEs without SDP and for re-INVITEs) with an `o=` version that
//! increments whenever our description changes (RFC 3264 8). Parsing and printing
//! use the `sdp` crate. SRTP keys are negotiated here with SDES (RFC 4568 `a=crypto`,
//! AES_CM_128_HMAC_SHA1_80 only); encrypting and decrypting is the shell's (the key
//! material comes from it: this crate reads no randomness of its own for keys). Must
//! not: know about SIP; the shell maps
//! [`NegotiationError`] to a status (488 Not Acceptable Here for
//! [`NegotiationError::is_not_acceptable`], 400 otherwise).

use crate::codec::CodecKind;
use sdp::description::common::{Address, Attribute, ConnectionInformation};
use sdp::description::media::{MediaDescription, MediaName, RangedPort};
use sdp::description::session::{Origin, SessionDescription, TimeDescription, Timing};
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Stream direction (RFC 3264 5.1, 6.1), always from our point of view in
/// [`MediaParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Send and receive.
    #[default]
    SendRecv,
    /// Send only (we hold the peer, or the peer holds us with recvonly).
    SendOnly,
    /// Receive only (the peer holds us with sendonly).
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    /// Whether RTP is sent in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    /// Whether RTP is received in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    fn from_flags(send: bool, recv: bool) -> Self {
        match (send, recv) {
            (true, true) => Self::SendRecv,
            (true, false) => Self::SendOnly,
            (false, true) => Self::RecvOnly,
            (false, false) => Self::Inactive,
        }
    }

    /// The same stream seen from the other end (sendonly <-> recvonly).
    pub fn reversed(self) -> Self {
        Self::from_flags(self.receives(), self.sends())
    }

    /// What both `self` and `other` allow.
    pub fn intersect(self, other: Self) -> Self {
        Self::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// The SDP attribute name.
    pub fn attribute(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attribute(key: &str) -> Option<Self> {
        match key {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
}

/// Our side of the negotiation, from the profile and the allocated ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Codecs we accept, most preferred first.
    pub codecs: Vec<CodecKind>,
    /// Address written in our `c=` and `o=` lines.
    pub local_ip: IpAddr,
    /// Our RTP port (RTCP is on `+1` unless rtcp-mux is agreed).
    pub local_rtp_port: u16,
    /// Packetization time we send and advertise, in ms (RFC 4566 6).
    pub ptime_ms: u32,
    /// Accept rtcp-mux when offered, and offer it (RFC 5761 5.1.1).
    pub rtcp_mux: bool,
    /// The direction we want; `SendOnly` puts the peer on hold.
    pub direction: Direction,
    /// Whether media is encrypted (SRTP with SDES keys).
    pub srtp: SrtpPolicy,
    /// Our SRTP master key and salt (16 + 14 bytes, from a CSPRNG), sent in our
    /// `a=crypto`; required unless `srtp` is `Off`.
    pub srtp_key: Option<[u8; SRTP_KEY_LEN]>,
}

/// Master key plus master salt of AES_CM_128_HMAC_SHA1_80 (RFC 4568 6.2.1).
pub const SRTP_KEY_LEN: usize = 30;
/// The one crypto suite we offer and accept.
const SRTP_SUITE: &str = "AES_CM_128_HMAC_SHA1_80";

/// The profile's SRTP policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Plain RTP only: offers of RTP/SAVP are refused, `a=crypto` is ignored.
    Off,
    /// SRTP when the peer offers or accepts it, plain RTP otherwise; our offers are
    /// RTP/AVP with `a=crypto` (RFC 4568 "best effort").
    #[default]
    Optional,
    /// SRTP or nothing: a plain offer is refused (488); our offers are RTP/SAVP.
    Required,
}

/// The SRTP keys of a negotiated stream.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Ours: what we encrypt with (the peer decrypts with it).
    pub local: [u8; SRTP_KEY_LEN],
    /// The peer's: what it encrypts with.
    pub remote: [u8; SRTP_KEY_LEN],
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys never go to logs.
        f.write_str("SrtpKeys(..)")
    }
}

impl MediaConfig {
    /// A configuration with the usual defaults: 20 ms, rtcp-mux accepted, sendrecv.
    pub fn new(codecs: Vec<CodecKind>, local_ip: IpAddr, local_rtp_port: u16) -> Self {
        Self {
            codecs,
            local_ip,
            local_rtp_port,
            ptime_ms: 20,
            rtcp_mux: true,
            direction: Direction::SendRecv,
            srtp: SrtpPolicy::Off,
            srtp_key: None,
        }
    }

    /// The same, with SRTP under `policy` using `key` as ours.
    pub fn with_srtp(mut self, policy: SrtpPolicy, key: [u8; SRTP_KEY_LEN]) -> Self {
        self.srtp = policy;
        self.srtp_key = (policy != SrtpPolicy::Off).then_some(key);
        self
    }
}

/// The negotiated telephone-event payload (RFC 4733 7.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Dynamic payload type.
    pub payload_type: u8,
    /// Clock rate from its rtpmap.
    pub clock_rate: u32,
}

/// Everything the media session needs from a completed negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaParams {
    /// The codec both sides use.
    pub codec: CodecKind,
    /// Its payload type (the offerer's number, RFC 3264 6.1).
    pub payload_type: u8,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Channels as signalled (2 for Opus, RFC 7587 7).
    pub channels: u8,
    /// Telephone-event payload, if the peer supports RFC 4733.
    pub telephone_event: Option<TelephoneEvent>,
    /// Where the peer wants RTP, from `c=` and `m=` (symmetric RTP may override).
    pub remote_rtp: SocketAddr,
    /// Where the peer wants RTCP: `a=rtcp` (RFC 3605), else RTP port + 1, or the RTP
    /// address with rtcp-mux.
    pub remote_rtcp: SocketAddr,
    /// RTP and RTCP share one port (RFC 5761).
    pub rtcp_mux: bool,
    /// Our direction.
    pub direction: Direction,
    /// Packetization time we send, in ms: the peer's `a=ptime` if the codec
    /// allows it, else ours.
    pub ptime_ms: u32,
    /// The peer's `a=ptime`, if given.
    pub remote_ptime_ms: Option<u32>,
    /// SRTP keys when the stream is encrypted; `None`: plain RTP.
    pub srtp: Option<SrtpKeys>,
}

/// The result of answering an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Our SDP answer, CRLF line endings.
    pub answer_sdp: Vec<u8>,
    /// The agreed parameters.
    pub params: MediaParams,
}

/// Why an offer or answer could not be used.
#[derive(Debug, Error)]
pub enum NegotiationError {
    /// The body is not SDP the parser accepts.
    #[error("malformed SDP: {0}")]
    Malformed(#[source] sdp::Error),
    /// No `m=audio` line with an RTP/AVP(F) profile and a non-zero port.
    #[error("no usable audio stream in the SDP")]
    NoAudioStream,
    /// None of our codecs was offered (the shell answers 488).
    #[error("no codec in common")]
    NoCommonCodec,
    /// Neither the session nor the audio stream has a `c=` line.
    #[error("no connection address for the audio stream")]
    MissingConnectionAddress,
    /// The `c=` address is not an IP address (e.g. an FQDN).
    #[error("connection address {0:?} is not an IP address")]
    BadConnectionAddress(String),
    /// An answer arrived without an outstanding offer of ours.
    #[error("SDP answer without an outstanding offer")]
    AnswerWithoutOffer,
    /// The answer's audio stream does not match our offer (RFC 3264 6).
    #[error("the answer does not match our offer")]
    AnswerMismatch,
    /// SRTP is required and the peer did not offer or accept a usable `a=crypto`, or
    /// it offered RTP/SAVP and SRTP is off.
    #[error("no acceptable SRTP crypto: {0}")]
    Srtp(&'static str),
}

impl NegotiationError {
    /// Whether this is "we understood you but cannot do it" (SIP 488) rather than
    /// a malformed body (SIP 400).
    pub fn is_not_acceptable(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}

/// Dynamic payload types used in our own offers.
const OFFER_PT_OPUS: u8 = 96;
const OFFER_PT_TE_8000: u8 = 101;
const OFFER_PT_TE_48000: u8 = 102;
/// DTMF events we accept and offer (RFC 4733 3.2: 0-15 are the DTMF digits).
const TE_EVENTS: &str = "0-16";

/// One payload type in an m= line, with its rtpmap resolved.
#[derive(Debug, Clone)]
struct Format {
    pt: u8,
    name: String,
    clock_rate: u32,
}

/// What we take from the audio stream of an SDP.
#[derive(Debug)]
struct RemoteAudio {
    /// Index of the m= line.
    index: usize,
    formats: Vec<Format>,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    rtcp_mux: bool,
    direction: Direction,
    ptime_ms: Option<u32>,
    proto: Vec<String>,
    /// The first usable `a=crypto` (tag, key and salt), if any.
    crypto: Option<(u32, [u8; SRTP_KEY_LEN])>,
    /// Whether the profile is RTP/SAVP(F): SRTP or nothing.
    secure: bool,
}

/// An offer we sent and await the answer to: whether it required SRTP.
#[derive(Debug, Clone)]
struct PendingOffer {
    srtp_required: bool,
}

/// The SDP state of one call: our `o=` line and any offer in flight.
#[derive(Debug, Clone)]
pub struct SdpSession {
    config: MediaConfig,
    session_id: u64,
    version: u64,
    last_body: Option<String>,
    pending_offer: Option<PendingOffer>,
}

impl SdpSession {
    /// A session whose `o=` line uses `session_id` (random, from the call's seed).
    pub fn new(config: MediaConfig, session_id: u64) -> Self {
        Self {
            config,
            session_id,
            version: 0,
            last_body: None,
            pending_offer: None,
        }
    }

    /// Our configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Changes the direction we want (hold: `SendOnly`; resume: `SendRecv`); takes
    /// effect in the next answer or offer.
    pub fn set_direction(&mut self, direction: Direction) {
        self.config.direction = direction;
    }

    /// The current `o=` session version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Answers a remote offer (RFC 3264 6): the first codec in our preference that
    /// the peer offered, one telephone-event at that codec's clock rate.
    pub fn negotiate(&mut self, offer: &[u8]) -> Result<Negotiated, NegotiationError> {
        let desc = parse(offer)?;
        let remote = remote_audio(&desc)?;
        let (codec, format) = self
            .config
            .codecs
            .iter()
            .find_map(|&c| {
                remote
                    .formats
                    .iter()
                    .find(|f| matches_codec(f, c))
                    .map(|f| (c, f.clone()))
            })
            .ok_or(NegotiationError::NoCommonCodec)?;
        let telephone_event = pick_telephone_event(&remote.formats, codec.clock_rate());
        let rtcp_mux = remote.rtcp_mux && self.config.rtcp_mux;
        let direction = remote.direction.reversed().intersect(self.config.direction);
        // RFC 4568: answer a usable crypto line with ours under the same tag; an
        // RTP/SAVP offer is SRTP or nothing; `Required` refuses plain offers.
        let srtp = match (self.config.srtp, self.config.srtp_key, remote.crypto) {
            (SrtpPolicy::Off, _, _) if remote.secure => {
                return Err(NegotiationError::Srtp(
                    "the offer is RTP/SAVP and SRTP is off",
                ))
            }
            (SrtpPolicy::Off, _, _) => None,
            (_, Some(local), Some((tag, remote_key))) => Some((
                tag,
                SrtpKeys {
                    local,
                    remote: remote_key,
                },
            )),
            (SrtpPolicy::Required, _, _) => {
                return Err(NegotiationError::Srtp("no usable a=crypto in the offer"))
            }
            _ if remote.secure => {
                return Err(NegotiationError::Srtp("RTP/SAVP without a usable a=crypto"))
            }
            _ => None,
        };

        let mut formats = vec![Format {
            pt: format.pt,
            name: codec.encoding_name().into(),
            clock_rate: codec.clock_rate(),
        }];
        if let Some(te) = telephone_event {
            formats.push(Format {
                pt: te.payload_type,
                name: "telephone-event".into(),
                clock_rate: te.clock_rate,
            });
        }
        let crypto = srtp.as_ref().map(|(tag, keys)| (*tag, keys.local));
        let audio = self.audio_description(&remote.proto, &formats, direction, rtcp_mux, crypto);
        // RFC 3264 6: the answer has as many m= lines as the offer, in the same
        // order; streams we do not take are rejected with port 0.
        let media = desc
            .media_descriptions
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i == remote.index {
                    audio.clone()
                } else {
                    rejected(m)
                }
            })
            .collect();
        let answer_sdp = self.finish(media);
        self.pending_offer = None;
        Ok(Negotiated {
            answer_sdp,
            params: MediaParams {
                codec,
                payload_type: format.pt,
                clock_rate: codec.clock_rate(),
                channels: codec.sdp_channels(),
                telephone_event,
                remote_rtp: remote.rtp,
                remote_rtcp: if rtcp_mux { remote.rtp } else { remote.rtcp },
                rtcp_mux,
                direction,
                ptime_ms: send_ptime(codec, remote.ptime_ms, self.config.ptime_ms),
                remote_ptime_ms: remote.ptime_ms,
                srtp: srtp.map(|(_, keys)| keys),
            },
        })
    }

    /// Writes an offer of all our codecs (for an INVITE without SDP, where the offer
    /// goes in the 200 and the answer comes in the ACK, or for a re-INVITE).
    pub fn create_offer(&mut self) -> Vec<u8> {
        let mut formats = Vec::new();
        let mut wants_48k_events = false;
        for &codec in &self.config.codecs {
            let pt = codec.static_payload_type().unwrap_or(OFFER_PT_OPUS);
            wants_48k_events |= codec.clock_rate() == 48_000;
            formats.push(Format {
                pt,
                name: codec.encoding_name().into(),
                clock_rate: codec.clock_rate(),
            });
        }
        formats.push(Format {
            pt: OFFER_PT_TE_8000,
            name: "telephone-event".into(),
            clock_rate: 8_000,
        });
        if wants_48k_events {
            formats.push(Format {
                pt: OFFER_PT_TE_48000,
                name: "telephone-event".into(),
                clock_rate: 48_000,
            });
        }
        let required = self.config.srtp == SrtpPolicy::Required;
        let profile = if required { "SAVP" } else { "AVP" };
        let proto = vec!["RTP".to_string(), profile.to_string()];
        let crypto = match self.config.srtp {
            SrtpPolicy::Off => None,
            _ => self.config.srtp_key.map(|k| (1, k)),
        };
        let media = self.audio_description(
            &proto,
            &formats,
            self.config.direction,
            self.config.rtcp_mux,
            crypto,
        );
        self.pending_offer = Some(PendingOffer {
            srtp_required: required,
        });
        self.finish(vec![media])
    }

    /// Takes the answer to our last [`create_offer`](Self::create_offer). The codec
    /// is the answer's first format that we offered (RFC 3264 7).
    pub fn handle_answer(&mut self, answer: &[u8]) -> Result<MediaParams, NegotiationError> {
        let Some(pending) = self.pending_offer.clone() else {
            return Err(NegotiationError::AnswerWithoutOffer);
        };
        let desc = parse(answer)?;
        if desc.media_descriptions.len() != 1 {
            return Err(NegotiationError::AnswerMismatch);
        }
        let remote = remote_audio(&desc)?;
        let (codec, format) = remote
            .formats
            .iter()
            .find_map(|f| {
                self.config
                    .codecs
                    .iter()
                    .find(|&&c| matches_codec(f, c))
                    .map(|&c| (c, f.clone()))
            })
            .ok_or(NegotiationError::NoCommonCodec)?;
        self.pending_offer = None;
        let rtcp_mux = remote.rtcp_mux && self.config.rtcp_mux;
        let srtp = match (self.config.srtp, self.config.srtp_key, remote.crypto) {
            (SrtpPolicy::Off, _, _) => None,
            (_, Some(local), Some((_, remote_key))) => Some(SrtpKeys {
                local,
                remote: remote_key,
            }),
            _ if pending.srtp_required => {
                return Err(NegotiationError::Srtp("the answer has no usable a=crypto"))
            }
            _ => None,
        };
        Ok(MediaParams {
            codec,
            payload_type: format.pt,
            clock_rate: codec.clock_rate(),
            channels: codec.sdp_channels(),
            telephone_event: pick_telephone_event(&remote.formats, codec.clock_rate()),
            remote_rtp: remote.rtp,
            remote_rtcp: if rtcp_mux { remote.rtp } else { remote.rtcp },
            rtcp_mux,
            direction: remote.direction.reversed().intersect(self.config.direction),
            ptime_ms: send_ptime(codec, remote.ptime_ms, self.config.ptime_ms),
            remote_ptime_ms: remote.ptime_ms,
            srtp,
        })
    }

    fn audio_description(
        &self,
        proto: &[String],
        formats: &[Format],
        direction: Direction,
        rtcp_mux: bool,
        crypto: Option<(u32, [u8; SRTP_KEY_LEN])>,
    ) -> MediaDescription {
        let mut attributes = Vec::new();
        let attr = |k: &str, v: Option<String>| Attribute {
            key: k.to_string(),
            value: v,
        };
        for f in formats {
            let channels = if f.name == "opus" { "/2" } else { "" };
            attributes.push(attr(
                "rtpmap",
                Some(format!("{} {}/{}{}", f.pt, f.name, f.clock_rate, channels)),
            ));
            if f.name == "opus" {
                // We send mono and can use in-band FEC (RFC 7587 6.1).
                attributes.push(attr("fmtp", Some(format!("{} useinbandfec=1", f.pt))));
            } else if f.name == "telephone-event" {
                attributes.push(attr("fmtp", Some(format!("{} {TE_EVENTS}", f.pt))));
            }
        }
        attributes.push(attr("ptime", Some(self.config.ptime_ms.to_string())));
        if rtcp_mux {
            attributes.push(attr("rtcp-mux", None));
        }
        attributes.push(attr(direction.attribute(), None));
        if let Some((tag, key)) = crypto {
            attributes.push(attr(
                "crypto",
                Some(format!("{tag} {SRTP_SUITE} inline:{}", base64_encode(&key))),
            ));
        }
        MediaDescription {
            media_name: MediaName {
                media: "audio".into(),
                port: RangedPort {
                    value: self.config.local_rtp_port as isize,
                    range: None,
                },
                protos: proto.to_vec(),
                formats: formats.iter().map(|f| f.pt.to_string()).collect(),
            },
            media_title: None,
            connection_information: None,
            bandwidth: vec![],
            encryption_key: None,
            attributes,
        }
    }

    /// Wraps media sections in a session description, bumping the version when the
    /// description differs from the last one we sent (RFC 3264 8).
    fn finish(&mut self, media: Vec<MediaDescription>) -> Vec<u8> {
        let mut desc = SessionDescription {
            version: 0,
            origin: Origin {
                username: "sofia".into(),
                session_id: self.session_id,
                session_version: 0,
                network_type: "IN".into(),
                address_type: address_type(self.config.local_ip).into(),
                unicast_address: self.config.local_ip.to_string(),
            },
            session_name: "sofia-phone".into(),
            session_information: None,
            uri: None,
            email_address: None,
            phone_number: None,
            connection_information: Some(connection(self.config.local_ip)),
            bandwidth: vec![],
            time_descriptions: vec![TimeDescription {
                timing: Timing {
                    start_time: 0,
                    stop_time: 0,
                },
                repeat_times: vec![],
            }],
            time_zones: vec![],
            encryption_key: None,
            attributes: vec![],
            media_descriptions: media,
        };
        let body = desc.marshal();
        if self.last_body.as_ref().is_some_and(|last| *last != body) {
            self.version = self.version.wrapping_add(1);
        }
        self.last_body = Some(body);
        desc.origin.session_version = self.version;
        desc.marshal().into_bytes()
    }
}

/// Answers `offer` with a fresh [`SdpSession`] (session id 0 stands in for a random
/// one; use [`SdpSession`] to keep state across re-INVITEs).
pub fn negotiate(offer: &[u8], config: &MediaConfig) -> Result<Negotiated, NegotiationError> {
    SdpSession::new(config.clone(), 0).negotiate(offer)
}

/// The direction the sender of `offer` asks for on its audio stream, from its point of
/// view (`SendOnly` or `Inactive` is hold, RFC 3264 8.4; c=0.0.0.0 counts as sendonly).
/// A B2BUA mirrors it onto the other leg.
pub fn offered_direction(offer: &[u8]) -> Result<Direction, NegotiationError> {
    Ok(remote_audio(&parse(offer)?)?.direction)
}

fn parse(bytes: &[u8]) -> Result<SessionDescription, NegotiationError> {
    SessionDescription::unmarshal(&mut Cursor::new(bytes)).map_err(NegotiationError::Malformed)
}

fn address_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

fn connection(ip: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".into(),
        address_type: address_type(ip).into(),
        address: Some(Address {
            address: ip.to_string(),
            ttl: None,
            range: None,
        }),
    }
}

fn rejected(offered: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media_name: MediaName {
            media: offered.media_name.media.clone(),
            port: RangedPort {
                value: 0,
                range: None,
            },
            protos: offered.media_name.protos.clone(),
            formats: offered.media_name.formats.clone(),
        },
        media_title: None,
        connection_information: None,
        bandwidth: vec![],
        encryption_key: None,
        attributes: vec![],
    }
}

/// The packetization we send: the peer's `a=ptime` when the codec can produce it
/// (RFC 4566 6: ptime is the receiver's preference; Opus frames are 10, 20, 40 or
/// 60 ms, RFC 6716 2.1.4), else ours.
fn send_ptime(codec: CodecKind, remote: Option<u32>, ours: u32) -> u32 {
    let allowed: &[u32] = match codec {
        CodecKind::Pcmu | CodecKind::Pcma => &[10, 20, 30, 40, 60],
        CodecKind::Opus => &[10, 20, 40, 60],
    };
    remote.filter(|p| allowed.contains(p)).unwrap_or(ours)
}

fn matches_codec(format: &Format, codec: CodecKind) -> bool {
    format.name.eq_ignore_ascii_case(codec.encoding_name())
        && format.clock_rate == codec.clock_rate()
}

/// Exactly one telephone-event: the one at `clock_rate` (RFC 4733 2.1 wants the
/// audio codec's rate). If the peer offers none at that rate (baresip offers only
/// telephone-event/8000 next to opus/48000), the 8000 Hz one, then any: DTMF at a
/// different rate still works, and losing it would be worse.
fn pick_telephone_event(formats: &[Format], clock_rate: u32) -> Option<TelephoneEvent> {
    let events: Vec<&Format> = formats
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("telephone-event"))
        .collect();
    events
        .iter()
        .find(|f| f.clock_rate == clock_rate)
        .or_else(|| events.iter().find(|f| f.clock_rate == 8_000))
        .or_else(|| events.first())
        .map(|f| TelephoneEvent {
            payload_type: f.pt,
            clock_rate: f.clock_rate,
        })
}

fn remote_audio(desc: &SessionDescription) -> Result<RemoteAudio, NegotiationError> {
    let (index, media) = desc
        .media_descriptions
        .iter()
        .enumerate()
        .find(|(_, m)| {
            let proto = m.media_name.protos.join("/");
            m.media_name.media == "audio"
                && m.media_name.port.value > 0
                && matches!(
                    proto.as_str(),
                    "RTP/AVP" | "RTP/AVPF" | "RTP/SAVP" | "RTP/SAVPF"
                )
        })
        .ok_or(NegotiationError::NoAudioStream)?;

    let mut formats = Vec::new();
    for fmt in &media.media_name.formats {
        let Ok(pt) = fmt.parse::<u8>() else { continue };
        if pt > 127 {
            continue;
        }
        let rtpmap = media.attributes.iter().find_map(|a| {
            let value = a.value.as_deref()?;
            if a.key != "rtpmap" {
                return None;
            }
            let (num, rest) = value.split_once(' ')?;
            (num.trim().parse::<u8>().ok()? == pt).then_some(rest.trim())
        });
        let format = match rtpmap {
            Some(map) => {
                let mut parts = map.split('/');
                let name = parts.next().unwrap_or_default().to_string();
                let Some(rate) = parts.next().and_then(|r| r.trim().parse::<u32>().ok()) else {
                    continue;
                };
                Format {
                    pt,
                    name,
                    clock_rate: rate,
                }
            }
            // RFC 3551 6, table 4: static payload types need no rtpmap.
            None => match pt {
                0 => Format {
                    pt,
                    name: "PCMU".into(),
                    clock_rate: 8_000,
                },
                8 => Format {
                    pt,
                    name: "PCMA".into(),
                    clock_rate: 8_000,
                },
                _ => continue,
            },
        };
        formats.push(format);
    }

    let conn = media
        .connection_information
        .as_ref()
        .or(desc.connection_information.as_ref())
        .ok_or(NegotiationError::MissingConnectionAddress)?;
    let addr_text = conn
        .address
        .as_ref()
        .map(|a| a.address.as_str())
        .ok_or(NegotiationError::MissingConnectionAddress)?;
    let ip: IpAddr = addr_text
        .parse()
        .map_err(|_| NegotiationError::BadConnectionAddress(addr_text.to_string()))?;
    let port =
        u16::try_from(media.media_name.port.value).map_err(|_| NegotiationError::NoAudioStream)?;

    let has = |key: &str| media.attributes.iter().any(|a| a.key == key);
    // Media-level direction overrides session-level (RFC 4566 6); default sendrecv.
    let mut direction = media
        .attributes
        .iter()
        .chain(desc.attributes.iter())
        .find_map(|a| Direction::from_attribute(&a.key))
        .unwrap_or_default();
    // RFC 3264 8.4: c=0.0.0.0 is the old way (RFC 2543) to put a stream on hold: the
    // peer does not want to receive.
    if ip.is_unspecified() {
        direction = direction.intersect(Direction::SendOnly);
    }
    let rtcp_mux = has("rtcp-mux");
    // RFC 3605: a=rtcp:port [IN IP4 addr].
    let rtcp = media
        .attributes
        .iter()
        .find(|a| a.key == "rtcp")
        .and_then(|a| a.value.as_deref())
        .and_then(|v| {
            let mut parts = v.split_whitespace();
            let port = parts.next()?.parse::<u16>().ok()?;
            let ip = parts.nth(2).and_then(|a| a.parse().ok()).unwrap_or(ip);
            Some(SocketAddr::new(ip, port))
        })
        .unwrap_or_else(|| SocketAddr::new(ip, port.saturating_add(1)));
    let ptime_ms = media
        .attributes
        .iter()
        .chain(desc.attributes.iter())
        .find(|a| a.key == "ptime")
        .and_then(|a| a.value.as_deref()?.trim().parse::<u32>().ok())
        .filter(|&p| (10..=120).contains(&p));

    let crypto = media
        .attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .find_map(|a| parse_crypto(a.value.as_deref()?));
    let secure = media
        .media_name
        .protos
        .iter()
        .any(|p| p == "SAVP" || p == "SAVPF");
    Ok(RemoteAudio {
        index,
        formats,
        rtp: SocketAddr::new(ip, port),
        rtcp,
        rtcp_mux,
        direction,
        ptime_ms,
        proto: media.media_name.protos.clone(),
        crypto,
        secure,
    })
}

/// `a=crypto:<tag> AES_CM_128_HMAC_SHA1_80 inline:<key||salt>[|lifetime]` (RFC 4568
/// 9.1): the tag and the 30 bytes, when the suite is ours, the key decodes to exactly
/// 30 bytes and no MKI is used (we use none); other lines are skipped.
fn parse_crypto(value: &str) -> Option<(u32, [u8; SRTP_KEY_LEN])> {
    let mut parts = value.split_whitespace();
    let tag = parts.next()?.parse::<u32>().ok()?;
    if parts.next()? != SRTP_SUITE {
        return None;
    }
    let key_params = parts.next()?;
    // One key only (several are separated by ';').
    let key = key_params.split(';').next()?.strip_prefix("inline:")?;
    let mut fields = key.split('|');
    let material = base64_decode(fields.next()?)?;
    // A lifetime is fine; an MKI (contains ':') is not supported.
    if fields.any(|f| f.contains(':')) {
        return None;
    }
    let material: [u8; SRTP_KEY_LEN] = material.try_into().ok()?;
    Some((tag, material))
}

/// Standard base64 with padding (RFC 4648 4), as SDES keys are written.
fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes with or without padding (peers differ).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}
