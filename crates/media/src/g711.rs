//! G.711 mu-law and A-law (ITU-T G.711, 1988) sample conversion, plus the small
//! repeat-and-attenuate packet-loss concealment used for both laws.
//!
//! Owns: the bit-exact companding of 16-bit linear PCM to 8-bit codes and back, and
//! the f32 <-> i16 scaling the rest of the crate uses. Must not: know about RTP,
//! packets or timing.

/// mu-law bias added before segment search (G.711 table 2a uses 33 in 14-bit units;
/// in 16-bit units that is 0x84).
const MULAW_BIAS: i32 = 0x84;
/// Largest magnitude that still fits the top mu-law segment after the bias.
const MULAW_CLIP: i32 = 32635;

/// Encodes one 16-bit linear sample to a mu-law code (G.711 table 2a).
pub fn linear_to_mulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign: u8 = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(MULAW_CLIP) + MULAW_BIAS;
    // pcm >> 7 lies in 1..=255; its highest set bit is the segment (exponent).
    let exponent = 7 - ((pcm >> 7) as u8).leading_zeros().min(7) as u8;
    let mantissa = ((pcm >> (exponent + 3)) & 0x0F) as u8;
    !(sign | (exponent << 4) | mantissa)
}

/// Decodes one mu-law code to 16-bit linear PCM (G.711 table 2a).
pub fn mulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS;
    let value = if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    };
    // Largest magnitude is (0x0F << 3 + 0x84) << 7 - 0x84 = 32124, inside i16.
    value as i16
}

/// Upper bounds of the eight A-law segments in 13-bit magnitude units.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Encodes one 16-bit linear sample to an A-law code (G.711 table 1a; even bits
/// inverted per G.711 section 3.3).
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let segment = ALAW_SEGMENT_END
        .iter()
        .position(|&end| pcm <= end)
        .unwrap_or(8);
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as u8) << 4) | (((pcm >> shift) & 0x0F) as u8);
    code ^ mask
}

/// Decodes one A-law code to 16-bit linear PCM (G.711 table 1a).
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = i32::from(code & 0x0F) << 4;
    let segment = (code & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => {
            magnitude += 0x108;
            magnitude <<= segment - 1;
        }
    }
    // Largest magnitude is (0xF0 + 0x108) << 6 = 32256, inside i16.
    let value = if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    };
    value as i16
}

/// Converts a float sample in [-1, 1] to 16-bit PCM, saturating outside that range.
pub fn f32_to_i16(sample: f32) -> i16 {
    if sample.is_nan() {
        return 0;
    }
    (sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16
}

/// Converts 16-bit PCM to a float sample in [-1, 1).
pub fn i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) / 32768.0
}

/// Which G.711 law.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// mu-law, RTP payload type 0 (PCMU).
    Mu,
    /// A-law, RTP payload type 8 (PCMA).
    A,
}

impl Law {
    /// Encodes float samples to codes, appending to `out`.
    pub fn encode(self, samples: &[f32], out: &mut Vec<u8>) {
        out.extend(samples.iter().map(|&s| {
            let pcm = f32_to_i16(s);
            match self {
                Law::Mu => linear_to_mulaw(pcm),
                Law::A => linear_to_alaw(pcm),
            }
        }));
    }

    /// Decodes codes to float samples, appending to `out`.
    pub fn decode(self, codes: &[u8], out: &mut Vec<f32>) {
        out.extend(codes.iter().map(|&c| {
            i16_to_f32(match self {
                Law::Mu => mulaw_to_linear(c),
                Law::A => alaw_to_linear(c),
            })
        }));
    }

    /// The code for digital silence (what the encoder produces for 0).
    pub fn silence_code(self) -> u8 {
        match self {
            Law::Mu => 0xFF,
            Law::A => 0xD5,
        }
    }
}

/// Packet-loss concealment for waveform codecs: repeat the last good frame with a
/// gain that halves (-6 dB) per consecutive lost frame, and fade across the frame so
/// no step is audible. After [`RepeatPlc::MAX_REPEATS`] frames it yields silence,
/// as a repeated frame sounds robotic beyond ~100 ms (cf. G.711 Appendix I, which
/// also mutes after 60 ms of loss).
#[derive(Debug, Default, Clone)]
pub struct RepeatPlc {
    last: Vec<f32>,
    repeats: u32,
}

impl RepeatPlc {
    /// Concealed frames after which only silence is produced.
    pub const MAX_REPEATS: u32 = 5;

    /// Remembers a correctly received frame.
    pub fn good_frame(&mut self, samples: &[f32]) {
        self.last.clear();
        self.last.extend_from_slice(samples);
        self.repeats = 0;
    }

    /// Appends `len` concealment samples to `out`.
    pub fn conceal(&mut self, len: usize, out: &mut Vec<f32>) {
        self.repeats = self.repeats.saturating_add(1);
        if self.last.is_empty() || self.repeats > Self::MAX_REPEATS {
            out.extend(std::iter::repeat_n(0.0, len));
            return;
        }
        let start_gain = 0.5f32.powi(self.repeats as i32 - 1);
        let end_gain = start_gain * 0.5;
        let n = self.last.len();
        for i in 0..len {
            let t = i as f32 / len.max(1) as f32;
            let gain = start_gain + (end_gain - start_gain) * t;
            out.push(self.last[i % n] * gain);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mulaw_known_values() {
        assert_eq!(linear_to_mulaw(0), 0xFF);
        assert_eq!(linear_to_mulaw(-1), 0x7F);
        assert_eq!(linear_to_mulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_mulaw(i16::MIN), 0x00);
        assert_eq!(mulaw_to_linear(0x80), 32124);
        assert_eq!(mulaw_to_linear(0x00), -32124);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-8), 0x55);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn plc_fades_to_silence() {
        let mut plc = RepeatPlc::default();
        plc.good_frame(&[0.5; 160]);
        let mut out = Vec::new();
        for _ in 0..=RepeatPlc::MAX_REPEATS {
            out.clear();
            plc.conceal(160, &mut out);
        }
        assert!(out.iter().all(|&s| s == 0.0));
    }
}
