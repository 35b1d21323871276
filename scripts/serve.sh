#!/usr/bin/env bash
# Quick start: install what is missing, build, fetch the models and run the switch with
# the default profile (sip-profiles/default.toml). Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
scripts/setup.sh run
exec "$CARGO_TARGET_DIR/release/sofia-phone" serve "$@"
