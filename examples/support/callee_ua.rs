//! A minimal SIP phone that is called, for the bridged-call load generator
//! (examples/bridge_load.rs): it registers one user over UDP on loopback (answering
//! the digest challenge), answers every INVITE at once with 200 and an SDP answer for
//! one codec (PCMU, PCMA or Opus), retransmits the 200 until the ACK (RFC 3261 13.3.1.4, Timer G), answers
//! BYE, CANCEL and the switch's OPTIONS keep-alives with 200, and unregisters at the
//! end. Media is not its business: it reports where to send RTP and when the call ends
//! as [`CalleeEvent`]s. Not a SIP stack: one call at a time, enough to be rung.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use sofia_sip::auth::digest_response;
use sofia_sip::DigestAlgorithm;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, timeout, Instant};

/// RFC 3261 T1 and T2: the 200 is retransmitted at T1, doubling up to T2, until ACKed.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Timer H: the 200 is given up on after this.
const ACK_WAIT: Duration = Duration::from_secs(32);

/// What happened to the callee's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalleeEvent {
    /// A call was answered: send RTP to `media_to` with `payload_type`.
    Answered {
        media_to: SocketAddr,
        payload_type: u8,
    },
    /// The call ended (BYE or CANCEL).
    Ended,
}

/// One registered phone.
pub struct Callee {
    sip: UdpSocket,
    server: SocketAddr,
    user: String,
    password: String,
    rtp_port: u16,
    /// The codec answered with, as the rtpmap encoding name ("PCMU", "PCMA", "opus").
    codec: String,
    /// Its static payload type, used when the offer has no rtpmap for it (Opus has
    /// none: RFC 7587 7).
    static_pt: Option<u8>,
    /// Its clock rate and channels as written in `a=rtpmap` ("8000", "48000/2").
    rate: &'static str,
    tag: String,
    reg_call_id: String,
    reg_cseq: u32,
}

/// The INVITE being answered: its 200 and the retransmission schedule.
struct Answering {
    call_id: String,
    response: Vec<u8>,
    to: SocketAddr,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    acked: bool,
}

impl Callee {
    /// A phone for `user` that answers with `codec` ("PCMU", "PCMA" or "opus") on
    /// `rtp_port`.
    pub async fn new(
        server: SocketAddr,
        user: &str,
        password: &str,
        rtp_port: u16,
        codec: &str,
    ) -> std::io::Result<Self> {
        let (static_pt, rate) = match codec.to_ascii_uppercase().as_str() {
            "PCMA" => (Some(8), "8000"),
            "OPUS" => (None, "48000/2"),
            _ => (Some(0), "8000"),
        };
        Ok(Self {
            sip: UdpSocket::bind((server.ip(), 0)).await?,
            server,
            user: user.to_string(),
            password: password.to_string(),
            rtp_port,
            codec: codec.to_string(),
            static_pt,
            rate,
            tag: token(),
            reg_call_id: format!("reg-{}-{user}-{}", std::process::id(), token()),
            reg_cseq: 0,
        })
    }

    fn local(&self) -> SocketAddr {
        self.sip.local_addr().expect("bound")
    }

