#!/usr/bin/env bash
# Voice stage benchmark (a report, not a test): Whisper time per utterance length with
# and without a fitted audio_ctx, Piper real-time factor, time to first TTS audio,
# Silero VAD cost, the echo check's cost per frame. Needs the models from `sofia-phone models fetch` and espeak-ng.
#
#   bench/voice_stages.sh [repetitions]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
exec cargo run --quiet --release --example voice_stages -- "${1:-5}"
