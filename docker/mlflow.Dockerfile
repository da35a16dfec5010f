# The MLflow tracking server image: scripts/mlflow-server.sh with MLflow at the version
# requirements.lock pins. Runs and registry in SQLite under /data (MLFLOW_BACKEND_URI for
# PostgreSQL), artifacts under /data/artifacts served through the server; mount a volume on /data.
#   docker compose up -d --build mlflow      (docker-compose.yml)
#   docker build -f docker/mlflow.Dockerfile -t mlpipeline-mlflow .
# Builds with the classic builder and with BuildKit alike: no RUN --mount, no syntax line.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
COPY requirements.lock /tmp/requirements.lock
# The lock is a constraints file: every package pip installs is the locked version. The full
# `mlflow` package (the server, its UI and database migrations), not mlflow-skinny: the server's
# job runner imports pandas, so its data-science dependencies stay. EXTRA_PACKAGES adds drivers
# the lock does not pin, e.g. psycopg2-binary for PostgreSQL or boto3 for S3 artifacts.
# The deletions drop what a server never imports: pip itself and the libraries' test suites.
ARG EXTRA_PACKAGES=""
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
      -c /tmp/requirements.lock mlflow ${EXTRA_PACKAGES} \
 && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
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
