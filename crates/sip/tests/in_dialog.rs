//! Virtual-time scenarios for requests the endpoint sends in a confirmed dialog. Re-
//! INVITEs (RFC 3261 14.1), as the switch sends to mirror hold and unhold onto the other
//! leg of a bridged call: the request is a request of the dialog, its 2xx is ACKed
//! (again for each retransmission), and glare (both sides re-INVITE at once) ends with
//! 491 on both and our retry after the random wait RFC 3261 14.1 gives each side. And
//! blind transfer (RFC 3515): a REFER is answered 202 and reported, and the NOTIFYs of
//! its subscription carry the referred call's progress as message/sipfrag. The test
//! plays the phone.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sofia_sip::{Body, CallHandle, Endpoint, Event, OutgoingInvite, Request, Transport};

const PHONE: &str = "198.51.100.20:5062";
const HOLD: &[u8] = b"v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0\r\na=sendonly\r\n";

fn sdp(bytes: &[u8]) -> Body {
    Body {
        content_type: "application/sdp".into(),
        bytes: bytes.to_vec(),
    }
}

/// What the endpoint sent in answer to `bytes` from the phone: (requests, statuses).
fn from_phone(ep: &mut Endpoint, now: Instant, bytes: &[u8]) -> (Vec<Request>, Vec<u16>) {
    ep.handle_datagram(now, addr(PHONE), Transport::Udp, bytes);
    split(drain(ep))
}

fn split(sent: Vec<sofia_sip::Transmit>) -> (Vec<Request>, Vec<u16>) {
    let codes = statuses(&sent);
    let requests = sent
        .iter()
        .filter(|t| !t.bytes.starts_with(b"SIP/2.0"))
        .map(request)
        .collect();
    (requests, codes)
}

/// A call the switch placed to the phone (so the switch chose the Call-ID), answered
/// with the phone's tag `ph`; returns the handle and the INVITE.
fn placed_call(ep: &mut Endpoint, now: Instant) -> (CallHandle, Request) {
    let call = ep
        .invite(
            now,
            OutgoingInvite {
                destination: addr(PHONE),
                transport: Transport::Udp,
                request_uri: format!("sip:1001@{PHONE}"),
                to: format!("sip:1001@{SWITCH}"),
                from_user: "1000".into(),
                from_display: None,
                asserted_identity: None,
                body: Some(sdp(b"v=0\r\n")),
            },
        )
        .unwrap();
    let invite = request(&drain(ep)[0]);
    let ok = reply(
        &invite,
        200,
        Some("ph"),
        &[
            "Contact: <sip:1001@10.0.0.9:5062>",
            "Record-Route: <sip:p1.example.net;lr>",
        ],
        b"v=0\r\n",
    );
    let (acks, _) = from_phone(ep, now, &ok);
    assert_eq!(acks.len(), 1);
    assert!(matches!(&events(ep)[..], [Event::CallAnswered { .. }]));
    (call, invite)
}

/// The phone's own re-INVITE in the dialog of `invite` (our INVITE), CSeq `cseq`.
fn phone_reinvite(invite: &Request, cseq: u32, branch: &str) -> Vec<u8> {
    let body = b"v=0\r\no=- 7 8 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
    let mut s = format!(
        "INVITE sip:1000@{SWITCH} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{SWITCH}>;tag=ph\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} INVITE\r\nContact: <sip:1001@10.0.0.9:5062>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        invite.headers.first("From").unwrap(),
        invite.call_id,
        body.len()
    );
    s.push_str(std::str::from_utf8(body).unwrap());
    s.into_bytes()
}

/// The phone's ACK of a 2xx to its re-INVITE `cseq`.
fn phone_ack(invite: &Request, cseq: u32) -> Vec<u8> {
    format!(
        "ACK sip:1000@{SWITCH} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK-ack{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{SWITCH}>;tag=ph\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
        invite.headers.first("From").unwrap(),
        invite.call_id,
    )
    .into_bytes()
}

/// Runs timers until `until`; returns each request sent with its time after `from`.
fn requests_until(
    ep: &mut Endpoint,
    now: &mut Instant,
    until: Instant,
) -> Vec<(Duration, Request)> {
    run_until(ep, now, until)
        .into_iter()
        .filter(|(_, t)| !t.bytes.starts_with(b"SIP/2.0"))
        .map(|(at, t)| (at, request(&t)))
        .collect()
}

