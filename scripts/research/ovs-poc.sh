#!/bin/bash
# ovs-poc.sh — one private Open vSwitch (userspace/netdev datapath) per network namespace,
# GRE + VXLAN tunnels between "chassis" namespaces, kernel-VXLAN interop, clean teardown.
#
# Usage:  bash scripts/research/ovs-poc.sh            # = all: build, test, tear down (always tears down)
#         bash scripts/research/ovs-poc.sh up | status | test_all | pitfalls | down | leftovers
#         bash scripts/research/ovs-poc.sh <function> args...   (e.g. vsctl ovsr-c1 show; appctl ovsr-c1 tnl/neigh/show)
# Env knobs: UNDERLAY_MODE=brphy|kernel  VM_TX_OFF=1|0  NEIGH_PRESET=1|0  ARP_IGNORE=1|0
#            KVX_CSUM=noudpcsum|udpcsum  VM_MTU=1400  TUN=gre|vxlan (for `up`)
#
# Everything lives in namespaces named ovsr-*; no host interface is touched, and all
# traffic stays inside these namespaces (10.255.0.0/24 underlay, 10.77.0.0/24 overlay).
# Requires: openvswitch-switch (Debian 12: 3.1.0), iproute2, ethtool, python3, curl.
set -uo pipefail

PFX=ovsr-
BASE=/run/vipcast/ovs
SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
UL=${PFX}ul                        # underlay namespace (Linux bridge "ulbr")
C1=${PFX}c1 C2=${PFX}c2 C3=${PFX}c3  # chassis: c1,c2 = OVS; c3 = kernel vxlan
V1=${PFX}v1 V2=${PFX}v2 V3=${PFX}v3  # "VM" namespaces, one per chassis
UIP1=10.255.0.1 UIP2=10.255.0.2 UIP3=10.255.0.3
VIP1=10.77.0.1 VIP2=10.77.0.2 VIP3=10.77.0.3
VMAC1=02:00:00:00:00:01 VMAC2=02:00:00:00:00:02 VMAC3=02:00:00:00:00:03
VNI=100
# ofport numbers we request (deterministic, so flows can use numbers)
OFP_GRE=1 OFP_VXLAN=2 OFP_VM=10
UNDERLAY_MODE=${UNDERLAY_MODE:-brphy}   # brphy | kernel  (see notes: kernel does NOT work)
VM_TX_OFF=${VM_TX_OFF:-1}               # 1 = ethtool -K eth0 tx off inside VMs

LISTENER=$BASE/of13-listener.py   # written by write_listener()
PY=$(command -v /usr/bin/python3 || command -v python3)
log() { printf '\n### %s\n' "$*"; }
now_ms() { date +%s%3N; }

