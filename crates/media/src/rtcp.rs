//! RTCP (RFC 3550 section 6): sender and receiver reports, SDES CNAME, and the
//! demultiplexing of STUN, RTP and RTCP arriving on one port (RFC 7983 section 7,
//! RFC 5761 section 4).
//!
//! Owns: classifying a datagram, writing SR/RR compound packets, reading report
//! blocks out of a peer's SR/RR, and the receiver-side statistics that fill our
//! report blocks (RFC 3550 A.3 loss, A.8 jitter). Must not: decide when to send
//! (the session schedules) or read any clock (NTP time is an argument).
//!
//! Why not webrtc-rs's `rtcp` crate: like `rtp`, it depends on `webrtc-util` and
//! so on tokio, which the cores must not.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What kind of packet a datagram on a media port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// STUN (RFC 5389): first byte 0..=3 and the magic cookie 0x2112A442 at offset 4.
    Stun,
    /// RTCP: version 2 and a packet type in 192..=223 (RFC 5761 4), i.e. RTP
    /// payload types 64..=95 with the marker bit set.
    Rtcp,
    /// RTP: version 2 and any other payload type.
    Rtp,
    /// Anything else (DTLS, ZRTP, keepalive garbage): ignored.
    Other,
}

/// The STUN magic cookie (RFC 5389 6).
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_A442;

/// Classifies a datagram received on an RTP or RTCP port.
pub fn classify(bytes: &[u8]) -> PacketKind {
    let Some(&first) = bytes.first() else {
        return PacketKind::Other;
    };
    // RFC 7983 7: first byte 0..3 is STUN.
    if first <= 3 {
        let is_stun = bytes.len() >= 20
            && bytes[4..8] == STUN_MAGIC_COOKIE.to_be_bytes()
            && bytes[0] & 0xC0 == 0;
        return if is_stun {
            PacketKind::Stun
        } else {
            PacketKind::Other
        };
    }
    if first >> 6 != 2 || bytes.len() < 4 {
        return PacketKind::Other;
    }
    // RFC 5761 4: RTCP packet types 192..=223 collide with RTP payload types 64..=95
    // plus the marker bit; RTP must not use those payload types when multiplexed.
    match bytes[1] {
        192..=223 => PacketKind::Rtcp,
        _ => PacketKind::Rtp,
    }
}

/// RTCP packet types (RFC 3550 12.1).
const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
/// SDES item CNAME (RFC 3550 6.5.1).
const SDES_CNAME: u8 = 1;

/// One report block of an SR or RR (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the last report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub extended_highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub delay_since_last_sr: u32,
}

/// What we learned from one incoming RTCP compound packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtcpInfo {
    /// SSRC of the sender of an SR or RR.
    pub sender_ssrc: Option<u32>,
    /// Middle 32 bits of the NTP timestamp if the compound held an SR.
    pub sr_ntp_middle: Option<u32>,
    /// Report blocks found in SRs and RRs.
    pub reports: Vec<ReportBlock>,
}

/// Reads SR and RR packets out of a compound RTCP datagram; other packet types are
/// skipped. Returns `None` for anything malformed. Never panics.
pub fn parse_compound(bytes: &[u8]) -> Option<RtcpInfo> {
    let mut info = RtcpInfo::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 4 || rest[0] >> 6 != 2 {
            return None;
        }
        let count = usize::from(rest[0] & 0x1F);
        let pt = rest[1];
        let len = 4 * (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1);
        let packet = rest.get(..len)?;
        rest = &rest[len..];
        let blocks_at = match pt {
            PT_SR => 28,
            PT_RR => 8,
            _ => continue,
        };
        let ssrc = packet.get(4..8)?;
        info.sender_ssrc = Some(u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]));
        if pt == PT_SR {
            let ntp = packet.get(8..16)?;
            info.sr_ntp_middle = Some(u32::from_be_bytes([ntp[2], ntp[3], ntp[4], ntp[5]]));
        }
        for i in 0..count {
            let b = packet.get(blocks_at + 24 * i..blocks_at + 24 * (i + 1))?;
            let word = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            // Sign-extend the 24-bit cumulative loss.
            let cumulative = (i32::from_be_bytes([b[5], b[6], b[7], 0])) >> 8;
            info.reports.push(ReportBlock {
                ssrc: word(0),
                fraction_lost: b[4],
                cumulative_lost: cumulative,
                extended_highest_seq: word(8),
                jitter: word(12),
                last_sr: word(16),
                delay_since_last_sr: word(20),
            });
        }
    }
    Some(info)
}

/// Our sending statistics for the sender-info part of an SR (RFC 3550 6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp of the report.
    pub ntp: u64,
    /// RTP timestamp corresponding to the same instant.
    pub rtp_timestamp: u32,
    /// Packets sent so far.
    pub packet_count: u32,
    /// Payload octets sent so far.
    pub octet_count: u32,
}

