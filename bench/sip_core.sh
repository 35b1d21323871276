#!/usr/bin/env bash
# The SIP core alone (crates/sip, no sockets): core time per authenticated registration
# (REGISTER, 401, REGISTER with digest, 200) in virtual time at a fixed rate, so that
# transactions pile up and expire as they do on a loaded server. This bounds what the
# UDP shell can reach; bench/sip.sh measures the whole switch.
#
#   bench/sip_core.sh [REGISTRATIONS] [RATE]      (default 200000 at 6000/s)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sofia-phone/target}
cargo run --release --locked -q -p sofia-sip --example register_core -- "${1:-200000}" "${2:-6000}"
