//! The Open vSwitch data plane against a real switch: a private
//! `ovsdb-server` + `ovs-vswitchd` (userspace datapath) in a chassis
//! namespace, `br-int` with the agent's [`Ovs`] as its controller, and three
//! "VMs" (namespaces on veths): vm1 and vm2 in VPC a (VXLAN, ARP
//! suppression), vm3 in VPC b (GRE) with vm2's address.
//!
//! Checked: vm1 pings vm2; the switch answers ARP for a remote port; a
//! gratuitous ARP for a VIP reaches the agent as an announcement; a
//! packet-out reaches vm1; VPC b sees nothing of VPC a and cannot reach it;
//! the switch holds exactly the desired flows and groups; an agent restart
//! (controller dropped, a new one started and re-synchronised) loses no ping
//! at 10 ms intervals and deletes nothing.
//!
//! Skipped when Open vSwitch is not installed, unless `VIPCAST_REQUIRE_OVS`
//! is set.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vipcast_agent::ovs::Ovs;
use vipcast_agent::ovs_flows::{self, GRE_PORT_NAME, VXLAN_PORT_NAME};
use vipcast_agent::ports::{Frame, Seen};
use vipcast_lab::{Netns, unique_id};
use vipcast_model::view::{ChassisView, chassis_view};
use vipcast_model::{BumMode, Chassis, Dataplane, Encap, Object, Port, Role, State, Subnet, Vip, VipSpec, Vpc};
use vipcast_packet::MacAddr;
use vipcast_packet::arp::ArpOp;
use vipcast_sys::{Direction, ETH_P_ALL, PacketSocket};

const VSWITCHD: &str = "/usr/sbin/ovs-vswitchd";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
const ETHTOOL: &str = "/usr/sbin/ethtool";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// One private Open vSwitch in the chassis namespace; dropping it (also
/// during a panic) stops both daemons, removes the run directory and
/// deletes the namespace with everything in it.
struct Switch {
    dir: PathBuf,
    ns: Netns,
}

