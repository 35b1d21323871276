//! The episodic memory as the voice agent and the CLI use it: the `sofia-memory` engine
//! over the LanceDB store, with MiniLM embeddings, behind `sofia_voice::Memory`.
//!
//! Threads and durability:
//! - Recall runs on the caller's thread (the agent calls it from `spawn_blocking`, under
//!   a time budget): embed the query (tens of ms), then score the caller's working set,
//!   which is cached in memory (a cold caller is loaded from LanceDB once; the agent
//!   prefetches at INVITE so the load is done before the call is answered).
//! - Every write goes through one writer thread, the only writer of the store. A turn is
//!   first appended to the call's journal (`<dir>/journal/*.jsonl`, fsynced), then folded
//!   into the working set; the call's turns reach LanceDB in one batch when the call is
//!   closed (every way a call ends calls `close_call`), with its episodes and facts. A
//!   crash (`kill -9`) therefore loses at most the turn in flight: the journals are
//!   replayed when the store is next opened.
//! - After each close: forgetting (see `sofia_memory::forget`) and, every
//!   [`OPTIMIZE_EVERY`] closes, LanceDB compaction and pruning of old versions.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sofia_memory::forget::ForgetPolicy;
use sofia_memory::retrieve::{Recall, RecallOptions};
use sofia_memory::{CallerMemory, CallerModel, NewTurn, Speaker};
use sofia_voice::{Memory, Recollection, Remembered, RememberedFact, Role, StageError, TurnRecord};
use tracing::{info, warn};

use super::embed::MiniLm;
use super::store::{LanceStore, WriteBatch};
use crate::voice::runtime::PrivateRuntime;

/// Callers whose working sets stay cached (least recently used ones are dropped first,
/// never one with a call in progress).
const CACHED_CALLERS: usize = 256;
/// Compaction and version pruning after this many closed calls.
const OPTIMIZE_EVERY: u32 = 20;

/// How the memory behaves; from the profile's `[memory]` section.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    pub forget: ForgetPolicy,
    pub recall: RecallOptions,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            // Gentler than the engine's defaults: unrecalled ordinary turns stay for
            // years, unsurprising ones (small talk) fade in months.
            forget: ForgetPolicy {
                decay: 0.3,
                prune_below: 0.1,
                keep_recent: 500,
                ..ForgetPolicy::default()
            },
            recall: RecallOptions {
                k: 6,
                ..RecallOptions::default()
            },
        }
    }
}

struct Cached {
    memory: CallerMemory,
    /// Calls of this caller opened or holding turns not yet written: the entry is not
    /// evicted while any is left (its turns exist only here and in the journal).
    open_calls: BTreeSet<String>,
}

struct Inner {
    store: LanceStore,
    embedder: MiniLm,
    runtime: PrivateRuntime,
    cache: Mutex<Cache>,
    journal: PathBuf,
    config: MemoryConfig,
}

#[derive(Default)]
struct Cache {
    callers: HashMap<String, Cached>,
    lru: VecDeque<String>,
}

enum Job {
    Turn(TurnRecord),
    Close { caller: String, call_id: String },
    Flush(mpsc::Sender<()>),
}

/// The memory service. Cheap to clone; the writer thread stops when the last clone goes.
#[derive(Clone)]
pub struct MemoryService {
    inner: Arc<Inner>,
    writer: mpsc::Sender<Job>,
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    caller: String,
    call_id: String,
    unix_ms: i64,
    role: String,
    text: String,
}

fn storage(e: impl std::fmt::Display) -> StageError {
    StageError::Storage(e.to_string())
}

