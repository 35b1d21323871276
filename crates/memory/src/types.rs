//! The records of the episodic store, as the engine computes them and the root package's
//! LanceDB tables hold them (one table each: `turns`, `episodes`, `facts`, `callers`).

use serde::{Deserialize, Serialize};

use crate::learn::FusionWeights;
use crate::surprise::{Belief, SurpriseStats};

/// Dimensions of an embedding (all-MiniLM-L6-v2).
pub const DIM: usize = 384;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Speaker {
    Caller,
    Agent,
}

impl Speaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Speaker::Caller => "caller",
            Speaker::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "caller" => Some(Speaker::Caller),
            "agent" => Some(Speaker::Agent),
            _ => None,
        }
    }
}

/// Something said, as the shell hands it in: text and its embedding, with the time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTurn {
    pub call_id: String,
    pub unix_ms: i64,
    pub speaker: Speaker,
    pub text: String,
    /// Unit-length embedding of `text` ([`DIM`] floats).
    pub embedding: Vec<f32>,
}

/// A stored turn. Its neighbours are the turns of the same call with `seq` one less and
/// one more (the temporal-contiguity links); `episode_id` names the event it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// `{call_id}/{seq}`: unique per caller.
    pub id: String,
    pub caller: String,
    pub call_id: String,
    /// Position in the call, from 0.
    pub seq: u32,
    pub unix_ms: i64,
    pub speaker: Speaker,
    pub text: String,
    pub embedding: Vec<f32>,
    /// Negative log-likelihood of the embedding under the caller's belief before it.
    pub surprise: f32,
    /// Storage strength at `unix_ms` (1 = ordinary); decays, see [`crate::forget`].
    pub strength: f32,
    pub access_count: u32,
    /// When it was last recalled (Unix ms; `unix_ms` if never).
    pub last_access_ms: i64,
    /// The episode it belongs to (empty until its call is segmented).
    pub episode_id: String,
}

impl Turn {
    pub fn make_id(call_id: &str, seq: u32) -> String {
        format!("{call_id}/{seq}")
    }
}

/// An event: a run of consecutive turns of one call about one thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    /// `{call_id}#{first_seq}`.
    pub id: String,
    pub caller: String,
    pub call_id: String,
    pub first_seq: u32,
    pub last_seq: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The caller's sentences that best represent the episode.
    pub summary: String,
    /// Normalised mean of its turns' embeddings.
    pub embedding: Vec<f32>,
    /// The largest surprise of its turns (how eventful it was).
    pub surprise: f32,
    pub strength: f32,
}

/// A consolidated fact about the caller: one value of one slot ("home" = "Berlin").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// `{slot}@{unix_ms}` of the turn it came from.
    pub id: String,
    pub caller: String,
    /// What it is about: `name`, `home`, `work`, `likes`, `person`, `plan`, `pet`, ...
    pub slot: String,
    /// The value as said ("Berlin", "Daniel", "the plumber on Thursday").
    pub value: String,
    /// A sentence about the caller ("You live in Berlin.") for prompts and embedding.
    pub text: String,
    /// When it was said (Unix ms).
    pub unix_ms: i64,
    /// Ids of the turns it was taken from (provenance).
    pub source_turns: Vec<String>,
    /// The fact that replaced it, if a later one did; it is kept, marked, for
    /// "where did I live before?".
    pub superseded_by: Option<String>,
    /// Unit-length embedding of `text` (empty until the shell computes it).
    pub embedding: Vec<f32>,
}

impl Fact {
    pub fn in_force(&self) -> bool {
        self.superseded_by.is_none()
    }
}

/// What is learned per caller: the surprise belief and its statistics, and the fusion
/// weights of retrieval. Stored as JSON in the `callers` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallerModel {
    pub caller: String,
    pub belief: Belief,
    pub surprise: SurpriseStats,
    pub weights: FusionWeights,
    pub calls: u32,
}

impl CallerModel {
    pub fn new(caller: &str) -> Self {
        Self {
            caller: caller.to_string(),
            belief: Belief::new(DIM),
            surprise: SurpriseStats::default(),
            weights: FusionWeights::default(),
            calls: 0,
        }
    }
}
