#!/usr/bin/env bash
# Runs the README's `vipcast ...` commands as written, top to bottom, on a
# machine set up by the README's first command (scripts/fresh-root.sh runs it
# in its clean root): the controller with each store, the ctl session, the
# lab, a drill. Fails at the first command that fails. As root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/target/release:$PATH
work=$(mktemp -d /tmp/vipcast-readme.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    vipcast lab down shop >/dev/null 2>&1 || true
    vipcast lab down db >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n$ %s\n' "$*"; }
run() { say "$*"; "$@"; }
wait_http() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "readme-walk: nothing answers at $1" >&2
    return 1
}
cd "$work"

# The controller: the default file store, then the ctl session against it.
say "vipcast controller --listen 127.0.0.1:7600 --store file:./vipcast-data"
vipcast controller --listen 127.0.0.1:7600 --store file:./vipcast-data >controller.log 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:7600/healthz
export VIPCAST_CONTROLLER=http://127.0.0.1:7600
run vipcast ctl vpc create prod --vni 100
run vipcast ctl subnet create --vpc prod web --cidr 192.168.10.0/24 --gateway 192.168.10.1
run vipcast ctl chassis register hv1 --underlay-ip 172.31.0.1
run vipcast ctl chassis register hv2 --underlay-ip 172.31.0.2
run vipcast ctl port create pay1 --vpc prod --subnet web --chassis hv1 --mac 02:00:00:00:00:01 --ip 192.168.10.11
run vipcast ctl port create pay2 --vpc prod --subnet web --chassis hv2 --mac 02:00:00:00:00:02 --ip 192.168.10.12
run vipcast ctl vip create pay-vip --vpc prod --subnet web --ip 192.168.10.100 --members pay1,pay2
run vipcast ctl vip show pay-vip
run vipcast ctl vip history pay-vip
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# --store-recover on the same (healthy) store: starts, says nothing was dropped.
say "vipcast controller --store file:./vipcast-data --store-recover"
vipcast controller --store file:./vipcast-data --store-recover >recover.log 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:7600/healthz
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

# etcd (installed by scripts/setup.sh) on its default port, then the controller on it.
say "etcd (for --store etcd://127.0.0.1:2379)"
etcd --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 >etcd.log 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:2379/health
say "vipcast controller --listen 127.0.0.1:7600 --store etcd://127.0.0.1:2379"
vipcast controller --listen 127.0.0.1:7600 --store etcd://127.0.0.1:2379 >controller-etcd.log 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:7600/healthz
run vipcast ctl vpc create prod --vni 100
run vipcast ctl vpc list
unset VIPCAST_CONTROLLER

# The lab and a drill, from the repository (labs/shop.toml).
cd - >/dev/null
say "vipcast lab up labs/shop.toml"
up=$(vipcast lab up labs/shop.toml)
echo "$up"
run vipcast lab status shop
run vipcast lab exec shop client -- ping -c 3 192.168.10.100
run vipcast lab exec shop net -- ss -ltn
say 'eval "$(vipcast lab env shop)"'
eval "$(vipcast lab env shop)"
case $VIPCAST_CONTROLLER in https://*) ;; *) echo "readme-walk: the lab's controller is not over TLS: $VIPCAST_CONTROLLER" >&2; exit 1 ;; esac
run vipcast ctl vip show pay-vip
run vipcast drill --lab shop --vip pay-vip --fault link-down --runs 1
run vipcast lab down shop
run vipcast lab down shop

# The database workload (labs/db.toml): MariaDB from the packages setup.sh installs.
run vipcast lab up labs/db.toml
if ! run vipcast drill --lab db --vip db-vip --workload mariadb --fault service-kill --runs 1 --no-baseline; then
    # What the pair did, before lab down removes it.
    for f in /run/vipcast/labs/db/mariadb-db-vip-*/dbctl.log /run/vipcast/labs/db/keepalived-db-vip-*.log; do
        echo "== $f" >&2
        tail -n 60 "$f" >&2 || true
    done
    exit 1
fi
run vipcast lab down db
echo
echo "readme-walk: every command ran"
