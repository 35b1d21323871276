//! A real softphone against the switch: baresip (Debian package) registers with digest
//! authentication, calls the echo extension, plays a tone from a WAV file as its
//! microphone, records what it hears, and hangs up when the WAV ends.

mod common;
mod voice_support;

use std::path::Path;
use std::process::Command;

use common::baresip::{read_until_established, Baresip, Options};
use common::{free_port, tone_share, Server};
use voice_support::audio::{read_wav, write_tone_wav};

const PASSWORD: &str = "baresip-secret";

/// Runs baresip for one call to `extension` with the given codec, returns what it
/// recorded hearing (mono, at its rate) and the server's log.
fn baresip_echo_call(codec: &str, rate: u32, freq: f32) -> (u32, Vec<f32>) {
    let data = tempfile::tempdir().unwrap();
    let mic_dir = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(&format!("1000:{PASSWORD}")));
    server.wait_for("listening for SIP on tcp");

    let wav = mic_dir.path().join("mic.wav");
    // 3 s of tone, 2 s of silence: the call lasts as long as the WAV.
    write_tone_wav(&wav, rate, freq, 3.0, 2.0);
    let baresip = Baresip::new(
        sip_port,
        &wav,
        Options {
            password: PASSWORD,
            codec,
            rate,
            record: true,
            console: false,
        },
    );
    let log = baresip.call("9196", 12);
    assert!(
        log.contains("200 OK"),
        "baresip did not register/answer:\n{log}"
    );
    let saved = std::fs::read_to_string(data.path().join("registrations.json")).unwrap_or_default();
    assert!(
        saved.contains("1000"),
        "baresip's registration was not kept: {saved}"
    );
    // baresip hung up with BYE when its WAV ended; the switch logged the call's end.
    server.wait_for("call to 9196 over");
    server.terminate();

    let dec = baresip.heard(&log);
    let (mono, heard_rate) = read_wav(&std::fs::read(&dec).unwrap());
    (heard_rate, mono)
}

fn assert_echo(codec: &str, rate: u32, freq: f32) {
    let (heard_rate, heard) = baresip_echo_call(codec, rate, freq);
    // The loudest half second is the echoed tone (the rest is silence before and after).
    let window = heard_rate as usize / 2;
    assert!(
        heard.len() > window * 4,
        "{codec}: only {} samples heard",
        heard.len()
    );
    let (best, _) = (0..heard.len() - window)
        .step_by(window / 4)
        .map(|i| (i, heard[i..i + window].iter().map(|x| x * x).sum::<f32>()))
        .fold((0, 0f32), |a, b| if b.1 > a.1 { b } else { a });
    let slice = &heard[best..best + window];
    let share = tone_share(slice, heard_rate, freq);
    let level = (slice.iter().map(|x| x * x).sum::<f32>() / window as f32).sqrt();
    assert!(level > 0.05, "{codec}: echo too quiet (rms {level:.3})");
    assert!(
        share > 0.5,
        "{codec}: {freq} Hz holds only {share:.2} of the echo"
    );
}

#[test]
fn baresip_registers_calls_echo_with_pcmu_hears_itself_and_hangs_up() {
    assert_echo("PCMU", 8000, 800.0);
}

#[test]
fn baresip_calls_echo_with_opus_and_hears_itself() {
    assert_echo("opus", 48000, 600.0);
}

#[test]
fn baresip_dtmf_arrives_as_the_right_digits() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let data = tempfile::tempdir().unwrap();
    let mic_dir = tempfile::tempdir().unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(&format!("1000:{PASSWORD}")));
    server.wait_for("listening for SIP on tcp");
    let wav = mic_dir.path().join("mic.wav");
    write_tone_wav(&wav, 8000, 440.0, 0.5, 9.5);
    let phone = Baresip::new(
        sip_port,
        &wav,
        Options {
            password: PASSWORD,
            codec: "PCMU",
            rate: 8000,
            record: false,
            console: true,
        },
    );
    let mut baresip = phone
        .dial("9196", 12)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip runs");
    read_until_established(&mut BufReader::new(baresip.stdout.take().unwrap()).lines());
    // Key presses through baresip's UDP console, as a user would type them.
    phone.press_keys("159#");
    let mut got = String::new();
    for _ in 0..4 {
        let lines = server.wait_for("DTMF digit");
        let last = lines.last().unwrap();
        got.push(last.chars().last().unwrap());
    }
    assert_eq!(got, "159#");
    let _ = baresip.kill();
    let _ = baresip.wait();
    server.terminate();
}

