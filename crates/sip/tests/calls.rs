//! Virtual-time scenarios for INVITE dialogs: a scripted UAC driven against the
//! endpoint, timers advanced by hand, no sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sofia_sip::{Body, Config, EndReason, Endpoint, Event, Transport};

const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn open_config() -> Config {
    let mut c = config();
    c.auth_invite = false;
    c
}

fn sdp_body() -> Body {
    Body {
        content_type: "application/sdp".to_string(),
        bytes: SDP.to_vec(),
    }
}

struct Call {
    uac: Uac,
    handle: sofia_sip::CallHandle,
    invite_branch: String,
    to_tag: Option<String>,
}

/// Sends an INVITE and returns the call the endpoint announced.
fn invite(ep: &mut Endpoint, now: Instant) -> Call {
    let mut uac = Uac::new("alice", "wonderland", "203.0.113.5:5062");
    let branch = uac.branch();
    let bytes = uac.request_with_branch(
        "INVITE",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[
            "Contact: <sip:alice@203.0.113.5:5062>".to_string(),
            "Content-Type: application/sdp".to_string(),
        ],
        SDP,
        &branch,
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &bytes);
    let sent = drain(ep);
    assert_eq!(statuses(&sent), vec![100], "INVITE gets 100 Trying");
    let ev = events(ep);
    let Some(Event::IncomingCall(ic)) = ev.first() else {
        panic!("expected IncomingCall, got {ev:?}");
    };
    assert_eq!(ic.user.as_deref(), Some("5555"));
    assert_eq!(ic.body.as_ref().map(|b| b.bytes.as_slice()), Some(SDP));
    Call {
        handle: ic.call,
        uac,
        invite_branch: branch,
        to_tag: None,
    }
}

fn answer(ep: &mut Endpoint, now: Instant, call: &mut Call) {
    ep.answer(now, call.handle, sdp_body())
        .expect("answer the pending INVITE");
    let sent = drain(ep);
    assert_eq!(statuses(&sent), vec![200]);
    let r = response(&sent[0]);
    assert_eq!(r.body, SDP);
    assert!(
        r.headers.first("Contact").is_some(),
        "2xx to INVITE carries Contact"
    );
    call.to_tag = r.to.tag().map(str::to_string);
    assert!(call.to_tag.is_some(), "2xx carries a To tag");
}

fn in_dialog(call: &mut Call, method: &str, body: &[u8], extra: &[String]) -> Vec<u8> {
    let to = format!(
        "<sip:5555@192.0.2.1>;tag={}",
        call.to_tag.as_deref().expect("dialog established")
    );
    call.uac
        .request(method, "sip:192.0.2.1:5060", &to, extra, body)
}

fn ack(call: &mut Call) -> Vec<u8> {
    in_dialog(call, "ACK", b"", &[])
}

fn established(ep: &mut Endpoint, now: Instant) -> Call {
    let mut call = invite(ep, now);
    answer(ep, now, &mut call);
    let a = ack(&mut call);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &a);
    assert!(matches!(
        events(ep).as_slice(),
        [Event::CallConfirmed { .. }]
    ));
    call
}

#[test]
fn invite_2xx_retransmitted_until_ack() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = invite(&mut ep, now);
    answer(&mut ep, now, &mut call);
    // RFC 3261 13.3.1.4: T1, 2*T1, 4*T1 ... capped at T2.
    let sent = run_until(&mut ep, &mut now, start + Duration::from_millis(7600));
    let times: Vec<u128> = sent
        .iter()
        .filter(|(_, t)| statuses(std::slice::from_ref(t)) == vec![200])
        .map(|(d, _)| d.as_millis())
        .collect();
    assert_eq!(times, vec![500, 1500, 3500, 7500]);
    let a = ack(&mut call);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &a);
    assert!(
        matches!(events(&mut ep).as_slice(), [Event::CallConfirmed { call: c, .. }] if *c == call.handle)
    );
    let later = run_until(&mut ep, &mut now, start + Duration::from_secs(60));
    assert!(
        later.is_empty(),
        "no retransmission after the ACK: {later:?}"
    );
    assert_eq!(ep.call_count(), 1);
}

#[test]
fn two_xx_over_tcp_is_not_retransmitted() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let mut uac = Uac::new("alice", "wonderland", "203.0.113.5:40000");
    let bytes = uac.request(
        "INVITE",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &["Contact: <sip:alice@203.0.113.5:5062;transport=tcp>".to_string()],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Tcp, &bytes);
    let sent = drain(&mut ep);
    assert_eq!(sent[0].transport, Transport::Tcp);
    assert_eq!(
        sent[0].destination, uac.addr,
        "responses go back over the connection"
    );
    let Some(Event::IncomingCall(ic)) = events(&mut ep).into_iter().next() else {
        panic!("no call")
    };
    ep.answer(now, ic.call, sdp_body()).expect("answer");
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    let later = run_until(&mut ep, &mut now, start + Duration::from_secs(10));
    assert!(later.is_empty());
}

