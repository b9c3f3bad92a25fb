#!/usr/bin/env bash
# infra/local/create-resources.sh [bucket] [queue] — create the spool bucket, the job queue and its
# DLQ (redrive after 5 receives) on the running LocalStack. Idempotent. Prints shell assignments:
#   SPOOL_BUCKET=relay-spool  SPOOL_QUEUE_URL=http://127.0.0.1:4566/queue/us-east-1/000000000000/relay-jobs
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$VENV_PY" "$REPO_ROOT/infra/local/resources.py" "$@"
