//! sofia-phone: the runtime shell around the sans-IO cores.
//!
//! This package owns everything that touches the outside world: configuration files,
//! sockets, the clock, model files and the database. Protocol logic lives in the core
//! crates under `crates/` and is driven from here.

pub mod agent;
pub mod bridge;
pub mod calls;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod credentials;
pub mod http;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod models;
pub mod serve;
pub mod sip;
pub mod tls;
pub mod voice;
