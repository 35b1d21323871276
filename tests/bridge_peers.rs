//! Calls between phones through the switch (B2BUA), with the called phone a SIPp
//! scenario: SIPp registers as 1001 with digest authentication and then plays the
//! phone's side of the call the switch places to it (answer, ring until cancelled,
//! busy, answer and hang up), while a second SIPp calls 1001 as user 1000. Both SIPp
//! runs must play their scenario to the end. Also: no answer within `calls.ring_secs`
//! (408), and two phones registered as 1001 (the first to answer wins, the other gets
//! CANCEL). Then two real softphones, baresip and linphone, call each other both ways
//! and each must hear the other's tone.

mod common;
mod voice_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

use common::baresip::{read_until_established, Baresip, Options};
use common::{
    assert_sipp_ok, call_args, free_port, http_addr, http_get, sipp, sipp_spawn, tone_share,
    wait_saved_registration, Server,
};
use voice_support::audio::{read_wav, write_tone_wav};

const USERS: &str = "1000:secret-1000,1001:secret-1001";

/// A SIPp phone registered as 1001 (fixtures/sipp/phone_registered.xml) from its own
/// port, whose side of the call the switch places to it is `handler`, an out-of-call
/// scenario (SIPp maps messages to a scenario by Call-ID, and the switch's INVITE has a
/// Call-ID of its own). Killed on drop, so a failing test leaves nothing behind.
struct SippPhone {
    child: Option<Child>,
}

impl SippPhone {
    /// Starts the phone and waits until the switch has saved its registration.
    fn register(data: &Path, sip_port: u16, handler: &str, extra: &[&str]) -> SippPhone {
        let port = free_port();
        let handler = format!("fixtures/sipp/{handler}");
        let mut args = vec![
            "-oocsf",
            &handler,
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            "secret-1001",
            "-key",
            "expires",
            "60",
        ];
        args.extend_from_slice(extra);
        let phone = SippPhone {
            child: Some(sipp_spawn(port, "phone_registered.xml", sip_port, &args)),
        };
        wait_saved_registration(data, &format!("127.0.0.1:{port}"));
        phone
    }

