//! RTP port allocation over a profile's range: even RTP ports with RTCP on the odd
//! port above (RFC 3550 11), handed out round-robin so a just-released port is the
//! last to be reused (late packets of an old call do not land in a new one).
//!
//! Owns: which pairs are in use. Must not: bind or probe sockets (the shell does,
//! and releases a pair whose bind failed).

use std::ops::RangeInclusive;
use thiserror::Error;

/// An RTP/RTCP port pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPair {
    /// Even RTP port.
    pub rtp: u16,
    /// RTCP port, `rtp + 1`.
    pub rtcp: u16,
}

/// Why a range cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PortRangeError {
    /// The range holds no even port with an odd port above it.
    #[error("port range {start}-{end} holds no RTP/RTCP pair")]
    NoPairs {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
}

/// Allocates [`PortPair`]s from a range; exhaustion returns `None` (the shell
/// answers 503 with Retry-After).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    first_rtp: u16,
    in_use: Vec<bool>,
    used: usize,
    cursor: usize,
}

impl PortAllocator {
    /// An allocator over `range` (both ends inclusive, e.g. 16384..=16583).
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, PortRangeError> {
        let (start, end) = (*range.start(), *range.end());
        let first_rtp = start.saturating_add(start % 2);
        let pairs = if first_rtp < end && first_rtp >= start {
            usize::from((end - first_rtp - 1) / 2 + 1)
        } else {
            0
        };
        if pairs == 0 {
            return Err(PortRangeError::NoPairs { start, end });
        }
        Ok(Self {
            first_rtp,
            in_use: vec![false; pairs],
            used: 0,
            cursor: 0,
        })
    }

    /// Pairs in the range.
    pub fn capacity(&self) -> usize {
        self.in_use.len()
    }

    /// Pairs currently free.
    pub fn available(&self) -> usize {
        self.capacity() - self.used
    }

    /// Takes the next free pair, or `None` when all are in use.
    pub fn allocate(&mut self) -> Option<PortPair> {
        if self.used == self.capacity() {
            return None;
        }
        let n = self.capacity();
        let index = (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&i| !self.in_use[i])?;
        self.in_use[index] = true;
        self.used += 1;
        self.cursor = (index + 1) % n;
        Some(self.pair(index))
    }

    /// Returns a pair by its RTP port. Returns false (and changes nothing) for a
    /// port that is not an allocated RTP port of this range, so a double release
    /// is harmless.
    pub fn release(&mut self, rtp_port: u16) -> bool {
        let Some(index) = self.index(rtp_port) else {
            return false;
        };
        if !self.in_use[index] {
            return false;
        }
        self.in_use[index] = false;
        self.used -= 1;
        true
    }

    /// Whether `rtp_port` is currently allocated.
    pub fn is_allocated(&self, rtp_port: u16) -> bool {
        self.index(rtp_port).is_some_and(|i| self.in_use[i])
    }

    fn index(&self, rtp_port: u16) -> Option<usize> {
        let offset = rtp_port.checked_sub(self.first_rtp)?;
        if offset % 2 != 0 {
            return None;
        }
        let index = usize::from(offset / 2);
        (index < self.capacity()).then_some(index)
    }

    fn pair(&self, index: usize) -> PortPair {
        // index < capacity, so the port fits the range it came from.
        let rtp = self.first_rtp + (index as u16) * 2;
        PortPair { rtp, rtcp: rtp + 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_even_pairs_until_exhausted() {
        let mut a = PortAllocator::new(16384..=16391).unwrap();
        assert_eq!(a.capacity(), 4);
        let got: Vec<u16> = std::iter::from_fn(|| a.allocate()).map(|p| p.rtp).collect();
        assert_eq!(got, vec![16384, 16386, 16388, 16390]);
        assert_eq!(a.allocate(), None);
        assert!(a.release(16386));
        assert!(!a.release(16386), "double release is a no-op");
        assert!(!a.release(16387), "odd port is not an RTP port");
        assert!(!a.release(9999));
        assert_eq!(
            a.allocate(),
            Some(PortPair {
                rtp: 16386,
                rtcp: 16387
            })
        );
    }

    #[test]
    fn odd_start_and_tiny_ranges() {
        let a = PortAllocator::new(16385..=16388).unwrap();
        assert_eq!(a.capacity(), 1); // 16386/16387; 16388 has no RTCP partner
        assert!(PortAllocator::new(16384..=16384).is_err());
        assert!(PortAllocator::new(65535..=65535).is_err());
        assert_eq!(PortAllocator::new(0..=65535).unwrap().capacity(), 32768);
    }

    #[test]
    fn released_port_is_reused_last() {
        let mut a = PortAllocator::new(16384..=16391).unwrap();
        let first = a.allocate().unwrap();
        a.release(first.rtp);
        assert_ne!(a.allocate().unwrap(), first);
    }
}
