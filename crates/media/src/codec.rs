//! Audio codecs negotiated by sofia-phone: PCMU and PCMA (G.711, RFC 3551 4.5.14)
//! and Opus (RFC 6716, RTP payload format RFC 7587).
//!
//! Owns: turning one frame of f32 PCM at the codec rate into an RTP payload and
//! back, and concealment of a lost frame (G.711: [`RepeatPlc`]; Opus: the decoder's
//! own PLC, or in-band FEC from the next packet). Must not: know about sequence
//! numbers, timing or SDP beyond the codec's names.

use crate::g711::{Law, RepeatPlc};
use audiopus::coder::{Decoder as OpusDecoder, Encoder as OpusEncoder};
use audiopus::{Application, Channels, SampleRate};
use thiserror::Error;

/// Opus's RTP clock rate is always 48 kHz whatever the audio bandwidth (RFC 7587 4.1).
pub const OPUS_CLOCK_RATE: u32 = 48_000;
/// Longest Opus packet duration (120 ms at 48 kHz, RFC 6716 3.2.5).
const OPUS_MAX_FRAME: usize = 5_760;
/// Upper bound for one encoded Opus frame (RFC 6716 3.2.1: 1275 bytes per frame).
const OPUS_MAX_PACKET: usize = 1_500;

/// A codec sofia-phone can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// G.711 mu-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// Opus, dynamic payload type, `opus/48000/2` (RFC 7587 7).
    Opus,
}

impl CodecKind {
    /// Parses a profile codec name (`PCMU`, `PCMA`, `opus`; case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "pcmu" => Some(Self::Pcmu),
            "pcma" => Some(Self::Pcma),
            "opus" => Some(Self::Opus),
            _ => None,
        }
    }

    /// The encoding name as written in `a=rtpmap` (RFC 3551 6, RFC 7587 7).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::Opus => "opus",
        }
    }

    /// The RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Pcmu | Self::Pcma => 8_000,
            Self::Opus => OPUS_CLOCK_RATE,
        }
    }

    /// Channels as written in `a=rtpmap` (Opus is always signalled as 2, RFC 7587 7).
    pub fn sdp_channels(self) -> u8 {
        match self {
            Self::Pcmu | Self::Pcma => 1,
            Self::Opus => 2,
        }
    }

    /// The static payload type, if the codec has one (RFC 3551 table 4).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Self::Pcmu => Some(0),
            Self::Pcma => Some(8),
            Self::Opus => None,
        }
    }

    /// Samples (per channel, at the codec rate) in a frame of `ptime_ms`.
    pub fn samples_per_frame(self, ptime_ms: u32) -> usize {
        (self.clock_rate() / 1000 * ptime_ms) as usize
    }
}

/// Why a codec could not be set up or could not code a frame.
#[derive(Debug, Error)]
pub enum CodecError {
    /// libopus refused to create an encoder or decoder.
    #[error("opus initialisation failed: {0}")]
    OpusInit(audiopus::Error),
    /// libopus could not encode a frame (wrong frame size, internal error).
    #[error("opus encode failed: {0}")]
    OpusEncode(audiopus::Error),
    /// The payload is not a valid Opus packet.
    #[error("opus decode failed: {0}")]
    OpusDecode(audiopus::Error),
    /// The payload is empty or longer than any frame we accept.
    #[error("payload of {0} bytes is not a plausible audio frame")]
    BadPayloadLength(usize),
}

/// Encodes frames of mono f32 PCM at the codec's clock rate.
pub enum Encoder {
    /// G.711 of either law.
    G711(Law),
    /// Opus, mono, VoIP application, in-band FEC on.
    Opus(Box<OpusEncoder>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::G711(law) => write!(f, "Encoder::G711({law:?})"),
            Self::Opus(_) => f.write_str("Encoder::Opus"),
        }
    }
}

impl Encoder {
    /// Creates an encoder for `kind`.
    pub fn new(kind: CodecKind) -> Result<Self, CodecError> {
        Ok(match kind {
            CodecKind::Pcmu => Self::G711(Law::Mu),
            CodecKind::Pcma => Self::G711(Law::A),
            CodecKind::Opus => {
                let mut enc =
                    OpusEncoder::new(SampleRate::Hz48000, Channels::Mono, Application::Voip)
                        .map_err(CodecError::OpusInit)?;
                // FEC lets a receiver rebuild a lost frame from the next one
                // (RFC 7587 3.3); it costs little at voice bitrates.
                enc.set_inband_fec(true).map_err(CodecError::OpusInit)?;
                Self::Opus(Box::new(enc))
            }
        })
    }

    /// Encodes one frame, appending the RTP payload to `out`.
    pub fn encode(&mut self, samples: &[f32], out: &mut Vec<u8>) -> Result<(), CodecError> {
        match self {
            Self::G711(law) => {
                law.encode(samples, out);
                Ok(())
            }
            Self::Opus(enc) => {
                let start = out.len();
                out.resize(start + OPUS_MAX_PACKET, 0);
                match enc.encode_float(samples, &mut out[start..]) {
                    Ok(n) => {
                        out.truncate(start + n);
                        Ok(())
                    }
                    Err(e) => {
                        out.truncate(start);
                        Err(CodecError::OpusEncode(e))
                    }
                }
            }
        }
    }
}

