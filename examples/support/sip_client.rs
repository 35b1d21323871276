//! SIP client pieces shared by the abuse generator (examples/sip_abuse.rs) and the
//! hostile-traffic tests (tests/hostile.rs): requests written by hand, digest answers,
//! and a phone that runs one transaction at a time over UDP (with RFC 3261 Timer A/E
//! style retransmission) or TCP (framed by Content-Length), bound to any loopback
//! address so that each phone or attacker has a source address of its own. Not a SIP
//! stack: just enough to register, call the echo extension and misbehave on purpose.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use sofia_sip::auth::digest_response;
use sofia_sip::DigestAlgorithm;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{sleep, timeout, timeout_at, Instant};

/// Longest a transaction is waited for: Timer A/E doubling from 500 ms, capped at 4 s,
/// gives four retransmissions in this time.
pub const TRANSACTION_LIMIT: Duration = Duration::from_millis(8_000);

/// A random token (hex), for branches, tags, Call-IDs and cnonces.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The `i`-th address after `base` in 127/8 (loopback answers to every one of them).
pub fn nth_ip(base: Ipv4Addr, i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(base).wrapping_add(i)))
}

/// The status code of a response; `None` for a request or garbage.
pub fn status_of(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

fn compact_form(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "via" => "v",
        "from" => "f",
        "to" => "t",
        "call-id" => "i",
        "contact" => "m",
        "content-length" => "l",
        "content-type" => "c",
        _ => return None,
    })
}

/// Every value of header `name` (or its compact form), in order.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let compact = compact_form(name);
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
        })
        .map(|(_, v)| v.trim())
        .collect()
}

/// The first value of header `name`.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// The body after the header section.
pub fn body_of(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Whether `msg` is a response to the request with this Call-ID and CSeq.
fn answers(msg: &str, call_id: &str, cseq: &str) -> bool {
    let same_cseq =
        header(msg, "CSeq").is_some_and(|c| c.split_whitespace().eq(cseq.split_whitespace()));
    same_cseq && header(msg, "Call-ID") == Some(call_id)
}

/// The tag parameter of a From/To value, as `;tag=...`, or "".
pub fn tag_param(value: Option<&str>) -> String {
    value
        .and_then(|v| v.split(";tag=").nth(1))
        .map(|t| format!(";tag={}", t.split(';').next().unwrap_or(t).trim()))
        .unwrap_or_default()
}

/// A digest challenge taken from a 401.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: DigestAlgorithm,
}

/// Splits `a=b, c="d, e"` into (name, unquoted value) pairs.
fn digest_params(s: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(ch),
        }
    }
    parts.push(current);
    parts
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

/// The challenge of a 401 (MD5 preferred when several are offered).
pub fn parse_challenge(response: &str) -> Option<Challenge> {
    let mut found: Vec<Challenge> = headers(response, "WWW-Authenticate")
        .into_iter()
        .filter_map(|v| {
            let rest = v.strip_prefix("Digest")?;
            let params = digest_params(rest);
            let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let algorithm = match get("algorithm").as_deref() {
                None => DigestAlgorithm::Md5,
                Some(a) if a.eq_ignore_ascii_case("MD5") => DigestAlgorithm::Md5,
                Some(a) if a.eq_ignore_ascii_case("SHA-256") => DigestAlgorithm::Sha256,
                Some(_) => return None,
            };
            Some(Challenge {
                realm: get("realm")?,
                nonce: get("nonce")?,
                algorithm,
            })
        })
        .collect();
    found.sort_by_key(|c| c.algorithm != DigestAlgorithm::Md5);
    found.into_iter().next()
}

/// An Authorization header value answering `challenge` (qop=auth, nc=1).
pub fn authorization(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let cnonce = token();
    let response = digest_response(
        challenge.algorithm,
        user,
        &challenge.realm,
        password,
        method,
        uri,
        &challenge.nonce,
        "00000001",
        &cnonce,
        "auth",
    );
    format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", \
         algorithm={}, qop=auth, nc=00000001, cnonce=\"{cnonce}\"",
        challenge.realm,
        challenge.nonce,
        challenge.algorithm.token()
    )
}

/// Made-up credentials for `user`: a nonce the switch never issued (the right length
/// and alphabet, so that only the switch's MAC can tell) and a random response.
pub fn forged_authorization(user: &str, realm: &str, uri: &str) -> String {
    let nonce: String = (0..4).map(|_| token()).collect::<String>()[..56].to_string();
    let response = format!("{}{}", token(), token());
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{}\"",
        token()
    )
}

