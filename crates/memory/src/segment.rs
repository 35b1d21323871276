//! Event segmentation: where one episode of a call ends and the next begins.
//!
//! 1. Boundaries where the context surprise of a turn exceeds mean + gamma * std of the
//!    surprise of the turns before it in the call (EM-LLM's rule; see [`crate::surprise`]),
//!    keeping every event at least `min_len` turns long.
//! 2. Each boundary is then moved, within `radius` turns and without bringing an event
//!    under `min_len` turns, to the position that maximises the modularity of the
//!    partition on the turn-by-turn similarity matrix (EM-LLM's graph refinement):
//!
//! ```text
//! Q = 1/(2m) * sum_{i,j in the same event} (A_ij - k_i k_j / (2m)),  A_ij = max(0, cos(e_i, e_j)), A_ii = 0
//! ```
//!
//! 3. Boundaries whose removal raises Q are dropped, the best gain first (an addition to
//!    EM-LLM, which keeps the number of events): merging two neighbouring events raises
//!    Q exactly when their turns are more alike than the degree null model expects, so
//!    the boundary between them was a spike of surprise (a short or off-hand turn such as
//!    "Can they come on the thirtieth?") rather than a change of subject.
//!
//! On the labelled calls of fixtures/memory/topic_shifts.json with MiniLM embeddings
//! (`sofia-phone memory bench --segments`, tests/memory_segmentation.rs), steps 2 and 3
//! with `min_len` 3 took boundary F1 (tolerance 1 turn) from 0.59 to 0.71.

use crate::surprise::{Belief, SurpriseStats};
use crate::vector::dot;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentConfig {
    /// Boundary threshold in standard deviations above the recent mean.
    pub gamma: f32,
    /// Turns of context the per-call belief remembers.
    pub context_window: u32,
    /// How far refinement may move a boundary.
    pub radius: usize,
    /// Fewest turns in an event, the first and the last included (surprise boundaries
    /// closer than this are dropped; refinement never moves one closer). Three: a request,
    /// its answer and a follow-up; one exchange on its own is kept with its neighbours.
    pub min_len: usize,
    /// Whether to refine the boundaries by modularity, moving and then dropping them
    /// (off for the ablation: surprise alone).
    pub refine: bool,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        Self {
            gamma: 1.0,
            context_window: 4,
            radius: 2,
            min_len: 3,
            refine: true,
        }
    }
}

/// Context surprise of each turn of a call under a belief fitted to the call's turns
/// before it (the first turn's is measured against the prior).
pub fn context_surprise(embeddings: &[&[f32]], window: u32) -> Vec<f32> {
    let dim = embeddings.first().map_or(0, |e| e.len());
    let mut belief = Belief::with_window(dim, window);
    embeddings.iter().map(|e| belief.observe(e)).collect()
}

/// Indices where a new event starts (never 0), from surprise alone.
pub fn surprise_boundaries(surprise: &[f32], cfg: &SegmentConfig) -> Vec<usize> {
    let mut stats = SurpriseStats::with_window(16);
    let mut out: Vec<usize> = Vec::new();
    for (i, &s) in surprise.iter().enumerate() {
        // The first two turns only seed the statistics.
        if i >= 2 && stats.exceeds(s, cfg.gamma) {
            let last = out.last().copied().unwrap_or(0);
            if i - last >= cfg.min_len && surprise.len() - i >= cfg.min_len {
                out.push(i);
            }
        }
        stats.push(s);
    }
    out
}

/// Similarity matrix A_ij = max(0, cos) with a zero diagonal.
pub fn similarity(embeddings: &[&[f32]]) -> Vec<Vec<f32>> {
    let n = embeddings.len();
    let mut a = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let s = dot(embeddings[i], embeddings[j]).max(0.0);
            a[i][j] = s;
            a[j][i] = s;
        }
    }
    a
}

/// Modularity of the partition of 0..n into events starting at 0 and at `boundaries`.
pub fn modularity(a: &[Vec<f32>], boundaries: &[usize]) -> f32 {
    let n = a.len();
    let k: Vec<f32> = a.iter().map(|row| row.iter().sum()).collect();
    let two_m: f32 = k.iter().sum();
    if two_m <= 0.0 {
        return 0.0;
    }
    let mut q = 0.0;
    let mut starts = vec![0];
    starts.extend(boundaries.iter().copied().filter(|&b| b > 0 && b < n));
    starts.push(n);
    for w in starts.windows(2) {
        for i in w[0]..w[1] {
            for j in w[0]..w[1] {
                q += a[i][j] - k[i] * k[j] / two_m;
            }
        }
    }
    q / two_m
}

/// Moves each boundary within `radius` turns to the position of highest modularity,
/// keeping every event at least `min_len` turns long (a boundary that already breaks
/// that stays where it is).
pub fn refine(a: &[Vec<f32>], boundaries: &[usize], radius: usize, min_len: usize) -> Vec<usize> {
    let n = a.len();
    let min_len = min_len.max(1);
    let mut b = boundaries.to_vec();
    for idx in 0..b.len() {
        let lo = if idx == 0 { 0 } else { b[idx - 1] } + min_len;
        let hi = if idx + 1 < b.len() { b[idx + 1] } else { n }.saturating_sub(min_len);
        let from = b[idx].saturating_sub(radius).max(lo);
        let to = (b[idx] + radius).min(hi);
        let mut best = (modularity(a, &b), b[idx]);
        for pos in from..=to {
            let mut trial = b.clone();
            trial[idx] = pos;
            let q = modularity(a, &trial);
            if q > best.0 + 1e-6 {
                best = (q, pos);
            }
        }
        b[idx] = best.1;
    }
    b
}

