//! `StreamFramer` with the input cut into arbitrary chunks. Invariants: no panic; the
//! frames (and whether framing fails) do not depend on how the stream was chunked;
//! every framed message is handed to `parse` (Stream framing) without a panic; the
//! buffer never holds more than the limit once `pop` wants more bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sofia_sip::{parse, Frame, Framing, StreamFramer};

/// Frames until the first error; returns the frames and whether it failed.
fn frame_all(limit: usize, stream: &[u8], cuts: &[u8]) -> (Vec<Frame>, bool) {
    let mut f = StreamFramer::new(limit);
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    let mut idle = 0;
    loop {
        let n = if cuts.is_empty() {
            rest.len()
        } else {
            usize::from(cuts[i % cuts.len()]).min(rest.len())
        };
        i += 1;
        // A cut list of zeros only would never push: force progress.
        let n = if n == 0 && idle > cuts.len() {
            rest.len().min(1)
        } else {
            n
        };
        if n == 0 {
            idle += 1;
        } else {
            idle = 0;
        }
        f.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match f.pop() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        assert!(
            f.buffered() <= limit,
            "framer holds {} bytes over a limit of {limit}",
            f.buffered()
        );
        if rest.is_empty() && n == 0 {
            return (frames, false);
        }
    }
}

// Input layout (so that plain SIP captures behind a short prefix make good seeds):
// two bytes select the size limit, one byte `k` (mod 16) counts the chunk lengths
// that follow (cycled; 0 pops without pushing), the rest is the stream.
fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limit = 16 + usize::from(u16::from_le_bytes([head[0], head[1]]) % 8192);
    let k = usize::from(head[2] % 16).min(rest.len());
    let (cuts, stream) = rest.split_at(k);
    let (chunked, chunked_failed) = frame_all(limit, stream, cuts);
    let (whole, whole_failed) = frame_all(limit, stream, &[]);
    assert_eq!(chunked_failed, whole_failed, "chunking changed the outcome");
    assert_eq!(chunked, whole, "chunking changed the frames");
    for frame in &chunked {
        if let Frame::Message(m) = frame {
            assert!(m.len() <= limit);
            let _ = parse(m, Framing::Stream);
        }
    }
});
