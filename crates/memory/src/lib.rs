//! sofia-memory: the sans-IO episodic memory engine of the voice agent.
//!
//! Eight components, each a module, each changing what the agent keeps or recalls:
//!
//! | component | module | what it does |
//! |---|---|---|
//! | episodic store | [`types`], [`working`] | turns, episodes and facts with their links |
//! | Bayesian surprise | [`surprise`] | a per-caller Gaussian belief over embeddings; surprise = NLL |
//! | event segmentation | [`segment`] | rolling-threshold boundaries refined by modularity |
//! | two-stage retrieval | [`retrieve`] | BM25 + vector + episode legs fused, then contiguity and re-rank |
//! | consolidation | [`facts`] | episodes distilled into slot facts with provenance |
//! | forgetting | [`forget`] | power-law decay slowed by surprise and recall; pruning |
//! | interference resolution | [`facts`], [`working`] | supersession by slot, duplicate merging |
//! | online learning | [`surprise`], [`learn`] | adaptive thresholds, fusion weights tuned by use |
//!
//! What it must not do: read a clock, spawn threads, or touch files, sockets, models or a
//! database (`crates/clippy.toml` enforces the first three). Time (`now_ms`, Unix
//! milliseconds) and embeddings (unit vectors of [`DIM`] floats) are inputs; the root
//! package stores the records in LanceDB and computes embeddings with MiniLM.

pub mod bm25;
pub mod facts;
pub mod forget;
pub mod learn;
pub mod retrieve;
pub mod segment;
pub mod surprise;
pub mod text;
pub mod timecue;
pub mod types;
pub mod vector;
pub mod working;

pub use learn::FusionWeights;
pub use retrieve::{Recall, RecallOptions, Recalled, Why};
pub use surprise::Belief;
pub use types::{CallerModel, Episode, Fact, NewTurn, Speaker, Turn, DIM};
pub use working::{CallClose, CallerMemory, Consolidation};

/// Milliseconds in a day, for the date arithmetic of decay, retention and time cues.
pub const DAY_MS: i64 = 86_400_000;
