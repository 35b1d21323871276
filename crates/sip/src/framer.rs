//! Stream framing for SIP over TCP/TLS (RFC 3261 18.3): cuts whole messages out of a
//! byte stream by Content-Length and recognises RFC 5626 3.5.1 keep-alives.
//!
//! The framer owns only the connection's receive buffer. It does not parse beyond the
//! Content-Length it needs; the shell hands each complete message to
//! [`crate::Endpoint::handle_message`] and closes the connection on a framing error
//! after asking [`crate::Endpoint::handle_framing_error`] for a response.

use thiserror::Error;

use crate::message::canonical_header_name;
use crate::syntax::parse_u32;

/// What the framer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One complete message (header section and body).
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping: answer with [`PONG`] (RFC 5626 3.5.1).
    Ping,
}

/// The pong answering a [`Frame::Ping`].
pub const PONG: &[u8] = b"\r\n";

/// Unrecoverable framing errors: the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// The message (or its header section so far) exceeds the configured limit; answer
    /// 513 when `headers` holds a complete header section.
    #[error("message exceeds {limit} bytes")]
    MessageTooLarge {
        limit: usize,
        headers: Option<Vec<u8>>,
    },
    /// Content-Length is missing a value, negative, not a number or given twice with
    /// different values (RFC 4475 3.1.2.3, 3.3.9); answer 400 and close.
    #[error("unusable Content-Length")]
    BadContentLength { headers: Vec<u8> },
}

/// Buffers stream bytes and pops complete messages.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_message_size: usize,
    /// How much of `buf` is known to hold no end of the header section: a peer
    /// dripping bytes must not make every `pop` rescan the whole buffer.
    scanned: usize,
    /// Length of the message at the front of `buf` once its header section is in.
    total: Option<usize>,
}

impl StreamFramer {
    pub fn new(max_message_size: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message_size,
            scanned: 0,
            total: None,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Pops the next frame, `Ok(None)` when more bytes are needed.
    pub fn pop(&mut self) -> Result<Option<Frame>, FramingError> {
        // RFC 5626 3.5.1: CRLFCRLF is a ping; a lone CRLF (a pong, or the CRLFs RFC 3261
        // 7.5 says to ignore before a start line) is skipped.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.discard(4);
                return Ok(Some(Frame::Ping));
            }
            if self.buf.starts_with(b"\r\n") && self.buf.len() >= 4 {
                self.discard(2);
                continue;
            }
            if self.buf == b"\r\n" || self.buf == b"\r\n\r" || self.buf == b"\r" {
                // Could still become a ping; wait.
                return Ok(None);
            }
            if self.buf.first() == Some(&b'\n') {
                self.discard(1);
                continue;
            }
            break;
        }
        let total = match self.total {
            Some(total) => total,
            None => {
                // Only bytes that arrived since the last look can complete a CRLFCRLF.
                let from = self.scanned.saturating_sub(3);
                let Some(head_end) = find(&self.buf[from..], b"\r\n\r\n").map(|i| from + i) else {
                    self.scanned = self.buf.len();
                    if self.buf.len() > self.max_message_size {
                        return Err(FramingError::MessageTooLarge {
                            limit: self.max_message_size,
                            headers: None,
                        });
                    }
                    return Ok(None);
                };
                let body_start = head_end + 4;
                let headers = &self.buf[..body_start];
                let content_length = match content_length(headers) {
                    Ok(len) => len,
                    Err(()) => {
                        return Err(FramingError::BadContentLength {
                            headers: headers.to_vec(),
                        })
                    }
                };
                let total = body_start.saturating_add(content_length);
                if total > self.max_message_size {
                    return Err(FramingError::MessageTooLarge {
                        limit: self.max_message_size,
                        headers: Some(headers.to_vec()),
                    });
                }
                self.total = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let message: Vec<u8> = self.buf.drain(..total).collect();
        self.scanned = 0;
        self.total = None;
        Ok(Some(Frame::Message(message)))
    }

    fn discard(&mut self, n: usize) {
        self.buf.drain(..n);
        self.scanned = 0;
        self.total = None;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Content-Length of a header section; absent counts as 0 (a bodiless ACK, as sent by
/// some softphones). Multiple differing values or junk are errors.
fn content_length(head: &[u8]) -> Result<usize, ()> {
    let text = String::from_utf8_lossy(head);
    let mut found: Option<u32> = None;
    for line in text.split("\r\n").skip(1) {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if canonical_header_name(name.trim_end()) != "Content-Length" {
            continue;
        }
        let v = parse_u32(value.trim()).map_err(|_| ())?;
        if found.is_some() {
            return Err(());
        }
        found = Some(v);
    }
    Ok(found.unwrap_or(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn frames_split_and_coalesced_messages() {
        let mut f = StreamFramer::new(4096);
        f.push(&MSG[..10]);
        assert_eq!(f.pop(), Ok(None));
        f.push(&MSG[10..]);
        f.push(MSG);
        assert_eq!(f.pop(), Ok(Some(Frame::Message(MSG.to_vec()))));
        assert_eq!(f.pop(), Ok(Some(Frame::Message(MSG.to_vec()))));
        assert_eq!(f.pop(), Ok(None));
    }

    #[test]
    fn double_crlf_is_a_ping_single_crlf_is_ignored() {
        let mut f = StreamFramer::new(4096);
        f.push(b"\r\n\r\n");
        assert_eq!(f.pop(), Ok(Some(Frame::Ping)));
        f.push(b"\r\n");
        assert_eq!(f.pop(), Ok(None));
        f.push(MSG);
        assert_eq!(f.pop(), Ok(Some(Frame::Message(MSG.to_vec()))));
    }

    #[test]
    fn oversized_and_bad_length_are_errors() {
        let mut f = StreamFramer::new(20);
        f.push(MSG);
        assert!(matches!(f.pop(), Err(FramingError::MessageTooLarge { .. })));
        let mut f = StreamFramer::new(4096);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nl: -999\r\n\r\n");
        assert!(matches!(
            f.pop(),
            Err(FramingError::BadContentLength { .. })
        ));
    }
}
