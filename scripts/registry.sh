#!/usr/bin/env bash
# Push the serving image to a container registry (GitHub's by default) by digest, and promote
# a pushed digest once its provenance attestation verifies.
#
#   scripts/registry.sh tags             print the image references this commit gets, one a line
#   scripts/registry.sh push-oci FILE    push the OCI archive FILE (scripts/build-image.sh) under
#                                        each tag, keeping its digest; print the digest (and
#                                        write digest=... to $GITHUB_OUTPUT under GitHub Actions)
#   scripts/registry.sh promote NAME     verify DIGEST's attestation (gh attestation verify),
#                                        then tag that digest NAME (e.g. production)
#
# Tags: the git commit (GITHUB_SHA, else `git rev-parse HEAD`), `model-<md5 of the ONNX
# model>` (hashes.onnx in models/model_card.json, or MODEL_CARD) and, when the ref is a tag
# (GITHUB_REF_TYPE=tag), its name (GITHUB_REF_NAME, e.g. v1.2.0). Tags are only names: what is
# deployed is the digest. The repository is REGISTRY_IMAGE, by default ghcr.io/GITHUB_REPOSITORY
# in lower case as registries require. GitHub Actions sets the GITHUB_* variables itself. Needs
# skopeo (and gh for promote); log in to the registry first.
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

digest_of() {
  [[ "$1" =~ ^sha256:[0-9a-f]{64}$ ]] || fail "'$1' is not an image digest (sha256:<64 hex digits>)"
}

push_oci() {
  local archive="${1:-}" image refs ref digest
  [[ -f "$archive" ]] || fail "OCI archive '$archive' not found: run scripts/build-image.sh first"
  image=$(registry_image)
  refs=$(tags)
  while read -r ref; do
    # --preserve-digests: the registry's manifest is the archive's, byte for byte
    skopeo copy --quiet --preserve-digests "oci-archive:$archive" "docker://$ref"
    echo "pushed $ref" >&2
  done <<<"$refs"
  digest=$(skopeo inspect --format '{{.Digest}}' "docker://$(head -1 <<<"$refs")")
  digest_of "$digest"
  if [[ -n "${GITHUB_OUTPUT:-}" ]]; then printf 'digest=%s\nimage=%s\n' "$digest" "$image" >>"$GITHUB_OUTPUT"; fi
  printf '%s@%s\n' "$image" "$digest"
}

promote() {
  local name="${1:-}" image digest
  valid_tag "$name" || fail "usage: DIGEST=sha256:... scripts/registry.sh promote NAME (a valid image tag, e.g. production)"
  digest="${DIGEST:-}"
  digest_of "$digest"
  image=$(registry_image)
  [[ -n "${GITHUB_REPOSITORY:-}" ]] || fail "set GITHUB_REPOSITORY (owner/repo): attestations are verified against it"
  # the provenance GitHub signed for this digest, made by this repository's workflows
  gh attestation verify "oci://$image@$digest" --repo "$GITHUB_REPOSITORY" >&2 ||
    fail "$image@$digest has no valid provenance attestation from $GITHUB_REPOSITORY: not promoted"
  skopeo copy --quiet --preserve-digests "docker://$image@$digest" "docker://$image:$name"
  echo "promoted $image@$digest to $image:$name"
}

case "${1:-}" in
  tags) tags ;;
  push-oci) push_oci "${2:-}" ;;
  promote) promote "${2:-}" ;;
  *)
    echo "usage: scripts/registry.sh tags|push-oci FILE|promote NAME" >&2
    exit 2
    ;;
esac
