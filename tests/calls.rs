//! Calls end to end: SIPp places calls with digest authentication over loopback while
//! the test itself sends and receives the RTP (SIPp's offer names the test's port).

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_sipp_ok, call_args, free_port, sipp, tone_share, Server};
use sofia_media::g711;

use common::USERS;

/// An even port P such that P and P+1 are free: the switch's whole RTP range, so each
/// call gets P and a second call can only start if the first freed it.
fn free_rtp_pair() -> u16 {
    loop {
        let p = free_port();
        let p = p - p % 2;
        if p >= 1024
            && UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
}

fn start(data: &Path, sip_port: u16, rtp: u16) -> Server {
    start_with_profile(data, sip_port, rtp, "sip-profiles/default.toml")
}

/// `serve` with `profile`, the users of [`USERS`] and the RTP pair at `rtp` only.
fn start_with_profile(data: &Path, sip_port: u16, rtp: u16, profile: &str) -> Server {
    let range = format!("{rtp}-{}", rtp + 1);
    let server = Server::start_with(
        data,
        sip_port,
        Some(USERS),
        Path::new(profile),
        &[("SOFIA_RTP_PORTS", &range)],
    );
    server.wait_for("listening for SIP on tcp");
    server
}

/// µ-law RTP packets of a 1 kHz tone, 20 ms each.
fn tone_packets(count: usize) -> Vec<Vec<u8>> {
    let mut phase = 0f32;
    (0..count)
        .map(|i| {
            let mut packet = vec![0x80, if i == 0 { 0x80 } else { 0x00 }];
            packet.extend_from_slice(&(i as u16).to_be_bytes());
            packet.extend_from_slice(&((i * 160) as u32).to_be_bytes());
            packet.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            for _ in 0..160 {
                let sample = (phase.sin() * 12000.0) as i16;
                phase += 2.0 * std::f32::consts::PI * 1000.0 / 8000.0;
                packet.push(g711::linear_to_mulaw(sample));
            }
            packet
        })
        .collect()
}

/// Sends a tone to the switch's RTP port for `seconds` at 20 ms pacing while a call is
/// up, and returns the decoded audio that came back.
fn talk_and_listen(socket: &UdpSocket, switch_rtp: u16, seconds: f32) -> Vec<f32> {
    socket
        .set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let packets = tone_packets((seconds * 50.0) as usize);
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    for (i, packet) in packets.iter().enumerate() {
        // Real-time pacing: this is the media clock of the simulated phone.
        let due = start + Duration::from_millis(20 * i as u64);
        while Instant::now() < due {
            if let Ok((n, _)) = socket.recv_from(&mut buf) {
                if n > 12 && buf[1] & 0x7f == 0 {
                    received.extend(
                        buf[12..n]
                            .iter()
                            .map(|&b| f32::from(g711::mulaw_to_linear(b)) / 32768.0),
                    );
                }
            }
        }
        let _ = socket.send_to(packet, ("127.0.0.1", switch_rtp));
    }
    received
}

#[test]
fn echo_call_returns_the_callers_tone_and_frees_its_ports() {
    echo_calls(false);
}

/// The phone is behind a NAT: its SDP names one port, its RTP comes from another. The
/// switch must send its media where the RTP really comes from (symmetric RTP).
#[test]
fn echo_reaches_a_phone_whose_sdp_port_is_wrong() {
    echo_calls(true);
}

fn echo_calls(nat: bool) {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start(data.path(), sip_port, rtp);
    for attempt in 0..2 {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        // Behind a NAT the advertised port is not the one the RTP leaves from; nothing
        // listens on the advertised one.
        let advertised = if nat {
            free_port()
        } else {
            phone.local_addr().unwrap().port()
        };
        let phone_port = advertised.to_string();
        let call = std::thread::spawn({
            let phone_port = phone_port.clone();
            move || {
                sipp(
                    "call.xml",
                    sip_port,
                    &call_args("9196", &phone_port, &["-d", "4000"]),
                )
            }
        });
        let heard = talk_and_listen(&phone, rtp, 3.5);
        let out = call.join().unwrap();
        assert_sipp_ok(&out, &format!("call {attempt} to 9196"));
        assert!(
            heard.len() > 8000,
            "call {attempt}: only {} samples came back",
            heard.len()
        );
        // Skip the start (silence before the echo arrives); judge the last second.
        let tail = &heard[heard.len() - 8000..];
        let share = tone_share(tail, 8000, 1000.0);
        assert!(
            share > 0.5,
            "call {attempt}: 1 kHz holds only {share:.2} of the echo"
        );
        assert!(tone_share(tail, 8000, 1700.0) < 0.05);
    }
    server.terminate();
}

#[test]
fn unknown_extension_gets_404() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start(data.path(), sip_port, rtp);
    let out = sipp(
        "rejected_404.xml",
        sip_port,
        &call_args(
            "4321",
            "40000",
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&out, "INVITE to 4321");
    server.terminate();
}

#[test]
fn offer_without_a_common_codec_gets_488() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start(data.path(), sip_port, rtp);
    let out = sipp(
        "rejected_488.xml",
        sip_port,
        &call_args(
            "9196",
            "40000",
            &["-key", "payloads", "3", "-key", "rtpmap", "GSM/8000"],
        ),
    );
    assert_sipp_ok(&out, "INVITE with only GSM");
    server.terminate();
}

