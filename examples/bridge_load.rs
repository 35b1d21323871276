//! Bridged-call load generator for bench/bridge.sh: CALLS phones register as users
//! u100..u(100+CALLS-1) (digest; password `pw-<user>`, e.g. `pw-u100`) and CALLS
//! callers each call one of them through the switch (caller i -> u(100+i); the bench
//! profile does not challenge INVITE). The switch answers the caller, rings the
//! phone, and relays audio between the two legs through two media sessions
//! (transcoding when the legs chose different codecs).
//!
//!   bridge_load SERVER_ADDR CALLS SECONDS [CODEC_A CODEC_B]
//!
//!   bridge_load SERVER_ADDR CALLS SECONDS echo
//!
//! The second form registers no phones: the callers call the echo extension (9196)
//! and count their own frames coming back, the same measure applied to an echo call
//! (media_load counts the echo's RTP packets, which the switch sends every 20 ms
//! whether it has the caller's audio or not, so it cannot see audio the switch dropped
//! or concealed).
//!
//! CODEC_A is what the callers offer, CODEC_B what the phones answer with: PCMU
//! (default) or PCMA. PCMU -> PCMA is the transcoding variant: the switch decodes one
//! law and encodes the other on each leg. Opus is not offered by this generator:
//! encoding 48 kHz Opus for hundreds of streams in the load generator would take the
//! CPU the switch is being measured on, and the frame tags below do not survive a
//! lossy codec and its resampling.
//!
//! What is measured, both directions independently: the caller and the phone each send
//! their own paced stream of 20 ms frames for the whole call (the caller for SECONDS,
//! the phone from its answer to the BYE), and each side counts what arrives from the
//! other. Every frame carries a tag in its audio: the frame number, the call's index
//! and the direction, as 40 bits of 4 samples each at +-8000 with an 11-bit check,
//! which survives G.711 decoding and re-encoding (in either law); silence carries no
//! tag, and a concealed frame at most repeats an earlier one's tag, which counts once.
//! The switch sends a packet every 20 ms whatever it has (silence or concealment when
//! audio is missing), so sequence numbers of its packets prove nothing; the tags do. A
//! frame counts as received when its tag arrives; expected are the frames sent between
//! the first second of the call (jitter buffers fill) and 200 ms before the caller
//! stops sending (their path's delay). Late is as in media_load: an inter-arrival gap
//! above 40 ms within that window, i.e. the switch missed its pacing by a frame. The
//! one-way delay of the tagged frames (their send schedule to their arrival; in echo
//! mode the round trip) is reported as p50 and p99. A tag with another call's index or
//! the wrong direction is counted as misrouted.
//!
//! A call is ok when it was answered, tagged audio arrived both ways and its BYE got
//! 200. Prints one line:
//! `calls=N ok=N lost_pct=.. late_pct=.. rx_packets=.. registered=N answered=N
//! a_to_b_lost_pct=.. b_to_a_lost_pct=.. delay_p50_ms=.. delay_p99_ms=.. misrouted=N
//! mode=bridged|echo` (lost and late over both directions; rx_packets counts tagged
//! frames received; in echo mode only the echoed stream counts, and a_to_b is 0).

#[path = "support/callee_ua.rs"]
mod callee_ua;
// Only the callers' INVITE, ACK and BYE are used here.
#[allow(dead_code)]
#[path = "support/loopback_ua.rs"]
mod loopback_ua;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callee_ua::{Callee, CalleeEvent};
use loopback_ua::Ua;
use sofia_media::g711;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{interval, sleep, sleep_until, Instant, MissedTickBehavior};

