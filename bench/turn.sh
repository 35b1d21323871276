#!/usr/bin/env bash
# Voice agent turn latency: phones on loopback call 5555, wait for the greeting, speak
# utterances made by Piper or espeak-ng (8 kHz, as a phone sends them) and time the answers, as the
# caller hears them: last voiced RTP packet sent -> first voiced RTP packet of the reply.
# Steps the number of simultaneous calls up until p95 exceeds 2 s. Prints p50/p95 per
# step and the switch's own per-stage breakdown (from the end of the caller's turn as
# the agent decided it: transcript ready, first reply text, first synthesized audio,
# first reply frame queued for sending), once per end-of-turn mode (agent.end_of_turn:
# "silence", 600 ms; "model", Smart Turn after 200 ms). Then, per mode, the false-cut
# rate: sentences said with a pause in the middle (each half said on its own, joined by
# sox silence: the first half ends with a sentence's final fall, the hard case), and how
# many the agent cut at the pause (target: at most 1 in 20).
#
# BUILDS="host image" runs each mode twice, in the same run: the host's release build,
# and the container image (podman, --network host) that `docker run` users get, built
# by tests/container.sh (SOFIA_IMAGE, default localhost/sofia-phone:test).
#
#   bench/turn.sh [STEPS...]     (default: 1 2 3 4 6)
#   MODES="model" PAUSE=0.7 bench/turn.sh 1    (defaults: MODES="silence model", 0.7 s)
#   BUILDS="host image" bench/turn.sh 1 2      (default: BUILDS=host)
#   CALLER=espeak bench/turn.sh 1              (the caller's voice; default: piper)
#   PARTS=cuts bench/turn.sh                   (default: PARTS="latency cuts")
#   SOFIA_LOG=info,sofia_phone::agent=debug TURN_LOGS=DIR bench/turn.sh   (what was said)
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
# The load generator in release: it reuses the switch's release build of the
# dependencies (a dev build would be a second full build on a fresh machine).
cargo build --release --locked -q --example turn_bench
load=$CARGO_TARGET_DIR/release/examples/turn_bench
command -v espeak-ng >/dev/null && command -v sox >/dev/null \
  || { echo "needs espeak-ng and sox: scripts/setup.sh test installs them" >&2; exit 1; }

"$SOFIA_BIN" models fetch >/dev/null
work=$(mktemp -d)
utterances=(
  "I would like to book a table for two on Friday."
  "My favourite colour is blue."
  "I am planning a trip to Paris next month."
  "The weather here has been sunny all week."
  "Can you remind me to call my sister tomorrow?"
)
# The caller's voice: CALLER=piper (default; a neural voice with a person's prosody,
# which Smart Turn was trained on) or CALLER=espeak (espeak-ng: robotic prosody, on
# which Smart Turn calls many finished statements unfinished).
caller=${CALLER:-piper}
case $caller in
  piper) cargo build --release --locked -q --example say ;;
  espeak) ;;
  *) echo "CALLER: piper or espeak, not $caller" >&2; exit 1 ;;
esac
# say OUT TEXT [OUT TEXT ...]: each text said by the caller's voice into an 8 kHz wav.
say() {
  if [[ $caller == piper ]]; then
    "$CARGO_TARGET_DIR/release/examples/say" "$@"
    return
  fi
  while (($#)); do
    espeak-ng -v en-us -s 160 -w "$1-22k.wav" "$2"
    sox -q "$1-22k.wav" -r 8000 -c 1 -b 16 "$1"
    shift 2
  done
}
wavs=()
said=()
for i in "${!utterances[@]}"; do
  said+=("$work/u$i.wav" "${utterances[$i]}")
  wavs+=("$work/u$i.wav")
done
say "${said[@]}"

port=27060
modes=(${MODES:-silence model})
builds=(${BUILDS:-host})
image=${SOFIA_IMAGE:-localhost/sofia-phone:test}
for b in "${builds[@]}"; do
  case $b in
    host) ;;
    image) podman image exists "$image" || { echo "no image $image: run tests/container.sh" >&2; exit 1; } ;;
    *) echo "BUILDS: host or image, not $b" >&2; exit 1 ;;
  esac
done
pause=${PAUSE:-0.7}
parts=${PARTS:-latency cuts}
pid=
trap 'stop_server; rm -rf "$work"' EXIT

# ---- end-of-turn modes: one server per mode ----------------------------------------

