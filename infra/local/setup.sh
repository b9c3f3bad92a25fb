#!/usr/bin/env bash
# infra/local/setup.sh — idempotent installer for the local stack and the end-to-end tests.
# Owns: the Debian packages (Postfix's smtp-sink/smtp-source, swaks, curl) and the Python venv
# (LocalStack, pytest, aiosmtpd, dnslib, boto3) at $RELAY_VENV. Quick when everything is present.
# Never starts the Postfix daemon: Postfix is installed with "No configuration" and with
# service starts blocked during the install.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { echo "setup: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_apt_packages() {
    local missing=()
    [ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
    command -v swaks >/dev/null || missing+=(swaks)
    command -v curl >/dev/null || missing+=(curl)
    command -v cc >/dev/null || missing+=(gcc libc6-dev)   # linker and C compiler for cargo (ring)
    command -v flock >/dev/null || missing+=(util-linux)
    command -v openssl >/dev/null || missing+=(openssl)   # DKIM keys in tests/test_dkim.py
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
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
    as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    [ "$own_policy" = 1 ] && as_root rm -f "$policy"
    [ "$rc" = 0 ] || { log "apt-get failed ($rc)"; exit "$rc"; }
}

# A Python 3.11 interpreter: $RELAY_PYTHON, pyenv's 3.11, then python3.11 / python3 on PATH.
find_python() {
    local c pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    for c in ${RELAY_PYTHON:-} "$pyenv_root"/versions/3.11*/bin/python3.11 python3.11 python3; do
        if "$c" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            echo "$c"
            return
        fi
    done
    log "no Python 3.11 with the venv module found (set RELAY_PYTHON)"
    exit 1
}

install_venv() {
    local marker="$RELAY_VENV/.installed-$REQ_HASH"
    [ -e "$marker" ] && return
    mkdir -p "$(dirname "$RELAY_VENV")"
    exec 9>"$RELAY_VENV.lock"
    flock 9                                  # concurrent runs wait for one installer
    if [ ! -e "$marker" ]; then
        local py
        py="$(find_python)"
        log "creating $RELAY_VENV with $py (takes a few minutes the first time)"
        rm -rf "$RELAY_VENV"
        "$py" -m venv "$RELAY_VENV"
        "$VENV_PY" -m pip install -q -r "$REQUIREMENTS"
        "$VENV_PY" -m pip check >&2
        touch "$marker"
    fi
    exec 9>&-
}

install_apt_packages
install_venv
mkdir -p "$LOCAL_DIR"
