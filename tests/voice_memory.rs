//! LanceDB memory: turns persist across a reopen (a process restart), recall is per
//! caller, ordered by time and limited to the most recent.

use sofia_phone::voice::LanceMemory;
use sofia_voice::{Memory, Role, TurnRecord};

fn turn(caller: &str, call: &str, ms: i64, role: Role, text: &str) -> TurnRecord {
    TurnRecord {
        caller: caller.into(),
        call_id: call.into(),
        unix_ms: ms,
        role,
        text: text.into(),
    }
}

#[test]
fn memory_persists_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let memory = LanceMemory::open(dir.path()).expect("open");
        memory
            .remember(&turn(
                "1001",
                "c1",
                1_000,
                Role::Agent,
                "Hello! How can I help you today?",
            ))
            .unwrap();
        memory
            .remember(&turn(
                "1001",
                "c1",
                2_000,
                Role::Caller,
                "I need to fix my bike.",
            ))
            .unwrap();
        memory
            .remember(&turn(
                "2002",
                "c2",
                1_500,
                Role::Caller,
                "It's O'Brien here.",
            ))
            .unwrap();
    }
    assert!(dir.path().join("memory.lance").is_dir());
    let memory = LanceMemory::open(dir.path()).expect("reopen");
    let recalled = memory.recall("1001", 10).expect("recall");
    assert_eq!(
        recalled,
        vec![
            turn(
                "1001",
                "c1",
                1_000,
                Role::Agent,
                "Hello! How can I help you today?"
            ),
            turn("1001", "c1", 2_000, Role::Caller, "I need to fix my bike."),
        ]
    );
    // Quotes in the caller id cannot break the filter.
    assert_eq!(memory.recall("2002", 10).unwrap().len(), 1);
    assert!(memory.recall("x' OR '1'='1", 10).unwrap().is_empty());
}

#[test]
fn recall_returns_the_most_recent_turns_oldest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let memory = LanceMemory::open(dir.path()).expect("open");
    for i in (0..6).rev() {
        memory
            .remember(&turn(
                "1001",
                "c",
                i * 10,
                Role::Caller,
                &format!("turn {i}"),
            ))
            .unwrap();
    }
    let texts: Vec<String> = memory
        .recall("1001", 3)
        .unwrap()
        .into_iter()
        .map(|t| t.text)
        .collect();
    assert_eq!(texts, ["turn 3", "turn 4", "turn 5"]);
}