# The bench profile with agent.end_of_turn = $1.
mode_profile() {
  local profile=$work/turn-$1.toml
  { cat bench/profiles/turn.toml; printf '\n[agent]\nend_of_turn = "%s"\n' "$1"; } > "$profile"
  echo "$profile"
}

start_server() {
  local mode=$1 build=$2
  if [[ $build == image ]]; then
    # The image's own binary, models and espeak-ng data; a fresh data dir per run.
    # (podman run passes SIGTERM on to the switch: stop_server works the same.)
    # (A directory of ours: the image's VOLUME is not writable for its user as a tmpfs.)
    mkdir -p "$work/image-data-$mode" && chmod 777 "$work/image-data-$mode"
    podman run --rm --network host -v "$work/image-data-$mode:/var/lib/sofia-phone" \
      -v "$(mode_profile "$mode"):/etc/sofia-phone/turn.toml:ro" \
      -e SOFIA_LOG="${SOFIA_LOG:-info}" -e SOFIA_SIP_LISTEN=127.0.0.1 -e SOFIA_SIP_PORT=$port \
      -e SOFIA_USERS=1000:bench-secret \
      "$image" serve --config /etc/sofia-phone/turn.toml > "$work/log" 2>&1 &
  else
    SOFIA_LOG=${SOFIA_LOG:-info} SOFIA_SIP_LISTEN=127.0.0.1 SOFIA_SIP_PORT=$port SOFIA_USERS=1000:bench-secret \
      SOFIA_DATA_DIR=$work/data-$mode \
      "$SOFIA_BIN" serve --config "$(mode_profile "$mode")" > "$work/log" 2>&1 &
  fi
  pid=$!
  for _ in $(seq 1 600); do grep -qs "voice agent ready\|voice agent unavailable" "$work/log" && break; sleep 0.1; done
  grep -m1 "voice agent" "$work/log" | sed "s/^.*voice agent/$build, end_of_turn = $mode: voice agent/"
  grep -q "voice agent ready" "$work/log" || { tail -5 "$work/log"; exit 1; }
  kill -0 "$pid" 2>/dev/null || { echo "the $mode server exited:" >&2; tail -5 "$work/log" >&2; exit 1; }
}

# Waits for the server to go (it drains calls for up to calls.drain_secs, 30 s), so the
# next one can take the port; one still there after 40 s is killed.
stop_server() {
  # TURN_LOGS=DIR keeps each server's log (the verdicts and transcripts per turn).
  [[ -n ${TURN_LOGS:-} && -f $work/log ]] && mkdir -p "$TURN_LOGS" && cp "$work/log" "$TURN_LOGS/$(date +%s%N).log"
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
}

# ---- turn latency by number of simultaneous calls ----------------------------------

latency_steps() {
  local mode=$1 n best=none
  printf '%-14s %6s %6s %9s %8s %8s | %s\n' build/mode calls turns answered p50_ms p95_ms "stages, median ms: stt / first text / first audio / first play"
  for n in "${steps[@]}"; do
    lines_before=$(wc -l < "$work/log")
    "$load" "127.0.0.1:$port" "$n" "${wavs[@]}" > "$work/step"
    sleep 1
    tail -n +"$((lines_before + 1))" "$work/log" > "$work/steplog"
    python3 - "$mode" "$n" "$work/step" "$work/steplog" <<'PY'
import re, statistics, sys
mode, n, step, steplog = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
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
print(f"{mode:<14} {n:>6} {summary['turns']:>6} {summary['answered']:>9} {pct(lat, 50):>8} {pct(lat, 95):>8} | {med}")
ok = summary["ok"] == n and summary["answered"] == summary["turns"] and lat and pct(lat, 95) <= 2000
open(step + ".ok", "w").write("1" if ok else "0")
PY
    if [[ $(cat "$work/step.ok") == 1 ]]; then best=$n; else break; fi
  done
  echo "$mode: most simultaneous agent calls with every turn answered and p95 <= 2000 ms: $best"
}

# ---- false cuts: sentences with a pause in the middle ------------------------------

paused_halves=(
  "I would like to|order a pizza."
  "Can you tell me|when the shop opens?"
  "My favourite colour is|dark blue."
  "I am planning a trip to|Paris next month."
  "Please remind me to|call my sister tomorrow."
  "The weather here has been|sunny all week."
  "I need to change|my delivery address."
  "Could you book a table for|four people on Friday?"
  "I was wondering if|you have any rooms left."
  "My account number is|one two three four."
  "I think the problem is|with my internet connection."
  "We are looking for|a flat near the station."
  "Can I speak to|someone about my bill?"
  "The package arrived but|the box was damaged."
  "I would rather have|the vegetarian option."
  "Is it possible to|pay by card?"
  "My daughter starts school|next September."
  "I have been waiting for|almost an hour."
  "Do you know if|the museum is open on Sunday?"
  "I wanted to ask about|the price of a ticket."
)
paused_wavs=()