const FRAME: Duration = Duration::from_millis(20);
/// Frames sent in the first second of the call are not counted: jitter buffers fill.
const WARMUP: Duration = Duration::from_secs(1);
/// Frames sent this close to the end of the caller's stream are not counted: they
/// may still be on their way.
const TAIL: Duration = Duration::from_millis(200);
/// The caller keeps receiving this long after it stops sending.
const LINGER: Duration = Duration::from_millis(400);
/// An inter-arrival gap above this is a late packet.
const LATE_GAP: Duration = Duration::from_millis(40);
/// First user's number: caller i calls u(FIRST_USER + i).
const FIRST_USER: usize = 100;
/// The echo test's extension (bench profiles), for `echo` mode.
const ECHO_EXTENSION: &str = "9196";
/// Samples per tag bit, and the tag's amplitude and detection threshold.
const SAMPLES_PER_BIT: usize = 4;
const TAG_LEVEL: i16 = 8000;
const TAG_THRESHOLD: i16 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    fn parse(name: &str) -> anyhow::Result<Self> {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Ok(Self::Pcmu),
            "PCMA" => Ok(Self::Pcma),
            other => anyhow::bail!("codec {other}: PCMU or PCMA (see the doc comment on Opus)"),
        }
    }

    fn from_payload_type(pt: u8) -> Option<Self> {
        match pt {
            0 => Some(Self::Pcmu),
            8 => Some(Self::Pcma),
            _ => None,
        }
    }

    fn payload_type(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    fn encode(self, sample: i16) -> u8 {
        match self {
            Self::Pcmu => g711::linear_to_mulaw(sample),
            Self::Pcma => g711::linear_to_alaw(sample),
        }
    }

    fn decode(self, code: u8) -> i16 {
        match self {
            Self::Pcmu => g711::mulaw_to_linear(code),
            Self::Pcma => g711::alaw_to_linear(code),
        }
    }
}

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Caller to phone.
    AToB,
    /// Phone to caller.
    BToA,
}

/// The 11-bit check over a tag's other 29 bits.
fn check(bits: u64) -> u64 {
    (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 53) & 0x7ff
}

/// One 20 ms frame (160 samples at 8 kHz) carrying frame `k`, call `call` and the
/// direction: 40 bits, most significant first, each as 4 samples of +-TAG_LEVEL.
fn tagged_frame(codec: Codec, k: u16, call: usize, dir: Dir) -> Vec<u8> {
    let head = (u64::from(k) << 13) | ((call as u64 & 0xfff) << 1) | u64::from(dir == Dir::BToA);
    let tag = (head << 11) | check(head);
    (0..40 * SAMPLES_PER_BIT)
        .map(|n| {
            let bit = (tag >> (39 - n / SAMPLES_PER_BIT)) & 1;
            codec.encode(if bit == 1 { TAG_LEVEL } else { -TAG_LEVEL })
        })
        .collect()
}

/// The tag in a received frame: (frame number, call index, direction).
fn read_tag(codec: Codec, payload: &[u8]) -> Option<(u16, usize, Dir)> {
    if payload.len() < 40 * SAMPLES_PER_BIT {
        return None;
    }
    let mut tag = 0u64;
    for bit in payload[..40 * SAMPLES_PER_BIT].chunks(SAMPLES_PER_BIT) {
        let samples: Vec<i16> = bit.iter().map(|c| codec.decode(*c)).collect();
        let one = samples.iter().all(|s| *s > TAG_THRESHOLD);
        let zero = samples.iter().all(|s| *s < -TAG_THRESHOLD);
        if !one && !zero {
            return None;
        }
        tag = (tag << 1) | u64::from(one);
    }
    let head = tag >> 11;
    if check(head) != tag & 0x7ff {
        return None;
    }
    let dir = if head & 1 == 1 { Dir::BToA } else { Dir::AToB };
    Some(((head >> 13) as u16, ((head >> 1) & 0xfff) as usize, dir))
}

fn rtp_packet(payload_type: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type & 0x7f];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&u32::from(seq).wrapping_mul(160).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// What one direction of one call received.
#[derive(Default)]
struct Rx {
    /// When the sender's frame 0 was due (frame k is due FRAME * k later).
    start: Option<Instant>,
    /// Arrival of each tagged frame, by frame number (first copy).
    tagged: Vec<Option<Instant>>,
    /// Arrival of every RTP packet.
    arrivals: Vec<Instant>,
    misrouted: u64,
}

