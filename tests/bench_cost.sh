#!/usr/bin/env bash
# tests/bench_cost.sh [M] — S3, SQS and DynamoDB requests per message on the first-attempt path,
# and what they cost per million messages at list prices, read from LocalStack's own request log
# and from moto's request recording (the state table, STATE_TABLE).
#
# A private LocalStack (its own free port and log, .local/localstack-PORT.log, so nobody else's
# traffic is counted) takes M messages (default 200, one recipient each) from the real ingress
# (Python smtplib as the client), then one `relay poll` delivers them to smtp-sink (as the
# smarthost) with the queue full, as a busy relay sees it (receive batches of 10). The log lines
# `AWS s3.<Op>` / `AWS sqs.<Op>` of each phase are counted and divided by M.
#
# Then the measured per-message lines of the cost model (docs/cost.md): SQS requests billed per
# 64 KiB chunk (from the size of a queued job), the relay's wall time per delivery (its log
# timestamps, first line to the last completion: what Lambda would bill, at the template's
# RelayMemorySize) and invocations (non-empty receives; one per Lambda batch), and the bytes of
# log output (stderr) and of EMF metric lines (stdout) per message, both programs at RUST_LOG=info.
#
# Prices (us-east-1 list): S3 PUT/COPY/POST/LIST $0.005 per 1000, GET/HEAD $0.0004 per 1000,
# DELETE free; SQS $0.40 per million requests (a batch call is one request); DynamoDB on demand
# $0.125 per million read request units, $0.625 per million write request units.
#
# DynamoDB: a private moto server (its own port) records every request it serves
# (MOTO_ENABLE_RECORDING); both programs run with STATE_TABLE and FEEDBACK_DOMAIN, as deployed.
# Units are counted from the requests as DynamoDB bills them: half a read unit per item an
# eventually consistent read looks up (BatchGetItem), one per consistent read, one write unit
# per write (every item here is under 1 KB). The key reads of the feedback domain happen once
# per program start and are shown apart.
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

# ---- the state table on a private moto server that records its requests
[ -x "$MOTO_SERVER" ] || die "$MOTO_SERVER missing; run infra/local/setup.sh"
DDB_PORT="$(free_port)"
DDB_REC="$WORK/dynamodb.jsonl"
MOTO_ENABLE_RECORDING=1 MOTO_RECORDER_FILEPATH="$DDB_REC" "$MOTO_SERVER" -H 127.0.0.1 -p "$DDB_PORT" \
    >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 150); do (exec 3<>"/dev/tcp/127.0.0.1/$DDB_PORT") 2>/dev/null && break; sleep 0.2; done
export AWS_ENDPOINT_URL_DYNAMODB="http://127.0.0.1:$DDB_PORT" STATE_TABLE=bench-state FEEDBACK_DOMAIN=fb.bench.test
"$VENV_PY" "$REPO_ROOT/infra/local/state_table.py" create "$AWS_ENDPOINT_URL_DYNAMODB" "$STATE_TABLE"
ddb_mark() { if [ -f "$DDB_REC" ]; then wc -l <"$DDB_REC"; else echo 0; fi; }
ops() { grep -o 'AWS [a-z0-9]*\.[A-Za-z]*' "$LS_LOG" | sed 's/^AWS //' | sort | uniq -c; }
mark() { wc -l <"$LS_LOG"; }

# ---- ingress: M messages, one recipient each
IN_PORT="$(free_port)"
INGRESS_LISTEN="127.0.0.1:$IN_PORT" INGRESS_HOSTNAME=mx.bench.test RELAY_DOMAINS=example.test \
    "$BIN/ingress" >"$WORK/ingress.emf" 2>"$WORK/ingress.log" &
PIDS+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$IN_PORT") 2>/dev/null && break; sleep 0.1; done
before_ingress="$(mark)"
ddb_before="$(ddb_mark)"
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
# One queued job, looked at and left visible, for its size (SQS bills each 64 KiB of a payload).
JOB_BYTES="$("$VENV_PY" - "$QUEUE_URL" <<'PY'
import sys; sys.path.insert(0, "infra/local")
import resources
_, sqs = resources.clients()
m = sqs.receive_message(QueueUrl=sys.argv[1], MaxNumberOfMessages=1, VisibilityTimeout=0)["Messages"][0]
print(len(m["Body"].encode()))
PY
)"
after_peek="$(mark)"

# ---- relay: deliver them all to smtp-sink
SINK_PORT="$(free_port)"
/usr/sbin/smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1000 >"$WORK/sink.log" 2>&1 &
PIDS+=($!)
RELAY_SMARTHOST="127.0.0.1:$SINK_PORT" RELAY_SMARTHOST_TLS=starttls RELAY_HELO_NAME=bench.example.test \
    RELAY_POLL_WAIT=1s "$BIN/relay" poll >"$WORK/relay.emf" 2>"$WORK/relay.log" &
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
ddb_after="$(ddb_mark)"
sed -n "$((ddb_before + 1)),${ddb_after}p" "$DDB_REC" >"$WORK/dynamodb.phase"

phase() { sed -n "$(($1 + 1)),$2p" "$LS_LOG" | grep -o 'AWS [a-z0-9]*\.[A-Za-z]*' | sed 's/^AWS //' | sort | uniq -c; }
phase "$before_ingress" "$after_ingress" >"$WORK/ingress.ops"
phase "$after_peek" "$after_relay" >"$WORK/relay.ops"
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

