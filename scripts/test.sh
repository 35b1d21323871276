#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this): install what is
# missing, then formatting, lints, every Rust test (unit, corpus, real peers, real
# models), a short run of every fuzz target and the container image test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
export PATH=$HOME/.cargo/bin:$PATH
scripts/setup.sh test

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt"
echo "== fuzz (15 s per target; bench/fuzz.sh for longer runs)"
bench/fuzz.sh 15
echo "== container image"
tests/container.sh
echo "== summary"
grep -E '^test result:' "$CARGO_TARGET_DIR/test-output.txt" \
  | awk '{p+=$4; f+=$6; i+=$8} END {printf "rust tests: %d passed, %d failed, %d ignored\n", p, f, i}'
echo "container image: ok"
