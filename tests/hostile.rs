//! The switch under hostile traffic, on loopback with real sockets: a forged-source
//! credential flood, a password guesser, an OPTIONS sweep and TCP connection abuse.
//! Attackers and phones bind different 127/8 addresses, so the switch sees them as
//! different hosts. The assertions are about outcomes (who gets 200, 403 or a closed
//! connection), never about how fast.

mod common;

#[path = "../examples/support/sip_client.rs"]
#[allow(dead_code)]
mod sip_client;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use common::{free_port, Server};
use sip_client::{
    authorization, forged_authorization, metric, metrics_when, parse_challenge, status_of,
    tcp_from, token, Leg, Phone,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{sleep, Instant};

const TWO_USERS: &str = "1000:secret-1000,1001:secret-1001";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start(data: &Path, users: &str, profile: &str) -> (Server, SocketAddr, SocketAddr) {
    let port = free_port();
    let server = Server::start_with(data, port, Some(users), Path::new(profile), &[]);
    let http = common::http_addr(&server).parse().expect("http address");
    (server, SocketAddr::from(([127, 0, 0, 1], port)), http)
}

const REGISTERS: &str = "sofia_sip_requests_total{method=\"REGISTER\"}";

/// The scenario: an off-path attacker sends REGISTERs with made-up credentials
/// "from" a real phone's address. Those must not get that address blocked: the phone,
/// registering from there with the right password, is answered 200.
#[test]
fn spoofed_garbage_credentials_do_not_block_the_spoofed_address() {
    let data = tempfile::tempdir().unwrap();
    let (_server, sip, http) = start(data.path(), TWO_USERS, "sip-profiles/default.toml");
    runtime().block_on(async {
        let victim = ip(7);
        // The attacker's own address, where it may collect genuine nonces.
        let mut attacker = Phone::udp(ip(8), sip).await.unwrap();
        let forged = UdpSocket::bind((victim, 0)).await.unwrap();
        let forged_local = forged.local_addr().unwrap();
        let mut fetched = 0.0;
        for n in 0..30 {
            let leg = Leg::new("UDP", forged_local, sip, "1000");
            let uri = leg.uri("REGISTER");
            let auth = if n % 2 == 0 {
                forged_authorization("1000", "sofia-phone", &uri)
            } else {
                // A real nonce, but one the switch sent to the attacker's address.
                let ask = attacker.leg("1000", "1000");
                let request = ask.request("REGISTER", 1, &token(), "Expires: 600\r\n", None);
                let challenge = attacker
                    .transact(&request, &ask.call_id, "1 REGISTER", Duration::from_secs(8))
                    .await
                    .ok()
                    .and_then(|r| parse_challenge(&r))
                    .expect("the attacker's own address is challenged");
                fetched += 1.0;
                authorization(&challenge, "1000", &format!("guess-{n}"), "REGISTER", &uri)
            };
            let request = leg.request(
                "REGISTER",
                1,
                &token(),
                &format!("Expires: 600\r\nAuthorization: {auth}\r\n"),
                None,
            );
            forged.send_to(request.as_bytes(), sip).await.unwrap();
        }
        // Every forged request has been handled once the counters include them.
        let text = metrics_when(http, Duration::from_secs(15), |t| {
            metric(t, REGISTERS) >= 30.0 + fetched
        })
        .await;
        assert!(metric(&text, REGISTERS) >= 30.0 + fetched, "{text}");
        assert_eq!(metric(&text, "sofia_blocked_sources"), 0.0, "{text}");

        let mut phone = Phone::udp(victim, sip).await.unwrap();
        let (first, last) = phone.register("1000", "secret-1000", 600).await;
        assert_eq!(
            first.status,
            Ok(401),
            "the real phone is challenged, not refused"
        );
        assert_eq!(last.status, Ok(200), "the real phone registers");
    });
}

/// svcrack: a guesser answering each challenge with a new wrong password is refused
/// with 403 once it has failed `failures_before_block` (10) times; the user it guesses
/// for, and another user, still register from their own addresses; the metrics count
/// the failures and the block.
#[test]
fn a_password_guesser_is_blocked_while_real_users_keep_registering() {
    let data = tempfile::tempdir().unwrap();
    let (_server, sip, http) = start(data.path(), TWO_USERS, "sip-profiles/default.toml");
    runtime().block_on(async {
        let mut guesser = Phone::udp(ip(20), sip).await.unwrap();
        guesser.user_agent = "friendly-scanner".into();
        let mut blocked_at = None;
        for round in 1..=15 {
            let (first, last) = guesser
                .register("1000", &format!("guess-{round}"), 600)
                .await;
            if first.status == Ok(403) || last.status == Ok(403) {
                blocked_at = Some(round);
                break;
            }
            assert_eq!(
                (first.status, last.status),
                (Ok(401), Ok(401)),
                "round {round}: a wrong password is challenged again, never accepted"
            );
        }
        let blocked_at = blocked_at.expect("the guesser is refused within 15 rounds");
        assert!(blocked_at <= 11, "blocked only at round {blocked_at}");
        // And stays refused.
        let (first, _) = guesser.register("1000", "secret-1000", 600).await;
        assert_eq!(first.status, Ok(403), "a blocked guesser stays refused");

        for (user, from) in [("1000", ip(21)), ("1001", ip(22))] {
            let mut phone = Phone::udp(from, sip).await.unwrap();
            let (_, last) = phone.register(user, &format!("secret-{user}"), 600).await;
            assert_eq!(last.status, Ok(200), "user {user} registers from {from}");
        }

        let text = metrics_when(http, Duration::from_secs(15), |t| {
            metric(t, "sofia_auth_failures_total") >= 10.0
                && metric(t, "sofia_blocked_sources") >= 1.0
                && metric(t, "sofia_sip_responses_total{code=\"403\"}") >= 1.0
        })
        .await;
        assert!(metric(&text, "sofia_auth_failures_total") >= 10.0, "{text}");
        assert!(metric(&text, "sofia_blocked_sources") >= 1.0, "{text}");
        assert!(
            metric(&text, "sofia_sip_responses_total{code=\"403\"}") >= 1.0,
            "{text}"
        );
    });
}

/// svmap: thousands of OPTIONS are answered and leave no server transaction behind
/// (a stateful answer would hold each for Timer J, 32 s).
#[test]
fn options_sweep_leaves_no_transactions() {
    let data = tempfile::tempdir().unwrap();
    let (_server, sip, http) = start(data.path(), TWO_USERS, "sip-profiles/default.toml");
    runtime().block_on(async {
        let scanner = UdpSocket::bind((ip(30), 0)).await.unwrap();
        let local = scanner.local_addr().unwrap();
        let (total, batch) = (3000, 100);
        let mut answered = 0;
        let mut buf = vec![0u8; 65_535];
        for b in 0..total / batch {
            for n in 0..batch {
                let ext = 100 + (b * batch + n) % 900;
                let branch = token();
                let request = format!(
                    "OPTIONS sip:{ext}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
                     Max-Forwards: 70\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag={branch}\r\n\
                     To: \"sipvicious\"<sip:{ext}@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
                     User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
                );
                scanner.send_to(request.as_bytes(), sip).await.unwrap();
            }
            let mut got = 0;
            let until = Instant::now() + Duration::from_secs(2);
            while got < batch {
                match tokio::time::timeout_at(until, scanner.recv_from(&mut buf)).await {
                    Ok(Ok((n, _))) => {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        assert_eq!(status_of(&text), Some(200), "{text}");
                        got += 1;
                    }
                    _ => break,
                }
            }
            answered += got;
        }
        assert!(answered >= total * 95 / 100, "only {answered} of {total} answered");
        // Once the counters include the whole sweep, the gauges are from after it.
        let options = "sofia_sip_requests_total{method=\"OPTIONS\"}";
        let text = metrics_when(http, Duration::from_secs(15), |t| {
            metric(t, options) >= f64::from(answered)
        })
        .await;
        assert!(metric(&text, options) >= f64::from(answered), "{text}");
        assert!(
            text.contains("sofia_sip_transactions{kind=\"server\"} 0\n"),
            "server transactions left behind: {text}"
        );
    });
}

/// Whether the switch has closed `stream` (EOF or reset) by `until`.
async fn closed_by(stream: &mut TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Open right now: nothing to read, and no EOF.
fn still_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(stream.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// With at most 4 connections per source (tests/profiles/hostile.toml): an attacker
/// holding 4 (three idle, one trickling a message that never ends) has any more closed
/// at once, while a phone at another address registers over TCP; the idle ones are
/// closed after tcp_idle_secs and the trickling one at the first-message limit, after
/// which the attacker's address may connect again.
#[test]
fn idle_and_slow_tcp_connections_are_capped_and_others_are_served() {
    let data = tempfile::tempdir().unwrap();
    let (_server, sip, http) = start(data.path(), TWO_USERS, "tests/profiles/hostile.toml");
    runtime().block_on(async {
        let attacker = ip(40);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(tcp_from(attacker, sip).await.unwrap());
        }
        let mut slow = held.pop().unwrap();
        let slow_opened = Instant::now();
        let head = format!(
            "REGISTER sip:{sip} SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bK{}\r\nX-Slow: ",
            slow.local_addr().unwrap(),
            token()
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        // One more byte a second, never the end of the header section.
        let trickle = tokio::spawn(async move {
            let until = slow_opened + Duration::from_secs(60);
            loop {
                if closed_by(&mut slow, Instant::now() + Duration::from_secs(1)).await {
                    return Some(slow_opened.elapsed());
                }
                if Instant::now() >= until {
                    return None;
                }
                if slow.write_all(b"a").await.is_err() {
                    return Some(slow_opened.elapsed());
                }
            }
        });

        // Past the cap: closed at once.
        for extra in 0..3 {
            let mut more = tcp_from(attacker, sip).await.unwrap();
            assert!(
                closed_by(&mut more, Instant::now() + Duration::from_secs(5)).await,
                "connection {} from the attacker was not refused",
                5 + extra
            );
        }
        for (i, c) in held.iter().enumerate() {
            assert!(still_open(c), "held connection {i} was closed too early");
        }

        // Meanwhile a phone elsewhere registers over TCP.
        let mut phone = Phone::tcp(ip(41), sip).await.unwrap();
        let (first, last) = phone.register("1000", "secret-1000", 600).await;
        assert_eq!(first.status, Ok(401));
        assert_eq!(
            last.status,
            Ok(200),
            "a REGISTER over TCP from elsewhere succeeds"
        );

        let text = metrics_when(http, Duration::from_secs(10), |t| {
            metric(t, "sofia_tcp_connections_refused_total") >= 3.0
        })
        .await;
        assert!(
            metric(&text, "sofia_tcp_connections_refused_total") >= 3.0,
            "{text}"
        );

        // Idle connections go after tcp_idle_secs (5 s); allow generously for a busy box.
        for (i, mut c) in held.into_iter().enumerate() {
            assert!(
                closed_by(&mut c, Instant::now() + Duration::from_secs(20)).await,
                "idle connection {i} was never closed"
            );
        }
        // The trickling one goes at the limit for a connection's first message (10 s),
        // or at the partial-message limit (30 s), however often a byte arrives.
        let slow_closed = trickle.await.unwrap();
        assert!(
            slow_closed.is_some(),
            "a message trickled for 60 s was never dropped"
        );

        // Slots are given back: the attacker's address is served again.
        sleep(Duration::from_millis(200)).await;
        let mut again = Phone::tcp(attacker, sip).await.unwrap();
        let (first, _) = again.register("1001", "secret-1001", 600).await;
        assert_eq!(
            first.status,
            Ok(401),
            "the address connects again once its connections are gone"
        );
    });
}

/// Under the default profile (tcp_idle_secs 300), a connection that never sends a
/// message is closed within seconds, so idle connections from many addresses cannot
/// hold the global connection cap for the whole idle timeout.
#[test]
fn a_connection_that_never_sends_a_message_gives_its_place_back_within_seconds() {
    let data = tempfile::tempdir().unwrap();
    let (_server, sip, _http) = start(data.path(), TWO_USERS, "sip-profiles/default.toml");
    runtime().block_on(async {
        let mut idle = tcp_from(ip(52), sip).await.unwrap();
        let opened = Instant::now();
        assert!(
            closed_by(&mut idle, opened + Duration::from_secs(30)).await,
            "a silent connection was still open after 30 s"
        );
        assert!(
            opened.elapsed() >= Duration::from_secs(5),
            "closed too soon: {:?}",
            opened.elapsed()
        );
    });
}
