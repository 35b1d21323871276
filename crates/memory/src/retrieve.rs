//! Two-stage retrieval over one caller's working set.
//!
//! Stage 1, candidates: three legs, each with a deep pool (`pool` per leg, not `k`), each
//! normalised to [0, 1] over its pool and fused by a weighted sum (score fusion: RRF with
//! k = 60 over shallow pools loses to BM25 alone on LoCoMo, ../shared/notes/memory.md):
//! - BM25 with Snowball stemming over the turns ([`crate::bm25`]);
//! - cosine of the MiniLM embeddings over the turns (exact: a caller's turns fit a flat
//!   scan well under the time budget, see `memory bench`);
//! - the episode leg: episodes scored by cosine and BM25 against the query, their score
//!   given to each of their turns (SeCom's finding: topic segments are strong units).
//!
//! Only the caller's own records are ever scored: the working set holds one caller.
//!
//! Stage 2, context and order: candidates are re-ranked by the fused relevance plus a
//! little recency and salience (current strength, see [`crate::forget`]); a question that
//! names a time ("last week", "in May") boosts the turns of that span; then the temporal
//! contiguity buffer adds each top hit's neighbours in its episode (EM-LLM). `k` counts
//! every turn returned, neighbours included.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::forget::{strength_at, ForgetPolicy};
use crate::learn::FusionWeights;
use crate::timecue::{self, TimeRange};
use crate::types::{Fact, Turn};
use crate::vector::dot;
use crate::working::CallerMemory;
use crate::DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecallOptions {
    /// Turns returned, counted after the contiguity expansion.
    pub k: usize,
    /// Candidates per leg.
    pub pool: usize,
    pub use_bm25: bool,
    pub use_vector: bool,
    pub use_episodes: bool,
    /// Stage 2: add the neighbours of the top hits.
    pub contiguity: bool,
    /// How many top hits get their neighbours unconditionally; later hits only take
    /// neighbours that are themselves candidates.
    pub expand_hits: usize,
    /// Stage 2: recency and salience in the order.
    pub rerank: bool,
    pub time_cues: bool,
    /// Fixed fusion weights instead of the caller's learned ones.
    pub weights: Option<FusionWeights>,
    /// Facts returned.
    pub facts: usize,
    /// Whether recalling counts as an access (strengthens the turn, feeds learning).
    pub touch: bool,
}

impl Default for RecallOptions {
    fn default() -> Self {
        Self {
            k: 10,
            pool: 100,
            use_bm25: true,
            use_vector: true,
            use_episodes: true,
            contiguity: true,
            expand_hits: 2,
            rerank: true,
            time_cues: true,
            weights: None,
            facts: 5,
            touch: true,
        }
    }
}

