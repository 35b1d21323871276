//! `sofia-phone memory ...` on a data dir seeded through the memory service (real
//! LanceDB, real MiniLM): list, show, search with reasons, export as JSON, consolidate,
//! and forget, after which no file under the data dir holds the forgotten caller's
//! words or id; plus the errors of a bad invocation and of missing models.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::sofia;
use sofia_phone::memory::service::{MemoryConfig, MemoryService};
use sofia_phone::voice::VoiceModels;
use sofia_voice::{Memory, Role, TurnRecord};

const DAY_MS: i64 = 86_400_000;

const VICTIM: &str = "victim-caller-4711";
const VICTIM_MARKER: &str = "zanzibar-unique-marker";
const OTHER: &str = "keeper-caller-2002";
const OTHER_MARKER: &str = "kilimanjaro-keep-marker";

const VICTIM_CALLS: [&[(Role, &str)]; 2] = [
    &[
        (Role::Agent, "Hello, how can I help you today?"),
        (Role::Caller, "My name is Zoltan."),
        (
            Role::Caller,
            "The plumber is coming on Thursday to fix the kitchen sink.",
        ),
    ],
    &[
        (Role::Caller, "I live in Lisbon."),
        (
            Role::Caller,
            "My locker code word is zanzibar-unique-marker, please keep it safe.",
        ),
        (Role::Agent, "I will remember your code word."),
    ],
];

const OTHER_CALLS: [&[(Role, &str)]; 1] = [&[
    (Role::Caller, "My name is Greta."),
    (
        Role::Caller,
        "My hiking club calls itself kilimanjaro-keep-marker on the forum.",
    ),
    (
        Role::Caller,
        "The boiler in my basement broke down last night.",
    ),
]];

fn models_dir() -> PathBuf {
    sofia_phone::config::load(None, &sofia_phone::config::ProcessEnv, &Default::default())
        .expect("the built-in profile loads")
        .models_dir
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A data dir whose memory (`<data>/memory`) holds the victim's two calls and the other
/// caller's one, written, closed and flushed, the service gone.
fn seeded() -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    let m = MemoryService::open(
        &data.path().join("memory"),
        &VoiceModels::under(&models_dir()).minilm_dir,
        MemoryConfig::default(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let now = now_ms();
    let seed = |caller: &str, calls: &[&[(Role, &str)]]| {
        for (c, turns) in calls.iter().enumerate() {
            let call_id = format!("{caller}-call-{c}");
            let start = now - (5 - c as i64) * DAY_MS;
            for (i, (role, text)) in turns.iter().enumerate() {
                m.remember(&TurnRecord {
                    caller: caller.into(),
                    call_id: call_id.clone(),
                    unix_ms: start + i as i64 * 1_000,
                    role: *role,
                    text: (*text).into(),
                })
                .unwrap();
            }
            m.close_call(caller, &call_id).unwrap();
        }
    };
    seed(VICTIM, &VICTIM_CALLS);
    seed(OTHER, &OTHER_CALLS);
    m.flush();
    drop(m);
    data
}

fn memory_with(data: &Path, models: &Path, args: &[&str]) -> Output {
    sofia()
        .arg("memory")
        .args(args)
        .arg("--config")
        .arg("sip-profiles/default.toml")
        .arg("--data-dir")
        .arg(data)
        .env("SOFIA_MODELS_DIR", models)
        .output()
        .expect("the binary runs")
}

/// A memory command that must succeed; its stdout.
fn memory(data: &Path, args: &[&str]) -> String {
    let out = memory_with(data, &models_dir(), args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "memory {args:?} exited {:?}: {stdout}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path);
                }
            }
        }
    }
    found
}

fn listed(list: &str, caller: &str) -> bool {
    list.lines()
        .any(|l| l.split_whitespace().next() == Some(caller))
}

fn has_key(v: &serde_json::Value, key: &str) -> bool {
    match v {
        serde_json::Value::Object(o) => o.contains_key(key) || o.values().any(|v| has_key(v, key)),
        serde_json::Value::Array(a) => a.iter().any(|v| has_key(v, key)),
        _ => false,
    }
}

