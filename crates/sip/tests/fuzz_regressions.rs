//! Inputs the fuzz targets (fuzz/, bench/fuzz.sh) found to break the SIP core, kept as
//! plain tests so that they run with every `cargo test`.

use std::time::{Duration, Instant};

use sofia_sip::{Frame, FramingError, StreamFramer};

/// Pushes `bytes` one at a time, popping after each as the TCP shell does after every
/// read, and returns what was framed.
fn drip(framer: &mut StreamFramer, bytes: &[u8]) -> Vec<Result<Frame, FramingError>> {
    let mut out = Vec::new();
    for b in bytes {
        framer.push(std::slice::from_ref(b));
        loop {
            match framer.pop() {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

#[test]
#[allow(clippy::disallowed_methods)] // reason: the regression is CPU time; measure it
fn framer_does_not_rescan_a_header_section_sent_one_byte_at_a_time() {
    // sip_framer: with one-byte chunks every pop searched the whole buffer for CRLFCRLF
    // and re-read Content-Length from the whole header section, so a peer dripping a
    // 64 KiB message (one byte per TCP segment) cost seconds of CPU: quadratic.
    let limit = 65_535;
    let mut head = b"INVITE sip:1000@192.0.2.1 SIP/2.0\r\n".to_vec();
    while head.len() < 40_000 {
        head.extend_from_slice(
            b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        );
    }
    let body = vec![b'x'; 20_000];
    head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    let mut message = head;
    message.extend_from_slice(&body);

    let started = Instant::now();
    let mut framer = StreamFramer::new(limit);
    let frames = drip(&mut framer, &message);
    let elapsed = started.elapsed();
    assert_eq!(frames, vec![Ok(Frame::Message(message.clone()))]);
    assert_eq!(framer.buffered(), 0);
    // Linear framing takes milliseconds even unoptimised; the quadratic one took
    // minutes in a debug build.
    assert!(
        elapsed < Duration::from_secs(5),
        "framing {} bytes one at a time took {elapsed:?}",
        message.len()
    );

    // An unterminated header section dripped up to the limit is refused, also fast.
    let started = Instant::now();
    let mut framer = StreamFramer::new(limit);
    let endless: Vec<u8> = b"REGISTER sip:192.0.2.1 SIP/2.0\r\n"
        .iter()
        .chain(b"X: y\r\n".iter().cycle().take(limit))
        .copied()
        .collect();
    let frames = drip(&mut framer, &endless);
    assert!(matches!(
        frames.as_slice(),
        [Err(FramingError::MessageTooLarge { headers: None, .. })]
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn framer_finds_a_header_end_split_across_pushes() {
    // The incremental search must still see a CRLFCRLF whose bytes arrive in separate
    // pushes, and must start afresh after each message, ping and skipped CRLF.
    let msg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\nok";
    for cut in 1..msg.len() {
        let mut f = StreamFramer::new(4096);
        f.push(b"\r\n\r\n\r\n");
        let mut frames = Vec::new();
        for part in [&msg[..cut], &msg[cut..], &msg[..], b"\n"] {
            f.push(part);
            while let Ok(Some(frame)) = f.pop() {
                frames.push(frame);
            }
        }
        assert_eq!(
            frames,
            vec![
                Frame::Ping,
                Frame::Message(msg.to_vec()),
                Frame::Message(msg.to_vec())
            ],
            "cut at {cut}"
        );
    }
}
