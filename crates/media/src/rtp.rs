//! RTP packets (RFC 3550 section 5.1) and sequence/timestamp extension
//! (RFC 3550 appendix A.1).
//!
//! Owns: parsing and writing the fixed header, CSRC list, header extension and
//! padding; unwrapping 16-bit sequence numbers and 32-bit timestamps into
//! monotonic 64-bit values. Must not: interpret payloads or keep per-call state
//! beyond the unwrappers.
//!
//! Why our own parser instead of webrtc-rs's `rtp` crate: that crate depends on
//! `webrtc-util`, which unconditionally pulls in tokio (with `net`, `fs` and a
//! multi-threaded runtime). The cores must not depend on tokio (ARCHITECTURE.md),
//! and the RTP header is twelve well-specified bytes.

use thiserror::Error;

/// RTP version carried in every packet (RFC 3550 5.1).
pub const RTP_VERSION: u8 = 2;
/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why bytes are not a valid RTP packet.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum RtpError {
    /// Shorter than the 12-byte fixed header.
    #[error("packet of {0} bytes is shorter than the RTP fixed header")]
    TooShort(usize),
    /// The version field is not 2.
    #[error("RTP version {0} is not 2")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("CSRC list runs past the end of the packet")]
    TruncatedCsrc,
    /// The header extension runs past the end of the packet.
    #[error("header extension runs past the end of the packet")]
    TruncatedExtension,
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding length {0}")]
    BadPadding(u8),
}

/// The fields of an RTP header the media core uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit; for audio, the first packet of a talkspurt (RFC 3551 4.1).
    pub marker: bool,
    /// Payload type, 7 bits.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp in the payload's clock rate.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
}

/// A parsed RTP packet borrowing its payload from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Header fields.
    pub header: RtpHeader,
    /// Payload with CSRCs, extension and padding removed.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram as RTP (RFC 3550 5.1). Never panics.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RtpError> {
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(RtpError::TooShort(bytes.len()));
        }
        let version = bytes[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = bytes[0] & 0x20 != 0;
        let has_extension = bytes[0] & 0x10 != 0;
        let csrc_count = usize::from(bytes[0] & 0x0F);
        let mut offset = FIXED_HEADER_LEN + 4 * csrc_count;
        if offset > bytes.len() {
            return Err(RtpError::TruncatedCsrc);
        }
        if has_extension {
            // RFC 3550 5.3.1: 16-bit profile-defined id, 16-bit length in 32-bit words.
            let ext = bytes
                .get(offset..offset + 4)
                .ok_or(RtpError::TruncatedExtension)?;
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            offset += 4 + 4 * words;
            if offset > bytes.len() {
                return Err(RtpError::TruncatedExtension);
            }
        }
        let mut end = bytes.len();
        if has_padding {
            // RFC 3550 5.1: the last octet counts the padding octets, itself included.
            let pad = bytes[end - 1];
            if pad == 0 || usize::from(pad) > end - offset {
                return Err(RtpError::BadPadding(pad));
            }
            end -= usize::from(pad);
        }
        Ok(Self {
            header: RtpHeader {
                marker: bytes[1] & 0x80 != 0,
                payload_type: bytes[1] & 0x7F,
                sequence_number: u16::from_be_bytes([bytes[2], bytes[3]]),
                timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
                ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
            },
            payload: &bytes[offset..end],
        })
    }
}

/// Appends an RTP packet with no CSRCs, extension or padding to `out`.
pub fn write_packet(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(FIXED_HEADER_LEN + payload.len());
    out.push(RTP_VERSION << 6);
    out.push((u8::from(header.marker) << 7) | (header.payload_type & 0x7F));
    out.extend_from_slice(&header.sequence_number.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Extends 16-bit RTP sequence numbers to a monotonic i64 by choosing, for each new
/// number, the value closest to the highest seen so far (RFC 3550 A.1). Reordered
/// packets from before a wrap get the smaller extended value.
#[derive(Debug, Default, Clone)]
pub struct SeqUnwrapper {
    highest: Option<i64>,
}

impl SeqUnwrapper {
    /// The extended value of `seq`; updates the highest seen.
    pub fn unwrap(&mut self, seq: u16) -> i64 {
        let ext = self.peek(seq);
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        ext
    }

    /// The extended value `seq` would get, without recording it.
    pub fn peek(&self, seq: u16) -> i64 {
        match self.highest {
            None => i64::from(seq),
            Some(h) => {
                let delta = seq.wrapping_sub(h as u16) as i16;
                h + i64::from(delta)
            }
        }
    }

    /// The highest extended sequence number seen, if any.
    pub fn highest(&self) -> Option<i64> {
        self.highest
    }
}

/// Extends 32-bit RTP timestamps the same way as [`SeqUnwrapper`]: closest to the
/// last value, so wraparound at 2^32 keeps time monotonic.
#[derive(Debug, Default, Clone)]
pub struct TimestampUnwrapper {
    last: Option<i64>,
}

impl TimestampUnwrapper {
    /// The extended value of `ts`, relative to the previous one.
    pub fn unwrap(&mut self, ts: u32) -> i64 {
        let ext = match self.last {
            None => i64::from(ts),
            Some(l) => l + i64::from(ts.wrapping_sub(l as u32) as i32),
        };
        self.last = Some(ext);
        ext
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes() {
        let header = RtpHeader {
            marker: true,
            payload_type: 8,
            sequence_number: 65535,
            timestamp: 0xFFFF_FF00,
            ssrc: 0xDEAD_BEEF,
        };
        let mut buf = Vec::new();
        write_packet(&header, &[1, 2, 3], &mut buf);
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.header, header);
        assert_eq!(p.payload, &[1, 2, 3]);
    }

    #[test]
    fn strips_csrc_extension_and_padding() {
        let mut buf = vec![0x80 | 0x20 | 0x10 | 0x01, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        buf.extend_from_slice(&[0xBE, 0xDE, 0, 1, 7, 7, 7, 7]); // extension, 1 word
        buf.extend_from_slice(&[0xAA, 0xBB]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes of padding
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.payload, &[0xAA, 0xBB]);
    }

    #[test]
    fn rejects_bad_padding_and_truncation() {
        let mut buf = vec![0xA0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0];
        assert_eq!(RtpPacket::parse(&buf), Err(RtpError::BadPadding(0)));
        *buf.last_mut().unwrap() = 5;
        assert_eq!(RtpPacket::parse(&buf), Err(RtpError::BadPadding(5)));
        assert_eq!(
            RtpPacket::parse(&[0x8F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtpError::TruncatedCsrc)
        );
        assert_eq!(RtpPacket::parse(&[0x80]), Err(RtpError::TooShort(1)));
    }

    #[test]
    fn seq_unwraps_across_wrap_and_reorder() {
        let mut u = SeqUnwrapper::default();
        assert_eq!(u.unwrap(65534), 65534);
        assert_eq!(u.unwrap(1), 65537);
        assert_eq!(u.unwrap(65535), 65535); // late packet from before the wrap
        assert_eq!(u.unwrap(2), 65538);
        assert_eq!(u.highest(), Some(65538));
    }
}