/// The addressing of one dialog or registration: who sends, to whom, over what.
#[derive(Debug, Clone)]
pub struct Leg {
    /// "UDP" or "TCP", as in Via.
    pub transport: &'static str,
    pub local: SocketAddr,
    pub server: SocketAddr,
    /// The user this phone is (From, Contact).
    pub user: String,
    /// Whom the requests are for: the user itself for REGISTER, an extension for INVITE.
    pub target: String,
    pub call_id: String,
    pub from_tag: String,
    /// `;tag=...` once the far end has given one.
    pub to_tag: String,
    pub user_agent: String,
}

impl Leg {
    pub fn new(transport: &'static str, local: SocketAddr, server: SocketAddr, user: &str) -> Self {
        Self {
            transport,
            local,
            server,
            user: user.to_string(),
            target: user.to_string(),
            call_id: format!("{}@{}", token(), local.ip()),
            from_tag: token(),
            to_tag: String::new(),
            user_agent: "sofia-abuse".to_string(),
        }
    }

    /// The Request-URI of `method`.
    pub fn uri(&self, method: &str) -> String {
        if method == "REGISTER" {
            format!("sip:{}", self.server)
        } else {
            format!("sip:{}@{}", self.target, self.server)
        }
    }

    /// A request; `extra` is more header lines, each ending in CRLF.
    pub fn request(
        &self,
        method: &str,
        cseq: u32,
        branch: &str,
        extra: &str,
        body: Option<(&str, &str)>,
    ) -> String {
        let (server, local, user) = (self.server, self.local, &self.user);
        let contact_param = if self.transport == "TCP" {
            ";transport=tcp"
        } else {
            ""
        };
        let (content, body) = match body {
            Some((ty, b)) => (format!("Content-Type: {ty}\r\n"), b),
            None => (String::new(), ""),
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@{host}>;tag={from_tag}\r\n\
             To: <sip:{target}@{host}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:{user}@{local}{contact_param}>\r\nUser-Agent: {ua}\r\n{extra}{content}\
             Content-Length: {len}\r\n\r\n{body}",
            uri = self.uri(method),
            transport = self.transport,
            host = server.ip(),
            from_tag = self.from_tag,
            target = self.target,
            to_tag = self.to_tag,
            call_id = self.call_id,
            ua = self.user_agent,
            len = body.len(),
        )
    }
}

/// A 200 OK for a request the switch sent us (keep-alive OPTIONS, a BYE).
fn ok_for(request: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for via in headers(request, "Via") {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    let to = header(request, "To").unwrap_or_default();
    let to_tag = if to.contains(";tag=") {
        String::new()
    } else {
        format!(";tag={}", token())
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}{to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        header(request, "From").unwrap_or_default(),
        header(request, "Call-ID").unwrap_or_default(),
        header(request, "CSeq").unwrap_or_default(),
    ));
    out
}

/// Cuts one whole message (or a keep-alive) off the front of a stream buffer.
fn frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let length: usize = header(&head, "Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + length {
        return None;
    }
    Some(buf.drain(..end + length).collect())
}

enum Conn {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, buf: Vec<u8> },
}

/// One phone: a socket (UDP, or one TCP connection) from its own address.
pub struct Phone {
    conn: Conn,
    pub local: SocketAddr,
    pub server: SocketAddr,
    pub user_agent: String,
}

/// What an operation came to: the final status (or why there was none) and how long
/// it took.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Result<u16, &'static str>,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Ok(200)
    }

    /// The status as a label: "200", "403", "timeout".
    pub fn label(&self) -> String {
        match self.status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        }
    }
}

