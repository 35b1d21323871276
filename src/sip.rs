//! The SIP shell: the sockets around [`sofia_sip::Endpoint`].
//!
//! One task owns the endpoint. It reads the UDP socket itself, in batches (no copy, no
//! hand-over between tasks: at thousands of REGISTERs a second the wake-ups of a
//! reader task cost more than the SIP work). Messages framed from TCP connections reach
//! it over a channel. It sends what the endpoint transmits, fires its timers on
//! the tokio clock, persists registrations, and hands call events to the per-call tasks
//! (see `calls.rs`), whose commands come back over the same channel. No protocol logic
//! lives here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sofia_sip::{
    Body, CallHandle, Endpoint, Event, Frame, RegistrarSnapshot, StreamFramer, Transport, PONG,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Largest UDP datagram we read; larger SIP messages must use TCP (RFC 3261 18.1.1).
const MAX_DATAGRAM: usize = 65_535;
/// Messages queued for the endpoint task; past this, TCP readers wait, instead of
/// memory growing without bound.
const INBOX_DEPTH: usize = 4096;
/// Datagrams handled per wake-up before the responses go out and other input (TCP,
/// commands, timers) gets its turn.
const UDP_BATCH: usize = 64;

/// A command for the endpoint, from a call task.
#[derive(Debug)]
pub enum CallCommand {
    Ring,
    Answer(Body),
    Reject(u16),
    Hangup,
}

/// What the endpoint task tells the call layer.
#[derive(Debug)]
pub enum CallNotice {
    Incoming(sofia_sip::IncomingCall),
    Event(Event),
}

/// Input of the endpoint task.
#[derive(Debug)]
pub enum Input {
    /// A message framed from a TCP connection (UDP is read by the endpoint task itself).
    TcpMessage {
        source: SocketAddr,
        bytes: Vec<u8>,
    },
    FramingError {
        source: SocketAddr,
        error: sofia_sip::FramingError,
    },
    ConnectionOpened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    ConnectionClosed {
        peer: SocketAddr,
    },
    Command {
        call: CallHandle,
        command: CallCommand,
    },
    Shutdown,
}

/// A handle other tasks use to reach the endpoint task.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    tx: mpsc::Sender<Input>,
}

impl EndpointHandle {
    pub async fn command(&self, call: CallHandle, command: CallCommand) {
        let _ = self.tx.send(Input::Command { call, command }).await;
    }

    pub async fn shutdown(&self) {
        let _ = self.tx.send(Input::Shutdown).await;
    }
}

/// OPTIONS pings to registered phones behind NAT.
#[derive(Debug, Clone)]
pub struct Keepalive {
    pub interval: std::time::Duration,
    /// The AORs whose UDP contacts are pinged.
    pub aors: Vec<String>,
}

/// Starts the endpoint task and the socket tasks. Call notices arrive on the returned
/// receiver.
pub fn start(
    endpoint: Endpoint,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    registrations_file: PathBuf,
    keepalive: Option<Keepalive>,
    metrics: Arc<Metrics>,
) -> (
    EndpointHandle,
    mpsc::Receiver<CallNotice>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(INBOX_DEPTH);
    let (notice_tx, notice_rx) = mpsc::channel(1024);
    let udp = udp.map(Arc::new);
    if let Some(listener) = tcp {
        tokio::spawn(tcp_acceptor(
            listener,
            tx.clone(),
            endpoint.config().max_message_size,
        ));
    }
    let task = EndpointTask {
        endpoint,
        udp,
        connections: HashMap::new(),
        notices: notice_tx,
        registrations_file,
        persist_at: None,
        keepalive_at: keepalive
            .as_ref()
            .map(|k| tokio::time::Instant::now() + k.interval),
        keepalive,
        metrics,
    };
    let join = tokio::spawn(task.run(rx));
    (EndpointHandle { tx }, notice_rx, join)
}

