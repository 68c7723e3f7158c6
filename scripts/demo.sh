#!/usr/bin/env bash
# The main job: install what is needed, then run tellm's demo (as root on Debian): the inference
# service on the CPU, the controller, a Mininet scenario with replayed traffic, once under
# shortest-path routing and once under tellm; live MLU table, then a summary and tellm-demo/mlu.png.
# Extra arguments go to `tellm demo` (see `tellm demo --help`), e.g. --scenario abilene --duration 60.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
bash "$ROOT/mininet_scenarios/ovs.sh" install
exec tellm demo --scenario diamond --duration 60 "$@"