/// A TCP connection to `server` from `ip` (any port).
pub async fn tcp_from(ip: IpAddr, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match ip {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(server).await
}

impl Phone {
    pub async fn udp(ip: IpAddr, server: SocketAddr) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let local = sock.local_addr()?;
        Ok(Self {
            conn: Conn::Udp(sock),
            local,
            server,
            user_agent: "sofia-abuse".into(),
        })
    }

    pub async fn tcp(ip: IpAddr, server: SocketAddr) -> std::io::Result<Self> {
        let stream = timeout(Duration::from_secs(5), tcp_from(ip, server))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect"))??;
        let local = stream.local_addr()?;
        Ok(Self {
            conn: Conn::Tcp {
                stream,
                buf: Vec::new(),
            },
            local,
            server,
            user_agent: "sofia-abuse".into(),
        })
    }

    pub fn transport(&self) -> &'static str {
        match self.conn {
            Conn::Udp(_) => "UDP",
            Conn::Tcp { .. } => "TCP",
        }
    }

    /// A new leg from this phone as `user`, toward `target`.
    pub fn leg(&self, user: &str, target: &str) -> Leg {
        let mut leg = Leg::new(self.transport(), self.local, self.server, user);
        leg.target = target.to_string();
        leg.user_agent = self.user_agent.clone();
        leg
    }

    /// Sends bytes without waiting for anything (ACK, garbage).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.conn {
            Conn::Udp(sock) => sock.send_to(bytes, self.server).await.map(|_| ()),
            Conn::Tcp { stream, .. } => stream.write_all(bytes).await,
        }
    }

    /// The next message from the switch before `until`; `None` on timeout or a closed
    /// connection.
    async fn next_message(&mut self, until: Instant) -> Option<String> {
        match &mut self.conn {
            Conn::Udp(sock) => {
                let mut buf = vec![0u8; 65_535];
                let (n, _) = timeout_at(until, sock.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                Some(String::from_utf8_lossy(&buf[..n]).to_string())
            }
            Conn::Tcp { stream, buf } => loop {
                if let Some(message) = frame(buf) {
                    return Some(String::from_utf8_lossy(&message).to_string());
                }
                let mut chunk = [0u8; 16 * 1024];
                match timeout_at(until, stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return None,
                }
            },
        }
    }

    /// Sends `request` and waits for its final response (by Call-ID and CSeq),
    /// retransmitting over UDP (an INVITE only until something provisional comes back)
    /// and answering any request the switch sends meanwhile.
    pub async fn transact(
        &mut self,
        request: &str,
        call_id: &str,
        cseq: &str,
        limit: Duration,
    ) -> Result<String, &'static str> {
        let invite = cseq.ends_with("INVITE");
        let reliable = matches!(self.conn, Conn::Tcp { .. });
        let start = Instant::now();
        let end = start + limit;
        let mut wait = Duration::from_millis(500);
        let mut retransmit_at = (!reliable).then(|| start + wait);
        self.send(request.as_bytes()).await.map_err(|_| "send")?;
        loop {
            let until = retransmit_at.map_or(end, |at| at.min(end));
            match self.next_message(until).await {
                Some(msg) if msg.starts_with("SIP/2.0 ") => {
                    if !answers(&msg, call_id, cseq) {
                        continue;
                    }
                    match status_of(&msg) {
                        Some(s) if s >= 200 => return Ok(msg),
                        Some(_) if invite => retransmit_at = None,
                        _ => {}
                    }
                }
                Some(msg) => {
                    if !msg.starts_with("ACK ") && msg.contains(" SIP/2.0\r\n") {
                        let _ = self.send(ok_for(&msg).as_bytes()).await;
                    }
                }
                None => {
                    let now = Instant::now();
                    if now >= end {
                        return Err("timeout");
                    }
                    if reliable {
                        return Err("closed");
                    }
                    if retransmit_at.is_some_and(|at| now >= at) {
                        self.send(request.as_bytes()).await.map_err(|_| "send")?;
                        wait = (wait * 2).min(Duration::from_secs(4));
                        retransmit_at = Some(now + wait);
                    }
                }
            }
        }
    }

    /// REGISTER for `user` (challenge, then credentials with `password`); `None` as
    /// password sends the answer to the challenge with a wrong one made up on the spot.
    /// Returns the outcome of the first and of the last request.
    pub async fn register(
        &mut self,
        user: &str,
        password: &str,
        expires: u32,
    ) -> (Outcome, Outcome) {
        let start = Instant::now();
        let leg = self.leg(user, user);
        let extra = format!("Expires: {expires}\r\n");
        let first = leg.request("REGISTER", 1, &token(), &extra, None);
        let result = self
            .transact(&first, &leg.call_id, "1 REGISTER", TRANSACTION_LIMIT)
            .await;
        let first_outcome = Outcome {
            status: result
                .as_ref()
                .map(|r| status_of(r).unwrap_or(0))
                .map_err(|e| *e),
            elapsed: start.elapsed(),
        };
        let challenge = match result.as_deref().map(status_of) {
            Ok(Some(401)) => parse_challenge(result.as_deref().unwrap_or_default()),
            _ => return (first_outcome.clone(), first_outcome),
        };
        let Some(challenge) = challenge else {
            return (
                first_outcome,
                Outcome {
                    status: Err("bad-challenge"),
                    elapsed: start.elapsed(),
                },
            );
        };
        let auth = authorization(&challenge, user, password, "REGISTER", &leg.uri("REGISTER"));
        let extra = format!("{extra}Authorization: {auth}\r\n");
        let second = leg.request("REGISTER", 2, &token(), &extra, None);
        let result = self
            .transact(&second, &leg.call_id, "2 REGISTER", TRANSACTION_LIMIT)
            .await;
        let last = Outcome {
            status: result.map(|r| status_of(&r).unwrap_or(0)),
            elapsed: start.elapsed(),
        };
        (first_outcome, last)
    }

    /// Calls `extension` as `user` (answering a digest challenge), streams `frames`
    /// PCMU frames from `rtp` and waits for them to come back, then hangs up.
    pub async fn call_echo(
        &mut self,
        user: &str,
        password: &str,
        extension: &str,
        rtp: &UdpSocket,
        frames: usize,
    ) -> CallOutcome {
        let mut out = CallOutcome::default();
        let start = Instant::now();
        let Ok(rtp_addr) = rtp.local_addr() else {
            return out;
        };
        let call = match self.invite(user, password, extension, rtp_addr).await {
            Ok(call) => call,
            Err(status) => {
                out.invite = Some(Outcome {
                    status,
                    elapsed: start.elapsed(),
                });
                return out;
            }
        };
        out.invite = Some(Outcome {
            status: Ok(200),
            elapsed: start.elapsed(),
        });
        out.rtp = Some(match call.media_to {
            Some(media_to) => echo_frames(rtp, media_to, frames).await,
            None => Outcome {
                status: Err("no-sdp"),
                elapsed: Duration::ZERO,
            },
        });
        out.bye = Some(self.bye(&call).await);
        out
    }

    /// Calls `extension` as `user` offering PCMU at `rtp` (answering a digest
    /// challenge) and ACKs the 200. Err: the final status other than 200, or why there
    /// was none.
    pub async fn invite(
        &mut self,
        user: &str,
        password: &str,
        extension: &str,
        rtp: SocketAddr,
    ) -> Result<Call, Result<u16, &'static str>> {
        let mut leg = self.leg(user, extension);
        let sdp = offer(rtp);
        let body = Some(("application/sdp", sdp.as_str()));
        let branch = token();
        let invite = leg.request("INVITE", 1, &branch, "", body);
        let mut response = self
            .transact(&invite, &leg.call_id, "1 INVITE", TRANSACTION_LIMIT)
            .await;
        let mut cseq = 1;
        if let Ok(r) = &response {
            if status_of(r) == Some(401) {
                // ACK the 401 on the INVITE's branch (RFC 3261 17.1.1.3), then retry.
                let mut ack_leg = leg.clone();
                ack_leg.to_tag = tag_param(header(r, "To"));
                let ack = ack_leg.request("ACK", 1, &branch, "", None);
                let _ = self.send(ack.as_bytes()).await;
                match parse_challenge(r) {
                    Some(challenge) => {
                        let auth =
                            authorization(&challenge, user, password, "INVITE", &leg.uri("INVITE"));
                        cseq = 2;
                        let invite = leg.request(
                            "INVITE",
                            cseq,
                            &token(),
                            &format!("Authorization: {auth}\r\n"),
                            body,
                        );
                        response = self
                            .transact(&invite, &leg.call_id, "2 INVITE", TRANSACTION_LIMIT)
                            .await;
                    }
                    None => response = Err("bad-challenge"),
                }
            }
        }
        let answer = match response {
            Ok(r) if status_of(&r) == Some(200) => r,
            other => return Err(other.map(|r| status_of(&r).unwrap_or(0))),
        };
        leg.to_tag = tag_param(header(&answer, "To"));
        let ack = leg.request("ACK", cseq, &token(), "", None);
        let _ = self.send(ack.as_bytes()).await;
        let media_to = answer_media(&answer, self.server.ip());
        Ok(Call {
            leg,
            cseq,
            media_to,
        })
    }

    /// Hangs up a call [`Phone::invite`] placed.
    pub async fn bye(&mut self, call: &Call) -> Outcome {
        let start = Instant::now();
        let cseq = call.cseq + 1;
        let bye = call.leg.request("BYE", cseq, &token(), "", None);
        let result = self
            .transact(
                &bye,
                &call.leg.call_id,
                &format!("{cseq} BYE"),
                TRANSACTION_LIMIT,
            )
            .await;
        Outcome {
            status: result.map(|r| status_of(&r).unwrap_or(0)),
            elapsed: start.elapsed(),
        }
    }
}

