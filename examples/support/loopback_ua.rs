//! A minimal SIP user agent client for the load generators under examples/: INVITE with
//! a PCMU offer, ACK, BYE over UDP on loopback, with retransmission as RFC 3261 Timer
//! A/E would. The bench profiles do not challenge INVITE, so there is no digest here.
//! Not a SIP stack: just enough to place many calls at once and find their media.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{oneshot, Mutex};

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<String>>>>;

/// One SIP socket shared by every call; responses are routed by Call-ID and CSeq.
#[derive(Clone)]
pub struct Ua {
    sip: Arc<UdpSocket>,
    server: SocketAddr,
    waiters: Waiters,
}

/// An established call.
pub struct Dialog {
    call_id: String,
    index: usize,
    extension: String,
    to_tag: String,
    /// Where the switch wants our RTP.
    pub media_to: SocketAddr,
}

impl Ua {
    pub async fn new(server: SocketAddr) -> std::io::Result<Self> {
        let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let waiters: Waiters = Arc::default();
        tokio::spawn(read_responses(sip.clone(), waiters.clone()));
        Ok(Self {
            sip,
            server,
            waiters,
        })
    }

    fn request(&self, d: &Dialog, method: &str, cseq: u32, with_tag: bool) -> String {
        let (server, local) = (self.server, self.sip.local_addr().expect("bound"));
        let (call_id, i, ext) = (&d.call_id, d.index, &d.extension);
        let to_tag = if with_tag { d.to_tag.as_str() } else { "" };
        format!(
            "{method} sip:{ext}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq}{method};rport\r\n\
             From: <sip:load{i}@{local}>;tag=t{i}\r\nTo: <sip:{ext}@{server}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:load{i}@{local}>\r\nMax-Forwards: 70\r\n"
        )
    }

    /// Calls `extension` offering PCMU (and telephone-event) on `rtp_port`; `None` when
    /// the call is not answered with 200.
    pub async fn call(&self, index: usize, extension: &str, rtp_port: u16) -> Option<Dialog> {
        self.call_offering(index, extension, rtp_port, 0, "PCMU/8000")
            .await
    }

    /// Calls `extension` offering one codec, `payload_type` with `rtpmap` (e.g. 8 and
    /// "PCMA/8000"), and telephone-event on `rtp_port`; `None` when the call is not
    /// answered with 200.
    pub async fn call_offering(
        &self,
        index: usize,
        extension: &str,
        rtp_port: u16,
        payload_type: u8,
        rtpmap: &str,
    ) -> Option<Dialog> {
        let mut dialog = Dialog {
            call_id: format!("load-{index}-{}-{extension}", std::process::id()),
            index,
            extension: extension.to_string(),
            to_tag: String::new(),
            media_to: self.server,
        };
        let sdp = format!(
            "v=0\r\no=- {index} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP {payload_type} 101\r\na=rtpmap:{payload_type} {rtpmap}\r\na=rtpmap:101 telephone-event/8000\r\n\
             a=ptime:20\r\na=sendrecv\r\n"
        );
        let invite = format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.request(&dialog, "INVITE", 1, false),
            sdp.len()
        );
        let ok = self.transact(&dialog.call_id, 1, "INVITE", invite).await?;
        if !ok.starts_with("SIP/2.0 200") {
            return None;
        }
        dialog.to_tag = ok
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("to:") || l.starts_with("t:"))
            .and_then(|l| l.split(";tag=").nth(1))
            .map(|t| format!(";tag={}", t.trim()))
            .unwrap_or_default();
        let remote_port: u16 = ok
            .lines()
            .find(|l| l.starts_with("m=audio "))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|p| p.parse().ok())?;
        dialog.media_to = SocketAddr::new(self.server.ip(), remote_port);
        let ack = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.request(&dialog, "ACK", 1, true)
        );
        self.sip.send_to(ack.as_bytes(), self.server).await.ok()?;
        Some(dialog)
    }

    /// Hangs up; true when the BYE got its 200.
    pub async fn bye(&self, dialog: &Dialog) -> bool {
        let bye = format!(
            "{}Content-Length: 0\r\n\r\n",
            self.request(dialog, "BYE", 2, true)
        );
        self.transact(&dialog.call_id, 2, "BYE", bye)
            .await
            .is_some_and(|r| r.starts_with("SIP/2.0 200"))
    }

    async fn transact(
        &self,
        call_id: &str,
        cseq: u32,
        method: &str,
        request: String,
    ) -> Option<String> {
        let (tx, mut rx) = oneshot::channel();
        let key = format!("{call_id} {cseq} {method}");
        self.waiters.lock().await.insert(key, tx);
        for attempt in 0..5u32 {
            self.sip
                .send_to(request.as_bytes(), self.server)
                .await
                .ok()?;
            match tokio::time::timeout(Duration::from_millis(500 << attempt), &mut rx).await {
                Ok(Ok(response)) => return Some(response),
                Ok(Err(_)) => return None,
                Err(_) => continue,
            }
        }
        None
    }
}

/// Routes final responses to the transaction waiting for them.
async fn read_responses(sip: Arc<UdpSocket>, waiters: Waiters) {
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

/// An RTP packet of 20 ms of PCMU.
pub fn pcmu_packet(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![0x80, 0x00];
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}