# ---------- per-instance OVS helpers ------------------------------------------------
odir() { echo "$BASE/$1"; }
# All helpers pass explicit sockets; the env vars make the defaults per-instance too.
vsctl() { local n=$1; shift; local d; d=$(odir "$n")
  env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" ovs-vsctl --db="unix:$d/db.sock" --timeout=10 "$@"; }
ofctl() { local n=$1 cmd=$2 br=$3; shift 3; local d; d=$(odir "$n")
  env OVS_RUNDIR="$d" ovs-ofctl -O OpenFlow13 "$cmd" "unix:$d/$br.mgmt" "$@"; }
appctl() { local n=$1; shift; local d; d=$(odir "$n")
  env OVS_RUNDIR="$d" ovs-appctl -t "$d/ovs-vswitchd.ctl" "$@"; }
dbctl() { local n=$1; shift; local d; d=$(odir "$n")
  env OVS_RUNDIR="$d" ovs-appctl -t "$d/ovsdb-server.ctl" "$@"; }

ovs_start() {   # ovs_start <netns>  (netns must exist)
  local n=$1 d; d=$(odir "$n")
  rm -rf "$d"; mkdir -p "$d"
  local t0; t0=$(now_ms)
  ovsdb-tool create "$d/conf.db" "$SCHEMA" || return 1
  env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_SYSCONFDIR="$d" \
    ip netns exec "$n" ovsdb-server "$d/conf.db" \
      --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
      --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log" \
      -vconsole:off --detach --no-chdir 2>/dev/null || return 1
  vsctl "$n" --no-wait init || return 1
  # Thread knobs go in before vswitchd starts, so its first thread spawn already uses them
  # (on this 2-core box the defaults are also 1/1; on big hosts they scale with cores).
  vsctl "$n" --no-wait set open_vswitch . \
      other_config:n-handler-threads=1 other_config:n-revalidator-threads=1 || return 1
  env OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_SYSCONFDIR="$d" \
    ip netns exec "$n" ovs-vswitchd "unix:$d/db.sock" \
      --pidfile="$d/ovs-vswitchd.pid" --unixctl="$d/ovs-vswitchd.ctl" \
      --log-file="$d/ovs-vswitchd.log" -vconsole:off --detach --no-chdir 2>/dev/null || return 1
  local t1; t1=$(now_ms)
  echo "ovs[$n] ovsdb-server pid $(cat "$d/ovsdb-server.pid"), ovs-vswitchd pid $(cat "$d/ovs-vswitchd.pid"), started in $((t1-t0)) ms"
}

# A daemon started with --detach is re-parented to PID 1; /proc/<pid> stays (zombie) until
# PID 1 reaps it (1-2 s in this sandbox), so test "alive" as "exists and not Z".
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

ovs_stop() {    # ovs_stop <netns> : graceful, then force; removes taps (--cleanup)
  local n=$1 d p; d=$(odir "$n")
  [ -d "$d" ] || return 0
  if [ -f "$d/ovs-vswitchd.pid" ]; then
    p=$(cat "$d/ovs-vswitchd.pid")
    appctl "$n" exit --cleanup >/dev/null 2>&1
    for _ in $(seq 100); do alive "$p" || break; sleep 0.05; done
    alive "$p" && { echo "ovs[$n] vswitchd $p did not exit, SIGKILL"; kill -9 "$p"; }
  fi
  if [ -f "$d/ovsdb-server.pid" ]; then
    p=$(cat "$d/ovsdb-server.pid")
    dbctl "$n" exit >/dev/null 2>&1
    for _ in $(seq 100); do alive "$p" || break; sleep 0.05; done
    alive "$p" && { echo "ovs[$n] ovsdb-server $p did not exit, SIGKILL"; kill -9 "$p"; }
  fi
  rm -rf "$d"
}

ovs_mem() {     # ovs_mem <netns>
  local n=$1 d p; d=$(odir "$n"); p=$(cat "$d/ovs-vswitchd.pid")
  printf 'ovs[%s] vswitchd RSS=%s kB threads=%s (%s); ovsdb-server RSS=%s kB\n' "$n" \
    "$(awk '/VmRSS/{print $2}' /proc/$p/status)" "$(awk '/Threads/{print $2}' /proc/$p/status)" \
    "$(cat /proc/$p/task/*/comm | tr '\n' ' ' | sed 's/ $//')" \
    "$(awk '/VmRSS/{print $2}' /proc/$(cat "$d/ovsdb-server.pid")/status)"
}

# ---------- topology ----------------------------------------------------------------
mkns() { ip netns add "$1" && ip -n "$1" link set lo up; }

underlay_up() {
  mkns "$UL"
  ip -n "$UL" link add ulbr type bridge
  ip -n "$UL" link set ulbr up
  local i c
  for i in 1 2 3; do
    c=${PFX}c$i
    mkns "$c"
    # veth: "ul0" inside chassis, "c$i" inside the underlay ns, enslaved to ulbr
    ip link add ul0 netns "$c" type veth peer name "c$i" netns "$UL"
    ip -n "$UL" link set "c$i" master ulbr up
  done
}

# VM namespace <vm> with eth0 (mac, ip) attached to chassis <c> as "vm<i>" (chassis side)
vm_up() {
  local i=$1 c=$2 vm=$3 mac=$4 ip=$5 mtu=$6
  mkns "$vm"
  ip link add eth0 netns "$vm" type veth peer name "vm$i" netns "$c"
  ip -n "$vm" link set eth0 address "$mac" mtu "$mtu" up
  ip -n "$vm" addr add "$ip/24" dev eth0
  ip -n "$c" link set "vm$i" mtu "$mtu" up
  if [ "$VM_TX_OFF" = 1 ]; then ip netns exec "$vm" ethtool -K eth0 tx off >/dev/null; fi
}

ovs_chassis_up() {   # ovs_chassis_up <i> <local underlay ip>
  local i=$1 lip=$2 c=${PFX}c$1
  ovs_start "$c" || return 1
  # br-int + controller + out-of-band in ONE transaction: the switch never runs
  # with fail_mode=standalone (NORMAL) flows and never without its controller.
  vsctl "$c" -- add-br br-int \
    -- set bridge br-int datapath_type=netdev fail_mode=secure protocols=OpenFlow13 \
         other_config:datapath-id=000000000000000$i other_config:disable-in-band=true \
    -- set-controller br-int tcp:127.0.0.1:6653 \
    -- set controller br-int connection-mode=out-of-band || return 1
  if [ "$UNDERLAY_MODE" = brphy ]; then
    # Underlay IP lives on an OVS bridge's internal (tap) port; the veth is a port of it.
    # br-phy MUST get its own MAC: by default OVS copies the lowest port MAC (ul0's), and
    # then the kernel ALSO accepts every tunnel packet arriving on ul0 (AF_PACKET does not
    # steal frames) and answers with ICMP "protocol 47 / port 4789 unreachable".
    ip -n "$c" link set ul0 up      # up BEFORE add-port, else "error receiving ... Network is down"
    vsctl "$c" -- add-br br-phy -- set bridge br-phy datapath_type=netdev \
         other_config:hwaddr="${BRPHY_MAC_PREFIX:-02:ff:00:00:00:0}$i" \
      -- add-port br-phy ul0 || return 1
    if [ "${ARP_IGNORE:-1}" = 1 ]; then
      # the kernel must not answer ARP for the br-phy IP on ul0 (with ul0's MAC)
      ip netns exec "$c" sysctl -qw net.ipv4.conf.ul0.arp_ignore=1
      ip netns exec "$c" sysctl -qw net.ipv6.conf.ul0.disable_ipv6=1
    fi
    ip -n "$c" addr add "$lip/24" dev br-phy
    ip -n "$c" link set br-phy up
  else
    ip -n "$c" addr add "$lip/24" dev ul0
    ip -n "$c" link set ul0 up
  fi
  vsctl "$c" \
    -- add-port br-int gre0 -- set interface gre0 type=gre ofport_request=$OFP_GRE \
         options:remote_ip=flow options:key=flow options:local_ip="$lip" \
    -- add-port br-int vxlan0 -- set interface vxlan0 type=vxlan ofport_request=$OFP_VXLAN \
         options:remote_ip=flow options:key=flow options:local_ip="$lip" options:dst_port=4789 \
    -- add-port br-int vm$i -- set interface vm$i ofport_request=$OFP_VM || return 1
}

kernel_chassis_up() {  # chassis 3: plain kernel VXLAN + Linux bridge, no OVS
  local c=$C3
  ip -n "$c" addr add "$UIP3/24" dev ul0
  ip -n "$c" link set ul0 up
  # KVX_CSUM=noudpcsum (default): outer UDP checksum 0. With "udpcsum" the veth leaves the
  # outer UDP checksum CHECKSUM_PARTIAL, OVS reads it via AF_PACKET unfinished and tnl_pop
  # drops it (coverage datapath_drop_tunnel_pop_error). Alternative: ethtool -K ul0 tx off.
  ip -n "$c" link add vx0 type vxlan id $VNI dstport 4789 local "$UIP3" dev ul0 nolearning ${KVX_CSUM:-noudpcsum}
  ip -n "$c" link add kbr type bridge
  ip -n "$c" link set vx0 master kbr
  ip -n "$c" link set vm3 master kbr
  ip -n "$c" link set vx0 up; ip -n "$c" link set kbr up
  # static FDB: BUM to both OVS chassis (head-end replication), unicast MACs pinned
  bridge -n "$c" fdb append 00:00:00:00:00:00 dev vx0 dst "$UIP1"
  bridge -n "$c" fdb append 00:00:00:00:00:00 dev vx0 dst "$UIP2"
  bridge -n "$c" fdb append "$VMAC1" dev vx0 dst "$UIP1"
  bridge -n "$c" fdb append "$VMAC2" dev vx0 dst "$UIP2"
}

# ---------- flows (what the Rust agent would program over OpenFlow 1.3) -------------
# Per OVS chassis i, remote chassis list "mac:underlay_ip" pairs.
flows_up() {  # flows_up <i> <tunnel: gre|vxlan> ; remotes taken from globals
  local i=$1 tun=$2 c=${PFX}c$1 tport ofile
  [ "$tun" = gre ] && tport=$OFP_GRE || tport=$OFP_VXLAN
  ofile=$(mktemp)
  local me_mac me_ip other other_ip other_mac
  eval "me_mac=\$VMAC$i"
  {
    echo "table=0,priority=0,actions=drop"
    # from local VM -> table 10 (L2 lookup); mark the VNI in metadata-free way: reg0
    echo "table=0,priority=100,in_port=$OFP_VM,actions=set_field:$VNI->reg0,goto_table:10"
    # from tunnels (GRE or VXLAN) with our VNI -> deliver to local VM
    echo "table=0,priority=100,in_port=$OFP_GRE,tun_id=$VNI,actions=goto_table:20"
    echo "table=0,priority=100,in_port=$OFP_VXLAN,tun_id=$VNI,actions=goto_table:20"
    echo "table=20,priority=100,dl_dst=$me_mac,actions=output:$OFP_VM"
    echo "table=20,priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=output:$OFP_VM"
    echo "table=20,priority=0,actions=drop"
    # L2 table: known unicast -> one tunnel; BUM -> group 1 (type=all, head-end replication)
    for other in 1 2 3; do
      [ "$other" = "$i" ] && continue
      eval "other_ip=\$UIP$other other_mac=\$VMAC$other"
      local p=$tport; [ "$other" = 3 ] && p=$OFP_VXLAN   # kernel chassis speaks VXLAN only
      echo "table=10,priority=100,dl_dst=$other_mac,actions=set_field:$VNI->tun_id,set_field:$other_ip->tun_dst,output:$p"
    done
    echo "table=10,priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00,actions=group:1"
    echo "table=10,priority=0,actions=drop"
  } > "$ofile"
  local buckets="" b
  for other in 1 2 3; do
    [ "$other" = "$i" ] && continue
    eval "other_ip=\$UIP$other"
    local p=$tport; [ "$other" = 3 ] && p=$OFP_VXLAN
    b="bucket=set_field:$VNI->tun_id,set_field:$other_ip->tun_dst,output:$p"
    buckets="${buckets:+$buckets,}$b"
  done
  ofctl "$c" del-flows br-int
  ofctl "$c" del-groups br-int
  ofctl "$c" add-group br-int "group_id=1,type=all,$buckets" || return 1
  ofctl "$c" add-flows br-int "$ofile" || return 1
  rm -f "$ofile"
}

write_listener() {  # minimal OpenFlow 1.3 'controller': HELLO, FEATURES, ECHO
  mkdir -p "$BASE"
  cat > "$LISTENER" <<'PYEOF'
#!/usr/bin/env python3
"""Minimal OpenFlow 1.3 listener: accept one switch, do HELLO + FEATURES, answer ECHO, log."""
import socket, struct, sys, time
port = int(sys.argv[1]) if len(sys.argv) > 1 else 6653
dur = float(sys.argv[2]) if len(sys.argv) > 2 else 10
acc = float(sys.argv[3]) if len(sys.argv) > 3 else 15
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(4); s.settimeout(acc)
t0 = time.time()
c, addr = s.accept(); print(f"accepted {addr} after {time.time()-t0:.3f}s", flush=True)
c.settimeout(1.0)
def send(t, xid, body=b""):
    c.sendall(struct.pack("!BBHI", 4, t, 8 + len(body), xid) + body)
send(0, 1)            # HELLO (OF1.3)
send(5, 2)            # FEATURES_REQUEST
buf = b""
end = time.time() + dur
while time.time() < end:
    try:
        d = c.recv(65536)
    except socket.timeout:
        continue
    if not d: print("switch closed"); break
    buf += d
    while len(buf) >= 8:
        v, t, l, x = struct.unpack("!BBHI", buf[:8])
        if len(buf) < l: break
        m, buf = buf[:l], buf[l:]
        name = {0:"HELLO",2:"ECHO_REQUEST",6:"FEATURES_REPLY",10:"PACKET_IN",12:"PORT_STATUS",19:"MULTIPART_REPLY",1:"ERROR"}.get(t, str(t))
        extra = ""
        if t == 6: extra = " dpid=%016x" % struct.unpack("!Q", m[8:16])[0]
        print(f"rx v=0x{v:02x} {name} len={l}{extra}", flush=True)
        if t == 2: send(3, x, m[8:])   # ECHO_REPLY
c.close()
PYEOF
}

# ---------- top-level ---------------------------------------------------------------
down() {
  local n t0; t0=$(now_ms)
  for n in $(ls "$BASE" 2>/dev/null | grep "^$PFX"); do ovs_stop "$n"; done
  # anything still running inside one of our namespaces (http.server, iperf3, listener)
  for n in $(ip netns list | awk '{print $1}' | grep "^$PFX"); do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  done
  for n in $(ip netns list | awk '{print $1}' | grep "^$PFX"); do ip netns del "$n"; done
  rm -f "$BASE/listener-c1.out" "$LISTENER"
  rmdir "$BASE" 2>/dev/null
  echo "down: $(( $(now_ms) - t0 )) ms"
  return 0
}

leftovers() {   # prints nothing but the header when clean
  echo "leftovers check:"
  ip netns list | grep "^$PFX" | sed 's/^/  netns: /'
  pgrep -a -f "$BASE/$PFX" | sed 's/^/  proc: /'
  ls "$BASE" 2>/dev/null | grep "^$PFX" | sed 's/^/  dir: /'
  # taps/veths that escaped into the root namespace (read-only listing)
  ip -o link show | awk -F': ' '{print $2}' | grep -E '^(ovs-netdev|br-int|br-phy|ul0|vm[0-9]|vx0)(@|$)' | sed 's/^/  root-ns link: /'
  return 0
}

up() {
  local MTU=${VM_MTU:-1400}
  log "underlay + chassis namespaces"
  underlay_up
  vm_up 1 "$C1" "$V1" "$VMAC1" "$VIP1" "$MTU"
  vm_up 2 "$C2" "$V2" "$VMAC2" "$VIP2" "$MTU"
  vm_up 3 "$C3" "$V3" "$VMAC3" "$VIP3" "$MTU"
  log "OVS chassis (UNDERLAY_MODE=$UNDERLAY_MODE)"
  # the "agent" (here: a tiny python OpenFlow listener) listens BEFORE br-int exists
  write_listener
  ip netns exec "$C1" "$PY" "$LISTENER" 6653 4 10 > "$BASE/listener-c1.out" 2>&1 &
  sleep 0.3
  ovs_chassis_up 1 "$UIP1" || return 1
  ovs_chassis_up 2 "$UIP2" || return 1
  kernel_chassis_up
  if [ "${NEIGH_PRESET:-1}" = 1 ]; then
    # optional: pre-seed OVS's tunnel neighbor cache (otherwise the 1st packet to a
    # not-yet-resolved underlay IP is dropped while OVS ARPs for it)
    appctl "$C1" tnl/neigh/set br-phy "$UIP2" 02:ff:00:00:00:02 >/dev/null
    appctl "$C2" tnl/neigh/set br-phy "$UIP1" 02:ff:00:00:00:01 >/dev/null
  fi
  flows_up 1 "${TUN:-gre}"; flows_up 2 "${TUN:-gre}"
}

status() {
  local c
  for c in "$C1" "$C2"; do
    log "$c"; vsctl "$c" show; ovs_mem "$c"
    ofctl "$c" dump-flows br-int --no-names --no-stats; ofctl "$c" dump-groups br-int
    appctl "$c" ovs/route/show; appctl "$c" tnl/neigh/show
  done
}

PASS=0 FAIL=0
check() {  # check <desc> <cmd...> : expects success
  if "${@:2}"; then PASS=$((PASS+1)); echo "  ok   - $1"; else FAIL=$((FAIL+1)); echo "  FAIL - $1"; fi
}
check_not() {  # check_not <desc> <cmd...> : expects failure (documented pitfall)
  if "${@:2}"; then FAIL=$((FAIL+1)); echo "  FAIL - (expected to fail) $1"; else PASS=$((PASS+1)); echo "  ok   - (fails as expected) $1"; fi
}

ping_ok() {   # ping_ok <from-ns> <ip> [count] [size] ; prints rtt line; all replies needed
  local out; out=$(ip netns exec "$1" ping -c "${3:-5}" -i 0.2 -W 1 ${4:+-M do -s $4} "$2" 2>&1)
  echo "$out" | tail -1 | sed 's/^/       /'
  echo "$out" | grep -q ' 0% packet loss'
}
ping_some() { # ping_some <from-ns> <ip> <count> <size> ; true if >=1 reply (DF set)
  local out; out=$(ip netns exec "$1" ping -c "$3" -i 0.2 -W 1 -M do -s "$4" "$2" 2>&1)
  echo "$out" | grep 'packets transmitted' | sed 's/^/       /'
  ! echo "$out" | grep -q ' 0 received'
}

http_ok() {   # http_ok <server-vm> <server-ip> <client-vm> ; 200 KB body over TCP
  local srv=$1 ip=$2 cli=$3 dir; dir=$(mktemp -d)
  head -c 200000 /dev/urandom > "$dir/blob"
  ip netns exec "$srv" "$PY" -m http.server 8080 --bind "$ip" --directory "$dir" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 20); do ip netns exec "$srv" ss -ltn | grep -q ":8080 " && break; sleep 0.1; done
  local out; out=$(ip netns exec "$cli" curl -s -o /dev/null -m 4 -w '%{http_code} %{size_download}' "http://$ip:8080/blob")
  echo "       curl $cli -> $ip:8080 => ${out:-none}"
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"
  [ "$out" = "200 200000" ]
}

