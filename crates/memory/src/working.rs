//! One caller's memory as the engine works on it: every stored turn, episode and fact of
//! that caller, loaded from the store at the start of a call, with the indexes recall
//! needs. Holding exactly one caller is what makes isolation structural: no query can
//! score another caller's words, because they are not here.
//!
//! The methods change the working set and say what the store must write: records come
//! back from [`CallerMemory::observe`], [`CallerMemory::close_call`],
//! [`CallerMemory::consolidate`] and [`CallerMemory::forget`], and turns touched by recall
//! from [`CallerMemory::take_dirty`].

use std::collections::{BTreeSet, HashMap};

use crate::bm25::Bm25;
use crate::facts;
use crate::forget::{self, ForgetPolicy, Plan};
use crate::retrieve::Why;
use crate::segment::{segment, SegmentConfig};
use crate::text::Analyzer;
use crate::types::{CallerModel, Episode, Fact, NewTurn, Speaker, Turn};
use crate::vector::{centroid, dot};

/// Cosine above which a new turn may repeat an old one (merged when their words agree
/// too; similar but distinct memories, "Paris in May" and "Rome in May", stay apart).
const DUPLICATE_COS: f32 = 0.95;
/// Cosine above which the caller's words count as using a recalled memory.
const USE_COS: f32 = 0.6;

#[derive(Debug)]
pub struct CallerMemory {
    pub caller: String,
    pub model: CallerModel,
    /// Turns by position; a forgotten turn's slot stays (as `None` in `alive`) so
    /// positions in the indexes stay valid.
    pub(crate) turns: Vec<Turn>,
    alive: Vec<bool>,
    /// Embeddings of `turns`, flat (`dim` floats each), for the exact vector scan.
    matrix: Vec<f32>,
    dim: usize,
    pub(crate) bm25: Bm25,
    by_seq: HashMap<(String, u32), usize>,
    by_id: HashMap<String, usize>,
    pub(crate) episodes: Vec<Episode>,
    pub(crate) episode_bm25: Bm25,
    pub(crate) facts: Vec<Fact>,
    next_seq: HashMap<String, u32>,
    /// What the last recall returned, for the learning signal of the next caller turn.
    pub(crate) last_recalled: Vec<(usize, Why)>,
    /// The query of that recall: the words that asked are not the words that use it.
    pub(crate) last_query: String,
    /// Turns whose record changed (access counts) since the last `take_dirty`.
    pub(crate) dirty: BTreeSet<usize>,
    analyzer: Analyzer,
    pub segment: SegmentConfig,
    /// Whether repeated turns are merged (off for the ablation).
    pub merge_duplicates: bool,
    /// Whether caller turns that use a recalled memory tune the fusion weights.
    pub learn_weights: bool,
    /// Whether strength starts from surprise (off: every turn starts at 1).
    pub surprise_strength: bool,
}

/// What observing a turn did.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// A new turn to store.
    Stored(Turn),
    /// It repeated a stored turn, which was strengthened instead (store this record).
    Merged(Turn),
}

impl Observed {
    pub fn turn(&self) -> &Turn {
        match self {
            Observed::Stored(t) | Observed::Merged(t) => t,
        }
    }
}

/// The records a finished call changes: its turns (now with their episode) and episodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallClose {
    pub turns: Vec<Turn>,
    pub episodes: Vec<Episode>,
}

/// Facts added or changed (superseded, merged) by consolidation; new ones have no
/// embedding yet: the shell computes it and calls [`CallerMemory::set_fact_embedding`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consolidation {
    pub facts: Vec<Fact>,
}

impl CallerMemory {
    pub fn new(caller: &str) -> Self {
        Self::load(CallerModel::new(caller), Vec::new(), Vec::new(), Vec::new())
    }

    /// The working set of a caller from what the store holds (any order).
    pub fn load(
        model: CallerModel,
        mut turns: Vec<Turn>,
        episodes: Vec<Episode>,
        facts: Vec<Fact>,
    ) -> Self {
        turns.sort_by(|a, b| (a.unix_ms, &a.call_id, a.seq).cmp(&(b.unix_ms, &b.call_id, b.seq)));
        let mut m = Self {
            caller: model.caller.clone(),
            model,
            turns: Vec::new(),
            alive: Vec::new(),
            matrix: Vec::new(),
            dim: crate::DIM,
            bm25: Bm25::default(),
            by_seq: HashMap::new(),
            by_id: HashMap::new(),
            episodes: Vec::new(),
            episode_bm25: Bm25::default(),
            facts,
            next_seq: HashMap::new(),
            last_recalled: Vec::new(),
            last_query: String::new(),
            dirty: BTreeSet::new(),
            analyzer: Analyzer::default(),
            segment: SegmentConfig::default(),
            merge_duplicates: true,
            learn_weights: true,
            surprise_strength: true,
        };
        for t in turns {
            m.insert(t);
        }
        for e in episodes {
            m.insert_episode(e);
        }
        m
    }