/// The INVITEs among `sent` that start a transaction (Timer A's retransmissions of
/// the same branch left out).
fn new_invites(sent: Vec<(Duration, Request)>) -> Vec<(Duration, Request)> {
    let mut seen = Vec::new();
    sent.into_iter()
        .filter(|(_, r)| r.method.as_str() == "INVITE")
        .filter(|(_, r)| {
            let branch = r.top_via().branch().unwrap_or_default().to_string();
            let new = !seen.contains(&branch);
            seen.push(branch);
            new
        })
        .collect()
}

#[test]
fn a_reinvite_is_a_request_of_the_dialog_and_its_2xx_is_acked() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = placed_call(&mut ep, now);
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    let (sent, _) = split(drain(&mut ep));
    assert_eq!(sent.len(), 1);
    let re = &sent[0];
    assert_eq!(re.method.as_str(), "INVITE");
    assert_eq!(
        re.uri.to_string(),
        "sip:1001@10.0.0.9:5062",
        "to the remote target"
    );
    assert_eq!(re.headers.list("Route"), vec!["<sip:p1.example.net;lr>"]);
    assert_eq!(re.call_id, invite.call_id);
    assert_eq!(re.from.tag(), invite.from.tag());
    assert_eq!(re.to.tag(), Some("ph"));
    assert!(re.cseq.seq > invite.cseq.seq, "a fresh CSeq");
    assert!(
        re.headers.first("Contact").is_some(),
        "a target refresh carries Contact"
    );
    assert_eq!(re.body, HOLD);
    // A second one while this is under way is refused, not sent.
    assert_eq!(
        ep.reinvite(now, call, sdp(HOLD)),
        Err(sofia_sip::CallError::InviteInProgress)
    );
    assert!(drain(&mut ep).is_empty());
    // 100, then 200 with the answer and a new Contact: ACKed with the re-INVITE's CSeq.
    from_phone(&mut ep, now, &reply(re, 100, None, &[], b""));
    let ok = reply(
        re,
        200,
        None,
        &["Contact: <sip:1001@10.0.0.10:5062>"],
        b"v=0\r\na=recvonly\r\n",
    );
    let (acks, _) = from_phone(&mut ep, now, &ok);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].method.as_str(), "ACK");
    assert_eq!(acks[0].cseq.seq, re.cseq.seq);
    assert_ne!(acks[0].top_via().branch(), re.top_via().branch());
    assert_eq!(
        events(&mut ep),
        vec![Event::ReInviteAnswered {
            call,
            body: Some(sdp(b"v=0\r\na=recvonly\r\n"))
        }]
    );
    // Our ACK was lost: the 2xx retransmission gets the same ACK, and no new event.
    let (again, _) = from_phone(&mut ep, now, &ok);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].top_via().branch(), acks[0].top_via().branch());
    assert!(events(&mut ep).is_empty());
    // The 2xx's Contact is the new remote target (a re-INVITE refreshes it).
    ep.hangup(now, call).unwrap();
    let (bye, _) = split(drain(&mut ep));
    assert_eq!(bye[0].uri.to_string(), "sip:1001@10.0.0.10:5062");
}

#[test]
fn a_refused_reinvite_is_acked_and_reported_and_the_call_goes_on() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, _) = placed_call(&mut ep, now);
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    let (sent, _) = split(drain(&mut ep));
    let (acks, _) = from_phone(&mut ep, now, &reply(&sent[0], 488, None, &[], b""));
    assert_eq!(acks[0].method.as_str(), "ACK");
    assert_eq!(acks[0].cseq.seq, sent[0].cseq.seq);
    assert_eq!(
        events(&mut ep),
        vec![Event::ReInviteFailed { call, status: 488 }]
    );
    assert_eq!(ep.call_count(), 1);
    // No answer at all: Timer A retransmits, Timer B reports 408.
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    drain(&mut ep);
    let until = now + Duration::from_secs(33);
    let resent = requests_until(&mut ep, &mut now, until);
    assert_eq!(resent.len(), 6, "Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s");
    assert_eq!(
        events(&mut ep),
        vec![Event::ReInviteFailed { call, status: 408 }]
    );
}

