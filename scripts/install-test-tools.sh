#!/usr/bin/env bash
# Install, from the Debian/Ubuntu packages, the programs the tests run where they are missing:
#   prometheus   prometheus and promtool (tests/monitoring; promtool in the fast tier too)
#   wrk          the load generator of the serving and drift benchmarks (make test-all)
#   qemu-user    qemu-x86_64, the cross-CPU benchmark's emulator (make test-all)
#   openjdk-17-jre-headless   java, which the Spark engine's tests run Spark on (make test-all)
# Usage: scripts/install-test-tools.sh [PACKAGE...]   (default: all four). Needs root or sudo.
set -euo pipefail
declare -A commands=([prometheus]="prometheus promtool" [wrk]="wrk" [qemu-user]="qemu-x86_64"
  [openjdk-17-jre-headless]="java")
(($#)) || set -- prometheus wrk qemu-user openjdk-17-jre-headless
missing=()
for package in "$@"; do
  [[ -v "commands[$package]" ]] || { echo "error: unknown package '$package': one of ${!commands[*]}" >&2; exit 2; }
  for command in ${commands[$package]}; do
    command -v "$command" >/dev/null || { missing+=("$package"); break; }
  done
done
((${#missing[@]})) || exit 0
sudo=()
if ((EUID != 0)); then sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq >/dev/null
# installing starts no service: the tests run their own servers on loopback
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
