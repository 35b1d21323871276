//! Online learning of how retrieval weighs its evidence, per caller.
//!
//! Each recalled turn carries the normalised score every leg gave it ([`crate::Why`]).
//! When the caller then uses a recalled memory (their next words pick it up: see
//! [`crate::working::CallerMemory::observe`]), the legs that ranked it highly earn
//! weight by a multiplicative-weights update, w_l <- w_l * exp(eta * (c_l - mean c)),
//! renormalised to the same total and kept within [0.05, 0.8] of it so no leg is ever
//! switched off by noise. A caller whose memories are found by meaning rather than by
//! exact words drifts towards the vector leg, and the ranking changes with it.

use serde::{Deserialize, Serialize};

use crate::retrieve::Why;

/// Learning rate of the update.
const ETA: f32 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionWeights {
    /// Stemmed BM25 over turns.
    pub bm25: f32,
    /// Cosine of MiniLM embeddings over turns.
    pub vector: f32,
    /// The turn's episode: cosine and BM25 of the episode against the query.
    pub episode: f32,
    /// How many times the weights were updated.
    pub updates: u32,
}

impl Default for FusionWeights {
    fn default() -> Self {
        Self {
            bm25: 0.45,
            vector: 0.35,
            episode: 0.20,
            updates: 0,
        }
    }
}

impl FusionWeights {
    fn total(&self) -> f32 {
        self.bm25 + self.vector + self.episode
    }

    /// The caller used a memory that the legs scored as `why` says.
    pub fn reinforce(&mut self, why: &Why) {
        let c = [why.bm25, why.vector, why.episode];
        let mean = c.iter().sum::<f32>() / 3.0;
        let total = self.total();
        let mut w = [self.bm25, self.vector, self.episode];
        for (wi, ci) in w.iter_mut().zip(c) {
            *wi *= (ETA * (ci - mean)).exp();
        }
        let sum: f32 = w.iter().sum();
        for wi in &mut w {
            *wi = (*wi / sum * total).clamp(0.05 * total, 0.8 * total);
        }
        let sum: f32 = w.iter().sum();
        [self.bm25, self.vector, self.episode] = w.map(|x| x / sum * total);
        self.updates = self.updates.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_found_by_meaning_shifts_weight_to_the_vector_leg_within_bounds() {
        let mut w = FusionWeights::default();
        let by_meaning = Why {
            bm25: 0.0,
            vector: 1.0,
            episode: 0.3,
            ..Why::default()
        };
        for _ in 0..50 {
            w.reinforce(&by_meaning);
        }
        assert!(w.vector > w.bm25 * 4.0, "{w:?}");
        assert!((w.total() - FusionWeights::default().total()).abs() < 1e-4);
        assert!(
            w.bm25 >= 0.05 * w.total() - 1e-4,
            "no leg is switched off: {w:?}"
        );
        assert_eq!(w.updates, 50);
    }
}