/// Decodes RTP payloads to mono f32 PCM at the codec's clock rate, and conceals
/// lost frames.
pub enum Decoder {
    /// G.711 of either law, with repeat-and-fade concealment.
    G711 {
        /// Which law.
        law: Law,
        /// Concealment state.
        plc: RepeatPlc,
    },
    /// Opus decoding to mono (libopus downmixes a stereo stream).
    Opus(Box<OpusDecoder>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::G711 { law, .. } => write!(f, "Decoder::G711({law:?})"),
            Self::Opus(_) => f.write_str("Decoder::Opus"),
        }
    }
}

impl Decoder {
    /// Creates a decoder for `kind`.
    pub fn new(kind: CodecKind) -> Result<Self, CodecError> {
        Ok(match kind {
            CodecKind::Pcmu => Self::G711 {
                law: Law::Mu,
                plc: RepeatPlc::default(),
            },
            CodecKind::Pcma => Self::G711 {
                law: Law::A,
                plc: RepeatPlc::default(),
            },
            CodecKind::Opus => Self::Opus(Box::new(
                OpusDecoder::new(SampleRate::Hz48000, Channels::Mono)
                    .map_err(CodecError::OpusInit)?,
            )),
        })
    }

    /// Decodes one payload, appending samples to `out`; returns how many.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        match self {
            Self::G711 { law, plc } => {
                // 120 ms at 8 kHz is the longest G.711 frame we accept.
                if payload.is_empty() || payload.len() > 960 {
                    return Err(CodecError::BadPayloadLength(payload.len()));
                }
                let start = out.len();
                law.decode(payload, out);
                plc.good_frame(&out[start..]);
                Ok(payload.len())
            }
            Self::Opus(dec) => {
                if payload.is_empty() || payload.len() > OPUS_MAX_PACKET {
                    return Err(CodecError::BadPayloadLength(payload.len()));
                }
                opus_decode(dec, Some(payload), OPUS_MAX_FRAME, false, out)
            }
        }
    }

    /// Appends `samples` of concealment for one lost frame. `next_payload` is the
    /// packet after the lost one if it is already buffered: Opus then recovers the
    /// lost frame from its in-band FEC data (RFC 7587 3.3).
    pub fn conceal(
        &mut self,
        samples: usize,
        next_payload: Option<&[u8]>,
        out: &mut Vec<f32>,
    ) -> Result<usize, CodecError> {
        match self {
            Self::G711 { plc, .. } => {
                plc.conceal(samples, out);
                Ok(samples)
            }
            Self::Opus(dec) => {
                // Opus PLC/FEC must be asked for a multiple of 2.5 ms.
                let samples = samples.clamp(120, OPUS_MAX_FRAME) / 120 * 120;
                match next_payload.filter(|p| !p.is_empty() && p.len() <= OPUS_MAX_PACKET) {
                    Some(next) => opus_decode(dec, Some(next), samples, true, out),
                    None => opus_decode(dec, None, samples, false, out),
                }
            }
        }
    }
}

fn opus_decode(
    dec: &mut OpusDecoder,
    payload: Option<&[u8]>,
    max_samples: usize,
    fec: bool,
    out: &mut Vec<f32>,
) -> Result<usize, CodecError> {
    let start = out.len();
    out.resize(start + max_samples, 0.0);
    match dec.decode_float(payload, &mut out[start..], fec) {
        Ok(n) => {
            out.truncate(start + n.min(max_samples));
            Ok(n)
        }
        Err(e) => {
            out.truncate(start);
            Err(CodecError::OpusDecode(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn opus_round_trips_a_tone_and_conceals() {
        let mut enc = Encoder::new(CodecKind::Opus).unwrap();
        let mut dec = Decoder::new(CodecKind::Opus).unwrap();
        let pcm = tone(48_000, 960 * 20);
        let mut decoded = Vec::new();
        for frame in pcm.chunks(960) {
            let mut payload = Vec::new();
            enc.encode(frame, &mut payload).unwrap();
            assert!(!payload.is_empty() && payload.len() < 400);
            assert_eq!(dec.decode(&payload, &mut decoded).unwrap(), 960);
        }
        let tail = &decoded[decoded.len() - 960..];
        let rms = (tail.iter().map(|s| s * s).sum::<f32>() / 960.0).sqrt();
        assert!(rms > 0.1, "decoded tone has rms {rms}");
        let mut concealed = Vec::new();
        assert_eq!(dec.conceal(960, None, &mut concealed).unwrap(), 960);
    }

    #[test]
    fn garbage_opus_payload_is_an_error_not_a_panic() {
        let mut dec = Decoder::new(CodecKind::Opus).unwrap();
        let mut out = Vec::new();
        for payload in [&[][..], &[0xFF; 3][..], &[0x0B; 2000][..]] {
            let _ = dec.decode(payload, &mut out);
        }
    }
}