#[test]
fn glare_the_call_id_owner_retries_after_2_1_to_4_seconds() {
    for seed in 0u8..8 {
        let mut cfg = config();
        cfg.seed = [seed; 32];
        let mut now = t0();
        let mut ep = Endpoint::new(cfg, now);
        let (call, invite) = placed_call(&mut ep, now);
        ep.reinvite(now, call, sdp(HOLD)).unwrap();
        let (sent, _) = split(drain(&mut ep));
        let ours = sent[0].clone();
        // The phone's re-INVITE crosses ours: it gets 491 (RFC 3261 14.2)...
        let (_, codes) = from_phone(&mut ep, now, &phone_reinvite(&invite, 20, "z9hG4bK-g1"));
        assert_eq!(codes, vec![491]);
        // ... and so does ours; the 491 is ACKed and nobody is told yet.
        let (acks, _) = from_phone(&mut ep, now, &reply(&ours, 491, None, &[], b""));
        assert_eq!(acks[0].method.as_str(), "ACK");
        assert!(events(&mut ep).is_empty());
        // The phone gives up its own; ours is sent again between 2.1 and 4 s later.
        let start = now;
        let until = now + Duration::from_secs(5);
        let retries = new_invites(requests_until(&mut ep, &mut now, until));
        assert_eq!(retries.len(), 1, "seed {seed}: one retry");
        let (at, retry) = &retries[0];
        assert!(
            *at >= Duration::from_millis(2100) && *at <= Duration::from_millis(4000),
            "seed {seed}: retried after {at:?}"
        );
        assert_eq!(at.as_millis() % 10, 0, "in units of 10 ms");
        assert!(retry.cseq.seq > ours.cseq.seq);
        assert_ne!(retry.top_via().branch(), ours.top_via().branch());
        assert_eq!(retry.body, HOLD);
        let ok = reply(retry, 200, None, &[], b"v=0\r\n");
        from_phone(&mut ep, start + *at, &ok);
        assert_eq!(
            events(&mut ep),
            vec![Event::ReInviteAnswered {
                call,
                body: Some(sdp(b"v=0\r\n"))
            }]
        );
    }
}

/// The phone (1000) calls 5555 (so the phone chose the Call-ID) and hears 180 with
/// our tag: the call, the phone's UAC and the To value (with our tag) of its dialog.
fn incoming_call(ep: &mut Endpoint, now: Instant) -> (CallHandle, Uac, String) {
    let mut uac = Uac::new("1000", "secret1000", PHONE);
    let bytes = uac.request(
        "INVITE",
        &format!("sip:5555@{SWITCH}"),
        &format!("<sip:5555@{SWITCH}>"),
        &[
            "Contact: <sip:1000@198.51.100.20:5062>".into(),
            "Content-Type: application/sdp".into(),
        ],
        b"v=0\r\n",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &bytes);
    drain(ep);
    let Some(Event::IncomingCall(incoming)) = events(ep).into_iter().next() else {
        panic!("no call");
    };
    ep.ring(now, incoming.call).unwrap();
    let to_tag = response(&drain(ep)[0]).to.tag().unwrap().to_string();
    (
        incoming.call,
        uac,
        format!("<sip:5555@{SWITCH}>;tag={to_tag}"),
    )
}

#[test]
fn glare_the_other_side_retries_within_2_seconds() {
    let mut waits = Vec::new();
    for seed in 0u8..8 {
        let mut cfg = config();
        cfg.seed = [seed; 32];
        cfg.auth_invite = false;
        let mut now = t0();
        let mut ep = Endpoint::new(cfg, now);
        let (call, mut uac, to) = incoming_call(&mut ep, now);
        ep.answer(now, call, sdp(b"v=0\r\n")).unwrap();
        drain(&mut ep);
        let ack = uac.request("ACK", &format!("sip:5555@{SWITCH}"), &to, &[], b"");
        ep.handle_datagram(now, uac.addr, Transport::Udp, &ack);
        events(&mut ep);
        ep.reinvite(now, call, sdp(HOLD)).unwrap();
        let (sent, _) = split(drain(&mut ep));
        assert_eq!(sent[0].uri.to_string(), "sip:1000@198.51.100.20:5062");
        from_phone(&mut ep, now, &reply(&sent[0], 491, None, &[], b""));
        let until = now + Duration::from_secs(5);
        let retries = new_invites(requests_until(&mut ep, &mut now, until));
        assert_eq!(retries.len(), 1, "seed {seed}: one retry");
        assert!(
            retries[0].0 <= Duration::from_millis(2000),
            "{:?}",
            retries[0].0
        );
        waits.push(retries[0].0);
    }
    // Random, not a constant.
    waits.dedup();
    assert!(waits.len() > 1, "{waits:?}");
}

