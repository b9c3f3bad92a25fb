#!/usr/bin/env bash
# tests/bench_ingress.sh [SESSIONS] [MESSAGES] [SIZE] — ingress benchmark (prints figures; not
# part of the test suite, run by hand). Drives, with Postfix's smtp-source at the same
# concurrency: the ingress with INGRESS_SPOOL=discard, Postfix's smtp-sink, and the ingress with
# LocalStack S3 + SQS; then the raw S3 PUT + SQS send rate against the same LocalStack
# (examples/spool_bench.rs), end-of-DATA->250 latency and RSS per idle connection; then the
# streaming figures below.
# tests/bench_ingress.sh streaming [CLIENTS] [SIZE] — only those: large messages streamed in
# parts. CLIENTS (50) clients each send one SIZE-byte (20 MB) message at once: the ingress's peak
# RSS and end-of-DATA->250, with the discard spool (parts dropped as they are handed over: the
# ingress alone, trusted clients) and with LocalStack S3 (multipart uploads) + SQS, every message
# judged from the stored object: SPF/DKIM/DMARC alone (s3), then with rspamd too (Debian's, on
# loopback: s3+rspamd); before that, one client at a time for the latency without contention.
# tests/bench_ingress.sh auth [SESSIONS] [MESSAGES] — only the cost of SPF/DKIM/DMARC: the
# ingress (discard spool, a local DNS server holding example.org's SPF, DKIM key and DMARC
# p=reject; hickory's cache warm after the first message) with INGRESS_AUTH_CHECKS=off, then
# enforce: msg/s with smtp-source (SPF-aligned mail) beside smtp-sink, and end-of-DATA->250
# p50/p99 of a DKIM-signed message (RSA-2048, dkimpy).
# tests/bench_ingress.sh filter [SESSIONS] [MESSAGES] [SIZE] — only the spam filter's cost: the
# ingress (discard spool, no SPF/DKIM/DMARC) with rspamd off, then on (Debian's rspamd on
# loopback, infra/local/rspamd_config.py): msg/s with smtp-source and end-of-DATA->250 p50/p99.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/env.sh
only=""
if [ "${1:-}" = "streaming" ]; then only=streaming; shift; BIG_CLIENTS="${1:-50}" BIG_SIZE="${2:-20000000}"; set --; fi
if [ "${1:-}" = "filter" ]; then only=filter; shift; fi
if [ "${1:-}" = "auth" ]; then only=auth; shift; fi
BIG_CLIENTS="${BIG_CLIENTS:-50}" BIG_SIZE="${BIG_SIZE:-20000000}"
SESSIONS="${1:-20}" MESSAGES="${2:-5000}" SIZE="${3:-2000}"
IDLE="${IDLE_CONNECTIONS:-5000}"
if [ "$only" = filter ] || [ "$only" = auth ]; then cargo build --release -p ingress --bins -q
else cargo build --release --workspace --bins --examples -q; fi
infra/local/localstack.sh start >/dev/null
eval "$("$VENV_PY" infra/local/resources.py bench-spool bench-jobs | sed 's/^/export /')" \
    || { echo "could not create bench resources" >&2; exit 1; }
ulimit -n 20000
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { "$VENV_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
peak_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# rate NAME ADDR PID: smtp-source at the given concurrency; prints msg/s and peak RSS.
rate() {
    local name="$1" addr="$2" pid="$3" start end
    start=$(date +%s.%N)
    smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f a@example.org -t b@example.test "$addr"
    end=$(date +%s.%N)
    awk -v n="$MESSAGES" -v s="$start" -v e="$end" -v name="$name" -v rss="$(peak_kib "$pid")" \
        'BEGIN { printf "%-28s %8.0f msg/s  (%d messages in %.2fs, peak RSS %d KiB)\n", name, n/(e-s), n, e-s, rss }'
}

start_ingress() {  # start_ingress PORT EXTRA_ENV... -> pid on stdout
    local port="$1"; shift
    env INGRESS_LISTEN="127.0.0.1:$port" INGRESS_HOSTNAME=bench.example.test RELAY_DOMAINS=example.test \
        INGRESS_MAX_CONNECTIONS=10000 INGRESS_MAX_CONNECTIONS_PER_IP=10000 RUST_LOG=warn "$@" \
        target/release/ingress >/dev/null 2>&1 &
    echo $!
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
}

# Debian's rspamd on loopback with the tests' configuration and a local DNS server; sets
# rspamd_port (its normal worker).
start_rspamd() {
    local dns_port confdir
    dns_port=$(free_port) rspamd_port=$(free_port) confdir=$(mktemp -d)
    infra/local/dns-server --port "$dns_port" --zone infra/local/local.zone >/dev/null 2>&1 & pids+=($!)
    read -ra cmd <<<"$("$VENV_PY" infra/local/rspamd_config.py "$confdir" --normal "$rspamd_port" \
        --controller "$(free_port)" --proxy "$(free_port)" --dns "127.0.0.1:$dns_port")"
    "${cmd[@]}" >"$confdir/rspamd.log" 2>&1 & pids+=($!)
    for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$rspamd_port") 2>/dev/null && break; sleep 0.1; done
}

# A gigabyte of bench mail in the shared LocalStack: delete it.
drop_bench_mail() {
    PYTHONPATH=infra/local "$VENV_PY" -c 'import sys, resources; s3, _ = resources.clients(); b = sys.argv[1]
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix="spool/"):
    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
    keys and s3.delete_objects(Bucket=b, Delete={"Objects": keys})' "$SPOOL_BUCKET"
}

