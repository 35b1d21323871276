//! Turn-latency load generator for bench/turn.sh: CALLS phones on loopback call the
//! agent (5555) at once, wait for the greeting to finish, then speak each utterance (8 kHz
//! 16-bit mono WAVs, sent as paced 20 ms PCMU packets, with silence packets in between as
//! a real phone sends) and time the agent's answer.
//!
//! Turn latency is measured as the caller hears it: from sending the last voiced RTP
//! packet of the utterance to receiving the first voiced RTP packet of the reply.
//! "Voiced" is a frame louder than -36 dBFS RMS; the switch sends silence otherwise.
//!
//!   turn_bench SERVER_ADDR CALLS WAV...
//!
//! Prints one `latency_ms=N` line per answered turn, `unanswered=1` per turn with no
//! reply within 10 s, and a final `calls=N ok=N turns=N answered=N`.

#[path = "support/loopback_ua.rs"]
mod loopback_ua;

use std::net::SocketAddr;
use std::time::Duration;

use loopback_ua::{pcmu_packet, Ua};
use sofia_media::g711::{linear_to_mulaw, mulaw_to_linear};
use tokio::net::UdpSocket;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

const FRAME: Duration = Duration::from_millis(20);
/// RMS (of 32768) above which a 20 ms frame counts as voiced: about -36 dBFS.
const VOICED_RMS: f64 = 520.0;
/// The greeting or a reply is over after this long without voiced audio.
const REPLY_GAP: Duration = Duration::from_millis(1200);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
const SILENCE: [u8; 160] = [0xFF; 160];

fn voiced_pcm(samples: impl Iterator<Item = i16>) -> bool {
    let (sum, n) = samples.fold((0f64, 0usize), |(s, n), x| {
        (s + f64::from(x) * f64::from(x), n + 1)
    });
    n > 0 && (sum / n as f64).sqrt() > VOICED_RMS
}

/// The PCMU payload of an RTP packet, if it is one.
fn pcmu_payload(packet: &[u8]) -> Option<&[u8]> {
    if packet.len() < 12 || packet[0] >> 6 != 2 || packet[1] & 0x7f != 0 {
        return None;
    }
    let csrc = usize::from(packet[0] & 0x0f) * 4;
    let mut start = 12 + csrc;
    if packet[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*packet.get(start + 2)?, *packet.get(start + 3)?]);
        start += 4 + usize::from(words) * 4;
    }
    packet.get(start..)
}

/// 20 ms PCMU frames of a 16-bit mono 8 kHz WAV.
fn read_utterance(path: &str) -> anyhow::Result<Vec<[u8; 160]>> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(
        bytes.len() > 44 && &bytes[..4] == b"RIFF",
        "{path}: not a WAV"
    );
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into()?) as usize;
        let body = &bytes[pos + 8..(pos + 8 + len).min(bytes.len())];
        if id == b"fmt " {
            let rate = u32::from_le_bytes(body[4..8].try_into()?);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            anyhow::ensure!(
                rate == 8000 && channels == 1,
                "{path}: want 8 kHz mono, got {rate} Hz x{channels}"
            );
        } else if id == b"data" {
            let pcm: Vec<i16> = body
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok(pcm
                .chunks(160)
                .map(|chunk| {
                    let mut frame = SILENCE;
                    for (code, s) in frame.iter_mut().zip(chunk) {
                        *code = linear_to_mulaw(*s);
                    }
                    frame
                })
                .collect());
        }
        pos += 8 + len + (len % 2);
    }
    anyhow::bail!("{path}: no data chunk")
}

#[derive(Debug, Default)]
struct CallResult {
    ok: bool,
    latencies: Vec<Duration>,
    unanswered: usize,
}

enum Phase {
    /// Waiting for the greeting to start and then to end.
    Greeting {
        heard: Option<Instant>,
    },
    /// Sending utterance `turn`, frame `frame`.
    Speaking {
        turn: usize,
        frame: usize,
    },
    /// The utterance is sent; waiting for the first voiced packet of the reply.
    Waiting {
        turn: usize,
        last_voiced: Instant,
    },
    /// The reply is playing; it is over after `REPLY_GAP` of silence.
    Reply {
        turn: usize,
        heard: Instant,
    },
    Done,
}