#[test]
fn ack_never_arrives_gives_bye_and_ack_timeout() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = invite(&mut ep, now);
    answer(&mut ep, now, &mut call);
    let sent = run_until(&mut ep, &mut now, start + Duration::from_secs(33));
    let byes: Vec<_> = sent
        .iter()
        .filter(|(_, t)| t.bytes.starts_with(b"BYE "))
        .collect();
    assert_eq!(byes[0].0, Duration::from_secs(32), "BYE at 64*T1");
    let ev = events(&mut ep);
    assert!(
        ev.contains(&Event::CallEnded {
            call: call.handle,
            reason: EndReason::AckTimeout
        }),
        "{ev:?}"
    );
}

#[test]
fn invite_retransmission_is_absorbed() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut uac = Uac::new("alice", "wonderland", "203.0.113.5:5062");
    let bytes = uac.request(
        "INVITE",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &bytes);
    ep.handle_datagram(now, uac.addr, Transport::Udp, &bytes);
    assert_eq!(
        statuses(&drain(&mut ep)),
        vec![100, 100],
        "the retransmission gets the 100 again"
    );
    assert_eq!(events(&mut ep).len(), 1, "one IncomingCall only");
}

#[test]
fn cancel_before_final_gives_487() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = invite(&mut ep, now);
    ep.ring(now, call.handle).expect("ring");
    assert_eq!(statuses(&drain(&mut ep)), vec![180]);
    let branch = call.invite_branch.clone();
    let cancel = call.uac.request_with_branch(
        "CANCEL",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[],
        b"",
        &branch,
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &cancel);
    let sent = drain(&mut ep);
    assert_eq!(statuses(&sent), vec![200, 487]);
    // RFC 3261 9.2: the CANCEL's 200 has the To tag of the INVITE's responses.
    assert_eq!(response(&sent[0]).to.tag(), response(&sent[1]).to.tag());
    assert_eq!(
        events(&mut ep),
        vec![Event::CallCancelled { call: call.handle }]
    );
    assert_eq!(
        ep.answer(now, call.handle, sdp_body()),
        Err(sofia_sip::CallError::UnknownCall)
    );
    // The 487 is retransmitted (Timer G) until the ACK for it arrives.
    let sent = run_until(&mut ep, &mut now, start + Duration::from_millis(600));
    assert_eq!(
        statuses(&sent.into_iter().map(|(_, t)| t).collect::<Vec<_>>()),
        vec![487]
    );
    let ack = call.uac.request_with_branch(
        "ACK",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>;tag=x",
        &[],
        b"",
        &branch,
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &ack);
    let later = run_until(&mut ep, &mut now, start + Duration::from_secs(40));
    assert!(later.is_empty(), "ACK stops Timer G: {later:?}");
    assert_eq!(ep.transaction_count(), (0, 0), "Timers I and J cleaned up");
}

#[test]
fn cancel_without_transaction_gets_481() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut uac = Uac::new("alice", "wonderland", "203.0.113.5:5062");
    let cancel = uac.request(
        "CANCEL",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &cancel);
    assert_eq!(statuses(&drain(&mut ep)), vec![481]);
}

#[test]
fn reject_retransmits_until_ack() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let call = invite(&mut ep, now);
    ep.reject(now, call.handle, 486).expect("reject");
    assert_eq!(statuses(&drain(&mut ep)), vec![486]);
    assert_eq!(
        events(&mut ep),
        vec![Event::CallEnded {
            call: call.handle,
            reason: EndReason::Rejected(486)
        }]
    );
    let sent = run_until(&mut ep, &mut now, start + Duration::from_secs(33));
    let times: Vec<u128> = sent.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(&times[..4], &[500, 1500, 3500, 7500], "Timer G");
    assert!(
        times.iter().all(|t| *t < 32_000),
        "Timer H ends retransmission"
    );
}

#[test]
fn bye_from_caller_ends_dialog() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = established(&mut ep, now);
    call.uac.cseq += 1;
    let bye = in_dialog(&mut call, "BYE", b"", &[]);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &bye);
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert_eq!(
        events(&mut ep),
        vec![Event::CallEnded {
            call: call.handle,
            reason: EndReason::RemoteBye
        }]
    );
    call.uac.cseq += 1;
    let again = in_dialog(&mut call, "BYE", b"", &[]);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &again);
    assert_eq!(statuses(&drain(&mut ep)), vec![481], "the dialog is gone");
    assert_eq!(ep.call_count(), 0);
}

