#!/usr/bin/env bash
# tests/bench_relay.sh [N] — one `relay poll` against Postfix's own smtp client, side by side.
#
# 1. Relay rate: N jobs (default 500, one recipient each, one shared 2 kB message) are loaded
#    into a fresh bucket + queue on the running LocalStack; one `relay poll` delivers them to
#    Postfix smtp-sink on a free loopback port, used as the smarthost (no DNS in the measurement).
#    Timed from the relay's "polling" log line (jobs already queued) to the Nth status "sent".
# 2. Postfix rate: a private, throw-away Postfix instance (own config, queue and data directories
#    under a temp dir, nothing listening, log to a file through postlogd) takes the same N
#    messages with delivery held (defer_transports = smtp), then `postqueue -f` releases them to
#    a fresh smtp-sink (relayhost = [127.0.0.1]:port). Timed from the release to the Nth
#    status=sent in its maillog. The system's Postfix (/etc/postfix) is not touched.
# 3. Start-up: BENCH_STARTS (default 10) runs of the relay against the still empty queue; each
#    from the wall clock just before exec to the microsecond timestamp of its "polling" line
#    (logged right before the first ReceiveMessage); min / median / max.
# 4. Engine rate: the same N jobs through examples/engine_bench — the relay's real handler, SMTP
#    client and smarthost routing in batches of 10 like one `relay poll`, with an in-memory spool
#    and queue in place of LocalStack — into a fresh smtp-sink: the relay's own delivery rate,
#    which on this machine LocalStack (single-threaded Python) hides. Run twice: with connection
#    reuse at its defaults, and without (RELAY_MAX_MESSAGES_PER_CONNECTION=1, one session a job).
#    Twice more signing every delivery (RELAY_DKIM_KEYS), with an RSA-2048 and an Ed25519 key;
#    and the signing step alone for each key (engine_bench --sign-only, thread CPU per message).
# 5. Binary size, the relay's CPU and peak RSS, Postfix's CPU (its master and all its daemons).
# 6. Sessions per 1000 deliveries to the one destination: smtp-sink's session counter for the
#    relay runs, Postfix's own log (deliveries without conn_use= opened their connection).
# 7. Cost per message: S3/SQS requests and $ per million on the first-attempt path, ingress
#    included, counted in a private LocalStack's request log (tests/bench_cost.sh).
#
# Needs: LocalStack running (infra/local/localstack.sh start), the venv (infra/local/setup.sh),
# Postfix >= 3.4 with smtp-sink, and target/release/relay (or RELAY_BIN_DIR) and
# target/release/examples/engine_bench (cargo build --release -p relay --example engine_bench). Run as root (the
# private Postfix instance is started with `postfix -c`). Everything runs on 127.0.0.1; every
# process started here is stopped, and the temp dir and the LocalStack bucket + queues removed,
# on exit, failed or not.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR/.. source=infra/local/env.sh disable=SC1091  # followed with -x
source "$(dirname "${BASH_SOURCE[0]}")/../infra/local/env.sh"
export LC_ALL=C                                    # "." in $EPOCHREALTIME and printf

N="${1:-500}"
STARTS="${BENCH_STARTS:-10}"
RELAY="${RELAY_BIN_DIR:-$REPO_ROOT/target/release}/relay"
ENGINE="${RELAY_BIN_DIR:-$REPO_ROOT/target/release}/examples/engine_bench"
SINK=/usr/sbin/smtp-sink
PF_SBIN=/usr/sbin
NAME="bench-$(date +%s)-$$"