controller_ok() {
  sed 's/^/       /' "$BASE/listener-c1.out"
  grep -q "FEATURES_REPLY len=32 dpid=0000000000000001" "$BASE/listener-c1.out"
}

dump_ok() {   # the exact text a Rust test could compare
  local got; got=$(ofctl "$C1" dump-flows br-int --no-names --no-stats table=20)
  local want=" table=20, priority=100,dl_dst=02:00:00:00:00:01 actions=output:10
 table=20, priority=50,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=output:10
 table=20, priority=0 actions=drop"
  [ "$got" = "$want" ]
}

test_all() {
  local tun=${TUN:-gre}
  log "tests with OVS<->OVS tunnel = $tun"
  check "VM1 -> VM2 ping over $tun"            ping_ok "$V1" "$VIP2" 10
  check "VM2 -> VM1 TCP (http 200 KB) over $tun" http_ok "$V1" "$VIP1" "$V2"
  check "VM3 (kernel vxlan) -> VM1 (OVS) ping" ping_ok "$V3" "$VIP1" 5
  check "VM3 (kernel vxlan) -> VM2 (OVS) ping" ping_ok "$V3" "$VIP2" 5
  check "VM3 -> VM1 TCP (kernel vxlan <-> OVS)" http_ok "$V1" "$VIP1" "$V3"
  check "VM1 -> VM3 TCP (OVS <-> kernel vxlan)" http_ok "$V3" "$VIP3" "$V1"
}

