#!/usr/bin/env bash
# (Shared workplace tool, kept here so CI on a fresh clone has it.)
# Makes `podman build` / `podman run` work on these machines, which have no Docker engine
# and cannot pull images: bootstraps a Debian base image from Debian packages and imports
# it under the name a Dockerfile uses. Idempotent. Needs root.
#
#   local-base-image.sh [SUITE] [IMAGE_NAME]
#   default: bookworm docker.io/library/debian:bookworm-slim
#
# Then:  podman build --pull=never --isolation=chroot --network=host -t localhost/NAME .
#        podman run --rm --runtime runc --network host localhost/NAME ...
set -euo pipefail
suite=${1:-bookworm}
image=${2:-docker.io/library/debian:${suite}-slim}
need=()
for p in podman runc debootstrap; do command -v "$p" >/dev/null || need+=("$p"); done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# crun cannot set rlimits in this sandbox, and cgroups are hybrid: use runc, no default ulimits.
mkdir -p /etc/containers
if ! grep -q '^default_ulimits' /etc/containers/containers.conf 2>/dev/null; then
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >> /etc/containers/containers.conf
fi
if podman image exists "$image"; then
  echo "local-base-image: $image already present"
  exit 0
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase "$suite" "$rootfs" >/dev/null
tar -C "$rootfs" -c . | podman import - "$image" >/dev/null
echo "local-base-image: imported $image"
