# The serving image: the pipeline's ONNX model behind FastAPI on ONNX Runtime; no torch.
#   make image          (python -m mlpipeline.ops.image build: build args from the checkout)
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t mlpipeline-serve .
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
COPY requirements.lock /tmp/requirements.lock
# Versions come from requirements.lock (as constraints: only the packages named are installed).
# onnxruntime goes in without its declared dependencies: sympy (80 MB), protobuf, flatbuffers,
# coloredlogs and packaging serve its offline tools only, never InferenceSession.
# uvicorn's C HTTP parser (httptools) goes in when the lock pins it.
# The deletions drop what a server never imports: pip itself, test suites, type stubs, f2py,
# and onnxruntime's quantization/transformers/model tools (which would need those packages).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
      -c /tmp/requirements.lock --no-deps onnxruntime \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
      -c /tmp/requirements.lock numpy fastapi uvicorn prometheus-client pydantic-settings orjson \
      $(grep -oE '^httptools==[^ ;]+' /tmp/requirements.lock) \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
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
# the service package alone: it imports nothing else of mlpipeline, which is a namespace
# package here (tests/serving/test_isolation.py checks both)
COPY src/mlpipeline/serving /app/mlpipeline/serving/
COPY models/model.onnx models/model_card.json /app/models/
ARG SOURCE_URL=unknown GIT_COMMIT=unknown MODEL_MD5=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    MODEL_PATH=/app/models/model.onnx \
    HOST=0.0.0.0 \
    PORT=8080 \
    GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.title="mlpipeline model service" \
      org.opencontainers.image.description="ONNX model served with ONNX Runtime and FastAPI" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="MIT" \
      io.mlpipeline.model.md5="${MODEL_MD5}"
