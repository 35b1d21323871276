//! A baresip phone (Debian package) in a temporary directory: account 1000 on the switch
//! on loopback, its microphone a WAV file, optionally recording what it hears
//! (`sndfile`) and listening for typed commands on a UDP console (`cons`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::free_port;

pub struct Baresip {
    dir: tempfile::TempDir,
    sip_port: u16,
    /// Where `sndfile` writes `*-dec.wav` (what the phone heard), if recording.
    records: Option<PathBuf>,
    /// The UDP console's port, if any.
    pub console: Option<u16>,
}

pub struct Options<'a> {
    pub password: &'a str,
    /// `PCMU`, `PCMA` or `opus`.
    pub codec: &'a str,
    /// The microphone WAV's rate, also baresip's audio rate.
    pub rate: u32,
    pub record: bool,
    pub console: bool,
}

impl Baresip {
    /// Writes the phone's configuration; `mic` is played as its microphone, and the call
    /// ends (baresip sends BYE) when it runs out.
    pub fn new(sip_port: u16, mic: &Path, o: Options) -> Self {
        Self::new_as("1000", sip_port, mic, o)
    }

    /// As [`Baresip::new`], registered as `user` (it answers calls by itself).
    pub fn new_as(user: &str, sip_port: u16, mic: &Path, o: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let module = if o.codec == "opus" {
            "opus.so"
        } else {
            "g711.so"
        };
        let local = free_port();
        let mut config = format!(
            "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:{local}\nnet_interface 127.0.0.1\n\
             audio_source aufile,{}\naudio_player aubridge,nil\n\
             ausrc_srate {rate}\nauplay_srate {rate}\nausrc_channels 1\nauplay_channels 1\n\
             module {module}\nmodule aufile.so\nmodule aubridge.so\n\
             module_tmp uuid.so\nmodule_tmp account.so\nmodule_app menu.so\n",
            mic.display(),
            rate = o.rate,
        );
        let records = o.record.then(|| {
            let records = dir.path().join("records");
            std::fs::create_dir_all(&records).unwrap();
            config.push_str(&format!(
                "module sndfile.so\nsnd_path {}\n",
                records.display()
            ));
            records
        });
        let console = o.console.then(|| {
            let port = free_port();
            config.push_str(&format!("module cons.so\ncons_listen 127.0.0.1:{port}\n"));
            port
        });
        std::fs::write(dir.path().join("config"), config).unwrap();
        std::fs::write(
            dir.path().join("accounts"),
            format!(
                "<sip:{user}@127.0.0.1:{sip_port};transport=udp>;auth_pass={};regint=60;\
                 audio_codecs={};answermode=auto\n",
                o.password, o.codec
            ),
        )
        .unwrap();
        Self {
            dir,
            sip_port,
            records,
            console,
        }
    }

    /// The same phone with media encryption `mode` (baresip's `mediaenc`: `srtp` is
    /// best effort, RTP/AVP with a=crypto; `srtp-mand` is RTP/SAVP, SRTP or nothing).
    pub fn with_mediaenc(self, mode: &str) -> Self {
        let accounts = self.dir.path().join("accounts");
        let text = std::fs::read_to_string(&accounts).unwrap();
        let text = text.trim_end().to_string() + &format!(";mediaenc={mode}\n");
        std::fs::write(&accounts, text).unwrap();
        let config = self.dir.path().join("config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("module srtp.so\n");
        std::fs::write(&config, text).unwrap();
        self
    }

    /// The same phone over SIP over TLS to `tls_port`, trusting the certificate in
    /// `cafile` (the switch's self-signed one, as a user would install it).
    pub fn over_tls(mut self, tls_port: u16, cafile: &Path) -> Self {
        let accounts = self.dir.path().join("accounts");
        let text = std::fs::read_to_string(&accounts).unwrap().replace(
            &format!("127.0.0.1:{};transport=udp>", self.sip_port),
            &format!("127.0.0.1:{tls_port};transport=tls>"),
        );
        std::fs::write(&accounts, text).unwrap();
        let config = self.dir.path().join("config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("sip_cafile {}\n", cafile.display()));
        std::fs::write(&config, text).unwrap();
        // baresip dials over its account's transport.
        self.sip_port = tls_port;
        self
    }

    /// baresip dialling `extension`, giving up after `seconds`.
    pub fn dial(&self, extension: &str, seconds: u32) -> Command {
        let mut cmd = Command::new("baresip");
        cmd.arg("-f").arg(self.dir.path()).args([
            "-e",
            &format!("/dial sip:{extension}@127.0.0.1:{}", self.sip_port),
            "-t",
            &seconds.to_string(),
        ]);
        cmd
    }

    /// baresip registered and waiting for calls (answered at once) for `seconds`.
    pub fn wait_for_calls(&self, seconds: u32) -> Command {
        let mut cmd = Command::new("baresip");
        cmd.arg("-f")
            .arg(self.dir.path())
            .args(["-t", &seconds.to_string()]);
        cmd
    }

    /// Runs a call to `extension` to its end; returns baresip's output.
    pub fn call(&self, extension: &str, seconds: u32) -> String {
        let out = self
            .dial(extension, seconds)
            .output()
            .expect("baresip runs (Debian package baresip; scripts/setup.sh test installs it)");
        let log = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("Call established"), "no call:\n{log}");
        log
    }

    /// Types `command` (e.g. `/hold`) at the phone's UDP console, as a user would.
    pub fn console_command(&self, command: &str) {
        let port = self.console.expect("the phone was set up with a console");
        let keys = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // A long command ends with a newline.
        keys.send_to(format!("{command}\n").as_bytes(), ("127.0.0.1", port))
            .unwrap();
    }

    /// Presses each of `keys` on the phone's console (RFC 4733 DTMF in a call), one
    /// after another as by a person; each takes ~100 ms of RTP.
    pub fn press_keys(&self, keys: &str) {
        for key in keys.chars() {
            self.console_command(&format!("/sndcode {key}"));
            std::thread::sleep(std::time::Duration::from_millis(400));
        }
    }

    /// The WAV of what the phone heard.
    pub fn heard(&self, log: &str) -> PathBuf {
        let records = self.records.as_ref().expect("the phone was set to record");
        std::fs::read_dir(records)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("baresip recorded nothing it heard:\n{log}"))
    }
}

/// Reads baresip's output lines until its call is established and returns what it read;
/// fails if the output ends first. The rest stays in `lines`.
pub fn read_until_established(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    let mut seen = String::new();
    for line in lines.map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("Call established") {
            return seen;
        }
    }
    panic!("no call:\n{seen}");
}