    /// Waits for SIPp to end (it does once its call is over, or after its timeout).
    fn finish(mut self) -> Output {
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for SippPhone {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A switch with users 1000 and 1001, ready for calls.
fn switch() -> (tempfile::TempDir, u16, Server) {
    let data = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(USERS));
    server.wait_for("listening for SIP on tcp");
    (data, sip_port, server)
}

/// Asserts some line of `lines` contains `needle`.
fn assert_logged(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "the switch never logged {needle:?}: {lines:#?}"
    );
}

#[test]
fn a_sipp_phone_registered_as_1001_answers_a_call_from_1000() {
    let (data, sip_port, server) = switch();
    let phone = SippPhone::register(data.path(), sip_port, "phone_answers.xml", &[]);
    let rtp_port = free_port().to_string();
    // 1000 calls 1001, gets 200 with an SDP answer, talks for a second and hangs up.
    let caller = sipp(
        "call.xml",
        sip_port,
        &call_args("1001", &rtp_port, &["-d", "1000"]),
    );
    assert_sipp_ok(&caller, "1000's call to 1001");
    let lines = server.wait_for("call to 1001 over");
    assert_logged(&lines, "call to 1001 from 1000: ringing 1 phone(s)");
    assert_logged(&lines, "call to 1001 from 1000 answered");
    // The phone got the INVITE, rang, answered, got the ACK and then the caller's BYE.
    assert_sipp_ok(
        &phone.finish(),
        "the phone 1001 (answer, then the caller's BYE)",
    );
    server.terminate();
}

#[test]
fn cancel_before_answer_reaches_the_phone_and_the_caller_gets_487() {
    let (data, sip_port, server) = switch();
    let phone = SippPhone::register(
        data.path(),
        sip_port,
        "phone_rings_until_cancelled.xml",
        &[],
    );
    let rtp_port = free_port().to_string();
    // 1000 calls 1001, hears it ring (180), gives up: 200 for the CANCEL, 487, ACK.
    let caller = sipp("cancel.xml", sip_port, &call_args("1001", &rtp_port, &[]));
    assert_sipp_ok(&caller, "1000's call to 1001, cancelled while ringing");
    server.wait_for("call to 1001: the caller hung up while ringing");
    // The switch cancelled its call to the phone: 200 for the CANCEL, 487, its ACK.
    assert_sipp_ok(&phone.finish(), "the phone 1001 (ringing, then CANCEL)");
    server.terminate();
}

#[test]
fn a_busy_phone_gets_the_caller_486() {
    let (data, sip_port, server) = switch();
    let phone = SippPhone::register(data.path(), sip_port, "phone_busy.xml", &[]);
    let rtp_port = free_port().to_string();
    let caller = sipp(
        "rejected_486.xml",
        sip_port,
        &call_args(
            "1001",
            &rtp_port,
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&caller, "1000's call to a busy 1001");
    server.wait_for("call to 1001: no phone took it, 486");
    // The phone answered 486 and got the switch's ACK for it.
    assert_sipp_ok(&phone.finish(), "the phone 1001 (busy)");
    server.terminate();
}

#[test]
fn hang_up_from_the_called_phone_ends_the_callers_leg() {
    let (data, sip_port, server) = switch();
    // The phone answers, and a second later hangs up with BYE.
    let phone = SippPhone::register(
        data.path(),
        sip_port,
        "phone_answers_then_hangs_up.xml",
        &["-d", "1000"],
    );
    let rtp_port = free_port().to_string();
    // 1000 calls 1001 and waits: the BYE must come from the switch (answered 200).
    let caller = sipp(
        "call_ended_by_callee.xml",
        sip_port,
        &call_args("1001", &rtp_port, &[]),
    );
    assert_sipp_ok(&caller, "1000's call to 1001, ended by 1001");
    let lines = server.wait_for("call to 1001 over");
    assert_logged(&lines, "call to 1001 from 1000 answered");
    // The phone's BYE got its 200 from the switch.
    assert_sipp_ok(&phone.finish(), "the phone 1001 (answer, then its own BYE)");
    server.terminate();
}

#[test]
fn no_answer_within_ring_secs_cancels_the_phone_and_the_caller_gets_408() {
    let data = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    // calls.ring_secs = 5.
    let server = Server::start_with(
        data.path(),
        sip_port,
        Some(USERS),
        Path::new("tests/profiles/ring_5s.toml"),
        &[],
    );
    server.wait_for("listening for SIP on tcp");
    let phone = SippPhone::register(
        data.path(),
        sip_port,
        "phone_rings_until_cancelled.xml",
        &[],
    );
    let rtp_port = free_port().to_string();
    let started = std::time::Instant::now();
    let caller = sipp(
        "rejected_408.xml",
        sip_port,
        &call_args(
            "1001",
            &rtp_port,
            &["-key", "payloads", "0", "-key", "rtpmap", "PCMU/8000"],
        ),
    );
    assert_sipp_ok(&caller, "1000's call to 1001, which never answers");
    let rang = started.elapsed();
    assert!(
        rang >= std::time::Duration::from_millis(4500),
        "408 after only {rang:?} of ringing"
    );
    server.wait_for("call to 1001: no answer within 5s, 408");
    // The switch cancelled its call to the phone: 200 for the CANCEL, 487, its ACK.
    assert_sipp_ok(&phone.finish(), "the phone 1001 (ringing, then CANCEL)");
    server.terminate();
}

#[test]
fn of_two_phones_ringing_the_one_that_answers_gets_the_call_and_the_other_a_cancel() {
    let (data, sip_port, server) = switch();
    // Two phones registered as 1001: one answers, the other only rings.
    let answers = SippPhone::register(data.path(), sip_port, "phone_answers.xml", &[]);
    let rings = SippPhone::register(
        data.path(),
        sip_port,
        "phone_rings_until_cancelled.xml",
        &[],
    );
    let rtp_port = free_port().to_string();
    let caller = sipp(
        "call.xml",
        sip_port,
        &call_args("1001", &rtp_port, &["-d", "1000"]),
    );
    assert_sipp_ok(&caller, "1000's call to 1001");
    let lines = server.wait_for("call to 1001 over");
    assert_logged(&lines, "call to 1001 from 1000: ringing 2 phone(s)");
    // The one that rang on got a CANCEL once the other answered.
    assert_sipp_ok(&rings.finish(), "the phone 1001 that only rang (CANCEL)");
    // The one that answered had the call, and the caller's BYE.
    assert_sipp_ok(&answers.finish(), "the phone 1001 that answered (then BYE)");
    server.terminate();
}

/// The share of `freq` in the loudest half second of what a phone recorded, and that
/// half second's level (RMS).
fn loudest_share(wav: &Path, freq: f32) -> (f32, f32) {
    let (heard, rate) = read_wav(&std::fs::read(wav).unwrap());
    let window = rate as usize / 2;
    assert!(
        heard.len() > window * 2,
        "only {} samples heard in {}",
        heard.len(),
        wav.display()
    );
    let (best, _) = (0..heard.len() - window)
        .step_by(window / 4)
        .map(|i| (i, heard[i..i + window].iter().map(|x| x * x).sum::<f32>()))
        .fold((0, 0f32), |a, b| if b.1 > a.1 { b } else { a });
    let slice = &heard[best..best + window];
    let level = (slice.iter().map(|x| x * x).sum::<f32>() / window as f32).sqrt();
    (tone_share(slice, rate, freq), level)
}

/// linphonecsh talks to its daemon over a socket whose path is fixed per user
/// (/tmp/linphonec-UID), so only one linphonec runs at a time.
static LINPHONEC: Mutex<()> = Mutex::new(());

/// A linphonec daemon (Debian package linphone-cli) in a temporary home, registered
/// with the switch, answering calls by itself (`-a`), its microphone a WAV file and
/// what it hears recorded to another. `linphonecsh exit` on drop.
struct Linphone {
    home: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Linphone {
    fn start(data: &Path, sip_port: u16, user: &str, password: &str, mic: &Path) -> Linphone {
        let turn = LINPHONEC.lock().unwrap_or_else(|e| e.into_inner());
        let home = tempfile::tempdir().unwrap();
        // linphonec never opens its SIP port without this directory.
        std::fs::create_dir_all(home.path().join(".local/share/linphone")).unwrap();
        let (local, rtp) = (free_port(), free_port());
        let rc = home.path().join("rc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\nsip_port={local}\nsip_tcp_port=0\nsip_tls_port=0\n\
                 register_only_when_network_is_up=0\n\
                 [proxy_0]\nreg_proxy=<sip:127.0.0.1:{sip_port};transport=udp>\n\
                 reg_identity=sip:{user}@127.0.0.1\nreg_expires=60\nreg_sendregister=1\n\
                 [auth_info_0]\nusername={user}\npasswd={password}\nrealm=sofia-phone\n\
                 domain=127.0.0.1\n[rtp]\naudio_rtp_port={rtp}\n"
            ),
        )
        .unwrap();
        let phone = Linphone { home, _turn: turn };
        phone.sh(&["init", "-a", "-c", rc.to_str().unwrap()]);
        wait_saved_registration(data, &format!("127.0.0.1:{local}"));
        phone.command("soundcard use files");
        phone.command(&format!("play {}", mic.display()));
        phone.command(&format!("record {}", phone.heard().display()));
        let mode = phone.command("autoanswer");
        assert!(
            mode.contains("Auto answer is enabled"),
            "linphonec will not answer by itself: {mode}"
        );
        phone
    }

    /// Where linphone records what it hears.
    fn heard(&self) -> PathBuf {
        self.home.path().join("heard.wav")
    }

    /// A linphonec command, as typed at its prompt; returns its answer.
    fn command(&self, command: &str) -> String {
        self.sh(&["generic", command])
    }

    fn sh(&self, args: &[&str]) -> String {
        let out = Command::new("linphonecsh")
            .args(args)
            .env("HOME", self.home.path())
            .output()
            .expect(
                "linphonecsh runs (Debian package linphone-cli; scripts/setup.sh test installs it)",
            );
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.sh(&["exit"]);
    }
}

/// A baresip phone as `user` (PCMU at 8 kHz, recording what it hears).
fn baresip(user: &str, password: &str, sip_port: u16, mic: &Path) -> Baresip {
    Baresip::new_as(
        user,
        sip_port,
        mic,
        Options {
            password,
            codec: "PCMU",
            rate: 8000,
            record: true,
            console: false,
        },
    )
}

/// Asserts a phone's recording has `freq` in it, loud and clean.
fn assert_heard(who: &str, wav: &Path, freq: f32, context: &str) {
    let (share, level) = loudest_share(wav, freq);
    assert!(
        level > 0.03 && share > 0.5,
        "{who} did not hear {freq} Hz: share {share:.2}, rms {level:.3}\n{context}"
    );
}

#[test]
fn baresip_calls_linphone_and_each_hears_the_other() {
    let (data, sip_port, server) = switch();
    let mics = tempfile::tempdir().unwrap();
    // linphone (1001) talks longer than baresip, whose hang-up ends the call.
    let linphone_mic = mics.path().join("linphone.wav");
    write_tone_wav(&linphone_mic, 8000, 1200.0, 10.0, 0.0);
    let linphone = Linphone::start(data.path(), sip_port, "1001", "secret-1001", &linphone_mic);

    let baresip_mic = mics.path().join("baresip.wav");
    write_tone_wav(&baresip_mic, 8000, 500.0, 4.0, 1.0);
    let caller = baresip("1000", "secret-1000", sip_port, &baresip_mic);
    // baresip hangs up when its WAV ends (5 s) and quits after 9.
    let caller_log = caller.call("1001", 9);
    let lines = server.wait_for("call to 1001 over");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("call to 1001 from 1000 answered")),
        "linphone never answered: {lines:#?}"
    );
    server.terminate();

