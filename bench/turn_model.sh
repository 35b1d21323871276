#!/usr/bin/env bash
# What Smart Turn says, offline (a report, not a test): its probability of a complete
# turn for finished sentences and for sentence halves before a mid-sentence pause, per
# caller voice (espeak-ng said apart, espeak-ng with an SSML break, Piper said apart,
# Piper with "..." or "," at the pause), each through a G.711 line; and how long Silero
# VAD takes to say "silence" after the last voiced sample. Needs the models from
# `sofia-phone models fetch` and espeak-ng.
#
#   bench/turn_model.sh
#   TURN_TRAILING_MS=120 bench/turn_model.sh   (ask the model earlier; default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
exec cargo run --quiet --release --locked --example turn_score