/// Reads saved registrations, if any. A damaged file is reported and ignored: phones
/// re-register within their expiry anyway.
pub fn load_registrations(endpoint: &mut Endpoint, file: &std::path::Path) {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!(
                "cannot read {}: {e}; starting with no registrations",
                file.display()
            );
            return;
        }
    };
    match serde_json::from_str::<RegistrarSnapshot>(&text) {
        Ok(snapshot) => {
            endpoint.restore_registrar(Instant::now(), unix_now(), &snapshot);
            info!("restored registrations from {}", file.display());
        }
        Err(e) => warn!(
            "{} is damaged ({e}); starting with no registrations",
            file.display()
        ),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

struct EndpointTask {
    endpoint: Endpoint,
    udp: Option<Arc<UdpSocket>>,
    connections: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    notices: mpsc::Sender<CallNotice>,
    registrations_file: PathBuf,
    /// When the changed bindings are due on disk. Writes are batched (at most one per
    /// [`PERSIST_DELAY`]) so a registration storm is not a storm of file rewrites; a
    /// crash loses at most that much, and phones re-register anyway.
    persist_at: Option<tokio::time::Instant>,
    keepalive: Option<Keepalive>,
    keepalive_at: Option<tokio::time::Instant>,
    metrics: Arc<Metrics>,
}

const PERSIST_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl EndpointTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        let udp = self.udp.clone();
        let mut datagram = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = self
                .endpoint
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let input = tokio::select! {
                input = rx.recv() => input,
                Ok(()) = async {
                    match &udp {
                        Some(socket) => socket.readable().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(socket) = &udp {
                        self.read_datagrams(socket, &mut datagram);
                    }
                    self.flush().await;
                    continue;
                }
                _ = sleep_until(deadline) => {
                    self.endpoint.handle_timeout(Instant::now());
                    self.flush().await;
                    continue;
                }
                _ = sleep_until(self.persist_at) => {
                    self.persist_registrations();
                    continue;
                }
                _ = sleep_until(self.keepalive_at) => {
                    self.send_keepalives();
                    self.flush().await;
                    continue;
                }
            };
            let Some(input) = input else { break };
            let now = Instant::now();
            match input {
                Input::TcpMessage { source, bytes } => {
                    self.endpoint
                        .handle_datagram(now, source, Transport::Tcp, &bytes)
                }
                Input::FramingError { source, error } => {
                    self.endpoint
                        .handle_framing_error(now, source, Transport::Tcp, &error);
                }
                Input::ConnectionOpened { peer, writer } => {
                    self.connections.insert(peer, writer);
                }
                Input::ConnectionClosed { peer } => {
                    self.connections.remove(&peer);
                }
                Input::Command { call, command } => {
                    let result = match command {
                        CallCommand::Ring => self.endpoint.ring(now, call),
                        CallCommand::Answer(body) => self.endpoint.answer(now, call, body),
                        CallCommand::Reject(status) => self.endpoint.reject(now, call, status),
                        CallCommand::Hangup => self.endpoint.hangup(now, call),
                    };
                    if let Err(e) = result {
                        debug!("call {:?}: command refused: {e}", call);
                    }
                }
                Input::Shutdown => {
                    self.flush().await;
                    if self.persist_at.is_some() {
                        self.persist_registrations();
                    }
                    break;
                }
            }
            self.flush().await;
        }
    }

    /// Handles the datagrams waiting on the socket, up to [`UDP_BATCH`].
    fn read_datagrams(&mut self, socket: &UdpSocket, buf: &mut [u8]) {
        for _ in 0..UDP_BATCH {
            match socket.try_recv_from(buf) {
                Ok((n, source)) => {
                    self.endpoint.handle_datagram(
                        Instant::now(),
                        source,
                        Transport::Udp,
                        &buf[..n],
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP port unreachable from an earlier send surfaces here on Linux.
                Err(e) => debug!("udp receive: {e}"),
            }
        }
    }

    /// Dispatches every pending event and sends every pending transmit.
    async fn flush(&mut self) {
        while let Some(event) = self.endpoint.poll_event() {
            match event {
                Event::BindingsChanged { .. } => {
                    self.persist_at
                        .get_or_insert_with(|| tokio::time::Instant::now() + PERSIST_DELAY);
                }
                Event::IncomingCall(call) => {
                    let _ = self.notices.send(CallNotice::Incoming(call)).await;
                }
                Event::RequestCompleted { request, status } => {
                    debug!("keep-alive {request:?}: {status:?}");
                }
                other => {
                    let _ = self.notices.send(CallNotice::Event(other)).await;
                }
            }
        }
        while let Some(transmit) = self.endpoint.poll_transmit() {
            match transmit.transport {
                Transport::Udp => {
                    if let Some(socket) = &self.udp {
                        // Straight into the socket buffer; wait only when it is full.
                        let sent = match socket.try_send_to(&transmit.bytes, transmit.destination) {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                socket.send_to(&transmit.bytes, transmit.destination).await
                            }
                            other => other,
                        };
                        if let Err(e) = sent {
                            debug!("udp send to {}: {e}", transmit.destination);
                        }
                    }
                }
                _ => match self.connections.get(&transmit.destination) {
                    Some(writer) => {
                        if writer.try_send(transmit.bytes).is_err() {
                            debug!("tcp connection to {} is gone or full", transmit.destination);
                        }
                    }
                    None => debug!(
                        "no connection to {} for a {} message",
                        transmit.destination, transmit.transport
                    ),
                },
            }
        }
    }

    /// Pings every contact registered over UDP (RFC 3261 11; the usual NAT keep-alive):
    /// the request keeps the NAT mapping toward the phone open. A phone that does not
    /// answer shows up as a `RequestCompleted` without a status.
    fn send_keepalives(&mut self) {
        let Some(keepalive) = &self.keepalive else {
            return;
        };
        let now = Instant::now();
        self.keepalive_at = Some(tokio::time::Instant::now() + keepalive.interval);
        for aor in &keepalive.aors {
            for binding in self.endpoint.bindings(now, aor) {
                if binding.transport != Transport::Udp {
                    continue;
                }
                if let Err(e) = self.endpoint.send_options(
                    now,
                    binding.source,
                    Transport::Udp,
                    &binding.contact,
                ) {
                    debug!("no keep-alive for {}: {e}", binding.contact);
                }
            }
        }
    }

    fn persist_registrations(&mut self) {
        self.persist_at = None;
        let snapshot = self.endpoint.registrar_snapshot(Instant::now(), unix_now());
        self.metrics
            .registrations
            .set(snapshot.bindings.len() as i64);
        let result = serde_json::to_vec_pretty(&snapshot)
            .context("serialising registrations")
            .and_then(|json| write_atomic(&self.registrations_file, &json));
        if let Err(e) = result {
            warn!("cannot save registrations: {e:#}");
        }
    }
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tcp_acceptor(listener: TcpListener, tx: mpsc::Sender<Input>, max_message_size: usize) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(tcp_connection(stream, peer, tx.clone(), max_message_size));
            }
            Err(e) => {
                warn!("tcp accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn tcp_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tx: mpsc::Sender<Input>,
    max_message_size: usize,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(256);
    if tx
        .send(Input::ConnectionOpened {
            peer,
            writer: out_tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut framer = StreamFramer::new(max_message_size);
    let mut buf = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        loop {
            match framer.pop() {
                Ok(Some(Frame::Message(bytes))) => {
                    let input = Input::TcpMessage {
                        source: peer,
                        bytes,
                    };
                    if tx.send(input).await.is_err() {
                        break 'read;
                    }
                }
                Ok(Some(Frame::Ping)) => {
                    let _ = out_tx.send(PONG.to_vec()).await;
                }
                Ok(None) => break,
                Err(error) => {
                    // Unrecoverable framing: answer if possible, then close (RFC 3261 18.3).
                    let _ = tx
                        .send(Input::FramingError {
                            source: peer,
                            error,
                        })
                        .await;
                    break 'read;
                }
            }
        }
    }
    let _ = tx.send(Input::ConnectionClosed { peer }).await;
    drop(out_tx);
    let _ = write_task.await;
}
