#!/usr/bin/env bash
# Install Prometheus's server and promtool from the Debian/Ubuntu package when either is
# missing: the monitoring tests (tests/monitoring) run both. Needs root or sudo.
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
sudo=()
if ((EUID != 0)); then sudo=(sudo); fi
"${sudo[@]}" apt-get update -qq >/dev/null
# the package's service is not started by this: the tests run their own server on loopback
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  prometheus >/dev/null
command -v promtool