/// Runs `linphonecsh` with the isolated home of the test.
fn linphonecsh(home: &Path, args: &[&str]) -> String {
    let out = Command::new("linphonecsh")
        .args(args)
        .env("HOME", home)
        .output()
        .expect(
            "linphonecsh runs (Debian package linphone-cli; scripts/setup.sh test installs it)",
        );
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn linphone_registers_calls_echo_and_hears_itself() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // linphonec never opens its SIP port without this directory.
    std::fs::create_dir_all(home.path().join(".local/share/linphone")).unwrap();
    let sip_port = free_port();
    let server = Server::start(data.path(), sip_port, Some(&format!("1000:{PASSWORD}")));
    server.wait_for("listening for SIP on tcp");
    let (local, rtp) = (free_port(), free_port());
    let rc = home.path().join("rc");
    std::fs::write(
        &rc,
        format!(
            "[sip]\nsip_port={local}\nsip_tcp_port=0\nsip_tls_port=0\n\
             register_only_when_network_is_up=0\n\
             [proxy_0]\nreg_proxy=<sip:127.0.0.1:{sip_port};transport=udp>\n\
             reg_identity=sip:1000@127.0.0.1\nreg_expires=60\nreg_sendregister=1\n\
             [auth_info_0]\nusername=1000\npasswd={PASSWORD}\nrealm=sofia-phone\ndomain=127.0.0.1\n\
             [rtp]\naudio_rtp_port={rtp}\n"
        ),
    )
    .unwrap();
    let mic = home.path().join("mic.wav");
    write_tone_wav(&mic, 8000, 700.0, 10.0, 0.0);
    let heard = home.path().join("heard.wav");
    let h = home.path();
    linphonecsh(h, &["init", "-c", rc.to_str().unwrap()]);
    // `linphonecsh exit` stops the daemon even when an assertion fails.
    struct Daemon<'a>(&'a Path);
    impl Drop for Daemon<'_> {
        fn drop(&mut self) {
            linphonecsh(self.0, &["exit"]);
        }
    }
    let _daemon = Daemon(h);
    // The call goes out once the switch has linphone's binding (written within 0.5 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let registrations = data.path().join("registrations.json");
    while !std::fs::read_to_string(&registrations)
        .unwrap_or_default()
        .contains(&format!("127.0.0.1:{local}"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "linphone did not register"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    linphonecsh(h, &["generic", "soundcard use files"]);
    linphonecsh(h, &["generic", &format!("play {}", mic.display())]);
    linphonecsh(h, &["generic", &format!("record {}", heard.display())]);
    let out = linphonecsh(
        h,
        &["generic", &format!("call sip:9196@127.0.0.1:{sip_port}")],
    );
    server.wait_for("call to 9196 (echo) from 1000 answered");
    server.wait_for("call to 9196: sending RTP to");
    // Let three seconds of the call pass: the recording is what linphone heard meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(3));
    linphonecsh(h, &["generic", "terminate"]);
    server.wait_for("call to 9196 over");
    server.terminate();

    let (mono, rate) = read_wav(&std::fs::read(&heard).unwrap());
    assert!(
        mono.len() > rate as usize,
        "linphone heard {} samples ({out})",
        mono.len()
    );
    let tail = &mono[mono.len() - rate as usize..];
    let share = tone_share(tail, rate, 700.0);
    assert!(
        share > 0.5,
        "700 Hz holds only {share:.2} of what linphone heard"
    );
}
