#!/usr/bin/env bash
# Audit the locked set (uv.lock, every group and extra) for known vulnerabilities with
# pip-audit against OSV. Exits 1 on any finding not listed in audit-ignore.txt, and on any
# entry there whose review date has passed.
#
#   scripts/audit.sh          (make audit; part of make lint)
#
# audit-ignore.txt: one vulnerability a line, `ID REVIEW-BY REASON`, e.g.
#   GHSA-xxxx-xxxx-xxxx 2027-03-01 only reachable through the CLI we never call
# Settings: AUDIT_OSV_URL (an OSV-compatible query endpoint; default OSV's own), SKIP_AUDIT
# (a reason: the audit is skipped, saying so, where no vulnerability service can be reached).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${SKIP_AUDIT:-}" ]]; then
  echo "audit: SKIPPED, not run: $SKIP_AUDIT"
  exit 0
fi
bin="${VENV:-.venv}/bin"
uv=$(command -v uv || echo "$bin/uv")
[[ -x "$bin/pip-audit" && -x "$uv" ]] || { echo "error: pip-audit or uv not found: run \`make install-dev\`" >&2; exit 1; }

ignores=()
today=$(date +%F)
if [[ -f audit-ignore.txt ]]; then
  while read -r id review reason; do
    [[ -z "$id" || "$id" == \#* ]] && continue
    [[ "$review" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ && -n "$reason" ]] ||
      { echo "error: audit-ignore.txt: '$id $review $reason' is not ID YYYY-MM-DD REASON" >&2; exit 1; }
    [[ "$review" > "$today" || "$review" == "$today" ]] ||
      { echo "error: audit-ignore.txt: $id was to be reviewed by $review: review it, then move the date or drop the line" >&2; exit 1; }
    ignores+=(--ignore-vuln "$id")
  done < audit-ignore.txt
fi

requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$uv" export --locked --all-extras --all-groups --no-emit-project --quiet --output-file "$requirements"
"$bin/pip-audit" --requirement "$requirements" --no-deps --disable-pip --progress-spinner off \
  --vulnerability-service osv ${AUDIT_OSV_URL:+--osv-url "$AUDIT_OSV_URL"} "${ignores[@]}"
