#!/usr/bin/env bash
# Installs the Debian package as docs/DEPLOY.md says and starts the controller
# the way its systemd unit does, then talks to it; removes the package again.
# Run by scripts/fresh-root.sh in a clean Debian 12 root (as root).
#
#   bash scripts/deploy-check.sh [BINARY]      (default target/release/vipcast)
#
# Checks: `apt install ./vipcast_*.deb` works on a clean system; the vipcast
# user, /var/lib/vipcast (vipcast:vipcast 0750), the units and the conffiles
# are in place; the shipped controller.toml passes --check-config; the
# unit's ExecStart, run as the unit's User in a network namespace of its
# own, serves /healthz and the API (a VPC created and listed with vipcast
# ctl) and writes its store under /var/lib/vipcast; `apt purge` removes the
# binary and the state.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "deploy-check: $*"; }
fail() { echo "deploy-check: $*" >&2; exit 1; }

deb=$(bash scripts/package-deb.sh "${1:-target/release/vipcast}")
say "built $deb ($(du -h "$deb" | cut -f1))"
say "apt install ./$deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null

getent passwd vipcast >/dev/null || fail "no vipcast user"
[ "$(stat -c '%U:%G %a' /var/lib/vipcast)" = "vipcast:vipcast 750" ] || fail "/var/lib/vipcast: $(stat -c '%U:%G %a' /var/lib/vipcast)"
for role in controller agent replicator; do
    [ -f "/lib/systemd/system/vipcast-$role.service" ] || fail "no unit vipcast-$role.service"
    dpkg-query -W -f='${Conffiles}\n' vipcast | grep -q "/etc/vipcast/$role.toml" || fail "$role.toml is not a conffile"
done
say "user, state directory, units and conffiles in place"

unit=/lib/systemd/system/vipcast-controller.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
[ -n "$exec_start" ] && [ -n "$user" ] || fail "$unit has no ExecStart or User"
/usr/bin/vipcast controller --config /etc/vipcast/controller.toml --check-config >/dev/null
say "as the unit starts it, as $user: $exec_start"
# A network namespace of its own: 127.0.0.1:7600 there is nobody else's.
unshare --net -- /bin/bash -euo pipefail -c '
    exec_start=$1 user=$2
    ip link set lo up
    # shellcheck disable=SC2086
    runuser -u "$user" -- $exec_start >/tmp/vipcast-deploy-controller.log 2>&1 &
    pid=$!
    trap "kill $pid 2>/dev/null || true" EXIT
    for _ in $(seq 1 300); do
        curl -fsS http://127.0.0.1:7600/healthz >/dev/null 2>&1 && break
        kill -0 $pid 2>/dev/null || { cat /tmp/vipcast-deploy-controller.log >&2; exit 1; }
        sleep 0.1
    done
    curl -fsS http://127.0.0.1:7600/healthz
    vipcast ctl --controller http://127.0.0.1:7600 vpc create prod --vni 100 >/dev/null
    vipcast ctl --controller http://127.0.0.1:7600 --json vpc list | grep -q "\"prod\""
    echo "deploy-check: the controller answers; VPC prod created and listed"
    kill $pid
    wait $pid || true
' deploy "$exec_start" "$user"
[ -n "$(find /var/lib/vipcast -user vipcast -mindepth 1 -print -quit)" ] || fail "nothing written under /var/lib/vipcast"
say "the store is under /var/lib/vipcast, owned by vipcast"

DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq vipcast >/dev/null
[ ! -e /usr/bin/vipcast ] && [ ! -e /var/lib/vipcast ] || fail "purge left /usr/bin/vipcast or /var/lib/vipcast"
say "purged; ok"
