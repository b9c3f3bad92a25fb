#!/usr/bin/env bash
# tests/bench_cost.sh [M] — S3 and SQS requests per message on the first-attempt path, and what
# they cost per million messages at list prices, read from LocalStack's own request log.
#
# A private LocalStack (its own free port and log, .local/localstack-PORT.log, so nobody else's
# traffic is counted) takes M messages (default 200, one recipient each) from the real ingress
# (Python smtplib as the client), then one `relay poll` delivers them to smtp-sink (as the
# smarthost) with the queue full, as a busy relay sees it (receive batches of 10). The log lines
# `AWS s3.<Op>` / `AWS sqs.<Op>` of each phase are counted and divided by M.
#
# Prices (us-east-1 list): S3 PUT/COPY/POST/LIST $0.005 per 1000, GET/HEAD $0.0004 per 1000,
# DELETE free; SQS $0.40 per million requests (a batch call is one request).
# Before: the figures measured on the design this replaced (issue 12 §4): ingress PUT; relay
# HEAD of the record, GET, conditional PUT of the record; ~1.2 SQS requests.
#
# Needs target/release/{ingress,relay} (or RELAY_BIN_DIR), the venv, smtp-sink. Everything it
# starts (LocalStack included) is stopped on exit. Called by tests/bench_relay.sh; runs alone too.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=infra/local/env.sh disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/../infra/local/env.sh"
M="${1:-200}"
BIN="${RELAY_BIN_DIR:-$REPO_ROOT/target/release}"
die() { echo "bench_cost: $*" >&2; exit 1; }
[[ "$M" =~ ^[1-9][0-9]*$ ]] || die "M must be a positive integer, got '$M'"
for b in ingress relay; do [ -x "$BIN/$b" ] || die "$BIN/$b missing (cargo build --release --workspace)"; done
[ -x /usr/sbin/smtp-sink ] || die "smtp-sink missing; run infra/local/setup.sh"
free_port() { "$VENV_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK="$(mktemp -d /tmp/bench-cost.XXXXXX)"
PIDS=()
LS_PORT="$(free_port)"
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    LOCALSTACK_PORT="$LS_PORT" "$REPO_ROOT/infra/local/localstack.sh" stop >/dev/null 2>&1
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

LOCALSTACK_PORT="$LS_PORT" "$REPO_ROOT/infra/local/localstack.sh" start >/dev/null || die "private LocalStack did not start"
LS_LOG="$LOCAL_DIR/localstack-$LS_PORT.log"
export AWS_ENDPOINT_URL="http://127.0.0.1:$LS_PORT"
QUEUE_URL="$("$VENV_PY" - <<'PY'
import sys; sys.path.insert(0, "infra/local")
import resources
s3, sqs = resources.clients()
print(resources.create_spool(s3, sqs, "bench-cost", "bench-cost")[0])
PY
)"
export SPOOL_BUCKET=bench-cost SPOOL_QUEUE_URL="$QUEUE_URL" RUST_LOG=info
ops() { grep -o 'AWS [a-z0-9]*\.[A-Za-z]*' "$LS_LOG" | sed 's/^AWS //' | sort | uniq -c; }
mark() { wc -l <"$LS_LOG"; }

# ---- ingress: M messages, one recipient each
IN_PORT="$(free_port)"
INGRESS_LISTEN="127.0.0.1:$IN_PORT" INGRESS_HOSTNAME=mx.bench.test RELAY_DOMAINS=example.test \
    "$BIN/ingress" >"$WORK/ingress.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$IN_PORT") 2>/dev/null && break; sleep 0.1; done
before_ingress="$(mark)"
"$VENV_PY" - "$IN_PORT" "$M" <<'PY'
import smtplib, sys
port, m = int(sys.argv[1]), int(sys.argv[2])
body = b"Subject: cost\r\n\r\n" + b"x" * 76 * 25 + b"\r\n"
with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
    for i in range(m):
        c.sendmail("bench@example.org", [f"r{i}@example.test"], body)
