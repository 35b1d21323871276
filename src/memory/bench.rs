//! `sofia-phone memory bench`: a report, not a test. Three parts.
//!
//! **Retrieval quality** on LoCoMo-format files: each conversation becomes one caller's
//! call history (one session = one call, at its date). Turns are ingested as the agent
//! ingests them: before each turn is stored, the memory is asked for what bears on it
//! (as the agent recalls per caller turn), so access counts and the online learning of
//! fusion weights see the same signals they would in calls. Then every question with
//! evidence is asked once per configuration; a question counts for recall@k when any of
//! its evidence turns is among the first k turns returned, neighbours included.
//!
//! **Event segmentation** on conversations with known topic shifts (`--segments`, e.g.
//! fixtures/memory/topic_shifts.json): each conversation's turns are embedded and
//! segmented as a call is when it closes; boundary precision, recall and F1 at a
//! tolerance of 0 and 1 turns, hits pooled over all conversations (micro-average), for
//! the default segmentation, without refinement, and against baselines (a boundary every
//! N turns, N the conversation's mean true segment length; a boundary at every turn;
//! none).
//!
//! **Scale**: synthetic callers written through the LanceDB store up to `scale_turns`
//! turns: ingest throughput, store size, and recall latency cold (load the caller from
//! LanceDB, build the working set, recall) and warm (recall on the cached working set).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use sofia_memory::forget::ForgetPolicy;
use sofia_memory::retrieve::RecallOptions;
use sofia_memory::segment::{boundary_hits, segment, SegmentConfig};
use sofia_memory::{CallerMemory, CallerModel, FusionWeights, NewTurn, Speaker, Turn, DAY_MS};

use super::embed::MiniLm;
use super::store::{LanceStore, WriteBatch};

pub struct BenchArgs {
    pub datasets: Vec<PathBuf>,
    /// Conversations with labelled topic shifts (the segmentation part), if any.
    pub segments: Option<PathBuf>,
    pub scale_turns: usize,
    pub scale_callers: usize,
    pub queries: usize,
    pub minilm: PathBuf,
    pub work_dir: PathBuf,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let embedder = MiniLm::load(&args.minilm)?;
    if !args.datasets.is_empty() {
        quality(args, &embedder)?;
    }
    if let Some(path) = &args.segments {
        segmentation(path, &embedder)?;
    }
    if args.scale_turns > 0 {
        let result = scale(args, &embedder);
        // The synthetic store is the bench's own: never left in the data dir.
        let _ = std::fs::remove_dir_all(&args.work_dir);
        result?;
    }
    Ok(())
}

// ---- LoCoMo ----------------------------------------------------------------------------

struct Conversation {
    name: String,
    /// (session start, its turns)
    sessions: Vec<(i64, Vec<SessionTurn>)>,
    questions: Vec<Question>,
}

struct SessionTurn {
    dia_id: String,
    /// Said by `speaker_a` (stored as the caller; `speaker_b` as the agent).
    is_a: bool,
    /// What is indexed: "Speaker: text [shares <image caption>]".
    text: String,
}

struct Question {
    text: String,
    evidence: Vec<String>,
    category: u64,
}