#[test]
fn bye_from_switch_uses_client_transaction() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let call = established(&mut ep, now);
    ep.hangup(now, call.handle).expect("hang up");
    let sent = drain(&mut ep);
    assert_eq!(sent.len(), 1);
    let bye = request(&sent[0]);
    assert_eq!(bye.method, sofia_sip::Method::Bye);
    assert_eq!(
        sent[0].destination, call.uac.addr,
        "sent where the caller's signalling came from"
    );
    assert_eq!(
        bye.uri.to_string(),
        "sip:alice@203.0.113.5:5062",
        "Request-URI is the remote target"
    );
    assert_eq!(bye.to.tag(), Some("alice-tag"));
    assert_eq!(bye.from.tag(), call.to_tag.as_deref());
    assert_eq!(
        events(&mut ep),
        vec![Event::CallEnded {
            call: call.handle,
            reason: EndReason::LocalHangup
        }]
    );
    // Timer E retransmits until a response arrives.
    let resent = run_until(&mut ep, &mut now, start + Duration::from_millis(1600));
    let times: Vec<u128> = resent.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(times, vec![500, 1500]);
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        bye.top_via(),
        bye.headers.first("From").unwrap_or_default(),
        bye.headers.first("To").unwrap_or_default(),
        bye.call_id,
        bye.cseq
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, ok.as_bytes());
    let later = run_until(&mut ep, &mut now, start + Duration::from_secs(40));
    assert!(later.is_empty(), "the 200 stops Timer E: {later:?}");
    assert_eq!(
        ep.transaction_count().1,
        0,
        "Timer K removed the client transaction"
    );
}

#[test]
fn bye_from_switch_times_out_with_timer_f() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let call = established(&mut ep, now);
    ep.hangup(now, call.handle).expect("hang up");
    drain(&mut ep);
    let resent = run_until(&mut ep, &mut now, start + Duration::from_secs(40));
    let times: Vec<u128> = resent.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(
        times,
        vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(ep.transaction_count(), (0, 0));
}

#[test]
fn hangup_before_ack_waits_for_ack() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = invite(&mut ep, now);
    answer(&mut ep, now, &mut call);
    ep.hangup(now, call.handle).expect("hang up");
    assert!(drain(&mut ep).is_empty(), "no BYE before the ACK");
    let a = ack(&mut call);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &a);
    let sent = drain(&mut ep);
    assert!(sent[0].bytes.starts_with(b"BYE "));
}

#[test]
fn reinvite_glare_gets_491() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = invite(&mut ep, now);
    answer(&mut ep, now, &mut call);
    // A re-INVITE while our 2xx is still un-ACKed: an INVITE transaction is in progress.
    call.uac.cseq += 1;
    let early = in_dialog(
        &mut call,
        "INVITE",
        SDP,
        &["Content-Type: application/sdp".to_string()],
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &early);
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    call.uac.cseq -= 1;
    let a = ack(&mut call);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &a);
    events(&mut ep);
    // A proper re-INVITE is surfaced; a second one before we answer gets 491.
    call.uac.cseq += 2;
    let re = in_dialog(
        &mut call,
        "INVITE",
        SDP,
        &["Content-Type: application/sdp".to_string()],
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &re);
    assert_eq!(statuses(&drain(&mut ep)), vec![100]);
    assert!(matches!(
        events(&mut ep).as_slice(),
        [Event::ReInvite { body: Some(_), .. }]
    ));
    call.uac.cseq += 1;
    let glare = in_dialog(
        &mut call,
        "INVITE",
        SDP,
        &["Content-Type: application/sdp".to_string()],
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &glare);
    assert_eq!(statuses(&drain(&mut ep)), vec![491]);
    ep.answer(now, call.handle, sdp_body())
        .expect("answer the re-INVITE");
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
}

#[test]
fn in_dialog_options_and_info() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut call = established(&mut ep, now);
    call.uac.cseq += 1;
    let info = in_dialog(
        &mut call,
        "INFO",
        b"Signal=5\r\nDuration=160\r\n",
        &["Content-Type: application/dtmf-relay".to_string()],
    );
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &info);
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert!(
        matches!(events(&mut ep).as_slice(), [Event::Info { body: Some(b), .. }] if b.content_type == "application/dtmf-relay")
    );
    call.uac.cseq += 1;
    let options = in_dialog(&mut call, "OPTIONS", b"", &[]);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &options);
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    // CSeq going backwards is out of order (RFC 3261 12.2.2).
    call.uac.cseq = 1;
    let old = in_dialog(&mut call, "OPTIONS", b"", &[]);
    ep.handle_datagram(now, call.uac.addr, Transport::Udp, &old);
    assert_eq!(statuses(&drain(&mut ep)), vec![500]);
}