/// Drops boundaries while dropping one raises modularity, the largest gain first.
pub fn prune(a: &[Vec<f32>], boundaries: &[usize]) -> Vec<usize> {
    let mut b = boundaries.to_vec();
    let mut q = modularity(a, &b);
    while !b.is_empty() {
        let (gain_q, idx) = (0..b.len())
            .map(|idx| {
                let mut trial = b.clone();
                trial.remove(idx);
                (modularity(a, &trial), idx)
            })
            .fold(
                (f32::NEG_INFINITY, 0),
                |best, t| if t.0 > best.0 { t } else { best },
            );
        if gain_q <= q + 1e-6 {
            break;
        }
        b.remove(idx);
        q = gain_q;
    }
    b
}

/// The event boundaries of one call: surprise, then refinement (moving, then dropping).
pub fn segment(embeddings: &[&[f32]], cfg: &SegmentConfig) -> Vec<usize> {
    if embeddings.len() < 2 * cfg.min_len {
        return Vec::new();
    }
    let surprise = context_surprise(embeddings, cfg.context_window);
    let boundaries = surprise_boundaries(&surprise, cfg);
    if !cfg.refine || boundaries.is_empty() {
        return boundaries;
    }
    let a = similarity(embeddings);
    prune(&a, &refine(&a, &boundaries, cfg.radius, cfg.min_len))
}

/// Predicted boundaries that match a true one: a prediction within `tolerance` turns of
/// a true boundary not yet matched is a hit (each true boundary is matched at most once,
/// to the nearest prediction in order). Summed over calls, it gives micro-averaged
/// precision and recall.
pub fn boundary_hits(predicted: &[usize], truth: &[usize], tolerance: usize) -> usize {
    let mut used = vec![false; truth.len()];
    let mut hits = 0;
    for &p in predicted {
        if let Some(i) = (0..truth.len())
            .filter(|&i| !used[i] && truth[i].abs_diff(p) <= tolerance)
            .min_by_key(|&i| truth[i].abs_diff(p))
        {
            used[i] = true;
            hits += 1;
        }
    }
    hits
}

/// Precision, recall and F1 of predicted boundaries against true ones; a prediction
/// within `tolerance` turns of an unmatched true boundary counts as a hit.
pub fn boundary_f1(predicted: &[usize], truth: &[usize], tolerance: usize) -> (f32, f32, f32) {
    if predicted.is_empty() && truth.is_empty() {
        return (1.0, 1.0, 1.0);
    }
    let hits = boundary_hits(predicted, truth, tolerance);
    let precision = if predicted.is_empty() {
        0.0
    } else {
        hits as f32 / predicted.len() as f32
    };
    let recall = if truth.is_empty() {
        0.0
    } else {
        hits as f32 / truth.len() as f32
    };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    (precision, recall, f1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::surprise::tests::near;

    /// Three topics of five turns each, on different axes.
    fn three_topics() -> Vec<Vec<f32>> {
        (0..15).map(|i| near(i / 5 * 4, 16, i as u32)).collect()
    }

    #[test]
    fn boundaries_fall_on_the_topic_shifts() {
        let e = three_topics();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let b = segment(&refs, &SegmentConfig::default());
        assert_eq!(b, vec![5, 10]);
        assert_eq!(boundary_f1(&b, &[5, 10], 0).2, 1.0);
    }

    #[test]
    fn refinement_moves_a_misplaced_boundary_to_the_shift() {
        let e = three_topics();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let a = similarity(&refs);
        assert!(modularity(&a, &[5, 10]) > modularity(&a, &[6, 10]));
        assert_eq!(refine(&a, &[6, 9], 2, 2), vec![5, 10]);
        // A two-turn last topic: refinement finds it with min_len 1, never with 3.
        let e: Vec<Vec<f32>> = (0..15).map(|i| near(i / 13 * 4, 16, i as u32)).collect();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let a = similarity(&refs);
        assert_eq!(refine(&a, &[11], 2, 1), vec![13]);
        assert_eq!(refine(&a, &[11], 2, 3), vec![12]);
    }

    #[test]
    fn no_event_is_shorter_than_min_len() {
        // A one-turn digression at 6 and a last turn on a third axis: surprising, but
        // each would make an event shorter than three turns.
        let mut e: Vec<Vec<f32>> = (0..12).map(|i| near(0, 16, i)).collect();
        e[6] = near(8, 16, 6);
        e[11] = near(12, 16, 11);
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let cfg = SegmentConfig::default();
        for refine in [false, true] {
            let b = segment(&refs, &SegmentConfig { refine, ..cfg });
            let mut starts = vec![0];
            starts.extend(&b);
            starts.push(e.len());
            assert!(
                starts.windows(2).all(|w| w[1] - w[0] >= cfg.min_len),
                "refine {refine}: {b:?}"
            );
        }
    }

    #[test]
    fn pruning_drops_a_boundary_inside_one_topic_and_keeps_the_shifts() {
        let e = three_topics();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        let a = similarity(&refs);
        assert_eq!(prune(&a, &[3, 5, 10]), vec![5, 10]);
        assert_eq!(prune(&a, &[5, 10]), vec![5, 10]);
    }

    #[test]
    fn one_topic_has_no_boundary() {
        let e: Vec<Vec<f32>> = (0..12).map(|i| near(0, 16, i)).collect();
        let refs: Vec<&[f32]> = e.iter().map(Vec::as_slice).collect();
        assert!(segment(&refs, &SegmentConfig::default()).is_empty());
    }

    #[test]
    fn f1_counts_near_misses_within_tolerance_once() {
        assert_eq!(boundary_f1(&[4, 5], &[5], 1), (0.5, 1.0, 2.0 / 3.0));
        assert_eq!(boundary_f1(&[], &[5], 1).2, 0.0);
    }
}
