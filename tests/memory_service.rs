//! The memory service (`MemoryService`, the agent's `sofia_voice::Memory`) on a real
//! LanceDB store in a temporary directory with the real MiniLM model: recall by meaning
//! across calls, persistence across a reopen, isolation between callers (injection-shaped
//! ids included), replay of the journal after a crash, interference between facts,
//! retention, merging of repeats, and the per-caller cache.

use std::path::{Path, PathBuf};

use sofia_phone::memory::service::{MemoryConfig, MemoryService};
use sofia_phone::memory::store::CallerData;
use sofia_phone::voice::VoiceModels;
use sofia_voice::{Memory, Recollection, Role, TurnRecord};

const DAY_MS: i64 = 86_400_000;

/// The MiniLM directory under the built-in profile's models directory (`models fetch`).
fn minilm_dir() -> PathBuf {
    let models_dir =
        sofia_phone::config::load(None, &sofia_phone::config::ProcessEnv, &Default::default())
            .expect("the built-in profile loads")
            .models_dir;
    VoiceModels::under(&models_dir).minilm_dir
}

fn open(dir: &Path) -> MemoryService {
    open_with(dir, MemoryConfig::default())
}

fn open_with(dir: &Path, config: MemoryConfig) -> MemoryService {
    MemoryService::open(dir, &minilm_dir(), config).unwrap_or_else(|e| panic!("{e:#}"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One call: `turns` said one second apart from `start_ms`, then the call is closed.
fn call(m: &MemoryService, caller: &str, call_id: &str, start_ms: i64, turns: &[(Role, &str)]) {
    say(m, caller, call_id, start_ms, turns);
    m.close_call(caller, call_id).unwrap();
}

/// Turns of a call that is not closed.
fn say(m: &MemoryService, caller: &str, call_id: &str, start_ms: i64, turns: &[(Role, &str)]) {
    for (i, (role, text)) in turns.iter().enumerate() {
        m.remember(&TurnRecord {
            caller: caller.into(),
            call_id: call_id.into(),
            unix_ms: start_ms + i as i64 * 1_000,
            role: *role,
            text: (*text).into(),
        })
        .unwrap();
    }
}

fn load(m: &MemoryService, caller: &str) -> CallerData {
    m.block_on(m.store().load_caller(caller)).unwrap()
}

fn texts(r: &Recollection) -> Vec<&str> {
    r.turns.iter().map(|t| t.text.as_str()).collect()
}

fn journal_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

const PLUMBER: &str = "The plumber is coming on Thursday to fix the kitchen sink.";
const PARIS_TRIP: &str = "I am planning a trip to Paris next month to see the museums.";

/// Call 1 (a week ago): the plumber and the caller's name; call 2 (yesterday), the
/// latest: a trip.
fn seed_plumber_and_trip(m: &MemoryService, caller: &str, now: i64) {
    call(
        m,
        caller,
        "call-1",
        now - 7 * DAY_MS,
        &[
            (Role::Agent, "Hello, how can I help you today?"),
            (Role::Caller, PLUMBER),
            (Role::Agent, "All right, I have noted that."),
            (Role::Caller, "My name is Daniel."),
        ],
    );
    call(
        m,
        caller,
        "call-2",
        now - DAY_MS,
        &[
            (Role::Agent, "Hello again, what can I do for you?"),
            (Role::Caller, PARIS_TRIP),
            (
                Role::Caller,
                "I would like to visit the Louvre and the Orsay.",
            ),
        ],
    );
    m.flush();
}

/// What a later call gets from the seeded memory: the plumber turn for leaking pipes,
/// the name, and a topic of the latest call.
fn assert_plumber_recalled(m: &MemoryService, caller: &str, now: i64) {
    let r = m.recall(caller, "my pipes are leaking", now).unwrap();
    assert_eq!(
        r.turns.first().map(|t| t.text.as_str()),
        Some(PLUMBER),
        "recalled {:?}",
        texts(&r)
    );
    assert_eq!(r.turns[0].role, Role::Caller);
    assert_eq!(r.turns[0].call_id, "call-1");

    let opened = m.open_call(caller, "call-3", now).unwrap();
    assert_eq!(opened.name.as_deref(), Some("Daniel"), "{opened:?}");
    let topic = opened.last_topic.as_ref().expect("a topic to greet with");
    assert!(
        topic.text.contains("Paris") || topic.text.contains("Louvre"),
        "the greeting's topic is not from the latest call: {topic:?}"
    );
    assert!(!topic.text.contains("plumber"), "{topic:?}");
    m.close_call(caller, "call-3").unwrap();
    m.flush();
}

#[test]
fn a_detail_of_an_earlier_call_is_recalled_by_meaning_in_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    let now = now_ms();
    seed_plumber_and_trip(&m, "1000", now);
    // Written through: the store holds both calls' turns, and no journal is left.
    assert_eq!(load(&m, "1000").turns.len(), 7);
    assert!(journal_files(dir.path()).is_empty());
    assert_plumber_recalled(&m, "1000", now);
}

#[test]
fn memory_persists_when_the_service_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    {
        let m = open(dir.path());
        seed_plumber_and_trip(&m, "1000", now);
    }
    let m = open(dir.path());
    assert_plumber_recalled(&m, "1000", now);
    drop(m);
    // And once more, after a call that added nothing.
    let m = open(dir.path());
    assert_plumber_recalled(&m, "1000", now);
    assert_eq!(load(&m, "1000").turns.len(), 7);
}

/// Callers with ids shaped like SQL injections, LIKE wildcards, a backslash and
/// non-ASCII text, each with a sentence no other caller said.
const CALLERS: [(&str, &str); 8] = [
    (
        "alice",
        "My cat Whiskers only eats sardines from the harbour.",
    ),
    ("bob", "The boiler in my basement broke down last night."),
    (
        "x' OR '1'='1",
        "I collect antique pocket watches from Switzerland.",
    ),
    (
        "1000' --",
        "My daughter plays the violin in the school orchestra.",
    ),
    ("%", "I grow tomatoes and peppers in my greenhouse."),
    ("_", "My car needs four new winter tyres before December."),
    (
        "a\\b",
        "I am learning to speak Japanese with an online tutor.",
    ),
    (
        "ünïcödé-日本語",
        "I go sailing on the lake every Sunday morning.",
    ),
];

/// Every caller's recall, whatever it asks (another caller's sentence word for word
/// included), returns only that caller's own turns; so does the store.
fn assert_isolated(m: &MemoryService, now: i64) {
    for (caller, own) in CALLERS {
        let data = load(m, caller);
        assert!(
            !data.turns.is_empty() && data.turns.iter().all(|t| t.text == own),
            "{caller:?} holds {:?}",
            data.turns.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        assert_eq!(
            data.turns.len(),
            1,
            "{caller:?}: {:?}",
            data.turns.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        for (other, query) in CALLERS {
            let r = m.recall(caller, query, now).unwrap();
            assert!(
                r.turns.iter().all(|t| t.text == own),
                "{caller:?} asking {other:?}'s words got {:?}",
                texts(&r)
            );
            if other == caller {
                assert_eq!(texts(&r), [own], "{caller:?} asking its own words");
            }
            for f in &r.facts {
                assert!(
                    CALLERS
                        .iter()
                        .filter(|(c, _)| *c != caller)
                        .all(|(_, s)| !s.contains(&f.value)),
                    "{caller:?} got another caller's fact {f:?}"
                );
            }
        }
    }
}

#[test]
fn each_caller_recalls_only_their_own_turns_whatever_their_id() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    let now = now_ms();
    // The same Call-ID for everyone: nothing may be keyed on it alone.
    for (i, (caller, text)) in CALLERS.iter().enumerate() {
        say(
            &m,
            caller,
            "shared-call-id",
            now - DAY_MS + i as i64,
            &[(Role::Caller, text)],
        );
    }
    for (caller, _) in CALLERS {
        m.close_call(caller, "shared-call-id").unwrap();
    }
    m.flush();
    assert_isolated(&m, now);
    drop(m);
    let m = open(dir.path());
    assert_isolated(&m, now);
}

#[test]
fn a_crash_loses_no_callers_turns_whatever_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let m = open(dir.path());
    for (i, (caller, text)) in CALLERS.iter().enumerate() {
        say(
            &m,
            caller,
            "shared-call-id",
            now - DAY_MS + i as i64,
            &[(Role::Caller, text)],
        );
    }
    // Every turn is journaled (flush waits for the writer; it closes nothing) ...
    m.flush();
    for (caller, _) in CALLERS {
        assert!(load(&m, caller).turns.is_empty(), "{caller:?}");
    }
    // ... then the process dies: no close, no drop.
    std::mem::forget(m);
    let m = open(dir.path());
    assert_isolated(&m, now);
    assert!(
        journal_files(dir.path()).is_empty(),
        "{:?}",
        journal_files(dir.path())
    );
}

#[test]
fn a_crash_mid_call_loses_no_journaled_turn_and_replays_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let said = [
        (Role::Agent, "Hello, how can I help you today?"),
        (
            Role::Caller,
            "My bicycle has a flat tyre and I need it for Saturday.",
        ),
        (Role::Agent, "I can book a repair for Friday."),
    ];
    let m = open(dir.path());
    say(&m, "1000", "crashed-call", now - 60_000, &said);
    // The writer has journaled every turn; none is in the store yet (the call was not
    // closed, so nothing but the journal holds them).
    m.flush();
    assert!(load(&m, "1000").turns.is_empty());
    assert_eq!(journal_files(dir.path()).len(), 1);
    // A plain drop would not lose anything either (the writer drains its queue), but
    // it would keep running in the background; a crash is: the service just stops.
    std::mem::forget(m);

    let exactly_once = |m: &MemoryService| {
        let data = load(m, "1000");
        let got: Vec<&str> = data.turns.iter().map(|t| t.text.as_str()).collect();
        let want: Vec<&str> = said.iter().map(|(_, t)| *t).collect();
        assert_eq!(got, want);
        assert!(data.turns.iter().all(|t| t.call_id == "crashed-call"));
        // The replayed call was closed: segmented into episodes.
        assert!(data.turns.iter().all(|t| !t.episode_id.is_empty()));
        assert!(!data.episodes.is_empty());
    };
    let m = open(dir.path());
    exactly_once(&m);
    assert!(journal_files(dir.path()).is_empty());
    let r = m.recall("1000", "my bike is broken", now).unwrap();
    assert!(
        r.turns
            .first()
            .is_some_and(|t| t.text.contains("flat tyre")),
        "{:?}",
        texts(&r)
    );
    m.flush();
    drop(m);

    let m = open(dir.path());
    exactly_once(&m);
    assert!(journal_files(dir.path()).is_empty());
    let stored = load(&m, "1000");
    // A crash between the store write and the removal of the journal: its lines are
    // already stored, and replaying them adds nothing.
    say(&m, "1000", "crashed-call", now - 60_000, &said[..1]);
    m.flush();
    std::mem::forget(m);
    let m = open(dir.path());
    exactly_once(&m);
    assert!(journal_files(dir.path()).is_empty());
    // Not observed again either (a repeat would have strengthened the stored turn).
    let again = load(&m, "1000");
    let state = |d: &CallerData| -> Vec<(String, f32, u32)> {
        d.turns
            .iter()
            .map(|t| (t.id.clone(), t.strength, t.access_count))
            .collect()
    };
    assert_eq!(state(&again), state(&stored));
}

