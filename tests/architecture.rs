//! Invariants of the layout that are cheap to check: the sans-IO cores never depend on
//! the async runtime or the heavy native crates (see ARCHITECTURE.md).

use std::process::Command;

const CORES: &[&str] = &["sofia-sip", "sofia-media", "sofia-voice", "sofia-memory"];
const FORBIDDEN: &[&str] = &[
    "tokio",
    "whisper-rs",
    "piper-rs",
    "ort",
    "lancedb",
    "arrow",
    "mio",
    "candle-core",
    "tokenizers",
];

#[test]
fn core_crates_do_not_depend_on_runtime_or_heavy_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for core in CORES {
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--offline",
                "-e",
                "normal",
                "--prefix",
                "none",
                "-p",
                core,
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(
            names.contains(core),
            "cargo tree did not list {core}: {tree}"
        );
        for bad in FORBIDDEN {
            assert!(!names.contains(bad), "{core} depends on {bad}:\n{tree}");
        }
    }
}
