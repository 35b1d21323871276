//! Media load generator for bench/media.sh: N phones on loopback each place a call to
//! the echo extension (INVITE with a G.711 offer, ACK, BYE; the bench profile does not
//! challenge INVITE), stream 20 ms PCMU packets for the call's length, and count what
//! comes back: packets lost (expected minus received in the measured window) and late
//! (an inter-arrival gap above 40 ms, i.e. the switch missed its pacing by a frame).
//!
//!   media_load SERVER_ADDR CALLS SECONDS
//!
//! Prints one line: `calls=N ok=N lost_pct=.. late_pct=.. rx_packets=..`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Mutex};
use tokio::time::{interval, sleep, Instant, MissedTickBehavior};

const FRAME: Duration = Duration::from_millis(20);
/// Packets in the first second after the answer are not counted: the jitter buffer
/// fills, and echo starts only once audio arrives.
const WARMUP: Duration = Duration::from_secs(1);

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

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

    let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let waiters: Waiters = Arc::default();
    tokio::spawn(sip_reader(sip.clone(), waiters.clone()));

    let mut tasks = Vec::new();
    for i in 0..calls {
        let (sip, waiters) = (sip.clone(), waiters.clone());
        tasks.push(tokio::spawn(async move {
            // Spread call set-up over a second so the INVITEs do not arrive as one burst.
            sleep(Duration::from_millis(
                (i as u64 * 1000) / calls.max(1) as u64,
            ))
            .await;
            one_call(i, server, sip, waiters, seconds)
                .await
                .unwrap_or_default()
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

/// Routes responses to the call waiting for them, by Call-ID and CSeq method.
async fn sip_reader(sip: Arc<UdpSocket>, waiters: Waiters) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, _)) = sip.recv_from(&mut buf).await else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let status = text.split(' ').nth(1).unwrap_or("");
        if !text.starts_with("SIP/2.0") || status.starts_with('1') {
            continue;
        }
        let header = |name: &str| {
            text.lines()
                .find(|l| l.to_ascii_lowercase().starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        let key = format!("{} {}", header("call-id"), header("cseq"));
        if let Some(tx) = waiters.lock().await.remove(&key) {
            let _ = tx.send(text);
        }
    }
}

async fn transact(
    sip: &UdpSocket,
    server: SocketAddr,
    waiters: &Waiters,
    key: String,
    request: String,
) -> Option<String> {
    let (tx, rx) = oneshot::channel();
    waiters.lock().await.insert(key, tx);
    let mut rx = rx;
    // Retransmit as RFC 3261 Timer A/E would, for up to 8 s.
    for attempt in 0..5u32 {
        sip.send_to(request.as_bytes(), server).await.ok()?;
        match tokio::time::timeout(Duration::from_millis(500 << attempt), &mut rx).await {
            Ok(Ok(response)) => return Some(response),
            Ok(Err(_)) => return None,
            Err(_) => continue,
        }
    }
    None
}

async fn one_call(
    i: usize,
    server: SocketAddr,
    sip: Arc<UdpSocket>,
    waiters: Waiters,
    seconds: u64,
) -> anyhow::Result<CallResult> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let rtp_port = rtp.local_addr()?.port();
    let local = sip.local_addr()?;
    let call_id = format!("media-load-{i}-{}", std::process::id());
    let sdp = format!(
        "v=0\r\no=- {i} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=ptime:20\r\na=sendrecv\r\n"
    );
    let head = |method: &str, cseq: u32, to_tag: &str| {
        format!(
            "{method} sip:9196@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq}{method};rport\r\n\
             From: <sip:load@{local}>;tag=t{i}\r\nTo: <sip:9196@{server}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:load@{local}>\r\nMax-Forwards: 70\r\n"
        )
    };
    let invite = format!(
        "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        head("INVITE", 1, ""),
        sdp.len()
    );
    let Some(ok) = transact(
        &sip,
        server,
        &waiters,
        format!("{call_id} 1 INVITE"),
        invite,
    )
    .await
    else {
        return Ok(CallResult::default());
    };
    if !ok.starts_with("SIP/2.0 200") {
        return Ok(CallResult::default());
    }
    let to_tag = ok
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:") || l.starts_with("t:"))
        .and_then(|l| l.split(";tag=").nth(1))
        .map(|t| format!(";tag={}", t.trim()))
        .unwrap_or_default();
    let remote_port: u16 = ok
        .lines()
        .find(|l| l.starts_with("m=audio "))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let ack = format!("{}Content-Length: 0\r\n\r\n", head("ACK", 1, &to_tag));
    sip.send_to(ack.as_bytes(), server).await?;
    let media_to = SocketAddr::new(server.ip(), remote_port);

    // Send a 440 Hz tone for the call's length; count and time what comes back.
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut tick = interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut seq: u16 = 0;
    let mut phase = 0f32;
    let mut buf = [0u8; 2048];
    let (mut received, mut late) = (0u64, 0u64);
    let mut last_arrival: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() >= end { break; }
                let mut packet = vec![0x80, 0x00];
                packet.extend_from_slice(&seq.to_be_bytes());
                packet.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
                packet.extend_from_slice(&(0x5000_0000u32 + i as u32).to_be_bytes());
                for _ in 0..160 {
                    let s = (phase.sin() * 8000.0) as i16;
                    phase = (phase + 2.0 * std::f32::consts::PI * 440.0 / 8000.0) % (2.0 * std::f32::consts::PI);
                    packet.push(sofia_media::g711::linear_to_mulaw(s));
                }
                seq = seq.wrapping_add(1);
                let _ = rtp.send_to(&packet, media_to).await;
            }
            r = rtp.recv_from(&mut buf) => {
                let now = Instant::now();
                if r.is_ok() && now >= started + WARMUP {
                    received += 1;
                    if let Some(prev) = last_arrival {
                        if now - prev > 2 * FRAME { late += 1; }
                    }
                    last_arrival = Some(now);
                }
            }
        }
    }
    let bye = format!("{}Content-Length: 0\r\n\r\n", head("BYE", 2, &to_tag));
    let ok = transact(&sip, server, &waiters, format!("{call_id} 2 BYE"), bye)
        .await
        .is_some_and(|r| r.starts_with("SIP/2.0 200"));
    let measured = Duration::from_secs(seconds).saturating_sub(WARMUP);
    Ok(CallResult {
        ok,
        expected: (measured.as_millis() / FRAME.as_millis()) as u64,
        received,
        late,
    })
}