impl Rx {
    fn record(&mut self, now: Instant, packet: &[u8], call: usize, dir: Dir) {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return;
        }
        self.arrivals.push(now);
        let csrc = usize::from(packet[0] & 0x0f) * 4;
        let Some(codec) = Codec::from_payload_type(packet[1] & 0x7f) else {
            return;
        };
        let Some(payload) = packet.get(12 + csrc..) else {
            return;
        };
        match read_tag(codec, payload) {
            Some((k, c, d)) if c == call && d == dir => {
                let k = usize::from(k);
                if self.tagged.len() <= k {
                    self.tagged.resize(k + 1, None);
                }
                self.tagged[k].get_or_insert(now);
            }
            Some(_) => self.misrouted += 1,
            None => {}
        }
    }

    /// Expected and received frames, late arrivals and delays over [w0, w1].
    fn summarize(&self, w0: Instant, w1: Instant) -> Stats {
        let frames = |d: Duration| (d.as_micros() / FRAME.as_micros()) as usize;
        let mut stats = Stats {
            misrouted: self.misrouted,
            ..Stats::default()
        };
        let Some(start) = self.start else {
            stats.expected = frames(w1.saturating_duration_since(w0)) as u64;
            return stats;
        };
        let from = w0.saturating_duration_since(start);
        let first = frames(from) + usize::from(from.as_micros() % FRAME.as_micros() != 0);
        let last = frames(w1.saturating_duration_since(start));
        for k in first..=last {
            stats.expected += 1;
            if let Some(Some(at)) = self.tagged.get(k) {
                stats.received += 1;
                let due = start + FRAME * k as u32;
                stats
                    .delays_us
                    .push(at.saturating_duration_since(due).as_micros() as u32);
            }
        }
        let in_window = |t: &Instant| *t >= w0 && *t <= w1;
        stats.late = self
            .arrivals
            .windows(2)
            .filter(|w| in_window(&w[0]) && in_window(&w[1]) && w[1] - w[0] > LATE_GAP)
            .count() as u64;
        stats
    }
}

/// The two directions of call i.
#[derive(Default)]
struct Pair {
    a_to_b: Mutex<Rx>,
    b_to_a: Mutex<Rx>,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    expected: u64,
    received: u64,
    late: u64,
    misrouted: u64,
    delays_us: Vec<u32>,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.expected += other.expected;
        self.received += other.received.min(other.expected);
        self.late += other.late;
        self.misrouted += other.misrouted;
        self.delays_us.extend_from_slice(&other.delays_us);
    }

    fn lost_pct(&self) -> f64 {
        100.0 * self.expected.saturating_sub(self.received) as f64 / self.expected.max(1) as f64
    }
}

#[derive(Default, Debug, Clone)]
struct CallResult {
    answered: bool,
    ok: bool,
    a_to_b: Stats,
    b_to_a: Stats,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let echo = args.len() == 5 && args[4] == "echo";
    anyhow::ensure!(
        args.len() == 4 || args.len() == 6 || echo,
        "usage: bridge_load SERVER_ADDR CALLS SECONDS [CODEC_A CODEC_B | echo]"
    );
    let server: SocketAddr = args[1].parse()?;
    let calls: usize = args[2].parse()?;
    let seconds: u64 = args[3].parse()?;
    anyhow::ensure!(
        calls <= 4096,
        "at most 4096 calls (the tag's call index has 12 bits)"
    );
    anyhow::ensure!(
        (2..=1200).contains(&seconds),
        "SECONDS is 2-1200 (the tag's frame number has 16 bits)"
    );
    let (codec_a, codec_b) = match args.get(4..6) {
        Some([a, b]) => (Codec::parse(a)?, Codec::parse(b)?),
        _ => (Codec::Pcmu, Codec::Pcmu),
    };
    let pairs: Vec<Arc<Pair>> = (0..calls).map(|_| Arc::default()).collect();

