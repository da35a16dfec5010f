# The MLflow tracking server image: scripts/mlflow-server.sh with MLflow at the version
# uv.lock pins. Runs and registry in SQLite under /data (MLFLOW_BACKEND_URI for
# PostgreSQL), artifacts under /data/artifacts served through the server; mount a volume on /data.
#   docker compose up -d --build mlflow      (docker-compose.yml)
#   docker build -f docker/mlflow.Dockerfile -t mlpipeline-mlflow .
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
# pinned by digest, kept current by Renovate (renovate.json), as in the root Dockerfile
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE_IMAGE} AS builder
COPY pyproject.toml uv.lock docker/locked.py /tmp/lock/
# uv at the lock's version, then the lock's `tracking-server` group (the full `mlflow` package:
# the server, its UI and database migrations), all hash-checked. EXTRA_PACKAGES adds drivers
# the lock does not pin, e.g. psycopg2-binary for PostgreSQL or boto3 for S3 artifacts.
# The deletions drop the libraries' test suites.
ARG EXTRA_PACKAGES=""
# uv trusts the image's certificate store, as pip does
ENV UV_NATIVE_TLS=1
RUN python /tmp/lock/locked.py /tmp/lock/uv.lock uv > /tmp/uv.txt \
 && python -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes \
      -r /tmp/uv.txt \
 && cd /tmp/lock \
 && uv export --frozen --only-group tracking-server --no-emit-project --quiet \
      --output-file /tmp/server.txt \
 && uv venv --quiet /opt/venv \
 && uv pip install --quiet --no-cache --python /opt/venv/bin/python --require-hashes --no-deps \
      --only-binary :all: -r /tmp/server.txt \
 && if [ -n "$EXTRA_PACKAGES" ]; then \
      uv pip install --quiet --no-cache --python /opt/venv/bin/python $EXTRA_PACKAGES; fi \
 && cd /opt/venv/lib/python3*/site-packages \
 && rm -rf numpy/f2py numpy/tests numpy/*/tests pandas/tests scipy/*/tests scipy/*/*/tests \
      sklearn/*/tests sklearn/tests pyarrow/tests matplotlib/tests

# Final stage: few instructions (each is a layer), the unchanging ones first.
FROM ${BASE_IMAGE}
# /data belongs to the service user, so that a new named volume mounted there does too
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin mlflow \
 && mkdir /data && chown mlflow:mlflow /data
USER mlflow
WORKDIR /data
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=2)"]
EXPOSE 5000
ENTRYPOINT ["/app/mlflow-server.sh"]
# arguments for `mlflow server` (the script passes them on); MLflow's default is 4 workers
CMD ["--workers", "2"]
# files stay owned by root: the service user can read them, not change them
COPY --from=builder /opt/venv /opt/venv
COPY scripts/mlflow-server.sh /app/mlflow-server.sh
ARG SOURCE_URL=unknown GIT_COMMIT=unknown
# MLFLOW_SERVER_ALLOWED_HOSTS unset: MLflow accepts localhost and private addresses as the Host
# header; docker-compose.yml adds its service name, and a team sets its server's name there
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    MLFLOW_BACKEND_URI=sqlite:////data/mlflow.db \
    MLFLOW_ARTIFACTS=/data/artifacts \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_DISABLE_TELEMETRY=true
LABEL org.opencontainers.image.title="mlpipeline tracking server" \
      org.opencontainers.image.description="MLflow tracking server: runs and registry in a database, artifacts served" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${GIT_COMMIT}" \
      org.opencontainers.image.licenses="MIT"
