//! The media shell: RTP/RTCP port pairs from the profile's range and the per-call
//! driver around [`sofia_media::MediaSession`] (sockets in, timers, packets out).
//!
//! A [`CallPorts`] returns its pair to the allocator when dropped, so every way a call
//! can end (BYE, CANCEL, timeout, error, a panicking task) frees its ports.

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

/// Sends what the session has to send now. Send errors are dropped: RTP is loss
/// tolerant, and a full socket buffer must not stall the call.
pub fn send_transmits(session: &mut MediaSession, ports: &CallPorts, now: Instant) {
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
        let _ = socket.try_send_to(&bytes, destination);
    }
}

/// Builds a session at the current time.
pub fn new_session(
    params: sofia_media::MediaParams,
    config: sofia_media::SessionConfig,
) -> Result<MediaSession, sofia_media::SessionError> {
    MediaSession::new(Instant::now(), SystemTime::now(), params, config)
}
