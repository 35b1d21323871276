#!/usr/bin/env bash
# Hostile-traffic benchmark: `sofia-phone serve` on loopback under SIP scanners, forged
# sources, TCP stream abuse, a long soak and injected faults, with real users measured
# throughout. Attackers and users bind their own 127/8 addresses (examples/sip_abuse.rs),
# so the switch sees them as different hosts.
#
#   bench/hostile.sh [SCALE]      SCALE: a whole number (default 1) or "short"
#
# SCALE multiplies the attack phases (20 s each) and the soak (10,000 calls); "short"
# runs every piece for seconds (a few hundred soak calls). Reports:
#   - scanners and floods: svmap (OPTIONS sweep), svcrack (password guessing) and
#     forged-source REGISTERs with made-up credentials, all at once, while real users
#     register and call the echo (9196): the rates absorbed, whether the guesser was
#     blocked (403s, sofia_blocked_sources), whether the user whose address was forged
#     still registers, and the real users' success rate and p50/p99 per operation during
#     the attack against a baseline without it; the switch's RSS before and after;
#   - stream abuse over TCP (slowloris, idle connections past the caps, oversized
#     messages, Content-Length lies): the RSS peak against a stated bound, a bystander's
#     OPTIONS (UDP) and REGISTER (TCP) all the while, connections refused past the caps;
#   - soak: SIPp calls with RTP (call_rtp.xml, a pcap replayed) to 9196 with
#     registration churn (register.xml in a loop) at the same time: calls completed and
#     failed, call set-up p50/p99, RTP counted by the switch, RSS at start and end;
#   - faults: kill -9 during registration churn, then a restart (bindings restored from
#     registrations.json); the data dir on a full disk (tmpfs, root only); media loss
#     and reordering (tc netem in a network namespace when the kernel has it, and an
#     in-process impairment of the same call in any case).
# Run as root for the full-disk and netem faults; they are skipped, with the reason, if
# not possible. Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-1}
if [[ $scale == short ]]; then
  attack_secs=5 stream_secs=12 clie_wait=3 soak_calls=300 idle_n=1500 slow_n=300 nusers=10
