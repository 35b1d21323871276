//! Deterministic, unguessable token generation (tags, branches, Call-IDs) and the MAC
//! used for nonces: HMAC-SHA-256 keyed with the caller's secret seed over a label and a
//! counter. The crate reads no clock and no OS randomness; the shell supplies the seed
//! (from the OS CSPRNG in production, a constant in tests).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Produces tokens as HMAC-SHA-256(seed, label || counter): a PRF, so tokens cannot be
/// predicted without the seed.
#[derive(Clone)]
pub struct TokenSource {
    /// HMAC already keyed with the seed: cloning it skips hashing the key pads on every
    /// MAC (half the SHA-256 blocks of a short message).
    keyed: HmacSha256,
    counter: u64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub fn new(seed: [u8; 32]) -> Self {
        Self {
            keyed: <HmacSha256 as Mac>::new_from_slice(&seed)
                .expect("HMAC accepts keys of any length"),
            counter: 0,
        }
    }

    /// The MAC of `parts` under the seed, for authenticating nonces.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        for p in parts {
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }

    /// A fresh token of `hex_len` hex characters (at most 64).
    pub fn next_hex(&mut self, label: &str, hex_len: usize) -> String {
        self.counter += 1;
        let out = self.mac(&[label.as_bytes(), &self.counter.to_be_bytes()]);
        let mut s = hex::encode(out);
        s.truncate(hex_len.min(64));
        s
    }

    /// A monotonically increasing counter value, for nonces.
    pub fn next_counter(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_distinct_and_seed_dependent() {
        let mut a = TokenSource::new([1; 32]);
        let mut b = TokenSource::new([2; 32]);
        let t1 = a.next_hex("tag", 16);
        let t2 = a.next_hex("tag", 16);
        assert_ne!(t1, t2);
        assert_ne!(t1, b.next_hex("tag", 16));
        assert_eq!(t1.len(), 16);
    }
}
