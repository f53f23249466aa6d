//! The lab's building blocks on the real kernel (root): namespaces, underlay,
//! host link, VM ports, external clients, keepalived; a failed step tears
//! down what was built; `down` removes everything, also with the state file
//! gone (a crash), and does nothing the second time.
//!
//! The controller and the whole `vipcast lab` command are tested with the
//! binary in `crates/vipcast/tests/lab.rs`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::config::LabConfig;
use vipcast_lab::plan::vm_mac;
use vipcast_lab::state::{Root, pid_alive};
use vipcast_lab::teardown::{down, host_links, lab_namespaces};
use vipcast_lab::topology::{Builder, UpOptions};
use vipcast_lab::{Error, ip, unique_id};

/// A lab name and state root, removed with `down` when dropped (also when
/// a test fails).
struct TestLab {
    name: String,
    root: Root,
    _dir: tempfile::TempDir,
}

impl TestLab {
    fn new() -> TestLab {
        let dir = tempfile::Builder::new().prefix("vipcast-lab-test-").tempdir().unwrap();
        TestLab { name: format!("lt{}", unique_id()), root: Root(dir.path().to_path_buf()), _dir: dir }
    }

    fn config(&self, vrrp: &str) -> LabConfig {
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
gateway = "192.168.10.1"
[[chassis]]
name = "hv1"
[[chassis]]
name = "gw1"
role = "gateway"
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
chassis = "gw1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.12"
[[vip]]
name = "v"
vpc = "prod"
subnet = "web"
ip = "192.168.10.100"
members = ["a", "b"]
vrrp = "{vrrp}"
advert_int = 0.1
[[external]]
name = "inet"
gateway = "gw1"
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

    /// Nothing of the lab is left on the machine.
    fn assert_gone(&self) {
        assert_eq!(lab_namespaces(&self.name).unwrap(), Vec::<String>::new());
        assert_eq!(host_links(&self.name).unwrap(), Vec::<String>::new());
        assert!(!self.root.state_file(&self.name).exists());
        assert!(!self.root.state_dir(&self.name).exists());
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let _ = down(&self.root, &self.name, &|_| {});
    }
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ip(args).unwrap()).unwrap()
}

