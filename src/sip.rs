//! The SIP shell: the sockets around [`sofia_sip::Endpoint`].
//!
//! One task owns the endpoint. It reads the UDP socket itself, in batches (no copy, no
//! hand-over between tasks: at thousands of REGISTERs a second the wake-ups of a
//! reader task cost more than the SIP work). Messages framed from TCP connections reach
//! it over a channel. It sends what the endpoint transmits, fires its timers on
//! the tokio clock, and hands call events to the call layer (see `calls.rs`), whose
//! commands come back over a channel of their own. No protocol logic lives here.
//!
//! No task here awaits a send to a task that can wait on it in turn (the cycle that
//! stalls signalling under load): the endpoint task only ever `try_send`s or sends on
//! unbounded channels, whose size admission control bounds (`calls.max_calls` bounds
//! the calls, each call has a handful of events and commands). Registrations are
//! written by a thread of their own, so a slow disk delays nothing but the file.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sofia_sip::{
    Body, CallHandle, Endpoint, Event, Frame, OutgoingInvite, RegistrarSnapshot, StreamFramer,
    Transport, PONG,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Largest UDP datagram we read; larger SIP messages must use TCP (RFC 3261 18.1.1).
const MAX_DATAGRAM: usize = 65_535;
/// Messages queued for the endpoint task; past this, TCP readers wait, instead of
/// memory growing without bound. (Only the socket tasks send here; commands and
/// shutdown have their own channel, so a TCP flood cannot hold them up.)
const INBOX_DEPTH: usize = 4096;
/// Longest a TCP connection may hold a partial message (slowloris): a phone sends a
/// whole message at once, in a few segments at most.
const PARTIAL_MESSAGE_LIMIT: Duration = Duration::from_secs(30);
/// Longest a new connection may stay silent before its first message: a phone
/// registers as soon as it connects, while idle connections opened to fill the
/// connection cap would otherwise hold their place for the whole idle timeout.
const FIRST_MESSAGE_LIMIT: Duration = Duration::from_secs(10);
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
    /// A re-INVITE from the switch with this offer (hold mirrored from the other leg).
    ReInvite(Body),
    /// A NOTIFY of the call's REFER subscription with the referred call's status
    /// (RFC 3515: 100 while it rings, then the final status).
    NotifyRefer(u16),
}

/// What the endpoint task tells the call layer.
#[derive(Debug)]
pub enum CallNotice {
    Incoming(sofia_sip::IncomingCall),
    Event(Event),
    /// Calls placed for `owner` (one per registered contact of the user it dialled):
    /// their events go to `owner`'s task. Sent before any event of theirs.
    Legs {
        owner: CallHandle,
        legs: Vec<CallHandle>,
    },
}

/// A call to place to every phone registered as a user (parallel forking).
#[derive(Debug, Clone)]
pub struct ForkRequest {
    /// The inbound call the new calls belong to.
    pub owner: CallHandle,
    /// The user (address of record) whose bindings are called.
    pub aor: String,
    /// The INVITE to send to each; destination and Request-URI come from each binding.
    pub template: OutgoingInvite,
}

/// Input of the endpoint task.
#[derive(Debug)]
pub enum Input {
    /// A message framed from a TCP or TLS connection (UDP is read by the endpoint task
    /// itself).
    StreamMessage {
        source: SocketAddr,
        transport: Transport,
        bytes: Vec<u8>,
    },
    FramingError {
        source: SocketAddr,
        transport: Transport,
        error: sofia_sip::FramingError,
    },
    ConnectionOpened {
        peer: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    ConnectionClosed {
        peer: SocketAddr,
    },
}

/// What other tasks ask of the endpoint task. Unbounded: each call sends a handful of
/// commands in its life, and calls are admission-controlled; so senders never wait.
#[derive(Debug)]
enum Control {
    Command {
        call: CallHandle,
        command: CallCommand,
    },
    Fork {
        request: ForkRequest,
        placed: tokio::sync::oneshot::Sender<Vec<CallHandle>>,
    },
    Shutdown,
}

/// A handle other tasks use to reach the endpoint task. Its methods never wait.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    control: mpsc::UnboundedSender<Control>,
}