#[test]
fn the_peers_retry_during_our_wait_is_answered_and_replaces_ours() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = placed_call(&mut ep, now);
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    let (sent, _) = split(drain(&mut ep));
    from_phone(&mut ep, now, &reply(&sent[0], 491, None, &[], b""));
    // The phone (not the Call-ID's owner) retries first, within our 2.1 s at least.
    now += Duration::from_millis(1500);
    ep.handle_timeout(now);
    drain(&mut ep);
    let (_, codes) = from_phone(&mut ep, now, &phone_reinvite(&invite, 21, "z9hG4bK-g2"));
    assert_eq!(codes, vec![100]);
    let ev = events(&mut ep);
    assert!(
        matches!(&ev[..], [Event::ReInviteFailed { call: c, status: 491 }, Event::ReInvite { call: d, .. }] if *c == call && *d == call),
        "{ev:?}"
    );
    ep.answer(now, call, sdp(b"v=0\r\na=recvonly\r\n")).unwrap();
    drain(&mut ep);
    from_phone(&mut ep, now, &phone_ack(&invite, 21));
    // Our stale offer never follows.
    let until = now + Duration::from_secs(5);
    let later = requests_until(&mut ep, &mut now, until);
    assert!(later.is_empty(), "{later:?}");
    // And a new one may go.
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    assert_eq!(split(drain(&mut ep)).0.len(), 1);
}

#[test]
fn a_reinvite_asked_for_during_the_peers_waits_for_its_ack() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = placed_call(&mut ep, now);
    from_phone(&mut ep, now, &phone_reinvite(&invite, 30, "z9hG4bK-p1"));
    events(&mut ep);
    ep.answer(now, call, sdp(b"v=0\r\n")).unwrap();
    drain(&mut ep);
    // Our 2xx awaits its ACK: ours must not cross it.
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    assert!(split(drain(&mut ep)).0.is_empty());
    let (sent, _) = from_phone(&mut ep, now, &phone_ack(&invite, 30));
    assert_eq!(sent.len(), 1, "sent once the ACK came");
    assert_eq!(sent[0].method.as_str(), "INVITE");
    assert_eq!(sent[0].body, HOLD);
}