# streaming: large messages (one part in memory per session, whatever the message size).
streaming() {
    echo "== streaming: $BIG_CLIENTS clients x $BIG_SIZE bytes at once (parts of 5 MiB)"
    local mode p pid
    start_rspamd
    for mode in discard s3 s3+rspamd; do
        # The discard spool keeps nothing to read back, so its clients are trusted (not judged);
        # with S3 every message is judged from the stored object (SPF/DKIM/DMARC, then rspamd
        # given the whole message, our header written back).
        local extra=(RELAY_NETWORKS=127.0.0.0/8 INGRESS_SPOOL=discard)
        [ "$mode" = s3 ] && extra=(INGRESS_SPOOL=s3)
        [ "$mode" = s3+rspamd ] && extra=(INGRESS_SPOOL=s3 INGRESS_RSPAMD_URL="http://127.0.0.1:$rspamd_port" INGRESS_RSPAMD_TIMEOUT=300s)
        p=$(free_port); pid=$(start_ingress "$p" "${extra[@]}"); pids+=("$pid")
        for _ in 1 2 3; do
            printf '%-18s ' "ingress ($mode)"
            "$VENV_PY" tests/bench_smtp_client.py big "127.0.0.1:$p" 1 "$BIG_SIZE" "$pid"
        done
        printf '%-18s ' "ingress ($mode)"
        "$VENV_PY" tests/bench_smtp_client.py big "127.0.0.1:$p" "$BIG_CLIENTS" "$BIG_SIZE" "$pid"
        kill "$pid"
        drop_bench_mail
    done
}
if [ "$only" = streaming ]; then streaming; exit 0; fi

# auth: SPF/DKIM/DMARC off vs enforce, everything else equal.
auth() {
    echo "== SPF/DKIM/DMARC: $SESSIONS sessions, $MESSAGES messages (discard spool, local DNS server)"
    local dir dns_port p pid mode rr=()
    dir=$(mktemp -d) dns_port=$(free_port)
    while IFS= read -r line; do rr+=(--rr "$line"); done < <("$VENV_PY" tests/bench_smtp_client.py signed "$dir")
    "$VENV_PY" infra/local/dns_server.py --port "$dns_port" "${rr[@]}" >/dev/null 2>&1 & pids+=($!)
    p=$(free_port); sink_pid=$(smtp-sink -u nobody -c "127.0.0.1:$p" 1000 >/dev/null 2>&1 & echo $!); pids+=("$sink_pid"); sleep 0.5
    rate "postfix smtp-sink" "127.0.0.1:$p" "$sink_pid"
    for mode in off enforce; do
        p=$(free_port)
        pid=$(start_ingress "$p" INGRESS_SPOOL=discard INGRESS_AUTH_CHECKS=$mode INGRESS_DNS_SERVERS="127.0.0.1:$dns_port")
        pids+=("$pid")
        rate "ingress, checks $mode" "127.0.0.1:$p" "$pid"
        "$VENV_PY" tests/bench_smtp_client.py latency "127.0.0.1:$p" "$SESSIONS" 2000 "@$dir/message.eml"
        kill "$pid"
    done
    rm -rf "$dir"
}
if [ "$only" = auth ]; then auth; exit 0; fi

# filter: rspamd off vs on, everything else equal.
filter() {
    echo "== spam filter: $SESSIONS sessions, $MESSAGES messages of $SIZE bytes (discard spool, INGRESS_AUTH_CHECKS=off)"
    local p pid mode
    start_rspamd
    for mode in off on; do
        local extra=(INGRESS_SPOOL=discard INGRESS_AUTH_CHECKS=off)
        [ "$mode" = on ] && extra+=(INGRESS_RSPAMD_URL="http://127.0.0.1:$rspamd_port")
        p=$(free_port); pid=$(start_ingress "$p" "${extra[@]}"); pids+=("$pid")
        rate "ingress, rspamd $mode" "127.0.0.1:$p" "$pid"
        "$VENV_PY" tests/bench_smtp_client.py latency "127.0.0.1:$p" "$SESSIONS" 1000 "$SIZE"
        kill "$pid"
    done
}
if [ "$only" = filter ]; then filter; exit 0; fi

echo "== $SESSIONS sessions, $MESSAGES messages of $SIZE bytes"
p=$(free_port); sink_pid=$(smtp-sink -u nobody -c "127.0.0.1:$p" 1000 >/dev/null 2>&1 & echo $!); pids+=("$sink_pid"); sleep 0.5
rate "postfix smtp-sink" "127.0.0.1:$p" "$sink_pid"

p=$(free_port); pid=$(start_ingress "$p" INGRESS_SPOOL=discard); pids+=("$pid")
rate "ingress (discard spool)" "127.0.0.1:$p" "$pid"
"$VENV_PY" tests/bench_smtp_client.py latency "127.0.0.1:$p" "$SESSIONS" 2000 "$SIZE"
"$VENV_PY" tests/bench_smtp_client.py idle "127.0.0.1:$p" "$IDLE" "$pid"

p=$(free_port); pid=$(start_ingress "$p"); pids+=("$pid")
MESSAGES=$(( MESSAGES / 5 )) rate "ingress (LocalStack S3+SQS)" "127.0.0.1:$p" "$pid"
"$VENV_PY" tests/bench_smtp_client.py latency "127.0.0.1:$p" "$SESSIONS" 400 "$SIZE"
target/release/examples/spool_bench $(( MESSAGES / 5 )) "$SESSIONS" "$SIZE"

streaming