/// A call [`Phone::invite`] established.
#[derive(Debug, Clone)]
pub struct Call {
    pub leg: Leg,
    /// The INVITE's CSeq (2 after a challenge).
    pub cseq: u32,
    /// Where the switch wants our RTP (from its SDP answer).
    pub media_to: Option<SocketAddr>,
}

/// What one call came to, step by step (`None`: not reached).
#[derive(Debug, Clone, Default)]
pub struct CallOutcome {
    /// INVITE (with its challenge) to 200.
    pub invite: Option<Outcome>,
    /// First frame sent to first frame echoed back.
    pub rtp: Option<Outcome>,
    pub bye: Option<Outcome>,
}

/// A PCMU (and telephone-event) offer with media at `rtp`.
pub fn offer(rtp: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=ptime:20\r\na=sendrecv\r\n",
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// Where an SDP answer wants the media.
pub fn answer_media(answer: &str, fallback: IpAddr) -> Option<SocketAddr> {
    let body = body_of(answer);
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(fallback);
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())?;
    Some(SocketAddr::new(ip, port))
}

/// An RTP packet of 20 ms of PCMU.
pub fn pcmu_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 0x00];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

/// 160 samples of a tone, PCMU: something the echo can send back that is not silence.
pub fn tone_frame(phase: usize) -> Vec<u8> {
    (0..160)
        .map(|n| {
            let t = (phase * 160 + n) as f32 / 8000.0;
            let s = (2.0 * std::f32::consts::PI * 440.0 * t).sin() * 8000.0;
            sofia_media::g711::linear_to_mulaw(s as i16)
        })
        .collect()
}

