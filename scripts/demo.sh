#!/usr/bin/env bash
# The main job: install what is needed, then run tellm's demo. Run as root on Debian.
# Extra arguments go to `tellm demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec tellm eval --topology Abilene --tm gravity --count 5 "$@"