PY
sleep 1
after_ingress="$(mark)"

# ---- relay: deliver them all to smtp-sink
SINK_PORT="$(free_port)"
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
RELAY_SMARTHOST="127.0.0.1:$SINK_PORT" RELAY_SMARTHOST_TLS=starttls RELAY_HELO_NAME=bench.example.test \
    RELAY_POLL_WAIT=1s "$BIN/relay" poll >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
deadline=$((SECONDS + 600))
until [ "$(grep -c '"completed; message deleted"' "$WORK/relay.log")" -ge "$M" ]; do
    kill -0 "$RELAY_PID" 2>/dev/null || { tail -5 "$WORK/relay.log" >&2; die "relay exited"; }
    (( SECONDS < deadline )) || die "relay did not complete $M messages"
    sleep 0.2
done
sleep 2                                            # the last DeleteMessageBatch
kill -TERM "$RELAY_PID"; wait "$RELAY_PID" || true
after_relay="$(mark)"

phase() { sed -n "$(($1 + 1)),$2p" "$LS_LOG" | grep -o 'AWS [a-z0-9]*\.[A-Za-z]*' | sed 's/^AWS //' | sort | uniq -c; }
phase "$before_ingress" "$after_ingress" >"$WORK/ingress.ops"
phase "$after_ingress" "$after_relay" >"$WORK/relay.ops"
"$VENV_PY" - "$M" "$WORK/ingress.ops" "$WORK/relay.ops" <<'PY'
import sys
m = int(sys.argv[1])
S3_PUT, S3_GET, SQS = 0.005 / 1000, 0.0004 / 1000, 0.40 / 1e6
PUT_CLASS = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjects", "ListObjectVersions", "CreateMultipartUpload",
             "UploadPart", "CompleteMultipartUpload", "PostObject"}
GET_CLASS = {"GetObject", "HeadObject"}
def load(path):
    out = {}
    for line in open(path):
        n, op = line.split()
        out[op] = int(n)
    return out
def cost(ops):
    s3p = sum(n for op, n in ops.items() if op.startswith("s3.") and op[3:] in PUT_CLASS) / m
    s3g = sum(n for op, n in ops.items() if op.startswith("s3.") and op[3:] in GET_CLASS) / m
    sqs = sum(n for op, n in ops.items() if op.startswith("sqs.")) / m
    return s3p, s3g, sqs, (s3p * S3_PUT + s3g * S3_GET + sqs * SQS) * 1e6
phases = {"ingress": load(sys.argv[2]), "relay": load(sys.argv[3])}
print(f"\ncost per message, first-attempt path, {m} messages (LocalStack request log, private instance):")
for name, ops in phases.items():
    print(f"  {name:8} " + ", ".join(f"{op} {n / m:.2f}" for op, n in sorted(ops.items())))
total = {}
for ops in phases.values():
    for op, n in ops.items():
        total[op] = total.get(op, 0) + n
print(f"{'':22}{'S3 PUT-class':>14}{'S3 GET-class':>14}{'SQS requests':>14}{'$ per million':>15}")
for name, ops in [*phases.items(), ("total", total)]:
    p, g, q, d = cost(ops)
    print(f"{name:22}{p:14.2f}{g:14.2f}{q:14.2f}{d:15.2f}")
before = (2, 2, 1.2)  # PUT message + PUT record; HEAD record + GET message; send, receive/10, delete/10
bd = (before[0] * S3_PUT + before[1] * S3_GET + before[2] * SQS) * 1e6
print(f"{'before (records)':22}{before[0]:14.2f}{before[1]:14.2f}{before[2]:14.2f}{bd:15.2f}")
print(f"goal: <= 6.50 $ per million; the relay's own first-attempt path made {total.get('s3.PutObject', 0) - phases['ingress'].get('s3.PutObject', 0)} PutObject")
PY