/// Whether a PCMU payload is audible (our tone coming back), not the silence the
/// switch sends while it has nothing to play.
pub fn is_tone(payload: &[u8]) -> bool {
    let sum: u64 = payload
        .iter()
        .map(|&c| u64::from(sofia_media::g711::mulaw_to_linear(c).unsigned_abs()))
        .sum();
    sum / payload.len().max(1) as u64 > 1000
}

/// Sends `frames` 20 ms frames to `media_to` and waits (up to a second after the last)
/// for echoes; Ok when at least one came back, with the delay to the first.
async fn echo_frames(rtp: &UdpSocket, media_to: SocketAddr, frames: usize) -> Outcome {
    let ssrc = rand::random::<u32>();
    let start = Instant::now();
    let mut first_echo = None;
    let mut echoed = 0usize;
    let mut buf = [0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut sent = 0usize;
    let mut last_sent = start;
    loop {
        tokio::select! {
            _ = tick.tick(), if sent < frames => {
                let packet = pcmu_packet(sent as u16, ssrc, &tone_frame(sent));
                let _ = rtp.send_to(&packet, media_to).await;
                sent += 1;
                last_sent = Instant::now();
            }
            r = timeout(Duration::from_millis(50), rtp.recv_from(&mut buf)) => {
                if let Ok(Ok((n, _))) = r {
                    // The echo sends comfort silence until our audio comes back.
                    if n > 12 && is_tone(&buf[12..n]) {
                        echoed += 1;
                        first_echo.get_or_insert(start.elapsed());
                    }
                }
                let quiet = last_sent.elapsed();
                if sent >= frames
                    && (quiet > Duration::from_secs(1)
                        || (echoed > 0 && quiet > Duration::from_millis(200)))
                {
                    break;
                }
            }
        }
    }
    match first_echo {
        Some(delay) => Outcome {
            status: Ok(200),
            elapsed: delay,
        },
        None => Outcome {
            status: Err("no-echo"),
            elapsed: start.elapsed(),
        },
    }
}

/// A plain HTTP/1.0 GET of `path` on `addr`: the body, or `None`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).to_string();
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// The value of one series (`name{labels}` exactly as printed) in Prometheus text; 0
/// for a series not printed yet (counters with no samples).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `ready` holds (the switch refreshes its SIP figures every
/// second), at most `limit`; the last text seen.
pub async fn metrics_when(
    http: SocketAddr,
    limit: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let end = Instant::now() + limit;
    loop {
        let text = http_get(http, "/metrics").await.unwrap_or_default();
        if ready(&text) || Instant::now() >= end {
            return text;
        }
        sleep(Duration::from_millis(200)).await;
    }
}
