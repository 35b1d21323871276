//! Virtual-time scenarios for calls the endpoint places (UAC): the INVITE client
//! transaction's timers, ringing, answer and ACK, busy, CANCEL before and after a
//! provisional, an answer racing a CANCEL, BYE along the route set, and parallel
//! forking with the losers cancelled. The test plays the called phone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sofia_sip::{
    Body, CallHandle, EndReason, Endpoint, Event, Fork, ForkAction, OutgoingInvite, Request,
    Transport,
};

const PHONE: &str = "198.51.100.20:5062";

fn outgoing(destination: &str) -> OutgoingInvite {
    OutgoingInvite {
        destination: addr(destination),
        transport: Transport::Udp,
        request_uri: format!("sip:1001@{destination}"),
        to: format!("sip:1001@{SWITCH}"),
        from_user: "1000".into(),
        from_display: Some("Alice".into()),
        asserted_identity: Some(format!("<sip:1000@{SWITCH}>")),
        body: Some(Body {
            content_type: "application/sdp".into(),
            bytes: b"v=0\r\n".to_vec(),
        }),
    }
}

/// Places a call and returns its handle and the INVITE as the phone received it.
fn place(ep: &mut Endpoint, now: Instant, destination: &str) -> (CallHandle, Request) {
    let call = ep
        .invite(now, outgoing(destination))
        .expect("INVITE placed");
    let sent = drain(ep);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, addr(destination));
    (call, request(&sent[0]))
}

fn from_phone(ep: &mut Endpoint, now: Instant, bytes: &[u8]) -> Vec<Request> {
    ep.handle_datagram(now, addr(PHONE), Transport::Udp, bytes);
    drain(ep)
        .iter()
        .filter(|t| !t.bytes.starts_with(b"SIP/2.0"))
        .map(request)
        .collect()
}

#[test]
fn the_invite_says_who_calls_and_is_retransmitted_until_timer_b_gives_408() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    assert_eq!(invite.method.as_str(), "INVITE");
    assert_eq!(invite.uri.to_string(), format!("sip:1001@{PHONE}"));
    let from = invite.headers.first("From").unwrap();
    assert!(from.starts_with("\"Alice\" <sip:1000@"), "{from}");
    assert!(invite.from.tag().is_some());
    assert!(invite.headers.first("P-Asserted-Identity").is_some());
    assert!(invite.headers.first("Contact").is_some());
    assert_eq!(invite.body, b"v=0\r\n");
    let until = now + Duration::from_secs(33);
    let sent = run_until(&mut ep, &mut now, until);
    let at: Vec<u128> = sent.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(at, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(
        events(&mut ep),
        vec![Event::CallFailed { call, status: 408 }]
    );
    assert_eq!(ep.outgoing_count(), 0);
}

#[test]
fn ringing_then_answer_is_acked_and_the_callee_can_hang_up() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    assert!(from_phone(&mut ep, now, &reply(&invite, 100, None, &[], b"")).is_empty());
    assert!(from_phone(&mut ep, now, &reply(&invite, 180, Some("ph1"), &[], b"")).is_empty());
    assert_eq!(
        events(&mut ep),
        vec![Event::CallProgress {
            call,
            status: 180,
            body: None
        }]
    );
    let ok = reply(
        &invite,
        200,
        Some("ph1"),
        &[&format!("Contact: <sip:1001@{PHONE}>")],
        b"v=0\r\nanswer\r\n",
    );
    let acks = from_phone(&mut ep, now, &ok);
    assert_eq!(acks.len(), 1, "the 2xx is ACKed");
    let ack = &acks[0];
    assert_eq!(ack.method.as_str(), "ACK");
    assert_eq!(ack.cseq.seq, invite.cseq.seq);
    assert_eq!(ack.to.tag(), Some("ph1"));
    assert_ne!(
        ack.top_via().branch(),
        invite.top_via().branch(),
        "the ACK of a 2xx is a transaction of its own"
    );
    let answered = events(&mut ep);
    assert!(
        matches!(&answered[..], [Event::CallAnswered { call: c, body: Some(b) }] if *c == call && b.bytes == b"v=0\r\nanswer\r\n"),
        "{answered:?}"
    );
    // A retransmitted 2xx (our ACK was lost) gets the same ACK, and no new event.
    let again = from_phone(&mut ep, now, &ok);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].top_via().branch(), ack.top_via().branch());
    assert!(events(&mut ep).is_empty());
    // The callee hangs up: a BYE with its tag in From and ours in To.
    let bye = format!(
        "BYE sip:1000@{SWITCH} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK-bye1\r\n\
         From: <sip:1001@{SWITCH}>;tag=ph1\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 7 BYE\r\n\
         Content-Length: 0\r\n\r\n",
        invite.headers.first("From").unwrap(),
        invite.call_id
    );
    ep.handle_datagram(now, addr(PHONE), Transport::Udp, bye.as_bytes());
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert_eq!(
        events(&mut ep),
        vec![Event::CallEnded {
            call,
            reason: EndReason::RemoteBye
        }]
    );
}