make_paused_wavs() {
  local i first second
  local halves=()
  sox -q -n -r 8000 -c 1 -b 16 "$work/pause.wav" trim 0 "$pause"
  for i in "${!paused_halves[@]}"; do
    halves+=("$work/p$i-a.wav" "${paused_halves[$i]%%|*}" "$work/p$i-b.wav" "${paused_halves[$i]#*|}")
  done
  say "${halves[@]}"
  for i in "${!paused_halves[@]}"; do
    # Both voices pad what they say with silence (Piper about 0.1 s at each end,
    # espeak-ng up to 0.3 s), which would make the pause that much longer than $pause:
    # each half is trimmed to its voiced part (-45 dB) first.
    for h in a b; do
      sox -q "$work/p$i-$h.wav" "$work/p$i-$h-trim.wav" \
        silence 1 0.005 -45d reverse silence 1 0.005 -45d reverse
    done
    sox -q "$work/p$i-a-trim.wav" "$work/pause.wav" "$work/p$i-b-trim.wav" "$work/p$i.wav"
    paused_wavs+=("$work/p$i.wav")
  done
}

# One call says every paused sentence in turn; a sentence cut at the pause ends two
# turns instead of one (the agent ends the first half, then the second half ends
# another), so cuts = turn ends - sentences.
false_cuts() {
  local mode=$1
  lines_before=$(wc -l < "$work/log")
  "$load" "127.0.0.1:$port" 1 "${paused_wavs[@]}" > "$work/paused"
  sleep 1
  tail -n +"$((lines_before + 1))" "$work/log" > "$work/pausedlog"
  python3 - "$mode" "${#paused_wavs[@]}" "$pause" "$work/pausedlog" <<'PY'
import re, sys
mode, total, pause, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], open(sys.argv[4]).read()
ends = len(re.findall(r"agent end of turn after \d+ ms", log))
verdicts = {v: len(re.findall(rf"agent end of turn: {v}\b", log)) for v in ("Complete", "Incomplete", "Unsure", "Fallback", "Failed")}
cuts = max(0, ends - total)
shown = ", ".join(f"{k.lower()} {v}" for k, v in verdicts.items()) if mode.endswith("model") else "-"
print(f"{mode:<14} false cuts at a {pause} s pause: {cuts}/{total} (turn ends {ends}; verdicts: {shown}; target <= 1 in 20)")
PY
}

# The switch's own means over the whole run, from /metrics: the end-of-turn model's
# inference and the memory recall each transcript waits for before the conversation
# (and the end-of-turn verdict) gets it.
stage_means() {
  local url
  url=$(grep -o "http://[0-9.:]*/health" "$work/log" | head -1 | sed 's,/health$,/metrics,')
  [[ -n $url ]] || return 0
  curl -s "$url" | python3 -c '
import sys
v = {}
for line in sys.stdin:
    if line.startswith("#") or not line.strip():
        continue
    name, _, value = line.rpartition(" ")
    v[name] = float(value)
def mean(h):
    s = [k for k in v if k.startswith(h + "_sum")]
    c = [k for k in v if k.startswith(h + "_count")]
    if not s or not c or v[c[0]] == 0:
        return "-"
    return "%.0f ms (n=%d)" % (1000 * v[s[0]] / v[c[0]], v[c[0]])
print("%-14s means: Smart Turn inference %s; memory recall %s" % (sys.argv[1],
      mean("sofia_agent_turn_model_latency_seconds"), mean("sofia_memory_recall_latency_seconds")))
' "$1"
}

((${#paused_halves[@]})) && make_paused_wavs
for build in "${builds[@]}"; do
  for mode in "${modes[@]}"; do
    start_server "$mode" "$build"
    [[ " $parts " == *" latency "* ]] && latency_steps "$build/$mode"
    [[ " $parts " == *" cuts "* ]] && false_cuts "$build/$mode"
    stage_means "$build/$mode"
    stop_server
  done
done
echo "(caller's voice: $caller; target for the image in model mode: p50 <= 600 ms, p95 <= 900 ms, at most 1 in 20 pauses cut)"