#[test]
fn a_newer_fact_supersedes_an_older_one_and_the_old_one_is_kept_for_history() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    let now = now_ms();
    call(
        &m,
        "1000",
        "c1",
        now - 20 * DAY_MS,
        &[(Role::Caller, "I live in Paris.")],
    );
    m.flush();
    call(
        &m,
        "1000",
        "c2",
        now - 2 * DAY_MS,
        &[(Role::Caller, "I moved to Berlin.")],
    );
    m.flush();

    let check = |m: &MemoryService| {
        let r = m.recall("1000", "where do I live?", now).unwrap();
        let first = r.facts.first().unwrap_or_else(|| panic!("no fact: {r:?}"));
        assert_eq!(
            (first.slot.as_str(), first.value.as_str(), first.superseded),
            ("home", "Berlin", false),
            "{:?}",
            r.facts
        );
        assert!(
            r.facts.iter().all(|f| !f.value.contains("Paris")),
            "the old home is offered for the present: {:?}",
            r.facts
        );
        let before = m.recall("1000", "where did I live before?", now).unwrap();
        let paris: Vec<_> = before
            .facts
            .iter()
            .filter(|f| f.value.contains("Paris"))
            .collect();
        assert!(!paris.is_empty(), "{:?}", before.facts);
        assert!(paris.iter().all(|f| f.superseded), "{:?}", before.facts);

        let opened = m.open_call("1000", "c3", now).unwrap();
        assert!(
            opened
                .facts
                .iter()
                .any(|f| f.value == "Berlin" && !f.superseded),
            "{:?}",
            opened.facts
        );
        assert!(
            opened.facts.iter().all(|f| !f.value.contains("Paris")),
            "{:?}",
            opened.facts
        );
        m.close_call("1000", "c3").unwrap();
        m.flush();

        let data = load(m, "1000");
        let homes: Vec<_> = data.facts.iter().filter(|f| f.slot == "home").collect();
        assert_eq!(homes.len(), 2, "{homes:?}");
        let berlin = homes.iter().find(|f| f.value == "Berlin").expect("Berlin");
        let paris = homes.iter().find(|f| f.value == "Paris").expect("Paris");
        assert_eq!(berlin.superseded_by, None);
        assert_eq!(paris.superseded_by.as_deref(), Some(berlin.id.as_str()));
    };
    check(&m);
    drop(m);
    check(&open(dir.path()));
}

