#!/usr/bin/env bash
# Voice agent turn latency: phones on loopback call 5555, wait for the greeting, speak
# utterances made by espeak-ng (8 kHz, as a phone sends them) and time the answers, as the
# caller hears them: last voiced RTP packet sent -> first voiced RTP packet of the reply.
# Steps the number of simultaneous calls up until p95 exceeds 2 s. Prints p50/p95 per
# step and the switch's own per-stage breakdown (from the end of the caller's speech, as
# its voice activity detector saw it: transcript ready, first reply text, first
# synthesized audio, first reply frame queued for sending).
#
#   bench/turn.sh [STEPS...]     (default: 1 2 3 4 6)
#
# Uses the release build, tiny.en, the Joe voice and the built-in responder
# (bench/profiles/turn.toml). SOFIA_BIN=path uses an existing sofia-phone binary.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=("$@")
((${#steps[@]})) || steps=(1 2 3 4 6)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
if [[ -z ${SOFIA_BIN:-} ]]; then
  cargo build --release --locked -q --bin sofia-phone
  SOFIA_BIN=$CARGO_TARGET_DIR/release/sofia-phone
fi
# The load generator is light (a few calls of paced RTP): the dev build will do, and
# spares a release build of everything the example links.
cargo build --locked -q --example turn_bench
load=$CARGO_TARGET_DIR/debug/examples/turn_bench
command -v espeak-ng >/dev/null && command -v sox >/dev/null \
  || { echo "needs espeak-ng and sox: scripts/setup.sh test installs them" >&2; exit 1; }

work=$(mktemp -d)
utterances=(
  "I would like to book a table for two on Friday."
  "My favourite colour is blue."
  "I am planning a trip to Paris next month."
  "The weather here has been sunny all week."
  "Can you remind me to call my sister tomorrow?"
)
wavs=()
for i in "${!utterances[@]}"; do
  espeak-ng -v en-us -s 160 -w "$work/u$i-22k.wav" "${utterances[$i]}"
  sox -q "$work/u$i-22k.wav" -r 8000 -c 1 -b 16 "$work/u$i.wav"
  wavs+=("$work/u$i.wav")
done

port=27060
"$SOFIA_BIN" models fetch >/dev/null
SOFIA_LOG=info SOFIA_SIP_LISTEN=127.0.0.1 SOFIA_SIP_PORT=$port SOFIA_USERS=1000:bench-secret \
  SOFIA_DATA_DIR=$work/data \
  "$SOFIA_BIN" serve --config bench/profiles/turn.toml > "$work/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do grep -q "voice agent ready\|voice agent unavailable" "$work/log" && break; sleep 0.1; done
grep -m1 "voice agent" "$work/log" | sed 's/^.*voice agent/voice agent/'
grep -q "voice agent ready" "$work/log" || { tail -5 "$work/log"; exit 1; }

printf '%6s %6s %9s %8s %8s | %s\n' calls turns answered p50_ms p95_ms "stages, median ms: stt / first text / first audio / first play"
best=none
for n in "${steps[@]}"; do
  lines_before=$(wc -l < "$work/log")
  "$load" "127.0.0.1:$port" "$n" "${wavs[@]}" > "$work/step"
  sleep 1
  tail -n +"$((lines_before + 1))" "$work/log" > "$work/steplog"
  python3 - "$n" "$work/step" "$work/steplog" <<'PY'
import re, statistics, sys
n, step, steplog = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(step).read()
lat = sorted(int(x) for x in re.findall(r"latency_ms=(\d+)", text))
summary = dict(kv.split("=") for kv in text.strip().splitlines()[-1].split())
def pct(xs, p):
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")
stages = [[], [], [], []]
for m in re.finditer(r"agent turn \d+: stt (\d+)ms first text (\d+)ms first audio (\d+)ms first play (\d+)ms", open(steplog).read()):
    for i in range(4):
        stages[i].append(int(m.group(i + 1)))
med = " / ".join(str(int(statistics.median(s))) if s else "-" for s in stages)
print(f"{n:>6} {summary['turns']:>6} {summary['answered']:>9} {pct(lat, 50):>8} {pct(lat, 95):>8} | {med}")
ok = summary["ok"] == n and summary["answered"] == summary["turns"] and lat and pct(lat, 95) <= 2000
open(step + ".ok", "w").write("1" if ok else "0")
PY
  if [[ $(cat "$work/step.ok") == 1 ]]; then best=$n; else break; fi
done
echo "most simultaneous agent calls with every turn answered and p95 <= 2000 ms: $best"
echo "(target: p50 <= 1200 ms with tiny.en, the Joe voice and the built-in responder)"
