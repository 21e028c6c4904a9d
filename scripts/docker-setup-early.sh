#!/usr/bin/env bash
# Starts the Docker engine's setup (../shared/docker/setup.sh, or BLOGPUSH_DOCKER_SETUP) in the
# background and returns at once: `make test` runs it before its installs, so the minutes a new
# machine needs for the engine and its base images pass beside them instead of inside the test
# run. tests/fixtures_docker.py waits for it (BLOGPUSH_DOCKER_EARLY names the folder below) and
# stops the daemon at the end if this started it, as it does when it runs the script itself.
# Does nothing where the script is missing or we are not root: the fixture then says why it skips.
#
# Usage: scripts/docker-setup-early.sh FOLDER
#   FOLDER/pid    the background job        FOLDER/log    the script's output
#   FOLDER/rc     its exit code, once done  FOLDER/times  its start and end (seconds since the epoch)
#   FOLDER/daemon-was-up   1 if a daemon answered before the script ran, else 0
set -euo pipefail
state=${1:?usage: $0 FOLDER}
cd "$(dirname "$0")/.."
script=${BLOGPUSH_DOCKER_SETUP:-../shared/docker/setup.sh}
rm -rf "$state"
if [ "$(id -u)" -ne 0 ] || [ ! -f "$script" ]; then
  exit 0
fi
mkdir -p "$state"
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then echo 1; else echo 0; fi > "$state/daemon-was-up"
(
  began=$(date +%s.%N)
  code=0
  bash "$script" > "$state/log" 2>&1 || code=$?
  echo "$began $(date +%s.%N)" > "$state/times"
  echo "$code" > "$state/rc.tmp" && mv "$state/rc.tmp" "$state/rc"
) < /dev/null > /dev/null 2>&1 &
echo $! > "$state/pid"
