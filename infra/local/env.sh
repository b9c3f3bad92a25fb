# infra/local/env.sh — shared constants of the local stack; sourced (not run) by the scripts in
# infra/local, tests/run and .ci/run. Owns: paths (.local, the venv), the LocalStack endpoint and
# the fake AWS credentials/region that every local process uses, and where moto's server is
# (MOTO_SERVER, exported for the tests).

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL_DIR="$REPO_ROOT/.local"                       # gitignored: logs, pid files, captured mail
REQUIREMENTS="$REPO_ROOT/infra/local/requirements.txt"
REQ_HASH="$(sha256sum "$REQUIREMENTS" | cut -c1-12)"
RELAY_VENV="${RELAY_VENV:-$HOME/.cache/smtp-relay/venv-$REQ_HASH}"
VENV_PY="$RELAY_VENV/bin/python"
# moto's server (DynamoDB for STATE_TABLE) in a venv of its own: see requirements-moto.txt.
MOTO_REQUIREMENTS="$REPO_ROOT/infra/local/requirements-moto.txt"
MOTO_REQ_HASH="$(sha256sum "$MOTO_REQUIREMENTS" | cut -c1-12)"
MOTO_VENV="${MOTO_VENV:-$HOME/.cache/smtp-relay/moto-$MOTO_REQ_HASH}"
export MOTO_SERVER="$MOTO_VENV/bin/moto_server"

LOCALSTACK_PORT="${LOCALSTACK_PORT:-4566}"
LOCALSTACK_ENDPOINT="http://127.0.0.1:$LOCALSTACK_PORT"

export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1                 # boto3 reads this one, the Rust SDK AWS_REGION
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT"
unset AWS_PROFILE AWS_SESSION_TOKEN
