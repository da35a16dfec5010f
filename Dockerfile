# The serving image: the pipeline's ONNX model behind FastAPI on ONNX Runtime; no torch.
#   make image          (python -m mlpipeline.ops.image build: build args from the checkout)
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t digits-serve .   (<project>-serve)
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
# The base, pinned by digest: Renovate's regex manager (renovate.json) keeps it current, as
# Dependabot does not read ARG defaults.
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE_IMAGE} AS builder
COPY pyproject.toml uv.lock docker/locked.py /tmp/lock/
# uv at the lock's version, hash-checked, then the lock's `serve` group, hash-checked, no
# sdists. onnxruntime's declared dependencies that a server never imports are pruned: sympy,
# protobuf, flatbuffers and coloredlogs serve its offline tools only, never InferenceSession.
# Bytecode is compiled here: the service's user cannot write caches into the root-owned venv,
# and each container would compile its imports again at start. The deletions drop test
# suites, type stubs, f2py, and onnxruntime's quantization, transformers and model tools
# (which would need those packages).
# uv trusts the image's certificate store, as pip does
ENV UV_NATIVE_TLS=1
RUN python /tmp/lock/locked.py /tmp/lock/uv.lock uv > /tmp/uv.txt \
 && python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /tmp/uv.txt \
 && cd /tmp/lock \
 && uv export --frozen --only-group serve --no-emit-project --quiet --output-file /tmp/serve.txt \
      --prune sympy --prune protobuf --prune flatbuffers --prune coloredlogs \
 && uv venv --quiet /opt/venv \
 && uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
      --require-hashes --no-deps --only-binary :all: -r /tmp/serve.txt \
 && cd /opt/venv/lib/python3*/site-packages \
 && rm -rf onnxruntime/tools onnxruntime/quantization onnxruntime/transformers \
      numpy/f2py numpy/distutils numpy/_pyinstaller numpy/tests numpy/*/tests \
 && find . -name '*.pyi' -delete

# Final stage. Few instructions (each is a layer), and the ones that never change come before
# the copies, so they stay cached when the model or the code changes.
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
USER app
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
EXPOSE 8080
CMD ["python", "-m", "mlpipeline.serving"]
# files stay owned by root: the service user can read them, not change them
COPY --from=builder /opt/venv /opt/venv
# the service package and the one image decoder that ingest uses too: they import nothing else
# of mlpipeline, which is a namespace package here (tests/serving/test_isolation.py checks both)
COPY kit/mlpipeline/imaging.py /app/mlpipeline/imaging.py
COPY kit/mlpipeline/serving /app/mlpipeline/serving/
# the drift profile too: the service's drift metrics (on by default) need it to start
COPY models/model.onnx models/model_card.json models/profile.json /app/models/
ARG SOURCE_URL=unknown GIT_COMMIT=unknown MODEL_MD5=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    MODEL_PATH=/app/models/model.onnx \
    ORT_DISABLE_TELEMETRY=1 \
    HOST=0.0.0.0 \
    PORT=8080 \
    API_DOCS=false \
    GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.title="mlpipeline model service" \
      org.opencontainers.image.description="ONNX model served with ONNX Runtime and FastAPI" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="MIT" \
      io.mlpipeline.model.md5="${MODEL_MD5}"