/// Writes an SR (if `sender` is some) or RR, followed by an SDES with our CNAME, as
/// one compound packet (RFC 3550 6.1: every compound starts with SR/RR and carries
/// a CNAME).
pub fn write_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    block: Option<ReportBlock>,
    cname: &str,
    out: &mut Vec<u8>,
) {
    let rc = u8::from(block.is_some());
    let words = 1 + if sender.is_some() { 5 } else { 0 } + 6 * usize::from(rc);
    out.push(0x80 | rc);
    out.push(if sender.is_some() { PT_SR } else { PT_RR });
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(s) = sender {
        out.extend_from_slice(&s.ntp.to_be_bytes());
        out.extend_from_slice(&s.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&s.packet_count.to_be_bytes());
        out.extend_from_slice(&s.octet_count.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        out.push(b.fraction_lost);
        let cumulative = b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF);
        out.extend_from_slice(&cumulative.to_be_bytes()[1..]);
        out.extend_from_slice(&b.extended_highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    // SDES: one chunk (SSRC, CNAME item, end-of-list), padded to a 32-bit boundary.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + cname.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(PT_SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(SDES_CNAME);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.extend(std::iter::repeat_n(0u8, padded - chunk_len + 1));
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of a wall-clock time (RFC 3550 4).
pub fn ntp_timestamp(time: SystemTime) -> u64 {
    let since_unix = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since_unix.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_unix.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Receive-side statistics for one source: RFC 3550 A.3 (loss) and A.8 (jitter).
#[derive(Debug, Clone, Default)]
pub struct ReceiverStats {
    base_seq: Option<i64>,
    max_seq: i64,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Jitter estimate in timestamp units, scaled by 16 (A.8 integer form).
    jitter_q4: u64,
    last_transit: Option<i64>,
}

impl ReceiverStats {
    /// Records one RTP packet: its extended sequence number, RTP timestamp and its
    /// arrival time expressed in the same clock units.
    pub fn record(&mut self, ext_seq: i64, rtp_timestamp: u32, arrival_units: i64) {
        let base = *self.base_seq.get_or_insert(ext_seq);
        if ext_seq < base {
            self.base_seq = Some(ext_seq);
        }
        self.max_seq = self.max_seq.max(ext_seq);
        self.received += 1;
        // A.8: D(i,j) = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16.
        let transit = arrival_units.wrapping_sub(i64::from(rtp_timestamp));
        if let Some(last) = self.last_transit {
            // Timestamps are 32-bit: take the transit difference modulo 2^32.
            let d = i64::from((transit.wrapping_sub(last) as u32) as i32).unsigned_abs();
            let j = self.jitter_q4;
            self.jitter_q4 = (j + d.min(1 << 40)).saturating_sub((j + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Forgets everything (a new SSRC starts a new source).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4).min(u64::from(u32::MAX)) as u32
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected minus received since the start (A.3; may be negative with
    /// duplicates).
    pub fn cumulative_lost(&self) -> i64 {
        match self.base_seq {
            None => 0,
            Some(base) => (self.max_seq - base + 1) - self.received as i64,
        }
    }

    /// A report block for `ssrc`, updating the interval counters (A.3).
    pub fn report_block(&mut self, ssrc: u32, last_sr: u32, dlsr: u32) -> Option<ReportBlock> {
        let base = self.base_seq?;
        let expected = (self.max_seq - base + 1).max(0) as u64;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.cumulative_lost().clamp(-0x80_0000, 0x7F_FFFF) as i32,
            extended_highest_seq: self.max_seq as u32,
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr: dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_stun_rtp_rtcp() {
        let mut stun = vec![0u8; 20];
        stun[1] = 1;
        stun[4..8].copy_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        assert_eq!(classify(&stun), PacketKind::Stun);
        assert_eq!(classify(&[0x80, 0, 0, 0]), PacketKind::Rtp);
        assert_eq!(classify(&[0x80, 0x80 | 101, 0, 0]), PacketKind::Rtp);
        assert_eq!(classify(&[0x81, 200, 0, 6]), PacketKind::Rtcp);
        assert_eq!(classify(&[0x80, 201, 0, 1]), PacketKind::Rtcp);
        assert_eq!(classify(&[]), PacketKind::Other);
        assert_eq!(classify(b"\r\n\r\n"), PacketKind::Other);
    }

    #[test]
    fn report_round_trips() {
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 12,
            cumulative_lost: -3,
            extended_highest_seq: 70000,
            jitter: 40,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 65536,
        };
        let sender = SenderInfo {
            ntp: 0x0102_0304_0506_0708,
            rtp_timestamp: 1,
            packet_count: 2,
            octet_count: 3,
        };
        let mut buf = Vec::new();
        write_report(99, Some(sender), Some(block), "sofia@media", &mut buf);
        assert_eq!(buf.len() % 4, 0);
        assert_eq!(classify(&buf), PacketKind::Rtcp);
        let info = parse_compound(&buf).unwrap();
        assert_eq!(info.sender_ssrc, Some(99));
        assert_eq!(info.sr_ntp_middle, Some(0x0304_0506));
        assert_eq!(info.reports, vec![block]);
    }

    #[test]
    fn loss_fraction_per_interval() {
        let mut s = ReceiverStats::default();
        for seq in (0..100).filter(|s| s % 4 != 0) {
            s.record(seq, seq as u32 * 160, seq * 160);
        }
        let b = s.report_block(1, 0, 0).unwrap();
        assert_eq!(b.cumulative_lost, 24); // 0,4,..,96 lost; 99 is the highest
        assert_eq!(b.fraction_lost, (24u64 * 256 / 99) as u8);
        assert_eq!(b.jitter, 0);
    }
}
