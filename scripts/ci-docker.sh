#!/usr/bin/env bash
# The CI run with the container tests required (not yet wired into .ci/run: see the closing note
# of issue 4). From a clean clone: install everything and run the test suite, the container
# tests included. They need a Docker daemon and a base image: ../shared/tools/local-base-image.sh
# provides both (starting a daemon if none answers) and prints the image tag on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."  # repository root

# stop the daemon at the end, but only one this script started
if docker info >/dev/null 2>&1; then started_dockerd=0; else started_dockerd=1; fi
stop_dockerd() {
  ((started_dockerd)) && [[ -f /var/run/docker.pid ]] || return 0
  local pid
  pid=$(cat /var/run/docker.pid)
  # a stale pid file could name another process by now
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 0
  kill "$pid" 2>/dev/null || return 0
  # it removes its pid file on exit; wait, so that a next daemon can start
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
}
trap stop_dockerd EXIT

BASE_IMAGE=$(../shared/tools/local-base-image.sh | tail -1)
export BASE_IMAGE
# here the container tests must run: fail them, rather than skip, if no daemon answers
export MLPIPELINE_REQUIRE_DOCKER=1
make lint
make test
# the deploy workflow's build steps as it runs them (smoke builds the image first)
make pipeline
make smoke
