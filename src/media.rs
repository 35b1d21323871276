//! The media shell: RTP/RTCP port pairs from the profile's range and the per-call
//! driver around [`sofia_media::MediaSession`] (sockets in, timers, packets out).
//!
//! A [`CallPorts`] returns its pair to the allocator when dropped, so every way a call
//! can end (BYE, CANCEL, timeout, error, a panicking task) frees its ports.
//!
//! SRTP lives here, on the wire side of the session: when the SDP agreed SDES keys,
//! [`Srtp`] decrypts and authenticates what arrives before the session sees it, and
//! encrypts what the session sends. The session itself only ever sees plain RTP.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use sofia_media::{Component, MediaSession, PortAllocator, PortPair, Transmit};
use tokio::net::UdpSocket;
use tracing::debug;

/// The profile's RTP range, shared by all calls.
#[derive(Debug, Clone)]
pub struct PortPool {
    allocator: Arc<Mutex<PortAllocator>>,
    bind_ip: IpAddr,
}

/// A bound RTP/RTCP socket pair, released to the pool on drop.
#[derive(Debug)]
pub struct CallPorts {
    pub pair: PortPair,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pool: PortPool,
}

impl Drop for CallPorts {
    fn drop(&mut self) {
        if let Ok(mut allocator) = self.pool.allocator.lock() {
            allocator.release(self.pair.rtp);
        }
    }
}

/// How many pairs to try when another program holds a port of our range.
const BIND_ATTEMPTS: usize = 8;

impl PortPool {
    pub fn new(first: u16, last: u16, bind_ip: IpAddr) -> anyhow::Result<PortPool> {
        let allocator = PortAllocator::new(first..=last)
            .map_err(|e| anyhow::anyhow!("RTP port range {first}-{last}: {e}"))?;
        Ok(PortPool {
            allocator: Arc::new(Mutex::new(allocator)),
            bind_ip,
        })
    }

    /// Allocates and binds a pair; `None` when the range is exhausted (the caller
    /// answers 503).
    pub async fn bind(&self) -> Option<CallPorts> {
        for _ in 0..BIND_ATTEMPTS {
            let pair = self.allocator.lock().ok()?.allocate()?;
            let rtp = UdpSocket::bind(SocketAddr::new(self.bind_ip, pair.rtp)).await;
            let rtcp = UdpSocket::bind(SocketAddr::new(self.bind_ip, pair.rtcp)).await;
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => {
                    return Some(CallPorts {
                        pair,
                        rtp,
                        rtcp,
                        pool: self.clone(),
                    })
                }
                (rtp, rtcp) => {
                    debug!(
                        "RTP pair {}/{} busy ({:?}, {:?}); trying another",
                        pair.rtp,
                        pair.rtcp,
                        rtp.err(),
                        rtcp.err()
                    );
                    // Released pairs go to the back of the queue, so the next
                    // allocation tries a different pair.
                    if let Ok(mut allocator) = self.allocator.lock() {
                        allocator.release(pair.rtp);
                    }
                }
            }
        }
        None
    }
}

/// Sends what the session has to send now, encrypted when the call has SRTP. Send
/// errors are dropped: RTP is loss tolerant, and a full socket buffer must not stall
/// the call.
pub fn send_transmits(
    session: &mut MediaSession,
    ports: &CallPorts,
    srtp: &mut Option<Srtp>,
    now: Instant,
) {
    while let Some(Transmit {
        destination,
        component,
        bytes,
    }) = session.poll_transmit(now)
    {
        let socket = match component {
            Component::Rtp => &ports.rtp,
            Component::Rtcp => &ports.rtcp,
        };
        let bytes = match srtp.as_mut() {
            Some(srtp) => match srtp.protect(component, &bytes) {
                Some(b) => b,
                None => continue,
            },
            None => bytes,
        };
        let _ = socket.try_send_to(&bytes, destination);
    }
}

/// Hands a datagram from the call's RTP or RTCP port to the
/// session, decrypted first when the call has SRTP. Returns false when SRTP refused it
/// (failed authentication or a replay): counted by the caller.
pub fn receive(
    session: &mut MediaSession,
    srtp: &mut Option<Srtp>,
    now: Instant,
    from: SocketAddr,
    bytes: &[u8],
) -> bool {
    match srtp.as_mut() {
        None => {
            session.handle_datagram(now, from, bytes);
            true
        }
        Some(srtp) => match srtp.unprotect(bytes) {
            Some(plain) => {
                session.handle_datagram(now, from, &plain);
                true
            }
            None => false,
        },
    }
}

/// One call leg's SRTP state: our key encrypts what we send, the peer's decrypts what
/// arrives (RFC 3711, AES_CM_128_HMAC_SHA1_80, replay windows of 64 packets).
pub struct Srtp {
    send: webrtc_srtp::context::Context,
    recv: webrtc_srtp::context::Context,
}

impl std::fmt::Debug for Srtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Srtp(..)")
    }
}

impl Srtp {
    /// The contexts for keys the SDP agreed; `None` when there are none.
    pub fn for_params(params: &sofia_media::MediaParams) -> anyhow::Result<Option<Self>> {
        let Some(keys) = &params.srtp else {
            return Ok(None);
        };
        let context = |material: &[u8; sofia_media::SRTP_KEY_LEN]| {
            webrtc_srtp::context::Context::new(
                &material[..16],
                &material[16..],
                webrtc_srtp::protection_profile::ProtectionProfile::Aes128CmHmacSha1_80,
                Some(webrtc_srtp::option::srtp_replay_protection(64)),
                Some(webrtc_srtp::option::srtcp_replay_protection(64)),
            )
            .map_err(|e| anyhow::anyhow!("SRTP keys: {e}"))
        };
        Ok(Some(Self {
            send: context(&keys.local)?,
            recv: context(&keys.remote)?,
        }))
    }

    fn protect(&mut self, component: Component, bytes: &[u8]) -> Option<Vec<u8>> {
        let protected = match component {
            _ if is_rtcp(bytes) => self.send.encrypt_rtcp(bytes),
            Component::Rtcp => self.send.encrypt_rtcp(bytes),
            Component::Rtp => self.send.encrypt_rtp(bytes),
        };
        protected.ok().map(|b| b.to_vec())
    }

    /// STUN passes as it is; RTCP (payload types 192-223 in the second byte, RFC 5761
    /// 4) is SRTCP, the rest SRTP.
    fn unprotect(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if bytes.first().is_some_and(|b| *b < 2) {
            return Some(bytes.to_vec());
        }
        let plain = if is_rtcp(bytes) {
            self.recv.decrypt_rtcp(bytes)
        } else {
            self.recv.decrypt_rtp(bytes)
        };
        plain.ok().map(|b| b.to_vec())
    }
}

fn is_rtcp(bytes: &[u8]) -> bool {
    bytes.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// A fresh SRTP master key and salt for one SDP session, from the OS CSPRNG.
pub fn srtp_key() -> [u8; sofia_media::SRTP_KEY_LEN] {
    let mut key = [0u8; sofia_media::SRTP_KEY_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
    key
}

/// Builds a session at the current time.
pub fn new_session(
    params: sofia_media::MediaParams,
    config: sofia_media::SessionConfig,
) -> Result<MediaSession, sofia_media::SessionError> {
    MediaSession::new(Instant::now(), SystemTime::now(), params, config)
}
