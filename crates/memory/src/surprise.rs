//! Bayesian surprise: how unexpected an utterance is under a belief about what this
//! caller (or this stretch of the call) usually talks about.
//!
//! The belief is an isotropic Gaussian over embeddings, N(mu, sigma^2 I) in D = 384
//! dimensions: the maximum-entropy stand-in for a von Mises-Fisher distribution on the
//! unit sphere, and robust with a handful of samples (a diagonal covariance would need
//! hundreds). Surprise is the negative log-likelihood per dimension of the new embedding
//! x under the belief held *before* seeing it (EM-LLM's s_t = -log P(x_t | x_<t)):
//!
//! ```text
//! surprise(x) = ||x - mu||^2 / (2 D sigma^2) + ln(2 pi sigma^2) / 2
//! ```
//!
//! The update is an exponentially weighted posterior: with alpha = max(1 / (n + 2),
//! 1 / window), mu <- mu + alpha (x - mu) and sigma^2 <- (1 - alpha) (sigma^2 + alpha
//! ||x - mu||^2 / D). The floor on alpha is what makes the belief follow concept drift:
//! a caller whose calls move from one subject to another stops finding the new subject
//! surprising after about `window` turns. Two timescales use the same type: the caller's
//! long-term belief (window 200; its surprise sets storage strength) and a per-call
//! context belief (window 4; its surprise drives event segmentation).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Smallest variance per dimension, so a belief fitted to near-identical turns does not
/// make every later turn infinitely surprising.
const MIN_VAR: f32 = 1e-4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Belief {
    pub mean: Vec<f32>,
    /// sigma^2, per dimension.
    pub var: f32,
    pub n: u32,
    /// Effective memory in turns (the floor of the update rate is 1 / window).
    pub window: u32,
}

impl Belief {
    /// The prior for `dim`-dimensional unit vectors: mean zero, variance 1/D (a random
    /// unit vector's per-dimension variance), long-term window.
    pub fn new(dim: usize) -> Self {
        Self::with_window(dim, 200)
    }

    pub fn with_window(dim: usize, window: u32) -> Self {
        Self {
            mean: vec![0.0; dim],
            var: 1.0 / dim.max(1) as f32,
            n: 0,
            window: window.max(1),
        }
    }

    /// Negative log-likelihood per dimension of `x` under this belief (see module docs).
    pub fn surprise(&self, x: &[f32]) -> f32 {
        let d = self.mean.len().max(1) as f32;
        let var = self.var.max(MIN_VAR);
        let dist2 = self.dist2(x);
        dist2 / (2.0 * d * var) + 0.5 * (2.0 * std::f32::consts::PI * var).ln()
    }

    /// Folds `x` into the belief; returns the surprise it had before.
    pub fn observe(&mut self, x: &[f32]) -> f32 {
        let s = self.surprise(x);
        if x.len() != self.mean.len() {
            return s;
        }
        let d = self.mean.len() as f32;
        let alpha = (1.0 / (self.n as f32 + 2.0)).max(1.0 / self.window as f32);
        let dist2 = self.dist2(x);
        for (m, v) in self.mean.iter_mut().zip(x) {
            *m += alpha * (v - *m);
        }
        self.var = ((1.0 - alpha) * (self.var + alpha * dist2 / d)).max(MIN_VAR);
        self.n = self.n.saturating_add(1);
        s
    }

    fn dist2(&self, x: &[f32]) -> f32 {
        if x.len() != self.mean.len() {
            // A vector of another shape is as far as can be: twice a unit length.
            return 2.0;
        }
        self.mean
            .iter()
            .zip(x)
            .map(|(m, v)| (v - m) * (v - m))
            .sum()
    }
}

/// Rolling statistics of recent surprise values: the adaptive threshold mean + gamma *
/// std over the last `window` values (EM-LLM's boundary rule) and z-scores for strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurpriseStats {
    pub recent: VecDeque<f32>,
    pub window: usize,
}

impl Default for SurpriseStats {
    fn default() -> Self {
        Self::with_window(64)
    }
}

impl SurpriseStats {
    pub fn with_window(window: usize) -> Self {
        Self {
            recent: VecDeque::new(),
            window: window.max(2),
        }
    }

    pub fn push(&mut self, s: f32) {
        if !s.is_finite() {
            return;
        }
        self.recent.push_back(s);
        while self.recent.len() > self.window {
            self.recent.pop_front();
        }
    }

    /// (mean, standard deviation) of the recent values; None below two values.
    pub fn mean_std(&self) -> Option<(f32, f32)> {
        let n = self.recent.len();
        if n < 2 {
            return None;
        }
        let mean = self.recent.iter().sum::<f32>() / n as f32;
        let var = self
            .recent
            .iter()
            .map(|s| (s - mean) * (s - mean))
            .sum::<f32>()
            / n as f32;
        Some((mean, var.sqrt()))
    }

    /// How many standard deviations `s` lies above the recent mean (0 without history).
    pub fn z(&self, s: f32) -> f32 {
        match self.mean_std() {
            Some((mean, std)) if std > 1e-6 => (s - mean) / std,
            _ => 0.0,
        }
    }

    /// Whether `s` exceeds mean + gamma * std of the recent values.
    pub fn exceeds(&self, s: f32, gamma: f32) -> bool {
        match self.mean_std() {
            Some((mean, std)) => s > mean + gamma * std,
            None => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A unit vector near axis `axis` of `dim`, with a little deterministic jitter.
    pub(crate) fn near(axis: usize, dim: usize, jitter: u32) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        v[axis % dim] = 1.0;
        let j = (jitter as usize * 7 + 3) % dim;
        v[j] += 0.15;
        crate::vector::normalized(v)
    }

    #[test]
    fn the_familiar_is_less_surprising_than_the_new() {
        let mut b = Belief::with_window(16, 50);
        for i in 0..20 {
            b.observe(&near(0, 16, i));
        }
        let familiar = b.surprise(&near(0, 16, 99));
        let new = b.surprise(&near(5, 16, 99));
        assert!(new > familiar + 1.0, "new {new} familiar {familiar}");
    }

    #[test]
    fn drift_makes_a_new_subject_familiar_within_the_window() {
        let mut b = Belief::with_window(16, 10);
        for i in 0..30 {
            b.observe(&near(0, 16, i));
        }
        let before = b.surprise(&near(5, 16, 1));
        for i in 0..30 {
            b.observe(&near(5, 16, i));
        }
        let after = b.surprise(&near(5, 16, 1));
        assert!(after < before - 1.0, "before {before} after {after}");
        // Without the floor on the update rate (an ever-growing count), the old subject
        // would still dominate after the same turns.
        let mut slow = Belief::with_window(16, u32::MAX);
        for i in 0..30 {
            slow.observe(&near(0, 16, i));
        }
        for i in 0..30 {
            slow.observe(&near(5, 16, i));
        }
        assert!(slow.surprise(&near(5, 16, 1)) > after);
    }

    #[test]
    fn threshold_is_mean_plus_gamma_std_of_recent_values() {
        let mut st = SurpriseStats::with_window(4);
        for s in [1.0, 3.0, 1.0, 3.0] {
            st.push(s);
        }
        assert_eq!(st.mean_std(), Some((2.0, 1.0)));
        assert!(st.exceeds(3.1, 1.0));
        assert!(!st.exceeds(2.9, 1.0));
        st.push(100.0);
        assert_eq!(st.recent.len(), 4, "the window slides");
        st.push(f32::NAN);
        assert_eq!(st.recent.len(), 4, "non-finite values are ignored");
    }
}
