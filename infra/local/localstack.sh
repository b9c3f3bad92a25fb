#!/usr/bin/env bash
# infra/local/localstack.sh start|stop|status — LocalStack (S3, SQS, Secrets Manager, SSM) run
# natively from the venv, no Docker. Owns: .local/localstack.{pid,log} (localstack-PORT.* when LOCALSTACK_PORT is not
# 4566). `start` is a no-op when one is already healthy on the port; `stop` only stops the
# instance this script started (pid file).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

suffix=""; [ "$LOCALSTACK_PORT" = 4566 ] || suffix="-$LOCALSTACK_PORT"
PID_FILE="$LOCAL_DIR/localstack$suffix.pid"
LOG_FILE="$LOCAL_DIR/localstack$suffix.log"
TIMEOUT="${LOCALSTACK_START_TIMEOUT:-90}"

healthy() {
    curl -s --max-time 2 "$LOCALSTACK_ENDPOINT/_localstack/health" 2>/dev/null |
        "$VENV_PY" -c 'import json, sys
s = json.load(sys.stdin)["services"]
sys.exit(not all(s.get(n) in ("available", "running") for n in ("s3", "sqs", "secretsmanager", "ssm")))' 2>/dev/null
}

our_pid() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && cat "$PID_FILE"; }

start() {
    if healthy; then echo "localstack: already running at $LOCALSTACK_ENDPOINT"; return; fi
    [ -x "$VENV_PY" ] || { echo "localstack: no venv at $RELAY_VENV; run infra/local/setup.sh" >&2; exit 1; }
    mkdir -p "$LOCAL_DIR"
    local launched=0
    if ! our_pid >/dev/null; then
        if (exec 3<>"/dev/tcp/127.0.0.1/$LOCALSTACK_PORT") 2>/dev/null; then
            echo "localstack: 127.0.0.1:$LOCALSTACK_PORT is in use by something that is not a healthy LocalStack" >&2
            exit 1
        fi
        # Host settings keep queue URLs on 127.0.0.1 (the default *.localhost.localstack.cloud
        # names need internet DNS); DNS_ADDRESS=0 stops LocalStack's own DNS server.
        GATEWAY_LISTEN="127.0.0.1:$LOCALSTACK_PORT" SERVICES=s3,sqs,secretsmanager,ssm \
            LOCALSTACK_HOST="127.0.0.1:$LOCALSTACK_PORT" SQS_ENDPOINT_STRATEGY=path DNS_ADDRESS=0 \
            SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
            setsid "$VENV_PY" -m localstack.runtime.main >"$LOG_FILE" 2>&1 </dev/null &
        echo $! >"$PID_FILE"
        launched=1
    fi
    local pid start_s=$SECONDS
    pid="$(cat "$PID_FILE")"
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null || (( SECONDS - start_s >= TIMEOUT )); then
            echo "localstack: not healthy after $((SECONDS - start_s))s (pid $pid); last log lines of $LOG_FILE:" >&2
            tail -n 40 "$LOG_FILE" >&2 || true
            if [ "$launched" = 1 ]; then stop >/dev/null 2>&1 || true; fi
            exit 1
        fi
        sleep 0.3
    done
    echo "localstack: ready at $LOCALSTACK_ENDPOINT in $((SECONDS - start_s))s (pid $pid, log $LOG_FILE)"
}

stop() {
    local pid
    if ! pid="$(our_pid)"; then rm -f "$PID_FILE"; echo "localstack: not running (from this script)"; return; fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    echo "localstack: stopped (pid $pid)"
}

status() {
    if healthy; then
        echo "localstack: running at $LOCALSTACK_ENDPOINT${PID_FILE:+ (pid $(our_pid || echo 'not ours'))}"
    else
        echo "localstack: not running"; return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
