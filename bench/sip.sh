#!/usr/bin/env bash
# SIP benchmark: SIPp against `sofia-phone serve` and against Kamailio (an authenticating
# registrar for the same users) on loopback, in one run.
#
#   bench/sip.sh [SECONDS_PER_STEP]      (default 10)
#
# Reports, for each server: the highest REGISTER-with-digest rate (registrations/s, each
# a 401 challenge plus an authenticated REGISTER) sustained with 0% failed calls, and
# the p50/p99 response time of the authenticated REGISTER at that rate; for sofia-phone
# also INVITE-ACK-BYE calls/s (with digest, to the echo extension, no RTP). Kamailio is
# a proxy with no UAS, so it has no call figure. Everything stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
step_secs=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
command -v kamailio >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio >/dev/null
}
command -v sipp >/dev/null || scripts/setup.sh test
cargo build --release --locked --bin sofia-phone -q
bin=$CARGO_TARGET_DIR/release/sofia-phone

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# 200 users u100..u299, password pw-<user>, on both servers; the load registers u100.
users=""
for i in $(seq 100 299); do users+="u$i:pw-u$i,"; done
users=${users%,}

port_sofia=25060
port_kam=25070
# A second switch takes the calls, so an overloaded REGISTER step (and what it leaves
# behind: bindings, nonces, a blocked source) cannot spoil the call figures.
port_calls=25080
declare -A server_pid
for p in $port_sofia $port_calls; do
  rtp=30000-31999
  [[ $p == "$port_sofia" ]] && rtp=32000-32099
  SOFIA_LOG=warn SOFIA_HTTP_ADDR=127.0.0.1:0 SOFIA_SIP_LISTEN=127.0.0.1 SOFIA_SIP_PORT=$p SOFIA_USERS=$users \
    SOFIA_DATA_DIR=$work/sofia-data-$p SOFIA_RTP_PORTS=$rtp \
    "$bin" serve --config sip-profiles/default.toml > "$work/sofia-$p.log" 2>&1 &
  pids+=($!)
  server_pid[$p]=$!
done

cat > "$work/kamailio.cfg" <<EOF
#!KAMAILIO
debug=0
log_stderror=yes
memdbg=5
memlog=5
fork=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:$port_kam
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("auth", "nonce_count", 1)
modparam("auth", "qop", "auth")
modparam("auth", "secret", "bench-secret")
request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  if (is_method("REGISTER")) {
    \$var(pw) = "pw-" + \$fU;
    if (!pv_www_authenticate("\$td", "\$var(pw)", "0")) {
      www_challenge("\$td", "0");
      exit;
    }
    if (!save("location")) { sl_reply_error(); }
    exit;
  }
  sl_send_reply("404", "Not Here");
}
EOF
kamailio -f "$work/kamailio.cfg" -DD -E -w "$work" > "$work/kamailio.log" 2>&1 &
pids+=($!)

