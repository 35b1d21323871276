//! The switch against a real SIP peer: SIPp scenarios from fixtures/sipp sent over
//! loopback UDP and TCP to a running `sofia-phone serve`.

mod common;

use common::{assert_sipp_ok, free_port, sipp, sipp_from, Server};

const USERS: &str = "1000:secret-1000,1001:secret-1001";

/// A switch on a free loopback port with the test users and `profile`, ready for SIP.
fn switch(profile: &str) -> (tempfile::TempDir, u16, Server) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = Server::start_with(
        data.path(),
        port,
        Some(USERS),
        std::path::Path::new(profile),
        &[],
    );
    server.wait_for("listening for SIP on tcp");
    (data, port, server)
}

/// The saved registrations once `done` holds for them; they are written at most every
/// 0.5 s, so this waits up to 10 s and then returns what is there.
fn registrations_when(data: &std::path::Path, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(data.join("registrations.json")).unwrap_or_default();
        if done(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn register_with_digest_then_unregister_over_udp() {
    let (data, port, server) = switch("sip-profiles/default.toml");
    // The same phone (same address, so the same Contact) registers, then unregisters.
    let phone = free_port();
    let out = sipp_from(
        phone,
        "register.xml",
        port,
        &[
            "-s",
            "1000",
            "-au",
            "1000",
            "-ap",
            "secret-1000",
            "-key",
            "expires",
            "120",
        ],
    );
    assert_sipp_ok(&out, "REGISTER with digest");
    let saved = registrations_when(data.path(), |t| t.contains("sip:1000@127.0.0.1"));
    assert!(
        saved.contains("sip:1000@127.0.0.1"),
        "binding not persisted: {saved}"
    );
    assert!(saved.contains("127.0.0.1"), "{saved}");

    let out = sipp_from(
        phone,
        "register.xml",
        port,
        &[
            "-s",
            "1000",
            "-au",
            "1000",
            "-ap",
            "secret-1000",
            "-key",
            "expires",
            "0",
        ],
    );
    assert_sipp_ok(&out, "unregister");
    let saved = registrations_when(data.path(), |t| !t.contains("sip:1000@127.0.0.1"));
    assert!(
        !saved.contains("sip:1000@127.0.0.1"),
        "binding survived unregister: {saved}"
    );
    server.terminate();
}

#[test]
fn register_with_digest_over_tcp() {
    let (data, port, server) = switch("sip-profiles/default.toml");
    let out = sipp(
        "register.xml",
        port,
        &[
            "-t",
            "t1",
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            "secret-1001",
            "-key",
            "expires",
            "120",
        ],
    );
    assert_sipp_ok(&out, "REGISTER over TCP");
    let saved = registrations_when(data.path(), |t| t.contains("\"transport\": \"Tcp\""));
    assert!(
        saved.contains("\"transport\": \"Tcp\""),
        "binding does not remember TCP: {saved}"
    );
    server.terminate();
}

#[test]
fn register_with_wrong_password_is_refused() {
    let (data, port, server) = switch("sip-profiles/default.toml");
    let out = sipp(
        "register_wrong_password.xml",
        port,
        &["-s", "1000", "-au", "1000", "-ap", "not-the-password"],
    );
    assert_sipp_ok(&out, "wrong password gets 401");
    // A good registration afterwards: once it is on disk, the refused one would be too.
    let out = sipp(
        "register.xml",
        port,
        &[
            "-s",
            "1001",
            "-au",
            "1001",
            "-ap",
            "secret-1001",
            "-key",
            "expires",
            "120",
        ],
    );
    assert_sipp_ok(&out, "REGISTER 1001");
    let saved = registrations_when(data.path(), |t| t.contains("sip:1001@127.0.0.1"));
    assert!(saved.contains("sip:1001@127.0.0.1"), "{saved}");
    assert!(
        !saved.contains("sip:1000@"),
        "refused registration stored: {saved}"
    );
    server.terminate();
}

#[test]
fn options_is_answered_with_allow() {
    let (_data, port, server) = switch("sip-profiles/default.toml");
    assert_sipp_ok(&sipp("options.xml", port, &[]), "OPTIONS over UDP");
    assert_sipp_ok(
        &sipp("options.xml", port, &["-t", "t1"]),
        "OPTIONS over TCP",
    );
    server.terminate();
}

#[test]
fn registered_udp_phone_gets_keepalive_options() {
    let (_data, port, server) = switch("tests/profiles/keepalive.toml");
    let phone = free_port();
    let out = sipp_from(
        phone,
        "register.xml",
        port,
        &[
            "-s",
            "1000",
            "-au",
            "1000",
            "-ap",
            "secret-1000",
            "-key",
            "expires",
            "120",
        ],
    );
    assert_sipp_ok(&out, "REGISTER");
    // The same phone, now listening on its registered port, must be pinged (every 1 s
    // with this profile) and answers; SIPp fails after 30 s without an OPTIONS.
    let out = sipp_from(phone, "answer_options.xml", port, &[]);
    assert_sipp_ok(&out, "keep-alive OPTIONS to the registered contact");
    server.terminate();
}
