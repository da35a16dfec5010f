#!/usr/bin/env bash
# Build the serving image with BuildKit (docker buildx), for a release: once into the local
# daemon (IMAGE_TAG, for the smoke check), then the same build, from the cache, as an OCI
# archive with BuildKit's SBOM and SLSA provenance attached, for the publish job to push by
# digest.
#
#   scripts/build-image.sh OUT.tar    needs the pipeline's model (dvc repro, or pulled)
#
# The build arguments are the ones `make image` passes (python -m mlpipeline.ops.image
# buildargs). Prints the image's manifest digest on its last line.
set -euo pipefail

out="${1:-}"
[[ -n "$out" ]] || { echo "usage: scripts/build-image.sh OUT.tar" >&2; exit 2; }
python="${VENV:-.venv}/bin/python"
[[ -x "$python" ]] || { echo "error: $python not found: run \`make install\` first" >&2; exit 1; }
tag="$("$python" -m mlpipeline.ops.image tag)"  # IMAGE_TAG, else <project>-serve:latest
command -v docker >/dev/null || { echo "error: docker not found" >&2; exit 1; }
docker buildx version >/dev/null 2>&1 || {
  echo "error: docker buildx not found: install Docker's buildx plugin" >&2
  exit 1
}

args=()
while IFS= read -r line; do args+=(--build-arg "$line"); done < <("$python" -m mlpipeline.ops.image buildargs)

# a BuildKit builder of its own: the default `docker` driver exports no OCI archives
builder=mlpipeline-release
docker buildx inspect "$builder" >/dev/null 2>&1 || docker buildx create --name "$builder" --driver docker-container >/dev/null
docker buildx build --builder "$builder" "${args[@]}" --tag "$tag" --load .
docker buildx build --builder "$builder" "${args[@]}" --tag "$tag" \
  --sbom=true --provenance=mode=max --output "type=oci,dest=$out" .
# the digest of the archive's index, the one the registry will give the pushed image
tar -xOf "$out" index.json | "$python" -c 'import json, sys; print(json.load(sys.stdin)["manifests"][0]["digest"])'