die() { echo "bench: $*" >&2; exit 1; }
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ "$STARTS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_STARTS must be a positive integer, got '$STARTS'"
[ -x "$RELAY" ] || die "$RELAY missing; cargo build --release --workspace (or set RELAY_BIN_DIR)"
[ -x "$ENGINE" ] || die "$ENGINE missing; cargo build --release -p relay --example engine_bench"
[ -x "$VENV_PY" ] || die "no venv at $RELAY_VENV; run infra/local/setup.sh"
"$VENV_PY" -c 'import boto3' 2>/dev/null || die "boto3 missing in $RELAY_VENV; run infra/local/setup.sh"
"$VENV_PY" - "$LOCALSTACK_ENDPOINT" <<'EOF' 2>/dev/null || die "LocalStack is not answering on $LOCALSTACK_ENDPOINT; run infra/local/localstack.sh start"
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_localstack/health", timeout=5).read()
EOF
[ -x "$SINK" ] || die "$SINK missing (Postfix); run infra/local/setup.sh"
for c in postfix postconf postqueue sendmail; do [ -x "$PF_SBIN/$c" ] || die "$PF_SBIN/$c missing (Postfix)"; done
[ "$(id -u)" -eq 0 ] || die "run as root: the private Postfix instance and smtp-sink need it"
PF_VERSION="$("$PF_SBIN/postconf" -dh mail_version)"
IFS=. read -r pf_major pf_minor _ <<<"$PF_VERSION"
(( pf_major > 3 || (pf_major == 3 && pf_minor >= 4) )) || die "Postfix $PF_VERSION: need >= 3.4 (maillog_file)"

WORK="$(mktemp -d /tmp/bench-relay.XXXXXX)"
chmod 755 "$WORK"                                  # Postfix daemons run as "postfix" below it
PF_CONF="$WORK/postfix/etc"
PF_QUEUE="$WORK/postfix/queue"
PF_LOG="$WORK/postfix/maillog"
PF_STARTED=""
PIDS=()                                            # every background process started here

