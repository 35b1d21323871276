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
//! CODEC_A is what the callers offer, PCMU (default) or PCMA; CODEC_B what the phones
//! answer with: PCMU, PCMA or opus. PCMU -> PCMA transcodes between the laws on each
//! leg; PCMU -> opus is the full transcoding path (G.711 at 8 kHz on one leg, Opus at
//! 48 kHz on the other: decode, resample and encode, both ways).
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
//! With an Opus phone the tags cannot be used: Opus is lossy and the switch resamples
//! 8 <-> 48 kHz, so no sample survives as sent. The phone then sends one second of
//! tone, encoded once at start and replayed (encoding hundreds of streams here would
//! take the CPU the switch is measured on), and each side counts voiced frames instead
//! of tags: a packet whose decoded audio is louder than -34 dBFS (the phone decodes
//! the switch's Opus; the caller its G.711), one per sequence number, arriving within
//! the window. Expected is the window's length in frames, less one for where the
//! 20 ms grid falls on its edges. This sees the switch's packets stop carrying audio
//! (nothing arrived to relay, or a long gap went silent), not a single lost frame
//! the switch concealed by repeating the one before it (up to 5 in a row), and it
//! gives no per-frame delay (`delay_*_ms=-`); pacing (late) is measured the same way.
//!
//! A call is ok when it was answered, tagged (or voiced) audio arrived both ways and
//! its BYE got 200. Prints one line:
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
use sofia_media::codec::{CodecKind, Decoder, Encoder};
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
/// A frame louder than this (RMS, -34 dBFS of full scale 1.0) is voiced; the tags and
/// the phone's tone are -12 dBFS or louder, the switch's silence is digital zero.
const VOICED_RMS: f32 = 0.02;
/// The Opus phone's tone: frames encoded once and replayed in a loop (one second).
const TONE_FRAMES: usize = 50;

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
            other => anyhow::bail!("codec {other}: the callers send PCMU or PCMA"),
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

/// What the phones answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PhoneCodec {
    /// Tagged G.711 of that law.
    G711(Codec),
    /// Opus: the tone, counted as voiced frames (see the module doc).
    Opus,
}

impl PhoneCodec {
    fn parse(name: &str) -> anyhow::Result<Self> {
        if name.eq_ignore_ascii_case("opus") {
            return Ok(Self::Opus);
        }
        Codec::parse(name)
            .map(Self::G711)
            .map_err(|_| anyhow::anyhow!("codec {name}: the phones answer PCMU, PCMA or opus"))
    }

    fn name(self) -> &'static str {
        match self {
            Self::G711(codec) => codec.name(),
            Self::Opus => "opus",
        }
    }
}