    // Phones: register them all, spread over a moment.
    let spread = move |i: usize, total: Duration| total * i as u32 / calls.max(1) as u32;
    let register_over = Duration::from_millis((calls as u64 * 2).max(500));
    let mut registering = Vec::new();
    for i in (0..calls).filter(|_| !echo) {
        registering.push(tokio::spawn(async move {
            sleep(spread(i, register_over)).await;
            let user = format!("u{}", FIRST_USER + i);
            let rtp = UdpSocket::bind((server.ip(), 0)).await?;
            let port = rtp.local_addr()?.port();
            let password = format!("pw-{user}");
            let mut callee = Callee::new(server, &user, &password, port, codec_b.name()).await?;
            let status = callee.register(3600).await;
            anyhow::Ok((callee, rtp, status))
        }));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut registered = 0;
    let mut phones = Vec::new();
    for (i, task) in registering.into_iter().enumerate() {
        let (mut callee, rtp, status) = task.await??;
        if status == Some(200) {
            registered += 1;
        } else if i - registered < 3 {
            eprintln!("u{}: REGISTER answered {status:?}", FIRST_USER + i);
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let stop = stop_rx.clone();
        phones.push(tokio::spawn(async move {
            callee.serve(events_tx, stop).await;
            callee.register(0).await
        }));
        tokio::spawn(phone_media(
            i,
            rtp,
            events_rx,
            Arc::clone(&pairs[i]),
            stop_rx.clone(),
        ));
    }

    // Callers.
    let ua = Ua::new(server).await?;
    let call_over = Duration::from_millis((calls as u64 * 4).max(1000));
    let mut tasks = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        let (ua, pair) = (ua.clone(), Arc::clone(pair));
        tasks.push(tokio::spawn(async move {
            sleep(spread(i, call_over)).await;
            one_call(i, ua, pair, codec_a, seconds, echo)
                .await
                .unwrap_or_default()
        }));
    }
    let (mut ok, mut answered) = (0, 0);
    let (mut a_to_b, mut b_to_a) = (Stats::default(), Stats::default());
    for task in tasks {
        let r = task.await?;
        ok += usize::from(r.ok);
        answered += usize::from(r.answered);
        a_to_b.add(&r.a_to_b);
        b_to_a.add(&r.b_to_a);
    }
    let _ = stop_tx.send(true);
    for phone in phones {
        let _ = phone.await;
    }

    let mut both = Stats::default();
    both.add(&a_to_b);
    both.add(&b_to_a);
    both.delays_us.sort_unstable();
    let percentile = |p: f64| {
        let d = &both.delays_us;
        if d.is_empty() {
            return 0.0;
        }
        f64::from(d[((d.len() - 1) as f64 * p) as usize]) / 1000.0
    };
    let pct = |n: u64| 100.0 * n as f64 / both.expected.max(1) as f64;
    println!(
        "calls={calls} ok={ok} lost_pct={:.3} late_pct={:.3} rx_packets={} registered={registered} \
         answered={answered} a_to_b_lost_pct={:.3} b_to_a_lost_pct={:.3} delay_p50_ms={:.1} \
         delay_p99_ms={:.1} misrouted={} mode={}",
        both.lost_pct(),
        pct(both.late),
        both.received,
        a_to_b.lost_pct(),
        b_to_a.lost_pct(),
        percentile(0.50),
        percentile(0.99),
        both.misrouted,
        if echo { "echo" } else { "bridged" }
    );
    Ok(())
}

/// Caller i: calls u(100+i), sends its tagged stream for `seconds` while counting the
/// phone's, then hangs up. With `echo` it calls the echo extension instead and counts
/// its own frames coming back.
async fn one_call(
    i: usize,
    ua: Ua,
    pair: Arc<Pair>,
    codec: Codec,
    seconds: u64,
    echo: bool,
) -> anyhow::Result<CallResult> {
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let user = if echo {
        ECHO_EXTENSION.to_string()
    } else {
        format!("u{}", FIRST_USER + i)
    };
    let back = if echo { Dir::AToB } else { Dir::BToA };
    let port = rtp.local_addr()?.port();
    let rtpmap = format!("{}/8000", codec.name());
    let Some(dialog) = ua
        .call_offering(i, &user, port, codec.payload_type(), &rtpmap)
        .await
    else {
        return Ok(CallResult::default());
    };
    let media_to = dialog.media_to;
    let mut tick = interval(FRAME);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    pair.a_to_b.lock().expect("lock").start = Some(start);
    if echo {
        pair.b_to_a.lock().expect("lock").start = Some(start);
    }
    let end = start + Duration::from_secs(seconds);
    let (w0, w1) = (start + WARMUP, end - TAIL);
    let ssrc = 0x6000_0000 + 2 * i as u32;
    let mut k: u16 = 0;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if Instant::now() < end {
                    let frame = tagged_frame(codec, k, i, Dir::AToB);
                    let packet = rtp_packet(codec.payload_type(), k, ssrc, &frame);
                    k = k.wrapping_add(1);
                    let _ = rtp.send_to(&packet, media_to).await;
                }
            }
            _ = sleep_until(end + LINGER) => break,
            r = rtp.recv_from(&mut buf) => if let Ok((n, _)) = r {
                pair.b_to_a.lock().expect("lock").record(Instant::now(), &buf[..n], i, back);
            }
        }
    }
    // Echoed: one stream, counted where it comes back.
    let a_to_b = if echo {
        Stats::default()
    } else {
        pair.a_to_b.lock().expect("lock").summarize(w0, w1)
    };
    let b_to_a = pair.b_to_a.lock().expect("lock").summarize(w0, w1);
    let bye = ua.bye(&dialog).await;
    Ok(CallResult {
        answered: true,
        ok: bye && (echo || a_to_b.received > 0) && b_to_a.received > 0,
        a_to_b,
        b_to_a,
    })
}