# ---- the measured per-message lines of the cost model (docs/cost.md)
MEMORY_MB="$(sed -n '/^  RelayMemorySize:/,/Default:/s/^ *Default: *//p' "$REPO_ROOT/template.yaml")"
"$VENV_PY" - "$M" "$JOB_BYTES" "${MEMORY_MB:-256}" "$WORK" <<'PY'
import base64, json, math, sys
from datetime import datetime
m, job_bytes, memory_mb, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def ops(path):
    return {op: int(n) for n, op in (line.split() for line in open(path))}
ing, rel = ops(f"{work}/ingress.ops"), ops(f"{work}/relay.ops")
def size(path):
    return sum(len(line) for line in open(path, "rb"))
def stamps(path, message=None):
    out = []
    for line in open(path):
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "timestamp" in d and (message is None or d.get("message") == message):
            out.append(datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")))
    return out
# SQS: each call is billed per 64 KiB chunk of its payload. The ingress sends one job per call
# (one domain per message); a receive returns up to 10 jobs, a delete batch carries only handles.
chunk = 64 * 1024
send_calls = sum(n for op, n in ing.items() if op.startswith("sqs."))
recv = rel.get("sqs.ReceiveMessage", 0)
relay_sqs = sum(n for op, n in rel.items() if op.startswith("sqs."))
per_recv_jobs = m / recv if recv else 0
sqs_chunks = (send_calls * math.ceil(job_bytes / chunk)
              + recv * max(1, math.ceil(per_recv_jobs * job_bytes / chunk))
              + (relay_sqs - recv)) / m
PUT_CLASS = {"PutObject", "CopyObject", "ListObjectsV2", "ListObjects", "ListObjectVersions",
             "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "PostObject"}
both = [*ing.items(), *rel.items()]
s3_put = sum(n for op, n in both if op.startswith("s3.") and op[3:] in PUT_CLASS) / m
s3_get = sum(n for op, n in both if op.startswith("s3.") and op[3:] in ("GetObject", "HeadObject")) / m
# Lambda: wall time of the relay from its first log line to the last completion, per delivery.
first, done = stamps(f"{work}/relay.log"), stamps(f"{work}/relay.log", "completed; message deleted")
wall = (max(done) - min(first)).total_seconds() if first and done else float("nan")
gb_s = wall / m * memory_mb / 1024
invocations = recv / m  # a receive that returns jobs is one Lambda invocation (batch)
log_bytes = (size(f"{work}/ingress.log") + size(f"{work}/relay.log")) / m
emf_bytes = (size(f"{work}/ingress.emf") + size(f"{work}/relay.emf")) / m
print(f"\ncost model, measured per message ({m} messages, one recipient each, job {job_bytes} bytes):")
print(f"  S3        PUT-class {s3_put:.2f}, GET-class {s3_get:.2f} requests")
print(f"  SQS       {(send_calls + relay_sqs) / m:.2f} requests = {sqs_chunks:.2f} billed 64 KiB chunks")
# ---- DynamoDB: both programs' requests to the state table, from moto's recording ----
ddb_ops, startup, rru, wru = {}, {}, 0.0, 0.0
for line in open(f"{work}/dynamodb.phase"):
    r = json.loads(line)
    op = r["headers"].get("X-Amz-Target", "?").split(".")[-1]
    raw = base64.b64decode(r["body"]) if r.get("body_encoded") else (r["body"] or "").encode()
    body = json.loads(raw or b"{}")
    if "feedback-key" in json.dumps(body):  # the token key: read (or made) once per start
        startup[op] = startup.get(op, 0) + 1
        continue
    ddb_ops[op] = ddb_ops.get(op, 0) + 1
    if op == "BatchGetItem":
        keys = sum(len(t.get("Keys", [])) for t in body.get("RequestItems", {}).values())
        rru += keys * (1.0 if any(t.get("ConsistentRead") for t in body["RequestItems"].values()) else 0.5)
    elif op in ("GetItem", "Query"):
        rru += 1.0 if body.get("ConsistentRead") else 0.5
    elif op in ("PutItem", "UpdateItem", "DeleteItem"):
        wru += 1.0
requests = sum(ddb_ops.values())
per_op = ", ".join(f"{op} {n / m:.2f}" for op, n in sorted(ddb_ops.items())) or "none"
print(f"  DynamoDB  {requests / m:.2f} requests ({per_op}) = {rru / m:.2f} read units, {wru / m:.2f} write units"
      f" = ${(rru * 0.125 + wru * 0.625) / m:.3f} per million; at start: "
      + (", ".join(f"{op} {n}" for op, n in sorted(startup.items())) or "nothing"))
# ---- end DynamoDB ----
print(f"  Lambda    {invocations:.3f} invocations; {wall / m * 1000:.2f} ms wall per delivery "
      f"= {gb_s:.6f} GB-s at {memory_mb} MB (relay poll on LocalStack, smarthost on loopback)")
print(f"  Logs      {log_bytes:.0f} bytes of log lines (stderr, RUST_LOG=info) per message")
print(f"  EMF       {emf_bytes:.1f} bytes of metric lines (stdout) per message")
PY
