#!/usr/bin/env bash
# Media benchmark: concurrent G.711 echo calls (extension 9196) on loopback, stepping the
# number of calls up until packets are lost or late. For each step: packets lost and
# late (inter-arrival gap above 40 ms) among those echoed back, the switch's CPU per
# call (% of one core) and memory per call (RSS growth over the idle switch).
#
#   bench/media.sh [SECONDS_PER_STEP] [STEPS...]     (default 20; 50 100 200 300 400 500 600 800)
#
# The load generator (examples/media_load.rs) runs on the same 2 cores as the switch.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
steps=("$@")
((${#steps[@]})) || steps=(50 100 200 300 400 500 600 800)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
cargo build --release --locked -q --bin sofia-phone --example media_load
bin=$CARGO_TARGET_DIR/release/sofia-phone
load=$CARGO_TARGET_DIR/release/examples/media_load

work=$(mktemp -d)
port=26060
SOFIA_LOG=warn SOFIA_HTTP_ADDR=127.0.0.1:0 SOFIA_SIP_LISTEN=127.0.0.1 SOFIA_SIP_PORT=$port SOFIA_USERS=1000:bench-secret \
  SOFIA_DATA_DIR=$work "$bin" serve --config bench/profiles/media.toml > "$work/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do ss -lun | grep -q "127.0.0.1:$port " && break; sleep 0.1; done

ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
idle_rss=$(rss_kb)
best=none
printf '%6s %8s %8s %8s %10s %12s %12s\n' calls ok lost% late% rx_pkts "cpu%/call" "KiB/call"
for n in "${steps[@]}"; do
  c0=$(cpu); t0=$(date +%s.%N)
  "$load" "127.0.0.1:$port" "$n" "$secs" > "$work/step" &
  lp=$!
  # Sample memory in the middle of the step, when every call is up.
  sleep $((secs / 2 + 1))
  rss=$(rss_kb)
  wait $lp
  c1=$(cpu); t1=$(date +%s.%N)
  read -r calls ok lost late rx < <(sed 's/[a-z_]*=//g' "$work/step")
  python3 - "$n" "$ok" "$lost" "$late" "$rx" "$c0" "$c1" "$t0" "$t1" "$ticks" "$rss" "$idle_rss" <<'PY'
import sys
n, ok, lost, late, rx, c0, c1, t0, t1, ticks, rss, idle = sys.argv[1:]
n = int(n); busy = (float(c1) - float(c0)) / float(ticks); wall = float(t1) - float(t0)
cpu_per_call = 100 * busy / wall / n
kib = (int(rss) - int(idle)) / n
print(f"{n:6d} {int(ok):8d} {float(lost):8.3f} {float(late):8.3f} {int(rx):10d} {cpu_per_call:12.3f} {kib:12.1f}")
PY
  if [[ $ok == "$n" && $lost == 0.000 && $late == 0.000 ]]; then best=$n; else break; fi
done
echo "largest step with every call up and 0% lost or late packets: $best concurrent calls"
echo "(anchor: RustPBX relays RTP at about 0.14% of a core per call; target: 500 calls)"
