# The training image of the DAG's docker mode (docs/orchestration.md): the pipeline's locked
# environment and a snapshot of the repository at one git revision, where the orchestration
# runner runs one stage per container. The DVC remote's credentials come at run time (an
# Airflow connection), never from the image.
#   make train-image   (python -m mlpipeline.ops.train_image build lays out the context:
#                       lock/, wheels/, and workspace/ = `git archive HEAD` as a one-commit repo)
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# One stage: the venv is installed where it is used. A builder stage's venv would be copied
# into the final image file by file, and stay behind as a second image as large.
FROM ${BASE_IMAGE}
# the workspace belongs to the image's user, itself included: git refuses a repository whose
# folder another user owns
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g app /workspace
# TORCH_INDEX: install torch and torchvision from this index URL (e.g. PyTorch's CPU-only index), or
# from /tmp/build/wheels (the context's wheels/, whose files stay in this layer), without the
# CUDA libraries; empty: the lock's torch
ARG TORCH_INDEX=
COPY lock/ /tmp/build/lock/
COPY wheels/ /tmp/build/wheels/
# uv at the lock's version, hash-checked, in a folder removed at the end (uv trusts the
# image's certificate store, as pip does); then the lock's packages (the s3 extra for DVC
# remotes on S3; no dev group), hash-checked, their bytecode compiled: the image's user
# cannot write caches into the venv, and each stage's container would compile its imports
# again
RUN cd /tmp/build/lock \
 && python locked.py uv.lock uv > /tmp/build/uv.txt \
 && python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes \
      --target /tmp/build/uv -r /tmp/build/uv.txt \
 && uv=/tmp/build/uv/bin/uv \
 && export UV_NATIVE_TLS=1 \
 && if [ -n "$TORCH_INDEX" ]; then \
      skip="--no-emit-package torch --no-emit-package torchvision $(sed -n 's/^name = "\(nvidia-[^"]*\|cuda-[^"]*\|triton\)"$/--prune \1/p' uv.lock)"; \
    fi \
 && $uv export --frozen --no-default-groups --extra s3 --no-emit-project $skip --quiet \
      --output-file /tmp/build/train.txt \
 && $uv venv --quiet /opt/venv \
 && $uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
      --require-hashes --no-deps -r /tmp/build/train.txt \
 && if [ -n "$TORCH_INDEX" ]; then \
      torch=$(sed -n '/^name = "torch"$/{n;s/^version = "\(.*\)"$/\1/p;}' uv.lock); \
      vision=$(sed -n '/^name = "torchvision"$/{n;s/^version = "\(.*\)"$/\1/p;}' uv.lock); \
      if [ -d "$TORCH_INDEX" ]; then from="--no-index --find-links $TORCH_INDEX"; \
      else from="--index-url $TORCH_INDEX"; fi; \
      $uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
        --no-deps $from "torch==$torch" "torchvision==$vision"; \
    fi \
 && cd / && rm -rf /tmp/build

USER app
WORKDIR /workspace
CMD ["python", "-m", "mlpipeline.ops.orchestrate", "--help"]
# Every instruction but the workspace's copy comes before the revision's ENV and labels, which
# change with each commit: the venv's layer stays cached from one revision to the next.
ARG GIT_COMMIT=unknown SOURCE_URL=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/workspace/src:/workspace/kit \
    PYTHONUNBUFFERED=1 \
    MLPIPELINE_REVISION=${GIT_COMMIT}
LABEL org.opencontainers.image.title="mlpipeline training" \
      org.opencontainers.image.description="The DVC pipeline's stages, one per container" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
# the stages run from the workspace's own sources (DVC hashes them as deps); the runner
# writes there, as the image's user
COPY --chown=app:app workspace/ /workspace/