impl Switch {
    fn start(id: &str) -> Switch {
        let ns = Netns::new(format!("voa-{id}")).expect("create namespace");
        let sw = Switch { dir: PathBuf::from(format!("/run/vipcast/ovs-agent-test-{id}")), ns };
        std::fs::create_dir_all(&sw.dir).expect("create run directory");
        let d = sw.dir.display().to_string();
        run(sw.env(&mut Command::new("ovsdb-tool")).args(["create", &format!("{d}/conf.db"), SCHEMA]));
        run(sw.env(&mut sw.ns.command("ovsdb-server")).args([
            &format!("{d}/conf.db"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--log-file={d}/ovsdb-server.log"),
            "-vconsole:off",
            "--detach",
            "--no-chdir",
        ]));
        sw.vsctl(&["--no-wait", "init"]);
        sw.vsctl(&[
            "--no-wait",
            "set",
            "open_vswitch",
            ".",
            "other_config:n-handler-threads=1",
            "other_config:n-revalidator-threads=1",
        ]);
        run(sw.env(&mut sw.ns.command("ovs-vswitchd")).args([
            &format!("unix:{d}/db.sock"),
            &format!("--pidfile={d}/ovs-vswitchd.pid"),
            &format!("--unixctl={d}/ovs-vswitchd.ctl"),
            &format!("--log-file={d}/ovs-vswitchd.log"),
            "-vconsole:off",
            "--detach",
            "--no-chdir",
        ]));
        sw
    }

    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            cmd.env(var, &self.dir);
        }
        cmd
    }

    fn vsctl(&self, args: &[&str]) -> String {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        run(self.env(&mut Command::new("ovs-vsctl")).args([db.as_str(), "--timeout=10"]).args(args))
    }

    fn ofctl(&self, command: &str) -> String {
        let target = format!("unix:{}/br-int.mgmt", self.dir.display());
        run(self.env(&mut Command::new("ovs-ofctl")).args([
            "-O",
            "OpenFlow13",
            "--no-names",
            "--no-stats",
            command,
            &target,
        ]))
    }

    /// br-int: netdev datapath, secure, OpenFlow 1.3, controller out of band
    /// with a 1 s maximum backoff; the two tunnel ports.
    fn add_bridge(&self, controller_port: u16) {
        self.vsctl(&[
            "--",
            "add-br",
            "br-int",
            "--",
            "set",
            "bridge",
            "br-int",
            "datapath_type=netdev",
            "fail_mode=secure",
            "protocols=OpenFlow13",
            "other_config:datapath-id=00000000000000a2",
            "other_config:disable-in-band=true",
            "--",
            "set-controller",
            "br-int",
            &format!("tcp:127.0.0.1:{controller_port}"),
            "--",
            "set",
            "controller",
            "br-int",
            "connection-mode=out-of-band",
            "max_backoff=1000",
            "--",
            "add-port",
            "br-int",
            VXLAN_PORT_NAME,
            "--",
            "set",
            "interface",
            VXLAN_PORT_NAME,
            "type=vxlan",
            "ofport_request=1",
            "options:key=flow",
            "options:remote_ip=flow",
            "--",
            "add-port",
            "br-int",
            GRE_PORT_NAME,
            "--",
            "set",
            "interface",
            GRE_PORT_NAME,
            "type=gre",
            "ofport_request=2",
            "options:key=flow",
            "options:remote_ip=flow",
        ]);
    }

    /// A VM namespace on a veth: the VM end gets `tx off` before it moves
    /// (veth checksum offload breaks TCP through the userspace datapath), the
    /// chassis end `port` joins br-int.
    fn add_vm(&self, vm: &Netns, port: &str, mac: &str, ip: &str) {
        let dev = format!("{port}v");
        assert!(dev.len() <= 15, "{dev} too long");
        self.ns.ip(&["link", "add", &dev, "type", "veth", "peer", "name", port]).expect("veth");
        run(self.ns.command(ETHTOOL).args(["-K", &dev, "tx", "off"]));
        self.ns.ip(&["link", "set", &dev, "netns", vm.name()]).expect("move the VM end");
        self.ns.ip(&["link", "set", port, "up"]).expect("chassis end up");
        vm.ip(&["link", "set", &dev, "address", mac]).expect("VM MAC");
        vm.ip(&["link", "set", &dev, "mtu", "1400"]).expect("VM MTU");
        vm.ip(&["addr", "add", &format!("{ip}/24"), "dev", &dev]).expect("VM address");
        vm.ip(&["link", "set", &dev, "up"]).expect("VM end up");
        self.vsctl(&["add-port", "br-int", port]);
    }

    fn stop(&self, daemon: &str) {
        let Ok(text) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) else { return };
        let Ok(pid) = text.trim().parse::<u32>() else { return };
        let dir = self.dir.display().to_string();
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&dir))
            .unwrap_or(false);
        if !ours {
            return;
        }
        for (signal, wait) in [("-TERM", Duration::from_secs(2)), ("-KILL", Duration::from_secs(2))] {
            let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
            let deadline = Instant::now() + wait;
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !alive(pid) {
                return;
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Ok(log) = std::fs::read_to_string(self.dir.join("ovs-vswitchd.log"))
        {
            eprintln!("--- ovs-vswitchd.log ---\n{log}");
        }
        self.stop("ovs-vswitchd");
        self.stop("ovsdb-server");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread inside namespace `ns` (sockets keep their namespace).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        vipcast_sys::enter_netns(&ns).expect("enter namespace");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// 127.0.0.1:`port` in the chassis namespace (retried: a dropped listener
/// closes asynchronously).
fn listen(ns: &str, port: u16) -> TcpListener {
    in_ns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
                Ok(l) => return l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("bind the controller port: {e}"),
            }
        }
    })
}

