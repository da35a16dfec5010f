#!/usr/bin/env bash
# Start an MLflow tracking server for the team: runs, metrics and the model registry in a
# database, artifacts stored on local disk (or S3-compatible storage) and served through the
# server, so clients need only its URL: MLFLOW_TRACKING_URI=http://HOST:PORT dvc repro
#
#   MLFLOW_BACKEND_URI  runs and registry        (default sqlite:///mlflow-server.db, in the
#                                                 current directory; postgresql://... for a team)
#   MLFLOW_ARTIFACTS    where artifacts are kept (default ./mlartifacts-server; s3://bucket/path
#                                                 with boto3 installed and AWS_* credentials)
#   MLFLOW_HOST         interface to bind        (default 127.0.0.1: this machine only)
#   MLFLOW_PORT         port                     (default 5000)
# Further arguments go to `mlflow server` as they are (e.g. --workers 1).
set -euo pipefail

# the venv `make install` creates, when the caller has not put it on PATH
venv="${VENV:-$(dirname "$0")/../.venv}"
if [[ -x "$venv/bin/mlflow" ]]; then PATH="$(cd "$venv/bin" && pwd):$PATH"; fi
if ! command -v mlflow >/dev/null; then
  echo "error: mlflow not found: run \`make install\` first (or put a venv with mlflow on PATH)" >&2
  exit 1
fi

# A URI as shown: its credentials masked as mlpipeline.errors.redact masks them (a password,
# a userinfo without one, secret-looking query values); tests/test_tracking.py holds the
# two to the same answers.
redact() {
  sed -E \
    -e 's#([A-Za-z][A-Za-z0-9+.-]*://)([^[:space:]/?#:]*):[^[:space:]/?#]*@#\1\2:***@#g' \
    -e 's#([A-Za-z][A-Za-z0-9+.-]*://)[^[:space:]/?#:]+@#\1***@#g' \
    -e 's#([?&;][^=&[:space:]#]*(pass|pwd|token|secret|key|signature|credential|auth)[^=&[:space:]#]*=)[^&[:space:]#]*#\1***#Ig' \
    <<<"$1"
}

backend="${MLFLOW_BACKEND_URI:-sqlite:///mlflow-server.db}"
artifacts="${MLFLOW_ARTIFACTS:-./mlartifacts-server}"
host="${MLFLOW_HOST:-127.0.0.1}"
port="${MLFLOW_PORT:-5000}"

[[ "$port" =~ ^[0-9]+$ ]] || { echo "error: MLFLOW_PORT '$port' is not a port number" >&2; exit 2; }
# a local artifact directory as an absolute path, so it does not depend on the server's cwd
if [[ "$artifacts" != *://* ]]; then
  mkdir -p "$artifacts"
  artifacts="$(cd "$artifacts" && pwd)"
fi

# MLflow's server-side jobs (its GenAI features) serve nothing here, and their job runner's
# consumer processes would poll beside the server: on only where asked for
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"

echo "mlflow-server: backend $(redact "$backend"), artifacts $(redact "$artifacts"), http://$host:$port" >&2
# the backend URI goes to MLflow in its environment, not on the command line that `ps` shows
export MLFLOW_BACKEND_STORE_URI="$backend"
exec mlflow server \
  --artifacts-destination "$artifacts" \
  --serve-artifacts \
  --host "$host" \
  --port "$port" \
  "$@"
