#!/usr/bin/env bash
# Builds the Dockerfile with podman (no Docker engine runs here) and checks the image:
# `check-config` runs inside it as a non-root user, and `serve` binds SIP and stops
# cleanly on SIGTERM. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "container test FAILED: $*" >&2; exit 1; }

# podman, runc and a Debian bookworm base image built from Debian packages.
scripts/podman-base-image.sh >/dev/null

# A builder image carrying the host's Rust toolchain, since no Rust image can be pulled,
# and the host's extra CA certificates, since the registries may sit behind a TLS proxy
# the host trusts (the build stage's ca-certificates install picks them up).
rust_version=$(rustc --version | awk '{print $2}')
builder=localhost/sofia-rust:$rust_version-ca
if ! podman image exists "$builder"; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  sysroot=$(rustc --print sysroot)
  mkdir -p "$ctx/rust" "$ctx/ca"
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  cat > "$ctx/Containerfile" <<'CONTAINERFILE'
FROM docker.io/library/debian:bookworm-slim
COPY ca /usr/local/share/ca-certificates
COPY rust /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH
CONTAINERFILE
  podman build --pull=never --isolation=chroot -q -t "$builder" -f "$ctx/Containerfile" "$ctx" >/dev/null
fi

image=localhost/sofia-phone:test
echo "building $image (builder $builder)"
log=$(mktemp)
if ! podman build --pull=never --isolation=chroot --network=host \
  --build-arg RUST_IMAGE="$builder" -t "$image" . >"$log" 2>&1; then
  tail -n 40 "$log"
  fail "podman build failed"
fi
tail -n 2 "$log"

out=$(podman run --rm --network host "$image" check-config) || fail "check-config exited $?"
echo "$out"
grep -q '^sip       udp 0.0.0.0:5060$' <<<"$out" || fail "check-config did not show SIP on udp 5060"
grep -q '^models    /opt/sofia-phone/models$' <<<"$out" || fail "models dir is not the image's"
uid=$(podman run --rm --entrypoint id "$image" -u)
[[ $uid != 0 ]] || fail "the image runs as root"

# The image names the instruction sets its Whisper was compiled for, and serve refuses
# to start on a CPU without them (instead of dying of SIGILL at the first call). Proof:
# a flags file naming an extension this CPU lacks stops serve with the fix.
flags=$(podman run --rm --entrypoint cat "$image" /opt/sofia-phone/build-cpu-flags) \
  || fail "the image has no /opt/sofia-phone/build-cpu-flags"
grep -qw avx2 <<<"$flags" || fail "build-cpu-flags does not name avx2: $flags"
absent=$(for f in amx_tile amx_int8 amx_bf16 avx512_bf16 avx512ifma avx_vnni avx512vbmi; do
  grep -qw "$f" /proc/cpuinfo || { echo "$f"; break; }; done)
[[ -n $absent ]] || fail "this CPU has every extension the CPU check could be tested with"
fake=$(mktemp)
echo "avx2 $absent" > "$fake" && chmod 644 "$fake"
if out=$(podman run --rm --network host -v "$fake:/tmp/build-cpu-flags:ro" \
  -e SOFIA_BUILD_CPU_FLAGS_FILE=/tmp/build-cpu-flags "$image" serve 2>&1); then
  fail "serve started on a CPU lacking $absent"
fi
rm -f "$fake"
grep -q "lacks them" <<<"$out" && grep -qw "$absent" <<<"$out" && grep -q "SOFIA_CPU=portable" <<<"$out" \
  || fail "serve did not name the missing $absent and the fix: $out"

# serve: bind SIP on a free loopback port, load the voice agent from the image's models,
# answer /health, then stop with SIGTERM.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
http_port=$(free_port)
name=sofia-phone-test-$$
podman run -d --name "$name" --network host -e SOFIA_SIP_LISTEN=127.0.0.1 \
  -e SOFIA_SIP_PORT="$port" -e SOFIA_HTTP_ADDR="127.0.0.1:$http_port" \
  -e SOFIA_USERS=1000:container-secret "$image" >/dev/null
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
# (Logs are read into a variable: `grep -q` closing a pipe early fails under pipefail.)
for _ in $(seq 1 100); do
  logs=$(podman logs "$name" 2>&1)
  grep -q "listening for SIP on tcp 127.0.0.1:$port" <<<"$logs" && break
  podman container exists "$name" || fail "serve exited: $logs"
  sleep 0.2
done
logs=$(podman logs "$name" 2>&1)
grep -q "listening for SIP on udp 127.0.0.1:$port" <<<"$logs" || fail "serve did not bind SIP: $logs"
# The agent loads Whisper, Piper (with espeak-ng's data) and Silero, and synthesizes its
# prompts: proof that the image carries everything the voice pipeline needs.
for _ in $(seq 1 300); do
  logs=$(podman logs "$name" 2>&1)
  grep -q "voice agent ready\|voice agent unavailable" <<<"$logs" && break
  sleep 0.2
done
grep -q "voice agent ready" <<<"$logs" || fail "the voice agent did not load: $logs"
health=$(curl -sf "http://127.0.0.1:$http_port/health") || fail "no /health on $http_port"
grep -q '"state":"ready"' <<<"$health" || fail "/health does not show the agent ready: $health"
metrics=$(curl -sf "http://127.0.0.1:$http_port/metrics") || fail "no /metrics on $http_port"
grep -q '^sofia_registrations ' <<<"$metrics" || fail "/metrics has no sofia_registrations: $metrics"
podman stop -t 10 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
[[ $code == 0 ]] || fail "serve exited $code on SIGTERM"
echo "container: check-config, serve, voice agent, /health and /metrics ok (uid $uid)"
