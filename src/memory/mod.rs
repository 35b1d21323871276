//! The episodic memory in the shell: the `sofia-memory` engine (crates/memory) over
//! LanceDB storage, with MiniLM embeddings computed on the CPU.
//!
//! - [`store`]: the LanceDB tables (turns, episodes, facts, callers).
//! - [`embed`]: all-MiniLM-L6-v2 via candle.
//! - [`service`]: the writer thread, the journal, the per-caller cache; implements
//!   `sofia_voice::Memory` for the agent.
//! - [`legacy`]: import of the flat turn log of earlier versions.
//! - [`cli`]: `sofia-phone memory ...`; [`bench`]: `memory bench`.

pub mod bench;
pub mod cli;
pub mod embed;
pub mod legacy;
pub mod service;
pub mod store;
