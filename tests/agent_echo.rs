//! Real calls to the voice agent (5555) from a phone that returns what it hears: its
//! microphone picks up its own loudspeaker, 10 dB down and 120 ms late (a speakerphone,
//! a cheap headset, a PSTN hybrid), through G.711 both ways. The agent must not stop for
//! its own voice, and must still stop when the caller talks over it.
//!
//! The phone is a test UA in Rust (examples/support/sip_client.rs: digest-authenticated
//! INVITE, ACK, BYE) with an RTP loop: every 20 ms it plays the next packet it received
//! (a one-deep jitter buffer), and sends back its microphone: that playout delayed and
//! attenuated, plus its user's voice (espeak-ng) when the script says so.

mod agent_support;
mod common;
#[path = "../examples/support/sip_client.rs"]
#[allow(dead_code)]
mod sip_client;
mod voice_support;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use agent_support::{profile_with, start_server_with, ONE_CALL_AT_A_TIME, PASSWORD, PHONE_RATE};
use common::free_port;
use sip_client::{metric, metrics_when, Phone};
use sofia_media::g711::{linear_to_mulaw, mulaw_to_linear};
use tokio::net::UdpSocket;
use tokio::time::{interval, Instant, MissedTickBehavior};
use voice_support::audio::{espeak, resample, RATE};

/// 20 ms at 8 kHz.
const FRAME: usize = 160;
/// The phone's echo path.
const ECHO_DELAY_FRAMES: usize = 6; // 120 ms
const ECHO_GAIN_DB: f32 = -10.0;
/// Louder than this (RMS) is the agent talking (-40 dBFS).
const VOICED: f32 = 0.01;

