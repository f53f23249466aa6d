#!/usr/bin/env bash
# Proves the README on a clean Debian 12 root, as a new user's machine would
# run it: nothing installed by earlier work can hide a missing install step.
#
#   bash scripts/fresh-root.sh [COMMIT]      (as root; COMMIT defaults to HEAD)
#
# 1. root:  mmdebstrap builds a Debian 12 root (--variant=apt plus only what a
#           fresh machine of this kind ships before any set-up: gcc, g++,
#           make, pkg-config, git, python3, ca-certificates, curl, procps),
#           from this machine's Debian sources. The machine's CA trust store
#           is copied in (package clients reach the registries through it).
#           policy-rc.d keeps services that packages install from starting.
#           The commit under test is cloned into /root/vipcast (committed
#           work only: uncommitted changes are not part of the proof).
# 2. demo:  the README's first command, `bash scripts/demo.sh --runs 1`.
#    readme: the README's other `vipcast ...` commands as written
#           (scripts/readme-walk.sh: controller and ctl, each store, the lab, a drill).
#    package: the Debian package built, installed with apt, the controller
#           started as its unit does and used (scripts/deploy-check.sh).
# 3. tests: the README's install step for the tests, `source scripts/setup.sh`,
#           then `cargo test --workspace --no-run --locked`.
#
# Inside the root, the machine's Rust toolchain is bind-mounted read-only
# (rustup home and cargo's bin directory) with an empty cargo home, so every
# crate is fetched as on a new machine. /proc, /sys, /dev and /run are
# mounted in a private mount namespace: every mount vanishes with it, also
# when this script is killed. On exit (success, failure or interruption)
# every process still running in the root is killed and the root removed.
# A failing phase ends the script with its first error line and the end of
# its log; the logs are kept in $VIPCAST_FRESH_LOGS (default /var/tmp).
# Prints how long each phase took. Takes about 15 minutes on 2 cores.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse --verify "${1:-HEAD}^{commit}")
logs=${VIPCAST_FRESH_LOGS:-/var/tmp}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_bin=$(dirname "$(command -v cargo || echo "$HOME/.cargo/bin/cargo")")

