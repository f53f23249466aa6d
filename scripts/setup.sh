#!/usr/bin/env bash
# Installs what vipcast's build, tests and demo need on a fresh Debian machine
# (run as root). Idempotent: packages already present are not fetched again.
set -euo pipefail

packages=(
    iproute2        # ip: namespaces, veth, bridges, VXLAN
    keepalived      # the real VRRP daemon the tests run against
    tshark          # Wireshark's dissectors judge the packets we encode
    tcpdump         # captures in the keepalived tests
    iputils-ping
    procps          # sysctl, kill
    etcd-server
    openvswitch-switch  # OVS 3.1: the OpenFlow codec's tests program a real switch; lab OVS chassis
    ethtool         # TX checksum offload off on the veths whose frames reach OVS (lab, tests)
    g++             # libFuzzer, built by the fuzz targets
    pkg-config
    prometheus      # promtool: the alerting rules are checked and unit-tested (monitoring/)
    chromium        # headless: the status page (/ui) is tested in a real browser
    mariadb-server  # the database workload: a semi-synchronous pair behind a VIP (lab, drills)
    mariadb-client
    nginx-light     # the payment workload's front end (lab, drills)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no, non-interactively.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian etcd-server package starts a system etcd; vipcast's tests start
# their own on loopback ports, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi

# The Debian prometheus package starts a host-wide Prometheus; only its
# promtool is used (monitoring/ rules), so the daemon is stopped and disabled.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet prometheus 2>/dev/null || systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
elif [ -x /etc/init.d/prometheus ] && pgrep -x prometheus >/dev/null 2>&1; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

# The Debian mariadb-server and nginx packages start host-wide daemons; the
# lab runs its own, one per VM namespace with private data and run directories,
# so the host ones are stopped and kept from starting at boot.
for unit in mariadb nginx; do
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl is-active --quiet "$unit" 2>/dev/null; then
            systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    elif [ -x "/etc/init.d/$unit" ]; then
        "/etc/init.d/$unit" stop >/dev/null 2>&1 || true
        command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$unit" disable >/dev/null 2>&1 || true
    fi
done

# The Debian openvswitch-switch package starts and enables a host-wide Open
# vSwitch; vipcast's tests run private ones, each in its own namespace and run
# directory, so the host one is stopped and kept from starting at boot. Its
# init script finds the daemons by the default pidfiles (/var/run/openvswitch),
# never the tests' own. Without systemd (containers) the init script does it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now openvswitch-switch >/dev/null 2>&1 || true
    systemctl stop ovs-vswitchd ovsdb-server >/dev/null 2>&1 || true
elif [ -x /etc/init.d/openvswitch-switch ]; then
    if command -v service >/dev/null 2>&1; then
        service openvswitch-switch stop >/dev/null 2>&1 || true
    else
        /etc/init.d/openvswitch-switch stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d openvswitch-switch disable >/dev/null 2>&1 || true
    fi
fi

if ! command -v cargo >/dev/null 2>&1; then
    for dir in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        [ -x "$dir/cargo" ] && export PATH="$dir:$PATH" && break
    done
fi
command -v cargo >/dev/null 2>&1 || {
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
}