# Postfix daemons all chdir to the queue directory: that is how leftovers are found.
postfix_pids() {
    local p cwd
    for p in /proc/[0-9]*; do
        cwd="$(readlink "$p/cwd" 2>/dev/null)" || continue
        case "$cwd" in "$PF_QUEUE" | "$PF_QUEUE"/*) echo "${p#/proc/}" ;; esac
    done
}

cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ -n "$PF_STARTED" ]; then
        "$PF_SBIN/postfix" -c "$PF_CONF" stop >/dev/null 2>&1
        for _ in $(seq 50); do [ -z "$(postfix_pids)" ] && break; sleep 0.1; done
        for p in $(postfix_pids); do kill -KILL "$p" 2>/dev/null; done
    fi
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    "$VENV_PY" - "$NAME" <<'EOF' >/dev/null 2>&1
import sys; sys.path.insert(0, "infra/local")
import resources
s3, sqs = resources.clients()
b = sys.argv[1]
urls = []
for q in (b, b + "-dlq"):
    try:
        urls.append(sqs.get_queue_url(QueueName=q)["QueueUrl"])
    except Exception:
        pass
resources.delete_spool(s3, sqs, b, urls)
EOF
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$REPO_ROOT"

# A sleep without a fork, so the wait loops below take little CPU from what they measure.
mkfifo "$WORK/tick"
exec 9<>"$WORK/tick"
nap() { read -r -t "$1" -u 9 _ || true; }

free_port() { "$VENV_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_us() { echo "${EPOCHREALTIME/./}"; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }   # utime + stime of a live pid
HZ="$(getconf CLK_TCK)"

# wait_count FILE STRING N PID WHAT: until FILE holds N lines with STRING; fails when PID dies.
wait_count() {
    local deadline=$((SECONDS + 600))
    until [ "$(grep -cF -- "$2" "$1")" -ge "$3" ]; do
        kill -0 "$4" 2>/dev/null || { echo "bench: $5 exited; last lines:" >&2; tail -5 "$1" >&2; exit 1; }
        if (( SECONDS > deadline )); then echo "bench: $5 timed out; last lines:" >&2; tail -5 "$1" >&2; exit 1; fi
        nap 0.02
    done
}

# start_sink LOG: smtp-sink on a free loopback port, set in SINK_PORT; -c writes its counters to LOG.
start_sink() {
    SINK_PORT="$(free_port)"
    "$SINK" -u nobody -c "127.0.0.1:$SINK_PORT" 1000 >"$1" 2>&1 &
    PIDS+=($!)
}
# sink_counter LOG FIELD: the last value of sess= (sessions ended), quit= or mesg= (messages).
sink_counter() { tr '\r' '\n' <"$1" | grep -o "$2=[0-9]*" | tail -1 | cut -d= -f2 || true; }

echo "bench: N=$N on $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"

# ---------------------------------------------------------------- spool + message (queue empty)
QUEUE_URL="$("$VENV_PY" - "$NAME" <<'EOF'
import sys
sys.path.insert(0, "infra/local")
import resources
s3, sqs = resources.clients()
print(resources.create_spool(s3, sqs, sys.argv[1], sys.argv[1])[0])
EOF
)"
printf 'From: bench@example.org\r\nTo: sink@example.test\r\nSubject: bench\r\n\r\n' >"$WORK/message.eml"
for _ in $(seq 25); do printf '%s\r\n' "$(printf 'x%.0s' $(seq 76))"; done >>"$WORK/message.eml"

start_sink "$WORK/sink-relay.log"
export SPOOL_BUCKET="$NAME" SPOOL_QUEUE_URL="$QUEUE_URL" RELAY_SMARTHOST="127.0.0.1:$SINK_PORT" \
    RELAY_SMARTHOST_TLS=starttls RELAY_HELO_NAME=bench.example.test RELAY_POLL_WAIT=1s RUST_LOG=info

# ---------------------------------------------------------------- start-up, against the empty queue
STARTUP_US=()
for i in $(seq "$STARTS"); do
    log="$WORK/startup-$i.log"
    : >"$log"
    # The subshell writes the clock to fd 3 and becomes the relay: nothing runs in between.
    ( printf '%s\n' "$EPOCHREALTIME" >&3; exec "$RELAY" poll 3>&- ) 3>"$WORK/startup-$i.t0" >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    deadline=$((SECONDS + 30))
    until grep -qF '"message":"polling"' "$log"; do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "relay exited before polling"; }
        (( SECONDS <= deadline )) || { cat "$log" >&2; die "relay not polling after 30 s"; }
        nap 0.02
    done
    kill -TERM "$pid"
    wait "$pid" || true
    ts="$(grep -F '"message":"polling"' "$log" | head -1 | sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p')"
    [ -n "$ts" ] || { cat "$log" >&2; die "no \"timestamp\" field in the polling line"; }
    t0="$(<"$WORK/startup-$i.t0")"
    STARTUP_US+=($(( $(date -u -d "$ts" +%s%6N) - ${t0/./} )))
done
read -r SU_MIN SU_MED SU_MAX < <(printf '%s\n' "${STARTUP_US[@]}" | sort -n | awk '
    { v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                         printf "%.1f %.1f %.1f\n", v[1] / 1000, m / 1000, v[NR] / 1000 }')
# A killed relay's long poll (RELAY_POLL_WAIT=1s) may still be open in LocalStack: let it lapse
# before loading jobs, or it could take a batch under its lease.
sleep 2

# ---------------------------------------------------------------- relay rate
"$VENV_PY" - "$NAME" "$QUEUE_URL" "$N" "$WORK/message.eml" <<'EOF'
import hashlib, json, sys, time, uuid
sys.path.insert(0, "infra/local")
import resources
name, url, n, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s3, sqs = resources.clients()
body = open(path, "rb").read()
entries = []
for i in range(n):
    # Each job owns its message (jobs = 1), as the ingress queues a one-recipient message: the
    # relay completes it by deleting the object.
    qid = uuid.uuid4().hex[:26].upper()
    key = f"spool/{hashlib.sha256(qid.encode()).hexdigest()[:2]}/{qid}.eml"  # shared/src/keys.rs
    s3.put_object(Bucket=name, Key=key, Body=body)
    job = {"v": 2, "job_id": uuid.uuid4().hex[:26].upper(), "jobs": 1, "queue_id": qid,
           "message_key": key, "sender": "bench@example.org",
           "domain": "example.test", "recipients": [{"address": f"r{i}@example.test"}],
           "first_seen": int(time.time()), "size": len(body)}
    entries.append({"Id": str(i), "MessageBody": json.dumps(job)})
    if len(entries) == 10:
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
        entries = []
if entries:
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
EOF

# LocalStack's CPU over the relay run, when infra/local/localstack.sh started it (its pid file).
LS_PID=""
ls_suffix=""; [ "$LOCALSTACK_PORT" = 4566 ] || ls_suffix="-$LOCALSTACK_PORT"
if [ -f "$LOCAL_DIR/localstack$ls_suffix.pid" ]; then
    LS_PID="$(<"$LOCAL_DIR/localstack$ls_suffix.pid")"
    kill -0 "$LS_PID" 2>/dev/null || LS_PID=""
fi
[ -z "$LS_PID" ] || ls_ticks0="$(ticks "$LS_PID")"
"$RELAY" poll >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
PIDS+=("$RELAY_PID")
wait_count "$WORK/relay.log" '"message":"polling"' 1 "$RELAY_PID" "relay"
wait_count "$WORK/relay.log" '"status":"sent"' "$N" "$RELAY_PID" "relay"
relay_done_us="$(now_us)"
ts="$(grep -F '"message":"polling"' "$WORK/relay.log" | head -1 | sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p')"
relay_ready_us="$(date -u -d "$ts" +%s%6N)"
RELAY_TICKS="$(ticks "$RELAY_PID")"
[ -z "$LS_PID" ] || LS_TICKS=$(( $(ticks "$LS_PID") - ls_ticks0 ))
RELAY_HWM="$(awk '/^VmHWM/ {print $2}' "/proc/$RELAY_PID/status")"
kill -TERM "$RELAY_PID"
wait "$RELAY_PID" || true
nap 0.3                                             # let the sink count the last sessions
RELAY_SINK_MSGS="$(sink_counter "$WORK/sink-relay.log" mesg)"
RELAY_SINK_SESS="$(sink_counter "$WORK/sink-relay.log" sess)"
RELAY_US=$((relay_done_us - relay_ready_us))
RELAY_TLS="$(grep -F '"status":"sent"' "$WORK/relay.log" | grep -cF '"tls":true' || true)"

# ---------------------------------------------------------------- engine rate (no LocalStack)
# engine_run NAME [VAR=VALUE...]: engine_bench into a fresh sink; sets <NAME>_OUT, _RATE, _CPU_MS,
# _SINK_MSGS and _SINK_SESS.
engine_run() {
    local name="$1" out
    shift
    start_sink "$WORK/sink-$name.log"
    out="$(env RELAY_SMARTHOST="127.0.0.1:$SINK_PORT" "$@" "$VENV_PY" - "$ENGINE" "$N" "$WORK/message.eml" \
        2>"$WORK/$name.log" <<'EOF'
import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(out.replace("\n", " || "), "|", round((r.ru_utime + r.ru_stime) * 1000))
EOF
)" || { tail -5 "$WORK/$name.log" >&2; die "engine_bench ($name) failed"; }
    nap 0.3
    printf -v "${name}_OUT" '%s' "${out% |*}"
    printf -v "${name}_RATE" '%s' "$(sed -n 's|.* = \([0-9]*\)/s;.*|\1|p' <<<"$out")"
    printf -v "${name}_CPU_MS" '%s' "${out##*| }"
    printf -v "${name}_SINK_MSGS" '%s' "$(sink_counter "$WORK/sink-$name.log" mesg)"
    printf -v "${name}_SINK_SESS" '%s' "$(sink_counter "$WORK/sink-$name.log" sess)"
}
engine_run ENGINE
engine_run SINGLE RELAY_MAX_MESSAGES_PER_CONNECTION=1
# The same run signing every delivery (keys made as docs/outbound.md says); the CPU difference to the
# ENGINE run is the signing cost seen through the whole delivery path. sign_step KEYS: the
# signing step alone (engine_bench --sign-only), CPU µs per message.
sign_step() {
    local out
    out="$(RELAY_DKIM_KEYS="$1" "$ENGINE" "$N" "$WORK/message.eml" --sign-only 2>>"$WORK/sign.log")" \
        || { tail -5 "$WORK/sign.log" >&2; die "engine_bench --sign-only failed"; }
    sed -n 's|^dkim: .* signed, \([0-9.]*\) us CPU per message.*|\1|p' <<<"$out"
}
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/dkim-rsa.pem" 2>/dev/null
openssl genpkey -algorithm ed25519 -out "$WORK/dkim-ed.pem"
engine_run RSA RELAY_DKIM_KEYS="example.org:rsa:$WORK/dkim-rsa.pem"
engine_run ED RELAY_DKIM_KEYS="example.org:ed:$WORK/dkim-ed.pem"
RSA_SIGN_US="$(sign_step "example.org:rsa:$WORK/dkim-rsa.pem")"
ED_SIGN_US="$(sign_step "example.org:ed:$WORK/dkim-ed.pem")"

# ---------------------------------------------------------------- Postfix rate
start_sink "$WORK/sink-postfix.log"
PF_PORT="$SINK_PORT"
mkdir -p "$PF_CONF" "$PF_QUEUE"
# Only what a private instance needs; everything about delivery is left at Postfix's defaults.
cat >"$PF_CONF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_QUEUE
data_directory = $WORK/postfix/data
maillog_file = $PF_LOG
maillog_file_prefixes = $WORK/postfix
myhostname = bench.example.test
mydestination =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = [127.0.0.1]:$PF_PORT
smtp_tls_security_level = may
defer_transports = smtp
EOF
# master.cf.proto without the smtpd listener, the local/virtual/lmtp/pipe agents and chroot.
cat >"$PF_CONF/master.cf" <<'EOF'
pickup     unix       n  -  n  60     1  pickup
cleanup    unix       n  -  n  -      0  cleanup
qmgr       unix       n  -  n  300    1  qmgr
tlsmgr     unix       -  -  n  1000?  1  tlsmgr
rewrite    unix       -  -  n  -      -  trivial-rewrite
bounce     unix       -  -  n  -      0  bounce
defer      unix       -  -  n  -      0  bounce
trace      unix       -  -  n  -      0  bounce
verify     unix       -  -  n  -      1  verify
flush      unix       n  -  n  1000?  0  flush
proxymap   unix       -  -  n  -      -  proxymap
proxywrite unix       -  -  n  -      1  proxymap
smtp       unix       -  -  n  -      -  smtp
relay      unix       -  -  n  -      -  smtp
showq      unix       n  -  n  -      -  showq
error      unix       -  -  n  -      -  error
retry      unix       -  -  n  -      -  error
discard    unix       -  -  n  -      -  discard
anvil      unix       -  -  n  -      1  anvil
scache     unix       -  -  n  -      1  scache
postlog    unix-dgram n  -  n  -      1  postlogd
EOF
PF_STARTED=1
"$PF_SBIN/postfix" -c "$PF_CONF" start >"$WORK/postfix-start.log" 2>&1 \
    || { cat "$WORK/postfix-start.log" "$PF_LOG" >&2 2>/dev/null; die "the private Postfix did not start"; }
PF_MASTER="$(tr -d ' ' <"$PF_QUEUE/pid/master.pid")"

# Queue all N with smtp deliveries deferred (sendmail: pickup, cleanup, qmgr, deferred queue).
batch=()
for ((i = 0; i < N; i++)); do
    "$PF_SBIN/sendmail" -C "$PF_CONF" -f bench@example.org "r$i@example.test" <"$WORK/message.eml" &
    batch+=($!)
    if (( ${#batch[@]} == 4 )); then wait "${batch[@]}"; batch=(); fi
done
(( ${#batch[@]} == 0 )) || wait "${batch[@]}"
deadline=$((SECONDS + 600))
until [ "$(find "$PF_QUEUE/deferred" -type f | wc -l)" -ge "$N" ] \
    && [ -z "$(find "$PF_QUEUE/maildrop" "$PF_QUEUE/incoming" "$PF_QUEUE/active" -type f)" ]; do
    (( SECONDS <= deadline )) || { tail -5 "$PF_LOG" >&2; die "Postfix did not queue $N messages"; }
    nap 0.1
done

pf_cpu() {  # master + its live daemons + the daemons it already reaped (cutime + cstime)
    local p total line f
    total=0
    for p in /proc/[0-9]*; do
        { read -r line <"$p/stat"; } 2>/dev/null || continue
        read -r -a f <<<"${line##*) }"
        if [ "${p#/proc/}" = "$PF_MASTER" ]; then total=$((total + f[11] + f[12] + f[13] + f[14]))
        elif [ "${f[1]}" = "$PF_MASTER" ]; then total=$((total + f[11] + f[12])); fi
    done
    echo "$total"
}
pf_cpu0="$(pf_cpu)"
pf_start_us="$(now_us)"
"$PF_SBIN/postqueue" -c "$PF_CONF" -f
wait_count "$PF_LOG" 'status=sent' "$N" "$PF_MASTER" "postfix"
pf_done_us="$(now_us)"
PF_TICKS=$(( $(pf_cpu) - pf_cpu0 ))
PF_US=$((pf_done_us - pf_start_us))
PF_PROCS="$(grep -F 'status=sent' "$PF_LOG" | grep -o 'postfix/smtp\[[0-9]*\]' | sort -u | wc -l)"
PF_CONNS="$(grep -F 'status=sent' "$PF_LOG" | grep -vc 'conn_use=' || true)"
PF_REUSED="$(grep -F 'status=sent' "$PF_LOG" | grep -c 'conn_use=' || true)"
PF_SETTINGS="$("$PF_SBIN/postconf" -c "$PF_CONF" default_destination_concurrency_limit \
    initial_destination_concurrency default_process_limit smtp_connection_cache_on_demand \
    smtp_connection_cache_time_limit smtp_connection_reuse_time_limit \
    default_destination_rate_delay | paste -sd';' | sed 's/;/; /g')"
"$PF_SBIN/postfix" -c "$PF_CONF" stop >/dev/null 2>&1 || true
nap 0.3
PF_SINK_MSGS="$(sink_counter "$WORK/sink-postfix.log" mesg)"
PF_TLS="$(grep -c 'TLS connection established' "$PF_LOG" || true)"
PF_SIZE="$(grep -o 'size=[0-9]*' "$PF_LOG" | head -1 | cut -d= -f2 || true)"

# ---------------------------------------------------------------- report
rate() { awk -v n="$1" -v us="$2" 'BEGIN { printf "%.0f", n / (us / 1e6) }'; }
secs() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1e6 }'; }
ms_per() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.2f", t * 1000 / hz / n }'; }
RELAY_RATE="$(rate "$N" "$RELAY_US")"
PF_RATE="$(rate "$N" "$PF_US")"
SIZE_MB="$(awk -v b="$(stat -c %s "$RELAY")" 'BEGIN { printf "%.1f MB", b / 1e6 }')"
echo
echo "relay poll:     $N in $(secs "$RELAY_US")s = $RELAY_RATE/s (one worker, LocalStack S3+SQS -> smtp-sink;" \
    "sink counted $RELAY_SINK_MSGS messages in $RELAY_SINK_SESS sessions)"
echo "Postfix $PF_VERSION: $N in $(secs "$PF_US")s = $PF_RATE/s (postqueue -f of $N deferred messages -> smtp-sink;" \
    "sink counted $PF_SINK_MSGS; $PF_PROCS smtp processes, $PF_CONNS connections, $PF_REUSED deliveries on a reused one)"
echo "relay engine:   $ENGINE_OUT (engine_bench: in-memory spool+queue -> smtp-sink; sink counted" \
    "${ENGINE_SINK_MSGS:-?} messages in ${ENGINE_SINK_SESS:-?} sessions; RELAY_DESTINATION_CONCURRENCY" \
    "${RELAY_DESTINATION_CONCURRENCY:-5}, RELAY_MAX_MESSAGES_PER_CONNECTION ${RELAY_MAX_MESSAGES_PER_CONNECTION:-100})"
echo "engine, 1/conn: $SINGLE_OUT (RELAY_MAX_MESSAGES_PER_CONNECTION=1: a session per job, as before reuse;" \
    "sink counted ${SINGLE_SINK_MSGS:-?} messages in ${SINGLE_SINK_SESS:-?} sessions)"
echo "engine + DKIM:  RSA-2048 $RSA_OUT; Ed25519 $ED_OUT (sink counted ${RSA_SINK_MSGS:-?} and ${ED_SINK_MSGS:-?});" \
    "signing step alone: RSA-2048 $RSA_SIGN_US us, Ed25519 $ED_SIGN_US us CPU per message"
echo "Postfix settings: relayhost = [127.0.0.1]:PORT; smtp_tls_security_level = may; defer_transports = smtp (released by postqueue -f); $PF_SETTINGS"
echo "TLS:            relay $RELAY_TLS of $N deliveries over TLS (RELAY_SMARTHOST_TLS=starttls), Postfix $PF_TLS TLS" \
    "sessions (smtp_tls_security_level = may); smtp-sink advertises no STARTTLS, so both send plaintext"
echo "start-up:       relay exec -> \"polling\" line, $STARTS runs on an empty queue:" \
    "min $SU_MIN / median $SU_MED / max $SU_MAX ms"
echo "binary size:    $(stat -c %s "$RELAY") bytes ($RELAY)"
echo "relay CPU:      $((RELAY_TICKS * 1000 / HZ)) ms user+sys for its whole run incl. start-up =" \
    "$(ms_per "$RELAY_TICKS" "$N") ms per delivery"
if [ -n "$LS_PID" ]; then
    echo "LocalStack CPU: $((LS_TICKS * 1000 / HZ)) ms user+sys over the relay run =" \
        "$(ms_per "$LS_TICKS" "$N") ms per delivery (pid $LS_PID; includes anyone else using it)"
else
    echo "LocalStack CPU: not measured (not started by infra/local/localstack.sh: no pid file)"
fi
echo "Postfix CPU:    $((PF_TICKS * 1000 / HZ)) ms user+sys of master + all daemons from release to the last delivery =" \
    "$(ms_per "$PF_TICKS" "$N") ms per delivery"
echo "peak RSS:       relay ${RELAY_HWM} kB (VmHWM); Postfix not measured (many processes sharing libraries)"
echo "message size:   relay sends the $(stat -c %s "$WORK/message.eml")-byte object as is; Postfix ${PF_SIZE:-?} bytes (its cleanup adds Received:, Date:, Message-ID:)"
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
per_k() { awk -v s="$1" -v n="$N" 'BEGIN { if (s == "") print "?"; else printf "%.1f", s * 1000 / n }'; }
cpu_per() { awk -v c="$1" -v n="$N" 'BEGIN { printf "%.2f", c / n }'; }
row() { printf '%-24s %14s %14s %14s %14s\n' "$@"; }
row "" "relay poll" "relay engine" "engine 1/conn" "Postfix"
row "deliveries/s" "$RELAY_RATE" "$ENGINE_RATE" "$SINGLE_RATE" "$PF_RATE"
row "ratio to Postfix" "$(ratio "$RELAY_RATE" "$PF_RATE")" "$(ratio "$ENGINE_RATE" "$PF_RATE")" \
    "$(ratio "$SINGLE_RATE" "$PF_RATE")" "1.00"
row "CPU ms/delivery" "$(ms_per "$RELAY_TICKS" "$N")" "$(cpu_per "$ENGINE_CPU_MS")" "$(cpu_per "$SINGLE_CPU_MS")" \
    "$(ms_per "$PF_TICKS" "$N")"
row "sessions/1000 deliveries" "$(per_k "$RELAY_SINK_SESS")" "$(per_k "$ENGINE_SINK_SESS")" \
    "$(per_k "$SINGLE_SINK_SESS")" "$(per_k "$PF_CONNS")"
row "start-up median (ms)" "$SU_MED" "-" "-" "-"
row "binary size" "$SIZE_MB" "-" "-" "-"
echo
extra() { awk -v c="$1" -v b="$ENGINE_CPU_MS" -v n="$N" 'BEGIN { printf "%+.3f", (c - b) / n }'; }
row "engine, DKIM signing" "none" "RSA-2048" "Ed25519" ""
row "deliveries/s" "$ENGINE_RATE" "$RSA_RATE" "$ED_RATE" ""
row "CPU ms/delivery" "$(cpu_per "$ENGINE_CPU_MS")" "$(cpu_per "$RSA_CPU_MS")" "$(cpu_per "$ED_CPU_MS")" ""
row "  vs no signing" "-" "$(extra "$RSA_CPU_MS")" "$(extra "$ED_CPU_MS")" ""
row "sign step, CPU us/msg" "-" "$RSA_SIGN_US" "$ED_SIGN_US" ""

# ---------------------------------------------------------------- cost per message (issue 12 §4)
# S3/SQS requests and dollars per million messages on the first-attempt path, from a private
# LocalStack's request log (tests/bench_cost.sh; M = min(N, 200)).
RELAY_BIN_DIR="${RELAY_BIN_DIR:-$REPO_ROOT/target/release}" "$REPO_ROOT/tests/bench_cost.sh" "$(( N < 200 ? N : 200 ))"
