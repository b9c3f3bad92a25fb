#!/usr/bin/env bash
# infra/local/fresh-machine-check.sh — proves that the test suite passes on a fresh Debian 12
# machine. Not part of CI (it needs root and a few minutes). Owns the throw-away machine:
#
#   1. debootstraps a clean Debian 12 (bookworm, minbase: the smallest Debian there is) into a
#      scratch directory, from the mirror this machine's apt uses (/etc/apt/sources.list*), with
#      the bookworm, bookworm-updates and bookworm-security suites and the /etc/hosts a Debian
#      install writes;
#   2. copies the project into it (the working tree's files, or `git archive REV` with --rev),
#      and mounts the host's built binaries read-only at /opt/relay-bin (RELAY_BIN_DIR) — the
#      Rust toolchain is not needed inside, except by the tests that run cargo or rustc (--rust);
#   3. chroots into it (/proc, /sys, /dev mounted; the network, loopback included, is the
#      host's) with an empty environment, and there runs infra/local/setup.sh (timed), setup.sh
#      again (the quick path, timed), infra/check-template.sh (unless --no-template), LocalStack
#      from the venv on a free port other than the shared 4566 (LOCALSTACK_PORT), and
#      `./tests/run --quick` on the chosen test files;
#   4. prints the timings and pytest's summary, then stops what it started in the chroot (by the
#      pids whose root is the scratch directory), unmounts, and deletes the directory (--keep
#      leaves it, unmounted).
#
#   infra/local/fresh-machine-check.sh [--rev REV] [--with PKG,...] [--rust] [--keep]
#                                      [--no-template] [--bin-dir DIR] [pytest paths or args...]
#
# --with installs Debian packages (apt-get, recommends included) into the fresh system before the
# setup, to model a machine that has more than minbase, e.g. `--with python3.11-venv` for one
# that already has Python. (debootstrap --include cannot: it resolves neither alternatives nor
# the -updates and -security suites.)
#
# --rust gives the machine the Rust toolchain the README asks for, as rustup leaves it: the
# host's toolchains (RUSTUP_HOME) mounted read-only at /root/.rustup, its rustup proxies copied
# to /root/.cargo/bin, and an empty, writable CARGO_HOME; `cargo fetch` then downloads the
# crates as `cargo build` in a full ./tests/run would. Without it the entrypoint tests skip
# (no rustc) and the cargo-lambda test fails (`cargo metadata`).
#
# Default tests: tests/test_ingress_clients.py tests/test_pipeline_e2e.py tests/test_harness.py
# (pass `tests/` for the whole suite). Default binaries: target/debug of this checkout
# (`cargo build --workspace` first). Downloaded .debs are kept in
# ~/.cache/smtp-relay/debootstrap, so a second run does not fetch the base system again;
# nothing else is cached (apt lists, pip) — each run starts from nothing, as a new machine does.
# Exit status: that of the run inside the chroot.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"

SUITE=bookworm
DEFAULT_TESTS=(tests/test_ingress_clients.py tests/test_pipeline_e2e.py tests/test_harness.py)
DEB_CACHE="$HOME/.cache/smtp-relay/debootstrap"

rev="" with="" rust=0 keep=0 template=1 bin_dir="$REPO_ROOT/target/debug"
while [ $# -gt 0 ]; do
    case "$1" in
        --rev) rev="$2"; shift 2 ;;
        --with) with="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --rust) rust=1; shift ;;
        --no-template) template=0; shift ;;
        --bin-dir) bin_dir="$(cd "$2" && pwd)"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