    // linphone closed its recording when the call ended.
    let context = format!("{lines:#?}");
    assert_heard(
        "baresip (1000)",
        &caller.heard(&caller_log),
        1200.0,
        &context,
    );
    assert_heard("linphone (1001)", &linphone.heard(), 500.0, &context);
}

#[test]
fn linphone_calls_baresip_and_each_hears_the_other() {
    let (data, sip_port, server) = switch();
    let mics = tempfile::tempdir().unwrap();
    // baresip (1001) answers by itself, and hangs up when its WAV ends (5 s), which
    // ends the call; linphone talks longer.
    let baresip_mic = mics.path().join("baresip.wav");
    write_tone_wav(&baresip_mic, 8000, 1500.0, 4.0, 1.0);
    let callee = baresip("1001", "secret-1001", sip_port, &baresip_mic);
    let callee_run = callee
        .wait_for_calls(30)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip runs (Debian package baresip; scripts/setup.sh test installs it)");
    wait_saved_registration(data.path(), "\"1001\"");

    let linphone_mic = mics.path().join("linphone.wav");
    write_tone_wav(&linphone_mic, 8000, 700.0, 10.0, 0.0);
    let linphone = Linphone::start(data.path(), sip_port, "1000", "secret-1000", &linphone_mic);
    let dialled = linphone.command(&format!("call sip:1001@127.0.0.1:{sip_port}"));
    let lines = server.wait_for("call to 1001 over");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("call to 1001 from 1000 answered")),
        "baresip never answered linphone's call ({dialled}): {lines:#?}"
    );
    // The call is over: baresip has closed its recording; it can go.
    let pid = callee_run.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let out = callee_run.wait_with_output().unwrap();
    let callee_log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        callee_log.contains("Call established"),
        "baresip never answered:\n{callee_log}"
    );
    server.terminate();

    let context = format!("{lines:#?}");
    assert_heard("linphone (1000)", &linphone.heard(), 1500.0, &context);
    assert_heard(
        "baresip (1001)",
        &callee.heard(&callee_log),
        700.0,
        &context,
    );
}

