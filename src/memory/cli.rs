//! `sofia-phone memory ...`: look into, search, export, consolidate and forget what the
//! agent remembers, and benchmark it. Works on the store under the profile's data dir;
//! run it while the switch is stopped (the switch's writer is the store's one writer).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use sofia_memory::retrieve::RecallOptions;

use super::service::MemoryService;
use crate::config::Profile;
use sofia_voice::Memory;

#[derive(Debug, Subcommand)]
pub enum MemoryCommand {
    /// Every caller with a memory, and how many turns it holds.
    List,
    /// A caller's facts (in force and superseded), episodes and latest turns.
    Show { caller: String },
    /// Recall as the agent would, with each memory's score and why it was chosen.
    Search {
        caller: String,
        text: String,
        #[arg(long, default_value_t = 10)]
        k: usize,
    },
    /// Deletes everything about a caller: every table, old versions, journals.
    Forget { caller: String },
    /// Everything about a caller as JSON on stdout.
    Export { caller: String },
    /// Runs consolidation (facts from every stored call) again for every caller.
    Consolidate,
    /// Retrieval quality on LoCoMo-format files, event segmentation on labelled topic
    /// shifts, and latency at scale (bench/memory.sh).
    Bench {
        /// LoCoMo-format conversation files (JSON).
        #[arg(long = "dataset", value_name = "FILE")]
        datasets: Vec<PathBuf>,
        /// Conversations with labelled topic shifts for the segmentation part (JSON, e.g.
        /// fixtures/memory/topic_shifts.json).
        #[arg(long, value_name = "FILE")]
        segments: Option<PathBuf>,
        /// Largest synthetic store for the scale part, in turns (0: skip it).
        #[arg(long, default_value_t = 100_000)]
        scale_turns: usize,
        /// Synthetic callers the scale part spreads its turns over.
        #[arg(long, default_value_t = 1_000)]
        scale_callers: usize,
        /// Queries timed per scale step.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
}

pub fn run(profile: &Profile, command: MemoryCommand) -> anyhow::Result<()> {
    let minilm = profile.models_dir.join("minilm");
    if let MemoryCommand::Bench {
        datasets,
        segments,
        scale_turns,
        scale_callers,
        queries,
    } = command
    {
        return super::bench::run(&super::bench::BenchArgs {
            datasets,
            segments,
            scale_turns,
            scale_callers,
            queries,
            minilm,
            work_dir: profile.data_dir.join("memory-bench"),
        });
    }
    let memory = MemoryService::open(
        &profile.data_dir.join("memory"),
        &minilm,
        crate::agent::memory_config(&profile.memory),
    )?;
    let now_ms = crate::agent::unix_ms_now();
    match command {
        MemoryCommand::List => {
            let callers = memory.block_on(memory.store().callers())?;
            if callers.is_empty() {
                println!("no callers remembered");
            }
            for (caller, turns) in callers {
                println!("{caller:<24} {turns} turns");
            }
        }
        MemoryCommand::Show { caller } => {
            let data = memory.block_on(memory.store().load_caller(&caller))?;
            println!(
                "caller {caller}: {} turns, {} episodes, {} facts",
                data.turns.len(),
                data.episodes.len(),
                data.facts.len()
            );
            for f in &data.facts {
                let state = match &f.superseded_by {
                    None => "in force".to_string(),
                    Some(by) => format!("superseded by {by}"),
                };
                println!(
                    "fact    {:<12} {:<24} {} ({state})",
                    f.slot,
                    f.value,
                    sofia_memory::timecue::describe(f.unix_ms, now_ms)
                );
            }
            for e in &data.episodes {
                println!(
                    "episode {} turns {}..{}: {}",
                    e.id, e.first_seq, e.last_seq, e.summary
                );
            }
            for t in data.turns.iter().rev().take(20).rev() {
                println!(
                    "turn    {} {:<6} {}",
                    sofia_memory::timecue::describe(t.unix_ms, now_ms),
                    t.speaker.as_str(),
                    t.text
                );
            }
        }
        MemoryCommand::Search { caller, text, k } => {
            let recall = memory.search(
                &caller,
                &text,
                now_ms,
                &RecallOptions {
                    k,
                    ..RecallOptions::default()
                },
            )?;
            for f in &recall.facts {
                println!(
                    "fact  {:.3}  {} {}",
                    f.score,
                    f.fact.text,
                    if f.fact.in_force() {
                        ""
                    } else {
                        "(superseded)"
                    }
                );
            }
            for r in &recall.turns {
                let w = &r.why;
                let mut why = format!("bm25 {:.2} vector {:.2} episode {:.2} fused {:.2} recency {:.2} salience {:.2}", w.bm25, w.vector, w.episode, w.fused, w.recency, w.salience);
                if w.in_time_range {
                    why.push_str(" in-time-range");
                }
                if let Some(of) = &w.neighbour_of {
                    why.push_str(&format!(" neighbour-of {of}"));
                }
                println!(
                    "turn  {:.3}  [{}] {}: {}\n      why: {why}",
                    r.score,
                    sofia_memory::timecue::describe(r.turn.unix_ms, now_ms),
                    r.turn.speaker.as_str(),
                    r.turn.text
                );
            }
            if recall.turns.is_empty() && recall.facts.is_empty() {
                println!("nothing recalled");
            }
        }
        MemoryCommand::Forget { caller } => {
            let report = memory.forget_caller(&caller)?;
            println!(
                "forgot {caller}: {} turns, {} episodes, {} facts, {} model rows deleted; old versions pruned",
                report.turns, report.episodes, report.facts, report.callers
            );
        }
        MemoryCommand::Export { caller } => {
            let data = memory.block_on(memory.store().load_caller(&caller))?;
            let strip = |v: &mut serde_json::Value| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("embedding");
                }
            };
            let mut turns: Vec<serde_json::Value> = data
                .turns
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            let mut episodes: Vec<serde_json::Value> = data
                .episodes
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            let mut facts: Vec<serde_json::Value> = data
                .facts
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            turns
                .iter_mut()
                .chain(episodes.iter_mut())
                .chain(facts.iter_mut())
                .for_each(strip);
            let out = json!({ "caller": caller, "turns": turns, "episodes": episodes, "facts": facts, "model": data.model.map(|m| json!({"calls": m.calls, "weights": m.weights})) });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).context("writing JSON")?
            );
        }
        MemoryCommand::Consolidate => {
            let changed = memory.consolidate_all()?;
            println!("consolidated: {changed} facts added or changed");
        }
        // Returned above: the bench works on its own synthetic store.
        MemoryCommand::Bench { .. } => {}
    }
    memory.flush();
    Ok(())
}