#[test]
fn turns_older_than_the_retention_period_are_deleted_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = MemoryConfig::default();
    config.forget.retention_days = Some(30);
    let m = open_with(dir.path(), config.clone());
    let now = now_ms();
    let old = [
        (Role::Caller, "I bought a red bicycle at the flea market."),
        (Role::Agent, "That sounds like a good find."),
        (Role::Caller, "My name is Olga."),
    ];
    let new = [
        (
            Role::Caller,
            "I need to renew my passport before the summer.",
        ),
        (Role::Agent, "I will remind you next week."),
    ];
    call(&m, "1000", "old-call", now - 60 * DAY_MS, &old);
    call(&m, "1000", "new-call", now - 60_000, &new);
    m.flush();

    let check = |m: &MemoryService| {
        let data = load(m, "1000");
        let got: Vec<&str> = data.turns.iter().map(|t| t.text.as_str()).collect();
        let want: Vec<&str> = new.iter().map(|(_, t)| *t).collect();
        assert_eq!(got, want, "the store keeps turns past retention");
        assert!(
            data.episodes.iter().all(|e| e.call_id == "new-call"),
            "{:?}",
            data.episodes
        );
        assert!(
            data.facts.iter().all(|f| f.value != "Olga"),
            "a fact past retention is kept: {:?}",
            data.facts
        );
        let r = m.recall("1000", "red bicycle flea market", now).unwrap();
        assert!(
            r.turns.iter().all(|t| !t.text.contains("bicycle")),
            "{:?}",
            texts(&r)
        );
        assert_eq!(m.open_call("1000", "probe", now).unwrap().name, None);
        m.close_call("1000", "probe").unwrap();
        m.flush();
    };
    check(&m);
    drop(m);
    check(&open_with(dir.path(), config));
}