impl MemoryService {
    /// Opens the store under `dir` (`<data_dir>/memory`), loads MiniLM from `minilm_dir`,
    /// replays journals of calls a crash left open, and starts the writer thread.
    /// Blocking (about a second): call it at start-up, off the async runtime.
    pub fn open(dir: &Path, minilm_dir: &Path, config: MemoryConfig) -> anyhow::Result<Self> {
        // The model first: a missing model must not leave an empty store behind.
        let embedder = MiniLm::load(minilm_dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lancedb")
            .enable_all()
            .build()
            .context("starting the memory's runtime")?;
        let runtime = PrivateRuntime::new(runtime);
        let store = runtime
            .block_on(LanceStore::open(dir))
            .with_context(|| format!("opening the memory store {}", dir.display()))?;
        let journal = dir.join("journal");
        std::fs::create_dir_all(&journal)
            .with_context(|| format!("creating {}", journal.display()))?;
        let inner = Arc::new(Inner {
            store,
            embedder,
            runtime,
            cache: Mutex::new(Cache::default()),
            journal,
            config,
        });
        inner.replay_journals()?;
        inner.import_legacy(dir)?;
        let (writer, jobs) = mpsc::channel();
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("memory-writer".into())
            .spawn(move || worker.write_loop(jobs))
            .context("starting the memory writer")?;
        Ok(Self { inner, writer })
    }

    /// Loads a caller's working set ahead of their call (at INVITE). Blocking.
    pub fn prefetch(&self, caller: &str) {
        if let Err(e) = self.inner.with_caller(caller, |_| ()) {
            warn!(error = %e, "could not load {caller}'s memory");
        }
    }

    /// The engine's full recall, with scores and reasons (`memory search`).
    pub fn search(
        &self,
        caller: &str,
        query: &str,
        now_ms: i64,
        opts: &RecallOptions,
    ) -> anyhow::Result<Recall> {
        let embedding = self.inner.embedder.embed_one(query)?;
        let opts = RecallOptions {
            touch: false,
            ..*opts
        };
        self.inner
            .with_caller(caller, |m| m.recall(query, &embedding, now_ms, &opts))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn store(&self) -> &LanceStore {
        &self.inner.store
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.inner.runtime.block_on(f)
    }

    /// Consolidates every stored call of every caller again (`memory consolidate`);
    /// returns how many facts changed.
    pub fn consolidate_all(&self) -> anyhow::Result<usize> {
        let callers = self.block_on(self.inner.store.callers())?;
        let mut changed = 0;
        for (caller, _) in callers {
            let batch = self
                .inner
                .with_caller(&caller, |m| {
                    let facts = m.consolidate(None).facts;
                    (facts, m.model.clone())
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let facts = self.inner.embed_facts(&caller, batch.0)?;
            changed += facts.len();
            self.block_on(self.inner.store.write(WriteBatch {
                caller: caller.clone(),
                facts,
                model: Some(batch.1),
                ..WriteBatch::default()
            }))?;
        }
        Ok(changed)
    }

    /// Forgets a caller completely: every table, old versions, the cache and journals.
    pub fn forget_caller(&self, caller: &str) -> anyhow::Result<super::store::ForgetReport> {
        self.flush();
        {
            let mut cache = self.inner.cache.lock().expect("memory cache lock");
            cache.callers.remove(caller);
            cache.lru.retain(|c| c != caller);
        }
        for entry in std::fs::read_dir(&self.inner.journal)? {
            let path = entry?.path();
            if journal_caller(&path).as_deref() == Some(caller) {
                std::fs::remove_file(&path)?;
            }
        }
        self.block_on(self.inner.store.forget_caller(caller))
    }
}

/// The caller a journal file belongs to (its first line says).
fn journal_caller(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line: JournalLine = serde_json::from_str(text.lines().next()?).ok()?;
    Some(line.caller)
}

impl Inner {
    /// Runs `f` on the caller's working set, loading it from the store first if needed.
    fn with_caller<T>(
        &self,
        caller: &str,
        f: impl FnOnce(&mut CallerMemory) -> T,
    ) -> Result<T, StageError> {
        {
            let mut cache = self.cache.lock().map_err(storage)?;
            if cache.callers.contains_key(caller) {
                cache.touch(caller);
                let entry = cache.callers.get_mut(caller).expect("just checked");
                return Ok(f(&mut entry.memory));
            }
        }
        // Load outside the lock: other callers' recalls go on meanwhile.
        let data = self
            .runtime
            .block_on(self.store.load_caller(caller))
            .map_err(storage)?;
        let model = data.model.unwrap_or_else(|| CallerModel::new(caller));
        let memory = CallerMemory::load(model, data.turns, data.episodes, data.facts);
        let mut cache = self.cache.lock().map_err(storage)?;
        if !cache.callers.contains_key(caller) {
            cache.callers.insert(
                caller.to_string(),
                Cached {
                    memory,
                    open_calls: BTreeSet::new(),
                },
            );
            cache.evict();
        }
        cache.touch(caller);
        let entry = cache.callers.get_mut(caller).expect("just inserted");
        Ok(f(&mut entry.memory))
    }

    fn embed_facts(
        &self,
        caller: &str,
        mut facts: Vec<sofia_memory::Fact>,
    ) -> anyhow::Result<Vec<sofia_memory::Fact>> {
        let missing: Vec<usize> = (0..facts.len())
            .filter(|&i| facts[i].embedding.is_empty())
            .collect();
        let texts: Vec<&str> = missing.iter().map(|&i| facts[i].text.as_str()).collect();
        let vectors = self.embedder.embed(&texts)?;
        for (&i, v) in missing.iter().zip(vectors) {
            facts[i].embedding = v;
        }
        let _ = self.with_caller(caller, |m| {
            for f in &facts {
                m.set_fact_embedding(&f.id, f.embedding.clone());
            }
        });
        Ok(facts)
    }

    fn write_loop(&self, jobs: mpsc::Receiver<Job>) {
        let mut closes = 0u32;
        while let Ok(job) = jobs.recv() {
            match job {
                Job::Turn(turn) => {
                    if let Err(e) = self.take_turn(&turn) {
                        warn!(error = %e, "could not store a turn of {} in memory", turn.caller);
                    }
                }
                Job::Close { caller, call_id } => {
                    if let Err(e) = self.close(&caller, &call_id) {
                        warn!(error = %e, "could not write {caller}'s call to memory");
                    }
                    closes += 1;
                    if closes % OPTIMIZE_EVERY == 0 {
                        let started = Instant::now();
                        match self
                            .runtime
                            .block_on(self.store.optimize(Duration::from_secs(60)))
                        {
                            Ok(()) => info!("memory optimized in {:.1?}", started.elapsed()),
                            Err(e) => warn!(error = %e, "memory optimize failed"),
                        }
                    }
                }
                Job::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// One file per (caller, call): a readable prefix and a hash of the exact pair (the
    /// prefix alone maps `%`, `_` and `ü` alike, and `a-b`+`c` like `a`+`b-c`).
    fn journal_path(&self, caller: &str, call_id: &str) -> PathBuf {
        let mut hash = Sha256::new();
        for part in [caller, call_id] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        let readable: String = crate::agent::file_safe(&format!("{caller}-{call_id}"))
            .chars()
            .take(64)
            .collect();
        self.journal.join(format!(
            "{readable}-{}.jsonl",
            hex::encode(&hash.finalize()[..12])
        ))
    }

    /// Journals the turn (fsynced), then folds it into the caller's working set.
    fn take_turn(&self, turn: &TurnRecord) -> anyhow::Result<()> {
        let line = serde_json::to_string(&JournalLine {
            caller: turn.caller.clone(),
            call_id: turn.call_id.clone(),
            unix_ms: turn.unix_ms,
            role: turn.role.as_str().to_string(),
            text: turn.text.clone(),
        })?;
        let path = self.journal_path(&turn.caller, &turn.call_id);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(format!("{line}\n").as_bytes())?;
        file.sync_data()?;
        self.observe(turn)
    }

    fn observe(&self, turn: &TurnRecord) -> anyhow::Result<()> {
        let embedding = self.embedder.embed_one(&turn.text)?;
        let speaker = match turn.role {
            Role::Caller => Speaker::Caller,
            Role::Agent => Speaker::Agent,
        };
        let new = NewTurn {
            call_id: turn.call_id.clone(),
            unix_ms: turn.unix_ms,
            speaker,
            text: turn.text.clone(),
            embedding,
        };
        self.with_caller(&turn.caller, |m| {
            m.observe(new);
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.mark_open(&turn.caller, &turn.call_id, true)
    }

    /// Records that `call_id` of `caller` is open (or, `open` false, written and closed).
    fn mark_open(&self, caller: &str, call_id: &str, open: bool) -> anyhow::Result<()> {
        let mut cache = self.cache.lock().map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(entry) = cache.callers.get_mut(caller) {
            if open {
                entry.open_calls.insert(call_id.to_string());
            } else {
                entry.open_calls.remove(call_id);
            }
        }
        Ok(())
    }

    /// Writes a finished call: its turns, episodes, facts and the caller's model in one
    /// batch, then applies forgetting, then drops the call's journal.
    fn close(&self, caller: &str, call_id: &str) -> anyhow::Result<()> {
        let now_ms = crate::agent::unix_ms_now();
        let policy = self.config.forget.clone();
        let (close, consolidation, dirty, model, plan) = self
            .with_caller(caller, |m| {
                let close = m.close_call(call_id);
                let consolidation = m.consolidate(Some(call_id));
                // Turns recalled (access counts) or strengthened by a repeat.
                let dirty = m.take_dirty();
                let plan = m.forget(now_ms, &policy);
                (close, consolidation, dirty, m.model.clone(), plan)
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // What forgetting deletes now must not be written back by the same batch (the
        // store upserts an id that is both deleted and upserted).
        let gone = |ids: &[String]| -> HashSet<String> { ids.iter().cloned().collect() };
        let (gone_turns, gone_episodes, gone_facts) =
            (gone(&plan.turns), gone(&plan.episodes), gone(&plan.facts));
        let mut facts = consolidation.facts;
        facts.retain(|f| !gone_facts.contains(&f.id));
        let facts = self.embed_facts(caller, facts)?;
        let mut turns = dirty;
        turns.retain(|t| !close.turns.iter().any(|c| c.id == t.id));
        turns.extend(close.turns);
        turns.retain(|t| !gone_turns.contains(&t.id));
        let mut episodes = close.episodes;
        episodes.retain(|e| !gone_episodes.contains(&e.id));
        let batch = WriteBatch {
            caller: caller.to_string(),
            turns,
            episodes,
            facts,
            model: Some(model),
            delete_turns: plan.turns,
            delete_episodes: plan.episodes,
            delete_facts: plan.facts,
        };
        self.runtime.block_on(self.store.write(batch))?;
        let path = self.journal_path(caller, call_id);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        self.mark_open(caller, call_id, false)
    }

    /// The flat log of earlier versions, once: each old call becomes a call here (its
    /// turns embedded, segmented and consolidated), in the order they were said.
    fn import_legacy(&self, dir: &Path) -> anyhow::Result<()> {
        let Some(old) = super::legacy::pending(dir) else {
            return Ok(());
        };
        let turns = self
            .runtime
            .block_on(super::legacy::read_turns(&old))
            .with_context(|| format!("reading the old memory {}", old.display()))?;
        let mut calls: Vec<(String, String)> = Vec::new();
        for turn in &turns {
            self.observe(turn)?;
            let call = (turn.caller.clone(), turn.call_id.clone());
            if !calls.contains(&call) {
                calls.push(call);
            }
        }
        for (caller, call_id) in &calls {
            self.close(caller, call_id)?;
        }
        let done = old.with_extension("lance.imported");
        std::fs::rename(&old, &done)
            .with_context(|| format!("renaming {} to {}", old.display(), done.display()))?;
        info!(
            "memory: imported {} turns of {} calls from {} (kept as {})",
            turns.len(),
            calls.len(),
            old.display(),
            done.display()
        );
        Ok(())
    }

    /// Calls a crash left open: their journaled turns are folded in and written.
    fn replay_journals(&self) -> anyhow::Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.journal)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path)?;
            // One call per file; a file named before journal names were made unique may
            // hold the calls of several callers whose names collided.
            let mut calls: Vec<(String, String)> = Vec::new();
            let mut replayed = 0;
            for line in text.lines() {
                // A torn last line (the crash hit mid-write) is the turn in flight.
                let Ok(l) = serde_json::from_str::<JournalLine>(line) else {
                    continue;
                };
                let role = Role::parse(&l.role).unwrap_or(Role::Caller);
                let turn = TurnRecord {
                    caller: l.caller.clone(),
                    call_id: l.call_id.clone(),
                    unix_ms: l.unix_ms,
                    role,
                    text: l.text,
                };
                let already = self
                    .with_caller(&l.caller, |m| {
                        m.turns().iter().any(|t| {
                            t.call_id == turn.call_id
                                && t.unix_ms == turn.unix_ms
                                && t.text == turn.text
                        })
                    })
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if !already {
                    self.observe(&turn)?;
                    replayed += 1;
                }
                if !calls.iter().any(|(c, i)| *c == l.caller && *i == l.call_id) {
                    calls.push((l.caller, l.call_id));
                }
            }
            for (caller, call_id) in &calls {
                info!("memory: replayed {replayed} journaled turns; closing {caller}'s call {call_id}");
                self.close(caller, call_id)?;
            }
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
        Ok(())
    }
}

impl Cache {
    fn touch(&mut self, caller: &str) {
        if self.lru.back().map(String::as_str) != Some(caller) {
            self.lru.retain(|c| c != caller);
            self.lru.push_back(caller.to_string());
        }
    }

    fn evict(&mut self) {
        let mut scanned = 0;
        while self.callers.len() > CACHED_CALLERS && scanned < self.lru.len() {
            let Some(oldest) = self.lru.pop_front() else {
                break;
            };
            if self
                .callers
                .get(&oldest)
                .is_some_and(|c| !c.open_calls.is_empty())
            {
                self.lru.push_back(oldest);
                scanned += 1;
            } else {
                self.callers.remove(&oldest);
            }
        }
    }
}

/// The engine's recall as the conversation takes it.
fn recollection(recall: &Recall) -> Recollection {
    Recollection {
        name: None,
        last_topic: None,
        facts: recall
            .facts
            .iter()
            .map(|h| RememberedFact {
                slot: h.fact.slot.clone(),
                value: h.fact.value.clone(),
                text: h.fact.text.clone(),
                unix_ms: h.fact.unix_ms,
                superseded: !h.fact.in_force(),
            })
            .collect(),
        turns: recall
            .turns
            .iter()
            .map(|r| Remembered {
                role: match r.turn.speaker {
                    Speaker::Caller => Role::Caller,
                    Speaker::Agent => Role::Agent,
                },
                text: r.turn.text.clone(),
                unix_ms: r.turn.unix_ms,
                call_id: r.turn.call_id.clone(),
                score: r.score,
            })
            .collect(),
    }
}

impl Memory for MemoryService {
    fn open_call(
        &self,
        caller: &str,
        call_id: &str,
        _now_ms: i64,
    ) -> Result<Recollection, StageError> {
        self.inner
            .with_caller(caller, |m| {
                let greeting = m.greeting();
                let facts = m
                    .facts()
                    .iter()
                    .filter(|f| f.in_force())
                    .rev()
                    .take(10)
                    .map(|f| RememberedFact {
                        slot: f.slot.clone(),
                        value: f.value.clone(),
                        text: f.text.clone(),
                        unix_ms: f.unix_ms,
                        superseded: false,
                    })
                    .collect();
                Recollection {
                    name: greeting.name,
                    last_topic: greeting.episode.map(|(text, unix_ms)| Remembered {
                        role: Role::Caller,
                        text,
                        unix_ms,
                        call_id: String::new(),
                        score: 1.0,
                    }),
                    facts,
                    turns: Vec::new(),
                }
            })
            .and_then(|r| {
                self.inner
                    .mark_open(caller, call_id, true)
                    .map_err(storage)?;
                Ok(r)
            })
    }

    fn recall(&self, caller: &str, query: &str, now_ms: i64) -> Result<Recollection, StageError> {
        let embedding = self.inner.embedder.embed_one(query).map_err(storage)?;
        let opts = self.inner.config.recall;
        self.inner
            .with_caller(caller, |m| m.recall(query, &embedding, now_ms, &opts))
            .map(|r| recollection(&r))
    }

    fn remember(&self, turn: &TurnRecord) -> Result<(), StageError> {
        self.writer
            .send(Job::Turn(turn.clone()))
            .map_err(|_| StageError::Storage("the memory writer has stopped".into()))
    }

    fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.writer.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    fn close_call(&self, caller: &str, call_id: &str) -> Result<(), StageError> {
        self.writer
            .send(Job::Close {
                caller: caller.to_string(),
                call_id: call_id.to_string(),
            })
            .map_err(|_| StageError::Storage("the memory writer has stopped".into()))
    }
}