pitfalls() {  # documented failure modes, each restored afterwards
  log "pitfall: VM TX checksum offload left ON (veth default) -> ICMP ok, TCP dead"
  ip netns exec "$V2" ethtool -K eth0 tx on >/dev/null 2>&1
  check     "ping still works with VM2 tx-csum on" ping_ok "$V2" "$VIP1" 3
  check_not "TCP from VM2 (tx-csum on) to VM1"     http_ok "$V1" "$VIP1" "$V2"
  ip netns exec "$V2" ethtool -K eth0 tx off >/dev/null 2>&1
  log "pitfall: MTU. underlay 1500; VM MTU raised to 1500; GRE+key costs 42, VXLAN 50"
  local m; for m in "$V1" "$V2"; do ip -n "$m" link set eth0 mtu 1500; done
  for m in 1 2; do ip -n "${PFX}c$m" link set "vm$m" mtu 1500; done
  local lim=1430; [ "${TUN:-gre}" = vxlan ] && lim=1422
  check     "DF ping payload $lim (IP $((lim+28))) fits ${TUN:-gre}" ping_some "$V1" "$VIP2" 4 $lim
  check_not "DF ping payload $((lim+1)) is silently dropped (no ICMP frag-needed)" ping_some "$V1" "$VIP2" 4 $((lim+1))
  for m in "$V1" "$V2"; do ip -n "$m" link set eth0 mtu "${VM_MTU:-1400}"; done
}

all() {
  trap 'down; leftovers' EXIT
  trap 'echo interrupted; exit 130' INT TERM
  down >/dev/null
  local t0; t0=$(now_ms)
  up || { echo "up failed"; status; return 1; }
  echo "topology up in $(( $(now_ms) - t0 )) ms"
  status
  log "controller (python listener in $C1 on 127.0.0.1:6653)"
  check "vswitchd in $C1 connected to 127.0.0.1:6653 (OF1.3, dpid 1)" controller_ok
  check "dump-flows --no-stats text is stable" dump_ok
  test_all
  pitfalls
  log "switch OVS<->OVS traffic to VXLAN"
  TUN=vxlan; flows_up 1 vxlan; flows_up 2 vxlan
  test_all
  pitfalls
  log "memory after traffic"; ovs_mem "$C1"; ovs_mem "$C2"
  log "RESULT"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]
}

cmd=${1:-all}; shift || true
"$cmd" "$@"