die() { echo "fresh-root: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (it builds a Debian root and mounts into it)"
[ -d "$rustup_home/toolchains" ] || die "no rustup toolchain in $rustup_home"
[ -x "$cargo_bin/cargo" ] || die "cargo not found (looked in $cargo_bin)"
[ -r /etc/apt/sources.list.d/debian.sources ] || [ -r /etc/apt/sources.list ] || die "no Debian sources on this machine"

if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "fresh-root: installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

mkdir -p "$logs"
work=$(mktemp -d /var/tmp/vipcast-fresh.XXXXXX)
root=$work/root
stamp=$(date +%Y%m%d-%H%M%S)
log_prefix=$logs/vipcast-fresh-root-$stamp

# Processes whose root directory is inside the fresh root.
root_pids() {
    local pid dir
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        case "$(readlink "$dir/root" 2>/dev/null)" in
            "$root" | "$root"/*) echo "$pid" ;;
        esac
    done
}

phase_pid=
cleanup() {
    local status=$? pids tries=0
    trap - EXIT INT TERM HUP
    # The running phase in its own process group: all of it goes.
    [ -z "$phase_pid" ] || kill -9 -- "-$phase_pid" 2>/dev/null || true
    pids=$(root_pids)
    while [ -n "$pids" ] && [ $tries -lt 50 ]; do
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
        pids=$(root_pids)
        tries=$((tries + 1))
    done
    [ -z "$pids" ] || echo "fresh-root: processes still running in the root: $pids" >&2
    # The mounts live in the private namespace, which is gone; never remove
    # a tree something is still mounted on.
    if findmnt -rn -o TARGET | grep -q "^$root"; then
        echo "fresh-root: mounts left under $root; not removing it" >&2
        status=1
    else
        rm -rf --one-file-system "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'echo "fresh-root: interrupted" >&2; exit 130' INT TERM HUP

phase_names=()
phase_secs=()
report() {
    local i
    echo
    echo "fresh-root: phase times"
    for i in "${!phase_names[@]}"; do
        printf '  %-6s %4d s\n' "${phase_names[$i]}" "${phase_secs[$i]}"
    done
}

# Runs one phase, its output into a log; on failure prints the first error
# line and the end of the log, and stops.
phase() {
    local name=$1 start status log=$log_prefix-$1.log
    shift
    echo "fresh-root: [$name] $(date +%T) ($log)"
    start=$(date +%s)
    # In the background, in its own process group: a signal to this script
    # is handled at once (bash runs traps only between commands, and `wait`
    # is one), and cleanup can end the whole phase.
    set -m
    "$@" >"$log" 2>&1 </dev/null &
    phase_pid=$!
    set +m +e
    wait "$phase_pid"
    status=$?
    set -e
    phase_pid=
    phase_names+=("$name")
    phase_secs+=($(($(date +%s) - start)))
    if [ $status -ne 0 ]; then
        echo "fresh-root: [$name] FAILED (exit $status) after ${phase_secs[-1]} s" >&2
        local first
        first=$(grep -m1 -E '(^error|[Ee]rror:|^E: |failed|FAILED|panicked)' "$log" || true)
        [ -n "$first" ] && echo "fresh-root: first error: $first" >&2
        echo "---- end of $log ----" >&2
        tail -n 40 "$log" >&2
        report >&2
        exit 1
    fi
    echo "fresh-root: [$name] ok in ${phase_secs[-1]} s"
}

sources=/etc/apt/sources.list.d/debian.sources
[ -r "$sources" ] || sources=/etc/apt/sources.list

build_root() {
    mmdebstrap --variant=apt \
        --include=gcc,g++,make,pkg-config,git,python3,ca-certificates,curl,procps \
        bookworm "$root" "$sources"
    # The machine's own CA trust store: extra anchors where
    # update-ca-certificates keeps them, and the bundle as the host has it.
    if [ -d /usr/local/share/ca-certificates ]; then
        cp -a /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
    fi
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf '#!/bin/sh\n# fresh-root: no service starts inside this root.\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"
    mkdir -p "$root/root/.rustup" "$root/root/.cargo/bin"
    git clone -q --no-local "$repo" "$root/root/vipcast"
    git -C "$root/root/vipcast" checkout -q --detach "$commit"
}

# Runs a shell command as root in the fresh root, in a private mount
# namespace holding /proc, /sys, /dev, /run and the read-only toolchain.
in_root() {
    unshare --mount --propagation private -- /bin/bash -euo pipefail -c '
        root=$1 rustup_home=$2 cargo_bin=$3 command=$4
        # The root its own mount point, as / is on a machine (ip netns
        # exec makes / a slave mount, which needs one).
        mount --bind "$root" "$root"
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --make-rslave "$root/sys"
        mount --rbind /dev "$root/dev"
        mount --make-rslave "$root/dev"
        mount -t tmpfs -o mode=0755 tmpfs "$root/run"
        mount --bind "$rustup_home" "$root/root/.rustup"
        mount -o remount,bind,ro "$root/root/.rustup"
        mount --bind "$cargo_bin" "$root/root/.cargo/bin"
        mount -o remount,bind,ro "$root/root/.cargo/bin"
        exec chroot "$root" /usr/bin/env -i \
            HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb \
            PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            RUSTUP_HOME=/root/.rustup CARGO_HOME=/root/.cargo RUSTUP_AUTO_INSTALL=0 \
            /bin/bash -euo pipefail -c "cd /root/vipcast && $command"
    ' in-root "$root" "$rustup_home" "$cargo_bin" "$1"
}

echo "fresh-root: commit $commit in $root"
phase root build_root
phase demo in_root 'bash scripts/demo.sh --runs 1'
phase readme in_root 'bash scripts/readme-walk.sh'
phase package in_root 'bash scripts/deploy-check.sh'
phase tests in_root 'source scripts/setup.sh && cargo test --workspace --no-run --locked'
report
echo "fresh-root: the README works on a clean Debian 12 root (commit ${commit:0:12})"
