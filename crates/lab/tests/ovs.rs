//! Open vSwitch chassis on the real kernel (root), without agents: a lab of
//! one OVS chassis and one kernel chassis is built step by step; the OVS
//! chassis has its daemons (recorded as lab processes), `br-phy` holding the
//! underlay address, `br-int` with its controller, tunnel and VM ports, and a
//! seeded tunnel neighbour cache. With two flows set by hand (the agent's
//! job) a VM behind it talks to a VM behind the kernel chassis' VXLAN device
//! over the lab's underlay, TCP and UDP checksums included. `down` then
//! leaves no process, namespace or directory; so does a failed `up`, and
//! `down` after an `up` that died half-way.
//!
//! Skipped when Open vSwitch or ethtool is not installed, unless
//! `VIPCAST_REQUIRE_OVS` is set (CI sets it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::config::LabConfig;
use vipcast_lab::ovs::Ovs;
use vipcast_lab::plan::br_phy_mac;
use vipcast_lab::state::{Root, pid_alive, status};
use vipcast_lab::teardown::{down, host_links, lab_namespaces};
use vipcast_lab::topology::{Builder, UpOptions};
use vipcast_lab::{ip, unique_id};

/// Whether the tests can run here; panics when they must and cannot.
fn have_ovs() -> bool {
    let missing = vipcast_lab::ovs::missing_tools();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("VIPCAST_REQUIRE_OVS").is_none(),
        "VIPCAST_REQUIRE_OVS is set but {missing:?} are missing"
    );
    eprintln!("skipped: {missing:?} not installed");
    false
}

/// A lab name and state root, removed with `down` when dropped.
struct TestLab {
    name: String,
    root: Root,
    _dir: tempfile::TempDir,
}

impl TestLab {
    fn new() -> TestLab {
        let dir = tempfile::Builder::new().prefix("vipcast-lab-ovs-").tempdir().unwrap();
        TestLab { name: format!("lo{}", unique_id()), root: Root(dir.path().to_path_buf()), _dir: dir }
    }

    /// hv1 on Open vSwitch with VM a, hv2 on the kernel with VM b, a
    /// replicator; one VXLAN VPC.
    fn config(&self) -> LabConfig {
        LabConfig::parse(&format!(
            r#"
name = "{name}"
[[vpc]]
name = "prod"
vni = 100
bum = "headend"
[[subnet]]
vpc = "prod"
name = "web"
cidr = "192.168.10.0/24"
[[chassis]]
name = "hv1"
dataplane = "ovs"
[[chassis]]
name = "hv2"
[[replicator]]
name = "rep1"
[[vm]]
name = "a"
chassis = "hv1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.11"
[[vm]]
name = "b"
chassis = "hv2"
vpc = "prod"
subnet = "web"
ip = "192.168.10.12"
"#,
            name = self.name
        ))
        .unwrap()
    }

