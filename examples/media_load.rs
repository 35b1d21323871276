//! Media load generator for bench/media.sh: N phones on loopback each place a call to
//! the echo extension (INVITE with a G.711 offer, ACK, BYE; the bench profile does not
//! challenge INVITE), stream 20 ms PCMU packets for the call's length, and count what
//! comes back: packets lost and late (an inter-arrival gap above 40 ms, i.e. the switch
//! missed its pacing by a frame). Loss is counted as RFC 3550 does, from the gaps in the
//! echoed stream's sequence numbers over the measured window, plus any frames missing
//! at its end if the echo stopped early; counting by time alone would call a packet
//! that straddles the window's edge lost.
//!
//!   media_load SERVER_ADDR CALLS SECONDS
//!
//! Prints one line: `calls=N ok=N lost_pct=.. late_pct=.. rx_packets=..`.

#[path = "support/loopback_ua.rs"]
mod loopback_ua;

use std::net::SocketAddr;
use std::time::Duration;

use loopback_ua::{pcmu_packet, Ua};
use tokio::net::UdpSocket;
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

const FRAME: Duration = Duration::from_millis(20);
/// Packets in the first second after the answer are not counted: the jitter buffer
/// fills, and echo starts only once audio arrives.
const WARMUP: Duration = Duration::from_secs(1);

#[derive(Default, Debug, Clone, Copy)]
struct CallResult {
    ok: bool,
    expected: u64,
    received: u64,
    late: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: media_load SERVER_ADDR CALLS SECONDS"
    );
    let server: SocketAddr = args[1].parse()?;
    let calls: usize = args[2].parse()?;
    let seconds: u64 = args[3].parse()?;

    let ua = Ua::new(server).await?;

    let mut tasks = Vec::new();
    for i in 0..calls {
        let ua = ua.clone();
        tasks.push(tokio::spawn(async move {
            // Spread call set-up over a second so the INVITEs do not arrive as one burst.
            sleep(Duration::from_millis(
                (i as u64 * 1000) / calls.max(1) as u64,
            ))
            .await;
            one_call(i, ua, seconds).await.unwrap_or_default()
        }));
    }
    let mut total = CallResult::default();
    let mut ok = 0;
    for task in tasks {
        let r = task.await?;
        ok += usize::from(r.ok);
        total.expected += r.expected;
        total.received += r.received.min(r.expected);
        total.late += r.late;
    }
    let lost = total.expected.saturating_sub(total.received);
    let pct = |n: u64| 100.0 * n as f64 / total.expected.max(1) as f64;
    println!(
        "calls={calls} ok={ok} lost_pct={:.3} late_pct={:.3} rx_packets={}",
        pct(lost),
        pct(total.late),
        total.received
    );
    Ok(())
}

async fn one_call(i: usize, ua: Ua, seconds: u64) -> anyhow::Result<CallResult> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let Some(dialog) = ua.call(i, "9196", rtp.local_addr()?.port()).await else {
        return Ok(CallResult::default());
    };
    let media_to = dialog.media_to;

    // Send a 440 Hz tone for the call's length; count and time what comes back.
    let tone = tone_frames();
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut tick = interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut seq: u16 = 0;
    let mut buf = [0u8; 2048];
    let (mut received, mut late) = (0u64, 0u64);
    let mut last_arrival: Option<Instant> = None;
    // Extended sequence numbers of the first and last echoed packet in the window.
    let mut seq_range: Option<(u64, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end { break; }
                let payload = &tone[usize::from(seq) % tone.len()];
                let packet = pcmu_packet(seq, 0x5000_0000u32 + i as u32, payload);
                seq = seq.wrapping_add(1);
                let _ = rtp.send_to(&packet, media_to).await;
            }
            r = rtp.recv_from(&mut buf) => {
                let now = Instant::now();
                if let (Ok((n, _)), true) = (r, now >= started + WARMUP) {
                    if n < 12 { continue; }
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    seq_range = Some(match seq_range {
                        None => (u64::from(seq), u64::from(seq)),
                        Some((first, last)) => {
                            // Extend across wraparound: the step from the last one.
                            let delta = seq.wrapping_sub(last as u16) as i16;
                            (first, (last as i64 + i64::from(delta)).max(first as i64) as u64)
                        }
                    });
                    received += 1;
                    if let Some(prev) = last_arrival {
                        if now - prev > 2 * FRAME { late += 1; }
                    }
                    last_arrival = Some(now);
                }
            }
        }
    }
    let ok = ua.bye(&dialog).await;
    let frames = |d: Duration| (d.as_millis() / FRAME.as_millis()) as u64;
    let measured = frames(Duration::from_secs(seconds).saturating_sub(WARMUP));
    let expected = match (seq_range, last_arrival) {
        (Some((first, last)), Some(at)) => {
            // Frames the echo should still have sent after it went quiet, less two for
            // the window edge and the echo's own delay.
            let silent_tail = frames(end.saturating_duration_since(at)).saturating_sub(2);
            last - first + 1 + silent_tail
        }
        _ => measured,
    };
    Ok(CallResult {
        ok,
        expected,
        received,
        late,
    })
}

/// One second of a 440 Hz tone as 50 PCMU frames: exactly 440 periods, so the frames
/// repeat seamlessly. Computed once per call, so the load generator spends its CPU on
/// sockets rather than on sines.
fn tone_frames() -> Vec<Vec<u8>> {
    let samples: Vec<u8> = (0..8000)
        .map(|n| {
            let phase = 2.0 * std::f32::consts::PI * 440.0 * n as f32 / 8000.0;
            sofia_media::g711::linear_to_mulaw((phase.sin() * 8000.0) as i16)
        })
        .collect();
    samples.chunks(160).map(<[u8]>::to_vec).collect()
}