    fn register_request(&mut self, expires: u32, authorization: Option<&str>) -> String {
        self.reg_cseq += 1;
        let (server, local, user) = (self.server, self.local(), &self.user);
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{};rport\r\n\
             From: <sip:{user}@{server}>;tag={}\r\nTo: <sip:{user}@{server}>\r\nCall-ID: {}\r\n\
             CSeq: {} REGISTER\r\nContact: <sip:{user}@{local}>\r\nExpires: {expires}\r\n\
             Max-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n",
            token(),
            self.tag,
            self.reg_call_id,
            self.reg_cseq
        )
    }

    /// Registers (or with `expires` 0 unregisters) this phone's contact, answering the
    /// digest challenge. Returns the final status, or `None` when nothing answered.
    pub async fn register(&mut self, expires: u32) -> Option<u16> {
        let first = self.register_request(expires, None);
        let cseq = self.reg_cseq;
        let response = self.transact(&first, cseq).await?;
        let status = status_of(&response)?;
        if status != 401 && status != 407 {
            return Some(status);
        }
        let challenge = parse_challenge(&response)?;
        let uri = format!("sip:{}", self.server);
        let auth = authorization(&challenge, &self.user, &self.password, "REGISTER", &uri);
        let second = self.register_request(expires, Some(&auth));
        let cseq = self.reg_cseq;
        let response = self.transact(&second, cseq).await?;
        status_of(&response)
    }

    /// Sends a REGISTER and waits for its final response, retransmitting (Timer E).
    async fn transact(&self, request: &str, cseq: u32) -> Option<String> {
        let mut buf = vec![0u8; 65535];
        let mut wait = T1;
        let deadline = Instant::now() + ACK_WAIT;
        while Instant::now() < deadline {
            self.sip
                .send_to(request.as_bytes(), self.server)
                .await
                .ok()?;
            let until = Instant::now() + wait;
            while let Ok(Ok((n, _))) = timeout(
                until.saturating_duration_since(Instant::now()),
                self.sip.recv_from(&mut buf),
            )
            .await
            {
                let text = String::from_utf8_lossy(&buf[..n]);
                let final_response = status_of(&text).is_some_and(|s| s >= 200);
                let ours = header(&text, "call-id") == Some(self.reg_call_id.as_str())
                    && header(&text, "cseq")
                        .is_some_and(|c| c.split_whitespace().next() == Some(&cseq.to_string()));
                if final_response && ours {
                    return Some(text.into_owned());
                }
            }
            wait = (wait * 2).min(T2);
        }
        None
    }

    /// Answers calls until `stop` turns true, reporting each call's start and end.
    pub async fn serve(
        &self,
        events: mpsc::UnboundedSender<CalleeEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 65535];
        let mut answering: Option<Answering> = None;
        // The call in progress (its Call-ID), from the INVITE to the BYE.
        let mut current: Option<String> = None;
        loop {
            let retransmit_at = answering
                .as_ref()
                .filter(|a| !a.acked)
                .map(|a| a.next)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stopped(&mut stop) => return,
                _ = sleep_until(retransmit_at) => {
                    if let Some(a) = answering.as_mut() {
                        if Instant::now() >= a.give_up {
                            a.acked = true;
                        } else {
                            let _ = self.sip.send_to(&a.response, a.to).await;
                            a.interval = (a.interval * 2).min(T2);
                            a.next = Instant::now() + a.interval;
                        }
                    }
                }
                r = self.sip.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let Some(method) = request_method(&text) else { continue };
                    let call_id = header(&text, "call-id").unwrap_or("").to_string();
                    match method {
                        "INVITE" => {
                            if current.as_deref().is_some_and(|c| c != call_id) {
                                let busy = response(&text, 486, "Busy Here", &self.tag, "", "");
                                let _ = self.sip.send_to(busy.as_bytes(), from).await;
                                continue;
                            }
                            let Some((media_to, payload_type, sdp)) = self.answer_sdp(&text) else {
                                let refused = response(&text, 488, "Not Acceptable Here", &self.tag, "", "");
                                let _ = self.sip.send_to(refused.as_bytes(), from).await;
                                continue;
                            };
                            let contact = format!("Contact: <sip:{}@{}>\r\nContent-Type: application/sdp\r\n", self.user, self.local());
                            let ok = response(&text, 200, "OK", &self.tag, &contact, &sdp).into_bytes();
                            let _ = self.sip.send_to(&ok, from).await;
                            let first = current.is_none();
                            current = Some(call_id.clone());
                            let now = Instant::now();
                            answering = Some(Answering {
                                call_id,
                                response: ok,
                                to: from,
                                next: now + T1,
                                interval: T1,
                                give_up: now + ACK_WAIT,
                                acked: false,
                            });
                            if first {
                                let _ = events.send(CalleeEvent::Answered { media_to, payload_type });
                            }
                        }
                        "ACK" => {
                            if let Some(a) = answering.as_mut().filter(|a| a.call_id == call_id) {
                                a.acked = true;
                            }
                        }
                        "BYE" | "CANCEL" => {
                            let ok = response(&text, 200, "OK", &self.tag, "", "");
                            let _ = self.sip.send_to(ok.as_bytes(), from).await;
                            if current.as_deref() == Some(call_id.as_str()) {
                                current = None;
                                answering = None;
                                let _ = events.send(CalleeEvent::Ended);
                            }
                        }
                        _ => {
                            // OPTIONS keep-alives, INFO and the like.
                            let ok = response(&text, 200, "OK", &self.tag, "", "");
                            let _ = self.sip.send_to(ok.as_bytes(), from).await;
                        }
                    }
                }
            }
        }
    }

    /// The SDP answer to an INVITE's offer: where to send, which payload type, and the
    /// body; `None` when the offer lacks this phone's codec.
    fn answer_sdp(&self, invite: &str) -> Option<(SocketAddr, u8, String)> {
        let body = invite.split_once("\r\n\r\n")?.1;
        let mut ip: Option<IpAddr> = None;
        let mut port: Option<u16> = None;
        let mut offered: Vec<u8> = Vec::new();
        let mut pt: Option<u8> = None;
        for line in body.lines().map(str::trim) {
            if let Some(c) = line.strip_prefix("c=IN IP4 ") {
                ip = ip.or_else(|| c.trim().parse().ok());
            } else if let Some(m) = line.strip_prefix("m=audio ") {
                let mut fields = m.split_whitespace();
                port = fields.next().and_then(|p| p.parse().ok());
                offered = fields.skip(1).filter_map(|f| f.parse().ok()).collect();
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let (n, name) = map.split_once(' ')?;
                let name = name.split('/').next().unwrap_or("");
                if name.eq_ignore_ascii_case(&self.codec) && pt.is_none() {
                    pt = n.parse().ok();
                }
            }
        }
        let pt = pt.or_else(|| self.static_pt.filter(|s| offered.contains(s)))?;
        let media_to = SocketAddr::new(ip.unwrap_or(self.server.ip()), port?);
        let local = self.local().ip();
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 {local}\r\ns=-\r\nc=IN IP4 {local}\r\nt=0 0\r\n\
             m=audio {} RTP/AVP {pt}\r\na=rtpmap:{pt} {}/{}\r\na=ptime:20\r\na=sendrecv\r\n",
            self.rtp_port, self.codec, self.rate
        );
        Some((media_to, pt, sdp))
    }
}

