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
    protobuf-compiler
    etcd-server
    g++             # libFuzzer, built by the fuzz targets
    pkg-config
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

if ! command -v cargo >/dev/null 2>&1; then
    for dir in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        [ -x "$dir/cargo" ] && export PATH="$dir:$PATH" && break
    done
fi
command -v cargo >/dev/null 2>&1 || {
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
}