/// Phone i's media: from each answer to its call's end, sends a tagged stream to the
/// switch and counts the caller's.
async fn phone_media(
    i: usize,
    rtp: UdpSocket,
    mut events: mpsc::UnboundedReceiver<CalleeEvent>,
    pair: Arc<Pair>,
    mut stop: watch::Receiver<bool>,
) {
    let ssrc = 0x6000_0001 + 2 * i as u32;
    let mut buf = [0u8; 2048];
    loop {
        let (media_to, codec) = tokio::select! {
            _ = stopped(&mut stop) => return,
            event = events.recv() => match event {
                None => return,
                Some(CalleeEvent::Answered { media_to, payload_type }) => {
                    (media_to, Codec::from_payload_type(payload_type).unwrap_or(Codec::Pcmu))
                }
                Some(CalleeEvent::Ended) => continue,
            },
        };
        let mut tick = interval(FRAME);
        tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
        pair.b_to_a.lock().expect("lock").start = Some(Instant::now());
        let mut k: u16 = 0;
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                event = events.recv() => match event {
                    None => return,
                    Some(CalleeEvent::Ended) => break,
                    Some(CalleeEvent::Answered { .. }) => {}
                },
                _ = tick.tick() => {
                    let frame = tagged_frame(codec, k, i, Dir::BToA);
                    let packet = rtp_packet(codec.payload_type(), k, ssrc, &frame);
                    k = k.wrapping_add(1);
                    let _ = rtp.send_to(&packet, media_to).await;
                }
                r = rtp.recv_from(&mut buf) => if let Ok((n, _)) = r {
                    pair.a_to_b.lock().expect("lock").record(Instant::now(), &buf[..n], i, Dir::AToB);
                }
            }
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_survive_g711_in_either_law_and_transcoding() {
        for (from, to) in [
            (Codec::Pcmu, Codec::Pcmu),
            (Codec::Pcmu, Codec::Pcma),
            (Codec::Pcma, Codec::Pcmu),
        ] {
            let frame = tagged_frame(from, 4321, 257, Dir::BToA);
            let relayed: Vec<u8> = frame.iter().map(|c| to.encode(from.decode(*c))).collect();
            assert_eq!(read_tag(to, &relayed), Some((4321, 257, Dir::BToA)));
        }
    }

    #[test]
    fn silence_and_attenuated_repeats_are_not_tags() {
        assert_eq!(read_tag(Codec::Pcmu, &[0xff; 160]), None);
        let frame = tagged_frame(Codec::Pcmu, 7, 1, Dir::AToB);
        let quiet: Vec<u8> = frame
            .iter()
            .map(|c| g711::linear_to_mulaw(g711::mulaw_to_linear(*c) / 8))
            .collect();
        assert_eq!(read_tag(Codec::Pcmu, &quiet), None);
    }
}