/// The Opus phone's tone (200 and 1100 Hz at -12 dBFS each), TONE_FRAMES 20 ms
/// frames of Opus at 48 kHz.
fn opus_tone() -> anyhow::Result<Vec<Vec<u8>>> {
    let mut encoder = Encoder::new(CodecKind::Opus)?;
    let samples = CodecKind::Opus.samples_per_frame(20);
    let rate = CodecKind::Opus.clock_rate() as f32;
    (0..TONE_FRAMES)
        .map(|f| {
            let pcm: Vec<f32> = (0..samples)
                .map(|n| {
                    let t = (f * samples + n) as f32 / rate;
                    let tau = std::f32::consts::TAU;
                    0.25 * (tau * 200.0 * t).sin() + 0.25 * (tau * 1100.0 * t).sin()
                })
                .collect();
            let mut packet = Vec::new();
            encoder.encode(&pcm, &mut packet)?;
            Ok(packet)
        })
        .collect()
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
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

/// An RTP packet; `samples` per frame advance the timestamp (160 for G.711, 960 for
/// Opus at 20 ms).
fn rtp_packet(payload_type: u8, seq: u16, samples: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, payload_type & 0x7f];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&u32::from(seq).wrapping_mul(samples).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// How one direction recognises the other side's frames.
#[derive(Default)]
enum Listen {
    /// Tagged G.711 frames, of the law their payload type says.
    #[default]
    Tags,
    /// Voiced G.711 frames (audio that crossed Opus on the other leg).
    VoicedG711,
    /// Voiced Opus frames of payload type `pt`, decoded here.
    VoicedOpus { pt: u8, decoder: Box<Decoder> },
}

/// What one direction of one call received.
#[derive(Default)]
struct Rx {
    listen: Listen,
    /// When the sender's frame 0 was due (frame k is due FRAME * k later).
    start: Option<Instant>,
    /// Arrival of each tagged frame, by frame number (first copy).
    tagged: Vec<Option<Instant>>,
    /// Arrival of every RTP packet.
    arrivals: Vec<Instant>,
    /// Arrival and sequence number of each voiced packet (voiced listening).
    voiced: Vec<(Instant, u16)>,
    misrouted: u64,
    /// Decoded audio, reused.
    pcm: Vec<f32>,
}

impl Rx {
    fn record(&mut self, now: Instant, packet: &[u8], call: usize, dir: Dir) {
        if packet.len() < 12 || packet[0] >> 6 != 2 {
            return;
        }
        self.arrivals.push(now);
        let csrc = usize::from(packet[0] & 0x0f) * 4;
        let pt = packet[1] & 0x7f;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let Some(payload) = packet.get(12 + csrc..) else {
            return;
        };
        self.pcm.clear();
        let level = match &mut self.listen {
            Listen::VoicedOpus { pt: ours, decoder } if *ours == pt => decoder
                .decode(payload, &mut self.pcm)
                .ok()
                .map(|_| rms(&self.pcm)),
            Listen::VoicedG711 => Codec::from_payload_type(pt).map(|codec| {
                self.pcm.extend(
                    payload
                        .iter()
                        .map(|c| f32::from(codec.decode(*c)) / 32768.0),
                );
                rms(&self.pcm)
            }),
            Listen::VoicedOpus { .. } => None,
            Listen::Tags => {
                if let Some(codec) = Codec::from_payload_type(pt) {
                    self.record_tag(now, codec, payload, call, dir);
                }
                return;
            }
        };
        if level.is_some_and(|l| l > VOICED_RMS) {
            self.voiced.push((now, seq));
        }
    }

    fn record_tag(&mut self, now: Instant, codec: Codec, payload: &[u8], call: usize, dir: Dir) {
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
        let in_window = |t: &Instant| *t >= w0 && *t <= w1;
        stats.late = self
            .arrivals
            .windows(2)
            .filter(|w| in_window(&w[0]) && in_window(&w[1]) && w[1] - w[0] > LATE_GAP)
            .count() as u64;
        if !matches!(self.listen, Listen::Tags) {
            // One per sequence number, by arrival; less one frame for the grid's edges.
            stats.expected = frames(w1.saturating_duration_since(w0)).saturating_sub(1) as u64;
            let mut seqs: Vec<u16> = (self.voiced.iter())
                .filter(|(at, _)| in_window(at))
                .map(|(_, seq)| *seq)
                .collect();
            seqs.sort_unstable();
            seqs.dedup();
            stats.received = seqs.len() as u64;
            return stats;
        }
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
        Some([a, b]) => (Codec::parse(a)?, PhoneCodec::parse(b)?),
        _ => (Codec::Pcmu, PhoneCodec::G711(Codec::Pcmu)),
    };
    let tone = Arc::new(if codec_b == PhoneCodec::Opus {
        opus_tone()?
    } else {
        Vec::new()
    });
    let pairs: Vec<Arc<Pair>> = (0..calls).map(|_| Arc::default()).collect();
    if codec_b == PhoneCodec::Opus {
        for pair in &pairs {
            pair.b_to_a.lock().expect("lock").listen = Listen::VoicedG711;
        }
    }

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
            Arc::clone(&tone),
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
            return "-".to_string(); // voiced counting has no per-frame delay
        }
        format!(
            "{:.1}",
            f64::from(d[((d.len() - 1) as f64 * p) as usize]) / 1000.0
        )
    };
    let pct = |n: u64| 100.0 * n as f64 / both.expected.max(1) as f64;
    println!(
        "calls={calls} ok={ok} lost_pct={:.3} late_pct={:.3} rx_packets={} registered={registered} \
         answered={answered} a_to_b_lost_pct={:.3} b_to_a_lost_pct={:.3} delay_p50_ms={} \
         delay_p99_ms={} misrouted={} mode={}",
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
                    let packet = rtp_packet(codec.payload_type(), k, 160, ssrc, &frame);
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

/// Phone i's media: from each answer to its call's end, sends a tagged stream (or,
/// answering Opus, the replayed `tone`) to the switch and counts the caller's.
async fn phone_media(
    i: usize,
    rtp: UdpSocket,
    mut events: mpsc::UnboundedReceiver<CalleeEvent>,
    pair: Arc<Pair>,
    tone: Arc<Vec<Vec<u8>>>,
    mut stop: watch::Receiver<bool>,
) {
    let ssrc = 0x6000_0001 + 2 * i as u32;
    let mut buf = [0u8; 2048];
    loop {
        let (media_to, payload_type) = tokio::select! {
            _ = stopped(&mut stop) => return,
            event = events.recv() => match event {
                None => return,
                Some(CalleeEvent::Answered { media_to, payload_type }) => (media_to, payload_type),
                Some(CalleeEvent::Ended) => continue,
            },
        };
        // Opus: the tone, and the switch's Opus decoded here (one decoder per call).
        let opus = !tone.is_empty();
        if opus {
            match Decoder::new(CodecKind::Opus) {
                Ok(decoder) => {
                    pair.a_to_b.lock().expect("lock").listen = Listen::VoicedOpus {
                        pt: payload_type,
                        decoder: Box::new(decoder),
                    }
                }
                Err(e) => {
                    eprintln!("u{}: no Opus decoder: {e}", FIRST_USER + i);
                    return;
                }
            }
        }
        let codec = Codec::from_payload_type(payload_type).unwrap_or(Codec::Pcmu);
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
                    let packet = if opus {
                        let frame = &tone[usize::from(k) % tone.len()];
                        rtp_packet(payload_type, k, 960, ssrc, frame)
                    } else {
                        let frame = tagged_frame(codec, k, i, Dir::BToA);
                        rtp_packet(codec.payload_type(), k, 160, ssrc, &frame)
                    };
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
    fn the_opus_tone_is_voiced_and_opus_silence_is_not() {
        let tone = opus_tone().expect("encoder");
        let mut decoder = Decoder::new(CodecKind::Opus).expect("decoder");
        let mut pcm = Vec::new();
        for packet in &tone[..10] {
            pcm.clear();
            decoder.decode(packet, &mut pcm).expect("decodes");
        }
        assert!(rms(&pcm) > VOICED_RMS, "tone at {}", rms(&pcm));
        let mut encoder = Encoder::new(CodecKind::Opus).expect("encoder");
        for _ in 0..10 {
            let mut packet = Vec::new();
            encoder.encode(&[0.0; 960], &mut packet).expect("encodes");
            pcm.clear();
            decoder.decode(&packet, &mut pcm).expect("decodes");
        }
        assert!(rms(&pcm) < VOICED_RMS, "silence at {}", rms(&pcm));
    }

    #[test]
    fn voiced_counting_sees_frames_that_went_silent() {
        let start = Instant::now();
        let tone: Vec<u8> = (0..160)
            .map(|n| g711::linear_to_mulaw(if n % 20 < 10 { 8000 } else { -8000 }))
            .collect();
        let silence = [g711::linear_to_mulaw(0); 160];
        let received = |silent: std::ops::Range<u16>| {
            let mut rx = Rx {
                listen: Listen::VoicedG711,
                ..Rx::default()
            };
            for k in 0..100u16 {
                let payload = if silent.contains(&k) {
                    &silence[..]
                } else {
                    &tone[..]
                };
                let at = start + FRAME * u32::from(k);
                rx.record(at, &rtp_packet(0, k, 160, 1, payload), 0, Dir::BToA);
            }
            rx.summarize(start + FRAME * 10, start + FRAME * 90)
        };
        // 81 arrivals in the window against 79 expected: nothing lost.
        let all = received(0..0);
        assert_eq!((all.expected, all.received.min(all.expected)), (79, 79));
        // Ten frames that carried no audio are ten fewer.
        let gap = received(40..50);
        assert_eq!((gap.expected, gap.received), (79, 71));
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
