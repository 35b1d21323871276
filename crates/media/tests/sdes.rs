//! SRTP keys negotiated with SDES (RFC 4568): `a=crypto` in offers and answers under
//! each SRTP policy, RTP/SAVP versus best-effort RTP/AVP with crypto, and the lines we
//! cannot use (other suites, MKI).

use std::net::{IpAddr, Ipv4Addr};

use sofia_media::{CodecKind, MediaConfig, SdpSession, SrtpPolicy};

const OURS: [u8; 30] = [7; 30];
/// "theirs-key-material-30-bytes!!" as base64: 30 bytes.
const THEIRS_B64: &str = "dGhlaXJzLWtleS1tYXRlcmlhbC0zMC1ieXRlcyEh";

fn session(policy: SrtpPolicy) -> SdpSession {
    let config = MediaConfig::new(
        vec![CodecKind::Pcmu],
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        16384,
    )
    .with_srtp(policy, OURS);
    SdpSession::new(config, 1)
}

fn offer(proto: &str, crypto: &[&str]) -> Vec<u8> {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    for c in crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s.into_bytes()
}

fn theirs() -> String {
    format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIRS_B64}")
}

#[test]
fn a_savp_offer_is_answered_with_our_key_under_its_tag() {
    let mut sdp = session(SrtpPolicy::Optional);
    let crypto = format!("5 AES_CM_128_HMAC_SHA1_80 inline:{THEIRS_B64}|2^20");
    let n = sdp.negotiate(&offer("RTP/SAVP", &[&crypto])).unwrap();
    let answer = String::from_utf8(n.answer_sdp).unwrap();
    assert!(answer.contains("m=audio 16384 RTP/SAVP 0"), "{answer}");
    assert!(
        answer.contains(
            "a=crypto:5 AES_CM_128_HMAC_SHA1_80 inline:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcH"
        ),
        "{answer}"
    );
    let keys = n.params.srtp.expect("SRTP agreed");
    assert_eq!(keys.local, OURS);
    assert_eq!(&keys.remote, b"theirs-key-material-30-bytes!!");
    assert_eq!(format!("{keys:?}"), "SrtpKeys(..)", "keys stay out of logs");
}

#[test]
fn a_best_effort_offer_gets_srtp_in_kind_and_a_plain_one_plain_rtp() {
    let mut sdp = session(SrtpPolicy::Optional);
    let n = sdp.negotiate(&offer("RTP/AVP", &[&theirs()])).unwrap();
    let answer = String::from_utf8(n.answer_sdp).unwrap();
    assert!(
        answer.contains("RTP/AVP 0") && answer.contains("a=crypto:1 "),
        "{answer}"
    );
    assert!(n.params.srtp.is_some());
    let n = session(SrtpPolicy::Optional)
        .negotiate(&offer("RTP/AVP", &[]))
        .unwrap();
    assert!(!String::from_utf8(n.answer_sdp).unwrap().contains("crypto"));
    assert!(n.params.srtp.is_none());
}

#[test]
fn required_refuses_plain_offers_and_off_refuses_savp() {
    let e = session(SrtpPolicy::Required)
        .negotiate(&offer("RTP/AVP", &[]))
        .unwrap_err();
    assert!(e.is_not_acceptable(), "{e}");
    let e = session(SrtpPolicy::Off)
        .negotiate(&offer("RTP/SAVP", &[&theirs()]))
        .unwrap_err();
    assert!(e.is_not_acceptable(), "{e}");
    // Off ignores crypto in a best-effort offer: plain RTP.
    let n = session(SrtpPolicy::Off)
        .negotiate(&offer("RTP/AVP", &[&theirs()]))
        .unwrap();
    assert!(n.params.srtp.is_none());
    assert!(!String::from_utf8(n.answer_sdp).unwrap().contains("crypto"));
}

#[test]
fn lines_we_cannot_use_are_skipped() {
    let other_suite = format!("1 AES_CM_128_HMAC_SHA1_32 inline:{THEIRS_B64}");
    let with_mki = format!("2 AES_CM_128_HMAC_SHA1_80 inline:{THEIRS_B64}|2^20|1:4");
    let short_key = "3 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=".to_string();
    let e = session(SrtpPolicy::Optional)
        .negotiate(&offer("RTP/SAVP", &[&other_suite, &with_mki, &short_key]))
        .unwrap_err();
    assert!(e.is_not_acceptable(), "{e}");
    // The usable line among them is taken.
    let n = session(SrtpPolicy::Optional)
        .negotiate(&offer("RTP/SAVP", &[&other_suite, &theirs()]))
        .unwrap();
    assert!(String::from_utf8(n.answer_sdp)
        .unwrap()
        .contains("a=crypto:1 "));
}

#[test]
fn our_offers_follow_the_policy_and_answers_must_keep_their_side() {
    let mut sdp = session(SrtpPolicy::Required);
    let ours = String::from_utf8(sdp.create_offer()).unwrap();
    assert!(
        ours.contains("RTP/SAVP") && ours.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{ours}"
    );
    let plain_answer = offer("RTP/SAVP", &[]);
    assert!(sdp.handle_answer(&plain_answer).is_err());
    let mut sdp = session(SrtpPolicy::Required);
    sdp.create_offer();
    let params = sdp.handle_answer(&offer("RTP/SAVP", &[&theirs()])).unwrap();
    assert_eq!(
        &params.srtp.unwrap().remote,
        b"theirs-key-material-30-bytes!!"
    );
    let mut sdp = session(SrtpPolicy::Optional);
    let ours = String::from_utf8(sdp.create_offer()).unwrap();
    assert!(
        ours.contains("RTP/AVP") && ours.contains("a=crypto:"),
        "{ours}"
    );
    let params = sdp.handle_answer(&offer("RTP/AVP", &[])).unwrap();
    assert!(
        params.srtp.is_none(),
        "a plain answer to a best-effort offer is plain RTP"
    );
    let ours = String::from_utf8(session(SrtpPolicy::Off).create_offer()).unwrap();
    assert!(!ours.contains("crypto") && ours.contains("RTP/AVP"));
}
