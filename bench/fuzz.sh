#!/usr/bin/env bash
# Fuzzing (issue #10): runs every cargo-fuzz target in fuzz/ for a bounded time and
# fails if any of them crashed. Targets: sip_parse, sip_framer, digest_parse,
# sdp_negotiate, media_session, jitter_buffer, endpoint (fuzz/fuzz_targets/*.rs).
#
#   bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 300 s, all targets)
#
# Works on the stable toolchain: cargo-fuzz passes nightly-only -Z flags (the address
# sanitizer, coverage instrumentation), which RUSTC_BOOTSTRAP=1 lets stable accept.
# Builds are optimised with debug assertions and overflow checks on (-O -a), as the
# test suite's debug builds are. Seed corpora are copied from fixtures/ into
# $FUZZ_WORK/corpus/<target> (kept between runs, so later runs start from what earlier
# ones found); crash inputs land in fuzz/artifacts/<target>/ (git-ignored). Reproduce
# one with: RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-300}
shift || true
export PATH=$HOME/.cargo/bin:$PATH
export RUSTC_BOOTSTRAP=1
FUZZ_WORK=${FUZZ_WORK:-$HOME/.cache/sofia-phone/fuzz-target}
all_targets=(sip_parse sip_framer digest_parse sdp_negotiate media_session jitter_buffer endpoint)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

echo "== building fuzz targets"
mkdir -p "$FUZZ_WORK/logs"
if ! (cd fuzz && cargo fuzz build -O -a --target-dir "$FUZZ_WORK") >"$FUZZ_WORK/logs/build.log" 2>&1; then
  cat "$FUZZ_WORK/logs/build.log"
  exit 1
fi
grep -E '^(warning|error)' -A6 "$FUZZ_WORK/logs/build.log" || true

# Seeds: SIP captures and torture tests, SDP offers, digest credentials. Files with a
# leading selector byte for targets that read one.
seed() { # seed TARGET NAME PREFIX FILE...
  local dir=$FUZZ_WORK/corpus/$1 name=$2 prefix=$3
  shift 3
  mkdir -p "$dir"
  { printf "$prefix"; cat "$@"; } >"$dir/seed-$name"
}
sip_files=()
while IFS= read -r f; do sip_files+=("$f"); done < <(
  find fixtures/rfc4475 fixtures/rfc5118/wire-crlf fixtures/softphones -type f \
    \( -name '*.dat' -o -name '*.sip' -o -path '*/wire-crlf/*' \) | sort)
for f in "${sip_files[@]}"; do
  n=$(echo "$f" | tr '/' '_')
  seed sip_parse "$n" '' "$f"
  seed sip_framer "$n" '\377\377\002\007\100' "$f" "$f"
done
for dir in fixtures/softphones/*/ fixtures/softphones/baresip-1.0.0/opus_dtmf/; do
  mapfile -t session < <(find "$dir" -maxdepth 1 -name '*.sip' | sort)
  if [ ${#session[@]} -gt 0 ]; then
    seed sip_framer "session-$(basename "$dir")" '\377\037\000' "${session[@]}"
  fi
done
i=0
while IFS= read -r line; do
  i=$((i + 1))
  mkdir -p "$FUZZ_WORK/corpus/digest_parse"
  printf '\000%s' "$line" >"$FUZZ_WORK/corpus/digest_parse/seed-capture-$i"
done < <(grep -rhE '^(Proxy-)?Authorization:' fixtures/softphones | sed -E 's/^[A-Za-z-]+: *//' | tr -d '\r')
printf '\001Digest username="alice", realm="sofia.test", nonce="{NONCE}", uri="sip:192.0.2.1", response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="c0ffee", qop=auth, nc=00000001' \
  >"$FUZZ_WORK/corpus/digest_parse/seed-nonce"
for f in fixtures/sdp/*.sdp; do
  seed sdp_negotiate "$(basename "$f")-0" '\000' "$f"
  seed sdp_negotiate "$(basename "$f")-9" '\011' "$f"
done
for t in media_session jitter_buffer endpoint; do mkdir -p "$FUZZ_WORK/corpus/$t"; done

failed=0
summary=()
for t in "${targets[@]}"; do
  artifacts=$root/fuzz/artifacts/$t
  mkdir -p "$artifacts"
  marker=$(mktemp)
  log=$FUZZ_WORK/logs/$t.log
  mkdir -p "$(dirname "$log")"
  echo "== $t (${seconds}s)"
  set +e
  (cd fuzz && cargo fuzz run -O -a --target-dir "$FUZZ_WORK" "$t" "$FUZZ_WORK/corpus/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1)
  rc=$?
  set -e
  execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  rate=$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{s+=$2} END {print s+0}')
  new=$(find "$artifacts" -type f -newer "$marker")
  crashes=$(printf '%s' "$new" | grep -c . || true)
  rm -f "$marker"
  units=$(find "$FUZZ_WORK/corpus/$t" -type f | wc -l)
  line="$t: ${execs} execs (${rate}/s), corpus ${units}, crashes ${crashes}"
  if [ "$crashes" -gt 0 ] || [ "$rc" -ne 0 ]; then
    failed=1
    line="$line, exit $rc (log: $log)"
    grep -h -m1 -A12 -E '^(==[0-9]+==ERROR|thread .* panicked)' "$log" || tail -20 "$log"
    printf '%s\n' "$new"
  fi
  echo "$line"
  summary+=("$line")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
