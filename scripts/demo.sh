#!/usr/bin/env bash
# The README's first command. Sets up the machine, builds vipcast and runs
# `vipcast demo`: a lab of three hypervisors and a gateway in network
# namespaces, two VMs sharing a VIP with keepalived (advert_int 0.1 s), and
# failover drills (the master's port down, the master frozen, its chassis cut
# from the underlay) measured with 1000 probes a second from a VM and from an
# external client, against the same VMs on one plain Linux bridge. Prints the
# table, writes ./vipcast-demo.svg, tears everything down (under 3 minutes).
# Arguments go to `vipcast demo` (e.g. --runs 20, --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --release --locked -p vipcast
exec target/release/vipcast demo "$@"
