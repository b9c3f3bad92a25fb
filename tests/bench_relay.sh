#!/usr/bin/env bash
# tests/bench_relay.sh [N] — throughput of one `relay poll` on LocalStack into Postfix smtp-sink.
#
# Loads N jobs (default 500, one recipient each, one shared 2 kB message) into a fresh bucket +
# queue on the running LocalStack, starts smtp-sink on a free loopback port as the smarthost (no
# DNS in the measurement), starts the relay and times until N `status=sent` lines are logged.
# Also prints the relay's start-up time (exec to its first poll) and its stripped binary size.
# Needs: LocalStack running (infra/local/localstack.sh start), the venv (infra/local/setup.sh),
# and target/release/relay (or RELAY_BIN_DIR). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../infra/local/env.sh"

N="${1:-500}"
RELAY="${RELAY_BIN_DIR:-$REPO_ROOT/target/release}/relay"
WORK="$(mktemp -d /tmp/bench-relay.XXXXXX)"
chmod 777 "$WORK"
NAME="bench-$(date +%s)-$$"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "$VENV_PY" - "$NAME" <<'EOF' >/dev/null 2>&1 || true
import sys; sys.path.insert(0, "infra/local")
import resources
s3, sqs = resources.clients()
b = sys.argv[1]
urls = [sqs.get_queue_url(QueueName=q)["QueueUrl"] for q in (b, b + "-dlq")]
resources.delete_spool(s3, sqs, b, urls)
EOF
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$REPO_ROOT"
[ -x "$RELAY" ] || { echo "bench: $RELAY missing; cargo build --release --workspace" >&2; exit 1; }

PORT="$("$VENV_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
/usr/sbin/smtp-sink -u nobody -c "127.0.0.1:$PORT" 1000 >"$WORK/sink.log" 2>&1 &
PIDS+=($!)

QUEUE_URL="$("$VENV_PY" - "$NAME" "$N" <<'EOF'
import json, sys, time, uuid
sys.path.insert(0, "infra/local")
import resources
name, n = sys.argv[1], int(sys.argv[2])
s3, sqs = resources.clients()
url, _ = resources.create_spool(s3, sqs, name, name)
body = (b"From: bench@example.org\r\nTo: sink@example.test\r\nSubject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * 25
qid0 = uuid.uuid4().hex[:26].upper()
s3.put_object(Bucket=name, Key=f"spool/{qid0}.eml", Body=body)
entries = []
for i in range(n):
    qid = uuid.uuid4().hex[:26].upper()  # distinct ids so no delivery record is shared
    job = {"v": 1, "queue_id": qid, "message_key": f"spool/{qid0}.eml", "sender": "bench@example.org",
           "domain": "example.test", "recipients": [{"address": f"r{i}@example.test"}],
           "first_seen": int(time.time()), "size": len(body)}
    entries.append({"Id": str(i), "MessageBody": json.dumps(job)})
    if len(entries) == 10:
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
        entries = []
if entries:
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
print(url)
EOF
)"

export SPOOL_BUCKET="$NAME" SPOOL_QUEUE_URL="$QUEUE_URL" RELAY_SMARTHOST="127.0.0.1:$PORT" \
    RELAY_SMARTHOST_TLS=starttls RELAY_HELO_NAME=bench.example.test RELAY_POLL_WAIT=1s RUST_LOG=info
start_ns=$(date +%s%N)
"$RELAY" poll >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
until grep -q '"polling"' "$WORK/relay.log"; do sleep 0.01; done
ready_ns=$(date +%s%N)
deadline=$((SECONDS + 600))
until [ "$(grep -c '"status":"sent"' "$WORK/relay.log")" -ge "$N" ]; do
    if (( SECONDS > deadline )); then echo "bench: timed out; last lines:" >&2; tail -5 "$WORK/relay.log" >&2; exit 1; fi
    sleep 0.05
done
done_ns=$(date +%s%N)

secs=$(awk -v a="$ready_ns" -v b="$done_ns" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
echo "deliveries:       $N in ${secs}s = $(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')/s (one relay poll -> smtp-sink, LocalStack S3+SQS)"
echo "start-up:         $(( (ready_ns - start_ns) / 1000000 )) ms from exec to the first poll"
echo "binary size:      $(stat -c %s "$RELAY") bytes ($(du -h "$RELAY" | cut -f1), stripped by the release profile)"
read -r utime stime < <(awk '{print $14, $15}' /proc/"${PIDS[1]}"/stat)
echo "relay CPU:        $(( (utime + stime) * 1000 / $(getconf CLK_TCK) )) ms user+sys for the whole run (the rest is LocalStack and the sink)"
echo "peak RSS:         $(grep VmHWM /proc/"${PIDS[1]}"/status 2>/dev/null | awk '{print $2 " kB"}' || echo n/a)"
