//! `sofia_sip::parse` on arbitrary bytes, with both framings (a UDP datagram, a message
//! cut from a TCP stream). Invariants: no panic; a parsed message has a top Via, and a
//! parsed message prints (`to_bytes`) to bytes that parse again as the same kind of
//! message with the same essentials (what we relay or echo must be readable by us).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sofia_sip::{parse, Framing, Message};

fuzz_target!(|data: &[u8]| {
    for framing in [Framing::Datagram, Framing::Stream] {
        match parse(data, framing) {
            Ok(Message::Request(req)) => {
                let _ = req.top_via();
                let _ = req.contacts();
                let _ = req.content_type();
                let printed = req.to_bytes();
                match parse(&printed, Framing::Stream) {
                    Ok(Message::Request(again)) => {
                        assert_eq!(again.method, req.method);
                        assert_eq!(again.call_id, req.call_id);
                        assert_eq!(again.cseq, req.cseq);
                        assert_eq!(again.body, req.body);
                    }
                    other => panic!(
                        "printed request does not parse: {other:?}\n{}",
                        String::from_utf8_lossy(&printed)
                    ),
                }
            }
            Ok(Message::Response(resp)) => {
                let printed = resp.to_bytes();
                match parse(&printed, Framing::Stream) {
                    Ok(Message::Response(again)) => {
                        assert_eq!(again.status, resp.status);
                        assert_eq!(again.call_id, resp.call_id);
                        assert_eq!(again.cseq, resp.cseq);
                        assert_eq!(again.body, resp.body);
                    }
                    other => panic!(
                        "printed response does not parse: {other:?}\n{}",
                        String::from_utf8_lossy(&printed)
                    ),
                }
            }
            Err(failure) => {
                let _ = failure.status();
            }
        }
    }
});
