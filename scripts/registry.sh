#!/usr/bin/env bash
# Tag and push the serving image to a container registry (GitHub's by default), or promote
# an image pushed before.
#
#   scripts/registry.sh tags           print the image references this commit gets, one a line
#   scripts/registry.sh push           tag the local image IMAGE_TAG with each and push it
#   scripts/registry.sh promote NAME   pull this commit's image, tag it NAME, push that tag
#
# Tags: the git commit (GITHUB_SHA, else `git rev-parse HEAD`), `model-<md5 of the ONNX
# model>` (hashes.onnx in models/model_card.json, or MODEL_CARD) and, when the ref is a tag
# (GITHUB_REF_TYPE=tag), its name (GITHUB_REF_NAME, e.g. v1.2.0). The repository is
# REGISTRY_IMAGE, by default ghcr.io/GITHUB_REPOSITORY in lower case as registries require.
# GitHub Actions sets the GITHUB_* variables itself. Log in to the registry first.
set -euo pipefail

fail() {
  echo "error: $*" >&2
  exit 1
}

# the Docker reference grammar for a tag
valid_tag() {
  [[ "$1" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]
}

registry_image() {
  local image="${REGISTRY_IMAGE:-}"
  if [[ -z "$image" ]]; then
    [[ -n "${GITHUB_REPOSITORY:-}" ]] || fail "set REGISTRY_IMAGE (e.g. ghcr.io/owner/repo) or GITHUB_REPOSITORY"
    image="ghcr.io/${GITHUB_REPOSITORY}"
  fi
  printf '%s\n' "${image,,}"
}

commit() {
  local sha="${GITHUB_SHA:-}"
  if [[ -z "$sha" ]]; then
    sha=$(git rev-parse HEAD 2>/dev/null) || fail "not in a git repository and GITHUB_SHA is not set"
  fi
  [[ "$sha" =~ ^[0-9a-f]{40}$ ]] || fail "GITHUB_SHA '$sha' is not a 40-character commit hash"
  printf '%s\n' "$sha"
}

model_hash() {
  local card="${MODEL_CARD:-models/model_card.json}" hash
  [[ -f "$card" ]] || fail "$card not found: reproduce or pull the model first (dvc repro)"
  hash=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["hashes"]["onnx"])' "$card" 2>/dev/null) ||
    fail "$card has no hashes.onnx: re-run the export stage (dvc repro)"
  [[ "$hash" =~ ^[0-9a-f]{32}$ ]] || fail "$card: hashes.onnx '$hash' is not an md5 hash"
  printf '%s\n' "$hash"
}

tags() {
  local image sha model refs
  image=$(registry_image)
  sha=$(commit)
  model=$(model_hash)
  refs=("$image:$sha" "$image:model-$model")
  if [[ "${GITHUB_REF_TYPE:-}" == tag ]]; then
    valid_tag "${GITHUB_REF_NAME:-}" || fail "git tag '${GITHUB_REF_NAME:-}' is not a valid image tag (letters, digits, _ . -)"
    refs+=("$image:$GITHUB_REF_NAME")
  fi
  printf '%s\n' "${refs[@]}"
}

push() {
  local local_image="${IMAGE_TAG:-mlpipeline-serve:latest}" refs ref
  refs=$(tags)
  docker image inspect "$local_image" >/dev/null 2>&1 || fail "image $local_image not found: run \`make image\` first"
  while read -r ref; do
    docker tag "$local_image" "$ref"
    docker push "$ref"
    echo "pushed $ref"
  done <<<"$refs"
}

promote() {
  local name="${1:-}" image sha
  valid_tag "$name" || fail "usage: scripts/registry.sh promote NAME (a valid image tag, e.g. production)"
  image=$(registry_image)
  sha=$(commit)
  docker pull "$image:$sha"
  docker tag "$image:$sha" "$image:$name"
  docker push "$image:$name"
  echo "promoted $image:$sha to $image:$name"
}

case "${1:-}" in
  tags) tags ;;
  push) push ;;
  promote) promote "${2:-}" ;;
  *)
    echo "usage: scripts/registry.sh tags|push|promote NAME" >&2
    exit 2
    ;;
esac
