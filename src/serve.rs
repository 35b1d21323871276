//! `sofia-phone serve`: binds the sockets the profile names and runs until SIGINT or
//! SIGTERM. This is the thin tokio shell; protocol logic lives in the core crates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{debug, info, warn};

use crate::agent::AgentSlot;
use crate::calls::Lifecycle;
use crate::cli::LogFormat;
use crate::config::{Application, Profile, Transport};
use crate::credentials;
use crate::media::PortPool;
use crate::metrics::Metrics;
use crate::{calls, http, sip};
use sofia_sip::Endpoint;

pub fn run(profile: Profile, log_format: LogFormat) -> anyhow::Result<()> {
    init_logging(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sofia-phone")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(profile))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOFIA_LOG")
        // LanceDB logs every query plan at info: that is the memory's detail, not the switch's.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "info,lance=warn,lance_core=warn,lance_index=warn,lance_io=warn,lance_file=warn,lance_table=warn,lance_encoding=warn,lance_datafusion=warn,lancedb=warn",
            )
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        // Colour only on a terminal: logs collected by containers and tests stay plain.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // One object a line: timestamp, level, fields (message and the event's fields).
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

/// The sockets `serve` holds.
pub struct Listeners {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
    pub tls: Option<(
        TcpListener,
        std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    )>,
}

/// Binds SIP on every configured transport. A port in use or a missing privilege is a
/// runtime failure with the address in the message.
pub async fn bind(profile: &Profile) -> anyhow::Result<Listeners> {
    let addr = SocketAddr::new(profile.sip.listen, profile.sip.port);
    let mut listeners = Listeners {
        udp: None,
        tcp: None,
        tls: None,
    };
    for transport in &profile.sip.transports {
        match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP udp {addr}"))?;
                enlarge_receive_buffer(&socket);
                info!("listening for SIP on udp {}", socket.local_addr()?);
                listeners.udp = Some(socket);
            }
            Transport::Tcp => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP tcp {addr}"))?;
                info!("listening for SIP on tcp {}", listener.local_addr()?);
                listeners.tcp = Some(listener);
            }
            Transport::Tls => {
                let config = crate::tls::server_config(profile, &advertised_host(profile))?;
                let tls_addr = SocketAddr::new(profile.sip.listen, profile.sip.tls_port);
                let listener = TcpListener::bind(tls_addr)
                    .await
                    .with_context(|| format!("binding SIP tls {tls_addr} (sip.tls_port)"))?;
                info!("listening for SIP on tls {}", listener.local_addr()?);
                listeners.tls = Some((listener, config));
            }
        }
    }
    Ok(listeners)
}

/// Receive buffer asked for on the SIP UDP socket. The kernel default (about 200 KiB)
/// holds a few hundred messages: a pause of a few milliseconds under a registration
/// storm overflows it, and every dropped request costs the phone a 500 ms retransmit.
/// The kernel caps the size at net.core.rmem_max.
const SIP_UDP_RECEIVE_BUFFER: usize = 4 << 20;

fn enlarge_receive_buffer(socket: &UdpSocket) {
    let socket = socket2::SockRef::from(socket);
    if let Err(e) = socket.set_recv_buffer_size(SIP_UDP_RECEIVE_BUFFER) {
        warn!("cannot enlarge the SIP udp receive buffer: {e}");
    }
    if let Ok(size) = socket.recv_buffer_size() {
        debug!("SIP udp receive buffer: {size} bytes");
    }
}

