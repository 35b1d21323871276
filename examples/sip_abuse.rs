//! Hostile and real traffic against a switch on loopback, for bench/hostile.sh: SIP
//! scanners (svmap, svcrack), spoofed-source credential floods, TCP stream abuse, and
//! real users registering and calling the echo extension while all that goes on. Every
//! source binds its own 127/8 address (loopback answers to all of them), so that the
//! switch sees attackers and users as different hosts. Every loop is bounded in time
//! and count.
//!
//!   sip_abuse SERVER COMMAND [ARGS] [OPTIONS]
//!
//! Commands:
//!   svmap RATE SECS             OPTIONS sweep, "User-Agent: friendly-scanner", from --from
//!   svcrack USER RATE SECS      password guessing for USER (REGISTER, 401, wrong answer)
//!   spoof SECS [RATE]           REGISTERs with made-up credentials from the forged source
//!                               --victim (a real user's address, another port), half with
//!                               random nonces, half with nonces the attacker got at --from
//!   users N SECS                N real users from --users-ip on: each --period-ms registers
//!                               (digest) and calls 9196 (digest, PCMU, RTP echo, BYE)
//!   register N                  N users register once each (--transport udp|tcp)
//!   probe SECS                  a bystander at --from: OPTIONS over UDP every 100 ms and a
//!                               REGISTER over a new TCP connection every second
//!   slowloris N SECS            N TCP connections over --sources addresses from --from,
//!                               each trickling a header byte a second, never finishing
//!   idle-tcp N [SECS]           N idle TCP connections over --sources addresses, held SECS
//!   oversized                   messages past the size limit, over TCP and UDP
//!   content-length-lies         Content-Length longer, shorter, negative, doubled, ...
//!   echo-call SECS              one call to 9196 streaming SECS of audio, with --loss and
//!                               --reorder percentages applied in this process
//!
//! Options: --from IP (default 127.0.0.2), --users-ip IP (127.0.0.10), --user-base N
//! (1000), --pw-prefix P (pw-; a user's password is P followed by the user), --victim IP
//! (the first user's address), --victim-user U (the first user), --period-ms N (1000),
//! --sources K (1), --transport udp|tcp, --loss PCT, --reorder PCT, --wait SECS (35: how
//! long a lie that leaves a message unfinished is watched).
//!
//! Output: one line per result, `key=value` pairs separated by spaces, the first naming
//! what it is about (`op=register ...`, `svmap ...`).

#[path = "support/sip_client.rs"]
#[allow(dead_code)]
mod sip_client;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use sip_client::{
    forged_authorization, nth_ip, parse_challenge, pcmu_packet, status_of, tcp_from, token,
    tone_frame, CallOutcome, Outcome, Phone,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::{sleep, sleep_until, timeout, Instant};

struct Opts {
    server: SocketAddr,
    from: Ipv4Addr,
    users_ip: Ipv4Addr,
    user_base: u32,
    pw_prefix: String,
    victim: Option<Ipv4Addr>,
    victim_user: Option<String>,
    period: Duration,
    sources: u32,
    tcp: bool,
    loss: f64,
    reorder: f64,
    wait: Duration,
}

impl Opts {
    fn user(&self, i: u32) -> String {
        (self.user_base + i).to_string()
    }
    fn password(&self, user: &str) -> String {
        format!("{}{user}", self.pw_prefix)
    }
    fn user_ip(&self, i: u32) -> IpAddr {
        nth_ip(self.users_ip, i)
    }
}

const USAGE: &str = "usage: sip_abuse SERVER COMMAND [ARGS] [OPTIONS] (see the file's header)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut positional = Vec::new();
    let mut options: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if let Some(name) = arg.strip_prefix("--") {
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            options.insert(name.to_string(), value);
        } else {
            positional.push(arg);
        }
    }
    anyhow::ensure!(positional.len() >= 2, "{USAGE}");
    let opt = |name: &str, default: &str| options.get(name).cloned().unwrap_or(default.into());
    let opts = Opts {
        server: positional[0].parse().context("SERVER is ip:port")?,
        from: opt("from", "127.0.0.2").parse()?,
        users_ip: opt("users-ip", "127.0.0.10").parse()?,
        user_base: opt("user-base", "1000").parse()?,
        pw_prefix: opt("pw-prefix", "pw-"),
        victim: options.get("victim").map(|v| v.parse()).transpose()?,
        victim_user: options.get("victim-user").cloned(),
        period: Duration::from_millis(opt("period-ms", "1000").parse()?),
        sources: opt("sources", "1").parse::<u32>()?.max(1),
        tcp: opt("transport", "udp").eq_ignore_ascii_case("tcp"),
        loss: opt("loss", "0").parse()?,
        reorder: opt("reorder", "0").parse()?,
        wait: Duration::from_secs(opt("wait", "35").parse()?),
    };
    let num = |i: usize| -> anyhow::Result<u64> {
        positional
            .get(i)
            .with_context(|| format!("{USAGE}: {} needs more arguments", positional[1]))?
            .parse()
            .with_context(|| format!("argument {i} is a number"))
    };
    let secs = |i: usize| num(i).map(|s| Duration::from_secs(s.min(24 * 3600)));
    match positional[1].as_str() {
        "svmap" => svmap(&opts, num(2)?, secs(3)?).await,
        "svcrack" => {
            let user = positional.get(2).context(USAGE)?.clone();
            svcrack(&opts, &user, num(3)?, secs(4)?).await
        }
        "spoof" => {
            let rate = if positional.len() > 3 { num(3)? } else { 200 };
            spoof(&opts, secs(2)?, rate).await
        }
        "users" => users(&opts, num(2)? as u32, secs(3)?).await,
        "register" => register(&opts, num(2)? as u32).await,
        "probe" => probe(&opts, secs(2)?).await,
        "slowloris" => slowloris(&opts, num(2)? as u32, secs(3)?).await,
        "idle-tcp" => {
            let hold = if positional.len() > 3 {
                secs(3)?
            } else {
                Duration::from_secs(10)
            };
            idle_tcp(&opts, num(2)? as u32, hold).await
        }
        "oversized" => oversized(&opts).await,
        "content-length-lies" => content_length_lies(&opts).await,
        "echo-call" => echo_call(&opts, secs(2)?).await,
        other => bail!("unknown command {other}; {USAGE}"),
    }
}

