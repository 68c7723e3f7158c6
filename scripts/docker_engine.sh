#!/usr/bin/env bash
# Make sure a Docker engine answers (the compose integration test needs one). Without systemd, start
# dockerd in the background (log: /var/log/tellm-dockerd.log) and wait until `docker info` answers.
# Exit status 0 when the engine answers, 1 (with the reason on stderr) when it cannot: the compose
# test then skips and says why. Used by scripts/test.sh; safe to run again.
set -uo pipefail
LOG="${TELLM_DOCKERD_LOG:-/var/log/tellm-dockerd.log}"
WAIT_SECONDS="${TELLM_DOCKERD_WAIT_SECONDS:-30}"

if ! command -v docker >/dev/null; then
  echo "docker_engine: no docker client (apt-get install docker.io)" >&2; exit 1
fi
docker info >/dev/null 2>&1 && exit 0
if ! command -v dockerd >/dev/null; then
  echo "docker_engine: no Docker engine (apt-get install docker.io)" >&2; exit 1
fi
if [[ $EUID -ne 0 ]]; then
  echo "docker_engine: the engine is not running and only root can start it" >&2; exit 1
fi
echo "docker_engine: starting dockerd (log $LOG)" >&2
nohup dockerd >>"$LOG" 2>&1 </dev/null &
for ((i = 0; i < WAIT_SECONDS; i++)); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "docker_engine: dockerd did not answer within ${WAIT_SECONDS} s; see $LOG" >&2
exit 1