/// The phone's REFER in the dialog of `invite` (our INVITE), with `refer_to` lines.
fn phone_refer(invite: &Request, cseq: u32, refer_to: &[&str]) -> Vec<u8> {
    let mut s = format!(
        "REFER sip:1000@{SWITCH} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK-r{cseq}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{SWITCH}>;tag=ph\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: {cseq} REFER\r\nContact: <sip:1001@10.0.0.9:5062>\r\n",
        invite.headers.first("From").unwrap(),
        invite.call_id,
    );
    for r in refer_to {
        s.push_str(&format!("Refer-To: {r}\r\n"));
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

#[test]
fn a_refer_gets_202_and_its_notifies_carry_the_referred_calls_status() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, invite) = placed_call(&mut ep, now);
    let refer = phone_refer(&invite, 40, &[&format!("<sip:1002@{SWITCH}>")]);
    let (_, codes) = from_phone(&mut ep, now, &refer);
    assert_eq!(codes, vec![202]);
    assert_eq!(
        events(&mut ep),
        vec![Event::Refer {
            call,
            refer_to: format!("sip:1002@{SWITCH}")
        }]
    );
    // A second transfer while this one is reported is refused.
    let (_, codes) = from_phone(&mut ep, now, &phone_refer(&invite, 41, &["<sip:1003@x>"]));
    assert_eq!(codes, vec![403]);

    let trying = ep.notify_refer(now, call, 100).unwrap();
    let (sent, _) = split(drain(&mut ep));
    let n = &sent[0];
    assert_eq!(n.method.as_str(), "NOTIFY");
    assert_eq!(n.uri.to_string(), "sip:1001@10.0.0.9:5062");
    assert_eq!(n.headers.list("Route"), vec!["<sip:p1.example.net;lr>"]);
    assert_eq!(n.to.tag(), Some("ph"));
    assert_eq!(n.headers.first("Event"), Some("refer"));
    assert_eq!(
        n.headers.first("Subscription-State"),
        Some("active;expires=60")
    );
    assert_eq!(n.content_type(), Some("message/sipfrag;version=2.0"));
    assert_eq!(n.body, b"SIP/2.0 100 Trying\r\n");
    assert!(n.cseq.seq > invite.cseq.seq);
    from_phone(&mut ep, now, &reply(n, 200, None, &[], b""));
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestCompleted {
            request: trying,
            status: Some(200)
        }]
    );
    // The final NOTIFY ends the subscription; it is retransmitted (Timer E) until
    // answered, and Timer F reports no answer.
    let done = ep.notify_refer(now, call, 200).unwrap();
    let (sent, _) = split(drain(&mut ep));
    assert_eq!(sent[0].body, b"SIP/2.0 200 OK\r\n");
    assert!(sent[0].cseq.seq > n.cseq.seq);
    assert!(sent[0]
        .headers
        .first("Subscription-State")
        .unwrap()
        .starts_with("terminated"));
    assert_eq!(
        ep.notify_refer(now, call, 200),
        Err(sofia_sip::CallError::NoSubscription)
    );
    let until = now + Duration::from_secs(33);
    let resent = requests_until(&mut ep, &mut now, until);
    assert!(resent.len() >= 5, "Timer E: {}", resent.len());
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestCompleted {
            request: done,
            status: None
        }]
    );
    // A new transfer may follow.
    let (_, codes) = from_phone(&mut ep, now, &phone_refer(&invite, 42, &["<sip:1003@x>"]));
    assert_eq!(codes, vec![202]);
}

#[test]
fn a_refer_without_one_sip_refer_to_gets_400() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (_, invite) = placed_call(&mut ep, now);
    for (cseq, targets) in [
        (50, vec![]),
        (51, vec!["<sip:1@x>", "<sip:2@x>"]),
        (52, vec!["<tel:+15551234>"]),
        (53, vec!["<sip:"]),
    ] {
        let (_, codes) = from_phone(&mut ep, now, &phone_refer(&invite, cseq, &targets));
        assert_eq!(codes, vec![400], "{targets:?}");
    }
    assert!(events(&mut ep).is_empty());
    // A NOTIFY from the phone: there is no subscription of ours.
    let notify = String::from_utf8(phone_refer(&invite, 54, &[]))
        .unwrap()
        .replace("REFER", "NOTIFY");
    let (_, codes) = from_phone(&mut ep, now, notify.as_bytes());
    assert_eq!(codes, vec![481]);
}

#[test]
fn a_refer_before_the_call_is_answered_gets_403() {
    let now = t0();
    let mut cfg = config();
    cfg.auth_invite = false;
    let mut ep = Endpoint::new(cfg, now);
    let (_, mut uac, to) = incoming_call(&mut ep, now);
    uac.cseq += 1;
    let refer = uac.request(
        "REFER",
        &format!("sip:5555@{SWITCH}"),
        &to,
        &[format!("Refer-To: <sip:1001@{SWITCH}>")],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &refer);
    assert_eq!(statuses(&drain(&mut ep)), vec![403]);
    assert!(events(&mut ep).is_empty());
}

#[test]
fn a_reinvite_answered_only_with_100_is_given_up_at_max_ringing() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let (call, _) = placed_call(&mut ep, now);
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    let (sent, _) = split(drain(&mut ep));
    from_phone(&mut ep, now, &reply(&sent[0], 100, None, &[], b""));
    let until = now + Duration::from_secs(179);
    run_until(&mut ep, &mut now, until);
    assert!(events(&mut ep).is_empty(), "still waiting at 179 s");
    let until = now + Duration::from_secs(2);
    run_until(&mut ep, &mut now, until);
    assert_eq!(
        events(&mut ep),
        vec![Event::ReInviteFailed { call, status: 408 }]
    );
    assert_eq!(ep.reinvite_count(), 0, "nothing left behind");
    // The call may re-INVITE again.
    ep.reinvite(now, call, sdp(HOLD)).unwrap();
    assert_eq!(split(drain(&mut ep)).0.len(), 1);
}
