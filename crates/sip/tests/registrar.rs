//! Virtual-time scenarios for REGISTER, digest authentication and source blocking,
//! plus the out-of-dialog methods a softphone sends after registering.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sofia_sip::{BlockAction, DigestAlgorithm, Endpoint, Event, Response, Transport};

/// Sends `bytes` and returns the single response.
fn send(ep: &mut Endpoint, now: Instant, source: std::net::SocketAddr, bytes: &[u8]) -> Response {
    ep.handle_datagram(now, source, Transport::Udp, bytes);
    let sent = drain(ep);
    assert_eq!(sent.len(), 1, "exactly one response expected");
    response(&sent[0])
}

trait Register {
    fn register(&mut self, extra: &[String]) -> Vec<u8>;
}

impl Register for Uac {
    fn register(&mut self, extra: &[String]) -> Vec<u8> {
        self.cseq += 1;
        let to = format!("<sip:{}@{SWITCH}>", self.user);
        self.request("REGISTER", &format!("sip:{SWITCH}"), &to, extra, b"")
    }
}

fn contact(uac: &Uac, params: &str) -> String {
    format!("Contact: <sip:{}@{}>{params}", uac.user, uac.addr)
}

/// Registers with a challenge round trip; returns the 200 and the challenge used.
fn register_with_auth(
    ep: &mut Endpoint,
    now: Instant,
    uac: &mut Uac,
    extra: &[String],
) -> (Response, Response) {
    let challenge = send(ep, now, uac.addr, &uac.register(extra));
    assert_eq!(challenge.status, 401);
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    let mut with_auth = extra.to_vec();
    with_auth.push(auth);
    let ok = send(ep, now, uac.addr, &uac.register(&with_auth));
    (ok, challenge)
}

fn nonce_of(r: &Response) -> String {
    let www = r.headers.first("WWW-Authenticate").expect("challenge");
    let start = www.find("nonce=\"").expect("nonce") + 7;
    www[start..start + www[start..].find('"').expect("quote")].to_string()
}

#[test]
fn register_with_auth_stores_binding_with_source() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let extra = [contact(&uac, ""), "Expires: 120".to_string()];
    let (ok, _) = register_with_auth(&mut ep, now, &mut uac, &extra);
    assert_eq!(ok.status, 200);
    assert!(ok
        .headers
        .first("Contact")
        .expect("bindings listed")
        .contains("expires=120"));
    let b = ep.bindings(now, "alice");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].source, uac.addr);
    assert_eq!(b[0].transport, Transport::Udp);
    assert!(events(&mut ep).contains(&Event::BindingsChanged {
        aor: "alice".to_string()
    }));
}

#[test]
fn registration_refresh_and_expiry() {
    let mut now = t0();
    let start = now;
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let c = contact(&uac, "");
    let (ok, challenge) = register_with_auth(
        &mut ep,
        now,
        &mut uac,
        &[c.clone(), "Expires: 60".to_string()],
    );
    assert_eq!(ok.status, 200);
    // Refresh at 50 s re-using the nonce with nc=2, as linphone and Zoiper do.
    now = start + Duration::from_secs(50);
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    assert!(auth.contains("nc=00000002"));
    let ok = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[c, "Expires: 60".to_string(), auth]),
    );
    assert_eq!(ok.status, 200);
    now = start + Duration::from_secs(105);
    ep.handle_timeout(now);
    assert_eq!(
        ep.bindings(now, "alice").len(),
        1,
        "refreshed binding lives until 110 s"
    );
    events(&mut ep);
    now = start + Duration::from_secs(125);
    run_until(&mut ep, &mut now, start + Duration::from_secs(125));
    assert!(ep.bindings(now, "alice").is_empty(), "expired");
    assert!(events(&mut ep).contains(&Event::BindingsChanged {
        aor: "alice".to_string()
    }));
}

#[test]
fn stale_nonce_gets_stale_true() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let challenge = send(&mut ep, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    assert!(!challenge
        .headers
        .first("WWW-Authenticate")
        .unwrap_or_default()
        .contains("stale"));
    let later = now + Duration::from_secs(301);
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    let r = send(
        &mut ep,
        later,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth]),
    );
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .first("WWW-Authenticate")
        .unwrap_or_default()
        .contains("stale=true"));
    assert_ne!(nonce_of(&r), nonce_of(&challenge), "a fresh nonce");
}

