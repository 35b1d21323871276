//! SDP offer/answer against a corpus: real offers from baresip, linphone and Zoiper
//! plus hand-made edge cases in fixtures/sdp, each with a checked-in snapshot of our
//! answer (or the error) under two codec preferences. `UPDATE_EXPECT=1 cargo test`
//! rewrites the snapshots.

use expect_test::expect_file;
use sofia_media::{negotiate, CodecKind, Direction, MediaConfig, NegotiationError, SdpSession};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/sdp")
}

fn config(codecs: &[CodecKind]) -> MediaConfig {
    MediaConfig::new(
        codecs.to_vec(),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
        16384,
    )
}

fn describe(offer: &[u8], codecs: &[CodecKind]) -> String {
    match negotiate(offer, &config(codecs)) {
        Ok(n) => {
            let answer = String::from_utf8(n.answer_sdp).expect("answers are UTF-8");
            assert!(
                !answer.replace("\r\n", "").contains('\n') && answer.ends_with("\r\n"),
                "answer lines end in CRLF"
            );
            let p = n.params;
            format!(
                "codec: {:?} pt {} {}/{}\ntelephone-event: {:?}\nremote rtp: {}\nremote rtcp: {}\nrtcp-mux: {}\ndirection: {:?}\nptime: {} (remote {:?})\n--- answer\n{}",
                p.codec,
                p.payload_type,
                p.clock_rate,
                p.channels,
                p.telephone_event.map(|t| (t.payload_type, t.clock_rate)),
                p.remote_rtp,
                p.remote_rtcp,
                p.rtcp_mux,
                p.direction,
                p.ptime_ms,
                p.remote_ptime_ms,
                answer.replace("\r\n", "\n"),
            )
        }
        Err(e) => format!(
            "error: {}\nnot acceptable (488): {}\n",
            e.to_string().escape_debug(),
            e.is_not_acceptable()
        ),
    }
}

fn check(path: &Path) {
    let offer = std::fs::read(path).expect("fixture is readable");
    let mut out = String::new();
    for (label, codecs) in [
        (
            "prefer PCMU, PCMA, opus",
            &[CodecKind::Pcmu, CodecKind::Pcma, CodecKind::Opus][..],
        ),
        ("prefer opus, PCMA", &[CodecKind::Opus, CodecKind::Pcma][..]),
    ] {
        out.push_str(&format!("=== {label}\n"));
        out.push_str(&describe(&offer, codecs));
    }
    let snapshot = path.with_extension("expected");
    expect_file![snapshot].assert_eq(&out);
}

#[test]
fn sdp_corpus_answers_match_snapshots() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("fixtures/sdp exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sdp"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 20, "corpus has {} offers", paths.len());
    for path in paths {
        check(&path);
    }
}

fn offer(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(name)).expect("fixture exists")
}

#[test]
fn no_common_codec_is_not_acceptable() {
    let err = negotiate(
        &offer("edge-no-common-codec.sdp"),
        &config(&[CodecKind::Pcmu]),
    )
    .expect_err("GSM and G729 only");
    assert!(matches!(err, NegotiationError::NoCommonCodec));
    assert!(err.is_not_acceptable());
    let err = negotiate(b"garbage", &config(&[CodecKind::Pcmu])).expect_err("not SDP");
    assert!(!err.is_not_acceptable());
}

#[test]
fn linphone_answer_has_exactly_one_telephone_event_at_codec_rate() {
    for (codec, rate) in [(CodecKind::Opus, 48_000), (CodecKind::Pcmu, 8_000)] {
        let n = negotiate(&offer("linphonec-5.1.65.sdp"), &config(&[codec])).unwrap();
        let answer = String::from_utf8(n.answer_sdp).unwrap();
        let events: Vec<&str> = answer
            .lines()
            .filter(|l| l.contains("telephone-event"))
            .collect();
        assert_eq!(events.len(), 1, "{answer}");
        assert!(
            events[0].contains(&format!("telephone-event/{rate}")),
            "{answer}"
        );
    }
}