/// "1:56 pm on 8 May, 2023" -> Unix ms (UTC).
fn parse_locomo_date(s: &str) -> Option<i64> {
    let (time, date) = s.split_once(" on ")?;
    let (hm, ampm) = time.trim().split_once(' ')?;
    let (h, m) = hm.split_once(':')?;
    let mut h: i64 = h.parse().ok()?;
    let m: i64 = m.parse().ok()?;
    if ampm.eq_ignore_ascii_case("pm") && h != 12 {
        h += 12;
    }
    if ampm.eq_ignore_ascii_case("am") && h == 12 {
        h = 0;
    }
    let date = date.replace(',', "");
    let mut parts = date.split_whitespace();
    let day: u32 = parts.next()?.parse().ok()?;
    let month = month_number(parts.next()?)?;
    let year: i64 = parts.next()?.parse().ok()?;
    let days = sofia_memory::timecue::days_from_civil(year, month, day);
    Some(days * DAY_MS + (h * 60 + m) * 60_000)
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    let name = name.to_lowercase();
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

fn load_conversation(path: &Path) -> anyhow::Result<Conversation> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let speaker_a = v["speaker_a"].as_str().unwrap_or_default().to_string();
    let mut sessions = Vec::new();
    for n in 1.. {
        let Some(turns) = v.get(format!("session_{n}")).and_then(Value::as_array) else {
            if v.get(format!("session_{n}_date_time")).is_some() {
                continue;
            }
            break;
        };
        let date = v[format!("session_{n}_date_time")]
            .as_str()
            .unwrap_or_default();
        let start = parse_locomo_date(date).with_context(|| {
            format!(
                "{}: session {n} has an unreadable date {date:?}",
                path.display()
            )
        })?;
        let mut out = Vec::new();
        for t in turns {
            let speaker = t["speaker"].as_str().unwrap_or_default();
            let mut said = format!("{speaker}: {}", t["text"].as_str().unwrap_or_default());
            if let Some(caption) = t.get("blip_caption").and_then(Value::as_str) {
                said.push_str(&format!(" [shares {caption}]"));
            }
            out.push(SessionTurn {
                dia_id: t["dia_id"].as_str().unwrap_or_default().to_string(),
                is_a: speaker == speaker_a,
                text: said,
            });
        }
        sessions.push((start, out));
    }
    let questions = v["qa"]
        .as_array()
        .map(|qs| {
            qs.iter()
                .filter_map(|q| {
                    let evidence: Vec<String> = q["evidence"]
                        .as_array()?
                        .iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect();
                    (!evidence.is_empty()).then(|| Question {
                        text: q["question"].as_str().unwrap_or_default().to_string(),
                        evidence,
                        category: q["category"].as_u64().unwrap_or(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Conversation {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sessions,
        questions,
    })
}

/// One configuration of the pipeline.
#[derive(Clone)]
struct Variant {
    name: &'static str,
    recall: RecallOptions,
    surprise_strength: bool,
    segmentation: bool,
    /// The forgetting policy applied after each call (None: forgetting off).
    forgetting: Option<ForgetPolicy>,
    merge_duplicates: bool,
    learn_weights: bool,
    consolidation: bool,
}

fn variants() -> Vec<Variant> {
    let full = Variant {
        name: "full pipeline",
        recall: RecallOptions {
            touch: false,
            ..RecallOptions::default()
        },
        surprise_strength: true,
        segmentation: true,
        // The switch's own policy (`[memory]` defaults).
        forgetting: Some(super::service::MemoryConfig::default().forget),
        merge_duplicates: true,
        learn_weights: true,
        consolidation: true,
    };
    let stage1 = RecallOptions {
        use_episodes: false,
        contiguity: false,
        rerank: false,
        time_cues: false,
        ..full.recall
    };
    let only = |name, bm25: f32, vector: f32| Variant {
        name,
        recall: RecallOptions {
            use_bm25: bm25 > 0.0,
            use_vector: vector > 0.0,
            weights: Some(FusionWeights {
                bm25,
                vector,
                episode: 0.0,
                updates: 0,
            }),
            ..stage1
        },
        ..full.clone()
    };
    let defaults = FusionWeights::default();
    vec![
        only("BM25 alone", 1.0, 0.0),
        only("vector alone", 0.0, 1.0),
        only("hybrid stage 1", defaults.bm25, defaults.vector),
        full.clone(),
        Variant {
            name: "- surprise (strength 1)",
            surprise_strength: false,
            ..full.clone()
        },
        Variant {
            name: "- segmentation (1 episode/call)",
            segmentation: false,
            ..full.clone()
        },
        Variant {
            name: "- episode leg",
            recall: RecallOptions {
                use_episodes: false,
                ..full.recall
            },
            ..full.clone()
        },
        Variant {
            name: "- stage 2 (contiguity)",
            recall: RecallOptions {
                contiguity: false,
                ..full.recall
            },
            ..full.clone()
        },
        Variant {
            name: "- stage 2 (re-rank, time)",
            recall: RecallOptions {
                rerank: false,
                time_cues: false,
                ..full.recall
            },
            ..full.clone()
        },
        Variant {
            name: "- consolidation",
            consolidation: false,
            ..full.clone()
        },
        Variant {
            name: "- forgetting",
            forgetting: None,
            ..full.clone()
        },
        Variant {
            name: "forgetting at engine defaults",
            forgetting: Some(ForgetPolicy::default()),
            ..full.clone()
        },
        Variant {
            name: "- interference (no merging)",
            merge_duplicates: false,
            ..full.clone()
        },
        Variant {
            name: "- online learning",
            learn_weights: false,
            ..full.clone()
        },
    ]
}

struct Embedded {
    conv: Conversation,
    /// Per session, per turn: embedding.
    turn_vectors: Vec<Vec<Vec<f32>>>,
    question_vectors: Vec<Vec<f32>>,
}

#[derive(Default)]
struct Tally {
    /// category -> (questions, hits@5, hits@10)
    by_category: BTreeMap<u64, (usize, usize, usize)>,
    recall_us: Vec<u128>,
    turns: usize,
    episodes: usize,
    facts: usize,
    turn_bytes: usize,
    consolidated_bytes: usize,
}

impl Tally {
    fn total(&self) -> (usize, usize, usize) {
        self.by_category
            .values()
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }
}

fn quality(args: &BenchArgs, embedder: &MiniLm) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut data = Vec::new();
    for path in &args.datasets {
        let conv = load_conversation(path)?;
        let mut turn_vectors = Vec::new();
        for (_, turns) in &conv.sessions {
            let texts: Vec<&str> = turns.iter().map(|t| t.text.as_str()).collect();
            turn_vectors.push(embedder.embed(&texts)?);
        }
        let qs: Vec<&str> = conv.questions.iter().map(|q| q.text.as_str()).collect();
        let question_vectors = embedder.embed(&qs)?;
        data.push(Embedded {
            conv,
            turn_vectors,
            question_vectors,
        });
    }
    let n_turns: usize = data
        .iter()
        .flat_map(|d| &d.conv.sessions)
        .map(|s| s.1.len())
        .sum();
    let n_questions: usize = data.iter().map(|d| d.conv.questions.len()).sum();
    println!(
        "LoCoMo: {} conversations, {n_turns} turns, {n_questions} questions with evidence (embedded in {:.1} s)",
        data.len(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "{:<32} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>6} {:>9}",
        "configuration",
        "recall@5",
        "recall@10",
        "p50 ms",
        "p95 ms",
        "turns",
        "episodes",
        "facts",
        "vs full"
    );
    let mut full_r10 = None;
    let mut per_category: Vec<(&'static str, Tally)> = Vec::new();
    for variant in variants() {
        let tally = run_variant(&variant, &data);
        let (n, h5, h10) = tally.total();
        let r5 = h5 as f64 / n.max(1) as f64;
        let r10 = h10 as f64 / n.max(1) as f64;
        if variant.name == "full pipeline" {
            full_r10 = Some(r10);
        }
        let delta = full_r10
            .map(|f| format!("{:+.3}", r10 - f))
            .unwrap_or_default();
        let (p50, p95) = percentiles(&tally.recall_us);
        println!(
            "{:<32} {:>9.3} {:>9.3} {:>8.2} {:>8.2} {:>8} {:>7} {:>6} {:>9}",
            variant.name, r5, r10, p50, p95, tally.turns, tally.episodes, tally.facts, delta
        );
        per_category.push((variant.name, tally));
    }
    println!();
    println!("recall@10 per LoCoMo category (1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial):");
    for (name, tally) in &per_category[..4] {
        let cells: Vec<String> = tally
            .by_category
            .iter()
            .map(|(c, (n, _, h10))| format!("{c}: {:.3} ({n})", *h10 as f64 / (*n).max(1) as f64))
            .collect();
        println!("  {name:<22} {}", cells.join("  "));
    }
    if let Some((_, full)) = per_category.iter().find(|(n, _)| *n == "full pipeline") {
        let reduction = 1.0 - full.consolidated_bytes as f64 / full.turn_bytes.max(1) as f64;
        println!();
        println!(
            "consolidation: {} turns ({} bytes of text) -> {} facts + {} episode summaries ({} bytes): {:.1}% smaller",
            full.turns,
            full.turn_bytes,
            full.facts,
            full.episodes,
            full.consolidated_bytes,
            100.0 * reduction
        );
    }
    Ok(())
}

fn percentiles(us: &[u128]) -> (f64, f64) {
    if us.is_empty() {
        return (0.0, 0.0);
    }
    let mut v = us.to_vec();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    (at(0.5), at(0.95))
}

fn run_variant(variant: &Variant, data: &[Embedded]) -> Tally {
    let mut tally = Tally::default();
    for d in data {
        let caller = format!("locomo-{}", d.conv.name);
        let mut memory = CallerMemory::new(&caller);
        memory.surprise_strength = variant.surprise_strength;
        memory.merge_duplicates = variant.merge_duplicates;
        memory.learn_weights = variant.learn_weights;
        if !variant.segmentation {
            memory.segment.gamma = f32::INFINITY;
        }
        let ingest_opts = RecallOptions {
            touch: true,
            ..variant.recall
        };
        // dia_id of each stored turn id.
        let mut dia: HashMap<String, String> = HashMap::new();
        let mut last_ms = 0;
        for (s, (start, turns)) in d.conv.sessions.iter().enumerate() {
            let call_id = format!("session-{}", s + 1);
            for (t, SessionTurn { dia_id, is_a, text }) in turns.iter().enumerate() {
                let unix_ms = start + t as i64 * 30_000;
                last_ms = unix_ms;
                let embedding = d.turn_vectors[s][t].clone();
                if *is_a {
                    // The agent recalls by the meaning of each caller turn.
                    memory.recall(text, &embedding, unix_ms, &ingest_opts);
                }
                let observed = memory.observe(NewTurn {
                    call_id: call_id.clone(),
                    unix_ms,
                    speaker: if *is_a {
                        Speaker::Caller
                    } else {
                        Speaker::Agent
                    },
                    text: text.clone(),
                    embedding,
                });
                dia.entry(observed.turn().id.clone())
                    .or_insert_with(|| dia_id.clone());
                if let sofia_memory::working::Observed::Merged(t) = &observed {
                    // A merged repeat answers for both dia_ids.
                    dia.insert(format!("{}+{dia_id}", t.id), dia_id.clone());
                }
            }
            memory.close_call(&call_id);
            if variant.consolidation {
                memory.consolidate(Some(&call_id));
            }
            if let Some(policy) = &variant.forgetting {
                memory.forget(unix_ms_after(turns.len(), *start), policy);
            }
        }
        // Merged repeats: every dia_id that went into a stored turn.
        let mut dia_of: HashMap<String, HashSet<String>> = HashMap::new();
        for (k, v) in &dia {
            let id = k.split('+').next().unwrap_or(k).to_string();
            dia_of.entry(id).or_default().insert(v.clone());
        }
        let now = last_ms + DAY_MS;
        for (q, v) in d.conv.questions.iter().zip(&d.question_vectors) {
            let began = Instant::now();
            let recall = memory.recall(&q.text, v, now, &variant.recall);
            tally.recall_us.push(began.elapsed().as_micros());
            let found = |k: usize| {
                recall.turns.iter().take(k).any(|r| {
                    dia_of
                        .get(&r.turn.id)
                        .is_some_and(|ids| q.evidence.iter().any(|e| ids.contains(e)))
                })
            };
            let cell = tally.by_category.entry(q.category).or_default();
            cell.0 += 1;
            cell.1 += usize::from(found(5));
            cell.2 += usize::from(found(10));
        }
        tally.turns += memory.turn_count();
        tally.episodes += memory.episodes().len();
        tally.facts += memory.facts().len();
        tally.turn_bytes += memory.turns().iter().map(|t| t.text.len()).sum::<usize>();
        tally.consolidated_bytes += memory.facts().iter().map(|f| f.text.len()).sum::<usize>()
            + memory
                .episodes()
                .iter()
                .map(|e| e.summary.len())
                .sum::<usize>();
    }
    tally
}

fn unix_ms_after(turns: usize, start: i64) -> i64 {
    start + turns as i64 * 30_000
}

// ---- segmentation ----------------------------------------------------------------------

/// One conversation with labelled topic shifts (fixtures/memory/topic_shifts.json).
#[derive(Debug, Clone, Deserialize)]
pub struct LabelledCall {
    pub name: String,
    pub turns: Vec<LabelledTurn>,
    /// Index of the turn where each new topic starts (ascending, never 0).
    pub boundaries: Vec<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LabelledTurn {
    /// "caller" or "agent".
    pub speaker: String,
    pub text: String,
}

/// Reads a topic-shift file; every boundary must fall strictly inside its conversation.
pub fn load_topic_shifts(path: &Path) -> anyhow::Result<Vec<LabelledCall>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let calls: Vec<LabelledCall> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of labelled conversations", path.display()))?;
    for c in &calls {
        let inside = c.boundaries.iter().all(|&b| b > 0 && b < c.turns.len());
        let ascending = c.boundaries.windows(2).all(|w| w[0] < w[1]);
        anyhow::ensure!(
            inside && ascending,
            "{}: {}: boundaries {:?} are not ascending turn indices in 1..{}",
            path.display(),
            c.name,
            c.boundaries,
            c.turns.len()
        );
    }
    Ok(calls)
}

/// The fixed-length baseline: a boundary every N turns, N the conversation's mean true
/// segment length, rounded (so it knows how many topics there are, not where they start).
pub fn fixed_length_boundaries(turns: usize, truth: &[usize]) -> Vec<usize> {
    let every = ((turns as f64 / (truth.len() + 1) as f64).round() as usize).max(1);
    (1..)
        .map(|k| k * every)
        .take_while(|&b| b < turns)
        .collect()
}

/// Boundary hits pooled over conversations: micro-averaged precision, recall and F1.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PooledHits {
    pub hits: usize,
    pub predicted: usize,
    pub truth: usize,
}

impl PooledHits {
    pub fn add(&mut self, predicted: &[usize], truth: &[usize], tolerance: usize) {
        self.hits += boundary_hits(predicted, truth, tolerance);
        self.predicted += predicted.len();
        self.truth += truth.len();
    }

    /// (precision, recall, F1); 0 where undefined.
    pub fn prf(&self) -> (f64, f64, f64) {
        let p = self.hits as f64 / self.predicted.max(1) as f64;
        let r = self.hits as f64 / self.truth.max(1) as f64;
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        (p, r, f1)
    }
}

/// The segmentations the bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentMethod {
    /// `segment` with `SegmentConfig::default()`: surprise, then modularity refinement.
    Default,
    /// The same without refinement (`refine: false`).
    Unrefined,
    /// [`fixed_length_boundaries`].
    FixedLength,
    /// A boundary before every turn but the first.
    EveryTurn,
    /// One event per call.
    NoBoundaries,
}

impl SegmentMethod {
    pub const ALL: [Self; 5] = [
        Self::Default,
        Self::Unrefined,
        Self::FixedLength,
        Self::EveryTurn,
        Self::NoBoundaries,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "surprise + refinement (default)",
            Self::Unrefined => "surprise only (refine: false)",
            Self::FixedLength => "fixed length (mean true length)",
            Self::EveryTurn => "a boundary at every turn",
            Self::NoBoundaries => "no boundaries",
        }
    }

    /// Predicted boundaries of a call; `truth` is used only by the fixed-length baseline.
    pub fn boundaries(self, embeddings: &[&[f32]], truth: &[usize]) -> Vec<usize> {
        match self {
            Self::Default => segment(embeddings, &SegmentConfig::default()),
            Self::Unrefined => segment(
                embeddings,
                &SegmentConfig {
                    refine: false,
                    ..SegmentConfig::default()
                },
            ),
            Self::FixedLength => fixed_length_boundaries(embeddings.len(), truth),
            Self::EveryTurn => (1..embeddings.len()).collect(),
            Self::NoBoundaries => Vec::new(),
        }
    }
}

fn segmentation(path: &Path, embedder: &MiniLm) -> anyhow::Result<()> {
    let started = Instant::now();
    let calls = load_topic_shifts(path)?;
    let mut vectors = Vec::new();
    for c in &calls {
        let texts: Vec<&str> = c.turns.iter().map(|t| t.text.as_str()).collect();
        vectors.push(embedder.embed(&texts)?);
    }
    let n_turns: usize = calls.iter().map(|c| c.turns.len()).sum();
    let n_boundaries: usize = calls.iter().map(|c| c.boundaries.len()).sum();
    println!();
    println!(
        "segmentation: {} conversations, {n_turns} turns, {n_boundaries} true boundaries in {} (embedded in {:.1} s)",
        calls.len(),
        path.display(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "{:<32} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "method", "predicted", "P@0", "R@0", "F1@0", "P@1", "R@1", "F1@1"
    );
    let mut per_call: Vec<Vec<Vec<usize>>> = Vec::new();
    for method in SegmentMethod::ALL {
        let mut pooled = [PooledHits::default(); 2];
        let mut predictions = Vec::new();
        for (c, v) in calls.iter().zip(&vectors) {
            let refs: Vec<&[f32]> = v.iter().map(Vec::as_slice).collect();
            let predicted = method.boundaries(&refs, &c.boundaries);
            for (tolerance, p) in pooled.iter_mut().enumerate() {
                p.add(&predicted, &c.boundaries, tolerance);
            }
            predictions.push(predicted);
        }
        let (p0, r0, f0) = pooled[0].prf();
        let (p1, r1, f1) = pooled[1].prf();
        println!(
            "{:<32} {:>9} {p0:>7.3} {r0:>7.3} {f0:>7.3} {p1:>7.3} {r1:>7.3} {f1:>7.3}",
            method.name(),
            pooled[0].predicted
        );
        per_call.push(predictions);
    }
    println!();
    println!("boundaries per conversation (true; default; refine: false):");
    for (i, c) in calls.iter().enumerate() {
        println!(
            "  {:<34} {:?}; {:?}; {:?}",
            c.name, c.boundaries, per_call[0][i], per_call[1][i]
        );
    }
    Ok(())
}

// ---- scale -----------------------------------------------------------------------------

fn scale(args: &BenchArgs, embedder: &MiniLm) -> anyhow::Result<()> {
    let dir = args.work_dir.join("scale");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let store = runtime.block_on(LanceStore::open(&dir))?;
    // Real embeddings of a pool of sentences, each turn a noisy copy of one: MiniLM on
    // 100k distinct sentences would take most of an hour on two cores.
    let pool: Vec<String> = (0..256).map(synthetic_sentence).collect();
    let pool_refs: Vec<&str> = pool.iter().map(String::as_str).collect();
    let pool_vectors = embedder.embed(&pool_refs)?;
    let mut rng = Lcg(42);
    let steps: Vec<usize> = [1_000, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|&s| s < args.scale_turns)
        .chain(std::iter::once(args.scale_turns))
        .collect();
    println!();
    println!(
        "scale: {} callers, turns per call 20, recall k=10 over the caller's working set",
        args.scale_callers
    );
    println!(
        "{:>9} {:>12} {:>10} {:>17} {:>17} {:>17}",
        "turns", "ingest t/s", "store MiB", "cold, unindexed", "cold, indexed", "warm"
    );
    println!(
        "{:>51} {:>17} {:>17}",
        "p50/p95 ms", "p50/p95 ms", "p50/p95 ms"
    );
    let mut written = 0usize;
    let mut call = 0usize;
    for step in steps {
        let began = Instant::now();
        let before = written;
        while written < step {
            let caller = format!("caller-{:04}", call % args.scale_callers);
            let call_id = format!("call-{call}");
            let turns: Vec<Turn> = (0..20)
                .map(|seq| {
                    let p = rng.below(pool.len());
                    let mut e = pool_vectors[p].clone();
                    for x in &mut e {
                        *x += (rng.unit() - 0.5) * 0.02;
                    }
                    Turn {
                        id: Turn::make_id(&call_id, seq),
                        caller: caller.clone(),
                        call_id: call_id.clone(),
                        seq,
                        unix_ms: 1_700_000_000_000 + (call as i64) * 60_000 + i64::from(seq) * 1000,
                        speaker: if seq % 2 == 0 {
                            Speaker::Caller
                        } else {
                            Speaker::Agent
                        },
                        text: format!("{} (call {call})", pool[p]),
                        embedding: sofia_memory::vector::normalized(e),
                        surprise: 0.0,
                        strength: 1.0,
                        access_count: 0,
                        last_access_ms: 0,
                        episode_id: String::new(),
                    }
                })
                .collect();
            written += turns.len();
            call += 1;
            runtime.block_on(store.write(WriteBatch {
                caller,
                turns,
                ..WriteBatch::default()
            }))?;
        }
        let ingest = (written - before) as f64 / began.elapsed().as_secs_f64();
        let callers = args.scale_callers.min(call);
        // Rows written since the last optimize are outside the caller index until the
        // next one (the switch optimizes every 20 calls): both cases are timed.
        let (unindexed, _) = time_recalls(
            &runtime,
            &store,
            callers,
            args.queries,
            &pool,
            &pool_vectors,
            &mut rng,
        )?;
        runtime.block_on(store.optimize(std::time::Duration::ZERO))?;
        let size = dir_size(&dir) as f64 / (1024.0 * 1024.0);
        let (cold, warm) = time_recalls(
            &runtime,
            &store,
            callers,
            args.queries,
            &pool,
            &pool_vectors,
            &mut rng,
        )?;
        let (u50, u95) = percentiles(&unindexed);
        let (c50, c95) = percentiles(&cold);
        let (w50, w95) = percentiles(&warm);
        println!(
            "{written:>9} {ingest:>12.0} {size:>10.1} {u50:>8.2}/{u95:<8.2} {c50:>8.2}/{c95:<8.2} {w50:>8.2}/{w95:<8.2}"
        );
    }
    // One caller holding every turn: the worst case for the exact vector scan.
    let mut single = CallerMemory::new("everyone");
    // (Duplicate detection scans the caller's turns per new turn: off for the fill.)
    single.merge_duplicates = false;
    for i in 0..written.min(100_000) {
        let p = i % pool.len();
        single.observe(NewTurn {
            call_id: format!("c{}", i / 20),
            unix_ms: 1_700_000_000_000 + i as i64 * 1000,
            speaker: Speaker::Caller,
            text: format!("{} {i}", pool[p]),
            embedding: pool_vectors[p].clone(),
        });
    }
    let mut warm = Vec::new();
    for q in 0..args.queries {
        let t = Instant::now();
        single.recall(
            &pool[q % pool.len()],
            &pool_vectors[q % pool.len()],
            1_800_000_000_000,
            &RecallOptions::default(),
        );
        warm.push(t.elapsed().as_micros());
    }
    let (w50, w95) = percentiles(&warm);
    println!(
        "one caller with {} turns (warm working set): recall p50 {w50:.2} ms, p95 {w95:.2} ms",
        single.turn_count()
    );
    Ok(())
}

/// Cold (load the caller from LanceDB, build the working set, recall) and warm (recall
/// again on it) times in microseconds, for random callers.
fn time_recalls(
    runtime: &tokio::runtime::Runtime,
    store: &LanceStore,
    callers: usize,
    queries: usize,
    pool: &[String],
    pool_vectors: &[Vec<f32>],
    rng: &mut Lcg,
) -> anyhow::Result<(Vec<u128>, Vec<u128>)> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for q in 0..queries {
        let caller = format!("caller-{:04}", rng.below(callers));
        let query = &pool[q % pool.len()];
        let qv = &pool_vectors[q % pool.len()];
        let t0 = Instant::now();
        let data = runtime.block_on(store.load_caller(&caller))?;
        let mut memory = CallerMemory::load(
            data.model.unwrap_or_else(|| CallerModel::new(&caller)),
            data.turns,
            data.episodes,
            data.facts,
        );
        memory.recall(query, qv, 1_800_000_000_000, &RecallOptions::default());
        cold.push(t0.elapsed().as_micros());
        let t1 = Instant::now();
        memory.recall(query, qv, 1_800_000_000_000, &RecallOptions::default());
        warm.push(t1.elapsed().as_micros());
    }
    Ok((cold, warm))
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_size(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

const SUBJECTS: &[&str] = &[
    "I",
    "My sister",
    "The plumber",
    "Our neighbour",
    "My boss",
    "The doctor",
    "My son",
    "We",
];
const VERBS: &[&str] = &[
    "need to fix",
    "talked about",
    "booked",
    "cancelled",
    "forgot",
    "want to buy",
    "painted",
    "visited",
];
const OBJECTS: &[&str] = &[
    "the kitchen sink",
    "a trip to Paris",
    "the car",
    "a table for two",
    "the garden fence",
    "a new phone",
    "the dentist appointment",
    "the birthday party",
    "a flight to Berlin",
    "the printer",
    "a yoga class",
    "the broken window",
    "a dog called Rex",
    "the insurance claim",
    "a pottery workshop",
    "the hotel in Rome",
];
const WHEN: &[&str] = &[
    "on Thursday",
    "next week",
    "yesterday",
    "in May",
    "after work",
    "this weekend",
    "tomorrow",
    "last month",
];

fn synthetic_sentence(i: usize) -> String {
    format!(
        "{} {} {} {}.",
        SUBJECTS[i % SUBJECTS.len()],
        VERBS[(i / 8) % VERBS.len()],
        OBJECTS[(i * 7) % OBJECTS.len()],
        WHEN[(i * 3 + 1) % WHEN.len()]
    )
}

/// A small deterministic generator: the bench is the same every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 1_000_000) as f32 / 1_000_000.0
    }
}