wait_port() {
  for _ in $(seq 1 100); do
    ss -lun | grep -q "127.0.0.1:$1 " && return 0
    sleep 0.1
  done
  echo "bench: nothing listens on udp $1" >&2
  cat "$work"/*.log >&2
  exit 1
}
wait_port $port_sofia
wait_port $port_calls
wait_port $port_kam

# CPU time (clock ticks) used so far by the server on a port: the switch's process, or
# every Kamailio process (it forks workers).
server_ticks() {
  local p pids_of
  if [[ $1 == "$port_kam" ]]; then pids_of=$(pgrep -f "$work/kamailio.cfg"); else pids_of=${server_pid[$1]}; fi
  for p in $pids_of; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null; done | awk '{s += $1} END {print s + 0}'
}
ticks_per_sec=$(getconf CLK_TCK)

# One load step: prints "rate ok failed p50 p99 offered" for the authenticated REGISTER;
# the server's CPU time over the step goes to cpu.txt.
register_step() {
  local port=$1 rate=$2 dir="$work/step-$1-$2" t0 t1
  mkdir -p "$dir"
  t0=$(server_ticks "$port")
  (cd "$dir" && sipp "127.0.0.1:$port" -sf "$OLDPWD/fixtures/sipp/register_load.xml" \
     -s u100 -au u100 -ap pw-u100 -i 127.0.0.1 -p $((port + 1000)) -r "$rate" -m $((rate * step_secs)) \
     -l $((rate * 4)) -nostdin -timeout $((step_secs * 3))s -trace_stat -stf stats.csv \
     -trace_rtt -rtt_freq 1 >/dev/null 2>&1) || true
  t1=$(server_ticks "$port")
  echo "$port $rate $t0 $t1" >> "$work/cpu.txt"
  summarize "$dir" "$rate" 0
}

call_step() {
  local port=$1 rate=$2 dir="$work/call-$1-$2"
  mkdir -p "$dir"
  (cd "$dir" && sipp "127.0.0.1:$port" -sf "$OLDPWD/fixtures/sipp/call.xml" \
     -s 9196 -au u100 -ap pw-u100 -key caller u100 -key rtp_port 9 -d 1000 \
     -i 127.0.0.1 -p $((port + 2000)) -r "$rate" -m $((rate * step_secs)) -l $((rate * 4)) \
     -nostdin -timeout $((step_secs * 3 + 5))s -trace_stat -stf stats.csv \
     -trace_rtt -rtt_freq 1 >/dev/null 2>&1) || true
  summarize "$dir" "$rate" 1
}

# Prints "rate ok failed p50 p99 offered" for a step's SIPp statistics; $3 is how long
# each call is held (seconds), so that the offered rate excludes the last calls' tail.
summarize() {
  python3 - "$1" "$2" "$3" <<'PY'
import csv, glob, sys, statistics
d, rate, hold = sys.argv[1], sys.argv[2], float(sys.argv[3])
ok = failed = 0
achieved = 0.0
for path in glob.glob(d + "/stats.csv") + glob.glob(d + "/*_.csv"):
    rows = list(csv.reader(open(path), delimiter=";"))
    if len(rows) >= 2:
        h, last = rows[0], rows[-1]
        ok = int(last[h.index("SuccessfulCall(C)")])
        failed = int(last[h.index("FailedCall(C)")])
        # Calls SIPp started over the time it spent starting them (the elapsed time
        # less the last calls' hold time): the rate it really offered.
        epoch = lambda col: float(last[h.index(col)].split("\t")[-1])
        elapsed = epoch("CurrentTime") - epoch("StartTime") - hold
        achieved = int(last[h.index("OutgoingCall(C)")]) / max(elapsed, 1e-3)
times = []
for path in glob.glob(d + "/*_rtt.csv"):
    for row in csv.reader(open(path), delimiter=";"):
        try:
            times.append(float(row[1]))
        except (ValueError, IndexError):
            pass
times.sort()
p = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
print(rate, ok, failed, f"{p(0.50):.2f}", f"{p(0.99):.2f}", f"{achieved:.0f}")
PY
}

# Steps up the rate until a step fails; prints the best clean step. A step is clean when
# no call failed, SIPp really offered at least 95% of the rate asked (past its own
# limit it falls behind), and the p99 response time stays under 500 ms, RFC 3261's T1:
# slower than that, the phone has already retransmitted, so the server is overloaded
# even if every registration ends well.
climb() {
  local kind=$1 port=$2 best="none"
  shift 2
  for rate in "$@"; do
    read -r r ok failed p50 p99 achieved < <($kind "$port" "$rate")
    echo "  $kind port $port rate $r/s (offered $achieved/s): ok $ok failed $failed p50 ${p50} ms p99 ${p99} ms" >&2
    if [[ $failed == 0 && $ok -ge $((rate * step_secs * 98 / 100)) ]] \
      && python3 -c "import sys; sys.exit(not ($achieved >= 0.95 * $rate and $p99 < 500))"; then
      best="$r $p50 $p99"
    else
      break
    fi
  done
  echo "$best"
}

rates=(1000 2000 4000 6000 7000 8000 9000 10000 12000 16000)
echo "REGISTER with digest (challenge + authenticated REGISTER), ${step_secs}s per step (details on stderr)"
read -r s_rate s_p50 s_p99 < <(climb register_step $port_sofia "${rates[@]}")
read -r k_rate k_p50 k_p99 < <(climb register_step $port_kam "${rates[@]}")
echo "calls (INVITE-401-INVITE-200-ACK-BYE to 9196, 1 s each)"
read -r c_rate c_p50 c_p99 < <(climb call_step $port_calls 100 200 400 600 800 1000 1500)

printf '\n%-12s %22s %12s %12s\n' server "REGISTER/s (clean)" "p50 ms" "p99 ms"
printf '%-12s %22s %12s %12s\n' sofia-phone "$s_rate" "${s_p50:-}" "${s_p99:-}"
printf '%-12s %22s %12s %12s\n' kamailio "$k_rate" "${k_p50:-}" "${k_p99:-}"
if [[ $s_rate =~ ^[0-9]+$ && $k_rate =~ ^[0-9]+$ ]]; then
  python3 -c "print(f'ratio sofia-phone/kamailio REGISTER/s: {$s_rate/$k_rate:.2f}')"
fi
# CPU per registration at one rate both servers handled, from the same run: less noisy
# than the saturation point, which SIPp (sharing the 2 cores) also limits.
python3 - "$work/cpu.txt" "$port_sofia" "$port_kam" "$ticks_per_sec" "$step_secs" <<'PY'
import sys
path, sofia, kam, tps, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
cost = {}
for line in open(path):
    port, rate, t0, t1 = line.split()
    cost[(port, int(rate))] = 1e6 * (float(t1) - float(t0)) / tps / (int(rate) * secs)
common = sorted(r for (p, r) in cost if p == sofia and (kam, r) in cost)
for rate in [r for r in common if r >= 2000][:3]:
    s, k = cost[(sofia, rate)], cost[(kam, rate)]
    print(f"server CPU per registration at {rate}/s: sofia-phone {s:.0f} us, kamailio {k:.0f} us (sofia-phone/kamailio {s / k:.2f})")
PY
printf '\n%-12s %22s %12s %12s\n' server "calls/s (clean)" "p50 ms" "p99 ms"
printf '%-12s %22s %12s %12s\n' sofia-phone "$c_rate" "${c_p50:-}" "${c_p99:-}"
echo "(the highest step is the ceiling of the steps tried, not necessarily the server's)"