async fn serve(profile: Profile) -> anyhow::Result<()> {
    info!(
        "sofia-phone {} starting with profile {}",
        env!("CARGO_PKG_VERSION"),
        profile.origin
    );
    std::fs::create_dir_all(&profile.data_dir)
        .with_context(|| format!("creating data dir {}", profile.data_dir.display()))?;
    info!("data dir {}", profile.data_dir.display());
    info!("models dir {}", profile.models_dir.display());
    if let Some(note) = &profile.models_note {
        info!("{note}");
    }
    let resolved = credentials::resolve(&profile.users, &profile.data_dir)?;
    for credential in &resolved.credentials {
        if resolved.generated.contains(&credential.extension) {
            // Printed once, on the run that generated it; it stays in the private file.
            // On stderr, the stream the log goes to, so it appears in order with it.
            eprintln!(
                "generated SIP password for {}: {} (kept in {})",
                credential.extension,
                credential.password,
                resolved.file.display()
            );
        }
    }
    if !profile.sip.listen.is_loopback()
        && resolved.credentials.iter().any(|c| c.password.len() < 8)
    {
        warn!("a user has a password shorter than 8 characters on a non-loopback address");
    }
    // Signal handlers go in before the sockets are bound and "listening" is logged: a
    // SIGTERM that arrives right after that line must stop us cleanly, not kill us.
    let mut shutdown = ShutdownSignal::install()?;
    let listeners = bind(&profile).await?;
    let metrics = Arc::new(Metrics::new());
    let has_agent = profile
        .dialplan
        .iter()
        .any(|r| r.application == Application::Agent);
    let sip_addrs = [
        listeners
            .udp
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| format!("udp {a}")),
        listeners
            .tcp
            .as_ref()
            .and_then(|s| s.local_addr().ok())
            .map(|a| format!("tcp {a}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (http_addr, http_listener, router) = http::bind(
        profile.http_listen,
        Arc::clone(&metrics),
        sip_addrs,
        has_agent,
        profile.max_calls(),
    )
    .await?;
    info!("health and metrics on http://{http_addr}/health and /metrics");
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        let served = axum::serve(http_listener, router)
            .with_graceful_shutdown(async {
                let _ = http_stopped.await;
            })
            .await;
        if let Err(e) = served {
            warn!("the health/metrics listener stopped: {e}");
        }
    });
    let mut endpoint = Endpoint::new(sip_config(&profile, &resolved.credentials), Instant::now());
    let registrations = profile.data_dir.join("registrations.json");
    sip::load_registrations(&mut endpoint, &registrations);
    let keepalive = (profile.registration.keepalive_secs > 0).then(|| sip::Keepalive {
        interval: Duration::from_secs(profile.registration.keepalive_secs.into()),
        aors: profile.users.iter().map(|u| u.extension.clone()).collect(),
    });
    let (handle, notices, endpoint_task) = sip::start(
        endpoint,
        listeners.udp,
        listeners.tcp,
        listeners.tls,
        sip::TcpLimits {
            max_connections: profile.sip.max_tcp_connections as usize,
            max_per_source: profile.sip.max_tcp_connections_per_source as usize,
            idle: Duration::from_secs(profile.sip.tcp_idle_secs.into()),
        },
        registrations,
        keepalive,
        Arc::clone(&metrics),
    );
    let ports = PortPool::new(
        profile.rtp.ports.first,
        profile.rtp.ports.last,
        profile.sip.listen,
    )?;
    let agent = if has_agent {
        AgentSlot::load_in_background(profile.clone(), Arc::clone(&metrics))
    } else {
        AgentSlot::default()
    };
    let layer = calls::CallLayer {
        profile: profile.clone(),
        endpoint: handle.clone(),
        ports,
        media_ip: media_ip(&profile),
        agent: agent.clone(),
        agent_max_calls: profile.agent.max_calls(),
        metrics: Arc::clone(&metrics),
    };
    let (lifecycle, lifecycle_rx) = tokio::sync::watch::channel(Lifecycle::Running);
    let mut calls = tokio::spawn(calls::run(layer, notices, lifecycle_rx));
    info!(
        "rtp ports {} ({} calls)",
        profile.rtp.ports,
        profile.rtp.ports.call_capacity()
    );
    shutdown.recv().await;
    // Drain: no new calls, and the ones in progress get `drain_secs` to end by
    // themselves; then (or on a second signal) we hang up on the rest, and the endpoint
    // runs until their BYEs are out.
    let drain = Duration::from_secs(profile.calls.drain_secs.into());
    // Not ready (/readyz) from here on; set before the log line tests wait for.
    metrics.set_draining(true);
    info!("shutting down: new calls get 503; calls in progress have {drain:?} to end");
    let _ = lifecycle.send(Lifecycle::Draining);
    let drained = tokio::select! {
        _ = &mut calls => true,
        _ = tokio::time::sleep(drain) => false,
        _ = shutdown.recv() => false,
    };
    if !drained {
        info!("hanging up on the calls still in progress");
        let _ = lifecycle.send(Lifecycle::HangUp);
        // Long enough for a call to finish: its BYE goes at once, then it may wait for
        // a caller turn being transcribed (up to the STT timeout) before memory closes it.
        if tokio::time::timeout(Duration::from_secs(15), &mut calls)
            .await
            .is_err()
        {
            calls.abort();
        }
    }
    // Every call has ended and queued its close: wait until memory has written them.
    if let Ok(agent) = agent.get() {
        let flushed = tokio::task::spawn_blocking(move || agent.flush_memory());
        if tokio::time::timeout(Duration::from_secs(20), flushed)
            .await
            .is_err()
        {
            tracing::warn!("memory did not finish writing within 20 s; its journal keeps the rest");
        }
    }
    handle.shutdown();
    let _ = endpoint_task.await;
    let _ = http_stop.send(());
    let _ = http_task.await;
    Ok(())
}