/// Hold and resume on one leg reach the other leg as re-INVITEs from the switch.
/// baresip (1000) calls a SIPp phone (1001) that echoes the audio it gets, puts it on
/// hold from its console and resumes. The phone's scenario (phone_held.xml) passes
/// only if it gets a re-INVITE holding it (a=sendonly or a=inactive) and then one
/// resuming it (a=sendrecv), in that order; baresip hears its own tone come back
/// through the phone before the hold and again after the resume, which it can only if
/// the phone's leg was taken off hold too.
#[test]
fn hold_and_resume_on_one_leg_are_mirrored_to_the_other() {
    use std::io::{BufRead, BufReader};
    use std::time::Duration;

    let (data, sip_port, server) = switch();
    let http = http_addr(&server);
    let phone = SippPhone::register(data.path(), sip_port, "phone_held.xml", &["-rtp_echo"]);
    let mics = tempfile::tempdir().unwrap();
    let mic = mics.path().join("mic.wav");
    // baresip hangs up when its WAV ends.
    write_tone_wav(&mic, 8000, 600.0, 12.0, 0.0);
    let caller = Baresip::new(
        sip_port,
        &mic,
        Options {
            password: "secret-1000",
            codec: "PCMU",
            rate: 8000,
            record: true,
            console: true,
        },
    );
    let mut run = caller
        .dial("1001", 25)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip runs (Debian package baresip; scripts/setup.sh test installs it)");
    let mut lines = BufReader::new(run.stdout.take().unwrap()).lines();
    let seen = read_until_established(&mut lines);
    // The rest of baresip's output, for the failure message.
    let rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    std::thread::sleep(Duration::from_secs(3));
    caller.console_command("/hold");
    let held = server.wait_for("as the other leg asked");
    let mirrored = held.last().unwrap().clone();
    assert!(
        mirrored.contains("a=sendonly") || mirrored.contains("a=inactive"),
        "{held:#?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    caller.console_command("/resume");
    let resumed = server.wait_for("as the other leg asked");
    assert!(
        resumed.last().unwrap().contains("a=sendrecv"),
        "{resumed:#?}"
    );
    let over = server.wait_for("call to 1001 over");
    let _ = run.wait();
    let log = seen + &rest.join().unwrap();
    assert_sipp_ok(
        &phone.finish(),
        "the phone 1001 (answer, mirrored hold, mirrored resume, BYE)",
    );
    let metrics = http_get(&http, "/metrics").1;
    assert!(
        metrics.contains("sofia_reinvites_sent_total 2"),
        "{metrics}"
    );
    server.terminate();

    // What baresip heard, in half-second steps: its tone echoed by the phone.
    let (heard, rate) = read_wav(&std::fs::read(caller.heard(&log)).unwrap());
    let step = rate as usize / 2;
    let echoed: Vec<bool> = heard
        .chunks(step)
        .filter(|c| c.len() == step)
        .map(|c| {
            let level = (c.iter().map(|x| x * x).sum::<f32>() / step as f32).sqrt();
            level > 0.03 && tone_share(c, rate, 600.0) > 0.5
        })
        .collect();
    let shape: String = echoed.iter().map(|&e| if e { '#' } else { '.' }).collect();
    let context = format!("heard {shape}\n{over:#?}\n{log}");
    let first = echoed.iter().position(|&e| e);
    let last = echoed.iter().rposition(|&e| e);
    assert!(first.is_some(), "no echo before the hold: {context}");
    // The echo comes back after the resume: in the last 2 s before the hang-up.
    assert!(
        last.is_some_and(|l| l + 6 >= echoed.len()),
        "no echo after the resume: {context}"
    );
}

/// A blind transfer (RFC 3515) out of a call between phones: a SIPp caller (1000)
/// calls baresip 1001 and sends REFER to 1002, another baresip. The caller's scenario
/// (fixtures/sipp/refer_bridge.xml) passes only with 202, the sipfrag NOTIFYs "100
/// Trying" and "200 OK", and the switch's BYE for its own leg; then 1001 and 1002 must
/// hear each other's tone.
#[test]
fn a_refer_connects_the_called_phone_to_the_transfer_target() {
    let data = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(
        data.path(),
        sip_port,
        Some("1000:secret-1000,1001:secret-1001,1002:secret-1002"),
    );
    server.wait_for("listening for SIP on tcp");
    let http = http_addr(&server);
    let mics = tempfile::tempdir().unwrap();
    // 1001 hangs up when its WAV ends, which ends the transferred call.
    let transferee_mic = mics.path().join("1001.wav");
    write_tone_wav(&transferee_mic, 8000, 700.0, 11.0, 0.0);
    let transferee = baresip("1001", "secret-1001", sip_port, &transferee_mic);
    let target_mic = mics.path().join("1002.wav");
    write_tone_wav(&target_mic, 8000, 1500.0, 30.0, 0.0);
    let target = baresip("1002", "secret-1002", sip_port, &target_mic);
    let runs: Vec<Child> = [&transferee, &target]
        .iter()
        .map(|phone| {
            phone
                .wait_for_calls(40)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("baresip runs (Debian package baresip; scripts/setup.sh test installs it)")
        })
        .collect();
    wait_saved_registration(data.path(), "\"1001\"");
    wait_saved_registration(data.path(), "\"1002\"");

    let caller = sipp(
        "refer_bridge.xml",
        sip_port,
        // (The scenario offers SIPp's own media port, not rtp_port.)
        &call_args("1001", "0", &["-key", "target", "1002"]),
    );
    assert_sipp_ok(&caller, "1000's REFER of 1001 to 1002");
    // Over when 1001, put through to 1002, hangs up.
    let lines = server.wait_for("call to 1001 over");
    let metrics = http_get(&http, "/metrics").1;
    let logs: Vec<String> = runs
        .into_iter()
        .map(|run| {
            Command::new("kill")
                .args(["-TERM", &run.id().to_string()])
                .status()
                .unwrap();
            let out = run.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
        })
        .collect();
    server.terminate();
    assert_logged(&lines, "1002 answered");
    let context = format!("{lines:#?}");
    assert_heard(
        "1001 (transferred)",
        &transferee.heard(&logs[0]),
        1500.0,
        &context,
    );
    assert_heard(
        "1002 (the target)",
        &target.heard(&logs[1]),
        700.0,
        &context,
    );
    for outcome in ["accepted", "connected"] {
        assert!(
            metrics.contains(&format!("sofia_transfers_total{{outcome=\"{outcome}\"}} 1")),
            "{metrics}"
        );
    }
}

/// A REFER the switch cannot carry out is refused over its subscription (RFC 3515: 202,
/// then a final NOTIFY "SIP/2.0 403 Forbidden") and the call goes on: to an extension
/// that is no user, in a call between phones (the SIPp phone 1001 must still get the
/// caller's BYE), and on the echo test, which transfers nobody.
#[test]
fn a_refer_the_switch_cannot_carry_out_gets_notify_403_and_the_call_goes_on() {
    let (data, sip_port, server) = switch();
    let http = http_addr(&server);
    let phone = SippPhone::register(data.path(), sip_port, "phone_answers.xml", &[]);
    let refer = |extension: &str, target: &str| {
        sipp(
            "refer_refused.xml",
            sip_port,
            &call_args(extension, "0", &["-key", "target", target]),
        )
    };
    assert_sipp_ok(&refer("1001", "9999"), "a REFER of 1001 to 9999 (no user)");
    let lines = server.wait_for("call to 1001 over");
    assert_logged(&lines, "REFER to sip:9999@127.0.0.1 refused, 403");
    assert_sipp_ok(
        &phone.finish(),
        "the phone 1001 (answer, then the caller's BYE)",
    );
    assert_sipp_ok(&refer("9196", "1001"), "a REFER on the echo test");
    let lines = server.wait_for("call to 9196 over");
    assert_logged(&lines, "REFER to sip:1001@127.0.0.1 refused, 403");
    let metrics = http_get(&http, "/metrics").1;
    assert!(
        metrics.contains("sofia_transfers_total{outcome=\"refused\"} 2"),
        "{metrics}"
    );
    server.terminate();
}

/// Keys pressed on one phone reach the other as RFC 4733 events: baresip (1000) calls
/// baresip (1001) and presses 1, 5, 9 and # from its console; the called baresip must
/// report those digits, in that order. (The switch ends the events on one leg and sends
/// them anew on the other, with the other leg's payload type and clock.)
#[test]
fn keys_pressed_on_one_phone_reach_the_other_as_the_same_digits() {
    use std::io::{BufRead, BufReader, Read};
    use std::time::Duration;

    let (data, sip_port, server) = switch();
    let mics = tempfile::tempdir().unwrap();
    let callee_mic = mics.path().join("callee.wav");
    write_tone_wav(&callee_mic, 8000, 1200.0, 12.0, 0.0);
    let callee = baresip("1001", "secret-1001", sip_port, &callee_mic);
    let mut callee_run = callee
        .wait_for_calls(25)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baresip runs (Debian package baresip; scripts/setup.sh test installs it)");
    wait_saved_registration(data.path(), "\"1001\"");

    let caller_mic = mics.path().join("caller.wav");
    write_tone_wav(&caller_mic, 8000, 500.0, 0.5, 11.5);
    let caller = Baresip::new_as(
        "1000",
        sip_port,
        &caller_mic,
        Options {
            password: "secret-1000",
            codec: "PCMU",
            rate: 8000,
            record: false,
            console: true,
        },
    );
    let mut caller_run = caller
        .dial("1001", 15)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip runs");
    read_until_established(&mut BufReader::new(caller_run.stdout.take().unwrap()).lines());
    caller.press_keys("159#");
    std::thread::sleep(Duration::from_secs(1));
    let _ = caller_run.kill();
    let _ = caller_run.wait();
    let pid = callee_run.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let _ = callee_run.wait();
    let mut callee_log = String::new();
    for stream in [
        Box::new(callee_run.stdout.take().unwrap()) as Box<dyn std::io::Read>,
        Box::new(callee_run.stderr.take().unwrap()),
    ] {
        let mut text = String::new();
        let _ = BufReader::new(stream).read_to_string(&mut text);
        callee_log.push_str(&text);
    }
    server.terminate();
    // baresip prints each RFC 4733 event it gets: "received event: '5' (end=1)".
    let digits: String = callee_log
        .lines()
        .filter(|l| l.contains("(end=1)"))
        .filter_map(|l| l.split("received event: '").nth(1)?.chars().next())
        .collect();
    assert_eq!(
        digits, "159#",
        "the called phone did not get the digits pressed on the caller:\n{callee_log}"
    );
}
