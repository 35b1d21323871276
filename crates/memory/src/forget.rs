//! Forgetting: how strong a memory still is, and what to delete.
//!
//! A turn is written with a storage strength `s0` ([`Turn::strength`]) taken from how
//! surprising it was ([`initial_strength`]: `s0 = 1 + 0.5 * clamp(z, -1, 3)`, so an
//! unsurprising turn starts at 0.5, an ordinary one at 1 and a very surprising one at
//! 2.5). From then on it decays by a power law, the shape human forgetting curves have:
//!
//! ```text
//! t      = days since max(unix_ms, last_access_ms)      (0 if that is in the future)
//! d_eff  = d / (1 + ln(1 + access_count))
//! s(t)   = s0 * (1 + t / tau) ^ (-d_eff)
//! ```
//!
//! Each recall does two things: it restarts the clock (`last_access_ms`) and it flattens
//! the curve (`access_count` lowers the exponent), so a memory that keeps being useful
//! fades ever more slowly. With the defaults (d = 0.5, tau = 1 day, prune below 0.2) a
//! never-recalled turn falls below the threshold after 24 days if ordinary (s0 = 1),
//! after about 5 days if unsurprising (0.5), and after about 155 days if very
//! surprising (2.5).
//!
//! [`plan`] turns strengths into deletions, with three protections and one override:
//! the caller's `keep_recent` newest turns stay, turns that are the source of a fact in
//! force stay, and an episode goes only when all of its turns go; `retention_days`, a
//! legal limit, deletes everything older than it whatever its strength, facts in force
//! included.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::types::{Episode, Fact, Turn};
use crate::DAY_MS;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetPolicy {
    /// Power-law decay exponent d in s(t) = s0 * (1 + t/tau)^(-d_eff).
    pub decay: f32,
    /// Time scale of the decay, in days: how soon the power law starts to bite.
    pub tau_days: f32,
    /// Below this current strength a turn may be pruned.
    pub prune_below: f32,
    /// The caller's most recent turns that are always kept.
    pub keep_recent: usize,
    /// Everything older than this many days is deleted, whatever its strength (None = keep).
    pub retention_days: Option<u32>,
}

impl Default for ForgetPolicy {
    fn default() -> Self {
        Self {
            decay: 0.5,
            tau_days: 1.0,
            prune_below: 0.2,
            keep_recent: 200,
            retention_days: None,
        }
    }
}

/// What to delete: ids of records that were passed to [`plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub turns: Vec<String>,
    pub episodes: Vec<String>,
    pub facts: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty() && self.episodes.is_empty() && self.facts.is_empty()
    }
}

/// Storage strength at write time from a surprise z-score: `1 + 0.5 * clamp(z, -1, 3)`.
/// A z-score that is not a number (no statistics yet) counts as ordinary.
pub fn initial_strength(surprise_z: f32) -> f32 {
    if surprise_z.is_nan() {
        return 1.0;
    }
    1.0 + 0.5 * surprise_z.clamp(-1.0, 3.0)
}

/// Current strength of a turn at `now_ms` (see the module docs for the formula).
pub fn strength_at(turn: &Turn, now_ms: i64, policy: &ForgetPolicy) -> f32 {
    // A corrupt stored strength must not make a turn immortal (NaN compares false with
    // every threshold) nor negative: treat it as ordinary.
    let s0 = if turn.strength.is_finite() {
        turn.strength.max(0.0)
    } else {
        1.0
    };
    let anchor = turn.unix_ms.max(turn.last_access_ms);
    let elapsed_ms = now_ms.saturating_sub(anchor).max(0);
    let days = elapsed_ms as f64 / DAY_MS as f64;
    let tau = if policy.tau_days.is_finite() && policy.tau_days > 0.0 {
        f64::from(policy.tau_days)
    } else {
        // A zero or broken time scale would divide by zero; a minute keeps it defined.
        1.0 / 1440.0
    };
    let decay = if policy.decay.is_finite() {
        f64::from(policy.decay.max(0.0))
    } else {
        0.0
    };
    let d_eff = decay / (1.0 + (1.0 + f64::from(turn.access_count)).ln());
    (f64::from(s0) * (1.0 + days / tau).powf(-d_eff)) as f32
}

