#!/usr/bin/env bash
# Builds the Debian package: the vipcast binary, the systemd units of the
# controller, the agent and the replicator, default configuration files under
# /etc/vipcast (conffiles), the docs, and maintainer scripts that create the
# `vipcast` system user and its state directory.
#
#   bash scripts/package-deb.sh [BINARY]
#
# BINARY defaults to target/release/vipcast (built with `cargo build --release
# --locked -p vipcast` if missing). Writes target/debian/vipcast_VERSION_ARCH.deb
# and prints its path. Needs only dpkg-deb (Debian's dpkg).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/release/vipcast}
if [ ! -x "$binary" ]; then
    [ "$binary" = target/release/vipcast ] || { echo "package-deb: $binary is not an executable" >&2; exit 1; }
    cargo build --release --locked -p vipcast
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "package-deb: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)
out=target/debian
tree=$(mktemp -d)
chmod 0755 "$tree"
trap 'rm -rf "$tree"' EXIT

install -D -m 0755 "$binary" "$tree/usr/bin/vipcast"
strip --strip-unneeded "$tree/usr/bin/vipcast" 2>/dev/null || true
for unit in packaging/systemd/*.service; do
    install -D -m 0644 "$unit" "$tree/lib/systemd/system/$(basename "$unit")"
done
for conf in packaging/etc/*.toml; do
    install -D -m 0644 "$conf" "$tree/etc/vipcast/$(basename "$conf")"
done
install -d "$tree/usr/share/doc/vipcast"
for doc in README.md ARCHITECTURE.md docs/DEPLOY.md; do
    install -m 0644 "$doc" "$tree/usr/share/doc/vipcast/$(basename "$doc")"
done
install -d "$tree/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/postrm "$tree/DEBIAN/"
(cd "$tree" && find etc -type f | sed 's|^|/|' | sort) >"$tree/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
cat >"$tree/DEBIAN/control" <<EOF
Package: vipcast
Version: $version
Architecture: $arch
Maintainer: vipcast developers <vipcast@localhost>
Installed-Size: $size
Depends: libc6, iproute2, passwd
Recommends: keepalived
Suggests: openvswitch-switch, etcd-server
Section: net
Priority: optional
Homepage: file:///usr/share/doc/vipcast/README.md
Description: virtual IPs that fail over in well under a second on overlay networks
 vipcast gives tenants of a VXLAN or GRE overlay a virtual IP that moves
 with VRRP (keepalived or vipcast vrrpd) without a cloud API call: a
 controller (REST API, embedded store or etcd), an agent per chassis
 (kernel or Open vSwitch data plane, GARP sniffing, assisted handover) and
 replicators for broadcast traffic. One binary; systemd units for each role.
EOF
mkdir -p "$out"
deb="$out/vipcast_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb" >/dev/null
echo "$deb"