impl EndpointHandle {
    pub fn command(&self, call: CallHandle, command: CallCommand) {
        let _ = self.control.send(Control::Command { call, command });
    }

    pub fn shutdown(&self) {
        let _ = self.control.send(Control::Shutdown);
    }

    /// Places one INVITE per registered contact of `request.aor`; resolves to their
    /// handles (empty when the user has no phone registered).
    pub fn fork(&self, request: ForkRequest) -> tokio::sync::oneshot::Receiver<Vec<CallHandle>> {
        let (placed, handles) = tokio::sync::oneshot::channel();
        let _ = self.control.send(Control::Fork { request, placed });
        handles
    }
}

/// Bounds on the TCP side of the shell.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_source: usize,
    /// A connection with nothing received for this long is closed.
    pub idle: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_source: 64,
            idle: Duration::from_secs(300),
        }
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
#[allow(clippy::too_many_arguments)] // reason: each socket and its limits, one for one
pub fn start(
    endpoint: Endpoint,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    tls: Option<(TcpListener, Arc<tokio_rustls::rustls::ServerConfig>)>,
    tcp_limits: TcpLimits,
    registrations_file: PathBuf,
    keepalive: Option<Keepalive>,
    metrics: Arc<Metrics>,
) -> (
    EndpointHandle,
    mpsc::UnboundedReceiver<CallNotice>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(INBOX_DEPTH);
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let udp = udp.map(Arc::new);
    // TCP and TLS share the connection limits: both are streams a stranger can open.
    let count = Arc::new(ConnectionCount::default());
    if let Some(listener) = tcp {
        tokio::spawn(stream_acceptor(
            listener,
            None,
            tx.clone(),
            endpoint.config().max_message_size,
            tcp_limits,
            Arc::clone(&count),
            Arc::clone(&metrics),
        ));
    }
    if let Some((listener, config)) = tls {
        tokio::spawn(stream_acceptor(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(config)),
            tx.clone(),
            endpoint.config().max_message_size,
            tcp_limits,
            count,
            Arc::clone(&metrics),
        ));
    }
    // Bindings restored from disk count from the start, not from the next REGISTER.
    let restored = endpoint
        .registrar_snapshot(Instant::now(), unix_now())
        .bindings
        .len();
    metrics.registrations.set(restored as i64);
    let task = EndpointTask {
        endpoint,
        udp,
        connections: HashMap::new(),
        notices: notice_tx,
        registrations: RegistrationWriter::start(registrations_file),
        persist_at: None,
        keepalive_at: keepalive
            .as_ref()
            .map(|k| tokio::time::Instant::now() + k.interval),
        keepalive,
        metrics,
        reported: sofia_sip::EndpointStats::default(),
    };
    let join = tokio::spawn(task.run(rx, control_rx));
    (
        EndpointHandle {
            control: control_tx,
        },
        notice_rx,
        join,
    )
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
    notices: mpsc::UnboundedSender<CallNotice>,
    registrations: RegistrationWriter,
    /// When the changed bindings are due on disk. Writes are batched (at most one per
    /// [`PERSIST_DELAY`]) so a registration storm is not a storm of file rewrites; a
    /// crash loses at most that much, and phones re-register anyway.
    persist_at: Option<tokio::time::Instant>,
    keepalive: Option<Keepalive>,
    keepalive_at: Option<tokio::time::Instant>,
    metrics: Arc<Metrics>,
    /// The endpoint's counters as last copied into `metrics`.
    reported: sofia_sip::EndpointStats,
}

const PERSIST_DELAY: std::time::Duration = std::time::Duration::from_millis(500);
/// How often the endpoint's counters and gauges are copied into the metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);