#[test]
fn a_sentence_repeated_in_three_calls_is_stored_once_and_strengthened() {
    let dir = tempfile::tempdir().unwrap();
    let m = open(dir.path());
    let now = now_ms();
    let repeated = "I have a golden retriever called Max.";
    let others = [
        "The weather has been awful all week.",
        "I start a new job at the bakery on Monday.",
        "My sister is visiting from Canada soon.",
    ];
    let count = |data: &CallerData| data.turns.iter().filter(|t| t.text == repeated).count();
    let mut first_strength = None;
    for (i, other) in others.iter().enumerate() {
        call(
            &m,
            "1000",
            &format!("c{i}"),
            now - (10 - 3 * i as i64) * DAY_MS,
            &[(Role::Caller, repeated), (Role::Caller, other)],
        );
        m.flush();
        let data = load(&m, "1000");
        assert_eq!(count(&data), 1, "after call {i}");
        if i == 0 {
            first_strength = Some(data.turns[0].strength);
        }
    }
    let check = |data: &CallerData| {
        assert_eq!(count(data), 1);
        assert_eq!(data.turns.len(), 4, "{:?}", data.turns);
        let t = data.turns.iter().find(|t| t.text == repeated).unwrap();
        assert_eq!(t.call_id, "c0");
        assert!(
            t.strength > first_strength.unwrap(),
            "a repeat does not strengthen the stored memory: {} vs {}",
            t.strength,
            first_strength.unwrap()
        );
        assert_eq!(t.access_count, 2, "{t:?}");
    };
    check(&load(&m, "1000"));
    drop(m);
    let m = open(dir.path());
    check(&load(&m, "1000"));
}

