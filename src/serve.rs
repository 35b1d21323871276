//! `sofia-phone serve`: binds the sockets the profile names and runs until SIGINT or
//! SIGTERM. This is the thin tokio shell; protocol logic lives in the core crates.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, warn};

use crate::config::{Profile, Transport};
use crate::credentials;

pub fn run(profile: Profile) -> anyhow::Result<()> {
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sofia-phone")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(profile))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOFIA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

/// The sockets `serve` holds.
pub struct Listeners {
    pub udp: Option<UdpSocket>,
    pub tcp: Option<TcpListener>,
}

/// Binds SIP on every configured transport. A port in use or a missing privilege is a
/// runtime failure with the address in the message.
pub async fn bind(profile: &Profile) -> anyhow::Result<Listeners> {
    let addr = SocketAddr::new(profile.sip.listen, profile.sip.port);
    let mut listeners = Listeners {
        udp: None,
        tcp: None,
    };
    for transport in &profile.sip.transports {
        match transport {
            Transport::Udp => {
                let socket = UdpSocket::bind(addr)
                    .await
                    .with_context(|| format!("binding SIP udp {addr}"))?;
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
        }
    }
    Ok(listeners)
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
    let resolved = credentials::resolve(&profile.users, &profile.data_dir)?;
    for credential in &resolved.credentials {
        if resolved.generated.contains(&credential.extension) {
            // Printed once, on the run that generated it; it stays in the private file.
            println!(
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
    let _listeners = bind(&profile).await?;
    info!(
        "rtp ports {} ({} calls), http {}",
        profile.rtp.ports,
        profile.rtp.ports.call_capacity(),
        profile.http_listen
    );
    shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
