#!/usr/bin/env bash
# Episodic memory benchmark (a report, not a test): retrieval quality on the LoCoMo dev
# conversations (recall@5/@10 per configuration, an ablation of each component, per
# category), event segmentation on conversations with labelled topic shifts (boundary
# F1), and scale (ingest, store size, recall latency cold and warm up to 100k turns).
# Needs the models from `sofia-phone models fetch`.
#
#   bench/memory.sh [SCALE_TURNS]      (default 100000; 0 skips the scale part)
#   PROFILE=dev bench/memory.sh ...    (the dev build: no release build needed)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
profile=${PROFILE:-release}
if [[ $profile == release ]]; then
  cargo build --quiet --release --bin sofia-phone
  bin=$CARGO_TARGET_DIR/release/sofia-phone
else
  cargo build --quiet --bin sofia-phone
  bin=$CARGO_TARGET_DIR/debug/sofia-phone
fi
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $profile build"
segments=()
[[ -f fixtures/memory/topic_shifts.json ]] && segments=(--segments fixtures/memory/topic_shifts.json)
"$bin" memory bench \
  --dataset fixtures/locomo-dev/26.json \
  --dataset fixtures/locomo-dev/30.json \
  --dataset fixtures/locomo-dev/41.json \
  "${segments[@]}" \
  --scale-turns "${1:-100000}"