#[test]
fn hold_and_resume_directions_and_session_version() {
    let mut session = SdpSession::new(config(&[CodecKind::Pcmu]), 42);
    let first = session.negotiate(&offer("baresip-1.0.0-g711.sdp")).unwrap();
    assert_eq!(first.params.direction, Direction::SendRecv);
    let v0 = session.version();

    // The same offer again (a session refresh) changes nothing: same version.
    session.negotiate(&offer("baresip-1.0.0-g711.sdp")).unwrap();
    assert_eq!(session.version(), v0);

    // The peer holds us: sendonly -> we answer recvonly, and the version moves on.
    let held = session.negotiate(&offer("edge-sendonly-hold.sdp")).unwrap();
    assert_eq!(held.params.direction, Direction::RecvOnly);
    assert!(String::from_utf8_lossy(&held.answer_sdp).contains("a=recvonly"));
    assert_eq!(session.version(), v0 + 1);
    assert!(String::from_utf8_lossy(&held.answer_sdp)
        .contains(&format!("o=sofia 42 {} IN IP4", v0 + 1)));

    // Resume.
    let resumed = session.negotiate(&offer("baresip-1.0.0-g711.sdp")).unwrap();
    assert_eq!(resumed.params.direction, Direction::SendRecv);
    assert_eq!(session.version(), v0 + 2);

    // We hold the peer with a re-offer: sendonly, version increments again.
    session.set_direction(Direction::SendOnly);
    let reoffer = String::from_utf8(session.create_offer()).unwrap();
    assert!(reoffer.contains("a=sendonly"), "{reoffer}");
    assert_eq!(session.version(), v0 + 3);
}

#[test]
fn late_offer_then_answer_in_ack() {
    let mut session = SdpSession::new(
        config(&[CodecKind::Opus, CodecKind::Pcmu, CodecKind::Pcma]),
        7,
    );
    assert!(matches!(
        session.handle_answer(&offer("baresip-1.0.0-g711.sdp")),
        Err(NegotiationError::AnswerWithoutOffer)
    ));
    let ours = String::from_utf8(session.create_offer()).unwrap();
    assert!(
        ours.contains("m=audio 16384 RTP/AVP 96 0 8 101 102\r\n"),
        "{ours}"
    );
    assert!(ours.contains("a=rtpmap:96 opus/48000/2\r\n"), "{ours}");
    assert!(
        ours.contains("a=rtpmap:102 telephone-event/48000\r\n"),
        "{ours}"
    );
    // The peer answers with PCMA only and an 8 kHz telephone-event.
    let answer = "v=0\r\no=- 5 5 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4002 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n";
    let params = session.handle_answer(answer.as_bytes()).unwrap();
    assert_eq!(params.codec, CodecKind::Pcma);
    assert_eq!(params.payload_type, 8);
    assert_eq!(params.telephone_event.map(|t| t.payload_type), Some(101));
    assert_eq!(params.remote_rtp, "198.51.100.7:4002".parse().unwrap());
    assert!(params.rtcp_mux);
    assert_eq!(params.remote_rtcp, params.remote_rtp);
    // An answer is consumed once.
    assert!(session.handle_answer(answer.as_bytes()).is_err());
}

#[test]
fn offered_direction_says_what_the_offerer_asks_for() {
    use sofia_media::offered_direction;
    let asked = |name: &str| offered_direction(&offer(name)).unwrap();
    assert_eq!(asked("baresip-1.0.0-g711.sdp"), Direction::SendRecv);
    assert_eq!(asked("edge-sendonly-hold.sdp"), Direction::SendOnly);
    // RFC 2543 hold: c=0.0.0.0.
    assert_eq!(asked("edge-c-zero-hold.sdp"), Direction::SendOnly);
    assert_eq!(asked("edge-inactive.sdp"), Direction::Inactive);
    assert!(offered_direction(b"garbage").is_err());
}
