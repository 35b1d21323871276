#!/usr/bin/env bash
# Installs what sofia-phone needs on Debian bookworm, builds it and fetches the models.
# Idempotent and quick when everything is already there. Run as root (apt-get).
#
#   scripts/setup.sh run    build packages, release build, models
#   scripts/setup.sh test   also the test peers (SIPp, baresip, linphone, espeak-ng, sox)
#
# The build directory is $CARGO_TARGET_DIR, default ~/.cache/sofia-phone/target: outside
# the checkout, so a fresh clone still builds incrementally.
set -euo pipefail
mode=${1:-run}
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}

say() { printf 'setup: %s\n' "$*"; }

# Debian packages: to build (whisper.cpp needs cmake and clang; lancedb needs protoc and
# the well-known .proto files; audiopus needs libopus; piper's espeak-ng needs libsonic;
# ort's build script links OpenSSL) and, for tests, real SIP peers.
packages=(build-essential ca-certificates curl git cmake clang libclang-dev protobuf-compiler libprotobuf-dev
          libopus-dev libsonic-dev libssl-dev pkg-config python3 iproute2)
if [[ $mode == test ]]; then
  # python3-numpy runs Smart Turn's reference feature code in tests/voice_turn.rs.
  packages+=(sip-tester baresip linphone-cli espeak-ng sox python3-numpy)
fi
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: Debian bookworm's rustc is too old for our dependencies; use rustup's stable.
if ! command -v cargo >/dev/null 2>&1; then
  if [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
  else
    say "installing Rust with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH=$HOME/.cargo/bin:$PATH
  fi
fi

if [[ $mode == test ]]; then
  cargo build --locked --bins
  bin=$CARGO_TARGET_DIR/debug/sofia-phone
else
  cargo build --locked --release --bins
  bin=$CARGO_TARGET_DIR/release/sofia-phone
fi

# Model files (Whisper, Piper, VAD, embeddings, onnxruntime): verified by sha256, and a
# no-op when they are already there.
"$bin" models fetch
say "ok: $bin"