tests=("$@"); [ ${#tests[@]} -gt 0 ] || tests=("${DEFAULT_TESTS[@]}")

log() { echo "fresh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, mount, chroot)"
for b in ingress relay; do
    [ -x "$bin_dir/$b" ] || die "$bin_dir/$b missing: cargo build --workspace (or --bin-dir DIR)"
done
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 debootstrap \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
fi

# mirror SUITE: the first URI this machine's apt uses for SUITE, one-line (.list) or deb822
# (.sources) format.
mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v s="$1" '$1 == "deb" { sub(/ \[[^]]*\]/, ""); if ($3 == s) { print $2; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v s="$1" 'BEGIN { RS = ""; FS = "\n" } {
            uri = ""; hit = 0
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^URIs:/) { split(substr($i, 6), u, " "); uri = u[1] }
                if ($i ~ /^Suites:/) { n = split(substr($i, 8), w, " "); for (j = 1; j <= n; j++) if (w[j] == s) hit = 1 }
            }
            if (hit && uri != "") { print uri; exit }
        }' "$f"
    done
}
MIRROR="$(mirror "$SUITE" | head -n1)"
SECURITY="$(mirror "$SUITE-security" | head -n1)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
SECURITY="${SECURITY:-http://deb.debian.org/debian-security}"

# A free TCP port on 127.0.0.1 for the chroot's LocalStack (the network namespace is shared).
ls_port=""
for p in $(shuf -i 4567-4666); do                  # random: two runs at once rarely collide
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ls_port=$p; break; fi
done
[ -n "$ls_port" ] || die "no free port in 4567-4666 for LocalStack"

ROOT="$(mktemp -d /var/tmp/fresh-$SUITE.XXXXXX)"
chmod 755 "$ROOT"            # it is "/" inside: users like nobody (smtp-sink -u) must traverse it
SRC=/src/smtp-relay

mounts_under_root() { awk -v r="$ROOT/" 'index($5 "/", r) == 1 { print $5 }' /proc/self/mountinfo; }

