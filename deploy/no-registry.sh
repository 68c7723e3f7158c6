#!/usr/bin/env bash
# Prepare this machine to build tellm's images when no image registry can be reached (Debian's
# package mirror and PyPI still can). Idempotent; run as root from anywhere:
#   1. a Debian base image LOCAL_BASE_IMAGE (default local/debian:bookworm) bootstrapped with
#      mmdebstrap through apt and imported into Docker; the root filesystem is streamed, no tarball
#      is left behind (and none can land in the build context);
#   2. the CA bundle this machine's pip trusts (PIP_CERT or pip's `global.cert`), copied to
#      docker/build-ca/ca.crt (git-ignored), which only the builder stage reads.
# Then: docker-compose -f docker-compose.yml -f deploy/no-registry.yml up -d --build (docs/deployment.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${LOCAL_BASE_IMAGE:-local/debian:bookworm}"
SUITE="${LOCAL_BASE_SUITE:-bookworm}"

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  command -v mmdebstrap >/dev/null || { echo "no-registry: apt-get install mmdebstrap" >&2; exit 1; }
  echo "no-registry: bootstrapping $BASE from Debian $SUITE (mmdebstrap, about a minute)" >&2
  mmdebstrap --quiet --variant=minbase "$SUITE" - | docker import - "$BASE" >/dev/null
fi

cert="${PIP_CERT:-$(pip3 config get global.cert 2>/dev/null || true)}"
if [[ -n "$cert" && -f "$cert" ]] && ! cmp -s "$cert" "$ROOT/docker/build-ca/ca.crt"; then
  cp "$cert" "$ROOT/docker/build-ca/ca.crt"
  echo "no-registry: pip's CA bundle copied to docker/build-ca/ca.crt (builder stage only)" >&2
fi