#[test]
fn merged_request_gets_482() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    let mut uac = Uac::new("alice", "wonderland", "203.0.113.5:5062");
    let first = uac.request(
        "INVITE",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[],
        b"",
    );
    let second = uac.request(
        "INVITE",
        "sip:5555@192.0.2.1",
        "<sip:5555@192.0.2.1>",
        &[],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &first);
    ep.handle_datagram(now, uac.addr, Transport::Udp, &second);
    assert_eq!(statuses(&drain(&mut ep)), vec![100, 482]);
}

#[test]
fn invite_is_challenged_and_authenticated_user_reported() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("1000", "secret1000", "203.0.113.9:5060");
    let first = uac.request(
        "INVITE",
        "sip:9196@192.0.2.1",
        "<sip:9196@192.0.2.1>",
        &[],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &first);
    let sent = drain(&mut ep);
    assert_eq!(statuses(&sent), vec![401]);
    let auth = uac.authorization(&response(&sent[0]), "INVITE", "sip:9196@192.0.2.1");
    uac.cseq += 1;
    let second = uac.request(
        "INVITE",
        "sip:9196@192.0.2.1",
        "<sip:9196@192.0.2.1>",
        &[auth],
        b"",
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &second);
    assert_eq!(statuses(&drain(&mut ep)), vec![100]);
    let ev = events(&mut ep);
    let Some(Event::IncomingCall(ic)) = ev.first() else {
        panic!("{ev:?}")
    };
    assert_eq!(ic.authenticated_user.as_deref(), Some("1000"));
    assert_eq!(ic.user.as_deref(), Some("9196"));
}

#[test]
fn responses_follow_rport_and_received() {
    let now = t0();
    let mut ep = Endpoint::new(open_config(), now);
    // Via says 10.0.0.5:5062 (behind NAT); the datagram came from 198.51.100.20:40001.
    let nat = addr("198.51.100.20:40001");
    let with_rport = b"OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKr1;rport\r\nFrom: <sip:alice@192.0.2.1>;tag=a\r\nTo: <sip:192.0.2.1>\r\nCall-ID: r1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    ep.handle_datagram(now, nat, Transport::Udp, with_rport);
    let sent = drain(&mut ep);
    assert_eq!(
        sent[0].destination, nat,
        "RFC 3581: reply to the source port"
    );
    let via = response(&sent[0]).via[0].clone();
    assert_eq!(
        via.param("rport").and_then(|p| p.value.clone()).as_deref(),
        Some("40001")
    );
    assert_eq!(
        via.param("received")
            .and_then(|p| p.value.clone())
            .as_deref(),
        Some("198.51.100.20")
    );
    let without = String::from_utf8_lossy(with_rport)
        .replace(";rport", "")
        .replace("z9hG4bKr1", "z9hG4bKr2");
    ep.handle_datagram(now, nat, Transport::Udp, without.as_bytes());
    let sent = drain(&mut ep);
    assert_eq!(
        sent[0].destination,
        addr("198.51.100.20:5062"),
        "RFC 3261 18.2.2: received IP, Via port"
    );
}

#[test]
fn options_ping_reports_completion_and_timeout() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(open_config(), now);
    let phone = addr("203.0.113.5:5062");
    let h = ep
        .send_options(now, phone, Transport::Udp, "sip:alice@203.0.113.5:5062")
        .expect("valid URI");
    let sent = drain(&mut ep);
    let req = request(&sent[0]);
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=p\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        req.top_via(),
        req.headers.first("From").unwrap_or_default(),
        req.headers.first("To").unwrap_or_default(),
        req.call_id,
        req.cseq
    );
    ep.handle_datagram(now, phone, Transport::Udp, ok.as_bytes());
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestCompleted {
            request: h,
            status: Some(200)
        }]
    );
    let h2 = ep
        .send_options(now, phone, Transport::Udp, "sip:alice@203.0.113.5:5062")
        .expect("valid URI");
    run_until(&mut ep, &mut now, start + Duration::from_secs(33));
    assert_eq!(
        events(&mut ep),
        vec![Event::RequestCompleted {
            request: h2,
            status: None
        }]
    );
    assert!(ep
        .send_options(now, phone, Transport::Udp, "mailto:x@y")
        .is_err());
}