/// Why a memory was recalled: each leg's normalised score and the stage-2 terms.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Why {
    pub bm25: f32,
    pub vector: f32,
    pub episode: f32,
    /// Weighted sum of the legs.
    pub fused: f32,
    pub recency: f32,
    pub salience: f32,
    pub in_time_range: bool,
    /// Set when it was added as the neighbour of this recalled turn.
    pub neighbour_of: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recalled {
    pub turn: Turn,
    pub score: f32,
    pub why: Why,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FactHit {
    pub fact: Fact,
    pub score: f32,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recall {
    /// Best first (a neighbour right after the hit it belongs to).
    pub turns: Vec<Recalled>,
    /// Facts about the caller that bear on the query, best first; superseded ones only
    /// when the query asks about the past of a slot or they match it strongly.
    pub facts: Vec<FactHit>,
    /// The span of time the query named, if any.
    pub time_range: Option<TimeRange>,
}

/// Scores in [0, 1]: x / max over the pool (BM25: 0 is "no match", so min is 0).
fn by_max(hits: &[(usize, f32)]) -> HashMap<usize, f32> {
    let max = hits.iter().map(|h| h.1).fold(0.0f32, f32::max);
    hits.iter()
        .map(|&(d, s)| (d, if max > 0.0 { s / max } else { 0.0 }))
        .collect()
}

/// Scores in [0, 1]: min-max over the pool (cosines are never "no match").
fn min_max(hits: &[(usize, f32)]) -> HashMap<usize, f32> {
    let max = hits.iter().map(|h| h.1).fold(f32::MIN, f32::max);
    let min = hits.iter().map(|h| h.1).fold(f32::MAX, f32::min);
    hits.iter()
        .map(|&(d, s)| {
            let x = if max > min {
                (s - min) / (max - min)
            } else {
                1.0
            };
            (d, x)
        })
        .collect()
}

fn top(mut scored: Vec<(usize, f32)>, n: usize) -> Vec<(usize, f32)> {
    if scored.len() > n {
        scored.select_nth_unstable_by(n, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(n);
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

impl CallerMemory {
    /// Recalls what bears on `query` (its text and embedding). With `opts.touch`, the
    /// returned turns count as accessed (strength, and the learning signal of the next
    /// caller turn); [`CallerMemory::take_dirty`] then hands their records to the store.
    pub fn recall(
        &mut self,
        query: &str,
        embedding: &[f32],
        now_ms: i64,
        opts: &RecallOptions,
    ) -> Recall {
        let weights = opts.weights.unwrap_or(self.model.weights);
        let policy = ForgetPolicy::default();

        // ---- stage 1: candidates from each leg
        let bm25 = if opts.use_bm25 {
            by_max(&self.bm25.search(query, opts.pool))
        } else {
            HashMap::new()
        };
        let vector = if opts.use_vector && !embedding.is_empty() {
            let scored: Vec<(usize, f32)> = self
                .live()
                .map(|i| (i, dot(self.embedding(i), embedding)))
                .collect();
            min_max(&top(scored, opts.pool))
        } else {
            HashMap::new()
        };
        let mut episode_of_turn: HashMap<usize, f32> = HashMap::new();
        if opts.use_episodes && !self.episodes.is_empty() {
            let lexical = by_max(&self.episode_bm25.search(query, opts.pool));
            let scored: Vec<(usize, f32)> = self
                .episodes
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.embedding.is_empty())
                .map(|(i, e)| (i, dot(&e.embedding, embedding)))
                .collect();
            let semantic = min_max(&top(scored, opts.pool.min(20)));
            let mut eps: Vec<(usize, f32)> = semantic
                .keys()
                .chain(lexical.keys())
                .copied()
                .collect::<HashSet<_>>()
                .into_iter()
                .map(|e| {
                    let s = 0.5 * semantic.get(&e).unwrap_or(&0.0)
                        + 0.5 * lexical.get(&e).unwrap_or(&0.0);
                    (e, s)
                })
                .collect();
            eps = top(eps, 5);
            for (e, s) in eps {
                for i in self.turns_of_episode(e) {
                    episode_of_turn.insert(i, s);
                }
            }
        }
        let mut candidates: HashSet<usize> = HashSet::new();
        candidates.extend(bm25.keys());
        candidates.extend(vector.keys());
        candidates.extend(episode_of_turn.keys());

        let range = if opts.time_cues {
            timecue::parse(query, now_ms)
        } else {
            None
        };
        let range_has_turns =
            range.is_some_and(|r| self.live().any(|i| r.contains(self.turns[i].unix_ms)));

        let why_of = |i: usize| -> Why {
            let t = &self.turns[i];
            let b = *bm25.get(&i).unwrap_or(&0.0);
            let v = *vector.get(&i).unwrap_or(&0.0);
            let e = *episode_of_turn.get(&i).unwrap_or(&0.0);
            let fused = weights.bm25 * b + weights.vector * v + weights.episode * e;
            let age_days = (now_ms - t.unix_ms).max(0) as f32 / DAY_MS as f32;
            Why {
                bm25: b,
                vector: v,
                episode: e,
                fused,
                recency: 1.0 / (1.0 + age_days / 30.0),
                salience: (strength_at(t, now_ms, &policy) / 2.5).clamp(0.0, 1.0),
                in_time_range: range_has_turns && range.is_some_and(|r| r.contains(t.unix_ms)),
                neighbour_of: None,
            }
        };
        let score_of = |w: &Why| -> f32 {
            let mut s = w.fused;
            if opts.rerank {
                s += 0.04 * w.recency + 0.06 * w.salience;
            }
            if w.in_time_range {
                s += 0.3;
            }
            s
        };

        // ---- stage 2: order, then the contiguity buffer
        let mut ranked: Vec<(usize, Why, f32)> = candidates
            .into_iter()
            .map(|i| {
                let w = why_of(i);
                let s = score_of(&w);
                (i, w, s)
            })
            .collect();
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        let candidate_score: HashMap<usize, f32> =
            ranked.iter().map(|(i, _, s)| (*i, *s)).collect();

        let mut chosen: Vec<(usize, Why, f32)> = Vec::new();
        let mut taken: HashSet<usize> = HashSet::new();
        for (rank, (i, why, score)) in ranked.iter().enumerate() {
            if chosen.len() >= opts.k {
                break;
            }
            if !taken.insert(*i) {
                continue;
            }
            chosen.push((*i, why.clone(), *score));
            if !opts.contiguity {
                continue;
            }
            for n in self.neighbours(*i) {
                if chosen.len() >= opts.k || taken.contains(&n) {
                    continue;
                }
                let own = candidate_score.get(&n).copied();
                let wanted = rank < opts.expand_hits || own.is_some_and(|s| s >= 0.5 * score);
                if !wanted {
                    continue;
                }
                taken.insert(n);
                let mut w = why_of(n);
                w.neighbour_of = Some(self.turns[*i].id.clone());
                chosen.push((n, w, own.unwrap_or(0.0)));
            }
        }

        if opts.touch {
            self.last_recalled.clear();
            self.last_query = query.to_string();
            for (i, why, _) in &chosen {
                let t = &mut self.turns[*i];
                t.access_count = t.access_count.saturating_add(1);
                t.last_access_ms = now_ms.max(t.last_access_ms);
                self.dirty.insert(*i);
                self.last_recalled.push((*i, why.clone()));
            }
        }
        let turns = chosen
            .into_iter()
            .map(|(i, why, score)| Recalled {
                turn: self.turn_record(i),
                score,
                why,
            })
            .collect();
        Recall {
            turns,
            facts: self.recall_facts(query, embedding, opts.facts),
            time_range: range,
        }
    }

    /// Facts that bear on the query: the slot a question asks about first (its history
    /// when it asks about the past: "where did I live before?"), then facts in force
    /// close in meaning. A superseded fact is never offered as current.
    fn recall_facts(&self, query: &str, embedding: &[f32], n: usize) -> Vec<FactHit> {
        if n == 0 {
            return Vec::new();
        }
        let mut hits: Vec<FactHit> = Vec::new();
        let push = |f: &Fact, score: f32, hits: &mut Vec<FactHit>| {
            if !hits.iter().any(|h| h.fact.id == f.id) {
                hits.push(FactHit {
                    fact: f.clone(),
                    score,
                });
            }
        };
        if let Some((slot, wants_history)) = crate::facts::question_slot(query) {
            if wants_history {
                for f in crate::facts::history(&self.facts, &slot).into_iter().rev() {
                    push(f, 3.0, &mut hits);
                }
            }
            for f in crate::facts::in_force(&self.facts, &slot).into_iter().rev() {
                push(f, 2.0 + dot(&f.embedding, embedding), &mut hits);
            }
        }
        let mut close: Vec<(&Fact, f32)> = self
            .facts
            .iter()
            .filter(|f| f.in_force())
            .map(|f| (f, dot(&f.embedding, embedding)))
            .filter(|(_, sim)| *sim >= 0.35)
            .collect();
        close.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (f, sim) in close {
            push(f, sim, &mut hits);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(n);
        hits
    }
}

/// Lines for the language model's prompt: dated, best first, superseded facts marked.
pub fn render(recall: &Recall, now_ms: i64) -> Vec<String> {
    let mut lines = Vec::new();
    for f in &recall.facts {
        let when = timecue::describe(f.fact.unix_ms, now_ms);
        let mark = if f.fact.in_force() {
            ""
        } else {
            " (no longer true: superseded)"
        };
        lines.push(format!("Fact, said {when}: {}{mark}", f.fact.text));
    }
    for r in &recall.turns {
        let when = timecue::describe(r.turn.unix_ms, now_ms);
        let who = match r.turn.speaker {
            crate::Speaker::Caller => "the caller said",
            crate::Speaker::Agent => "you said",
        };
        lines.push(format!("{} {who}: {}", capitalise(&when), r.turn.text));
    }
    lines
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