    fn insert(&mut self, mut t: Turn) -> usize {
        let i = self.turns.len();
        let mut e = std::mem::take(&mut t.embedding);
        e.resize(self.dim, 0.0);
        self.matrix.extend_from_slice(&e);
        self.bm25.insert(i, &t.text);
        self.by_seq.insert((t.call_id.clone(), t.seq), i);
        self.by_id.insert(t.id.clone(), i);
        let next = self.next_seq.entry(t.call_id.clone()).or_default();
        *next = (*next).max(t.seq + 1);
        self.turns.push(t);
        self.alive.push(true);
        i
    }

    fn insert_episode(&mut self, e: Episode) {
        let text = self.episode_text(&e);
        if let Some(old) = self.episodes.iter().position(|x| x.id == e.id) {
            self.episode_bm25.remove(old);
            self.episode_bm25.insert(old, &text);
            self.episodes[old] = e;
        } else {
            self.episode_bm25.insert(self.episodes.len(), &text);
            self.episodes.push(e);
        }
    }

    /// All the words of an episode, for its lexical score.
    fn episode_text(&self, e: &Episode) -> String {
        let mut text = String::new();
        for seq in e.first_seq..=e.last_seq {
            if let Some(&i) = self.by_seq.get(&(e.call_id.clone(), seq)) {
                if self.alive[i] {
                    text.push_str(&self.turns[i].text);
                    text.push(' ');
                }
            }
        }
        text
    }

