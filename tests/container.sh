#!/usr/bin/env bash
# Builds the Dockerfile with podman (no Docker engine runs here) and checks the image:
# `check-config` runs inside it as a non-root user, and `serve` binds SIP and stops
# cleanly on SIGTERM. Part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "container test FAILED: $*" >&2; exit 1; }

# podman, runc and a Debian bookworm base image built from Debian packages.
scripts/podman-base-image.sh >/dev/null

# A builder image carrying the host's Rust toolchain, since no Rust image can be pulled.
rust_version=$(rustc --version | awk '{print $2}')
builder=localhost/sofia-rust:$rust_version
if ! podman image exists "$builder"; then
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  sysroot=$(rustc --print sysroot)
  mkdir -p "$ctx/rust"
  cp -a "$sysroot/bin" "$sysroot/lib" "$ctx/rust/"
  printf 'FROM docker.io/library/debian:bookworm-slim\nCOPY rust /usr/local/rust\nENV PATH=/usr/local/rust/bin:$PATH\n' > "$ctx/Containerfile"
  podman build --pull=never --isolation=chroot -q -t "$builder" -f "$ctx/Containerfile" "$ctx" >/dev/null
fi

image=localhost/sofia-phone:test
echo "building $image (builder $builder)"
podman build --pull=never --isolation=chroot --network=host \
  --build-arg RUST_IMAGE="$builder" -t "$image" . 2>&1 | tail -n 3

out=$(podman run --rm --network host "$image" check-config) || fail "check-config exited $?"
echo "$out"
grep -q '^sip       udp 0.0.0.0:5060$' <<<"$out" || fail "check-config did not show SIP on udp 5060"
grep -q '^models    /opt/sofia-phone/models$' <<<"$out" || fail "models dir is not the image's"
uid=$(podman run --rm --entrypoint id "$image" -u)
[[ $uid != 0 ]] || fail "the image runs as root"

# serve: bind SIP on a free loopback port, then stop with SIGTERM.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
name=sofia-phone-test-$$
podman run -d --name "$name" --network host -e SOFIA_SIP_LISTEN=127.0.0.1 \
  -e SOFIA_SIP_PORT="$port" -e SOFIA_USERS=1000:container-secret "$image" >/dev/null
cleanup() { podman rm -f "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  podman logs "$name" 2>&1 | grep -q "listening for SIP on tcp 127.0.0.1:$port" && break
  podman container exists "$name" || fail "serve exited: $(podman logs "$name" 2>&1)"
  sleep 0.2
done
podman logs "$name" 2>&1 | grep -q "listening for SIP on udp 127.0.0.1:$port" \
  || fail "serve did not bind SIP: $(podman logs "$name" 2>&1)"
podman stop -t 10 "$name" >/dev/null
code=$(podman inspect "$name" --format '{{.State.ExitCode}}')
[[ $code == 0 ]] || fail "serve exited $code on SIGTERM"
echo "container: check-config and serve ok (uid $uid)"