    fn opts<'a>(&'a self, exe: &'a Path) -> UpOptions<'a> {
        UpOptions { root: &self.root, exe, file: None, progress: &|l| eprintln!("{l}"), cancel: None }
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn ovs(&self) -> Ovs {
        Ovs::new(self.root.state_dir(&self.name).join("ovs-hv1"))
    }

    /// Nothing of the lab is left on the machine.
    fn assert_gone(&self, pids: &[u32]) {
        assert_eq!(lab_namespaces(&self.name).unwrap(), Vec::<String>::new());
        assert_eq!(host_links(&self.name).unwrap(), Vec::<String>::new());
        assert!(!self.root.state_file(&self.name).exists());
        assert!(!self.root.state_dir(&self.name).exists(), "the state directory (and OVS run directory) is left");
        for pid in pids {
            assert!(!pid_alive(*pid), "process {pid} still runs");
        }
        // The switches' devices lived in the chassis namespace only.
        let host = ip(&["-o", "link", "show"]).unwrap();
        assert!(!host.lines().any(|l| l.contains(&self.name)), "{host}");
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = down(&self.root, &self.name, &|_| {});
    }
}

fn in_ns(ns: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn ping(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c", "1", "-W", "2", addr]).0
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ip(args).unwrap()).unwrap()
}

/// Global addresses of `dev` in `ns`, as "addr/len".
fn addrs(ns: &str, dev: &str) -> Vec<String> {
    ip_json(&["-n", ns, "-j", "addr", "show", "dev", dev])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn mac(ns: &str, dev: &str) -> String {
    ip_json(&["-n", ns, "-j", "link", "show", "dev", dev])[0]["address"].as_str().unwrap().to_string()
}

/// Whether `ethtool -k` reports TX checksumming off for `dev` in `ns`.
fn tx_checksum_off(ns: &str, dev: &str) -> bool {
    let (ok, out) = in_ns(ns, &["ethtool", "-k", dev]);
    assert!(ok, "{out}");
    out.lines().any(|l| l.trim() == "tx-checksumming: off")
}

/// A counter of `/proc/net/snmp` in `ns`, e.g. ("Udp", "NoPorts").
fn snmp(ns: &str, proto: &str, field: &str) -> u64 {
    let (ok, text) = in_ns(ns, &["cat", "/proc/net/snmp"]);
    assert!(ok, "{text}");
    let mut rows = text.lines().filter(|l| l.starts_with(&format!("{proto}:")));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let i = names.split_whitespace().position(|n| n == field).unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// A TCP connection attempt to a closed port: refused (the SYN arrived with a
/// good checksum and was answered with RST) or timed out (it did not).
fn tcp_refused(from_ns: &str, to: &str) -> bool {
    let script = format!("exec 3<>/dev/tcp/{to}/9");
    let (_, out) = in_ns(from_ns, &["timeout", "3", "bash", "-c", &script]);
    out.contains("Connection refused")
}

#[test]
fn an_ovs_chassis_is_built_works_with_a_kernel_chassis_and_down_removes_it() {
    if !have_ovs() {
        return;
    }
    let lab = TestLab::new();
    let cfg = lab.config();
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    let t = Instant::now();
    b.underlay().unwrap();
    b.host_link().unwrap();
    b.chassis().unwrap();
    let chassis = t.elapsed();
    b.replicators().unwrap();
    b.vms().unwrap();
    b.externals().unwrap();
    // No agents: the switch is created as it would be right after they start.
    let t = Instant::now();
    b.integration_bridges().unwrap();
    let bridges = t.elapsed();
    let state = b.commit().unwrap();
    eprintln!("timing: chassis step {chassis:?} (OVS start + br-phy), integration bridge {bridges:?}");

    // The daemons are lab processes, running, with their logs in the run directory.
    let ovs = lab.ovs();
    let st = status(&lab.root, &lab.name).unwrap();
    let mut pids = Vec::new();
    for role in ["ovsdb-server", "ovs-vswitchd"] {
        let (p, running) = st.processes.iter().find(|(p, _)| p.role == role).unwrap_or_else(|| panic!("no {role}"));
        assert!(*running, "{role} is not running");
        assert_eq!((p.node.as_str(), p.namespace.as_str()), ("hv1", lab.ns("hv1").as_str()));
        assert_eq!(p.log, ovs.dir().join(format!("{role}.log")));
        assert_eq!(ovs.pid(role), Some(p.pid));
        pids.push(p.pid);
    }
    assert!(!st.processes.iter().any(|(p, _)| p.node == "hv2" && p.role.starts_with("ovs")));

    // Bridges and ports.
    let mut bridges = ovs.vsctl(&["list-br"]).unwrap().lines().map(str::to_string).collect::<Vec<_>>();
    bridges.sort();
    assert_eq!(bridges, ["br-int", "br-phy"]);
    assert_eq!(ovs.list_ports("br-phy").unwrap(), ["ul0"]);
    assert_eq!(ovs.list_ports("br-int").unwrap(), ["vc-gre", "vc-vxlan", "vp0-a"]);
    let get = |args: &[&str]| ovs.vsctl(&[&["get"][..], args].concat()).unwrap().trim().to_string();
    assert_eq!(get(&["interface", "vc-vxlan", "type"]), "vxlan");
    assert_eq!(get(&["interface", "vc-gre", "type"]), "gre");
    for port in ["vc-vxlan", "vc-gre"] {
        assert_eq!(get(&["interface", port, "options:remote_ip"]), "flow");
        assert_eq!(get(&["interface", port, "options:key"]), "flow");
        assert_eq!(get(&["interface", port, "options:local_ip"]), "\"10.255.0.10\"");
    }
    assert_eq!(get(&["interface", "vp0-a", "external_ids:vipcast-port"]), "a");
    assert_eq!(get(&["bridge", "br-int", "fail_mode"]), "secure");
    assert_eq!(get(&["bridge", "br-int", "protocols"]), "[OpenFlow13]");
    assert_eq!(get(&["bridge", "br-int", "other_config:disable-in-band"]), "\"true\"");
    assert_eq!(get(&["bridge", "br-int", "datapath_type"]), "netdev");
    assert_eq!(get(&["controller", "br-int", "target"]), "\"tcp:127.0.0.1:6653\"");
    assert_eq!(get(&["controller", "br-int", "connection_mode"]), "out-of-band");
    assert_eq!(get(&["controller", "br-int", "max_backoff"]), "1000");
    assert!(!ovs.controller_connected(), "nothing listens on 6653");
    let hv1 = lab.ns("hv1");
    let alias = ip_json(&["-n", &hv1, "-j", "link", "show", "dev", "vp0-a"])[0]["ifalias"].clone();
    assert_eq!(alias, "vipcast-port:a");

    // The underlay address is on br-phy, with br-phy's own MAC; only br-phy answers ARP.
    assert_eq!(addrs(&hv1, "br-phy"), ["10.255.0.10/24"]);
    assert_eq!(addrs(&hv1, "ul0"), Vec::<String>::new());
    assert_eq!(mac(&hv1, "br-phy"), br_phy_mac(&lab.name, 0));
    assert_ne!(mac(&hv1, "ul0"), mac(&hv1, "br-phy"));
    let net = lab.ns("net");
    assert!(ping(&net, "10.255.0.10"), "br-phy's address does not answer from the underlay");
    let neigh = ip_json(&["-n", &net, "-j", "neigh", "show", "10.255.0.10"]);
    assert_eq!(neigh[0]["lladdr"], br_phy_mac(&lab.name, 0).as_str(), "{neigh}");
    assert!(ping(&hv1, "10.255.0.254"), "the chassis does not reach the controller's address");
    assert!(ping(&lab.ns("hv2"), "10.255.0.10"));
    // Tunnel neighbours: the kernel chassis and the replicator.
    let neighbours = ovs.appctl(&["tnl/neigh/show"]).unwrap();
    for (node, addr) in [("hv2", "10.255.0.11"), ("rep1", "10.255.0.100")] {
        let line = neighbours.lines().find(|l| l.starts_with(addr)).unwrap_or_else(|| panic!("{neighbours}"));
        assert!(line.contains(&mac(&lab.ns(node), "ul0")), "{line}");
    }
    // Checksums: finished by the VM on the OVS chassis, and by the underlay towards it.
    assert!(tx_checksum_off(&lab.ns("a"), "eth0"));
    assert!(tx_checksum_off(&net, "hv1"));
    assert!(!tx_checksum_off(&lab.ns("b"), "eth0"));
    assert!(!tx_checksum_off(&lab.ns("hv2"), "ul0"));

    // The agents' part, by hand: VM a <-> VXLAN 100 <-> hv2, whose kernel VXLAN
    // device keeps the default UDP checksums and VM b its checksum offload.
    let dir = ovs.dir().display().to_string();
    for flow in [
        "in_port=vp0-a,actions=set_field:100->tun_id,set_field:10.255.0.11->tun_dst,output:vc-vxlan",
        "in_port=vc-vxlan,tun_id=100,actions=output:vp0-a",
    ] {
        let out = Command::new("ovs-ofctl")
            .envs(ovs.env())
            .args(["-O", "OpenFlow13", "add-flow", &format!("unix:{dir}/br-int.mgmt"), flow])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let hv2 = lab.ns("hv2");
    for args in [
        &[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "100",
            "dstport",
            "4789",
            "local",
            "10.255.0.11",
            "dev",
            "ul0",
            "udpcsum",
        ][..],
        &["link", "add", "kbr", "type", "bridge"][..],
        &["link", "set", "vx0", "master", "kbr", "up"][..],
        &["link", "set", "vp1-b", "master", "kbr", "up"][..],
        &["link", "set", "kbr", "up"][..],
    ] {
        let mut full = vec!["-n", hv2.as_str()];
        full.extend_from_slice(args);
        ip(&full).unwrap();
    }
    ip(&["-n", &hv2, "link", "set", "vx0", "up"]).unwrap();
    let fdb = Command::new("bridge")
        .args(["-n", &hv2, "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst", "10.255.0.10"])
        .status()
        .unwrap();
    assert!(fdb.success());
    let t = Instant::now();
    let (a, b_ns) = (lab.ns("a"), lab.ns("b"));
    let mut answered = false;
    while !answered && t.elapsed() < Duration::from_secs(10) {
        answered = ping(&a, "192.168.10.12");
    }
    assert!(answered, "VM a (OVS) cannot reach VM b (kernel VXLAN)");
    eprintln!("timing: first VM ping across OVS <-> kernel VXLAN answered after {:?}", t.elapsed());
    assert!(ping(&b_ns, "192.168.10.11"));
    // TCP and UDP from the kernel side (checksums left to offload) arrive intact at the OVS side, and back.
    let (csum_errors, no_ports) = (snmp(&a, "Udp", "InCsumErrors"), snmp(&a, "Udp", "NoPorts"));
    in_ns(&b_ns, &["bash", "-c", "echo x > /dev/udp/192.168.10.11/9"]);
    let t = Instant::now();
    while snmp(&a, "Udp", "NoPorts") == no_ports && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(snmp(&a, "Udp", "NoPorts"), no_ports + 1, "the UDP datagram from b did not arrive at a");
    assert_eq!(snmp(&a, "Udp", "InCsumErrors"), csum_errors);
    assert!(tcp_refused(&b_ns, "192.168.10.11"), "a TCP SYN from b to a got no RST");
    assert!(tcp_refused(&a, "192.168.10.12"), "a TCP SYN from a to b got no RST");
    assert_eq!(snmp(&a, "Tcp", "InCsumErrors"), 0);
    assert_eq!(snmp(&b_ns, "Tcp", "InCsumErrors"), 0);

    // Down: Open vSwitch told to exit (cleanup), everything else gone too.
    let t = Instant::now();
    let report = down(&lab.root, &lab.name, &|l| eprintln!("{l}")).unwrap();
    eprintln!("timing: down {:?}", t.elapsed());
    assert!(report.processes >= 2, "{report:?}");
    assert_eq!(report.killed, 0, "{report:?}");
    assert_eq!(report.namespaces.len(), state.namespaces.len(), "{report:?}");
    lab.assert_gone(&pids);
    assert!(down(&lab.root, &lab.name, &|_| {}).unwrap().is_empty());
}

#[test]
fn a_failed_up_and_down_after_a_crashed_up_leave_no_switch() {
    if !have_ovs() {
        return;
    }
    let lab = TestLab::new();
    let cfg = lab.config();

    // A failed step: the agents (/bin/false) exit at once; the builder tears down.
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    b.underlay().unwrap();
    b.host_link().unwrap();
    b.chassis().unwrap();
    b.replicators().unwrap();
    b.vms().unwrap();
    let pids: Vec<u32> = ["ovsdb-server", "ovs-vswitchd"].iter().map(|d| lab.ovs().pid(d).unwrap()).collect();
    let err = b.agents().unwrap_err().to_string();
    assert!(err.contains("exited right after it started"), "{err}");
    drop(b);
    lab.assert_gone(&pids);

    // `lab up` dying half-way (its guards never run): no state file, the
    // switch still running; `down` finds it by its run directory.
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    b.underlay().unwrap();
    b.host_link().unwrap();
    b.chassis().unwrap();
    b.replicators().unwrap();
    b.vms().unwrap();
    b.integration_bridges().unwrap();
    let pids: Vec<u32> = ["ovsdb-server", "ovs-vswitchd"].iter().map(|d| lab.ovs().pid(d).unwrap()).collect();
    std::mem::forget(b);
    assert!(!lab.root.state_file(&lab.name).exists());
    let report = down(&lab.root, &lab.name, &|l| eprintln!("{l}")).unwrap();
    assert!(report.processes >= 2, "{report:?}");
    lab.assert_gone(&pids);
}
