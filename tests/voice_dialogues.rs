//! Dialogue timelines (fixtures/dialogues/*.dialogue) run through the controller with
//! the test doubles in virtual time; each run's action log is compared with the
//! snapshot next to it (`.expected`). `UPDATE_EXPECT=1 cargo test --test voice_dialogues`
//! rewrites the snapshots; review the diff before committing.
//!
//! A timeline is one command per line (`#` starts a comment). Set-up, before anything
//! happens: `config KEY=VALUE` (use_llm, end_of_turn_silence_ms, min_speech_ms,
//! barge_in_min_speech_ms, silence_timeout_ms, max_reprompts, max_call_ms),
//! `caller ID`, `remember caller|agent TEXT` (memory from an earlier call).
//! Scripted stage behaviour: `stt TEXT`, `stt-fail`, `llm CHUNK | CHUNK ...`,
//! `llm-fail N`, `tts-fail on|off`, `stt-delay MS`, `llm-delay MS`. Time:
//! `speech MS`, `silence MS`, `until-listening`, `dtmf DIGIT`, `hangup`.

mod voice_support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sofia_voice::{Action, Config, Event, Memory, Role, TurnRecord};
use voice_support::{FakeTts, Harness, ScriptedLlm, ScriptedStt, VecMemory};

fn dialogues() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dialogues");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "dialogue"))
        .collect();
    files.sort();
    files
}

fn ms(v: &str) -> Duration {
    Duration::from_millis(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not milliseconds: {v:?}")),
    )
}

fn configure(cfg: &mut Config, setting: &str) {
    let (key, value) = setting
        .split_once('=')
        .unwrap_or_else(|| panic!("config {setting:?}"));
    match key.trim() {
        "use_llm" => cfg.use_llm = value.trim() == "true",
        "end_of_turn_silence_ms" => cfg.end_of_turn_silence = ms(value),
        "min_speech_ms" => cfg.min_speech = ms(value),
        "barge_in_min_speech_ms" => cfg.barge_in_min_speech = ms(value),
        "silence_timeout_ms" => cfg.silence_timeout = ms(value),
        "max_reprompts" => cfg.max_reprompts = value.trim().parse().expect("number"),
        "max_call_ms" => cfg.max_call = ms(value),
        other => panic!("unknown config key {other:?}"),
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Transcribe { turn, speech, .. } => format!(
            "Transcribe turn={} voiced={:?} audio={:?}",
            turn.0, speech.voiced, speech.total
        ),
        Action::Generate { turn, request } => format!(
            "Generate turn={} remembered={} history={:?}",
            turn.0,
            request.memory.turns.len(),
            request.caller_text()
        ),
        Action::CancelGenerate { turn } => format!("CancelGenerate turn={}", turn.0),
        Action::Synthesize { clip, text } => format!("Synthesize clip={} {text:?}", clip.0),
        Action::Play { clip, audio } => format!("Play clip={} {:?}", clip.0, audio.duration()),
        Action::PlayPrompt { clip, prompt } => format!("PlayPrompt clip={} {prompt:?}", clip.0),
        Action::FlushPlayback => "FlushPlayback".into(),
        Action::Cancel { turn } => format!("Cancel turn={}", turn.0),
        Action::Remember(t) => format!("Remember {} {:?}", t.role.as_str(), t.text),
        Action::HangUp { reason } => format!("HangUp {reason:?}"),
        Action::Transfer { target } => format!("Transfer {target}"),
        Action::PredictTurnEnd { check, audio } => {
            format!("PredictTurnEnd check={} samples={}", check.0, audio.len())
        }
    }
}

fn describe_event(event: &Event) -> Option<String> {
    match event {
        Event::BargeIn { turn } => Some(format!("event BargeIn turn={}", turn.0)),
        Event::FallbackReply { turn } => Some(format!("event FallbackReply turn={}", turn.0)),
        Event::Breaker { stage, state } => {
            Some(format!("event Breaker {stage:?} {}", state.name()))
        }
        Event::EmptyTranscript { turn } => Some(format!("event EmptyTranscript turn={}", turn.0)),
        _ => None,
    }
}