#[test]
fn nonce_from_before_a_restart_is_stale_not_failed() {
    let now = t0();
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let mut old = Endpoint::new(config(), now);
    let challenge = send(&mut old, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    let mut cfg = config();
    cfg.seed = [9; 32];
    let mut restarted = Endpoint::new(cfg, now);
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    let r = send(
        &mut restarted,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth]),
    );
    assert!(r
        .headers
        .first("WWW-Authenticate")
        .unwrap_or_default()
        .contains("stale=true"));
}

#[test]
fn nc_replay_rejected() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let challenge = send(&mut ep, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    let ok = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth.clone()]),
    );
    assert_eq!(ok.status, 200);
    // The same Authorization (nc=1) on a new transaction is a replay.
    let replay = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth]),
    );
    assert_eq!(replay.status, 401);
}

#[test]
fn sha256_digest_is_accepted() {
    let now = t0();
    let mut cfg = config();
    cfg.auth.algorithms = vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5];
    let mut ep = Endpoint::new(cfg, now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let challenge = send(&mut ep, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    let offered: Vec<&str> = challenge.headers.all("WWW-Authenticate").collect();
    assert_eq!(offered.len(), 2);
    assert!(offered[0].contains("algorithm=SHA-256"));
    let auth = uac.authorization_for(
        "sofia.test",
        &nonce_of(&challenge),
        DigestAlgorithm::Sha256,
        "REGISTER",
        &format!("sip:{SWITCH}"),
    );
    let ok = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth]),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn unknown_user_and_wrong_password_look_identical() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let answer = |ep: &mut Endpoint, user: &str, password: &str| {
        let mut uac = Uac::new(user, password, "198.51.100.4:40000");
        // Both register as alice's AOR, so the challenge realm is the same.
        uac.cseq += 1;
        let req = uac.request(
            "REGISTER",
            &format!("sip:{SWITCH}"),
            &format!("<sip:alice@{SWITCH}>"),
            &[],
            b"",
        );
        let challenge = send(ep, now, uac.addr, &req);
        let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
        uac.cseq += 1;
        let req = uac.request(
            "REGISTER",
            &format!("sip:{SWITCH}"),
            &format!("<sip:alice@{SWITCH}>"),
            &[auth],
            b"",
        );
        ep.handle_datagram(now, uac.addr, Transport::Udp, &req);
        let sent = drain(ep);
        assert_eq!(sent.len(), 1);
        let r = response(&sent[0]);
        let nonce = nonce_of(&r);
        let tag = r.to.tag().unwrap_or_default().to_string();
        // Mask what legitimately differs per request: user-chosen ids, nonce, tag.
        String::from_utf8_lossy(&sent[0].bytes)
            .replace(&nonce, "NONCE")
            .replace(&tag, "TAG")
            .replace(&format!("-{user}-"), "-USER-")
            .replace(&format!("<sip:{user}@{SWITCH}>;tag={user}-tag"), "FROM")
            .replace(&format!("{user}-call-1"), "CALL-ID")
    };
    let unknown = answer(&mut ep, "mallory", "guess");
    let wrong = answer(&mut ep, "alice", "guess");
    assert!(unknown.starts_with("SIP/2.0 401"));
    assert_eq!(unknown, wrong);
}

#[test]
fn failed_auth_source_gets_blocked() {
    let now = t0();
    let mut cfg = config();
    cfg.auth.block_threshold = 3;
    cfg.auth.block_duration = Duration::from_secs(60);
    let mut ep = Endpoint::new(cfg, now);
    let mut attacker = Uac::new("alice", "password123", "203.0.113.66:5070");
    attacker.call_id = "scanner".to_string();
    for _ in 0..3 {
        let challenge = send(&mut ep, now, attacker.addr, &attacker.register(&[]));
        assert_eq!(challenge.status, 401);
        let auth = attacker.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
        let r = send(&mut ep, now, attacker.addr, &attacker.register(&[auth]));
        assert_eq!(r.status, 401);
    }
    let blocked = send(&mut ep, now, attacker.addr, &attacker.register(&[]));
    assert_eq!(blocked.status, 403);
    // Another source with the right password is unaffected.
    let mut alice = Uac::new("alice", "wonderland", "198.51.100.4:40000");
    let extra = [contact(&alice, "")];
    let (ok, _) = register_with_auth(&mut ep, now, &mut alice, &extra);
    assert_eq!(ok.status, 200);
    // The block lifts after block_duration.
    let later = now + Duration::from_secs(61);
    let r = send(&mut ep, later, attacker.addr, &attacker.register(&[]));
    assert_eq!(r.status, 401);
}

