#!/usr/bin/env bash
# The test command: installs what it needs, then runs the whole suite (tests/unit: in-process, seconds;
# tests/integration: real gRPC servers, Prometheus, Open vSwitch + Mininet end to end). Run as root on
# Debian. Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/unit` or `-m "not mininet"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# The compose integration test needs a Docker engine; without one it skips and says why.
bash "$ROOT/scripts/docker_engine.sh" || echo "test: no Docker engine; the compose stack test will be skipped" >&2
exec python -m pytest -q "$@"