else
  if ! [[ $scale =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: bench/hostile.sh [SCALE|short]" >&2
    exit 2
  fi
  attack_secs=$((20 * scale)) stream_secs=40 clie_wait=35 soak_calls=$((10000 * scale))
  idle_n=5000 slow_n=1000 nusers=20
fi
# The soak's pace: calls a second and how long each lasts (RTP flows all the while).
soak_rate=${SOAK_RATE:-40}
soak_hold_ms=${SOAK_HOLD_MS:-3000}
churn_rate=20

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
command -v sipp >/dev/null || scripts/setup.sh test
cargo build --release --locked -q --bin sofia-phone --example sip_abuse
bin=$CARGO_TARGET_DIR/release/sofia-phone
abuse=$CARGO_TARGET_DIR/release/examples/sip_abuse

work=$(mktemp -d)
pids=()
mounts=()
netns=""
cleanup() {
  # Only what this script started and is still running (its children), by PID.
  for p in "${pids[@]}"; do
    if [[ $(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ') == "$$" ]]; then kill -9 "$p" 2>/dev/null || true; fi
  done
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
  if [[ -n $netns ]]; then
    ip link del hostile0 2>/dev/null || true
    ip netns del "$netns" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# Thousands of sockets: the switch and the generator need the descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

port=25260
http=127.0.0.1:25261
sip=127.0.0.1:$port
# 100 users 1000..1099 (password pw-<user>) for the real users, the soak caller and
# the churning phone.
users=""
for i in $(seq 1000 1099); do users+="$i:pw-$i,"; done
users+="soak:pw-soak,churn:pw-churn"
# The default profile, but the soak's single SIPp caller may hold every call at once.
sed 's/^max_calls_per_user = .*/max_calls_per_user = 10000/' sip-profiles/default.toml > "$work/profile.toml"
grep -q '^max_calls_per_user = 10000' "$work/profile.toml"

# start_switch DATA_DIR PORT HTTP LISTEN LOG: starts serve in the background; its PID
# is in $started.
start_switch() {
  mkdir -p "$1"
  SOFIA_LOG=info SOFIA_HTTP_ADDR=$3 SOFIA_SIP_LISTEN=$4 SOFIA_SIP_PORT=$2 SOFIA_USERS=$users \
    SOFIA_DATA_DIR=$1 SOFIA_MODELS_DIR=$work/no-models SOFIA_RTP_PORTS=20000-23999 \
    "$bin" serve --config "$work/profile.toml" >> "$5" 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 1 100); do
    if curl -sf "http://$3/livez" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench: the switch on $4:$2 did not start" >&2
  tail -20 "$5" >&2
  return 1
}

log=$work/switch.log
start_switch "$work/data" $port $http 127.0.0.1 "$log" || exit 1
pid=$started

# The value of one metric series (exactly as printed), 0 when absent.
metric() {
  curl -s "http://${2:-$http}/metrics" | awk -v n="$1" '$1 == n {v = $2} END {print v + 0}'
}
# Fresh figures: the switch copies its SIP counters into the metrics every second.
settle() { sleep 1.2; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# peak_start PID: samples the RSS (and open TCP connections) every 0.25 s until
# peak_stop, which leaves "peak_rss_kb peak_tcp_connections" in $peak (not in a
# subshell: it must wait for the sampler it stops).
peak_start() {
  local target=$1
  rm -f "$work/peak.stop" "$work/peak.now"
  (
    peak=0 conns=0
    while [[ ! -e $work/peak.stop ]]; do
      r=$(rss_kb "$target")
      ((r > peak)) && peak=$r
      c=$(metric sofia_tcp_connections)
      ((c > conns)) && conns=$c
      echo "$peak $conns" > "$work/peak.now"
      sleep 0.25
    done
  ) &
  peak_pid=$!
  pids+=("$peak_pid")
}
peak_stop() {
  touch "$work/peak.stop"
  wait "$peak_pid" 2>/dev/null || true
  peak=$(cat "$work/peak.now" 2>/dev/null || echo "0 0")
}
# kv "LINE" KEY: the value of KEY=... in a line of sip_abuse output.
kv() { sed -n "s/.*[[:space:]]$2=\([^ ]*\).*/\1/p" <<< " $1"; }
# The output line of a run whose first words match.
line_of() { grep -m1 -- "$2" "$1" || true; }

echo "sofia-phone under hostile traffic (SCALE=$scale); switch pid $pid on udp+tcp $sip"
echo "idle RSS $(mib "$(rss_kb "$pid")") MiB"

###############################################################################
echo
echo "== scanners and floods: ${attack_secs}s, concurrent with $nusers real users (from 127.0.0.10 up) =="
"$abuse" $sip users $nusers "$attack_secs" > "$work/baseline.txt"
settle
rss_before=$(rss_kb "$pid")
opt0=$(metric 'sofia_sip_requests_total{method="OPTIONS"}')
reg0=$(metric 'sofia_sip_requests_total{method="REGISTER"}')
r401_0=$(metric 'sofia_sip_responses_total{code="401"}')
r403_0=$(metric 'sofia_sip_responses_total{code="403"}')
fail0=$(metric sofia_auth_failures_total)
peak_start "$pid"
"$abuse" $sip svmap 2000 "$attack_secs" --from 127.0.0.2 > "$work/svmap.txt" &
a1=$!
"$abuse" $sip svcrack 1000 100 "$attack_secs" --from 127.0.0.3 > "$work/svcrack.txt" &
a2=$!
"$abuse" $sip spoof "$attack_secs" 500 --from 127.0.0.4 --victim 127.0.0.10 --victim-user 1000 > "$work/spoof.txt" &
a3=$!
"$abuse" $sip users $nusers "$attack_secs" > "$work/attack.txt"
wait $a1 $a2 $a3
peak_stop
read -r rss_peak _ <<< "$peak"
settle
rss_after=$(rss_kb "$pid")
svmap=$(cat "$work/svmap.txt")
svcrack=$(cat "$work/svcrack.txt")
spoof=$(cat "$work/spoof.txt")
echo "svmap   from 127.0.0.2: $(kv "$svmap" sent) OPTIONS at $(kv "$svmap" rate_sent)/s, answered $(kv "$svmap" answered_pct)% ($(kv "$svmap" codes))"
echo "svcrack from 127.0.0.3 for user 1000: $(kv "$svcrack" guesses) guesses at $(kv "$svcrack" rate_sent)/s;" \
  "first 403 at guess $(kv "$svcrack" first_403_at_guess) ($(kv "$svcrack" first_403_at_s) s);" \
  "403s $(kv "$svcrack" blocked_403), wrong-password 401s $(kv "$svcrack" wrong_401), accepted $(kv "$svcrack" accepted)," \
  "challenged after the block $(kv "$svcrack" challenged_after_block)"
echo "spoof   forged source 127.0.0.10 (user 1000's address): $(kv "$spoof" sent) REGISTERs at $(kv "$spoof" rate_sent)/s" \
  "($(kv "$spoof" random_nonce) random nonces, $(kv "$spoof" borrowed_nonce) nonces issued to 127.0.0.4)"
awk -v o="$(metric 'sofia_sip_requests_total{method="OPTIONS"}')" -v o0="$opt0" \
  -v r="$(metric 'sofia_sip_requests_total{method="REGISTER"}')" -v r0="$reg0" -v s="$attack_secs" \
  'BEGIN {printf "switch  received %d OPTIONS (%.0f/s) and %d REGISTERs (%.0f/s) in the attack phase\n", o - o0, (o - o0) / s, r - r0, (r - r0) / s}'
echo "switch  auth failures +$(($(metric sofia_auth_failures_total) - fail0)), 401s +$(($(metric 'sofia_sip_responses_total{code="401"}') - r401_0))," \
  "403s +$(($(metric 'sofia_sip_responses_total{code="403"}') - r403_0)), sofia_blocked_sources $(metric sofia_blocked_sources)"
printf '\n%-9s | %-36s | %-36s\n' "real users" "baseline: ok%  p50 ms  p99 ms  failures" "attack: ok%  p50 ms  p99 ms  failures"
for op in register invite rtp bye; do
  b=$(line_of "$work/baseline.txt" "op=$op ")
  a=$(line_of "$work/attack.txt" "op=$op ")
  printf '%-10s | %6s %7s %7s  %-14s | %6s %7s %7s  %-14s\n' "$op" \
    "$(kv "$b" success_pct)" "$(kv "$b" p50_ms)" "$(kv "$b" p99_ms)" "$(kv "$b" failures)" \
    "$(kv "$a" success_pct)" "$(kv "$a" p50_ms)" "$(kv "$a" p99_ms)" "$(kv "$a" failures)"
done
echo "(each user: REGISTER with digest, then INVITE with digest to 9196, 10 RTP frames echoed, BYE, once a second;"
echo " rtp latency = first frame sent to first echoed tone frame, through the echo's jitter buffer)"
victim=$("$abuse" $sip register 1 --users-ip 127.0.0.10 --user-base 1000)
echo "user 1000 registering from the forged address 127.0.0.10 after the attack: $(kv "$victim" ok)/1 ok ($(kv "$victim" failures) failures)"
echo "RSS before $(mib "$rss_before") MiB, peak $(mib "$rss_peak") MiB, after $(mib "$rss_after") MiB"

###############################################################################
echo
echo "== stream abuse over TCP (caps: 4096 connections, 64 per source; idle 300 s; partial message 30 s) =="
rss_before=$(rss_kb "$pid")
refused0=$(metric sofia_tcp_connections_refused_total)
peak_start "$pid"
# 1. Per-source cap: slowloris from 16 addresses, and 10 addresses each opening 74 idle
#    connections (10 past the cap), while a bystander is served over UDP and TCP.
"$abuse" $sip probe $((stream_secs + 2)) --from 127.0.0.50 --victim-user 1001 > "$work/probe1.txt" &
p1=$!
"$abuse" $sip slowloris $slow_n "$stream_secs" --from 127.0.1.1 --sources 16 > "$work/slowloris.txt" &
s1=$!
"$abuse" $sip idle-tcp 740 "$stream_secs" --from 127.0.2.1 --sources 10 > "$work/idle1.txt"
wait $s1 $p1
peak_stop
read -r rss_peak1 conns_peak1 <<< "$peak"
refused1=$(metric sofia_tcp_connections_refused_total)
peak_start "$pid"
# 2. The global cap: idle connections from 100 addresses (under the per-source cap each).
"$abuse" $sip probe 8 --from 127.0.0.52 --victim-user 1002 > "$work/probe2.txt" &
p2=$!
"$abuse" $sip idle-tcp $idle_n 8 --from 127.0.3.1 --sources 100 > "$work/idle2.txt"
wait $p2
peak_stop
read -r rss_peak2 conns_peak2 <<< "$peak"
refused2=$(metric sofia_tcp_connections_refused_total)
peak_start "$pid"
# 3. Malformed streams, a bystander still watching.
"$abuse" $sip probe $((clie_wait + 12)) --from 127.0.0.51 --victim-user 1003 > "$work/probe3.txt" &
p3=$!
"$abuse" $sip oversized --from 127.0.0.60 > "$work/oversized.txt"
"$abuse" $sip content-length-lies --from 127.0.0.61 --wait "$clie_wait" > "$work/clie.txt"
wait $p3
peak_stop
read -r rss_peak3 _ <<< "$peak"
rss_peak=$(printf '%s\n' "$rss_peak1" "$rss_peak2" "$rss_peak3" | sort -n | tail -1)
settle
rss_after=$(rss_kb "$pid")
slow=$(cat "$work/slowloris.txt")
idle1=$(cat "$work/idle1.txt")
idle2=$(cat "$work/idle2.txt")
bystander() {
  while read -r l; do
    echo "  bystander $(kv "$l" from) $(kv "$l" op): $(kv "$l" ok)/$(kv "$l" attempts) ok, p50 $(kv "$l" p50_ms) ms," \
      "p99 $(kv "$l" p99_ms) ms, failures $(kv "$l" failures)"
  done < "$1"
}
echo "1. per-source cap, ${stream_secs}s:"
echo "  slowloris: $slow_n connections from 16 addresses, one header byte a second:" \
  "$(kv "$slow" connections) connects, $(kv "$slow" refused) refused at once, $(kv "$slow" closed_by_server) dropped by the switch" \
  "(lifetime p50 $(kv "$slow" lifetime_p50_s) s, max $(kv "$slow" lifetime_max_s) s), $(kv "$slow" still_open) open at the end"
echo "  idle: 740 connections from 10 addresses: $(kv "$idle1" refused) refused at once, $(kv "$idle1" still_open) held," \
  "$(kv "$idle1" closed_by_server) closed later"
echo "  switch: TCP connections peak $conns_peak1, refused +$((refused1 - refused0))"
bystander "$work/probe1.txt"
echo "2. global cap, 8s:"
echo "  idle: $idle_n connections from 100 addresses: $(kv "$idle2" refused) refused at once, $(kv "$idle2" still_open) held," \
  "$(kv "$idle2" closed_by_server) closed later, $(kv "$idle2" connect_errors) connect errors"
echo "  switch: TCP connections peak $conns_peak2 (cap 4096), refused +$((refused2 - refused1))"
bystander "$work/probe2.txt"
echo "  (the cap is for all sources together: while attackers hold it, new TCP clients are refused; UDP is not affected)"
echo "3. malformed streams:"
sed 's/^/  /' "$work/oversized.txt" "$work/clie.txt"
bystander "$work/probe3.txt"
# The bound: every allowed connection holding a 16 KiB read buffer and a partial
# message of the largest size (64 KiB), above the RSS before the phase.
bound_kb=$((rss_before + 4096 * (16 + 64)))
verdict=$([[ $rss_peak -le $bound_kb ]] && echo within || echo OVER)
echo "RSS before $(mib "$rss_before") MiB, peak $(mib "$rss_peak") MiB, after $(mib "$rss_after") MiB;" \
  "bound $(mib "$bound_kb") MiB (before + 4096 x (16 KiB buffer + 64 KiB partial message)): $verdict"

###############################################################################
echo
echo "== soak: $soak_calls SIPp calls with RTP to 9196 at ${soak_rate}/s (${soak_hold_ms} ms each), registration churn at ${churn_rate}/s =="
soak=$work/soak
mkdir -p "$soak/calls" "$soak/churn"
log_lines=$(wc -l < "$log")
rss_start=$(rss_kb "$pid")
soak_secs=$((soak_calls / soak_rate + soak_hold_ms / 1000 + 2))
peak_start "$pid"
t0=$(date +%s.%N)
(cd "$soak/churn" && sipp $sip -sf "$OLDPWD/fixtures/sipp/register.xml" -s churn -au churn -ap pw-churn -key expires 60 \
  -i 127.0.0.1 -p 25300 -mp 25500 -r $churn_rate -m $((churn_rate * soak_secs)) -l 200 -nostdin \
  -timeout $((soak_secs + 60))s -trace_stat -stf stats.csv -fd 5 >/dev/null 2>&1) &
churn=$!
(cd "$soak/calls" && sipp $sip -sf "$OLDPWD/fixtures/sipp/call_rtp.xml" -s 9196 -au soak -ap pw-soak -key caller soak \
  -d "$soak_hold_ms" -i 127.0.0.1 -p 25302 -mp 25600 -r "$soak_rate" -m "$soak_calls" \
  -l $((soak_rate * (soak_hold_ms / 1000 + 3) * 2)) -nostdin -timeout $((soak_secs * 3 + 60))s \
  -trace_stat -stf stats.csv -fd 5 -trace_rtt -rtt_freq 1 >/dev/null 2>&1) || true
t1=$(date +%s.%N)
wait $churn || true
peak_stop
read -r rss_peak _ <<< "$peak"
sleep 2
settle
rss_end=$(rss_kb "$pid")
sipp_summary() {
  python3 - "$1" <<'PY'
import csv, glob, sys
d = sys.argv[1]
ok = failed = 0
for path in glob.glob(d + "/stats.csv"):
    rows = list(csv.reader(open(path), delimiter=";"))
    if len(rows) >= 2:
        h, last = rows[0], rows[-1]
        ok, failed = int(last[h.index("SuccessfulCall(C)")]), int(last[h.index("FailedCall(C)")])
times = []
for path in glob.glob(d + "/*_rtt.csv"):
    for row in csv.reader(open(path), delimiter=";"):
        try:
            times.append(float(row[1]))
        except (ValueError, IndexError):
            pass
times.sort()
p = lambda q: f"{times[min(len(times) - 1, int(q * len(times)))]:.1f}" if times else "n/a"
print(ok, failed, p(0.5), p(0.99))
PY
}
read -r c_ok c_failed c_p50 c_p99 < <(sipp_summary "$soak/calls")
read -r g_ok g_failed _ _ < <(sipp_summary "$soak/churn")
# What the switch counted for the soak's calls (one "call to 9196 over: Stats {...}" line each).
tail -n +"$((log_lines + 1))" "$log" > "$soak/switch.log"
python3 - "$soak/switch.log" <<'PY'
import re, sys
n, tot = 0, {}
keys = ("packets_received", "packets_lost", "late", "rtp_rejected", "concealed", "packets_sent")
for line in open(sys.argv[1], errors="replace"):
    if "call to 9196 over:" not in line:
        continue
    n += 1
    for k in keys:
        m = re.search(k + r": (\d+)", line)
        tot[k] = tot.get(k, 0) + (int(m.group(1)) if m else 0)
print(f"switch: {n} echo calls ended; RTP received {tot.get('packets_received', 0)} (lost {tot.get('packets_lost', 0)}, "
      f"late {tot.get('late', 0)}, rejected {tot.get('rtp_rejected', 0)}; concealed frames {tot.get('concealed', 0)}), "
      f"sent {tot.get('packets_sent', 0)}")
PY
# The rate offered: calls over the time spent starting them (less the last calls' hold).
awk -v a="$t0" -v b="$t1" -v n="$soak_calls" -v h="$soak_hold_ms" \
  'BEGIN {printf "calls: %d offered in %.0f s (%.1f/s)\n", n, b - a, n / (b - a - h / 1000)}'
echo "calls: $c_ok completed, $c_failed failed; call set-up (INVITE to 200, with the challenge;" \
  "SIPp counts whole ms) p50 $c_p50 ms, p99 $c_p99 ms"
echo "churn: $g_ok registrations completed, $g_failed failed"
echo "after: sofia_calls_active{application=\"echo\"} $(metric 'sofia_calls_active{application="echo"}')," \
  "calls rejected by admission: $(metric 'sofia_admission_rejects_total{reason="max_calls"}') max_calls," \
  "$(metric 'sofia_stateless_overload_responses_total') stateless 503s"
echo "RSS start $(mib "$rss_start") MiB, peak $(mib "$rss_peak") MiB, end $(mib "$rss_end") MiB"

###############################################################################
echo
echo "== faults =="
# kill -9 while phones register, then a restart on the same data dir.
"$abuse" $sip register 50 --users-ip 127.0.0.10 --user-base 1000 > "$work/reg50.txt"
(cd "$soak/churn" && sipp $sip -sf "$OLDPWD/fixtures/sipp/register.xml" -s churn -au churn -ap pw-churn -key expires 60 \
  -i 127.0.0.1 -p 25304 -mp 25700 -r 50 -m 400 -l 100 -nostdin -timeout 30s >/dev/null 2>&1) &
churn=$!
sleep 3
bindings() {
  python3 -c 'import json, sys
try:
    print(len(json.load(open(sys.argv[1]))["bindings"]))
except Exception as e:
    print(f"unreadable({type(e).__name__})")' "$work/data/registrations.json"
}
before=$(bindings)
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
after_kill=$(bindings)
t_restart=$(date +%s.%N)
start_switch "$work/data" $port $http 127.0.0.1 "$log" || exit 1
pid=$started
ready=$(awk -v a="$t_restart" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
metric_now=$(metric sofia_registrations)
restored_line=$(grep -c "restored registrations" "$log" || true)
wait $churn || true
one=$("$abuse" $sip register 1 --users-ip 127.0.0.250 --user-base 1099)
sleep 1.5
echo "kill -9 during churn: registrations.json had $before bindings before the kill, $after_kill after it (file intact);"
echo "  restarted and answering in $ready s; 'restored registrations' logged: $restored_line;" \
  "sofia_registrations right after the restart: $metric_now; after one more REGISTER ($(kv "$one" ok)/1 ok): $(metric sofia_registrations)," \
  "file $(bindings) bindings"
reg50=$(cat "$work/reg50.txt")
echo "  (50 users registered before the churn: $(kv "$reg50" ok)/50 ok)"

# Data dir on a full disk.
if [[ $EUID -ne 0 ]]; then
  echo "full disk: skipped (mounting a small tmpfs needs root)"
elif mkdir -p "$work/full" && mount -t tmpfs -o size=512k tmpfs "$work/full" 2> "$work/mount.err"; then
  mounts+=("$work/full")
  start_switch "$work/full" 25264 127.0.0.1:25265 127.0.0.1 "$work/full.log"
  full_pid=$started
  dd if=/dev/zero of="$work/full/filler" bs=4k 2>/dev/null || true
  avail=$(df -k --output=avail "$work/full" | tail -1 | tr -d ' ')
  reg=$("$abuse" 127.0.0.1:25264 register 5 --users-ip 127.0.0.200 --user-base 1000)
  sleep 2
  opts=$("$abuse" 127.0.0.1:25264 probe 1 --from 127.0.0.210 | head -1)
  warned=$(grep -c "cannot save registrations" "$work/full.log" || true)
  echo "full disk (512 KiB tmpfs, ${avail} KiB left): REGISTER $(kv "$reg" ok)/5 ok ($(kv "$reg" failures) failures)," \
    "OPTIONS $(kv "$opts" ok)/$(kv "$opts" attempts) ok; 'cannot save registrations' warnings: $warned"
  grep -m1 "cannot save registrations" "$work/full.log" | sed 's/^/  log: /' || true
  kill "$full_pid" 2>/dev/null || true
  wait "$full_pid" 2>/dev/null || true
  umount "$work/full" && mounts=()
else
  echo "full disk: skipped (mount -t tmpfs failed: $(tr '\n' ' ' < "$work/mount.err"))"
fi

# Media loss and reordering.
ns=sofia-hostile-$$
if [[ $EUID -ne 0 ]]; then
  echo "netem: skipped (network namespaces and tc need root)"
elif ! ip netns add "$ns" 2> "$work/netns.err"; then
  echo "netem: skipped (ip netns add failed: $(tr '\n' ' ' < "$work/netns.err"))"
else
  netns=$ns
  if ! ip netns exec "$ns" tc qdisc add dev lo root netem loss 5% 2> "$work/netem.err"; then
    echo "netem: skipped (tc netem is not usable here: $(tr '\n' ' ' < "$work/netem.err"); the kernel lacks sch_netem)"
  else
    ip netns exec "$ns" tc qdisc del dev lo root
    ip link add hostile0 type veth peer name hostile1
    ip link set hostile1 netns "$ns"
    ip addr add 10.231.0.1/24 dev hostile0
    ip link set hostile0 up
    ip netns exec "$ns" ip addr add 10.231.0.2/24 dev hostile1
    ip netns exec "$ns" ip link set hostile1 up
    ip netns exec "$ns" ip link set lo up
    # Both directions: 5% loss, and a quarter of the packets overtaking the others.
    for side in "tc qdisc add dev hostile0" "ip netns exec $ns tc qdisc add dev hostile1"; do
      $side root netem delay 20ms 5ms loss 5% reorder 25% 50%
    done
    start_switch "$work/netem-data" 25266 127.0.0.1:25267 10.231.0.1 "$work/netem.log"
    netem_pid=$started
    r=$(ip netns exec "$ns" "$abuse" 10.231.0.1:25266 echo-call 10 --from 10.231.0.2 --victim-user 1003)
    echo "netem (5% loss, 25% reordered, 20 ms delay, each way): $r"
    grep "call to 9196 over:" "$work/netem.log" | tail -1 | sed 's/.*over: /  switch: /'
    kill "$netem_pid" 2>/dev/null || true
  fi
fi
r=$("$abuse" $sip echo-call 10 --from 127.0.0.70 --victim-user 1004 --loss 5 --reorder 10)
echo "in-process impairment (5% of frames lost each way, 10% sent late by a frame): $r"
grep "call to 9196 over:" "$log" | tail -1 | sed 's/.*over: /  switch: /'
echo "  (echoed counts audible frames coming back, concealment included; out_of_order_rx counts frames the switch sent back out of order)"

echo
echo "switch log: $(grep -c ' WARN ' "$log" || true) warnings, $(grep -c ' ERROR ' "$log" || true) errors; distinct warnings:"
grep -E ' (WARN|ERROR) ' "$log" | sed -E 's/^[^ ]+ +//; s/[0-9]+(\.[0-9]+)*/N/g' | sort | uniq -c | sort -rn | head -8 | sed 's/^/  /'