#[test]
fn a_cold_caller_is_loaded_on_recall_and_prefetch_caches_a_caller() {
    let dir = tempfile::tempdir().unwrap();
    let now = now_ms();
    let said = [
        ("cold", "My grandmother turns ninety in November."),
        ("prefetched", "I am allergic to peanuts and shellfish."),
        ("control", "The roof of my garage leaks when it rains."),
    ];
    {
        let m = open(dir.path());
        for (caller, text) in said {
            call(&m, caller, "c1", now - DAY_MS, &[(Role::Caller, text)]);
        }
        m.flush();
    }
    let m = open(dir.path());
    // Never loaded by this service: recall loads it from the store.
    let r = m.recall("cold", "a birthday in my family", now).unwrap();
    assert_eq!(texts(&r), [said[0].1]);

    // Prefetch loads the working set: recall answers from it even once the store has
    // lost the rows (deleted behind the service's back); a caller that was not
    // prefetched is read from the store, so it finds nothing.
    m.prefetch("prefetched");
    for (caller, _) in &said[1..] {
        m.block_on(m.store().forget_caller(caller)).unwrap();
        assert!(load(&m, caller).turns.is_empty());
    }
    let r = m.recall("prefetched", "food I cannot eat", now).unwrap();
    assert_eq!(texts(&r), [said[1].1], "prefetch did not cache the caller");
    let r = m
        .recall("control", "water coming through the roof", now)
        .unwrap();
    assert!(r.turns.is_empty(), "{:?}", texts(&r));
    // Unknown callers get an empty recollection, not an error.
    assert!(m.recall("nobody", "anything", now).unwrap().is_empty());
}

/// Writes a store as earlier versions did: `<data>/memory.lance`, table `turns`.
fn write_legacy_store(data: &Path, rows: &[(&str, &str, i64, &str, &str)]) {
    use lancedb::arrow::arrow_array::{Int64Array, RecordBatch, StringArray};
    use lancedb::arrow::arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("caller", DataType::Utf8, false),
        Field::new("call_id", DataType::Utf8, false),
        Field::new("unix_ms", DataType::Int64, false),
        Field::new("role", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let col = |i: usize| -> Vec<&str> {
        rows.iter()
            .map(|r| match i {
                0 => r.0,
                1 => r.1,
                3 => r.3,
                _ => r.4,
            })
            .collect()
    };
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(col(0))),
            Arc::new(StringArray::from(col(1))),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(col(3))),
            Arc::new(StringArray::from(col(4))),
        ],
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path = data.join("memory.lance");
        std::fs::create_dir_all(&path).unwrap();
        let db = lancedb::connect(path.to_str().unwrap())
            .execute()
            .await
            .unwrap();
        let table = db
            .create_empty_table("turns", schema)
            .execute()
            .await
            .unwrap();
        table.add(batch).execute().await.unwrap();
    });
}

#[test]
fn the_flat_log_of_earlier_versions_is_imported_once_on_upgrade() {
    let data = tempfile::tempdir().unwrap();
    let now = now_ms();
    write_legacy_store(
        data.path(),
        &[
            (
                "1000",
                "old-1",
                now - 2 * DAY_MS,
                "agent",
                "Hello! How can I help you today?",
            ),
            ("1000", "old-1", now - 2 * DAY_MS + 1000, "caller", PLUMBER),
            (
                "1000",
                "old-1",
                now - 2 * DAY_MS + 2000,
                "caller",
                "My name is Daniel.",
            ),
            ("2000", "old-2", now - DAY_MS, "caller", PARIS_TRIP),
        ],
    );
    let dir = data.path().join("memory");
    {
        let m = open(&dir);
        // The old log's canned greeting is not carried over.
        assert_eq!(
            load(&m, "1000").turns.len(),
            2,
            "{:?}",
            load(&m, "1000").turns
        );
        assert_eq!(load(&m, "2000").turns.len(), 1);
        let r = m.recall("1000", "my pipes are leaking", now).unwrap();
        assert_eq!(
            r.turns.first().map(|t| t.text.as_str()),
            Some(PLUMBER),
            "{r:?}"
        );
        let opened = m.open_call("1000", "new", now).unwrap();
        assert_eq!(opened.name.as_deref(), Some("Daniel"));
        m.flush();
    }
    assert!(!data.path().join("memory.lance").exists());
    assert!(
        data.path().join("memory.lance.imported").is_dir(),
        "the old store is kept, renamed"
    );
    // Opening again imports nothing twice.
    let m = open(&dir);
    assert_eq!(load(&m, "1000").turns.len(), 2);
}
