#!/usr/bin/env bash
# Bridged-call benchmark: calls between registered phones through the switch (B2BUA: the
# switch answers the caller, rings the phone, relays RTP between two media sessions), on
# loopback, stepping the number of concurrent calls up until audio is lost or late. At
# each count the echo figure of bench/media.sh (examples/media_load.rs, extension 9196)
# is measured first against the same switch, so echo and bridged calls compare at equal
# call counts; a bridged call is two legs, two media sessions and two streams (both
# phones talk), an echo call one. Then two steps with transcoding at a moderate count:
# callers PCMU and phones PCMA (one law to the other), and callers PCMU and phones Opus
# (G.711 at 8 kHz to Opus at 48 kHz: decode, resample and encode on both legs).
#
# Two echo figures: "echo pkts" is media_load's (RTP packets echoed back, by sequence
# number), "echo tags" counts the caller's audio frames coming back by the tags
# examples/bridge_load.rs puts in them, the measure the bridged rows use. They differ:
# the switch sends a packet every 20 ms whether it has the caller's audio or silence, so
# audio its jitter buffer dropped or concealed is lost to the tags but not to the
# packet count.
#
#   bench/bridge.sh [SECONDS_PER_STEP] [STEPS...]   (default 20; 50 100 150 200 250 300 400 500)
#   BRIDGE_TRANSCODE_CALLS=N   calls in the PCMU>PCMA step (default 100; 0 skips it)
#   BRIDGE_OPUS_CALLS=N        calls in the PCMU>opus step (default 50; 0 skips it: about
#                              2% of a core per call here, ten times a G.711 bridged call)
#   BRIDGE_ECHO=packets|tags|both|none   which echo figures (default both, see above)
#   BRIDGE_ALL_STEPS=1         keep stepping after a step that is not clean
#   BRIDGE_PROFILE=PATH        another profile (default bench/profiles/bridge.toml)
#
# The profile's calls.max_calls is automatic: 500 per core, and the switch counts both
# legs of a bridged call, so on 2 cores calls beyond 500 bridged ones get 503. A profile
# with a larger calls.max_calls finds the media limit beyond that.
#
# Per step: calls ok (answered, audio both ways, BYE answered), frames lost and late
# (inter-arrival gap above 40 ms) over both directions, the p99 delay of tagged frames
# (one way for bridged calls, the round trip for echo), the switch's CPU (utime+stime
# from /proc/PID/stat while every call is up, % of one core: 200% is both cores of this
# machine), and its RSS (VmRSS in the middle of the step) and RSS growth per call over
# the idle switch; beside them the load generator's CPU (gen%) and what everything else
# on the machine took meanwhile (other%, from /proc/stat), both % of one core, which
# tells a switch short of CPU from a machine busy with other work (the three reaching
# 200% is a full machine). How loss is counted for bridged calls (tagged frames, not
# sequence numbers): see examples/bridge_load.rs. The PCMU>opus row counts voiced frames,
# not tags (no sample survives Opus and resampling as sent): it sees audio stop, not a
# single frame the switch concealed, and has no per-frame delay (p99 "-"); its CPU,
# memory and lateness are measured like every other row. Memory per call is left out ("-") for
# a step smaller than an earlier one: the allocator keeps what the larger one used.
#
# A step is clean when every call is ok and at most 0.1% of frames are lost (both
# directions together). Late packets are reported beside it, and the largest count up
# to which every step also had at most 0.1% late; lateness is an inter-arrival gap seen
# by the load generator, which runs on the same 2 cores as the switch, so anything else
# running on the machine shows up there first.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
steps=("$@")
((${#steps[@]})) || steps=(50 100 150 200 250 300 400 500)
transcode=${BRIDGE_TRANSCODE_CALLS:-100}
opus_calls=${BRIDGE_OPUS_CALLS:-50}
echo_mode=${BRIDGE_ECHO:-both}
all_steps=${BRIDGE_ALL_STEPS:-0}
profile=${BRIDGE_PROFILE:-bench/profiles/bridge.toml}
((secs >= 8)) || { echo "SECONDS_PER_STEP must be at least 8 (CPU is sampled from 4 s in)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
cargo build --release --locked -q --bin sofia-phone --example media_load --example bridge_load
bin=$CARGO_TARGET_DIR/release/sofia-phone
echo_load=$CARGO_TARGET_DIR/release/examples/media_load
bridge_load=$CARGO_TARGET_DIR/release/examples/bridge_load

# Users u100.. for the largest step, password pw-<user> (what bridge_load registers with).
max=$transcode
((opus_calls > max)) && max=$opus_calls
for n in "${steps[@]}"; do if ((n > max)); then max=$n; fi; done
users=$(for ((i = 100; i < 100 + max; i++)); do printf 'u%d:pw-u%d,' "$i" "$i"; done)
users=${users%,}
# Two port pairs per bridged call, with room to spare.
ports=10000-17999
((max * 4 <= 8000)) || { echo "at most 2000 calls per step" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

work=$(mktemp -d)
port=26070
SOFIA_LOG=warn SOFIA_HTTP_ADDR=127.0.0.1:0 SOFIA_SIP_LISTEN=127.0.0.1 SOFIA_SIP_PORT=$port \
  SOFIA_USERS=$users SOFIA_RTP_PORTS=$ports SOFIA_DATA_DIR=$work \
  "$bin" serve --config "$profile" > "$work/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do ss -lun | grep -q "127.0.0.1:$port " && break; sleep 0.1; done
if ! kill -0 $pid 2>/dev/null; then
  echo "the switch did not start:" >&2; cat "$work/log" >&2; exit 1
fi

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/${1:-$pid}/stat" 2>/dev/null || echo 0; }
# Machine-wide busy jiffies (user, nice, system, irq, softirq, steal; every core).
machine() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
alive() {
  kill -0 $pid 2>/dev/null && return 0
  echo "the switch died during the step; its log ends:" >&2
  tail -30 "$work/log" >&2
  exit 1
}
sleep 1
idle_rss=$(rss_kb)

# step LABEL N COMMAND...: runs the load, samples the switch, prints one row and leaves
# "timely" (clean, late too), "clean" or "dirty" in $work/verdict.
step() {
  local label=$1 n=$2
  shift 2
  "$@" > "$work/step" 2> "$work/step.err" &
  local lp=$! c0 t0 c1 t1 g0 g1 m0 m1 rss
  # CPU from 4 s in (registration and call set-up over) to the step's nominal end, when
  # the first callers stop; memory half-way.
  sleep 4
  alive
  c0=$(cpu); g0=$(cpu $lp); m0=$(machine); t0=$(date +%s.%N)
  sleep $(((secs - 4) / 2))
  rss=$(rss_kb)
  sleep $((secs - 4 - (secs - 4) / 2))
  alive
  c1=$(cpu); g1=$(cpu $lp); m1=$(machine); t1=$(date +%s.%N)
  wait $lp || { echo "$label $n: load generator failed:" >&2; cat "$work/step.err" >&2; }
  alive
  python3 - "$label" "$n" "$c0" "$c1" "$t0" "$t1" "$ticks" "$rss" "$idle_rss" "$work/verdict" "$work/step" \
    "$g0" "$g1" "$m0" "$m1" "$largest" <<'PY'
import sys
label, n, c0, c1, t0, t1, ticks, rss, idle, verdict, result, g0, g1, m0, m1, largest = sys.argv[1:]
line = open(result).read().split()
kv = dict(p.split("=", 1) for p in line if "=" in p)
n = int(n)
busy = (float(c1) - float(c0)) / float(ticks)
wall = float(t1) - float(t0)
cpu = 100 * busy / wall
gen = 100 * (float(g1) - float(g0)) / float(ticks) / wall
# Everything else the machine ran meanwhile, in % of one core.
other = max(100 * (float(m1) - float(m0)) / float(ticks) / wall - cpu - gen, 0)
ok = int(kv.get("ok", 0))
lost = float(kv.get("lost_pct", 100))
late = float(kv.get("late_pct", 100))
p99 = kv.get("delay_p99_ms", "-")
clean = ok == n and lost <= 0.1
per_call = f"{(int(rss) - int(idle)) / n:.1f}" if n >= int(largest) else "-"
timely = clean and late <= 0.1
extra = ""
if kv.get("mode") == "bridged" and int(kv.get("registered", 0)) != n:
    extra += f" registered={kv['registered']}"
if "answered" in kv and int(kv["answered"]) != n:
    extra += f" answered={kv['answered']}"
if "a_to_b_lost_pct" in kv and lost > 0.1:
    extra += f" lost a->b {kv['a_to_b_lost_pct']}% b->a {kv['b_to_a_lost_pct']}%"
if int(kv.get("misrouted", 0)):
    extra += f" misrouted={kv['misrouted']}"
if not line:
    extra += " (no result line)"
print(f"{label:>14} {n:6d} {ok:6d} {lost:8.3f} {late:8.3f} {p99:>8} {cpu:7.1f} {cpu / n:9.3f} "
      f"{gen:6.1f} {other:6.1f} "
      f"{int(rss) / 1024:8.1f} {per_call:>9}  {'clean' if clean else 'NOT CLEAN'}{extra}")
open(verdict, "w").write("timely" if timely else "clean" if clean else "dirty")
PY
  if ((n > largest)); then largest=$n; fi
  sleep 2
}
largest=0

printf '%14s %6s %6s %8s %8s %8s %7s %9s %6s %6s %8s %9s\n' \
  mode calls ok lost% late% p99_ms cpu% cpu%/call gen% other% rss_MiB KiB/call
best=none
best_timely=none
timely_so_far=1
for n in "${steps[@]}"; do
  if [[ $echo_mode == packets || $echo_mode == both ]]; then
    step "echo pkts" "$n" "$echo_load" "127.0.0.1:$port" "$n" "$secs"
  fi
  if [[ $echo_mode == tags || $echo_mode == both ]]; then
    step "echo tags" "$n" "$bridge_load" "127.0.0.1:$port" "$n" "$secs" echo
  fi
  step "bridged" "$n" "$bridge_load" "127.0.0.1:$port" "$n" "$secs" PCMU PCMU
  verdict=$(cat "$work/verdict")
  [[ $verdict == timely ]] || timely_so_far=0
  if ((timely_so_far)); then best_timely=$n; fi
  if [[ $verdict != dirty ]]; then
    best=$n
  elif [[ $all_steps != 1 ]]; then
    break
  fi
done
if ((transcode > 0)); then
  step "PCMU>PCMA" "$transcode" "$bridge_load" "127.0.0.1:$port" "$transcode" "$secs" PCMU PCMA
fi
if ((opus_calls > 0)); then
  step "PCMU>opus" "$opus_calls" "$bridge_load" "127.0.0.1:$port" "$opus_calls" "$secs" PCMU opus
fi
echo "largest clean step of bridged G.711 calls (all ok, <= 0.1% lost): $best"
echo "largest step clean from the first one on with <= 0.1% late as well: $best_timely"
echo "(target: at least 250 bridged G.711 calls clean on this 2-core machine)"
# The agent's missing models are expected here (nothing calls it).
grep -iE 'warn|error' "$work/log" | grep -v 'voice agent unavailable' > "$work/warnings" || true
if [[ -s $work/warnings ]]; then
  echo "switch log: $(wc -l < "$work/warnings") warning/error lines; the last ones:"
  tail -5 "$work/warnings"
fi
