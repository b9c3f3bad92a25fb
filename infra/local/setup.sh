#!/usr/bin/env bash
# infra/local/setup.sh — idempotent installer for the local stack, the end-to-end tests and the
# benchmarks. Owns: the table of capabilities this machine must have (below), the Debian packages
# that provide them, the Python venv (LocalStack, pytest, aiosmtpd, dnslib, boto3, ...) at
# $RELAY_VENV, and moto's server (DynamoDB) in a venv of its own at $MOTO_VENV.
#
# It decides from capabilities, not from presence: each entry of the table is a command that
# proves one thing the tests or benchmarks ask of a tool (swaks present but without TLS fails its
# entry). The checks run in parallel; the packages of the failing ones are installed with one
# apt-get install; the checks run again, and any that still fails stops the setup with the
# capability, the check and the package named. Then the venv is made (once per content of
# requirements.txt) and every module the tests import is proven importable
# (infra/local/check_imports.py derives the list from the sources). Well under a second when
# everything is present.
#
# Never starts the Postfix daemon: Postfix is installed with "No configuration" and with
# service starts blocked during the install.
#
#   infra/local/setup.sh            check, install what is missing, make the venv
#   infra/local/setup.sh --check    only run the capability checks: one line each (ok or
#                                   missing, with the packages), status 1 if any is missing
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/env.sh"
source "$here/python.sh"