/// The admin listener's address, from the log line that names it.
fn http_addr(log: &[String]) -> SocketAddr {
    log.iter()
        .find_map(|l| l.split("health and metrics on http://").nth(1))
        .and_then(|l| l.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in {log:#?}"))
        .parse()
        .unwrap()
}

fn rms(frame: &[f32]) -> f32 {
    (frame.iter().map(|x| x * x).sum::<f32>() / frame.len().max(1) as f32).sqrt()
}

/// What the caller says, and when.
struct Script {
    /// Said once the greeting is over (`None`: hang up after the greeting).
    said: Option<Vec<f32>>,
    /// Said over the reply, this long after it starts.
    interruption: Vec<f32>,
    interrupt_after: Duration,
}

/// What the phone heard and when things happened, in 20 ms frames from the answer.
#[derive(Debug, Default)]
struct Heard {
    /// The phone's loudspeaker, 8 kHz.
    audio: Vec<f32>,
    greeting: Option<(usize, usize)>,
    /// The caller's first words started and ended.
    said: Option<(usize, usize)>,
    reply_start: Option<usize>,
    interrupted_at: Option<usize>,
}

impl Heard {
    /// Voiced stretches of the loudspeaker (start, end) in frames, gaps shorter than
    /// `max_gap` frames bridged.
    fn spans(&self, max_gap: usize) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (i, f) in self.audio.chunks(FRAME).enumerate() {
            if rms(f) < VOICED {
                continue;
            }
            match spans.last_mut() {
                Some(last) if i - last.1 <= max_gap => last.1 = i + 1,
                _ => spans.push((i, i + 1)),
            }
        }
        spans
    }
}

/// Calls 5555 as 1000 and runs the echoing phone through `script`.
async fn echoing_call(sip_port: u16, script: &Script) -> Heard {
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, sip_port));
    let mut phone = Phone::udp(Ipv4Addr::LOCALHOST.into(), server)
        .await
        .unwrap();
    let rtp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let call = phone
        .invite("1000", PASSWORD, "5555", rtp.local_addr().unwrap())
        .await
        .unwrap_or_else(|status| panic!("the agent did not answer: {status:?}"));
    let media_to = call.media_to.expect("an SDP answer");
    let to_phone = |audio: &[f32]| resample(audio, RATE, PHONE_RATE);
    let said = script.said.as_deref().map(to_phone);
    let interruption = to_phone(&script.interruption);

    let mut heard = Heard::default();
    let mut arrived: VecDeque<Vec<u8>> = VecDeque::new();
    let mut speaker: VecDeque<Vec<f32>> = VecDeque::new();
    let gain = 10f32.powf(ECHO_GAIN_DB / 20.0);
    // The user's voice playing now: samples and position.
    let mut voice: Option<(&[f32], usize)> = None;
    let mut last_voiced = None;
    let mut tick = interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let (mut seq, ssrc) = (0u16, 0x5eed_0001u32);
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    let mut done_at = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let k = seq as usize;
                // The loudspeaker plays the next packet received (silence if none).
                let played: Vec<f32> = match arrived.pop_front() {
                    Some(p) => p.iter().map(|c| f32::from(mulaw_to_linear(*c)) / 32768.0).collect(),
                    None => vec![0.0; FRAME],
                };
                if rms(&played) >= VOICED {
                    last_voiced = Some(k);
                    heard.greeting.get_or_insert((k, k));
                }
                heard.audio.extend_from_slice(&played);
                speaker.push_back(played);
                let echo = if speaker.len() > ECHO_DELAY_FRAMES {
                    speaker.pop_front().unwrap()
                } else {
                    vec![0.0; FRAME]
                };
                // The script, frame by frame.
                let quiet_for = last_voiced.map_or(0, |v| k - v);
                if let Some((start, _)) = heard.greeting {
                    let over = heard.said.is_none() && voice.is_none() && quiet_for >= 50;
                    if over && start < k {
                        heard.greeting = Some((start, last_voiced.unwrap_or(start) + 1));
                        match &said {
                            Some(said) => {
                                voice = Some((said.as_slice(), 0));
                                heard.said = Some((k, k + said.len() / FRAME));
                            }
                            None => done_at = Some(k),
                        }
                    }
                }
                if let Some((_, said_end)) = heard.said {
                    if k > said_end && heard.reply_start.is_none() && quiet_for == 0 {
                        heard.reply_start = Some(k);
                    }
                }
                if let (Some(reply), None) = (heard.reply_start, heard.interrupted_at) {
                    if k >= reply + (script.interrupt_after.as_millis() / 20) as usize {
                        heard.interrupted_at = Some(k);
                        voice = Some((interruption.as_slice(), 0));
                        done_at = Some(k + interruption.len() / FRAME + 250);
                    }
                }
                let mut mic: Vec<f32> = echo.iter().map(|s| s * gain).collect();
                if let Some((samples, at)) = voice.as_mut() {
                    for (m, s) in mic.iter_mut().zip(&samples[*at..]) {
                        *m += s;
                    }
                    *at += FRAME;
                    if *at >= samples.len() {
                        voice = None;
                    }
                }
                let payload: Vec<u8> = mic
                    .iter()
                    .map(|s| linear_to_mulaw((s.clamp(-1.0, 1.0) * 32767.0) as i16))
                    .collect();
                let _ = rtp.send_to(&sip_client::pcmu_packet(seq, ssrc, &payload), media_to).await;
                seq = seq.wrapping_add(1);
                if done_at.is_some_and(|d| k >= d) || started.elapsed() > Duration::from_secs(90) {
                    break;
                }
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                // PCMU only (payload type 0); the agent sends no DTMF.
                if n > 12 && buf[1] & 0x7f == 0 {
                    arrived.push_back(buf[12..n].to_vec());
                    // A phone's jitter buffer stays shallow: drop what piles up.
                    while arrived.len() > 3 {
                        arrived.pop_front();
                    }
                }
            }
        }
    }
    let bye = phone.bye(&call).await;
    assert!(bye.ok(), "BYE: {bye:?}");
    heard
}

fn run_call(echo_suppression: bool, script: Script) -> (Heard, String, f64) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let profile = profile_with(
        data.path(),
        &[("echo_suppression", &echo_suppression.to_string())],
    );
    let (server, log) = start_server_with(data.path(), port, &profile);
    let http = http_addr(&log);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let heard = runtime.block_on(echoing_call(port, &script));
    let log = server.wait_for("call to 5555 over").join("\n");
    let metrics = runtime.block_on(metrics_when(http, Duration::from_secs(2), |_| true));
    let suppressed = metric(&metrics, "sofia_agent_echo_suppressed_frames_total");
    server.terminate();
    (heard, log, suppressed)
}