#[test]
fn cancel_while_ringing_gets_487_and_frees_the_ports() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let range = format!("{rtp}-{}", rtp + 1);
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some(USERS),
        Path::new("tests/profiles/ringing.toml"),
        &[("SOFIA_RTP_PORTS", &range)],
    );
    server.wait_for("listening for SIP on tcp");
    for attempt in 0..2 {
        let out = sipp("cancel.xml", sip_port, &call_args("9196", "40000", &[]));
        // The second CANCEL only rings if the first call gave its single RTP pair back.
        assert_sipp_ok(&out, &format!("CANCEL {attempt}"));
    }
    server.terminate();
}

/// A call that rings (tests/profiles/ringing.toml) and gets an INFO in its early
/// dialog, with the offer's Content-Type `sdp_type`; SIPp checks that it is answered
/// with SDP and then stays up for 2 s until SIPp's BYE.
fn ringing_call_with_info(sdp_type: &str) -> std::process::Output {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start_with_profile(data.path(), sip_port, rtp, "tests/profiles/ringing.toml");
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    let phone_port = phone.local_addr().unwrap().port().to_string();
    let out = sipp(
        "info_while_ringing.xml",
        sip_port,
        &call_args(
            "9196",
            &phone_port,
            &["-key", "sdp_type", sdp_type, "-d", "2000"],
        ),
    );
    server.terminate();
    out
}

#[test]
fn an_info_while_ringing_does_not_leave_the_call_ringing_forever() {
    // It used to end the call task without a final response: the INVITE rang forever.
    let out = ringing_call_with_info("application/sdp");
    assert_sipp_ok(&out, "INFO in the early dialog, then the 200");
}

#[test]
fn an_offer_whose_content_type_has_parameters_is_answered_as_sdp() {
    // It used to be taken for "no offer": the 200 carried an offer, the ACK no answer,
    // and the switch hung up.
    let out = ringing_call_with_info("application/sdp; charset=utf-8");
    assert_sipp_ok(&out, "offer with Content-Type parameters");
}

/// SIPp's call (from 1000, with digest) to the echo extension lasting `millis`, in a
/// thread; its offer names a port the test holds but does not read.
fn echo_call_in_background(
    sip_port: u16,
    millis: u32,
) -> std::thread::JoinHandle<std::process::Output> {
    std::thread::spawn(move || {
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let phone_port = phone.local_addr().unwrap().port().to_string();
        let pause = millis.to_string();
        sipp(
            "call.xml",
            sip_port,
            &call_args("9196", &phone_port, &["-d", &pause]),
        )
    })
}

/// A call to the echo extension that must be answered 503.
fn call_expecting_503(sip_port: u16) -> std::process::Output {
    sipp(
        "rejected_503.xml",
        sip_port,
        &call_args(
            "9196",
            "40000",
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    )
}

#[test]
fn call_beyond_the_rtp_range_gets_503_and_the_first_call_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    // One RTP pair: the first call takes it, the second finds none.
    let server = start(data.path(), sip_port, rtp);
    let first = echo_call_in_background(sip_port, 3000);
    server.wait_for("call to 9196 (echo) from 1000 answered");
    let out = call_expecting_503(sip_port);
    assert_sipp_ok(&out, "second call while the only pair is in use");
    assert_sipp_ok(&first.join().unwrap(), "first call, undisturbed");
    server.terminate();
}

#[test]
fn sigterm_lets_the_call_in_progress_finish_refuses_new_calls_then_exits() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start(data.path(), sip_port, rtp);
    let first = echo_call_in_background(sip_port, 4000);
    server.wait_for("call to 9196 (echo) from 1000 answered");
    server.signal_term();
    server.wait_for("shutting down: new calls get 503");
    let out = call_expecting_503(sip_port);
    assert_sipp_ok(&out, "a new call while draining");
    // The call in progress was not cut: SIPp's BYE after 4 s got its 200.
    assert_sipp_ok(&first.join().unwrap(), "the call in progress at SIGTERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the switch exits once its last call ended");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_hangs_up_calls_still_in_progress_after_the_drain_time() {
    let data = tempfile::tempdir().unwrap();
    let (sip_port, rtp) = (free_port(), free_rtp_pair());
    let server = start_with_profile(data.path(), sip_port, rtp, "tests/profiles/drain.toml");
    // A call that would last 20 s.
    let call = echo_call_in_background(sip_port, 20_000);
    server.wait_for("call to 9196 (echo) from 1000 answered");
    let signalled = Instant::now();
    server.signal_term();
    server.wait_for("hanging up on the calls still in progress");
    server.wait_for("call to 9196 over");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the switch exits after hanging up");
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "took {:?} to stop",
        signalled.elapsed()
    );
    // SIPp got a BYE it did not expect in the middle of its pause: its run fails, which
    // is the proof that the switch hung up rather than waiting for it.
    assert!(!call.join().unwrap().status.success());
}