log() { echo "setup: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---------------------------------------------------------------------------------------------
# The capabilities. To add a tool: one `cap` line — what it must be able to do (as the tests use
# it), the Debian package(s) that provide it, and a bash command that succeeds only when it can.
# Checks run in subshells of this script (its functions are available) with $CHECK_TMP, a
# scratch directory of their own; their output is discarded.

CAP_WHAT=() CAP_PKGS=() CAP_CHECK=()
cap() { CAP_WHAT+=("$1"); CAP_PKGS+=("$2"); CAP_CHECK+=("$3"); }

cap "swaks speaks STARTTLS and implicit TLS (--tls, --tlsc)" "swaks libnet-ssleay-perl libio-socket-ssl-perl" \
    'swaks --support 2>&1 | grep -qx "=== TLS supported"'
cap "swaks does AUTH LOGIN and PLAIN" "swaks" \
    'swaks --support 2>&1 | grep -qx "=== Basic AUTH supported"'
cap "curl speaks smtp:// and smtps:// over TLS" "curl" \
    'v="$(curl -V)" && grep -Eq "^Protocols:(.* )?smtp( |$)" <<<"$v" && grep -Eq "^Protocols:(.* )?smtps( |$)" <<<"$v" && grep -Eq "^Features:(.* )?SSL( |$)" <<<"$v"'
cap "Postfix smtp-source sends a message to smtp-sink (e2e tests, benchmarks)" "postfix" \
    'sink_takes_a_message_from_source'
cap "Postfix >= 3.4 with postfix, postqueue and sendmail (tests/bench_relay.sh)" "postfix" \
    'IFS=. read -r ma mi _ <<<"$(/usr/sbin/postconf -dh mail_version)" && (( ma > 3 || (ma == 3 && mi >= 4) )) && [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/postqueue ] && [ -x /usr/sbin/sendmail ]'
cap "a C compiler and linker for cargo (build scripts, ring)" "gcc libc6-dev" \
    'printf "int main(void) { return 0; }\n" | cc -x c -o "$CHECK_TMP/a.out" - && "$CHECK_TMP/a.out"'
cap "flock and setsid (setup.sh, localstack.sh)" "util-linux" \
    'flock "$CHECK_TMP/lock" setsid true'
cap "openssl makes DKIM keys and prints their public half (tests/test_dkim.py, bench_relay.sh)" "openssl" \
    'openssl genpkey -algorithm ed25519 -out "$CHECK_TMP/k.pem" && openssl pkey -in "$CHECK_TMP/k.pem" -pubout -outform DER | openssl base64 -A | grep -q .'
cap "rspamd 3.4 with a valid stock configuration (tests/test_inbound_filter_e2e.py, infra/local/run)" "rspamd" \
    'rspamd --version 2>&1 | grep -Eq "version 3\.[4-9]" && rspamadm configtest -c /etc/rspamd/rspamd.conf >/dev/null 2>&1'
cap "Python 3.11 with venv and ensurepip (\$RELAY_PYTHON, pyenv, python3.11 or python3)" "python3.11 python3.11-venv" \
    'find_python'
# The certificates of the tests are made by Python's `cryptography` (tests/harness.py), a module
# of the venv: check_imports.py proves it importable with the others. Rust (rustup, 1.95) is not
# a Debian package and not installed here; only tests/run's cargo steps need it.

# The checks too long for one line.

sink_takes_a_message_from_source() {  # over a unix socket in $CHECK_TMP: no port to pick
    local sock="$CHECK_TMP/sink" user=() pid rc=0
    [ "$(id -u)" = 0 ] && user=(-u nobody)      # smtp-sink refuses to run as root without -u
    /usr/sbin/smtp-sink "${user[@]}" "unix:$sock" 5 & pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.01; done
    /usr/sbin/smtp-source -m 1 -f a@example.org -t b@example.test "unix:$sock" || rc=$?
    kill "$pid" 2>/dev/null
    return "$rc"
}

# run_checks: FAILED=(indexes of the capabilities whose check fails), all checks run in parallel.
run_checks() {
    local i pids=()
    for i in "${!CAP_CHECK[@]}"; do
        # Without pipefail: `tool | grep -q` must not fail when grep stops reading first.
        ( set +o pipefail; eval "${CAP_CHECK[i]}" ) >/dev/null 2>&1 </dev/null &
        pids[i]=$!
    done
    FAILED=()
    for i in "${!pids[@]}"; do wait "${pids[i]}" || FAILED+=("$i"); done
}

install_packages() {  # install_packages PKG...: one apt-get install, no recommends, no daemons
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
    # Block service starts during the install (policy-rc.d exit 101), unless a policy already exists.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    # The lock timeout makes concurrent setups (or an unattended upgrade) wait instead of failing.
    as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "$@" || rc=$?
    [ "$own_policy" = 1 ] && as_root rm -f "$policy"
    [ "$rc" = 0 ] || { log "apt-get failed ($rc)"; exit "$rc"; }
}

report_checks() {  # the --check mode: what is there and what is not, nothing installed
    local i
    run_checks
    for i in "${!CAP_WHAT[@]}"; do
        if [[ " ${FAILED[*]} " == *" $i "* ]]; then
            echo "missing: ${CAP_WHAT[i]} (Debian: ${CAP_PKGS[i]}; check: ${CAP_CHECK[i]})"
        else
            echo "ok: ${CAP_WHAT[i]}"
        fi
    done
    [ ${#FAILED[@]} -eq 0 ]
}

ensure_capabilities() {
    run_checks
    [ ${#FAILED[@]} -eq 0 ] && return
    local i p pkgs=()
    for i in "${FAILED[@]}"; do
        log "missing: ${CAP_WHAT[i]}"
        read -ra p <<<"${CAP_PKGS[i]}"
        pkgs+=("${p[@]}")
    done
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    install_packages "${pkgs[@]}"
    run_checks
    [ ${#FAILED[@]} -eq 0 ] && return
    for i in "${FAILED[@]}"; do
        log "FAILED: ${CAP_WHAT[i]}, after installing ${CAP_PKGS[i]}; the check was: ${CAP_CHECK[i]}"
    done
    exit 1
}

# ---------------------------------------------------------------------------------------------
# The venvs: each made once per content of its requirements file (the hash is in its path and
# marker); concurrent runs wait for one installer.

# make_venv VENV REQUIREMENTS HASH PROOF...: make VENV from REQUIREMENTS unless its marker for
# HASH is there; the command PROOF must then pass before the marker is written.
make_venv() {
    local venv="$1" requirements="$2" hash="$3"; shift 3
    local marker="$venv/.installed-$hash"
    [ -e "$marker" ] && return
    mkdir -p "$(dirname "$venv")"
    exec 9>"$venv.lock"
    flock 9
    if [ ! -e "$marker" ]; then
        local py
        py="$(find_python)"
        log "creating $venv with $py (takes a few minutes the first time)"
        rm -rf "$venv"
        "$py" -m venv "$venv"
        "$venv/bin/python" -m pip install -q -r "$requirements"
        "$venv/bin/python" -m pip check >&2
        "$@"
        touch "$marker"
    fi
    exec 9>&-
}

# Proof that the tests can run here: every module they (and the local tools) import imports,
# and pytest loads every test module with its configuration (an ini option whose plugin is
# missing, e.g. `timeout` without pytest-timeout, is an error).
prove_test_venv() {
    "$VENV_PY" "$here/check_imports.py" "$REPO_ROOT"
    local out
    out="$("$VENV_PY" -m pytest --collect-only -q -p no:cacheprovider \
        -W error::pytest.PytestConfigWarning "$REPO_ROOT/tests" 2>&1)" \
        || { echo "$out" >&2; log "pytest cannot collect the tests in $RELAY_VENV"; exit 1; }
}

# moto's server (DynamoDB) has a venv of its own: LocalStack's moto-ext owns the `moto` module
# in the main one. Proven by starting it and asking for DynamoDB.
prove_moto() {
    "$VENV_PY" "$here/state_table.py" --check "$MOTO_SERVER" \
        || { log "moto's server in $MOTO_VENV does not serve DynamoDB"; exit 1; }
}

CHECK_TMP="$(mktemp -d)"
trap 'rm -rf "$CHECK_TMP"' EXIT
if [ "${1:-}" = "--check" ]; then report_checks; exit; fi
ensure_capabilities
make_venv "$RELAY_VENV" "$REQUIREMENTS" "$REQ_HASH" prove_test_venv
make_venv "$MOTO_VENV" "$MOTO_REQUIREMENTS" "$MOTO_REQ_HASH" prove_moto
# Every run (quick: no import): a module a test started importing since the venv was made.
"$VENV_PY" "$here/check_imports.py" --find "$REPO_ROOT"
mkdir -p "$LOCAL_DIR"