/// Runs one timeline and returns its log.
fn run(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read dialogue");
    let (stt, llm, tts, memory) = (
        ScriptedStt::default(),
        ScriptedLlm::default(),
        FakeTts::default(),
        VecMemory::default(),
    );
    let mut cfg = Config::default();
    let mut caller = "1001".to_string();
    let mut harness: Option<Harness> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim();
        let at = || format!("{}:{}", path.display(), n + 1);
        match cmd {
            "config" | "caller" | "remember" if harness.is_some() => {
                panic!("{}: set-up after the call started", at())
            }
            "config" => configure(&mut cfg, arg),
            "caller" => caller = arg.to_string(),
            "remember" => {
                let (role, said) = arg.split_once(' ').expect("remember ROLE TEXT");
                memory
                    .remember(&TurnRecord {
                        caller: caller.clone(),
                        call_id: "earlier-call".into(),
                        unix_ms: 1_600_000_000_000,
                        role: Role::parse(role).expect("caller or agent"),
                        text: said.to_string(),
                    })
                    .expect("remember");
            }
            "stt" => stt.say(arg),
            "stt-fail" => stt.fail(),
            // Chunks are separated by `|`; one space after each `|` is layout, not text.
            "llm" => llm.reply(
                &arg.split('|')
                    .map(|c| c.strip_prefix(' ').unwrap_or(c))
                    .collect::<Vec<_>>(),
            ),
            "llm-fail" => llm.fail_next(arg.parse().expect("count")),
            "tts-fail" => *tts.failing.lock().unwrap() = arg == "on",
            _ => {
                let h = harness.get_or_insert_with(|| {
                    Harness::new(
                        cfg.clone(),
                        Instant::now(),
                        &caller,
                        "call-1",
                        (&stt, &llm, &tts, &memory),
                    )
                });
                match cmd {
                    "speech" => h.speak(ms(arg)),
                    "silence" => h.silence(ms(arg)),
                    "until-listening" => h.until_listening(),
                    "stt-delay" => h.stt_delay = ms(arg),
                    "llm-delay" => h.llm_delay = ms(arg),
                    "dtmf" => {
                        h.conv
                            .handle_dtmf(h.now, arg.chars().next().expect("digit"));
                        h.drain();
                    }
                    "hangup" => {
                        h.conv.handle_hangup(h.now);
                        h.drain();
                    }
                    other => panic!("{}: unknown command {other:?}", at()),
                }
            }
        }
    }
    let h = harness.unwrap_or_else(|| {
        Harness::new(
            cfg.clone(),
            Instant::now(),
            &caller,
            "call-1",
            (&stt, &llm, &tts, &memory),
        )
    });
    let mut lines: Vec<(Duration, String)> = h.log.iter().map(|(t, a)| (*t, describe(a))).collect();
    lines.extend(
        h.events
            .iter()
            .filter_map(|(t, e)| describe_event(e).map(|d| (*t, d))),
    );
    lines.sort_by_key(|(t, _)| *t); // stable: actions before events at the same instant
    let mut out = String::new();
    for (t, line) in lines {
        writeln!(out, "{:>7.2}s {line}", t.as_secs_f64()).unwrap();
    }
    writeln!(out, "final state: {:?}", h.conv.state()).unwrap();
    out
}

#[test]
fn dialogue_timelines_match_their_snapshots() {
    let files = dialogues();
    assert!(
        files.len() >= 5,
        "expected the dialogue corpus, found {files:?}"
    );
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for path in files {
        let actual = run(&path);
        let expected_path = path.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &actual).expect("write snapshot");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "{} differs from its snapshot (UPDATE_EXPECT=1 to rewrite):\n--- expected\n{expected}--- actual\n{actual}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