/// The log line of the call's first turn: the greeting ("agent turn 1: stt - ...", with
/// "(barged in)" when it was interrupted).
fn first_turn_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("agent turn 1: stt"))
        .unwrap_or_else(|| panic!("no line for the greeting's turn\n{log}"))
}

fn seconds(frames: usize) -> f32 {
    frames as f32 * 0.02
}

#[test]
fn the_agent_does_not_stop_for_its_own_echo_but_stops_when_the_caller_talks_over_it() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let words = tempfile::tempdir().unwrap();
    let script = Script {
        said: Some(espeak(
            "I need help planning a long trip to Paris with my whole family next month.",
            words.path(),
        )),
        interruption: espeak("Wait, stop, stop please.", words.path()),
        // The reply runs for about 2.5 s.
        interrupt_after: Duration::from_millis(1200),
    };
    let (heard, log, suppressed) = run_call(true, script);
    let spans = heard.spans(25);
    eprintln!(
        "heard (s): {:?}; greeting {:?}, said {:?}, reply from {:?}, interrupted at {:?}; \
         {suppressed} frames of echo suppressed",
        spans
            .iter()
            .map(|(a, b)| (seconds(*a), seconds(*b)))
            .collect::<Vec<_>>(),
        heard.greeting.map(|(a, b)| (seconds(a), seconds(b))),
        heard.said.map(|(a, b)| (seconds(a), seconds(b))),
        heard.reply_start.map(seconds),
        heard.interrupted_at.map(seconds),
    );
    // The greeting ("Hello! How can I help you today?", 1.0 to 1.2 s as heard) played
    // to its end over its own echo; cut by it, it lasts about 0.5 s.
    let (g0, g1) = heard.greeting.expect("a greeting");
    assert!(
        seconds(g1 - g0) >= 0.8,
        "the greeting was cut to {:.2} s\n{log}",
        seconds(g1 - g0)
    );
    let greeting_turn = first_turn_line(&log);
    assert!(
        !greeting_turn.contains("barged in"),
        "the echo barged in on the greeting: {greeting_turn}\n{log}"
    );
    assert!(suppressed > 0.0, "the echo check never saw the echo\n{log}");
    // The reply played over its echo until the caller talked over it, and stopped
    // within a second of that.
    let interrupted = heard
        .interrupted_at
        .expect("the reply was heard and talked over");
    let reply = spans
        .iter()
        .find(|(start, end)| *start <= interrupted && *end > interrupted)
        .unwrap_or_else(|| {
            panic!("the reply had stopped before the caller talked: {spans:?}\n{log}")
        });
    let stopped_after = seconds(reply.1) - seconds(interrupted);
    eprintln!("the reply stopped {stopped_after:.2} s after the caller started talking");
    assert!(
        (0.0..1.0).contains(&stopped_after),
        "the reply did not stop within a second of the caller talking over it: {reply:?}\n{log}"
    );
    let barge_ins = log.matches("caller barged in").count();
    assert_eq!(
        barge_ins, 1,
        "one barge-in, the caller's, expected; got {barge_ins}\n{log}"
    );
}

/// The control: the same phone with the check off and a caller who never speaks. The
/// echo alone interrupts the greeting: what the test above would see if the check did
/// nothing.
#[test]
fn with_echo_suppression_off_the_agent_stops_for_its_own_echo() {
    let _one_at_a_time = ONE_CALL_AT_A_TIME.lock();
    let script = Script {
        said: None,
        interruption: Vec::new(),
        interrupt_after: Duration::ZERO,
    };
    let (_, log, suppressed) = run_call(false, script);
    // The caller never spoke: whatever barged in was the agent's own voice.
    let greeting_turn = first_turn_line(&log);
    assert!(
        greeting_turn.contains("barged in"),
        "the echo did not interrupt the greeting: {greeting_turn}\n{log}"
    );
    assert_eq!(suppressed, 0.0);
}