cleanup() {
    local rc=$? pid root
    trap - EXIT INT TERM
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do     # what the run left behind in the chroot
        root="$(readlink "/proc/$pid/root" 2>/dev/null)" || continue
        [ "$root" = "$ROOT" ] && kill -KILL "$pid" 2>/dev/null || true
    done
    sleep 0.5
    local m
    rm -f "$ROOT.debootstrap.log"
    for m in $(mounts_under_root | sort -r); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    if [ -n "$(mounts_under_root)" ]; then
        log "still mounted under $ROOT, not deleting it:"; mounts_under_root >&2
    elif [ "$keep" = 1 ]; then
        log "kept $ROOT"
    else
        rm -rf --one-file-system "$ROOT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
log "debootstrap $SUITE (minbase) from $MIRROR into $ROOT"
mkdir -p "$DEB_CACHE"
debootstrap --variant=minbase --cache-dir="$DEB_CACHE" "$SUITE" "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -n 30 "$ROOT.debootstrap.log" >&2; die "debootstrap failed"; }
t_debootstrap=$((SECONDS - t0))

# What the Debian installer leaves that debootstrap does not: every suite, a hosts file.
cat >"$ROOT/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
cat >"$ROOT/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$(hostname)
::1		localhost ip6-localhost ip6-loopback
EOF
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Not the machine but its network: where HTTPS is intercepted by a proxy whose CA the host
# trusts (its bundle given to pip by PIP_CERT), pip and cargo inside need that bundle too
# (nothing else inside uses the web).
net_env=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    cp "$PIP_CERT" "$ROOT/etc/host-network-ca.pem"
    net_env=(PIP_CERT=/etc/host-network-ca.pem CARGO_HTTP_CAINFO=/etc/host-network-ca.pem)
fi

mkdir -p "$ROOT$SRC" "$ROOT/opt/relay-bin"
if [ -n "$rev" ]; then
    git archive "$rev" | tar -x -C "$ROOT$SRC"
else
    git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -c 2>/dev/null | tar -x -C "$ROOT$SRC"
fi
# Revisions before RELAY_BIN_DIR was honoured by `tests/run --quick` look in target/release.
mkdir -p "$ROOT$SRC/target"
ln -sfn /opt/relay-bin "$ROOT$SRC/target/release"

mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount --make-rslave "$ROOT/dev"
mount --bind "$bin_dir" "$ROOT/opt/relay-bin"
mount -o remount,bind,ro "$ROOT/opt/relay-bin"
if [ "$rust" = 1 ]; then
    command -v cargo >/dev/null || die "--rust: no cargo on this machine"
    cargo_bin="$(dirname "$(command -v cargo)")"
    mkdir -p "$ROOT/root/.cargo" "$ROOT/root/.rustup"
    cp -a "$cargo_bin" "$ROOT/root/.cargo/bin"
    mount --bind "${RUSTUP_HOME:-$HOME/.rustup}" "$ROOT/root/.rustup"
    mount -o remount,bind,ro "$ROOT/root/.rustup"
fi

# The run inside: plain bash, timings with $EPOCHREALTIME (bash 5), no tool the setup installs.
cat >"$ROOT/root/fresh-run.sh" <<'EOF'
set -uo pipefail
cd "$SRC"
secs() { local s=$1 e=$2; printf '%.2f' "$(( (${e/./} - ${s/./}) / 10000 ))e-2"; }
timed() {  # timed NAME CMD...: run, remember how long it took and how it ended
    local s=$EPOCHREALTIME rc=0
    echo "==> fresh: $1" >&2
    "${@:2}" || rc=$?
    echo "$1|$(secs "$s" "$EPOCHREALTIME")|$rc" >>/root/fresh-times
    return "$rc"
}
rc=0
if [ -n "$WITH" ]; then
    timed "apt-get install ${WITH//,/ } (--with)" \
        bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"' - ${WITH//,/ } || exit 1
fi
timed "setup.sh (fresh)" infra/local/setup.sh || exit 1
timed "setup.sh (again)" infra/local/setup.sh || exit 1
if [ "$RUST" = 1 ]; then timed "cargo fetch (--rust)" cargo fetch --locked || exit 1; fi
if [ "$TEMPLATE" = 1 ]; then timed "check-template.sh" bash infra/check-template.sh || rc=1; fi
timed "localstack start :$LOCALSTACK_PORT" infra/local/localstack.sh start || exit 1
timed "tests/run --quick" ./tests/run --quick "$@" 2>&1 | tee /root/fresh-tests.log || rc=1
infra/local/localstack.sh stop
exit "$rc"
EOF

log "running setup and tests in the chroot (LocalStack on 127.0.0.1:$ls_port)"
rc=0
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
[ "$rust" = 1 ] && path="/root/.cargo/bin:$path"
chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb PATH="$path" \
    SRC="$SRC" WITH="$with" RUST="$rust" TEMPLATE="$template" LOCALSTACK_PORT="$ls_port" RELAY_BIN_DIR=/opt/relay-bin "${net_env[@]}" \
    /bin/bash /root/fresh-run.sh "${tests[@]}" || rc=$?

echo
echo "fresh-machine check: Debian $SUITE minbase${with:+ + $with}$([ "$rust" = 1 ] && echo " + host's Rust") from $MIRROR, source $( [ -n "$rev" ] && echo "git $rev ($(git rev-parse --short "$rev"))" || echo "working tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', modified'))"), binaries $bin_dir"
printf '  %-34s %8ss\n' "debootstrap (minbase)" "$t_debootstrap"
if [ -f "$ROOT/root/fresh-times" ]; then
    while IFS='|' read -r name secs status; do
        printf '  %-34s %8ss  %s\n' "$name" "$secs" "$([ "$status" = 0 ] && echo ok || echo "FAILED ($status)")"
    done <"$ROOT/root/fresh-times"
fi
if [ -f "$ROOT/root/fresh-tests.log" ]; then
    grep -E '^(FAILED|ERROR) ' "$ROOT/root/fresh-tests.log" | sed 's/^/  /' || true
    grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$ROOT/root/fresh-tests.log" | tail -n1 | sed 's/^/  pytest: /' || true
fi
echo "  result: $([ "$rc" = 0 ] && echo passed || echo "FAILED (exit $rc)")"
exit "$rc"