/// A response to `request`: its Via, From, Call-ID and CSeq, its To with our tag
/// added, `extra` header lines and `body`.
fn response(
    request: &str,
    status: u16,
    reason: &str,
    tag: &str,
    extra: &str,
    body: &str,
) -> String {
    let mut s = format!("SIP/2.0 {status} {reason}\r\n");
    for line in request.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => {
                s.push_str(line);
                s.push_str("\r\n");
            }
            "to" | "t" => {
                s.push_str(line);
                if !line.contains(";tag=") {
                    s.push_str(";tag=");
                    s.push_str(tag);
                }
                s.push_str("\r\n");
            }
            _ => {}
        }
    }
    s.push_str(extra);
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s
}

fn request_method(msg: &str) -> Option<&str> {
    if msg.starts_with("SIP/2.0") {
        return None;
    }
    msg.split(' ').next()
}

fn status_of(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The first value of header `name` (full or compact form, case-insensitive).
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let compact = match name {
        "call-id" => Some("i"),
        "via" => Some("v"),
        _ => None,
    };
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
        })
        .map(|(_, v)| v.trim())
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

struct Challenge {
    realm: String,
    nonce: String,
    algorithm: DigestAlgorithm,
}

/// The digest challenge of a 401 (MD5 preferred when several are offered).
fn parse_challenge(response: &str) -> Option<Challenge> {
    let mut found: Vec<Challenge> = response
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case("WWW-Authenticate")
                || n.eq_ignore_ascii_case("Proxy-Authenticate")
        })
        .filter_map(|(_, v)| {
            let params = v.trim().strip_prefix("Digest")?;
            let get = |key: &str| -> Option<String> {
                params.split(',').find_map(|p| {
                    let (k, v) = p.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case(key)
                        .then(|| v.trim().trim_matches('"').to_string())
                })
            };
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
fn authorization(
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

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