/// What to delete now. See the module docs; every id returned is the id of a record in
/// `turns`, `episodes` or `facts`, each at most once, in the order they were passed.
pub fn plan(
    turns: &[Turn],
    episodes: &[Episode],
    facts: &[Fact],
    now_ms: i64,
    policy: &ForgetPolicy,
) -> Plan {
    let cutoff = policy
        .retention_days
        .map(|days| now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS)));
    let too_old = |unix_ms: i64| cutoff.is_some_and(|c| unix_ms < c);

    // Turns a fact in force was taken from: deleting them would cut its provenance.
    let sources: HashSet<&str> = facts
        .iter()
        .filter(|f| f.in_force())
        .flat_map(|f| f.source_turns.iter().map(String::as_str))
        .collect();

    // The newest `keep_recent` turns of each caller, newest by time then position.
    let mut by_caller: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, t) in turns.iter().enumerate() {
        by_caller.entry(t.caller.as_str()).or_default().push(i);
    }
    let mut recent = vec![false; turns.len()];
    for indices in by_caller.values_mut() {
        indices.sort_by(|&a, &b| {
            let (ta, tb) = (&turns[a], &turns[b]);
            (tb.unix_ms, &tb.call_id, tb.seq).cmp(&(ta.unix_ms, &ta.call_id, ta.seq))
        });
        for &i in indices.iter().take(policy.keep_recent) {
            recent[i] = true;
        }
    }

    let mut deleted = vec![false; turns.len()];
    let mut seen_turns = HashSet::new();
    let mut out = Plan::default();
    for (i, t) in turns.iter().enumerate() {
        let weak = !recent[i]
            && !sources.contains(t.id.as_str())
            && strength_at(t, now_ms, policy) < policy.prune_below;
        if weak || too_old(t.unix_ms) {
            deleted[i] = true;
            if seen_turns.insert(t.id.as_str()) {
                out.turns.push(t.id.clone());
            }
        }
    }

    let mut seen_episodes = HashSet::new();
    for e in episodes {
        // An episode is as old as its first turn: its summary quotes them.
        let expired = too_old(e.start_ms);
        // Its turns: those linked by id, or (if the link was never written) those of its
        // call within its seq range. With none passed in we know nothing: keep it.
        let members: Vec<usize> = turns
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.episode_id == e.id
                    || (t.caller == e.caller
                        && t.call_id == e.call_id
                        && (e.first_seq..=e.last_seq).contains(&t.seq))
            })
            .map(|(i, _)| i)
            .collect();
        let all_gone = !members.is_empty() && members.iter().all(|&i| deleted[i]);
        if (expired || all_gone) && seen_episodes.insert(e.id.as_str()) {
            out.episodes.push(e.id.clone());
        }
    }

    // Facts are pruned only by retention: what the caller told us is kept while it is
    // lawful to keep it (superseded ones too, for "where did I live before?").
    let mut seen_facts = HashSet::new();
    for f in facts {
        if too_old(f.unix_ms) && seen_facts.insert(f.id.as_str()) {
            out.facts.push(f.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Speaker;

    const NOW: i64 = 1_715_783_400_000;

    fn turn(call: &str, seq: u32, age_days: f64, strength: f32) -> Turn {
        let unix_ms = NOW - (age_days * DAY_MS as f64) as i64;
        Turn {
            id: Turn::make_id(call, seq),
            caller: "alice".into(),
            call_id: call.into(),
            seq,
            unix_ms,
            speaker: Speaker::Caller,
            text: format!("turn {seq}"),
            embedding: Vec::new(),
            surprise: 0.0,
            strength,
            access_count: 0,
            last_access_ms: unix_ms,
            episode_id: String::new(),
        }
    }

    fn episode(call: &str, first: u32, last: u32, start_ms: i64) -> Episode {
        Episode {
            id: format!("{call}#{first}"),
            caller: "alice".into(),
            call_id: call.into(),
            first_seq: first,
            last_seq: last,
            start_ms,
            end_ms: start_ms + 60_000,
            summary: String::new(),
            embedding: Vec::new(),
            surprise: 0.0,
            strength: 1.0,
        }
    }

    fn fact(id: &str, unix_ms: i64, sources: &[&str], superseded: bool) -> Fact {
        Fact {
            id: id.into(),
            caller: "alice".into(),
            slot: "home".into(),
            value: "Berlin".into(),
            text: "You live in Berlin.".into(),
            unix_ms,
            source_turns: sources.iter().map(|s| s.to_string()).collect(),
            superseded_by: superseded.then(|| "home@9".to_string()),
            embedding: Vec::new(),
        }
    }

    fn no_recent() -> ForgetPolicy {
        ForgetPolicy {
            keep_recent: 0,
            ..ForgetPolicy::default()
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = ForgetPolicy::default();
        assert_eq!(p.decay, 0.5);
        assert_eq!(p.tau_days, 1.0);
        assert_eq!(p.prune_below, 0.2);
        assert_eq!(p.keep_recent, 200);
        assert_eq!(p.retention_days, None);
    }

    #[test]
    fn initial_strength_follows_surprise() {
        assert_eq!(initial_strength(0.0), 1.0);
        assert_eq!(initial_strength(-1.0), 0.5);
        assert_eq!(initial_strength(-7.0), 0.5, "clamped below");
        assert_eq!(initial_strength(3.0), 2.5);
        assert_eq!(initial_strength(40.0), 2.5, "clamped above");
        assert_eq!(initial_strength(1.0), 1.5);
        assert_eq!(initial_strength(f32::NAN), 1.0);
        assert!(initial_strength(2.0) > initial_strength(1.0));
    }

    #[test]
    fn strength_is_s0_at_write_time_and_follows_the_power_law() {
        let p = ForgetPolicy::default();
        let t = turn("c1", 0, 0.0, 1.5);
        assert!((strength_at(&t, NOW, &p) - 1.5).abs() < 1e-6);
        // 3 days later: 1.5 * (1 + 3)^-0.5 = 0.75.
        assert!((strength_at(&t, NOW + 3 * DAY_MS, &p) - 0.75).abs() < 1e-5);
        // 8 days: (1 + 8)^-0.5 = 1/3.
        assert!((strength_at(&t, NOW + 8 * DAY_MS, &p) - 0.5).abs() < 1e-5);
        // A time before the turn (clock skew) does not make it stronger than s0.
        assert!((strength_at(&t, NOW - DAY_MS, &p) - 1.5).abs() < 1e-6);
    }

    #[test]
    fn strength_decreases_monotonically_with_time() {
        let p = ForgetPolicy::default();
        let t = turn("c1", 0, 0.0, 1.0);
        let mut last = f32::INFINITY;
        for day in 0..400 {
            let s = strength_at(&t, NOW + day * DAY_MS, &p);
            assert!(s < last || day == 0, "day {day}: {s} !< {last}");
            assert!(s > 0.0);
            last = s;
        }
    }

    #[test]
    fn recalls_slow_forgetting_and_restart_the_clock() {
        let p = ForgetPolicy::default();
        let later = NOW + 30 * DAY_MS;
        let plain = turn("c1", 0, 0.0, 1.0);
        let mut recalled = plain.clone();
        recalled.access_count = 5;
        assert!(strength_at(&recalled, later, &p) > strength_at(&plain, later, &p));
        // With 5 recalls: d_eff = 0.5 / (1 + ln 6).
        let d_eff = 0.5 / (1.0 + 6.0_f64.ln());
        let expect = 31.0_f64.powf(-d_eff) as f32;
        assert!((strength_at(&recalled, later, &p) - expect).abs() < 1e-5);

        let mut refreshed = plain.clone();
        refreshed.last_access_ms = NOW + 29 * DAY_MS;
        assert!(
            (strength_at(&refreshed, later, &p) - 2.0_f32.powf(-0.5)).abs() < 1e-5,
            "decay runs from the last recall"
        );
    }

    #[test]
    fn surprising_turns_outlive_ordinary_ones() {
        let p = ForgetPolicy::default();
        let dull = turn("c1", 0, 0.0, initial_strength(-1.0));
        let ordinary = turn("c1", 1, 0.0, initial_strength(0.0));
        let vivid = turn("c1", 2, 0.0, initial_strength(3.0));
        let first_below = |t: &Turn| {
            (0..1000)
                .find(|d| strength_at(t, NOW + d * DAY_MS, &p) < p.prune_below)
                .unwrap_or(1000)
        };
        let (a, b, c) = (
            first_below(&dull),
            first_below(&ordinary),
            first_below(&vivid),
        );
        assert!(a < b && b < c, "{a} {b} {c}");
        // The figures quoted in the module docs.
        assert_eq!((a, b), (6, 25));
        assert!((150..=160).contains(&c), "{c}");
    }

    #[test]
    fn broken_inputs_give_finite_strengths() {
        let mut t = turn("c1", 0, 10.0, f32::NAN);
        let odd = ForgetPolicy {
            decay: f32::NAN,
            tau_days: 0.0,
            ..ForgetPolicy::default()
        };
        assert!(strength_at(&t, NOW, &odd).is_finite());
        assert!(strength_at(&t, NOW, &ForgetPolicy::default()) < 1.0);
        t.strength = -3.0;
        assert_eq!(strength_at(&t, NOW, &ForgetPolicy::default()), 0.0);
        t.unix_ms = i64::MIN;
        t.last_access_ms = i64::MIN;
        assert!(strength_at(&t, i64::MAX, &ForgetPolicy::default()).is_finite());
    }

    #[test]
    fn weak_turns_are_pruned_strong_ones_kept() {
        let turns = vec![
            turn("c1", 0, 60.0, 1.0), // weak by now
            turn("c1", 1, 60.0, 2.5), // surprising: still strong
            turn("c2", 0, 1.0, 1.0),  // fresh
        ];
        let out = plan(&turns, &[], &[], NOW, &no_recent());
        assert_eq!(out.turns, vec!["c1/0".to_string()]);
        assert!(out.episodes.is_empty() && out.facts.is_empty());
    }

    #[test]
    fn the_newest_turns_are_always_kept() {
        let turns: Vec<Turn> = (0..10)
            .map(|s| turn("c1", s, 100.0 - s as f64, 0.5))
            .collect();
        let policy = ForgetPolicy {
            keep_recent: 3,
            ..ForgetPolicy::default()
        };
        let out = plan(&turns, &[], &[], NOW, &policy);
        let expect: Vec<String> = (0..7).map(|s| Turn::make_id("c1", s)).collect();
        assert_eq!(out.turns, expect, "seqs 7, 8, 9 are the newest three");
        // keep_recent counts per caller.
        let mut other = turn("c9", 0, 500.0, 0.5);
        other.caller = "bob".into();
        let mut with_bob = turns.clone();
        with_bob.push(other);
        let out = plan(&with_bob, &[], &[], NOW, &policy);
        assert!(
            !out.turns.contains(&"c9/0".to_string()),
            "bob's only turn is his newest"
        );
    }

    #[test]
    fn sources_of_facts_in_force_are_kept_superseded_ones_are_not() {
        let turns = vec![turn("c1", 0, 90.0, 1.0), turn("c1", 1, 90.0, 1.0)];
        let facts = vec![
            fact("home@1", turns[0].unix_ms, &["c1/0"], false),
            fact("home@0", turns[1].unix_ms, &["c1/1"], true),
        ];
        let out = plan(&turns, &[], &facts, NOW, &no_recent());
        assert_eq!(out.turns, vec!["c1/1".to_string()]);
        assert!(out.facts.is_empty(), "facts go only by retention");
    }

    #[test]
    fn an_episode_goes_only_with_all_its_turns() {
        let mut turns = vec![
            turn("c1", 0, 90.0, 1.0),
            turn("c1", 1, 90.0, 1.0),
            turn("c1", 2, 90.0, 1.0),
            turn("c1", 3, 90.0, 2.5), // strong: keeps episode c1#2 alive
        ];
        for t in &mut turns[..2] {
            t.episode_id = "c1#0".into();
        }
        // c1#2 has no episode ids on its turns: membership comes from the seq range.
        let episodes = vec![
            episode("c1", 0, 1, turns[0].unix_ms),
            episode("c1", 2, 3, turns[2].unix_ms),
            episode("c7", 0, 4, turns[2].unix_ms), // none of its turns passed in
        ];
        let out = plan(&turns, &episodes, &[], NOW, &no_recent());
        assert_eq!(out.turns, vec!["c1/0", "c1/1", "c1/2"]);
        assert_eq!(out.episodes, vec!["c1#0".to_string()]);
    }

    #[test]
    fn retention_deletes_everything_older_whatever_its_strength() {
        let turns = vec![
            turn("c1", 0, 40.0, 2.5), // strong, a fact's source, and recent-kept
            turn("c2", 0, 10.0, 1.0),
        ];
        let episodes = vec![
            episode("c1", 0, 0, turns[0].unix_ms),
            episode("c2", 0, 0, turns[1].unix_ms),
        ];
        let facts = vec![
            fact("home@1", turns[0].unix_ms, &["c1/0"], false),
            fact("home@2", turns[1].unix_ms, &["c2/0"], false),
        ];
        let policy = ForgetPolicy {
            retention_days: Some(30),
            ..ForgetPolicy::default()
        };
        let out = plan(&turns, &episodes, &facts, NOW, &policy);
        assert_eq!(out.turns, vec!["c1/0".to_string()]);
        assert_eq!(out.episodes, vec!["c1#0".to_string()]);
        assert_eq!(
            out.facts,
            vec!["home@1".to_string()],
            "facts in force included"
        );
        // Without the limit nothing here is deleted.
        assert!(plan(&turns, &episodes, &facts, NOW, &ForgetPolicy::default()).is_empty());
    }

    #[test]
    fn plan_ids_belong_to_the_input_and_are_unique() {
        let mut turns: Vec<Turn> = (0..30)
            .map(|s| turn("c1", s, s as f64 * 7.0, 0.7))
            .collect();
        turns.push(turns[5].clone()); // a duplicate row
        let episodes = vec![episode("c1", 0, 29, turns[29].unix_ms)];
        let facts = vec![fact(
            "home@1",
            turns[29].unix_ms,
            &["c1/29", "gone/1"],
            false,
        )];
        let policy = ForgetPolicy {
            keep_recent: 2,
            retention_days: Some(100),
            ..ForgetPolicy::default()
        };
        let out = plan(&turns, &episodes, &facts, NOW, &policy);
        let ids: HashSet<&str> = turns.iter().map(|t| t.id.as_str()).collect();
        assert!(!out.turns.is_empty());
        assert!(out.turns.iter().all(|id| ids.contains(id.as_str())));
        let unique: HashSet<&String> = out.turns.iter().collect();
        assert_eq!(unique.len(), out.turns.len());
        assert!(out.episodes.iter().all(|id| id == "c1#0"));
        assert!(out.facts.iter().all(|id| id == "home@1"));
        assert!(!out.turns.contains(&"gone/1".to_string()));
    }

    #[test]
    fn empty_input_plans_nothing() {
        assert!(plan(&[], &[], &[], NOW, &ForgetPolicy::default()).is_empty());
        let extreme = ForgetPolicy {
            retention_days: Some(u32::MAX),
            ..ForgetPolicy::default()
        };
        let turns = vec![turn("c1", 0, 1.0, 1.0)];
        assert!(plan(&turns, &[], &[], i64::MIN, &extreme).is_empty());
    }
}