#[test]
fn blocked_source_can_be_dropped_silently() {
    let now = t0();
    let mut cfg = config();
    cfg.auth.block_threshold = 1;
    cfg.auth.block_action = BlockAction::Drop;
    let mut ep = Endpoint::new(cfg, now);
    let mut attacker = Uac::new("alice", "nope", "203.0.113.66:5070");
    let challenge = send(&mut ep, now, attacker.addr, &attacker.register(&[]));
    let auth = attacker.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    send(&mut ep, now, attacker.addr, &attacker.register(&[auth]));
    ep.handle_datagram(now, attacker.addr, Transport::Udp, &attacker.register(&[]));
    assert!(drain(&mut ep).is_empty());
}

fn open_registrar() -> sofia_sip::Config {
    let mut c = config();
    c.auth_register = false;
    c
}

#[test]
fn register_with_contact_expires_param() {
    // baresip 1.0.0 puts the expiry in the Contact parameter and unregisters with
    // ;expires=0 (fixtures/softphones/baresip-1.0.0).
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let dir = fixtures().join("softphones/baresip-1.0.0");
    let source = addr("127.0.0.1:5062");
    let first = std::fs::read(dir.join("001-REGISTER.sip")).expect("fixture");
    ep.handle_datagram(now, source, Transport::Udp, &first);
    let r = response(&drain(&mut ep)[0]);
    assert_eq!(r.status, 200);
    let c = r.headers.first("Contact").expect("binding listed");
    assert!(c.contains("sip:alice-0x55fcfcac5e30@127.0.0.1:5062"));
    assert!(c.contains("expires=60"), "{c}");
    assert!(c.contains("+sip.instance"));
    let b = ep.bindings(now, "alice");
    assert_eq!(b[0].expires_in(now), Duration::from_secs(60));
    let last = std::fs::read(dir.join("009-REGISTER.sip")).expect("fixture");
    assert!(String::from_utf8_lossy(&last).contains("expires=0"));
    ep.handle_datagram(now, source, Transport::Udp, &last);
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    assert!(
        ep.bindings(now, "alice").is_empty(),
        "unregistered by ;expires=0"
    );
}

#[test]
fn unregister_with_star() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    for port in [1, 2] {
        let c = format!("Contact: <sip:alice@10.0.0.{port}>");
        assert_eq!(
            send(&mut ep, now, uac.addr, &uac.register(&[c])).status,
            200
        );
    }
    assert_eq!(ep.bindings(now, "alice").len(), 2);
    let bad = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&["Contact: *".to_string(), "Expires: 60".to_string()]),
    );
    assert_eq!(bad.status, 400, "wildcard needs Expires: 0");
    let ok = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&["Contact: *".to_string(), "Expires: 0".to_string()]),
    );
    assert_eq!(ok.status, 200);
    assert!(ok.headers.first("Contact").is_none());
    assert!(ep.bindings(now, "alice").is_empty());
}

#[test]
fn query_without_contact_lists_bindings() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ";expires=300")]),
    );
    events(&mut ep);
    let q = send(&mut ep, now, uac.addr, &uac.register(&[]));
    assert_eq!(q.status, 200);
    assert_eq!(q.headers.all("Contact").count(), 1);
    assert!(events(&mut ep).is_empty(), "a query changes nothing");
}

