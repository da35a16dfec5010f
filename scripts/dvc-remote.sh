#!/usr/bin/env bash
# CI: pull the pipeline's outputs from a DVC remote when one and its credentials are
# configured; otherwise leave them to `dvc repro`, which rebuilds them from the source.
#
#   scripts/dvc-remote.sh plan   say what `pull` would do; under GitHub Actions also write
#                                `pull=true|false` and `oidc=true|false` to $GITHUB_OUTPUT
#   scripts/dvc-remote.sh pull   `dvc pull --allow-missing` if the plan says so; a failed pull
#                                is a warning, not an error: `dvc repro` rebuilds what is missing
#
# The remote: DVC_REMOTE_URL (a secret, set as this checkout's local default remote) or else the
# default remote committed in .dvc/config. Credentials: HAS_OIDC_ROLE=true (the workflow assumes
# a cloud role through OIDC between `plan` and `pull`), HAS_STATIC_KEYS=true (keys passed to the
# pull step), or none for a remote on a local path. Fork pull requests get no secrets: both
# flags are false there, so they rebuild from the source.
set -euo pipefail

# the venv `make install` creates, when the caller has not put it on PATH
if [[ -x "${VENV:-.venv}/bin/dvc" ]]; then PATH="$(cd "${VENV:-.venv}/bin" && pwd):$PATH"; fi
if ! command -v dvc >/dev/null; then
  echo "error: dvc not found: run \`make install\` first (or put a venv with dvc on PATH)" >&2
  exit 1
fi

say() { printf 'dvc-remote: %s\n' "$*"; }

# the remote's URL, from DVC_REMOTE_URL or the default remote of the DVC config; empty if none
remote_url() {
  if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
    printf '%s\n' "$DVC_REMOTE_URL"
    return
  fi
  local name
  name=$(dvc remote default 2>/dev/null) || return 0
  if [[ -n "$name" ]]; then dvc config "remote.$name.url" 2>/dev/null || true; fi
}

is_local() {
  [[ "$1" != *://* || "$1" == file://* ]]
}

# sets PULL, OIDC and REASON
decide() {
  local url
  url=$(remote_url)
  PULL=false
  OIDC=false
  if [[ -z "$url" ]]; then
    REASON="no DVC remote configured (DVC_REMOTE_URL or a default remote in .dvc/config): rebuilding from the source"
  elif [[ "${HAS_OIDC_ROLE:-false}" == true ]]; then
    PULL=true
    OIDC=true
    REASON="pulling from the DVC remote with credentials from an OIDC role"
  elif [[ "${HAS_STATIC_KEYS:-false}" == true ]]; then
    PULL=true
    REASON="pulling from the DVC remote with the configured keys"
  elif is_local "$url"; then
    PULL=true
    REASON="pulling from the DVC remote on a local path"
  else
    REASON="a DVC remote is configured but no credentials are (fork pull request, or secrets not set): rebuilding from the source"
  fi
}

plan() {
  decide
  say "$REASON"
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
    printf 'pull=%s\noidc=%s\n' "$PULL" "$OIDC" >>"$GITHUB_OUTPUT"
  else
    printf 'pull=%s\noidc=%s\n' "$PULL" "$OIDC"
  fi
}

pull() {
  decide
  say "$REASON"
  [[ "$PULL" == true ]] || return 0
  if [[ -n "${DVC_REMOTE_URL:-}" ]]; then
    # config.local is ignored by git: the URL stays out of the working tree's tracked files
    dvc remote add --local --force --default ci "$DVC_REMOTE_URL" >/dev/null
  fi
  # outputs this change alters are not on the remote yet: --allow-missing leaves them to repro
  if dvc pull --allow-missing; then
    say "pull done; \`dvc repro\` rebuilds whatever the remote did not have"
  else
    # a GitHub Actions annotation, plain text elsewhere
    echo "::warning title=dvc pull failed::could not pull from the DVC remote; rebuilding from the source"
  fi
}

case "${1:-}" in
  plan) plan ;;
  pull) pull ;;
  *)
    echo "usage: scripts/dvc-remote.sh plan|pull" >&2
    exit 2
    ;;
esac
