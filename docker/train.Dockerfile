# The training image of the DAG's docker mode (docs/orchestration.md): the pipeline's locked
# environment and a snapshot of the repository at one git revision, where the orchestration
# runner runs one stage per container. The DVC remote's credentials come at run time (an
# Airflow connection), never from the image.
#   make train-image   (python -m mlpipeline.ops.train_image build lays out the context:
#                       lock/, wheels/, and workspace/ = `git archive HEAD` as a one-commit repo)
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE_IMAGE} AS builder
# TORCH_INDEX: install torch alone from this index URL (e.g. PyTorch's CPU-only index), or
# from /wheels (the context's wheels/), without the CUDA libraries; empty: the lock's torch
ARG TORCH_INDEX=
# uv trusts the image's certificate store, as pip does
ENV UV_NATIVE_TLS=1
COPY lock/ /tmp/lock/
COPY wheels/ /wheels/
# uv at the lock's version, hash-checked; then the lock's packages (the s3 extra for DVC
# remotes on S3; no dev group), hash-checked, their bytecode compiled: the image's user cannot
# write caches into the venv, and each stage's container would compile its imports again
RUN python /tmp/lock/locked.py /tmp/lock/uv.lock uv > /tmp/uv.txt \
 && python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /tmp/uv.txt \
 && cd /tmp/lock \
 && if [ -n "$TORCH_INDEX" ]; then \
      skip="--no-emit-package torch $(sed -n 's/^name = "\(nvidia-[^"]*\|cuda-[^"]*\|triton\)"$/--prune \1/p' uv.lock)"; \
    fi \
 && uv export --frozen --no-default-groups --extra s3 --no-emit-project $skip --quiet \
      --output-file /tmp/train.txt \
 && uv venv --quiet /opt/venv \
 && uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
      --require-hashes --no-deps -r /tmp/train.txt \
 && if [ -n "$TORCH_INDEX" ]; then \
      torch=$(sed -n '/^name = "torch"$/{n;s/^version = "\(.*\)"$/\1/p;}' uv.lock); \
      if [ -d "$TORCH_INDEX" ]; then from="--no-index --find-links $TORCH_INDEX"; \
      else from="--index-url $TORCH_INDEX"; fi; \
      uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
        --no-deps $from "torch==$torch"; \
    fi

# Final stage. Every instruction but the two copies comes before them: on a copying storage
# driver (vfs) each instruction after them copies the whole file system again. The revision's
# ENV and labels make the venv's copy rerun for each revision, which the workspace's copy does
# anyway; its layer comes out identical, so it is stored and pushed once.
FROM ${BASE_IMAGE}
# the workspace belongs to the image's user, itself included: git refuses a repository whose
# folder another user owns
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
 && install -d -o app -g app /workspace
USER app
WORKDIR /workspace
CMD ["python", "-m", "mlpipeline.ops.orchestrate", "--help"]
ARG GIT_COMMIT=unknown SOURCE_URL=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/workspace/src \
    PYTHONUNBUFFERED=1 \
    MLPIPELINE_REVISION=${GIT_COMMIT}
LABEL org.opencontainers.image.title="mlpipeline training" \
      org.opencontainers.image.description="The DVC pipeline's stages, one per container" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
COPY --from=builder /opt/venv /opt/venv
# the stages run from the workspace's own sources (DVC hashes them as deps); the runner
# writes there, as the image's user
COPY --chown=app:app workspace/ /workspace/