impl EndpointTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let udp = self.udp.clone();
        let mut datagram = vec![0u8; MAX_DATAGRAM];
        let mut metrics_tick = tokio::time::interval(METRICS_EVERY);
        metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .endpoint
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let input = tokio::select! {
                // Commands first: answering a call must not queue behind a TCP flood.
                biased;
                control = control.recv() => {
                    let now = Instant::now();
                    match control {
                        Some(Control::Command { call, command }) => {
                            let result = match command {
                                CallCommand::Ring => self.endpoint.ring(now, call),
                                CallCommand::Answer(body) => self.endpoint.answer(now, call, body),
                                CallCommand::Reject(status) => {
                                    self.endpoint.reject(now, call, status)
                                }
                                CallCommand::Hangup => self.endpoint.hangup(now, call),
                                CallCommand::ReInvite(body) => {
                                    self.endpoint.reinvite(now, call, body)
                                }
                                CallCommand::NotifyRefer(status) => {
                                    self.endpoint.notify_refer(now, call, status).map(|_| ())
                                }
                            };
                            if let Err(e) = result {
                                debug!("call {:?}: command refused: {e}", call);
                            }
                            self.flush().await;
                            continue;
                        }
                        Some(Control::Fork { request, placed }) => {
                            let legs = self.place_fork(now, request.template, &request.aor);
                            let _ = self.notices.send(CallNotice::Legs {
                                owner: request.owner,
                                legs: legs.clone(),
                            });
                            let _ = placed.send(legs);
                            self.flush().await;
                            continue;
                        }
                        // Shutdown, or every handle is gone (nobody can stop us later).
                        Some(Control::Shutdown) | None => {
                            self.flush().await;
                            if self.persist_at.is_some() {
                                self.persist_registrations();
                            }
                            let writer = self.registrations;
                            let finished = tokio::task::spawn_blocking(move || {
                                writer.finish(Duration::from_secs(5))
                            });
                            if !matches!(finished.await, Ok(true)) {
                                warn!("registrations were not written within 5 s of shutdown");
                            }
                            break;
                        }
                    }
                }
                _ = metrics_tick.tick() => {
                    self.report_metrics();
                    continue;
                }
                // Only the TCP side sends here; with no TCP it is closed at once.
                Some(input) = rx.recv() => input,
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
            let now = Instant::now();
            match input {
                Input::StreamMessage {
                    source,
                    transport,
                    bytes,
                } => self.endpoint.handle_message(now, source, transport, &bytes),
                Input::FramingError {
                    source,
                    transport,
                    error,
                } => {
                    self.endpoint
                        .handle_framing_error(now, source, transport, &error);
                }
                Input::ConnectionOpened { peer, writer } => {
                    self.connections.insert(peer, writer);
                }
                Input::ConnectionClosed { peer } => {
                    self.connections.remove(&peer);
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
                    let _ = self.notices.send(CallNotice::Incoming(call));
                }
                Event::RequestCompleted { request, status } => {
                    debug!("keep-alive {request:?}: {status:?}");
                }
                other => {
                    let _ = self.notices.send(CallNotice::Event(other));
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

    /// One INVITE per live binding of `aor`, each to the address and over the flow the
    /// phone registered from (its NAT mapping, or its own TCP connection).
    fn place_fork(&mut self, now: Instant, template: OutgoingInvite, aor: &str) -> Vec<CallHandle> {
        let mut legs = Vec::new();
        for binding in self.endpoint.bindings(now, aor) {
            let invite = OutgoingInvite {
                destination: binding.source,
                transport: binding.transport,
                request_uri: binding.contact.clone(),
                ..template.clone()
            };
            match self.endpoint.invite(now, invite) {
                Ok(call) => legs.push(call),
                Err(e) => debug!("no INVITE to {}: {e}", binding.contact),
            }
        }
        legs
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

    /// Hands the bindings to the writer thread: taking the snapshot is a copy in
    /// memory; serialising and the disk happen there.
    fn persist_registrations(&mut self) {
        self.persist_at = None;
        let snapshot = self.endpoint.registrar_snapshot(Instant::now(), unix_now());
        self.metrics
            .registrations
            .set(snapshot.bindings.len() as i64);
        self.registrations.save(snapshot);
    }

    /// Copies the endpoint's counters (as increments) and gauges into the metrics.
    fn report_metrics(&mut self) {
        let now = Instant::now();
        let stats = self.endpoint.stats().clone();
        let m = &self.metrics;
        for (method, n) in &stats.requests {
            let before = self.reported.requests.get(method).copied().unwrap_or(0);
            m.sip_requests_received(method, n - before);
        }
        for (code, n) in &stats.responses {
            let before = self.reported.responses.get(code).copied().unwrap_or(0);
            m.sip_responses_sent(*code, n - before);
        }
        let r = &self.reported;
        m.auth_failures
            .inc_by(stats.auth_failures - r.auth_failures);
        m.stateless_overload_responses
            .inc_by(stats.transaction_overload - r.transaction_overload);
        m.admission_rejects_by(
            "transactions",
            stats.transaction_overload - r.transaction_overload,
        );
        m.admission_rejects_by("max_calls", stats.max_calls_rejects - r.max_calls_rejects);
        m.admission_rejects_by(
            "max_calls_per_user",
            stats.max_calls_per_user_rejects - r.max_calls_per_user_rejects,
        );
        let (blocked, _tracked) = self.endpoint.blocking(now);
        m.blocked_sources.set(blocked as i64);
        let (server, client) = self.endpoint.transaction_count();
        m.set_sip_transactions(server, client);
        self.reported = stats;
    }
}

/// Writes registration snapshots on a thread of its own: the newest snapshot waits in
/// a slot (older ones it replaces are never written), so a stalled disk holds one
/// snapshot in memory and stalls nothing else. Each write is atomic and durable:
/// temporary file, fsync, rename, fsync of the directory.
struct RegistrationWriter {
    shared: Arc<WriterShared>,
    wake: std::sync::mpsc::SyncSender<()>,
}

struct WriterShared {
    /// The snapshot waiting to be written, and whether a write is in progress.
    slot: Mutex<(Option<RegistrarSnapshot>, bool)>,
    idle: std::sync::Condvar,
}

impl RegistrationWriter {
    fn start(path: PathBuf) -> Self {
        let shared = Arc::new(WriterShared {
            slot: Mutex::new((None, false)),
            idle: std::sync::Condvar::new(),
        });
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let thread_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("registrations".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    let snapshot = {
                        let mut slot = lock(&thread_shared.slot);
                        slot.1 = slot.0.is_some();
                        slot.0.take()
                    };
                    if let Some(snapshot) = snapshot {
                        let result = serde_json::to_vec_pretty(&snapshot)
                            .context("serialising registrations")
                            .and_then(|json| write_durably(&path, &json));
                        if let Err(e) = result {
                            warn!("cannot save registrations: {e:#}");
                        }
                    }
                    lock(&thread_shared.slot).1 = false;
                    thread_shared.idle.notify_all();
                }
            });
        if let Err(e) = spawned {
            warn!("cannot start the registrations writer: {e}; bindings will not be saved");
        }
        Self { shared, wake }
    }

    fn save(&self, snapshot: RegistrarSnapshot) {
        lock(&self.shared.slot).0 = Some(snapshot);
        // A wake-up already pending will pick the newest snapshot up.
        let _ = self.wake.try_send(());
    }

    /// Waits until what was saved is on disk, at most `limit`; false on timeout.
    fn finish(self, limit: Duration) -> bool {
        let guard = lock(&self.shared.slot);
        let result = self
            .shared
            .idle
            .wait_timeout_while(guard, limit, |(pending, writing)| {
                pending.is_some() || *writing
            });
        match result {
            Ok((_, timeout)) => !timeout.timed_out(),
            Err(_) => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_durably(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    // The rename is durable once the directory is.
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Connections open now, in all and per source address: the acceptor refuses past
/// [`TcpLimits`], and each connection's [`ConnectionSlot`] gives its place back when
/// the connection ends, however it ends.
#[derive(Default)]
struct ConnectionCount {
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

struct ConnectionSlot {
    count: Arc<ConnectionCount>,
    ip: IpAddr,
    metrics: Arc<Metrics>,
}

impl ConnectionCount {
    /// A slot for a new connection from `ip`, or `None` past a limit.
    fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &TcpLimits,
        metrics: &Arc<Metrics>,
    ) -> Option<ConnectionSlot> {
        let mut per_source = lock(&self.per_source);
        let total: usize = per_source.values().sum();
        let from_ip = per_source.get(&ip).copied().unwrap_or(0);
        if total >= limits.max_connections || from_ip >= limits.max_per_source {
            return None;
        }
        per_source.insert(ip, from_ip + 1);
        metrics.tcp_connections.set((total + 1) as i64);
        Some(ConnectionSlot {
            count: Arc::clone(self),
            ip,
            metrics: Arc::clone(metrics),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_source = lock(&self.count.per_source);
        if let Some(n) = per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_source.remove(&self.ip);
            }
        }
        let total: usize = per_source.values().sum();
        self.metrics.tcp_connections.set(total as i64);
    }
}

/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Accepts TCP connections, or TLS ones when `tls` is given (the handshake runs in the
/// connection's own task, so a slow one holds up nobody).
async fn stream_acceptor(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<Input>,
    max_message_size: usize,
    limits: TcpLimits,
    count: Arc<ConnectionCount>,
    metrics: Arc<Metrics>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = count.admit(peer.ip(), &limits, &metrics) else {
                    // Closed at once: past the limit a connection costs nothing more.
                    metrics.tcp_connections_refused.inc();
                    debug!("connection from {peer} refused: connection limit");
                    drop(stream);
                    continue;
                };
                let tx = tx.clone();
                let idle = limits.idle;
                match &tls {
                    None => {
                        tokio::spawn(stream_connection(
                            stream,
                            peer,
                            Transport::Tcp,
                            tx,
                            max_message_size,
                            idle,
                            slot,
                        ));
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let metrics = Arc::clone(&metrics);
                        tokio::spawn(async move {
                            let handshake =
                                tokio::time::timeout(TLS_HANDSHAKE_LIMIT, acceptor.accept(stream))
                                    .await;
                            match handshake {
                                Ok(Ok(stream)) => {
                                    metrics.tls_handshake("ok");
                                    stream_connection(
                                        stream,
                                        peer,
                                        Transport::Tls,
                                        tx,
                                        max_message_size,
                                        idle,
                                        slot,
                                    )
                                    .await;
                                }
                                Ok(Err(e)) => {
                                    metrics.tls_handshake("failed");
                                    debug!("TLS handshake with {peer} failed: {e}");
                                }
                                Err(_) => {
                                    metrics.tls_handshake("timeout");
                                    debug!("TLS handshake with {peer} timed out");
                                }
                            }
                        });
                    }
                }
            }
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One TCP or TLS connection: frames messages off it for the endpoint task and writes
/// what the endpoint sends to this peer.
async fn stream_connection<S>(
    stream: S,
    peer: SocketAddr,
    transport: Transport,
    tx: mpsc::Sender<Input>,
    max_message_size: usize,
    idle: Duration,
    _slot: ConnectionSlot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
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
    // When the partial message now buffered started arriving.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let opened = tokio::time::Instant::now();
    let mut seen_message = false;
    'read: loop {
        // Idle connections are closed after `idle` (before their first message, after
        // FIRST_MESSAGE_LIMIT); a message begun but not finished gets at most
        // PARTIAL_MESSAGE_LIMIT, however slowly its bytes trickle in.
        let mut limit = tokio::time::Instant::now() + idle;
        if !seen_message {
            limit = limit.min(opened + FIRST_MESSAGE_LIMIT);
        }
        if let Some(since) = partial_since {
            limit = limit.min(since + PARTIAL_MESSAGE_LIMIT);
        }
        let n = match tokio::time::timeout_at(limit, reader.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
            Err(_) => {
                debug!("tcp connection from {peer}: closed, idle or a message never finished");
                break;
            }
        };
        framer.push(&buf[..n]);
        loop {
            match framer.pop() {
                Ok(Some(Frame::Message(bytes))) => {
                    seen_message = true;
                    let input = Input::StreamMessage {
                        source: peer,
                        transport,
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
                            transport,
                            error,
                        })
                        .await;
                    break 'read;
                }
            }
        }
        partial_since = match (framer.buffered(), partial_since) {
            (0, _) => None,
            (_, Some(since)) => Some(since),
            (_, None) => Some(tokio::time::Instant::now()),
        };
    }
    let _ = tx.send(Input::ConnectionClosed { peer }).await;
    drop(out_tx);
    let _ = write_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SIP request from 127.0.0.1:`port` with a fresh branch.
    fn request(method: &str, n: usize, port: u16) -> Vec<u8> {
        format!(
            "{method} sip:9196@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-flood-{method}-{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=f{n}\r\n\
             To: <sip:9196@127.0.0.1>\r\nCall-ID: flood-{method}-{n}\r\n\
             CSeq: 1 {method}\r\nContact: <sip:1000@127.0.0.1:{port}>\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The call layer stops reading (as when it, or a call it waits on, is stuck)
    /// while INVITEs flood in: the endpoint task must go on answering everyone else.
    /// With a bounded notice channel it used to block on the 1025th notice.
    #[tokio::test]
    async fn signalling_goes_on_while_the_call_layer_is_not_reading() {
        let mut config = sofia_sip::Config::new("test", "127.0.0.1", [3; 32]);
        config.auth_invite = false;
        config.max_calls = 500;
        let endpoint = Endpoint::new(config, Instant::now());
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let switch = udp.local_addr().unwrap();
        let data = tempfile::tempdir().unwrap();
        let (_handle, notices, _task) = start(
            endpoint,
            Some(udp),
            None,
            None,
            TcpLimits::default(),
            data.path().join("registrations.json"),
            None,
            Arc::new(Metrics::new()),
        );
        // Held, never read.
        let _blocked_call_layer = notices;
        let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let flood_port = flood.local_addr().unwrap().port();
        for n in 0..3000 {
            flood
                .send_to(&request("INVITE", n, flood_port), switch)
                .unwrap();
            if n % 100 == 0 {
                // Leave the socket buffers room; the endpoint reads in batches.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let probe = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let probe_port = probe.local_addr().unwrap().port();
        probe
            .send_to(&request("OPTIONS", 0, probe_port), switch)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let answered = tokio::time::timeout(Duration::from_secs(5), probe.recv_from(&mut buf))
            .await
            .expect("OPTIONS unanswered: the endpoint task is stalled")
            .unwrap();
        assert!(buf[..answered.0].starts_with(b"SIP/2.0 200"));
    }

    /// Opens the FIFO's read side when dropped, so that whoever is stuck writing it
    /// gets going again and the test ends (pass or fail) instead of hanging.
    struct UnblockFifo(PathBuf);

    impl Drop for UnblockFifo {
        fn drop(&mut self) {
            let fifo = self.0.clone();
            std::thread::spawn(move || std::fs::read(fifo));
        }
    }

    /// A registrations file that blocks on write (a FIFO nobody reads: a hung disk)
    /// must not hold up signalling, and shutdown gives up on it after its limit. (Two
    /// worker threads: written on the SIP task, as it was, the write blocks a whole
    /// thread, and the test's timeouts must still run to fail it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_registrations_disk_does_not_stall_signalling() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("registrations.json");
        let fifo = file.with_extension("tmp");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let _unblock = UnblockFifo(fifo);
        let mut config = sofia_sip::Config::new("test", "127.0.0.1", [3; 32]);
        config.auth_register = false;
        config = config.with_user("1000", "x");
        let endpoint = Endpoint::new(config, Instant::now());
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let switch = udp.local_addr().unwrap();
        let (handle, _notices, task) = start(
            endpoint,
            Some(udp),
            None,
            None,
            TcpLimits::default(),
            file,
            None,
            Arc::new(Metrics::new()),
        );
        let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = phone.local_addr().unwrap().port();
        let register = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-reg-1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=r1\r\n\
             To: <sip:1000@127.0.0.1>\r\nCall-ID: reg-1\r\nCSeq: 1 REGISTER\r\n\
             Contact: <sip:1000@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
        );
        let mut buf = vec![0u8; 4096];
        phone.send_to(register.as_bytes(), switch).await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), phone.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"SIP/2.0 200"));
        // Past PERSIST_DELAY the snapshot is being written, into the FIFO, forever.
        tokio::time::sleep(PERSIST_DELAY * 3).await;
        for i in 0..3 {
            phone
                .send_to(&request("OPTIONS", i, port), switch)
                .await
                .unwrap();
            let n = tokio::time::timeout(Duration::from_secs(2), phone.recv(&mut buf))
                .await
                .expect("signalling stalled behind the registrations file")
                .unwrap();
            assert!(buf[..n].starts_with(b"SIP/2.0 200"));
        }
        handle.shutdown();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("shutdown waited on the stalled disk without a limit")
            .unwrap();
    }
}