#[test]
fn binding_cap_evicts_oldest() {
    let now = t0();
    let mut cfg = open_registrar();
    cfg.registrar.max_bindings_per_aor = 2;
    let mut ep = Endpoint::new(cfg, now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    for (i, rinstance) in ["aaa", "bbb", "ccc"].iter().enumerate() {
        // Zoiper after restarts: new rinstance, new Call-ID, same phone.
        uac.call_id = format!("zoiper-{i}");
        let c = format!("Contact: <sip:alice@10.0.0.7:5060;rinstance={rinstance}>");
        assert_eq!(
            send(
                &mut ep,
                now + Duration::from_secs(i as u64),
                uac.addr,
                &uac.register(&[c])
            )
            .status,
            200
        );
    }
    let b = ep.bindings(now, "alice");
    let contacts: Vec<&str> = b.iter().map(|b| b.contact.as_str()).collect();
    assert_eq!(
        contacts,
        vec![
            "sip:alice@10.0.0.7:5060;rinstance=bbb",
            "sip:alice@10.0.0.7:5060;rinstance=ccc"
        ]
    );
}

#[test]
fn sip_instance_replaces_binding() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let inst = ";+sip.instance=\"<urn:uuid:f6129b11-ac67-00fd-b293-430330437f11>\";reg-id=1";
    send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[format!("Contact: <sip:alice@10.0.0.1:5060>{inst}")]),
    );
    uac.call_id = "after-restart".to_string();
    send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[format!("Contact: <sip:alice@10.0.0.2:6000>{inst}")]),
    );
    let b = ep.bindings(now, "alice");
    assert_eq!(b.len(), 1, "same instance and reg-id replace the binding");
    assert_eq!(b[0].contact, "sip:alice@10.0.0.2:6000");
}

#[test]
fn interval_too_brief_gets_423_with_min_expires() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let r = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ";expires=10")]),
    );
    assert_eq!(r.status, 423);
    assert_eq!(r.headers.first("Min-Expires"), Some("60"));
    let r = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), "Expires: 999999".to_string()]),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.headers
            .first("Contact")
            .unwrap_or_default()
            .contains("expires=3600"),
        "capped at max"
    );
}

#[test]
fn out_of_order_register_gets_500() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    uac.cseq = 10;
    send(&mut ep, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    uac.cseq = 5;
    let r = send(&mut ep, now, uac.addr, &uac.register(&[contact(&uac, "")]));
    assert_eq!(r.status, 500);
}

#[test]
fn register_for_another_users_aor_is_forbidden() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("1000", "secret1000", "198.51.100.4:40000");
    uac.cseq += 1;
    let req = uac.request(
        "REGISTER",
        &format!("sip:{SWITCH}"),
        &format!("<sip:alice@{SWITCH}>"),
        &[],
        b"",
    );
    let challenge = send(&mut ep, now, uac.addr, &req);
    let auth = uac.authorization(&challenge, "REGISTER", &format!("sip:{SWITCH}"));
    uac.cseq += 1;
    let req = uac.request(
        "REGISTER",
        &format!("sip:{SWITCH}"),
        &format!("<sip:alice@{SWITCH}>"),
        &[auth],
        b"",
    );
    assert_eq!(send(&mut ep, now, uac.addr, &req).status, 403);
}

#[test]
fn snapshot_survives_restart() {
    let now = t0();
    let mut ep = Endpoint::new(open_registrar(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ";expires=600")]),
    );
    let snap = ep.registrar_snapshot(now, 1_700_000_000);
    let json = serde_json::to_string(&snap).expect("serialise");
    let back: sofia_sip::RegistrarSnapshot = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, snap);
    // Restarted 100 s later on the wall clock.
    let later = t0();
    let mut restarted = Endpoint::new(open_registrar(), later);
    restarted.restore_registrar(later, 1_700_000_100, &back);
    let b = restarted.bindings(later, "alice");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].expires_in(later), Duration::from_secs(500));
    assert_eq!(b[0].source, uac.addr);
    // Expired entries are not restored.
    let mut late = Endpoint::new(open_registrar(), later);
    late.restore_registrar(later, 1_700_000_700, &back);
    assert!(late.bindings(later, "alice").is_empty());
}

#[test]
fn options_gets_200_with_allow() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let r = send(
        &mut ep,
        now,
        uac.addr,
        &uac.request(
            "OPTIONS",
            &format!("sip:{SWITCH}"),
            &format!("<sip:{SWITCH}>"),
            &[],
            b"",
        ),
    );
    assert_eq!(r.status, 200);
    let allow = r.headers.first("Allow").expect("Allow");
    for m in ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER"] {
        assert!(allow.contains(m), "{m} in {allow}");
    }
    assert_eq!(r.headers.first("Accept"), Some("application/sdp"));
    assert!(r.headers.first("Supported").is_some());
    assert!(r.to.tag().is_some(), "RFC 3261 8.2.6.2: To tag added");
}

#[test]
fn unknown_method_gets_501_with_allow() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let r = send(
        &mut ep,
        now,
        uac.addr,
        &uac.request(
            "FROBNICATE",
            &format!("sip:{SWITCH}"),
            &format!("<sip:{SWITCH}>"),
            &[],
            b"",
        ),
    );
    assert_eq!(r.status, 501);
    assert!(r.headers.first("Allow").is_some());
}

