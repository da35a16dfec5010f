# The serving image: the pipeline's ONNX model behind FastAPI on ONNX Runtime; no torch.
#   python -m mlpipeline.image build     (or: make image)
#   docker build --network host --build-arg BASE_IMAGE=... --build-arg GIT_COMMIT=... .
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

# Final stage. Every instruction costs a container commit (seconds each on the vfs storage
# driver), so there are few, and the ones that never change come before the copies to stay
# cached when the model or the code changes.
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app
USER app
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080'), timeout=2)"]
CMD ["python", "-m", "mlpipeline.serve"]
# files stay owned by root: the service user can read them, not change them
COPY --from=builder /opt/venv /opt/venv
# only the torch-free serving modules (tests/test_serve.py checks this list is complete)
COPY src/mlpipeline/__init__.py src/mlpipeline/errors.py src/mlpipeline/serve.py /app/mlpipeline/
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
