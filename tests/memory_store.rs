//! The LanceDB store of the episodic memory, on a real database in a temporary
//! directory: round trips, upserts, deletes, per-caller isolation (injection-shaped
//! caller ids included), forgetting that leaves no bytes behind, and persistence.

use std::path::Path;
use std::time::Duration;

use sofia_memory::{CallerModel, Episode, Fact, Speaker, Turn, DIM};
use sofia_phone::memory::store::{CallerData, Counts, ForgetReport, LanceStore, WriteBatch};

/// A deterministic unit vector per seed.
fn vector(seed: u32) -> Vec<f32> {
    let raw: Vec<f32> = (0..DIM as u32)
        .map(|j| ((seed.wrapping_mul(31).wrapping_add(j * 7)) % 17) as f32 - 8.0 + 0.25)
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

fn turn(caller: &str, call: &str, seq: u32, unix_ms: i64, text: &str) -> Turn {
    Turn {
        id: Turn::make_id(call, seq),
        caller: caller.into(),
        call_id: call.into(),
        seq,
        unix_ms,
        speaker: if seq % 2 == 0 {
            Speaker::Agent
        } else {
            Speaker::Caller
        },
        text: text.into(),
        embedding: vector(seq + unix_ms as u32),
        surprise: 1.5 + seq as f32,
        strength: 0.75,
        access_count: seq * 2,
        last_access_ms: unix_ms + 5,
        episode_id: format!("{call}#0"),
    }
}

fn episode(caller: &str, call: &str, first: u32, last: u32, summary: &str) -> Episode {
    Episode {
        id: format!("{call}#{first}"),
        caller: caller.into(),
        call_id: call.into(),
        first_seq: first,
        last_seq: last,
        start_ms: 1_000 + first as i64,
        end_ms: 2_000 + last as i64,
        summary: summary.into(),
        embedding: vector(100 + first),
        surprise: 3.25,
        strength: 1.0,
    }
}

fn fact(caller: &str, slot: &str, value: &str, unix_ms: i64, embedded: bool) -> Fact {
    Fact {
        id: format!("{slot}@{unix_ms}"),
        caller: caller.into(),
        slot: slot.into(),
        value: value.into(),
        text: format!("Your {slot} is {value}."),
        unix_ms,
        source_turns: vec!["c1/1".into(), "c1/3".into()],
        superseded_by: None,
        embedding: if embedded {
            vector(200 + unix_ms as u32)
        } else {
            Vec::new()
        },
    }
}

fn model(caller: &str, calls: u32) -> CallerModel {
    let mut m = CallerModel::new(caller);
    m.calls = calls;
    m
}

async fn open(dir: &Path) -> LanceStore {
    LanceStore::open(&dir.join("memory")).await.expect("open")
}

/// One turn, episode, fact and model for `caller`, texts tagged with `tag`.
fn everything(caller: &str, tag: &str) -> WriteBatch {
    WriteBatch {
        caller: caller.into(),
        turns: vec![
            turn(caller, "c1", 0, 1_000, &format!("hello {tag}")),
            turn(caller, "c1", 1, 1_100, &format!("I live in {tag}")),
        ],
        episodes: vec![episode(caller, "c1", 0, 1, &format!("lives in {tag}"))],
        facts: vec![fact(caller, "home", tag, 1_100, true)],
        model: Some(model(caller, 1)),
        ..Default::default()
    }
}

fn texts(data: &CallerData) -> Vec<&str> {
    data.turns.iter().map(|t| t.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_all_four_record_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert_eq!(store.counts().await.unwrap(), Counts::default());
    assert_eq!(
        store.load_caller("1001").await.unwrap(),
        CallerData::default()
    );
    assert!(store.callers().await.unwrap().is_empty());

    // Out of order, across two calls at the same millisecond, to check the sort.
    let turns = vec![
        turn("1001", "c2", 0, 5_000, "second call"),
        turn("1001", "c1", 1, 1_100, "I live in Berlin"),
        turn("1001", "c1", 0, 1_000, "hello"),
        turn("1001", "c0", 7, 5_000, "same ms, earlier call id"),
    ];
    let mut superseded = fact("1001", "home", "Hamburg", 900, true);
    superseded.superseded_by = Some("home@1100".into());
    let unembedded = fact("1001", "pet", "a cat called Mo", 1_200, false);
    let facts = vec![
        fact("1001", "home", "Berlin", 1_100, true),
        unembedded.clone(),
        superseded.clone(),
    ];
    let episodes = vec![
        episode("1001", "c2", 0, 0, "a second call"),
        episode("1001", "c1", 0, 1, "lives in Berlin"),
    ];
    let m = model("1001", 3);
    store
        .write(WriteBatch {
            caller: "1001".into(),
            turns: turns.clone(),
            episodes: episodes.clone(),
            facts: facts.clone(),
            model: Some(m.clone()),
            ..Default::default()
        })
        .await
        .unwrap();

    // Each table got its caller index with its first rows.
    for table in ["turns", "episodes", "facts", "callers"] {
        let indices = dir
            .path()
            .join("memory")
            .join(format!("{table}.lance/_indices"));
        let n = std::fs::read_dir(&indices).map_or(0, |d| d.count());
        assert!(n > 0, "no index under {}", indices.display());
    }

    let data = store.load_caller("1001").await.unwrap();
    assert_eq!(
        data.turns,
        vec![
            turns[2].clone(),
            turns[1].clone(),
            turns[3].clone(),
            turns[0].clone()
        ]
    );
    assert_eq!(data.turns[0].embedding.len(), DIM);
    assert_eq!(
        data.episodes,
        vec![episodes[1].clone(), episodes[0].clone()]
    );
    assert_eq!(
        data.facts,
        vec![superseded, facts[0].clone(), unembedded.clone()]
    );
    assert!(
        data.facts[2].embedding.is_empty(),
        "an unembedded fact reads back empty"
    );
    assert_eq!(data.model, Some(m));

    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            turns: 4,
            episodes: 2,
            facts: 3,
            callers: 1
        }
    );
    assert_eq!(
        store.callers().await.unwrap(),
        vec![("1001".to_string(), 4)]
    );
    assert_eq!(
        store.load_caller("1002").await.unwrap(),
        CallerData::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_replaces_the_row_with_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.write(everything("1001", "Berlin")).await.unwrap();

    let mut t = turn("1001", "c1", 1, 1_100, "I moved to Paris");
    t.access_count = 42;
    t.strength = 2.5;
    let mut e = episode("1001", "c1", 0, 1, "moved to Paris");
    e.end_ms = 9_999;
    let mut f = fact("1001", "home", "Berlin", 1_100, false);
    f.superseded_by = Some("home@2000".into());
    store
        .write(WriteBatch {
            caller: "1001".into(),
            // The same id twice in one batch: the last one wins.
            turns: vec![turn("1001", "c1", 1, 1_100, "overwritten"), t.clone()],
            episodes: vec![e.clone()],
            facts: vec![f.clone()],
            model: Some(model("1001", 2)),
            ..Default::default()
        })
        .await
        .unwrap();

    let data = store.load_caller("1001").await.unwrap();
    assert_eq!(texts(&data), vec!["hello Berlin", "I moved to Paris"]);
    assert_eq!(data.turns[1], t);
    assert_eq!(data.episodes, vec![e]);
    assert_eq!(data.facts, vec![f]);
    assert_eq!(data.model.unwrap().calls, 2);
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            turns: 2,
            episodes: 1,
            facts: 1,
            callers: 1
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_remove_only_the_named_ids_of_that_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Both callers have records with the same ids.
    store.write(everything("1001", "Berlin")).await.unwrap();
    store.write(everything("1002", "Rome")).await.unwrap();
    store
        .write(WriteBatch {
            caller: "1001".into(),
            delete_turns: vec!["c1/0".into(), "no/such".into()],
            delete_episodes: vec!["c1#0".into()],
            delete_facts: vec!["home@1100".into()],
            ..Default::default()
        })
        .await
        .unwrap();

    let a = store.load_caller("1001").await.unwrap();
    assert_eq!(texts(&a), vec!["I live in Berlin"]);
    assert!(a.episodes.is_empty());
    assert!(a.facts.is_empty());
    assert!(a.model.is_some());
    let b = store.load_caller("1002").await.unwrap();
    assert_eq!(texts(&b), vec!["hello Rome", "I live in Rome"]);
    assert_eq!(b.episodes.len(), 1);
    assert_eq!(b.facts.len(), 1);

    // Upserts and deletes in one batch (one commit per table).
    store
        .write(WriteBatch {
            caller: "1002".into(),
            turns: vec![turn("1002", "c1", 2, 1_200, "and I like pasta")],
            facts: vec![fact("1002", "likes", "pasta", 1_200, true)],
            delete_turns: vec!["c1/1".into()],
            delete_facts: vec!["home@1100".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let b = store.load_caller("1002").await.unwrap();
    assert_eq!(texts(&b), vec!["hello Rome", "and I like pasta"]);
    assert_eq!(
        b.facts.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
        vec!["likes@1200"]
    );
    let a = store.load_caller("1001").await.unwrap();
    assert_eq!(texts(&a), vec!["I live in Berlin"]);
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            turns: 3,
            episodes: 1,
            facts: 1,
            callers: 2
        }
    );
}

const CRAFTED: &[&str] = &[
    "x' OR '1'='1",
    "1000' --",
    "%",
    "_",
    r"a\b",
    r"\",
    "'",
    "1000",
    "x",
    "Zoë 📞 電話",
    "\"caller\"",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_callers_stay_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for (i, caller) in CRAFTED.iter().enumerate() {
        store
            .write(everything(caller, &format!("town{i}")))
            .await
            .unwrap();
    }
    for (i, caller) in CRAFTED.iter().enumerate() {
        let data = store.load_caller(caller).await.unwrap();
        let tag = format!("town{i}");
        assert_eq!(
            texts(&data),
            vec![format!("hello {tag}"), format!("I live in {tag}")],
            "caller {caller:?}"
        );
        assert_eq!(data.episodes.len(), 1, "caller {caller:?}");
        assert_eq!(data.facts.len(), 1, "caller {caller:?}");
        assert_eq!(data.facts[0].value, tag);
        assert_eq!(data.model.as_ref().unwrap().caller, *caller);
    }
    let mut expected: Vec<(String, usize)> = CRAFTED.iter().map(|c| (c.to_string(), 2)).collect();
    expected.sort();
    assert_eq!(store.callers().await.unwrap(), expected);

    // Deleting by id for a crafted caller touches only that caller.
    store
        .write(WriteBatch {
            caller: "x' OR '1'='1".into(),
            delete_turns: vec!["c1/0".into(), "c1/0' OR '1'='1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(store.counts().await.unwrap().turns, 2 * CRAFTED.len() - 1);

    // Forgetting crafted callers leaves everyone else intact.
    let n = CRAFTED.len();
    for (k, forgotten) in ["x' OR '1'='1", "%", "1000' --", r"\"].iter().enumerate() {
        let report = store.forget_caller(forgotten).await.unwrap();
        let expected_turns = if k == 0 { 1 } else { 2 };
        assert_eq!(
            report,
            ForgetReport {
                turns: expected_turns,
                episodes: 1,
                facts: 1,
                callers: 1
            },
            "forgetting {forgotten:?}"
        );
        assert_eq!(
            store.load_caller(forgotten).await.unwrap(),
            CallerData::default()
        );
        let left = n - k - 1;
        assert_eq!(
            store.counts().await.unwrap(),
            Counts {
                turns: 2 * left,
                episodes: left,
                facts: left,
                callers: left
            },
            "after forgetting {forgotten:?}"
        );
    }
    for caller in ["_", "1000", "x", r"a\b", "'", "Zoë 📞 電話"] {
        assert_eq!(
            store.load_caller(caller).await.unwrap().turns.len(),
            2,
            "{caller:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_control_characters_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    for bad in ["a\0b", "1000\n", "\u{1b}[2J", ""] {
        assert!(store.load_caller(bad).await.is_err(), "load {bad:?}");
        assert!(store.forget_caller(bad).await.is_err(), "forget {bad:?}");
        assert!(
            store.write(everything(bad, "x")).await.is_err(),
            "write {bad:?}"
        );
        let mut batch = everything("1001", "x");
        batch.turns[0].id = bad.into();
        assert!(store.write(batch).await.is_err(), "turn id {bad:?}");
        let batch = WriteBatch {
            caller: "1001".into(),
            delete_facts: vec![bad.into()],
            ..Default::default()
        };
        assert!(store.write(batch).await.is_err(), "delete id {bad:?}");
    }
    assert_eq!(store.counts().await.unwrap(), Counts::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_rejects_records_of_another_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut kinds = Vec::new();
    let mut b = everything("1001", "Berlin");
    b.turns.push(turn("1002", "c9", 0, 1, "not yours"));
    kinds.push(("turn", b));
    let mut b = everything("1001", "Berlin");
    b.episodes.push(episode("1002", "c9", 0, 0, "not yours"));
    kinds.push(("episode", b));
    let mut b = everything("1001", "Berlin");
    b.facts.push(fact("1002", "home", "Rome", 1, true));
    kinds.push(("fact", b));
    let mut b = everything("1001", "Berlin");
    b.model = Some(model("1002", 1));
    kinds.push(("model", b));
    let mut b = everything("1001", "Berlin");
    b.turns[0].embedding.pop();
    kinds.push(("short embedding", b));
    for (kind, batch) in kinds {
        let err = store.write(batch).await;
        assert!(err.is_err(), "a foreign {kind} was accepted");
        // Nothing of the batch was written, not even the caller's own records.
        assert_eq!(store.counts().await.unwrap(), Counts::default(), "{kind}");
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_caller_leaves_no_trace_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let secret = "zanzibar-unique-marker";
    let victim = "zanzibar-caller-4711";
    store.write(everything("keeper", "Oslo")).await.unwrap();
    // Many rows of another caller, so that after the optimize below the victim's rows are
    // a small share (under Lance's default 10% threshold) of one compacted fragment.
    let crowd: Vec<Turn> = (0..60)
        .map(|i| turn("crowd", "c7", i, 100 + i as i64, &format!("crowd line {i}")))
        .collect();
    store
        .write(WriteBatch {
            caller: "crowd".into(),
            turns: crowd,
            ..Default::default()
        })
        .await
        .unwrap();
    store.write(everything(victim, secret)).await.unwrap();
    // Several versions: an upsert, a delete, optimizes (so the caller index covers the
    // rows), then more writes after them.
    let mut again = everything(victim, secret);
    again.turns.push(turn(victim, "c2", 0, 9_000, secret));
    store.write(again).await.unwrap();
    store
        .write(WriteBatch {
            caller: victim.into(),
            delete_turns: vec!["c1/0".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Compaction never merges indexed with unindexed fragments: the first optimize indexes
    // the victim's fragments, the second merges them with the crowd's into one fragment,
    // where the victim's rows are too few for Lance's default deletion threshold.
    store.optimize(Duration::from_secs(3600)).await.unwrap();
    store.optimize(Duration::ZERO).await.unwrap();
    store.write(everything("keeper2", "Lima")).await.unwrap();
    store
        .write(WriteBatch {
            caller: victim.into(),
            facts: vec![fact(victim, "plan", secret, 9_500, false)],
            ..Default::default()
        })
        .await
        .unwrap();

    // The data is on disk in the clear before forgetting (else the check below is empty).
    assert!(!files_containing(dir.path(), secret.as_bytes()).is_empty());
    assert!(!files_containing(dir.path(), victim.as_bytes()).is_empty());

    let report = store.forget_caller(victim).await.unwrap();
    assert_eq!(
        report,
        ForgetReport {
            turns: 2,
            episodes: 1,
            facts: 2,
            callers: 1
        }
    );
    assert_eq!(
        files_containing(dir.path(), secret.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        files_containing(dir.path(), victim.as_bytes()),
        Vec::<String>::new()
    );

    assert_eq!(
        store.load_caller(victim).await.unwrap(),
        CallerData::default()
    );
    for (caller, town) in [("keeper", "Oslo"), ("keeper2", "Lima")] {
        let data = store.load_caller(caller).await.unwrap();
        assert_eq!(
            texts(&data),
            vec![format!("hello {town}"), format!("I live in {town}")]
        );
        assert_eq!(data.facts.len(), 1);
        assert!(data.model.is_some());
    }
    assert_eq!(store.load_caller("crowd").await.unwrap().turns.len(), 60);
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            turns: 64,
            episodes: 2,
            facts: 2,
            callers: 2
        }
    );
    // The store keeps working after the rewrite.
    store.write(everything("keeper3", "Quito")).await.unwrap();
    assert_eq!(store.load_caller("keeper3").await.unwrap().turns.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_returns_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let store = open(dir.path()).await;
        store.write(everything("1001", "Berlin")).await.unwrap();
        store.write(everything("1002", "Rome")).await.unwrap();
        store
            .write(WriteBatch {
                caller: "1001".into(),
                turns: vec![turn("1001", "c2", 0, 7_000, "back again")],
                delete_episodes: vec!["c1#0".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        store.optimize(Duration::ZERO).await.unwrap();
        (
            store.load_caller("1001").await.unwrap(),
            store.load_caller("1002").await.unwrap(),
        )
    };
    assert_eq!(a.turns.len(), 3);
    assert!(a.episodes.is_empty());

    let store = open(dir.path()).await;
    assert_eq!(store.load_caller("1001").await.unwrap(), a);
    assert_eq!(store.load_caller("1002").await.unwrap(), b);
    assert_eq!(
        store.callers().await.unwrap(),
        vec![("1001".to_string(), 3), ("1002".to_string(), 2)]
    );
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            turns: 5,
            episodes: 1,
            facts: 2,
            callers: 2
        }
    );
    // And it takes writes after the reopen.
    store
        .write(WriteBatch {
            caller: "1002".into(),
            delete_turns: vec!["c1/0".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        texts(&store.load_caller("1002").await.unwrap()),
        vec!["I live in Rome"]
    );
}