/// The SIP core's configuration, from the profile and the resolved passwords.
pub fn sip_config(profile: &Profile, credentials: &[credentials::Credential]) -> sofia_sip::Config {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let mut config =
        sofia_sip::Config::new(profile.sip.realm.clone(), advertised_host(profile), seed);
    for c in credentials {
        config = config.with_user(&c.extension, &c.password);
    }
    config.udp_port = profile.sip.port;
    config.tcp_port = profile.sip.port;
    config.tls_port = profile.sip.tls_port;
    config.auth_register = profile.auth.register;
    config.auth_invite = profile.auth.invite;
    config.registrar = sofia_sip::RegistrarLimits {
        min_expires: profile.registration.min_expires,
        max_expires: profile.registration.max_expires,
        default_expires: profile.registration.default_expires,
        max_bindings_per_aor: profile.registration.max_contacts_per_aor,
    };
    config.auth.nonce_ttl = Duration::from_secs(profile.auth.nonce_ttl_secs.into());
    config.auth.block_threshold = profile.auth.failures_before_block;
    config.auth.block_duration = Duration::from_secs(profile.auth.block_secs.into());
    config.user_agent = format!("sofia-phone/{}", env!("CARGO_PKG_VERSION"));
    config.max_server_transactions = profile.sip.max_transactions as usize;
    config.max_calls = profile.max_calls();
    config.max_calls_per_user = profile.calls.max_calls_per_user as usize;
    config
}

/// The address put in SDP `c=` lines: the external address (a DNS name resolved when
/// the profile was loaded), else the bound address, else the outward interface's.
pub fn media_ip(profile: &Profile) -> std::net::IpAddr {
    if let Some(ip) = profile.sip.external_ip {
        return ip;
    }
    advertised_host(profile)
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The host put in Via and Contact: the configured external address, else the bound
/// address, else (bound to every interface) the address of the interface that routes
/// outwards, found without sending anything.
pub fn advertised_host(profile: &Profile) -> String {
    if let Some(external) = &profile.sip.external_addr {
        return external.clone();
    }
    if !profile.sip.listen.is_unspecified() {
        return profile.sip.listen.to_string();
    }
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr());
    match probe {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip().to_string(),
        _ => "127.0.0.1".to_string(),
    }
}

/// SIGINT or SIGTERM, registered when installed (not when first awaited).
struct ShutdownSignal {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