#[test]
fn our_hangup_sends_bye_to_the_contact_along_the_reversed_route_set() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    let ok = reply(
        &invite,
        200,
        Some("ph2"),
        &[
            "Contact: <sip:1001@10.0.0.9:5062>",
            "Record-Route: <sip:p1.example.net;lr>, <sip:p2.example.net;lr>",
        ],
        b"v=0\r\n",
    );
    from_phone(&mut ep, now, &ok);
    events(&mut ep);
    ep.hangup(now, call).unwrap();
    let sent = drain(&mut ep);
    let bye = request(&sent[0]);
    assert_eq!(bye.method.as_str(), "BYE");
    assert_eq!(bye.uri.to_string(), "sip:1001@10.0.0.9:5062");
    let routes: Vec<String> = bye.headers.list("Route");
    assert_eq!(
        routes,
        vec!["<sip:p2.example.net;lr>", "<sip:p1.example.net;lr>"]
    );
    assert!(bye.cseq.seq > invite.cseq.seq);
    assert_eq!(
        sent[0].destination,
        addr(PHONE),
        "over the flow it was placed on"
    );
}

#[test]
fn busy_is_acked_on_the_invite_branch_and_reported_once() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    let busy = reply(&invite, 486, Some("ph3"), &[], b"");
    let acks = from_phone(&mut ep, now, &busy);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].method.as_str(), "ACK");
    assert_eq!(acks[0].top_via().branch(), invite.top_via().branch());
    assert_eq!(acks[0].to.tag(), Some("ph3"));
    assert_eq!(
        events(&mut ep),
        vec![Event::CallFailed { call, status: 486 }]
    );
    // The 486 again: the same ACK, nothing new for the application.
    let again = from_phone(&mut ep, now, &busy);
    assert_eq!(again.len(), 1);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn cancel_waits_for_a_provisional_then_487_ends_the_call() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    ep.cancel(now, call).unwrap();
    assert!(
        drain(&mut ep).is_empty(),
        "RFC 3261 9.1: no CANCEL before a provisional response"
    );
    let sent = from_phone(&mut ep, now, &reply(&invite, 180, Some("ph4"), &[], b""));
    assert_eq!(sent.len(), 1);
    let cancel = &sent[0];
    assert_eq!(cancel.method.as_str(), "CANCEL");
    assert_eq!(cancel.top_via().branch(), invite.top_via().branch());
    assert_eq!(cancel.cseq.seq, invite.cseq.seq);
    assert_eq!(cancel.uri, invite.uri);
    assert!(cancel.to.tag().is_none());
    // 200 to the CANCEL, then 487 to the INVITE.
    from_phone(&mut ep, now, &reply(cancel, 200, Some("ph4"), &[], b""));
    let acks = from_phone(&mut ep, now, &reply(&invite, 487, Some("ph4"), &[], b""));
    assert_eq!(acks.len(), 1);
    let ev = events(&mut ep);
    assert_eq!(ev.last(), Some(&Event::CallFailed { call, status: 487 }));
    // hangup() of an unanswered call is the same CANCEL; of a finished one an error.
    assert!(ep.hangup(now, call).is_err());
}

#[test]
fn an_answer_racing_our_cancel_is_acked_and_hung_up() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = place(&mut ep, now, PHONE);
    from_phone(&mut ep, now, &reply(&invite, 180, Some("ph5"), &[], b""));
    ep.hangup(now, call).unwrap();
    let cancel = request(&drain(&mut ep)[0]);
    assert_eq!(cancel.method.as_str(), "CANCEL");
    events(&mut ep);
    let ok = reply(
        &invite,
        200,
        Some("ph5"),
        &[&format!("Contact: <sip:1001@{PHONE}>")],
        b"v=0\r\n",
    );
    let sent = from_phone(&mut ep, now, &ok);
    let methods: Vec<&str> = sent.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, vec!["ACK", "BYE"]);
    assert_eq!(
        events(&mut ep),
        vec![Event::CallEnded {
            call,
            reason: EndReason::LocalHangup
        }]
    );
}

#[test]
fn forking_connects_the_first_answer_and_cancels_the_other_phone() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let desk = "198.51.100.21:5060";
    let mobile = "198.51.100.22:5060";
    let (a, invite_a) = place(&mut ep, now, desk);
    let (b, invite_b) = place(&mut ep, now, mobile);
    let mut fork = Fork::new([a, b]);
    for (invite, from) in [(&invite_a, desk), (&invite_b, mobile)] {
        let ringing = reply(invite, 180, Some(&format!("t-{from}")), &[], b"");
        ep.handle_datagram(now, addr(from), Transport::Udp, &ringing);
    }
    drain(&mut ep);
    events(&mut ep);
    let ok = reply(
        &invite_b,
        200,
        Some(&format!("t-{mobile}")),
        &[&format!("Contact: <sip:1001@{mobile}>")],
        b"v=0\r\n",
    );
    ep.handle_datagram(now, addr(mobile), Transport::Udp, &ok);
    drain(&mut ep);
    let answered = events(&mut ep);
    let Some(Event::CallAnswered { call, .. }) = answered.first() else {
        panic!("{answered:?}");
    };
    let ForkAction::Connect { winner, cancel } = fork.answered(*call) else {
        panic!("the first answer wins");
    };
    assert_eq!((winner, cancel.clone()), (b, vec![a]));
    for loser in cancel {
        ep.hangup(now, loser).unwrap();
    }
    let sent = drain(&mut ep);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, addr(desk));
    assert_eq!(request(&sent[0]).method.as_str(), "CANCEL");
    // The desk phone's 487 ends its branch; the caller stays with the mobile.
    ep.handle_datagram(
        now,
        addr(desk),
        Transport::Udp,
        &reply(&invite_a, 487, Some(&format!("t-{desk}")), &[], b""),
    );
    drain(&mut ep);
    let ev = events(&mut ep);
    assert_eq!(
        ev,
        vec![Event::CallFailed {
            call: a,
            status: 487
        }]
    );
    assert_eq!(fork.failed(a, 487), ForkAction::Wait);
    assert_eq!(ep.call_count(), 1);
}