/// `ip -n NS -j addr show dev DEV` -> ["addr/len", ...] (global scope).
fn addrs(ns: &str, dev: &str) -> Vec<String> {
    let v = ip_json(&["-n", ns, "-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

fn link(ns: &str, dev: &str) -> serde_json::Value {
    ip_json(&["-n", ns, "-j", "-d", "link", "show", "dev", dev])[0].clone()
}

fn in_ns(ns: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn ping(ns: &str, addr: &str) -> bool {
    in_ns(ns, &["ping", "-c", "1", "-W", "2", addr]).0
}

fn build_network(b: &mut Builder<'_>) {
    b.underlay().unwrap();
    b.host_link().unwrap();
    b.chassis().unwrap();
    b.replicators().unwrap();
    b.vms().unwrap();
    b.externals().unwrap();
}

#[test]
fn builds_the_documented_topology_and_down_removes_it() {
    let lab = TestLab::new();
    let cfg = lab.config("none");
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    build_network(&mut b);
    let url = b.controller_url().unwrap();

    // Underlay: the bridge, each chassis and replicator on it, reachable.
    let net = lab.ns("net");
    assert_eq!(addrs(&net, "ul0"), ["10.255.0.254/24"]);
    assert_eq!(link(&net, "ul0")["linkinfo"]["info_kind"], "bridge");
    for (node, addr) in [("hv1", "10.255.0.10/24"), ("gw1", "10.255.0.11/24"), ("rep1", "10.255.0.100/24")] {
        assert_eq!(addrs(&lab.ns(node), "ul0"), [addr], "{node}");
        assert_eq!(link(&lab.ns(node), "ul0")["mtu"], 1500);
        assert_eq!(link(&net, node)["master"], "ul0", "{node}'s port in the underlay namespace");
    }
    assert!(ping(&lab.ns("hv1"), "10.255.0.254"));
    assert!(ping(&lab.ns("hv1"), "10.255.0.100"));
    assert!(ping(&lab.ns("gw1"), "10.255.0.10"));

    // The host link: vc<id>h on the host, mgmt0 in <name>-net, a /30 of 10.254/16.
    let host = host_links(&lab.name).unwrap();
    assert_eq!(host.len(), 1);
    assert!(host[0].starts_with("vc") && host[0].ends_with('h') && host[0].len() == 9, "{host:?}");
    let host_addr = addrs_host(&host[0]);
    assert_eq!(host_addr.len(), 1);
    assert!(host_addr[0].starts_with("10.254.") && host_addr[0].ends_with(".1/30"), "{host_addr:?}");
    let mgmt = addrs(&net, "mgmt0");
    assert_eq!(mgmt, [host_addr[0].replace(".1/30", ".2/30")]);
    assert_eq!(url, format!("https://{}:7600", mgmt[0].trim_end_matches("/30")));
    assert!(
        Command::new("ping")
            .args(["-c", "1", "-W", "2", mgmt[0].trim_end_matches("/30")])
            .output()
            .unwrap()
            .status
            .success()
    );

    // VMs: eth0 with MTU 1450, the lab's MAC, the address, a default route, no DAD.
    for (i, (vm, chassis, addr)) in
        [("a", "hv1", "192.168.10.11/24"), ("b", "gw1", "192.168.10.12/24")].iter().enumerate()
    {
        let ns = lab.ns(vm);
        let eth0 = link(&ns, "eth0");
        assert_eq!(eth0["mtu"], 1450);
        assert_eq!(eth0["address"], vm_mac(&lab.name, i));
        assert_eq!(addrs(&ns, "eth0"), [*addr]);
        let routes = ip_json(&["-n", &ns, "-j", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], "192.168.10.1");
        assert_eq!(in_ns(&ns, &["sysctl", "-n", "net.ipv6.conf.eth0.accept_dad"]).1.trim(), "0");
        // Its port: up, MTU 1450, alias, attached to nothing (the agent attaches it).
        let port = link(&lab.ns(chassis), &format!("vp{i}-{vm}"));
        assert_eq!(port["ifalias"], format!("vipcast-port:{vm}"));
        assert_eq!(port["operstate"], "UP");
        assert_eq!(port["mtu"], 1450);
        assert!(port.get("master").is_none(), "{port}");
    }

    // The external client: a /30 and a /64 to ext0 on the gateway, which
    // forwards both families.
    let inet = lab.ns("inet");
    assert_eq!(addrs(&inet, "eth0"), ["172.30.0.2/30", "fd00:30::2/64"]);
    assert_eq!(addrs(&lab.ns("gw1"), "ext0"), ["172.30.0.1/30", "fd00:30::1/64"]);
    assert_eq!(ip_json(&["-n", &inet, "-j", "route", "show", "default"])[0]["gateway"], "172.30.0.1");
    assert_eq!(ip_json(&["-n", &inet, "-j", "-6", "route", "show", "default"])[0]["gateway"], "fd00:30::1");
    assert_eq!(in_ns(&lab.ns("gw1"), &["sysctl", "-n", "net.ipv4.ip_forward"]).1.trim(), "1");
    assert_eq!(in_ns(&lab.ns("gw1"), &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).1.trim(), "1");
    assert!(ping(&inet, "172.30.0.1"));
    assert!(ping(&inet, "fd00:30::1"));

    let state = b.commit().unwrap();
    assert_eq!(state.namespaces.len(), 1 + 2 + 1 + 2 + 1);
    assert_eq!(state.controller_url, url);
    assert_eq!(lab.root.read(&lab.name).unwrap().unwrap(), state);
    for ns in &state.namespaces {
        assert!(lab_namespaces(&lab.name).unwrap().contains(ns), "{ns} kept after commit");
    }

    // A second `up` of the same name is refused, saying so.
    match Builder::new(&cfg, lab.opts(Path::new("/bin/false"))) {
        Err(Error::AlreadyUp(m)) => assert!(m.contains("already up") && m.contains("lab down"), "{m}"),
        other => panic!("second up: {other:?}"),
    }

    let report = down(&lab.root, &lab.name, &|l| eprintln!("{l}")).unwrap();
    assert_eq!(report.namespaces.len(), state.namespaces.len());
    assert!(report.state_removed);
    lab.assert_gone();
    // Twice: nothing to do.
    let again = down(&lab.root, &lab.name, &|_| {}).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

fn addrs_host(dev: &str) -> Vec<String> {
    let v = ip_json(&["-j", "addr", "show", "dev", dev]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn a_failed_step_tears_down_what_was_built() {
    // An agent that exits at once (here /bin/false as the vipcast binary).
    let lab = TestLab::new();
    let cfg = lab.config("none");
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    build_network(&mut b);
    assert!(!lab_namespaces(&lab.name).unwrap().is_empty());
    let err = b.agents().unwrap_err().to_string();
    assert!(err.contains("agent hv1 exited right after it started"), "{err}");
    assert!(err.contains("`agent` subcommand"), "{err}");
    drop(b);
    lab.assert_gone();

    // A controller that exits at once.
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    b.underlay().unwrap();
    b.host_link().unwrap();
    let err = b.controller().unwrap_err().to_string();
    assert!(err.contains("controller net exited right after it started"), "{err}");
    drop(b);
    lab.assert_gone();
}

#[test]
fn down_after_a_crash_finds_the_lab_by_name() {
    let lab = TestLab::new();
    let cfg = lab.config("none");
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    build_network(&mut b);
    b.commit().unwrap();
    // Daemons left running in two namespaces, and the state file lost.
    let mut daemons: Vec<_> = ["net", "hv1"]
        .iter()
        .map(|n| Command::new("ip").args(["netns", "exec", &lab.ns(n), "sleep", "600"]).spawn().unwrap())
        .collect();
    let end = Instant::now() + Duration::from_secs(5);
    while vipcast_lab::teardown::namespace_pids(&lab.ns("hv1")).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(lab.root.state_file(&lab.name)).unwrap();

    // Leftovers block a new `up` ...
    match Builder::new(&cfg, lab.opts(Path::new("/bin/false"))) {
        Err(Error::AlreadyUp(m)) => assert!(m.contains("left over") && m.contains("lab down"), "{m}"),
        other => panic!("up over leftovers: {other:?}"),
    }
    // ... and `down` finds everything by name.
    let report = down(&lab.root, &lab.name, &|l| eprintln!("{l}")).unwrap();
    assert_eq!(report.processes, 2, "{report:?}");
    assert_eq!(report.namespaces.len(), 7, "{report:?}");
    for d in &mut daemons {
        let status = d.wait().unwrap();
        assert!(!status.success());
    }
    lab.assert_gone();
    assert!(down(&lab.root, &lab.name, &|_| {}).unwrap().is_empty());
}

#[test]
fn keepalived_runs_in_each_member_with_its_own_pid_files() {
    let lab = TestLab::new();
    let cfg = lab.config("keepalived");
    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
    build_network(&mut b);
    b.vrrp().unwrap();
    let state = b.commit().unwrap();
    let ka: Vec<_> = state.processes.iter().filter(|p| p.role == "keepalived").collect();
    assert_eq!(ka.len(), 2);
    assert_eq!((ka[0].namespace.clone(), ka[1].namespace.clone()), (lab.ns("a"), lab.ns("b")));
    assert!(ka.iter().all(|p| p.is_running()), "{ka:?}");
    assert_ne!(ka[0].log, ka[1].log);
    // The ports are not bridged here (no agent): each member is alone and
    // becomes master, so the first one must hold the VIP soon.
    let end = Instant::now() + Duration::from_secs(10);
    while !addrs(&lab.ns("a"), "eth0").contains(&"192.168.10.100/24".to_string()) {
        assert!(
            Instant::now() < end,
            "keepalived in a never took the VIP:\n{}",
            std::fs::read_to_string(&ka[0].log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let conf = std::fs::read_to_string(state.state_dir.join("keepalived-v-a.conf")).unwrap();
    assert!(conf.contains("priority 150") && conf.contains("virtual_router_id 1"), "{conf}");
    let pids: Vec<u32> = ka.iter().map(|p| p.pid).collect();
    let report = down(&lab.root, &lab.name, &|l| eprintln!("{l}")).unwrap();
    // Each keepalived is a parent and its VRRP child; SIGTERM was enough.
    assert!(report.processes >= 4, "{report:?}");
    assert_eq!(report.killed, 0, "{report:?}");
    assert!(pids.iter().all(|p| !pid_alive(*p)));
    lab.assert_gone();
}

#[test]
fn labs_built_at_once_take_distinct_host_links() {
    let labs: Vec<TestLab> = (0..3).map(|_| TestLab::new()).collect();
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = labs
            .iter()
            .map(|lab| {
                s.spawn(move || {
                    let cfg = lab.config("none");
                    let mut b = Builder::new(&cfg, lab.opts(Path::new("/bin/false"))).unwrap();
                    b.underlay().unwrap();
                    b.host_link().unwrap();
                    b.commit().unwrap().controller_url
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<&String> = urls.iter().collect();
    assert_eq!(distinct.len(), 3, "{urls:?}");
    for lab in &labs {
        down(&lab.root, &lab.name, &|_| {}).unwrap();
        lab.assert_gone();
    }
}