#[test]
fn list_show_search_export_and_consolidate_show_what_is_remembered() {
    let data = seeded();

    let list = memory(data.path(), &["list"]);
    assert!(listed(&list, VICTIM), "{list}");
    assert!(listed(&list, OTHER), "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(VICTIM) && l.contains("6 turns")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with(OTHER) && l.contains("3 turns")),
        "{list}"
    );

    let show = memory(data.path(), &["show", VICTIM]);
    assert!(
        show.contains(&format!("caller {VICTIM}: 6 turns")),
        "{show}"
    );
    assert!(show.contains(VICTIM_MARKER), "{show}");
    assert!(show.contains("kitchen sink"), "{show}");
    assert!(
        show.lines()
            .any(|l| l.starts_with("fact") && l.contains("Zoltan") && l.contains("in force")),
        "{show}"
    );
    assert!(
        !show.contains(OTHER_MARKER) && !show.contains("Greta"),
        "{show}"
    );

    let found = memory(data.path(), &["search", VICTIM, "my pipes are leaking"]);
    let first = found
        .lines()
        .find(|l| l.starts_with("turn"))
        .unwrap_or_else(|| panic!("no turn found: {found}"));
    assert!(first.contains("plumber"), "{found}");
    // Each turn line has a score, and the next line says why.
    let score: f32 = first.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(score > 0.0, "{first}");
    let lines: Vec<&str> = found.lines().collect();
    for (i, l) in lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("turn"))
    {
        let why = lines.get(i + 1).copied().unwrap_or_default();
        assert!(
            why.trim_start().starts_with("why: bm25") && why.contains("vector"),
            "{l} has no reasons: {found}"
        );
    }
    // Asking with the other caller's words finds nothing of theirs.
    let asked = memory(
        data.path(),
        &["search", VICTIM, "hiking club kilimanjaro-keep-marker"],
    );
    for theirs in [OTHER_MARKER, "hiking", "Greta", "boiler"] {
        assert!(!asked.contains(theirs), "{theirs}: {asked}");
    }

    let export = memory(data.path(), &["export", VICTIM]);
    let json: serde_json::Value =
        serde_json::from_str(&export).unwrap_or_else(|e| panic!("{e}: {export}"));
    assert_eq!(json["caller"], VICTIM);
    let turns = json["turns"].as_array().expect("turns");
    assert_eq!(turns.len(), 6, "{export}");
    assert!(turns
        .iter()
        .any(|t| t["text"].as_str().unwrap().contains(VICTIM_MARKER)));
    assert!(turns.iter().all(|t| t["caller"] == VICTIM), "{export}");
    assert!(!json["episodes"].as_array().expect("episodes").is_empty());
    assert!(json["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .any(|f| f["value"] == "Zoltan"));
    assert!(!has_key(&json, "embedding"), "embeddings exported");
    assert!(
        !export.contains(OTHER_MARKER) && !export.contains(OTHER),
        "{export}"
    );
    assert!(!export.contains("Greta") && !export.contains("boiler"));

    // Consolidating again from every stored call changes nothing that was right: the
    // same facts, none duplicated.
    let facts = |show: &str| -> Vec<String> {
        let mut f: Vec<String> = show
            .lines()
            .filter(|l| l.starts_with("fact"))
            .map(String::from)
            .collect();
        f.sort();
        f
    };
    let before = facts(&show);
    let out = memory(data.path(), &["consolidate"]);
    assert!(out.starts_with("consolidated: "), "{out}");
    let after = memory(data.path(), &["show", VICTIM]);
    assert_eq!(facts(&after), before, "{after}");
    assert!(
        after.contains(&format!("caller {VICTIM}: 6 turns")),
        "{after}"
    );
    let other = memory(data.path(), &["show", OTHER]);
    assert!(
        other.contains("Greta") && other.contains(OTHER_MARKER),
        "{other}"
    );
}

#[test]
fn forget_leaves_no_byte_of_the_caller_under_the_data_dir() {
    let data = seeded();
    // In the clear on disk before (else the checks below prove nothing).
    for needle in [VICTIM_MARKER, VICTIM, OTHER_MARKER] {
        assert!(
            !files_containing(data.path(), needle).is_empty(),
            "{needle} is not on disk"
        );
    }
    let out = memory(data.path(), &["forget", VICTIM]);
    assert!(
        out.starts_with(&format!("forgot {VICTIM}: 6 turns")),
        "{out}"
    );
    for needle in [VICTIM_MARKER, VICTIM, "Zoltan"] {
        assert_eq!(
            files_containing(data.path(), needle),
            Vec::<PathBuf>::new(),
            "{needle} is still on disk"
        );
    }
    assert!(!files_containing(data.path(), OTHER_MARKER).is_empty());
    assert!(!files_containing(data.path(), OTHER).is_empty());

    let list = memory(data.path(), &["list"]);
    assert!(!listed(&list, VICTIM), "{list}");
    assert!(listed(&list, OTHER), "{list}");
    let show = memory(data.path(), &["show", VICTIM]);
    assert!(
        show.contains(&format!("caller {VICTIM}: 0 turns, 0 episodes, 0 facts")),
        "{show}"
    );
    let found = memory(data.path(), &["search", VICTIM, "locker code word"]);
    assert_eq!(found.trim(), "nothing recalled", "{found}");
    let other = memory(data.path(), &["search", OTHER, "my hiking club"]);
    assert!(other.contains(OTHER_MARKER), "{other}");
    // Looking did not write the victim back.
    assert_eq!(files_containing(data.path(), VICTIM), Vec::<PathBuf>::new());
}

#[test]
fn search_without_text_is_a_usage_error() {
    let data = tempfile::tempdir().unwrap();
    let out = memory_with(data.path(), &models_dir(), &["search", VICTIM]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Usage"), "{stderr}");
    assert!(stderr.contains("<TEXT>"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_models_are_a_clear_error_that_names_models_fetch() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-models");
    for args in [&["list"][..], &["search", VICTIM, "anything"]] {
        let out = memory_with(data.path(), &missing, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains("models fetch"), "{args:?}: {stderr}");
        assert!(stderr.contains("minilm"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