#[test]
fn message_and_subscribe_are_answered() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let dir = fixtures().join("softphones/zoiper");
    for (file, status) in [
        ("zoiper_v2.10.20.4_MESSAGE.sip", 405),
        ("zoiper_win2.38_SUBSCRIBE_mwi.sip", 489),
    ] {
        let bytes = std::fs::read(dir.join(file)).expect("fixture");
        ep.handle_datagram(now, addr("192.168.31.142:50757"), Transport::Udp, &bytes);
        assert_eq!(statuses(&drain(&mut ep)), vec![status], "{file}");
    }
}

#[test]
fn keepalives_and_oversized_datagrams() {
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    ep.handle_datagram(now, addr("198.51.100.4:40000"), Transport::Udp, b"\r\n\r\n");
    assert!(drain(&mut ep).is_empty());
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let big = vec![b'x'; 70_000];
    let req = uac.request(
        "MESSAGE",
        &format!("sip:{SWITCH}"),
        &format!("<sip:{SWITCH}>"),
        &["Content-Type: text/plain".to_string()],
        &big,
    );
    ep.handle_datagram(now, uac.addr, Transport::Udp, &req);
    assert_eq!(statuses(&drain(&mut ep)), vec![513]);
}

#[test]
fn stream_framer_feeds_endpoint_and_reports_oversize() {
    use sofia_sip::{Frame, StreamFramer};
    let now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "", "198.51.100.4:40000");
    let opt = uac.request(
        "OPTIONS",
        &format!("sip:{SWITCH}"),
        &format!("<sip:{SWITCH}>"),
        &[],
        b"",
    );
    let mut framer = StreamFramer::new(1024);
    framer.push(b"\r\n\r\n");
    framer.push(&opt[..20]);
    assert_eq!(framer.pop(), Ok(Some(Frame::Ping)));
    assert_eq!(framer.pop(), Ok(None));
    framer.push(&opt[20..]);
    let Ok(Some(Frame::Message(m))) = framer.pop() else {
        panic!("a message")
    };
    ep.handle_message(now, uac.addr, Transport::Tcp, &m);
    assert_eq!(statuses(&drain(&mut ep)), vec![200]);
    let big = uac.request(
        "MESSAGE",
        &format!("sip:{SWITCH}"),
        &format!("<sip:{SWITCH}>"),
        &[],
        &[b'x'; 2000],
    );
    framer.push(&big);
    let err = framer.pop().expect_err("too large");
    ep.handle_framing_error(now, uac.addr, Transport::Tcp, &err);
    assert_eq!(statuses(&drain(&mut ep)), vec![513]);
}

/// RFC 3261 26.3.2.4: unauthenticated requests are challenged statelessly. The 401
/// leaves no transaction behind (a storm of them costs no memory), and a retransmitted
/// request is challenged again with the same To tag and a fresh nonce.
#[test]
fn challenge_leaves_no_transaction_and_answers_retransmissions_afresh() {
    let mut now = t0();
    let mut ep = Endpoint::new(config(), now);
    let mut uac = Uac::new("alice", "wonderland", "198.51.100.7:5060");
    let request = uac.register(&[contact(&uac, "")]);
    let first = send(&mut ep, now, uac.addr, &request);
    assert_eq!(first.status, 401);
    assert_eq!(ep.transaction_count(), (0, 0), "no state for a challenge");
    // Nothing is retransmitted: the phone retransmits if the 401 is lost.
    let until = now + Duration::from_secs(5);
    let later = run_until(&mut ep, &mut now, until);
    assert!(later.is_empty(), "the 401 is sent once: {later:?}");
    let again = send(&mut ep, now, uac.addr, &request);
    assert_eq!(again.status, 401);
    assert_eq!(again.to.tag(), first.to.tag(), "same request, same To tag");
    assert_ne!(nonce_of(&again), nonce_of(&first));
    // Either challenge can be answered.
    let auth = uac.authorization(&first, "REGISTER", &format!("sip:{SWITCH}"));
    let ok = send(
        &mut ep,
        now,
        uac.addr,
        &uac.register(&[contact(&uac, ""), auth]),
    );
    assert_eq!(ok.status, 200);
}