/// Latencies and outcomes of one kind of operation.
#[derive(Default)]
struct Stats {
    ok: u64,
    failures: BTreeMap<String, u64>,
    /// Milliseconds, of the successful ones.
    latencies: Vec<f64>,
}

impl Stats {
    fn record(&mut self, outcome: &Outcome) {
        if outcome.ok() {
            self.ok += 1;
            self.latencies.push(outcome.elapsed.as_secs_f64() * 1000.0);
        } else {
            *self.failures.entry(outcome.label()).or_default() += 1;
        }
    }

    fn fail(&self) -> u64 {
        self.failures.values().sum()
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.latencies.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[((q * v.len() as f64) as usize).min(v.len() - 1)]
    }

    fn line(&self, prefix: &str) -> String {
        let total = self.ok + self.fail();
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!(
            "{prefix} attempts={total} ok={} fail={} success_pct={:.2} p50_ms={:.2} p99_ms={:.2} failures={}",
            self.ok,
            self.fail(),
            100.0 * self.ok as f64 / total.max(1) as f64,
            self.quantile(0.50),
            self.quantile(0.99),
            if failures.is_empty() {
                "none".to_string()
            } else {
                failures.join(",")
            }
        )
    }
}

fn codes_line(codes: &BTreeMap<String, u64>) -> String {
    if codes.is_empty() {
        return "none".into();
    }
    codes
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sleeps until the `n`-th event of a stream paced at `rate` per second from `start`.
async fn pace(start: Instant, n: u64, rate: u64) {
    let at = start + Duration::from_secs_f64(n as f64 / rate.max(1) as f64);
    sleep_until(at).await;
}

/// svmap: OPTIONS to every extension of a range, as fast as asked, from one socket.
async fn svmap(o: &Opts, rate: u64, secs: Duration) -> anyhow::Result<()> {
    let sock = Arc::new(UdpSocket::bind((o.from, 0)).await?);
    let local = sock.local_addr()?;
    let codes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let (sock, codes, received) = (sock.clone(), codes.clone(), received.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]);
                let code = status_of(&text).map_or("other".into(), |s| s.to_string());
                *codes.lock().unwrap().entry(code).or_default() += 1;
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let max = rate.saturating_mul(secs.as_secs().max(1));
    while sent < max && start.elapsed() < secs {
        let ext = 100 + sent % 900;
        let branch = token();
        let request = format!(
            "OPTIONS sip:{ext}@{host} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: \"sipvicious\"<sip:100@1.1.1.1>;tag={tag}\r\n\
             To: \"sipvicious\"<sip:{ext}@{host}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
             Contact: <sip:100@{local}>\r\nAccept: application/sdp\r\nUser-Agent: friendly-scanner\r\n\
             Content-Length: 0\r\n\r\n",
            host = o.server.ip(),
            tag = token(),
        );
        let _ = sock.send_to(request.as_bytes(), o.server).await;
        sent += 1;
        pace(start, sent, rate).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    sleep(Duration::from_secs(1)).await;
    reader.abort();
    let got = received.load(Ordering::Relaxed);
    println!(
        "svmap from={} sent={sent} secs={elapsed:.1} rate_sent={:.0} responses={got} answered_pct={:.2} codes={}",
        o.from,
        sent as f64 / elapsed.max(1e-3),
        100.0 * got as f64 / sent.max(1) as f64,
        codes_line(&codes.lock().unwrap())
    );
    Ok(())
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// A shared UDP socket whose responses go to whoever waits for their Call-ID and CSeq.
struct Router {
    sock: Arc<UdpSocket>,
    waiters: Waiters,
    task: tokio::task::JoinHandle<()>,
}

impl Router {
    async fn bind(ip: IpAddr) -> std::io::Result<Self> {
        let sock = Arc::new(UdpSocket::bind((ip, 0)).await?);
        let waiters: Waiters = Arc::default();
        let task = {
            let (sock, waiters) = (sock.clone(), waiters.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    if status_of(&text).is_none_or(|s| s < 200) {
                        continue;
                    }
                    let key = format!(
                        "{} {}",
                        sip_client::header(&text, "Call-ID").unwrap_or_default(),
                        sip_client::header(&text, "CSeq").unwrap_or_default()
                    );
                    if let Some(tx) = waiters.lock().unwrap().remove(&key) {
                        let _ = tx.send(text);
                    }
                }
            })
        };
        Ok(Self {
            sock,
            waiters,
            task,
        })
    }

    /// Sends once (a scanner does not retransmit) and waits up to 2 s.
    async fn ask(
        &self,
        server: SocketAddr,
        request: &str,
        call_id: &str,
        cseq: &str,
    ) -> Option<String> {
        let (tx, rx) = oneshot::channel();
        let key = format!("{call_id} {cseq}");
        self.waiters.lock().unwrap().insert(key.clone(), tx);
        let _ = self.sock.send_to(request.as_bytes(), server).await;
        let got = timeout(Duration::from_secs(2), rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.waiters.lock().unwrap().remove(&key);
        got
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One svcrack guess: REGISTER, and if challenged, an answer with `guess`. The first
/// response's status, and the second's if there was one.
async fn guess(
    router: &Router,
    server: SocketAddr,
    user: &str,
    guess: &str,
) -> (Option<u16>, Option<u16>) {
    let local = router.sock.local_addr().expect("bound");
    let mut leg = sip_client::Leg::new("UDP", local, server, user);
    leg.user_agent = "friendly-scanner".into();
    let first = leg.request("REGISTER", 1, &token(), "Expires: 3600\r\n", None);
    let Some(r1) = router.ask(server, &first, &leg.call_id, "1 REGISTER").await else {
        return (None, None);
    };
    let s1 = status_of(&r1);
    let Some(challenge) = (s1 == Some(401)).then(|| parse_challenge(&r1)).flatten() else {
        return (s1, None);
    };
    let auth = sip_client::authorization(&challenge, user, guess, "REGISTER", &leg.uri("REGISTER"));
    let second = leg.request(
        "REGISTER",
        2,
        &token(),
        &format!("Expires: 3600\r\nAuthorization: {auth}\r\n"),
        None,
    );
    let r2 = router
        .ask(server, &second, &leg.call_id, "2 REGISTER")
        .await;
    (s1, r2.as_deref().and_then(status_of))
}

/// svcrack: guesses for one user, a new password each time, at `rate` guesses/s.
async fn svcrack(o: &Opts, user: &str, rate: u64, secs: Duration) -> anyhow::Result<()> {
    let router = Arc::new(Router::bind(IpAddr::V4(o.from)).await?);
    let start = Instant::now();
    let max = rate.saturating_mul(secs.as_secs().max(1));
    let mut tasks = Vec::new();
    let mut n = 0u64;
    while n < max && start.elapsed() < secs {
        let (router, server, user) = (router.clone(), o.server, user.to_string());
        let at = start.elapsed();
        tasks.push(tokio::spawn(async move {
            let r = guess(&router, server, &user, &format!("guess{n:06}")).await;
            (at, r)
        }));
        n += 1;
        pace(start, n, rate).await;
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await?);
    }
    results.sort_by_key(|(at, _)| *at);
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut wrong, mut blocked, mut accepted, mut timeouts) = (0u64, 0u64, 0u64, 0u64);
    let mut first_block: Option<(usize, Duration)> = None;
    let mut answered_after_block = 0u64;
    for (i, (at, (s1, s2))) in results.iter().enumerate() {
        let label = |s: &Option<u16>| s.map_or("timeout".into(), |s| s.to_string());
        *codes.entry(format!("first_{}", label(s1))).or_default() += 1;
        if s2.is_some() || *s1 == Some(401) {
            *codes.entry(format!("answer_{}", label(s2))).or_default() += 1;
        }
        let refused = *s1 == Some(403) || *s2 == Some(403);
        if refused {
            blocked += 1;
            first_block.get_or_insert((i + 1, *at));
        } else if first_block.is_some() && (*s1 == Some(401) || s2.is_some()) {
            answered_after_block += 1;
        }
        match (s1, s2) {
            (_, Some(200)) | (Some(200), _) => accepted += 1,
            (Some(401), Some(401)) => wrong += 1,
            (None, _) | (Some(401), None) => timeouts += 1,
            _ => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "svcrack from={} user={user} guesses={} secs={elapsed:.1} rate_sent={:.0} wrong_401={wrong} blocked_403={blocked} \
         accepted={accepted} timeouts={timeouts} first_403_at_guess={} first_403_at_s={} challenged_after_block={answered_after_block} codes={}",
        o.from,
        results.len(),
        results.len() as f64 / elapsed.max(1e-3),
        first_block.map_or("none".into(), |(i, _)| i.to_string()),
        first_block.map_or("none".into(), |(_, at)| format!("{:.2}", at.as_secs_f64())),
        codes_line(&codes)
    );
    Ok(())
}

/// Forged-source REGISTERs for the victim user, never reading a response (an off-path
/// attacker sees none): random nonces, and nonces the attacker was issued at its own
/// address.
async fn spoof(o: &Opts, secs: Duration, rate: u64) -> anyhow::Result<()> {
    let victim = o.victim.map_or(o.user_ip(0), IpAddr::V4);
    let user = o.victim_user.clone().unwrap_or_else(|| o.user(0));
    let forged = UdpSocket::bind((victim, 0)).await?;
    let local = forged.local_addr()?;
    let honest = Router::bind(IpAddr::V4(o.from)).await?;
    let mut borrowed: Option<sip_client::Challenge> = None;
    let (mut random_nonce, mut borrowed_nonce, mut nonces_fetched) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let max = rate.saturating_mul(secs.as_secs().max(1));
    let mut n = 0u64;
    while n < max && start.elapsed() < secs {
        let mut leg = sip_client::Leg::new("UDP", local, o.server, &user);
        leg.user_agent = "friendly-scanner".into();
        let uri = leg.uri("REGISTER");
        if n % 100 == 0 {
            // A genuine nonce, issued to the attacker's own address.
            let mut ask = sip_client::Leg::new("UDP", honest.sock.local_addr()?, o.server, &user);
            ask.user_agent = "friendly-scanner".into();
            let request = ask.request("REGISTER", 1, &token(), "Expires: 3600\r\n", None);
            if let Some(r) = honest
                .ask(o.server, &request, &ask.call_id, "1 REGISTER")
                .await
            {
                borrowed = parse_challenge(&r).or(borrowed);
                nonces_fetched += 1;
            }
        }
        let auth = match (&borrowed, n % 2) {
            (Some(challenge), 1) => {
                borrowed_nonce += 1;
                sip_client::authorization(challenge, &user, &format!("guess{n}"), "REGISTER", &uri)
            }
            _ => {
                random_nonce += 1;
                forged_authorization(&user, "sofia-phone", &uri)
            }
        };
        let request = leg.request(
            "REGISTER",
            1,
            &token(),
            &format!("Expires: 3600\r\nAuthorization: {auth}\r\n"),
            None,
        );
        let _ = forged.send_to(request.as_bytes(), o.server).await;
        n += 1;
        pace(start, n, rate).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "spoof forged_source={victim} user={user} sent={n} secs={elapsed:.1} rate_sent={:.0} random_nonce={random_nonce} \
         borrowed_nonce={borrowed_nonce} nonces_fetched_at={} fetched={nonces_fetched}",
        n as f64 / elapsed.max(1e-3),
        o.from
    );
    Ok(())
}

#[derive(Default)]
struct UserStats {
    register: Stats,
    invite: Stats,
    rtp: Stats,
    bye: Stats,
    cycles: u64,
}

/// N real users, each a cycle per period: register, call the echo, hang up.
async fn users(o: &Opts, n: u32, secs: Duration) -> anyhow::Result<()> {
    let stats: Arc<Mutex<UserStats>> = Arc::default();
    let start = Instant::now();
    let end = start + secs;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (ip, user, server, period) = (o.user_ip(i), o.user(i), o.server, o.period);
        let password = o.password(&user);
        let stats = stats.clone();
        // Spread the users over the period so their cycles do not arrive as one burst.
        let offset = period.mul_f64(f64::from(i) / f64::from(n.max(1)));
        tasks.push(tokio::spawn(async move {
            let mut phone = Phone::udp(ip, server).await?;
            let rtp = UdpSocket::bind((ip, 0)).await?;
            let mut next = start + offset;
            while next < end {
                sleep_until(next).await;
                next += period;
                let (_, reg) = phone.register(&user, &password, 600).await;
                let call: CallOutcome = phone.call_echo(&user, &password, "9196", &rtp, 10).await;
                let mut s = stats.lock().unwrap();
                s.cycles += 1;
                s.register.record(&reg);
                let not_reached = |what| Outcome {
                    status: Err(what),
                    elapsed: Duration::ZERO,
                };
                match &call.invite {
                    Some(invite) => s.invite.record(invite),
                    None => s.invite.record(&not_reached("error")),
                }
                // RTP and BYE only count for calls that were answered.
                if let Some(rtp) = &call.rtp {
                    s.rtp.record(rtp);
                }
                if let Some(bye) = &call.bye {
                    s.bye.record(bye);
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let s = stats.lock().unwrap();
    println!(
        "users n={n} secs={:.1} cycles={} period_ms={}",
        start.elapsed().as_secs_f64(),
        s.cycles,
        o.period.as_millis()
    );
    println!("{}", s.register.line("op=register"));
    println!("{}", s.invite.line("op=invite"));
    println!("{}", s.rtp.line("op=rtp"));
    println!("{}", s.bye.line("op=bye"));
    Ok(())
}

/// N users register once each, from their own addresses.
async fn register(o: &Opts, n: u32) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let (ip, user, server, tcp) = (o.user_ip(i), o.user(i), o.server, o.tcp);
        let password = o.password(&user);
        tasks.push(tokio::spawn(async move {
            let phone = if tcp {
                Phone::tcp(ip, server).await
            } else {
                Phone::udp(ip, server).await
            };
            match phone {
                Ok(mut phone) => phone.register(&user, &password, 3600).await.1,
                Err(_) => Outcome {
                    status: Err("connect"),
                    elapsed: Duration::ZERO,
                },
            }
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        stats.record(&t.await?);
    }
    let transport = if o.tcp { "tcp" } else { "udp" };
    println!(
        "{}",
        stats.line(&format!("op=register transport={transport} users={n}"))
    );
    Ok(())
}

/// A bystander: is the switch still answering while something else goes on?
async fn probe(o: &Opts, secs: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + secs;
    let server = o.server;
    let ip = IpAddr::V4(o.from);
    let user = o.victim_user.clone().unwrap_or_else(|| o.user(0));
    let password = o.password(&user);
    let tcp = tokio::spawn(async move {
        let mut stats = Stats::default();
        while Instant::now() < end {
            let next = Instant::now() + Duration::from_secs(1);
            let outcome = match Phone::tcp(ip, server).await {
                Ok(mut phone) => phone.register(&user, &password, 3600).await.1,
                Err(_) => Outcome {
                    status: Err("connect"),
                    elapsed: Duration::ZERO,
                },
            };
            stats.record(&outcome);
            sleep_until(next).await;
        }
        stats
    });
    let mut options = Stats::default();
    let mut phone = Phone::udp(ip, server).await?;
    while Instant::now() < end {
        let next = Instant::now() + Duration::from_millis(100);
        let leg = phone.leg("probe", "probe");
        let request = leg.request("OPTIONS", 1, &token(), "", None);
        let t0 = Instant::now();
        let result = phone
            .transact(&request, &leg.call_id, "1 OPTIONS", Duration::from_secs(4))
            .await;
        options.record(&Outcome {
            status: result.map(|r| status_of(&r).unwrap_or(0)),
            elapsed: t0.elapsed(),
        });
        sleep_until(next).await;
    }
    let tcp = tcp.await?;
    println!(
        "{}",
        options.line(&format!("probe op=options_udp from={}", o.from))
    );
    println!(
        "{}",
        tcp.line(&format!("probe op=register_tcp from={}", o.from))
    );
    Ok(())
}

/// The source address of the `i`-th of the attacker's connections.
fn spread(o: &Opts, i: u32) -> IpAddr {
    nth_ip(o.from, i % o.sources)
}

/// How a connection held by an attacker ended.
enum Ending {
    /// Closed by the switch within a second of connecting, before it was used.
    Refused,
    /// Closed by the switch after this long.
    ClosedAfter(Duration),
    /// Still open when the attacker stopped.
    StillOpen,
    ConnectError,
}

/// Waits up to `until` for the switch to close `stream` (EOF or reset); the moment it did.
async fn await_close(stream: &mut TcpStream, until: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        match timeout_at_opt(until, stream.read(&mut buf)).await {
            Some(Ok(0)) | Some(Err(_)) => return Some(Instant::now()),
            Some(Ok(_)) => continue,
            None => return None,
        }
    }
}

async fn timeout_at_opt<F: std::future::Future>(until: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(until, f).await.ok()
}

fn endings_line(prefix: &str, endings: &[Ending]) -> String {
    let mut lifetimes: Vec<f64> = Vec::new();
    let (mut refused, mut open, mut errors) = (0, 0, 0);
    for e in endings {
        match e {
            Ending::Refused => refused += 1,
            Ending::ClosedAfter(d) => lifetimes.push(d.as_secs_f64()),
            Ending::StillOpen => open += 1,
            Ending::ConnectError => errors += 1,
        }
    }
    lifetimes.sort_by(f64::total_cmp);
    let q = |q: f64| {
        lifetimes
            .get(((q * lifetimes.len() as f64) as usize).min(lifetimes.len().saturating_sub(1)))
            .map_or("none".to_string(), |v| format!("{v:.1}"))
    };
    format!(
        "{prefix} connections={} refused={refused} closed_by_server={} still_open={open} connect_errors={errors} \
         lifetime_min_s={} lifetime_p50_s={} lifetime_max_s={}",
        endings.len(),
        lifetimes.len(),
        lifetimes.first().map_or("none".to_string(), |v| format!("{v:.1}")),
        q(0.5),
        lifetimes.last().map_or("none".to_string(), |v| format!("{v:.1}")),
    )
}

/// Slowloris: each connection starts a REGISTER and then sends one more header byte a
/// second, never finishing it; when the switch drops it, the attacker reconnects.
async fn slowloris(o: &Opts, n: u32, secs: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + secs;
    let endings: Arc<Mutex<Vec<Ending>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (ip, server, endings) = (spread(o, i), o.server, endings.clone());
        tasks.push(tokio::spawn(async move {
            // Spread the connects over the first second.
            sleep(Duration::from_millis(u64::from(i) * 1000 / u64::from(n.max(1)))).await;
            while Instant::now() < end {
                let opened = Instant::now();
                let Ok(Ok(mut stream)) = timeout(Duration::from_secs(5), tcp_from(ip, server)).await else {
                    endings.lock().unwrap().push(Ending::ConnectError);
                    sleep(Duration::from_millis(500)).await;
                    continue;
                };
                // Refused connections are closed at once, before we send anything.
                if await_close(&mut stream, Instant::now() + Duration::from_millis(300)).await.is_some() {
                    endings.lock().unwrap().push(Ending::Refused);
                    sleep(Duration::from_millis(500)).await;
                    continue;
                }
                let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
                let start = format!(
                    "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{}\r\nX-Slow: ",
                    token()
                );
                let ending = if stream.write_all(start.as_bytes()).await.is_err() {
                    Ending::ClosedAfter(opened.elapsed())
                } else {
                    loop {
                        let tick = (Instant::now() + Duration::from_secs(1)).min(end);
                        if let Some(at) = await_close(&mut stream, tick).await {
                            break Ending::ClosedAfter(at - opened);
                        }
                        if Instant::now() >= end {
                            break Ending::StillOpen;
                        }
                        if stream.write_all(b"a").await.is_err() {
                            break Ending::ClosedAfter(opened.elapsed());
                        }
                    }
                };
                endings.lock().unwrap().push(ending);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "{}",
        endings_line(
            &format!(
                "slowloris n={n} sources={} from={} secs={}",
                o.sources,
                o.from,
                secs.as_secs()
            ),
            &endings.lock().unwrap()
        )
    );
    Ok(())
}

/// Idle connections: opened, then left alone for `hold`.
async fn idle_tcp(o: &Opts, n: u32, hold: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let end = start + hold;
    let mut tasks = Vec::new();
    for i in 0..n {
        let (ip, server) = (spread(o, i), o.server);
        tasks.push(tokio::spawn(async move {
            // Two thousand connects a second: the accept queue keeps up.
            sleep(Duration::from_micros(u64::from(i) * 500)).await;
            let opened = Instant::now();
            let Ok(Ok(mut stream)) = timeout(Duration::from_secs(5), tcp_from(ip, server)).await
            else {
                return Ending::ConnectError;
            };
            match await_close(&mut stream, end.max(opened + Duration::from_secs(1))).await {
                Some(at) if at - opened < Duration::from_secs(1) => Ending::Refused,
                Some(at) => Ending::ClosedAfter(at - opened),
                None => Ending::StillOpen,
            }
        }));
    }
    let mut endings = Vec::new();
    for t in tasks {
        endings.push(t.await?);
    }
    println!(
        "{}",
        endings_line(
            &format!(
                "idle_tcp n={n} sources={} from={} hold_s={}",
                o.sources,
                o.from,
                hold.as_secs()
            ),
            &endings
        )
    );
    Ok(())
}

/// Sends `bytes` on a new connection from `ip` and reports the first response's status
/// (if any) and whether the switch then closed the connection, watching for `watch`.
async fn stream_case(
    ip: IpAddr,
    server: SocketAddr,
    bytes: &[u8],
    watch: Duration,
) -> (String, String, f64) {
    let Ok(Ok(mut stream)) = timeout(Duration::from_secs(5), tcp_from(ip, server)).await else {
        return ("connect-error".into(), "n/a".into(), 0.0);
    };
    let start = Instant::now();
    // Written in pieces, so that a switch closing early does not leave us blocked.
    let mut write_error = false;
    for chunk in bytes.chunks(64 * 1024) {
        if timeout(Duration::from_secs(5), stream.write_all(chunk))
            .await
            .map_or(true, |r| r.is_err())
        {
            write_error = true;
            break;
        }
    }
    let until = start + watch;
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match timeout_at_opt(until, stream.read(&mut buf)).await {
            Some(Ok(0)) | Some(Err(_)) => break true,
            Some(Ok(n)) => got.extend_from_slice(&buf[..n]),
            None => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    let statuses: Vec<String> = text
        .split("SIP/2.0 ")
        .skip(1)
        .filter_map(|s| s.get(..3))
        .map(str::to_string)
        .collect();
    let response = if statuses.is_empty() {
        "none".into()
    } else {
        statuses.join("+")
    };
    let closed = match (closed, write_error) {
        (true, _) => "yes".to_string(),
        (false, true) => "write-refused".to_string(),
        (false, false) => "no".to_string(),
    };
    (response, closed, start.elapsed().as_secs_f64())
}

/// Sends one datagram and reports the response's status, if any came within 2 s.
async fn datagram_case(ip: IpAddr, server: SocketAddr, bytes: &[u8]) -> String {
    let Ok(sock) = UdpSocket::bind((ip, 0)).await else {
        return "bind-error".into();
    };
    if let Err(e) = sock.send_to(bytes, server).await {
        return format!("send-error:{}", e.kind());
    }
    let mut buf = vec![0u8; 65_535];
    match timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => {
            status_of(&String::from_utf8_lossy(&buf[..n])).map_or("other".into(), |s| s.to_string())
        }
        _ => "none".into(),
    }
}

/// An OPTIONS with `extra` headers and `body`, and a Content-Length header as given
/// (`None`: the true length).
fn options_with(
    local: &str,
    server: SocketAddr,
    extra: &str,
    length: Option<&str>,
    body: &str,
) -> String {
    let length = length.map_or(body.len().to_string(), str::to_string);
    format!(
        "OPTIONS sip:{server} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:abuse@{host}>;tag={t}\r\nTo: <sip:{host}>\r\nCall-ID: {b}\r\nCSeq: 1 OPTIONS\r\n{extra}\
         Content-Length: {length}\r\n\r\n{body}",
        b = token(),
        t = token(),
        host = server.ip(),
    )
}

/// Whether the switch still answers an OPTIONS over UDP from a bystander.
async fn still_serving(server: SocketAddr) -> bool {
    let Ok(mut phone) = Phone::udp(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), server).await else {
        return false;
    };
    let leg = phone.leg("check", "check");
    let request = leg.request("OPTIONS", 1, &token(), "", None);
    phone
        .transact(&request, &leg.call_id, "1 OPTIONS", Duration::from_secs(4))
        .await
        .is_ok_and(|r| status_of(&r) == Some(200))
}

async fn oversized(o: &Opts) -> anyhow::Result<()> {
    let (ip, server) = (IpAddr::V4(o.from), o.server);
    let local = format!("{}:5060", o.from);
    let watch = Duration::from_secs(5);
    let huge_header = format!("X-Huge: {}\r\n", "a".repeat(100_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "tcp_header_100k",
            options_with(&local, server, &huge_header, None, "").into_bytes(),
        ),
        (
            "tcp_body_1m",
            options_with(
                &local,
                server,
                "Content-Type: text/plain\r\n",
                None,
                &"b".repeat(1 << 20),
            )
            .into_bytes(),
        ),
        (
            "tcp_declared_body_100m",
            // Headers claim 100 MB; 256 KiB follow.
            format!(
                "{}{}",
                options_with(
                    &local,
                    server,
                    "Content-Type: text/plain\r\n",
                    Some("100000000"),
                    ""
                ),
                "c".repeat(256 * 1024)
            )
            .into_bytes(),
        ),
        (
            "tcp_10k_headers",
            options_with(&local, server, &"X-Many: 1\r\n".repeat(10_000), None, "").into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let (response, closed, secs) = stream_case(ip, server, &bytes, watch).await;
        println!(
            "oversized case={name} bytes={} response={response} closed={closed} secs={secs:.2} still_serving={}",
            bytes.len(),
            still_serving(server).await
        );
    }
    let udp_local = format!("{}:5060", o.from);
    let big = options_with(
        &udp_local,
        server,
        &format!("X-Pad: {}\r\n", "p".repeat(65_000)),
        None,
        "",
    )
    .replace("SIP/2.0/TCP", "SIP/2.0/UDP");
    let big = &big.as_bytes()[..big.len().min(65_507)];
    println!(
        "oversized case=udp_max_datagram bytes={} response={} still_serving={}",
        big.len(),
        datagram_case(ip, server, big).await,
        still_serving(server).await
    );
    Ok(())
}

async fn content_length_lies(o: &Opts) -> anyhow::Result<()> {
    let (ip, server) = (IpAddr::V4(o.from), o.server);
    let local = format!("{}:5060", o.from);
    let ct = "Content-Type: text/plain\r\n";
    let follow = options_with(&local, server, "", None, "");
    let cases: Vec<(&str, Vec<u8>, Duration)> = vec![
        (
            // Never finished: the switch must drop it (partial-message limit, 30 s).
            "tcp_longer_than_sent",
            options_with(&local, server, ct, Some("500"), "only ten b").into_bytes(),
            o.wait,
        ),
        (
            // The rest of the body is read as the next message: garbage, then a real one.
            "tcp_shorter_than_sent",
            format!(
                "{}{follow}",
                options_with(
                    &local,
                    server,
                    ct,
                    Some("5"),
                    "0123456789-this-is-not-sip\r\n\r\n"
                )
            )
            .into_bytes(),
            Duration::from_secs(3),
        ),
        (
            "tcp_negative",
            options_with(&local, server, ct, Some("-1"), "x").into_bytes(),
            Duration::from_secs(3),
        ),
        (
            "tcp_not_a_number",
            options_with(&local, server, ct, Some("ten"), "x").into_bytes(),
            Duration::from_secs(3),
        ),
        (
            "tcp_two_different",
            options_with(
                &local,
                server,
                &format!("{ct}Content-Length: 9\r\n"),
                Some("1"),
                "x",
            )
            .into_bytes(),
            Duration::from_secs(3),
        ),
        (
            "tcp_huge_number",
            options_with(&local, server, ct, Some("99999999999999999999999"), "x").into_bytes(),
            Duration::from_secs(3),
        ),
        (
            "tcp_missing",
            options_with(&local, server, ct, None, "xyz")
                .replace("Content-Length: 3\r\n", "")
                .into_bytes(),
            Duration::from_secs(3),
        ),
    ];
    for (name, bytes, watch) in cases {
        let (response, closed, secs) = stream_case(ip, server, &bytes, watch).await;
        println!(
            "clie case={name} response={response} closed={closed} secs={secs:.2} still_serving={}",
            still_serving(server).await
        );
    }
    let udp = |length: &str, body: &str| {
        options_with(&local, server, ct, Some(length), body).replace("SIP/2.0/TCP", "SIP/2.0/UDP")
    };
    for (name, datagram) in [
        ("udp_longer_than_sent", udp("500", "only ten b")),
        ("udp_shorter_than_sent", udp("3", "0123456789")),
        ("udp_negative", udp("-5", "x")),
    ] {
        println!(
            "clie case={name} response={} still_serving={}",
            datagram_case(ip, server, datagram.as_bytes()).await,
            still_serving(server).await
        );
    }
    Ok(())
}

/// One echo call with the media impaired in this process: each frame is dropped with
/// probability --loss, or held back and sent after the next one with --reorder; echoed
/// frames are dropped on arrival with --loss too (loss both ways).
async fn echo_call(o: &Opts, secs: Duration) -> anyhow::Result<()> {
    let ip = IpAddr::V4(o.from);
    let user = o.victim_user.clone().unwrap_or_else(|| o.user(0));
    let password = o.password(&user);
    let mut phone = Phone::udp(ip, o.server).await?;
    let rtp = UdpSocket::bind((ip, 0)).await?;
    // The call itself: its SDP answer tells where to stream.
    let started = Instant::now();
    let (status, media_to, leg, cseq) = place_call(&mut phone, &user, &password, &rtp).await;
    let Some(media_to) = media_to else {
        println!(
            "echo_call ok=0 invite={status} secs={:.1}",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    };
    let (loss, reorder) = (o.loss / 100.0, o.reorder / 100.0);
    let ssrc = rand::random::<u32>();
    let frames = (secs.as_millis() / 20) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut sent, mut dropped_tx, mut reordered_tx) = (0usize, 0usize, 0usize);
    let (mut received, mut dropped_rx, mut out_of_order) = (0usize, 0usize, 0usize);
    let mut held: Option<Vec<u8>> = None;
    let mut last_seq: Option<u16> = None;
    let mut buf = [0u8; 2048];
    let mut i = 0usize;
    let stop = Instant::now() + secs + Duration::from_secs(1);
    while Instant::now() < stop {
        tokio::select! {
            _ = tick.tick(), if i < frames => {
                let packet = pcmu_packet(i as u16, ssrc, &tone_frame(i));
                i += 1;
                let roll: f64 = rand::random();
                if roll < loss {
                    dropped_tx += 1;
                } else if roll < loss + reorder && held.is_none() {
                    held = Some(packet);
                    reordered_tx += 1;
                } else {
                    let _ = rtp.send_to(&packet, media_to).await;
                    sent += 1;
                    if let Some(late) = held.take() {
                        let _ = rtp.send_to(&late, media_to).await;
                        sent += 1;
                    }
                }
            }
            r = timeout(Duration::from_millis(100), rtp.recv_from(&mut buf)) => {
                if let Ok(Ok((n, _))) = r {
                    if n <= 12 || !sip_client::is_tone(&buf[12..n]) { continue; }
                    if rand::random::<f64>() < loss { dropped_rx += 1; continue; }
                    received += 1;
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    if last_seq.is_some_and(|last| (seq.wrapping_sub(last) as i16) < 0) {
                        out_of_order += 1;
                    }
                    last_seq = Some(seq);
                }
            }
        }
    }
    let bye = leg.request("BYE", cseq + 1, &token(), "", None);
    let bye = phone
        .transact(
            &bye,
            &leg.call_id,
            &format!("{} BYE", cseq + 1),
            Duration::from_secs(8),
        )
        .await
        .map_or("timeout".to_string(), |r| {
            status_of(&r).unwrap_or(0).to_string()
        });
    // Of what reached the switch, how much came back (before our own receive-side loss).
    let arrived = received + dropped_rx;
    println!(
        "echo_call ok=1 invite={status} frames={frames} sent={sent} dropped_tx={dropped_tx} reordered_tx={reordered_tx} \
         echoed={arrived} dropped_rx={dropped_rx} received={received} out_of_order_rx={out_of_order} \
         echoed_pct_of_sent={:.1} bye={bye}",
        100.0 * arrived as f64 / sent.max(1) as f64
    );
    Ok(())
}

/// INVITE (with digest) and ACK; the final status, where the media goes, the leg and
/// the CSeq used.
async fn place_call(
    phone: &mut Phone,
    user: &str,
    password: &str,
    rtp: &UdpSocket,
) -> (String, Option<SocketAddr>, sip_client::Leg, u32) {
    let mut leg = phone.leg(user, "9196");
    let sdp = sip_client::offer(rtp.local_addr().expect("bound"));
    let body = Some(("application/sdp", sdp.as_str()));
    let limit = Duration::from_secs(16);
    let branch = token();
    let invite = leg.request("INVITE", 1, &branch, "", body);
    let mut cseq = 1;
    let mut response = phone
        .transact(&invite, &leg.call_id, "1 INVITE", limit)
        .await;
    if let Ok(r) = &response {
        if let (Some(401), Some(challenge)) = (status_of(r), parse_challenge(r)) {
            let mut ack_leg = leg.clone();
            ack_leg.to_tag = sip_client::tag_param(sip_client::header(r, "To"));
            let _ = phone
                .send(ack_leg.request("ACK", 1, &branch, "", None).as_bytes())
                .await;
            let auth =
                sip_client::authorization(&challenge, user, password, "INVITE", &leg.uri("INVITE"));
            cseq = 2;
            let invite = leg.request(
                "INVITE",
                2,
                &token(),
                &format!("Authorization: {auth}\r\n"),
                body,
            );
            response = phone
                .transact(&invite, &leg.call_id, "2 INVITE", limit)
                .await;
        }
    }
    let answer = match response {
        Ok(r) if status_of(&r) == Some(200) => r,
        Ok(r) => return (status_of(&r).unwrap_or(0).to_string(), None, leg, cseq),
        Err(e) => return (e.to_string(), None, leg, cseq),
    };
    leg.to_tag = sip_client::tag_param(sip_client::header(&answer, "To"));
    let _ = phone
        .send(leg.request("ACK", cseq, &token(), "", None).as_bytes())
        .await;
    let media = sip_client::answer_media(&answer, phone.server.ip());
    ("200".into(), media, leg, cseq)
}