    pub(crate) fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.turns.len()).filter(|&i| self.alive[i])
    }

    pub(crate) fn embedding(&self, i: usize) -> &[f32] {
        &self.matrix[i * self.dim..(i + 1) * self.dim]
    }

    /// The full record of turn `i`, embedding included.
    pub(crate) fn turn_record(&self, i: usize) -> Turn {
        let mut t = self.turns[i].clone();
        t.embedding = self.embedding(i).to_vec();
        t
    }

    pub(crate) fn turns_of_episode(&self, e: usize) -> Vec<usize> {
        let ep = &self.episodes[e];
        (ep.first_seq..=ep.last_seq)
            .filter_map(|s| self.by_seq.get(&(ep.call_id.clone(), s)).copied())
            .filter(|&i| self.alive[i])
            .collect()
    }

    /// The turns just before and after `i` in its call, within its episode.
    pub(crate) fn neighbours(&self, i: usize) -> Vec<usize> {
        let t = &self.turns[i];
        let mut out = Vec::new();
        for seq in [t.seq.checked_sub(1), t.seq.checked_add(1)]
            .into_iter()
            .flatten()
        {
            if let Some(&n) = self.by_seq.get(&(t.call_id.clone(), seq)) {
                let same_episode = t.episode_id.is_empty()
                    || self.turns[n].episode_id.is_empty()
                    || self.turns[n].episode_id == t.episode_id;
                if self.alive[n] && same_episode {
                    out.push(n);
                }
            }
        }
        out
    }

    /// Stored turns, oldest first.
    pub fn turns(&self) -> Vec<Turn> {
        self.live().map(|i| self.turn_record(i)).collect()
    }

    pub fn turn_count(&self) -> usize {
        self.bm25.len()
    }

    pub fn episodes(&self) -> &[Episode] {
        &self.episodes
    }

    pub fn facts(&self) -> &[Fact] {
        &self.facts
    }

    /// Takes in something said: scores its surprise under the caller's belief (and
    /// updates the belief), sets its starting strength, merges a repeat into the turn it
    /// repeats, and learns from a caller turn that uses what was just recalled.
    pub fn observe(&mut self, new: NewTurn) -> Observed {
        let surprise = self.model.belief.observe(&new.embedding);
        let z = self.model.surprise.z(surprise);
        self.model.surprise.push(surprise);
        if new.speaker == Speaker::Caller {
            self.learn_from(&new);
        }
        if self.merge_duplicates {
            if let Some(i) = self.duplicate_of(&new) {
                let t = &mut self.turns[i];
                t.strength = (t.strength + 0.5).min(3.0);
                t.access_count = t.access_count.saturating_add(1);
                t.last_access_ms = new.unix_ms.max(t.last_access_ms);
                // A turn of an earlier call changed: the store must get it again.
                self.dirty.insert(i);
                return Observed::Merged(self.turn_record(i));
            }
        }
        let seq = {
            let next = self.next_seq.entry(new.call_id.clone()).or_default();
            let seq = *next;
            *next += 1;
            seq
        };
        let turn = Turn {
            id: Turn::make_id(&new.call_id, seq),
            caller: self.caller.clone(),
            call_id: new.call_id,
            seq,
            unix_ms: new.unix_ms,
            speaker: new.speaker,
            text: new.text,
            embedding: new.embedding,
            surprise,
            strength: if self.surprise_strength {
                forget::initial_strength(z)
            } else {
                1.0
            },
            access_count: 0,
            last_access_ms: new.unix_ms,
            episode_id: String::new(),
        };
        let i = self.insert(turn);
        Observed::Stored(self.turn_record(i))
    }

    /// A stored turn of the same speaker that `new` repeats: nearly the same embedding
    /// and the same content words.
    fn duplicate_of(&self, new: &NewTurn) -> Option<usize> {
        let terms = |s: &str| -> BTreeSet<String> { self.analyzer.terms(s).into_iter().collect() };
        let new_terms = terms(&new.text);
        if new_terms.is_empty() {
            return None;
        }
        self.live()
            .filter(|&i| self.turns[i].speaker == new.speaker)
            .filter(|&i| dot(self.embedding(i), &new.embedding) >= DUPLICATE_COS)
            .find(|&i| terms(&self.turns[i].text) == new_terms)
    }

    fn learn_from(&mut self, new: &NewTurn) {
        if new.text == self.last_query {
            return;
        }
        let recalled = std::mem::take(&mut self.last_recalled);
        if !self.learn_weights {
            return;
        }
        let new_terms: BTreeSet<String> = self.analyzer.terms(&new.text).into_iter().collect();
        for (i, why) in recalled {
            if !self.alive.get(i).copied().unwrap_or(false) {
                continue;
            }
            let shared = self
                .analyzer
                .terms(&self.turns[i].text)
                .into_iter()
                .filter(|t| new_terms.contains(t))
                .collect::<BTreeSet<_>>()
                .len();
            if dot(self.embedding(i), &new.embedding) >= USE_COS || shared >= 2 {
                self.model.weights.reinforce(&why);
            }
        }
    }

    /// A call ended: segments its turns into episodes.
    pub fn close_call(&mut self, call_id: &str) -> CallClose {
        let mut idx: Vec<usize> = self
            .live()
            .filter(|&i| self.turns[i].call_id == call_id)
            .collect();
        idx.sort_by_key(|&i| self.turns[i].seq);
        if idx.is_empty() {
            return CallClose::default();
        }
        self.model.calls = self.model.calls.saturating_add(1);
        let embeddings: Vec<&[f32]> = idx.iter().map(|&i| self.embedding(i)).collect();
        let boundaries = segment(&embeddings, &self.segment);
        let mut starts = vec![0];
        starts.extend(boundaries);
        starts.push(idx.len());
        let mut close = CallClose::default();
        for w in starts.windows(2) {
            let members = &idx[w[0]..w[1]];
            let first = &self.turns[members[0]];
            let last = &self.turns[members[members.len() - 1]];
            let id = format!("{call_id}#{}", first.seq);
            let episode = Episode {
                id: id.clone(),
                caller: self.caller.clone(),
                call_id: call_id.to_string(),
                first_seq: first.seq,
                last_seq: last.seq,
                start_ms: first.unix_ms,
                end_ms: last.unix_ms,
                summary: self.summary(members),
                embedding: centroid(members.iter().map(|&i| self.embedding(i))),
                surprise: members
                    .iter()
                    .map(|&i| self.turns[i].surprise)
                    .fold(f32::MIN, f32::max),
                strength: members
                    .iter()
                    .map(|&i| self.turns[i].strength)
                    .fold(0.0, f32::max),
            };
            for &i in members {
                self.turns[i].episode_id = id.clone();
                close.turns.push(self.turn_record(i));
            }
            close.episodes.push(episode.clone());
            self.insert_episode(episode);
        }
        close
    }

    /// Up to two of the caller's sentences closest to the episode's centre, in order.
    fn summary(&self, members: &[usize]) -> String {
        let centre = centroid(members.iter().map(|&i| self.embedding(i)));
        let mut caller: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| self.turns[i].speaker == Speaker::Caller)
            .collect();
        if caller.is_empty() {
            caller = members.to_vec();
        }
        caller.sort_by(|&a, &b| {
            dot(self.embedding(b), &centre).total_cmp(&dot(self.embedding(a), &centre))
        });
        caller.truncate(2);
        caller.sort();
        caller
            .iter()
            .map(|&i| self.turns[i].text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Consolidates the caller turns of `call_id` (all calls when None) into facts,
    /// resolving interference with the facts already held.
    pub fn consolidate(&mut self, call_id: Option<&str>) -> Consolidation {
        let turns: Vec<&Turn> = self
            .live()
            .map(|i| &self.turns[i])
            .filter(|t| call_id.is_none_or(|c| t.call_id == c))
            .collect();
        let new = facts::consolidate_turns(&self.caller, &turns);
        Consolidation {
            facts: facts::resolve(&mut self.facts, new),
        }
    }

    pub fn set_fact_embedding(&mut self, id: &str, embedding: Vec<f32>) {
        if let Some(f) = self.facts.iter_mut().find(|f| f.id == id) {
            f.embedding = embedding;
        }
    }

    /// Applies the forgetting policy: removes what it prunes from the working set and
    /// returns the ids the store must delete.
    pub fn forget(&mut self, now_ms: i64, policy: &ForgetPolicy) -> Plan {
        let turns = self.turns();
        let plan = forget::plan(&turns, &self.episodes, &self.facts, now_ms, policy);
        for id in &plan.turns {
            if let Some(&i) = self.by_id.get(id) {
                self.alive[i] = false;
                self.bm25.remove(i);
                self.dirty.remove(&i);
            }
        }
        let gone: BTreeSet<&String> = plan.episodes.iter().collect();
        let kept: Vec<Episode> = self
            .episodes
            .iter()
            .filter(|e| !gone.contains(&e.id))
            .cloned()
            .collect();
        self.episodes.clear();
        self.episode_bm25 = Bm25::default();
        for e in kept {
            self.insert_episode(e);
        }
        let gone: BTreeSet<&String> = plan.facts.iter().collect();
        self.facts.retain(|f| !gone.contains(&f.id));
        plan
    }

    /// Records of turns changed by recall since the last call (to write back).
    pub fn take_dirty(&mut self) -> Vec<Turn> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter(|&i| self.alive[i])
            .map(|i| self.turn_record(i))
            .collect()
    }

    /// What the greeting can mention: the caller's name (in force) and the most salient
    /// episode of their latest call that holds their own words.
    pub fn greeting(&self) -> Greeting {
        let name = facts::in_force(&self.facts, "name")
            .first()
            .map(|f| f.value.clone());
        let latest_call = self
            .live()
            .max_by_key(|&i| self.turns[i].unix_ms)
            .map(|i| self.turns[i].call_id.clone());
        let episode = latest_call.and_then(|call| {
            self.episodes
                .iter()
                .filter(|e| e.call_id == call)
                .filter(|e| {
                    (e.first_seq..=e.last_seq).any(|s| {
                        self.by_seq.get(&(call.clone(), s)).is_some_and(|&i| {
                            self.alive[i] && self.turns[i].speaker == Speaker::Caller
                        })
                    })
                })
                .max_by(|a, b| (a.surprise * a.strength).total_cmp(&(b.surprise * b.strength)))
                .map(|e| (e.summary.clone(), e.end_ms))
        });
        Greeting { name, episode }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Greeting {
    pub name: Option<String>,
    /// Summary and time of the episode to mention.
    pub episode: Option<(String, i64)>,
}

impl CallerMemory {
    /// Calls whose turns were stored but never segmented (the switch stopped mid-call):
    /// the shell closes them when it loads the caller.
    pub fn unsegmented_calls(&self) -> Vec<String> {
        let mut calls: Vec<String> = self
            .live()
            .filter(|&i| self.turns[i].episode_id.is_empty())
            .map(|i| self.turns[i].call_id.clone())
            .collect();
        calls.sort();
        calls.dedup();
        calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retrieve::RecallOptions;
    use crate::surprise::tests::near;
    use crate::DAY_MS;

    const T0: i64 = 1_700_000_000_000;

    /// A 384-dim unit vector near `axis`.
    fn v(axis: usize, jitter: u32) -> Vec<f32> {
        near(axis, crate::DIM, jitter)
    }

    fn say(
        m: &mut CallerMemory,
        call: &str,
        ms: i64,
        who: Speaker,
        text: &str,
        e: Vec<f32>,
    ) -> Observed {
        m.observe(NewTurn {
            call_id: call.into(),
            unix_ms: ms,
            speaker: who,
            text: text.into(),
            embedding: e,
        })
    }

    fn opts(k: usize) -> RecallOptions {
        RecallOptions {
            k,
            touch: false,
            ..RecallOptions::default()
        }
    }

    #[test]
    fn a_surprising_turn_is_stored_stronger_than_a_familiar_one() {
        let mut m = CallerMemory::new("1000");
        for i in 0..12 {
            say(
                &mut m,
                "c1",
                T0 + i,
                Speaker::Caller,
                &format!("weather talk {i}"),
                v(0, i as u32),
            );
        }
        let familiar = say(
            &mut m,
            "c1",
            T0 + 20,
            Speaker::Caller,
            "weather again",
            v(0, 40),
        );
        let novel = say(
            &mut m,
            "c1",
            T0 + 21,
            Speaker::Caller,
            "I won the lottery",
            v(200, 41),
        );
        assert!(novel.turn().surprise > familiar.turn().surprise);
        assert!(
            novel.turn().strength > familiar.turn().strength,
            "{} vs {}",
            novel.turn().strength,
            familiar.turn().strength
        );
        let mut flat = CallerMemory::new("1000");
        flat.surprise_strength = false;
        let t = say(
            &mut flat,
            "c1",
            T0,
            Speaker::Caller,
            "I won the lottery",
            v(200, 1),
        );
        assert_eq!(t.turn().strength, 1.0);
    }

    #[test]
    fn closing_a_call_segments_it_into_episodes_at_the_topic_shift() {
        let mut m = CallerMemory::new("1000");
        for i in 0..6 {
            say(
                &mut m,
                "c1",
                T0 + i,
                Speaker::Caller,
                &format!("kitchen sink leak {i}"),
                v(3, i as u32),
            );
        }
        for i in 6..12 {
            say(
                &mut m,
                "c1",
                T0 + i,
                Speaker::Caller,
                &format!("holiday in Rome {i}"),
                v(90, i as u32),
            );
        }
        let close = m.close_call("c1");
        assert_eq!(close.episodes.len(), 2, "{:?}", close.episodes);
        assert_eq!(
            (close.episodes[0].first_seq, close.episodes[0].last_seq),
            (0, 5)
        );
        assert!(close.turns.iter().all(|t| !t.episode_id.is_empty()));
        assert!(close.episodes[1].summary.contains("Rome"));
    }

    #[test]
    fn recall_by_meaning_finds_a_turn_that_shares_no_word_with_the_query() {
        let mut m = CallerMemory::new("1000");
        say(
            &mut m,
            "c1",
            T0,
            Speaker::Caller,
            "The plumber comes on Thursday",
            v(7, 1),
        );
        say(
            &mut m,
            "c2",
            T0 + DAY_MS,
            Speaker::Caller,
            "I am going to Paris",
            v(50, 2),
        );
        m.close_call("c1");
        m.close_call("c2");
        let r = m.recall("leaking pipes", &v(7, 9), T0 + 2 * DAY_MS, &opts(1));
        assert_eq!(r.turns[0].turn.text, "The plumber comes on Thursday");
        assert!(
            r.turns[0].why.vector > 0.9 && r.turns[0].why.bm25 == 0.0,
            "{:?}",
            r.turns[0].why
        );
    }

    #[test]
    fn contiguity_brings_the_answer_next_to_the_matching_question_and_k_counts_it() {
        let mut m = CallerMemory::new("1000");
        say(
            &mut m,
            "c1",
            T0,
            Speaker::Agent,
            "What is your dog called?",
            v(10, 1),
        );
        say(&mut m, "c1", T0 + 1, Speaker::Caller, "Rex.", v(11, 2));
        say(
            &mut m,
            "c1",
            T0 + 2,
            Speaker::Caller,
            "Anyway the weather is fine",
            v(120, 3),
        );
        m.close_call("c1");
        let r = m.recall("dog called", &v(10, 5), T0 + DAY_MS, &opts(2));
        let texts: Vec<&str> = r.turns.iter().map(|t| t.turn.text.as_str()).collect();
        assert_eq!(texts, ["What is your dog called?", "Rex."]);
        assert_eq!(r.turns[1].why.neighbour_of.as_deref(), Some("c1/0"));
        let plain = m.recall(
            "dog called",
            &v(10, 5),
            T0 + DAY_MS,
            &RecallOptions {
                contiguity: false,
                ..opts(2)
            },
        );
        assert!(
            plain.turns.iter().all(|t| t.turn.text != "Rex."),
            "without stage 2 the answer is not found"
        );
    }

    #[test]
    fn a_question_naming_a_time_prefers_memories_from_then() {
        let mut m = CallerMemory::new("1000");
        let now = T0 + 100 * DAY_MS;
        say(
            &mut m,
            "old",
            T0,
            Speaker::Caller,
            "I went to the cinema",
            v(30, 1),
        );
        say(
            &mut m,
            "new",
            now - DAY_MS,
            Speaker::Caller,
            "I went to the cinema with Tom",
            v(30, 2),
        );
        m.close_call("old");
        m.close_call("new");
        let r = m.recall("what did I do yesterday", &v(30, 3), now, &opts(1));
        assert_eq!(r.turns[0].turn.call_id, "new");
        assert!(r.turns[0].why.in_time_range);
        assert!(r.time_range.is_some());
    }

    #[test]
    fn a_repeated_turn_is_merged_but_a_similar_distinct_one_is_kept() {
        let mut m = CallerMemory::new("1000");
        say(
            &mut m,
            "c1",
            T0,
            Speaker::Caller,
            "I live in Paris",
            v(5, 1),
        );
        let again = say(
            &mut m,
            "c2",
            T0 + DAY_MS,
            Speaker::Caller,
            "I live in Paris.",
            v(5, 1),
        );
        assert!(matches!(again, Observed::Merged(_)), "{again:?}");
        assert_eq!(m.turn_count(), 1);
        assert!(
            again.turn().strength > 1.0,
            "a repeat strengthens the memory"
        );
        // Pattern separation: nearly the same vector, different words: two memories.
        let other = say(
            &mut m,
            "c3",
            T0 + 2 * DAY_MS,
            Speaker::Caller,
            "I live in Rome",
            v(5, 1),
        );
        assert!(matches!(other, Observed::Stored(_)));
        assert_eq!(m.turn_count(), 2);
    }

    #[test]
    fn a_partial_cue_completes_to_the_whole_memory() {
        let mut m = CallerMemory::new("1000");
        let full = "Remind me to call the plumber about the kitchen sink on Thursday";
        say(&mut m, "c1", T0, Speaker::Caller, full, v(8, 1));
        say(
            &mut m,
            "c1",
            T0 + 1,
            Speaker::Caller,
            "The weather is fine",
            v(100, 2),
        );
        m.close_call("c1");
        let r = m.recall("plumber", &[], T0 + DAY_MS, &opts(1));
        assert_eq!(r.turns[0].turn.text, full);
    }

    #[test]
    fn consolidation_supersedes_an_old_home_and_keeps_it_for_history() {
        let mut m = CallerMemory::new("1000");
        say(
            &mut m,
            "c1",
            T0,
            Speaker::Caller,
            "I live in Paris.",
            v(5, 1),
        );
        m.close_call("c1");
        m.consolidate(Some("c1"));
        say(
            &mut m,
            "c2",
            T0 + 30 * DAY_MS,
            Speaker::Caller,
            "I moved to Berlin.",
            v(6, 1),
        );
        m.close_call("c2");
        let changed = m.consolidate(Some("c2"));
        assert!(
            changed
                .facts
                .iter()
                .any(|f| f.value == "Berlin" && f.in_force()),
            "{changed:?}"
        );
        let homes: Vec<&Fact> = m.facts().iter().filter(|f| f.slot == "home").collect();
        assert_eq!(homes.len(), 2, "{homes:?}");
        let paris = homes.iter().find(|f| f.value == "Paris").unwrap();
        assert!(!paris.in_force(), "the old home is superseded, not deleted");
        let r = m.recall("where do I live", &[], T0 + 31 * DAY_MS, &opts(3));
        assert_eq!(r.facts[0].fact.value, "Berlin", "{:?}", r.facts);
        assert!(
            r.facts.iter().all(|f| f.fact.in_force()),
            "a superseded fact is not offered as current"
        );
        let before = m.recall("where did I live before", &[], T0 + 31 * DAY_MS, &opts(3));
        assert!(
            before.facts.iter().any(|f| f.fact.value == "Paris"),
            "{:?}",
            before.facts
        );
    }

    #[test]
    fn forgetting_prunes_weak_old_turns_but_keeps_recent_ones_and_fact_sources() {
        let mut m = CallerMemory::new("1000");
        let policy = ForgetPolicy {
            keep_recent: 1,
            prune_below: 0.5,
            ..ForgetPolicy::default()
        };
        say(
            &mut m,
            "c1",
            T0,
            Speaker::Caller,
            "I live in Paris.",
            v(5, 1),
        );
        say(
            &mut m,
            "c1",
            T0 + 1,
            Speaker::Caller,
            "Nice weather today",
            v(100, 1),
        );
        say(
            &mut m,
            "c2",
            T0 + 1000 * DAY_MS,
            Speaker::Caller,
            "Hello again",
            v(200, 1),
        );
        m.close_call("c1");
        m.consolidate(Some("c1"));
        let plan = m.forget(T0 + 1000 * DAY_MS, &policy);
        assert_eq!(plan.turns, vec!["c1/1".to_string()], "{plan:?}");
        assert_eq!(m.turn_count(), 2);
        let r = m.recall("weather", &[], T0 + 1000 * DAY_MS, &opts(5));
        assert!(
            r.turns.iter().all(|t| t.turn.text != "Nice weather today"),
            "a forgotten turn is never recalled"
        );
    }

    #[test]
    fn a_caller_who_uses_what_meaning_found_shifts_the_ranking_towards_meaning() {
        // Two candidates: one matches the query's words, the other its meaning.
        let build = || {
            let mut m = CallerMemory::new("1000");
            say(
                &mut m,
                "c1",
                T0,
                Speaker::Caller,
                "the garden shed roof",
                v(60, 1),
            );
            say(
                &mut m,
                "c1",
                T0 + 1,
                Speaker::Caller,
                "tomatoes and cucumbers",
                v(61, 2),
            );
            m.close_call("c1");
            m
        };
        let query_vec = crate::vector::normalized(
            v(61, 2)
                .iter()
                .zip(v(60, 1))
                .map(|(a, b)| a * 0.6 + b * 0.4)
                .collect(),
        );
        let mut m = build();
        let before = m.recall("garden", &query_vec, T0 + DAY_MS, &opts(1));
        assert_eq!(before.turns[0].turn.text, "the garden shed roof");
        // In later calls, whenever the meaning leg finds something, the caller takes it up.
        for i in 0..40 {
            let call = format!("l{i}");
            let touch = RecallOptions {
                touch: true,
                ..opts(1)
            };
            m.recall("vegetables", &v(61, 2), T0 + DAY_MS, &touch);
            say(
                &mut m,
                &call,
                T0 + DAY_MS + i,
                Speaker::Caller,
                "yes the tomatoes and cucumbers",
                v(61, 2),
            );
        }
        assert!(
            m.model.weights.vector > FusionWeightsDefault::vector(),
            "{:?}",
            m.model.weights
        );
        let after = m.recall("garden", &query_vec, T0 + 2 * DAY_MS, &opts(1));
        assert!(
            after.turns[0].turn.text.contains("tomatoes"),
            "learned weights change the decision: {:?}",
            after.turns[0]
        );
        // Without learning, the decision stays.
        let mut fixed = build();
        fixed.learn_weights = false;
        for i in 0..40 {
            let touch = RecallOptions {
                touch: true,
                ..opts(1)
            };
            fixed.recall("vegetables", &v(61, 2), T0 + DAY_MS, &touch);
            say(
                &mut fixed,
                &format!("l{i}"),
                T0 + DAY_MS + i,
                Speaker::Caller,
                "yes the tomatoes and cucumbers",
                v(61, 2),
            );
        }
        assert_eq!(
            fixed
                .recall("garden", &query_vec, T0 + 2 * DAY_MS, &opts(1))
                .turns[0]
                .turn
                .text,
            "the garden shed roof"
        );
    }

    struct FusionWeightsDefault;
    impl FusionWeightsDefault {
        fn vector() -> f32 {
            crate::FusionWeights::default().vector
        }
    }
}