async fn one_call(i: usize, ua: Ua, utterances: &[Vec<[u8; 160]>]) -> anyhow::Result<CallResult> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let Some(dialog) = ua.call(i, "5555", rtp.local_addr()?.port()).await else {
        return Ok(CallResult::default());
    };
    let mut result = CallResult::default();
    let ssrc = 0x7000_0000u32 + i as u32;
    let mut tick = interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut seq: u16 = 0;
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    let mut phase = Phase::Greeting { heard: None };
    let mut last_voiced_sent = started;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let mut frame = SILENCE;
                phase = match phase {
                    Phase::Greeting { heard: None } if now - started > ANSWER_TIMEOUT => {
                        result.unanswered += 1; // no greeting
                        Phase::Done
                    }
                    Phase::Greeting { heard: Some(h) } if now - h > REPLY_GAP => {
                        Phase::Speaking { turn: 0, frame: 0 }
                    }
                    Phase::Speaking { turn, frame: f } => {
                        frame = utterances[turn][f];
                        if voiced_pcm(frame.iter().map(|c| mulaw_to_linear(*c))) {
                            last_voiced_sent = now;
                        }
                        if f + 1 < utterances[turn].len() {
                            Phase::Speaking { turn, frame: f + 1 }
                        } else {
                            Phase::Waiting { turn, last_voiced: last_voiced_sent }
                        }
                    }
                    Phase::Waiting { turn, last_voiced } if now - last_voiced > ANSWER_TIMEOUT => {
                        result.unanswered += 1;
                        println!("unanswered=1");
                        next_turn(turn, utterances.len())
                    }
                    Phase::Reply { turn, heard } if now - heard > REPLY_GAP => {
                        next_turn(turn, utterances.len())
                    }
                    Phase::Done => break,
                    other => other,
                };
                let _ = rtp.send_to(&pcmu_packet(seq, ssrc, &frame), dialog.media_to).await;
                seq = seq.wrapping_add(1);
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                let Some(payload) = pcmu_payload(&buf[..n]) else { continue };
                if !voiced_pcm(payload.iter().map(|c| mulaw_to_linear(*c))) {
                    continue;
                }
                let now = Instant::now();
                phase = match phase {
                    Phase::Greeting { .. } => Phase::Greeting { heard: Some(now) },
                    Phase::Waiting { turn, last_voiced } => {
                        let latency = now - last_voiced;
                        println!("latency_ms={}", latency.as_millis());
                        result.latencies.push(latency);
                        Phase::Reply { turn, heard: now }
                    }
                    Phase::Reply { turn, .. } => Phase::Reply { turn, heard: now },
                    other => other,
                };
            }
        }
    }
    result.ok = ua.bye(&dialog).await;
    Ok(result)
}

fn next_turn(turn: usize, turns: usize) -> Phase {
    if turn + 1 < turns {
        Phase::Speaking {
            turn: turn + 1,
            frame: 0,
        }
    } else {
        Phase::Done
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: turn_bench SERVER_ADDR CALLS WAV..."
    );
    let server: SocketAddr = args[1].parse()?;
    let calls: usize = args[2].parse()?;
    let utterances = args[3..]
        .iter()
        .map(|p| read_utterance(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let utterances: &'static [Vec<[u8; 160]>] = Box::leak(utterances.into_boxed_slice());
    let ua = Ua::new(server).await?;
    let mut tasks = Vec::new();
    for i in 0..calls {
        let ua = ua.clone();
        tasks.push(tokio::spawn(async move {
            // Stagger the calls by a fraction of an utterance so turns do not all end in
            // the same 20 ms (real callers are not synchronised either).
            sleep(Duration::from_millis(i as u64 * 700)).await;
            one_call(i, ua, utterances).await.unwrap_or_default()
        }));
    }
    let (mut ok, mut answered, mut unanswered) = (0, 0, 0);
    for task in tasks {
        let r = task.await?;
        ok += usize::from(r.ok);
        answered += r.latencies.len();
        unanswered += r.unanswered;
    }
    println!(
        "calls={calls} ok={ok} turns={} answered={answered} unanswered={unanswered}",
        calls * utterances.len()
    );
    Ok(())
}