fn packet_socket(ns: &str, dev: &str) -> PacketSocket {
    let dev = dev.to_string();
    in_ns(ns, move || {
        let ifindex = vipcast_sys::ifindex(&dev).expect("ifindex");
        PacketSocket::bind(ifindex, ETH_P_ALL).expect("packet socket")
    })
}

/// Frames the socket received (not sent) until now.
fn drain(sock: &PacketSocket) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok((n, dir)) = sock.recv(&mut buf) {
        if dir == Direction::Incoming {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

const MAC1: MacAddr = MacAddr([2, 0xa, 0, 0, 0, 1]);
const MAC2: MacAddr = MacAddr([2, 0xa, 0, 0, 0, 2]);
const MAC3: MacAddr = MacAddr([2, 0xb, 0, 0, 0, 3]);
const MAC9: MacAddr = MacAddr([2, 0xa, 0, 0, 0, 9]);

fn state() -> State {
    let mut s = State::default();
    for (name, underlay) in [("hv1", "172.31.0.1"), ("hv2", "172.31.0.2")] {
        s.put(Object::Chassis(Chassis {
            name: name.into(),
            underlay_ip: underlay.parse().unwrap(),
            role: Role::Hypervisor,
            dataplane: Dataplane::Ovs,
            liveness: None,
        }));
    }
    for (name, vni, encap) in [("a", 100, Encap::Vxlan), ("b", 200, Encap::Gre)] {
        s.put(Object::Vpc(Vpc {
            name: name.into(),
            vni,
            bum: BumMode::Headend,
            arp_suppression: true,
            assist: true,
            encap,
        }));
        s.put(Object::Subnet(Subnet {
            name: "s".into(),
            vpc: name.into(),
            cidr: "10.0.0.0/24".parse().unwrap(),
            gateway: None,
        }));
    }
    for (name, vpc, chassis, mac, ip) in [
        ("a1", "a", "hv1", MAC1, "10.0.0.1"),
        ("a2", "a", "hv1", MAC2, "10.0.0.2"),
        ("a9", "a", "hv2", MAC9, "10.0.0.9"),
        ("b1", "b", "hv1", MAC3, "10.0.0.2"),
    ] {
        s.put(Object::Port(Port::vm(name, vpc, "s", chassis, mac, ip.parse().unwrap())));
    }
    s.put(Object::Vip(Vip {
        spec: VipSpec {
            name: "va".into(),
            vpc: "a".into(),
            subnet: "s".into(),
            ip: "10.0.0.100".parse().unwrap(),
            members: vec!["a1".into(), "a2".into()],
        },
        owner: None,
        recent_moves: vec![],
        split_brain_until: 0,
        ineligible: vec![],
    }));
    s
}

fn no_replicator(_: u32) -> Option<IpAddr> {
    None
}

/// Flow and group lines of the switch's tables.
fn count(sw: &Switch) -> (usize, usize) {
    let lines = |dump: String| dump.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("OFPST_")).count();
    (lines(sw.ofctl("dump-flows")), lines(sw.ofctl("dump-groups")))
}

/// What the switch must hold for `view` with the switch's port numbers.
fn expected(ovs: &Ovs, view: &ChassisView, vm_ports: &BTreeMap<String, String>) -> (usize, usize) {
    let ports = ovs_flows::Ports {
        vm: vm_ports.iter().filter_map(|(p, i)| ovs.port_number(i).map(|n| (p.clone(), n))).collect(),
        vxlan: ovs.port_number(VXLAN_PORT_NAME),
        gre: ovs.port_number(GRE_PORT_NAME),
        routers: Default::default(),
    };
    let d = ovs_flows::desired(view, &ports, &no_replicator);
    (d.flows.len(), d.groups.len())
}

async fn wait_connected(ovs: &Ovs) {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !ovs.connected() {
        assert!(Instant::now() < deadline, "the switch did not connect within {CONNECT_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ping(vm: &Netns, args: &[&str]) -> std::process::Output {
    vm.command("ping").args(args).output().expect("run ping")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ovs_data_plane_forwards_answers_sniffs_and_survives_a_restart() {
    if !Path::new(VSWITCHD).exists() && std::env::var_os("VIPCAST_REQUIRE_OVS").is_none() {
        eprintln!("SKIPPED: {VSWITCHD} is missing (install openvswitch-switch, or set VIPCAST_REQUIRE_OVS=1 to fail)");
        return;
    }
    assert!(
        Path::new(ETHTOOL).exists(),
        "ethtool is missing: it is needed to turn off veth checksum offload (scripts/setup.sh installs it)"
    );
    let t0 = Instant::now();
    let id = unique_id();
    let sw = Switch::start(&id);
    let vm1 = Netns::new(format!("voa-{id}-1")).expect("vm1");
    let vm2 = Netns::new(format!("voa-{id}-2")).expect("vm2");
    let vm3 = Netns::new(format!("voa-{id}-3")).expect("vm3");

    // The controller listens before the bridge exists (the switch's first
    // connection attempt is immediate; later ones back off).
    let listener = listen(sw.ns.name(), 0);
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, mut seen) = mpsc::channel::<Seen>(64);
    let ovs = Ovs::with_listener(listener, seen_tx.clone()).expect("start the controller");
    sw.add_bridge(port);
    let (p1, p2, p3) = (format!("vo{id}a"), format!("vo{id}b"), format!("vo{id}c"));
    sw.add_vm(&vm1, &p1, "02:0a:00:00:00:01", "10.0.0.1");
    sw.add_vm(&vm2, &p2, "02:0a:00:00:00:02", "10.0.0.2");
    sw.add_vm(&vm3, &p3, "02:0b:00:00:00:03", "10.0.0.2");
    let (d1, d2, d3) = (format!("{p1}v"), format!("{p2}v"), format!("{p3}v"));
    wait_connected(&ovs).await;
    let t_connected = t0.elapsed();

    let view = chassis_view(&state(), "hv1").expect("view");
    let vm_ports: BTreeMap<String, String> =
        [("a1", &p1), ("a2", &p2), ("b1", &p3)].into_iter().map(|(a, b)| (a.to_string(), b.clone())).collect();
    // Ports may still be arriving (PORT_STATUS); apply until every one has a number.
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm_ports.values().any(|i| ovs.port_number(i).is_none()) {
        assert!(Instant::now() < deadline, "ports never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = ovs.apply(&view, &vm_ports, &Default::default(), &no_replicator).await.expect("apply");
    assert_eq!(first.flows_deleted, 0, "{first:?}");
    let again = ovs.apply(&view, &vm_ports, &Default::default(), &no_replicator).await.expect("apply again");
    assert_eq!(again.total(), 0, "a second apply of the same view sends nothing: {again:?}");
    let t_programmed = t0.elapsed();
    let want = expected(&ovs, &view, &vm_ports);
    assert_eq!(count(&sw), want, "flows and groups in the switch");

    // vm1 -> vm2.
    let out = ping(&vm1, &["-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]);
    assert!(out.status.success(), "vm1 pings vm2: {}", String::from_utf8_lossy(&out.stdout));

    // The switch answers ARP for a port with no VM here (a9 on hv2).
    let _ = ping(&vm1, &["-c", "1", "-W", "1", "10.0.0.9"]);
    let neigh = vm1.ip(&["neigh", "show", "10.0.0.9"]).expect("neigh");
    assert!(neigh.contains(&MAC9.to_string()), "vm1's neighbour entry for 10.0.0.9: {neigh:?}");

    // Isolation: vm3 (VPC b) hears nothing of vm1's broadcasts, and cannot reach vm1.
    let s3 = packet_socket(vm3.name(), &d3);
    drain(&s3);
    let _ = ping(&vm1, &["-b", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.255"]);
    let _ = ping(&vm1, &["-c", "2", "-i", "0.2", "-W", "1", "10.0.0.2"]);
    let leaked: Vec<_> = drain(&s3).into_iter().filter(|f| f.get(6..12) == Some(&MAC1.0[..])).collect();
    assert!(leaked.is_empty(), "vm3 received {} frames from vm1", leaked.len());
    let out = ping(&vm3, &["-c", "2", "-i", "0.2", "-W", "1", "10.0.0.1"]);
    assert!(!out.status.success(), "vm3 (VPC b) reached 10.0.0.1 in VPC a");

    // A gratuitous ARP for the VIP from vm2 reaches the agent.
    let vip: Ipv4Addr = "10.0.0.100".parse().unwrap();
    let s2 = packet_socket(vm2.name(), &d2);
    s2.send(&vipcast_packet::build::garp(MAC2, vip, ArpOp::Request)).expect("send GARP");
    let got = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = seen.recv().await.expect("seen channel");
            if let Frame::Announcement(a) = &s.frame
                && a.ip == IpAddr::V4(vip)
            {
                return s;
            }
        }
    })
    .await
    .expect("no announcement from the switch within 5 s");
    assert_eq!(got.port, "a2");
    let Frame::Announcement(a) = got.frame else { unreachable!() };
    assert_eq!(a.mac, MAC2);

    // packet_out reaches vm1.
    let s1 = packet_socket(vm1.name(), &d1);
    drain(&s1);
    let marker =
        vipcast_packet::build::garp(MacAddr([2, 0xa, 0, 0, 0, 0x77]), "10.0.0.77".parse().unwrap(), ArpOp::Reply);
    ovs.packet_out(&p1, &marker).expect("packet_out");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if drain(&s1).contains(&marker) {
            break;
        }
        assert!(Instant::now() < deadline, "the packet-out did not reach vm1");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t_checked = t0.elapsed();

    // Agent restart: pinging every 10 ms throughout, the controller goes
    // away and a new one connects and re-synchronises.
    let pinger = vm1
        .command("ping")
        .args(["-i", "0.01", "-c", "400", "-W", "1", "10.0.0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ping");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ovs);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t_restart = Instant::now();
    let ovs = Ovs::with_listener(listen(sw.ns.name(), port), seen_tx).expect("restart the controller");
    wait_connected(&ovs).await;
    let reconnect = t_restart.elapsed();
    let resync = ovs.apply(&view, &vm_ports, &Default::default(), &no_replicator).await.expect("re-sync");
    // The new controller finds every flow and group in place (both are read back): nothing
    // deleted, re-added or modified.
    assert_eq!(resync, Default::default(), "the re-sync changed something: {resync:?}");
    let out = tokio::task::spawn_blocking(move || pinger.wait_with_output()).await.unwrap().expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().find(|l| l.contains("packets transmitted")).unwrap_or_default().to_string();
    assert!(summary.starts_with("400 packets transmitted, 400 received"), "ping during the restart: {summary}");
    assert_eq!(count(&sw), want, "flows and groups after the re-sync");
    let again =
        ovs.apply(&view, &vm_ports, &Default::default(), &no_replicator).await.expect("apply after the re-sync");
    assert_eq!(again.total(), 0, "{again:?}");

    eprintln!(
        "ovs agent: connected at {t_connected:?}, programmed at {t_programmed:?} ({first:?}; {} flows, {} groups), \
         checks done at {t_checked:?}; restart: reconnected in {reconnect:?}, re-sync {resync:?}, ping {summary}",
        want.0, want.1
    );
    drop(ovs);
    let t_down = Instant::now();
    drop((vm1, vm2, vm3));
    drop(sw);
    eprintln!("ovs agent: torn down in {:?}", t_down.elapsed());
}
