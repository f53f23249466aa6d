#!/usr/bin/env bash
# The README's first command. Sets up the machine, builds vipcast and runs its
# main job. The failover demo (`vipcast demo`: a lab, a VIP failing over, the
# outage measured) does not exist yet; until it does, this builds, prints
# `vipcast --help`, and decodes a real keepalived failover captured by the
# tests, where the master hands over with a priority-0 advert.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked
bin=target/release/vipcast
"$bin" --help
if "$bin" help demo >/dev/null 2>&1; then
    exec "$bin" demo "$@"
fi
echo
echo "vipcast demo is not built yet; a keepalived VRRPv3 failover (master stopped, backup takes over), decoded by vipcast:"
"$bin" dissect crates/packet/tests/fixtures/keepalived-v3-multicast.pcap | grep -E 'VRRP|announces'
