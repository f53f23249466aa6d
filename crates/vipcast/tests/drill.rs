//! Failover drills end to end (root; real namespaces, real kernel VXLAN,
//! real keepalived at advert_int 0.1), through `vipcast lab` and `vipcast
//! drill`: one short drill per fault, each against the native-L2 baseline
//! built in the same run (the lab's VPC has assisted handover, the default:
//! link-down runs must say they were assisted), and the demo. Bounds are generous (the published
//! figures come from `vipcast demo`, see docs/BENCHMARKS.md): every outage
//! under 1 s, overlay/baseline p50 under 1.5, the stages present and in
//! order. Tests take turns (a lock): parallel labs on two cores would
//! measure each other.
//!
//! ```text
//!            net: controller, underlay bridge 10.255.0.0/24
//!     ┌───────────┬───────────┬───────────┬───────────┐
//!    hv1         hv2         hv3         gw1 ── inet1 (external)
//!    pay1        pay2        client
//!    (keepalived, VIP .100, advert_int 0.1)
//! ```

use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;
use vipcast_lab::unique_id;

static TURN: Mutex<()> = Mutex::new(());

fn vipcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipcast")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn namespaces() -> String {
    String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).into_owned()
}

/// Baseline namespaces (`vcb<id>-…`) that exist.
fn baseline_namespaces() -> Vec<String> {
    namespaces()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("vcb"))
        .map(String::from)
        .collect()
}

/// Whether this vipcast has a replicator.
fn has_replicator() -> bool {
    vipcast(&["help", "replicator"]).status.success()
}

/// A lab that is up; `lab down` on drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

struct Lab {
    name: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn up(bum: &str) -> Lab {
        Lab::up_with(bum, Family::V4, "kernel", "keepalived")
    }

    /// The same lab; with [`Family::V6`] its VPC is IPv6-only (VRRPv3 over
    /// IPv6, the VIP announced by unsolicited NA; the gateway routes IPv6 to
    /// the external client); `dataplane` is that of hv1..hv3 (the gateway
    /// stays on the kernel), `vrrp` who runs VRRP in the members.
    fn up_with(bum: &str, family: Family, dataplane: &str, vrrp: &str) -> Lab {
        let name = format!("dr{}", unique_id());
        let replicators =
            if bum == "replicator" { "[[replicator]]\nname = \"rep1\"\n[[replicator]]\nname = \"rep2\"\n" } else { "" };
        let file = format!(
            r#"name = "{name}"
[[vpc]]
name = "prod"
vni = 100
bum = "{bum}"
[[subnet]]
vpc = "prod"
name = "web"
cidr = "192.168.10.0/24"
gateway = "192.168.10.1"
[[chassis]]
name = "hv1"
dataplane = "{dataplane}"
[[chassis]]
name = "hv2"
dataplane = "{dataplane}"
[[chassis]]
name = "hv3"
dataplane = "{dataplane}"
[[chassis]]
name = "gw1"
role = "gateway"
{replicators}[[vm]]
name = "pay1"
chassis = "hv1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.11"
[[vm]]
name = "pay2"
chassis = "hv2"
vpc = "prod"
subnet = "web"
ip = "192.168.10.12"
[[vm]]
name = "client"
chassis = "hv3"
vpc = "prod"
subnet = "web"
ip = "192.168.10.50"
[[vip]]
name = "pay-vip"
vpc = "prod"
subnet = "web"
ip = "192.168.10.100"
members = ["pay1", "pay2"]
advert_int = 0.1
vrrp = "{vrrp}"
[[external]]
name = "inet1"
gateway = "gw1"
"#
        );
        let file = if family == Family::V6 {
            let mut f = file.replace("\"192.168.10.0/24\"", "\"fd00:10::/64\"");
            for (v4, v6) in [
                ("192.168.10.1", "fd00:10::1"),
                ("192.168.10.11", "fd00:10::11"),
                ("192.168.10.12", "fd00:10::12"),
                ("192.168.10.50", "fd00:10::50"),
                ("192.168.10.100", "fd00:10::100"),
            ] {
                f = f.replace(&format!("\"{v4}\""), &format!("\"{v6}\""));
            }
            f
        } else {
            file
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.toml");
        std::fs::write(&path, file).unwrap();
        let lab = Lab { name, _dir: dir };
        let o = vipcast(&["lab", "up", path.to_str().unwrap()]);
        assert!(o.status.success(), "lab up failed:\n{}", text(&o));
        lab
    }

    /// Replicator processes running in the lab.
    fn replicators(&self) -> usize {
        let o = vipcast(&["lab", "status", &self.name, "--json"]);
        let st: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        st["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["role"] == "replicator" && p["running"] == true)
            .count()
    }

    /// `vipcast drill ... --json` on pay-vip; the report.
    /// The repository's lab file `labs/<file>`, under a unique name.
    fn up_file(file: &str) -> Lab {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs").join(file);
        let file = std::fs::read_to_string(&path).unwrap();
        let name = format!("dr{}", unique_id());
        let first = file.lines().find(|l| l.starts_with("name = ")).expect("a lab name").to_string();
        let dir = tempfile::tempdir().unwrap();
        let lab_path = dir.path().join("lab.toml");
        std::fs::write(&lab_path, file.replacen(&first, &format!("name = \"{name}\""), 1)).unwrap();
        let lab = Lab { name, _dir: dir };
        let o = vipcast(&["lab", "up", lab_path.to_str().unwrap()]);
        assert!(o.status.success(), "lab up failed:\n{}", text(&o));
        lab
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    fn drill(&self, fault: &str, extra: &[&str]) -> Value {
        self.drill_vip("pay-vip", fault, extra)
    }

    /// `vipcast drill ... --json` on `vip`; the report.
    fn drill_vip(&self, vip: &str, fault: &str, extra: &[&str]) -> Value {
        let mut args = vec!["drill", "--lab", &self.name, "--vip", vip, "--fault", fault, "--runs", "2", "--json"];
        args.extend_from_slice(extra);
        let before = baseline_namespaces();
        let o = vipcast(&args);
        assert!(o.status.success(), "drill {fault} failed:\n{}", text(&o));
        let left: Vec<String> = baseline_namespaces().into_iter().filter(|n| !before.contains(n)).collect();
        assert!(left.is_empty(), "baseline namespaces left behind: {left:?}");
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = vipcast(&["lab", "down", &self.name]);
        if !std::thread::panicking() {
            assert!(o.status.success(), "{}", text(&o));
            assert!(!namespaces().contains(&format!("{}-", self.name)), "namespaces left behind");
        }
    }
}

/// The bounds every drill that moves the VIP from pay1 to pay2 must meet.
fn check(report: &Value, fault: &str, with_baseline: bool) {
    check_move(report, fault, with_baseline, "pay1", "pay2");
}

/// The bounds every drill that moves the VIP must meet.
fn check_move(report: &Value, fault: &str, with_baseline: bool, old: &str, new: &str) {
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(variants.len(), if with_baseline { 2 } else { 1 }, "{report}");
    for v in variants {
        let name = v["variant"].as_str().unwrap();
        for r in v["runs"].as_array().unwrap() {
            let outage = r["outage_ms"].as_f64().unwrap();
            eprintln!("{fault} {name} run {}: outage {outage:.0} ms, stages {}", r["run"], r["stages"]);
            assert!(outage < 1000.0, "{fault} {name}: outage {outage} ms\n{r}");
            assert!(!r["timed_out"].as_bool().unwrap(), "{r}");
            assert_eq!(r["old_master"], old, "{r}");
            assert_eq!(r["new_master"], new, "{r}");
            assert!(r["lost"].as_u64().unwrap() > 20, "a failover at advert_int 0.1 loses probes: {r}");
            let s = &r["stages"];
            let first_new = s["first_new_reply_ms"].as_f64().unwrap();
            assert!(first_new > 0.0 && first_new < 1000.0, "{r}");
            if name.starts_with("overlay") {
                let sniffed = s["garp_sniffed_ms"].as_f64().expect("GARP sniffed");
                let accepted = s["claim_accepted_ms"].as_f64().expect("claim accepted");
                let last = s["last_agent_ms"].as_f64().expect("last agent");
                // accepted_at has ms resolution.
                assert!(
                    0.0 < sniffed && sniffed <= accepted + 1.0 && accepted <= last + 1.0,
                    "stages out of order: {s}"
                );
                assert!(r["generation"].as_u64().unwrap() >= 2, "{r}");
            }
        }
    }
    if with_baseline {
        let ratio = report["ratio_p50"].as_f64().unwrap();
        assert!(ratio < 1.5, "{fault}: overlay/baseline p50 {ratio}\n{report}");
    }
}

#[test]
fn link_down_drill_inside_and_through_the_gateway() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("headend");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("t.svg");
    let r = lab.drill("link-down", &["--svg", svg.to_str().unwrap()]);
    check(&r, "link-down", true);
    assert_eq!(r["from"], "client");
    // The lab's VPC has assisted handover (the default): the master's chassis
    // speaks for it when its port goes down, well before VRRP's own timers.
    let overlay = &r["variants"][0];
    assert_eq!(overlay["variant"], "overlay+assist", "{overlay}");
    for run in overlay["runs"].as_array().unwrap() {
        assert_eq!(run["assisted"], true, "{run}");
        assert!(run["stages"]["assisted_ms"].as_f64().unwrap() < run["stages"]["garp_sniffed_ms"].as_f64().unwrap());
    }
    let s = std::fs::read_to_string(&svg).unwrap();
    assert!(s.starts_with("<svg") && s.contains("GARP sniffed") && s.contains("baseline"), "{s}");
    // From outside, through the gateway: its agent re-programs too.
    let r = lab.drill("link-down", &["--from", "inet1", "--no-baseline"]);
    check(&r, "link-down", false);
    assert_eq!(r["from"], "inet1");
    for run in r["variants"][0]["runs"].as_array().unwrap() {
        assert_eq!(run["agents_reprogrammed"], "4/4", "{run}");
    }
}

/// IPv6 end to end on the kernel data plane: an IPv6-only VPC, keepalived
/// VRRPv3 over IPv6, the new master's unsolicited NA sniffed and claimed,
/// the NA re-announced; link-down assisted like IPv4, from a VM and through
/// the gateway from outside; a frozen master.
#[test]
fn ipv6_drills_on_the_kernel_data_plane() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_with("headend", Family::V6, "kernel", "keepalived");
    ipv6_drills(&lab, true);
}

/// The same on Open vSwitch chassis, with `vipcast vrrpd` in the members:
/// every unsolicited NA for the VIP that reaches the client VM, the
/// master's (from its link-local address) and the agents' re-announcements
/// (from the VIP), carries the Router flag, as tshark decodes them.
#[test]
fn ipv6_drills_on_open_vswitch_with_router_flags() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_with("headend", Family::V6, "ovs", "vipcast");
    // The client's switch answers its neighbour solicitations: the NA comes
    // back through the responder's second table, and the client takes it.
    let client = lab.ns("client");
    let o = Command::new("ip").args(["netns", "exec", &client, "ip", "-6", "neigh", "flush", "all"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("ip")
        .args(["netns", "exec", &client, "ping", "-c", "1", "-W", "2", "fd00:10::12"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.ns("hv3"), "ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int", "table=3"])
        .env("OVS_RUNDIR", format!("/run/vipcast/labs/{}/ovs-hv3", lab.name))
        .output()
        .unwrap();
    let flows = text(&o);
    let answered: u64 =
        flows.split("n_packets=").skip(1).filter_map(|t| t.split(',').next()?.parse::<u64>().ok()).sum();
    assert!(answered >= 1, "no NA from the responder:\n{flows}");
    let o = Command::new("ip")
        .args(["netns", "exec", &client, "ip", "-6", "neigh", "show", "fd00:10::12"])
        .output()
        .unwrap();
    assert!(text(&o).contains("REACHABLE"), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("na.pcap");
    let capture = Capture::start(&format!("{}-client", lab.name), &pcap);
    // vipcast vrrpd has no native-L2 baseline (it is keepalived's).
    ipv6_drills(&lab, false);
    drop(capture);
    let o = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", "icmpv6.type == 136", "-T", "fields"])
        .args(["-e", "ipv6.src", "-e", "icmpv6.nd.na.target_address", "-e", "icmpv6.nd.na.flag.r"])
        .args(["-e", "icmpv6.nd.na.flag.s", "-e", "icmpv6.nd.na.flag.o"])
        .output()
        .expect("tshark");
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<Vec<String>> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .filter(|f: &Vec<String>| f.len() == 5 && f[1] == "fd00:10::100")
        .collect();
    // Solicited ones are the master's kernel answering a solicitation (a VM
    // does not forward: R clear); the announcements are unsolicited.
    let lines: Vec<Vec<String>> = lines.into_iter().filter(|f| f[3] == "0").collect();
    let master = lines.iter().filter(|f| f[0].starts_with("fe80:")).count();
    let agent = lines.iter().filter(|f| f[0] == "fd00:10::100").count();
    assert!(master >= 3 && agent >= 3, "NAs for the VIP: {master} from masters, {agent} re-announced: {lines:?}");
    for f in &lines {
        assert_eq!((f[2].as_str(), f[4].as_str()), ("1", "1"), "R and O flags of {f:?}");
    }
}

/// link-down from the client VM (against the baseline when there is one)
/// and from the external client through the gateway, then vm-freeze.
fn ipv6_drills(lab: &Lab, baseline: bool) {
    let no_baseline: &[&str] = if baseline { &[] } else { &["--no-baseline"] };
    let r = lab.drill("link-down", no_baseline);
    check(&r, "link-down", baseline);
    assert_eq!(r["vip_ip"], "fd00:10::100", "{r}");
    for run in r["variants"][0]["runs"].as_array().unwrap() {
        assert_eq!(run["assisted"], true, "{run}");
    }
    let r = lab.drill("link-down", &["--from", "inet1", "--no-baseline"]);
    check(&r, "link-down", false);
    assert_eq!(r["from"], "inet1");
    let r = lab.drill("vm-freeze", no_baseline);
    check(&r, "vm-freeze", baseline);
}

/// tcpdump capturing neighbour advertisements in a namespace until dropped.
struct Capture(std::process::Child);

impl Capture {
    fn start(ns: &str, file: &std::path::Path) -> Capture {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", "eth0", "-U", "-w", file.to_str().unwrap()])
            .arg("icmp6 and ip6[40] == 136")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump");
        // tcpdump opens its socket before it writes the file header.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Capture(child)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SIGTERM: tcpdump flushes what it holds (-U writes each packet anyway).
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Bare-metal hosts (labs/metal.toml): a host and a VM share a VIP. Host to
/// VM and VM to host, the master's cable pulled, assisted by the chassis
/// it is cabled to (the gateway for the host), from a VM on a third chassis
/// and from outside; the dual-stack VIP over IPv6 the same way.
#[test]
fn physical_host_and_vm_share_a_vip() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_file("metal.toml");
    for (vip, old, new) in
        [("web-vip", "metal1", "pay1"), ("app-vip", "pay1", "metal1"), ("web-vip6", "metal1", "pay1")]
    {
        let r = lab.drill_vip(vip, "link-down", &[]);
        check_move(&r, "link-down", true, old, new);
        assert_eq!(r["from"], "client");
        for run in r["variants"][0]["runs"].as_array().unwrap() {
            assert_eq!(run["assisted"], true, "{vip}: {run}");
        }
        let r = lab.drill_vip(vip, "link-down", &["--from", "inet1", "--no-baseline"]);
        check_move(&r, "link-down", false, old, new);
        assert_eq!(r["from"], "inet1");
    }
}

/// metal2 is served by gw1, cabled to gw2 as well: gw1 cut from the
/// underlay, gw2 takes the attachment within the chassis-down bound, and
/// the two never bridge it at once (gw1 lets go as its link goes; back,
/// it does not take it again).
#[test]
fn a_standby_gateway_takes_a_physical_attachment_over() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_file("metal.toml");
    let bridged = |gw: &str| {
        let o = Command::new("ip").args(["-n", &lab.ns(gw), "-j", "link", "show", "ph1"]).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["master"] == "vc-br-100"
    };
    assert!(bridged("gw1") && !bridged("gw2"));
    // A ping every 2 ms from the client VM, reply times kept.
    let ping = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "ping", "-D", "-n", "-i", "0.002", "-W", "1", "192.168.10.22"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let cut = |up: &str| {
        let o = Command::new("ip").args(["-n", &lab.ns("net"), "link", "set", "gw1", up]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    cut("down");
    let mut both = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        both += usize::from(bridged("gw1") && bridged("gw2"));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!bridged("gw1") && bridged("gw2"), "gw2 serves metal2");
    cut("up");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < until {
        both += usize::from(bridged("gw1") && bridged("gw2"));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(both, 0, "both gateways bridged metal2");
    assert!(!bridged("gw1") && bridged("gw2"), "gw1 back: gw2 keeps metal2");
    let _ = Command::new("kill").args(["-INT", &ping.id().to_string()]).status();
    let out = ping.wait_with_output().unwrap();
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("icmp_seq"))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    assert!(times.len() > 200, "{} replies", times.len());
    let gap = times.windows(2).map(|w| (w[1] - w[0]) * 1000.0).fold(0.0, f64::max);
    eprintln!("standby takeover: longest gap between replies {gap:.0} ms");
    assert!(gap < 1000.0, "metal2 unreachable for {gap:.0} ms");
    // Reachable after all that, from the VM and from outside.
    for (from, to) in [("client", "192.168.10.22"), ("inet1", "192.168.10.22"), ("inet1", "fd00:10::21")] {
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.ns(from), "ping", "-c", "1", "-W", "2", to])
            .output()
            .unwrap();
        assert!(o.status.success(), "{from} -> {to}: {}", text(&o));
    }
}

/// labs/gre.toml: a GRE VPC (Open vSwitch chassis only) reached from
/// outside through a gateway on Open vSwitch, its VIP failing over under
/// link-down (assisted) against the baseline; the same gateway routes a
/// VXLAN VPC of a kernel chassis, both ways, and IPv6.
#[test]
fn a_gre_vpc_is_reached_through_an_open_vswitch_gateway() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up_file("gre.toml");
    for (from, to) in [
        ("inet1", "192.168.30.11"),
        ("inet1", "fd00:30:1::12"),
        ("inet1", "192.168.10.21"),
        ("pay2", "172.30.0.2"),
        ("w1", "172.30.0.2"),
    ] {
        let o = Command::new("ip")
            .args(["netns", "exec", &lab.ns(from), "ping", "-c", "1", "-W", "2", to])
            .output()
            .unwrap();
        assert!(o.status.success(), "{from} -> {to}: {}", text(&o));
    }
    let r = lab.drill("link-down", &["--from", "inet1"]);
    check(&r, "link-down", true);
    assert_eq!(r["from"], "inet1");
    for run in r["variants"][0]["runs"].as_array().unwrap() {
        assert_eq!(run["assisted"], true, "{run}");
    }
}

#[test]
fn vm_freeze_drill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("headend");
    check(&lab.drill("vm-freeze", &[]), "vm-freeze", true);
}

#[test]
fn chassis_down_drill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("headend");
    let r = lab.drill("chassis-down", &[]);
    check(&r, "chassis-down", true);
    // The cut chassis' agent cannot hear the controller during the run.
    for run in r["variants"][0]["runs"].as_array().unwrap() {
        assert_eq!(run["agents_reprogrammed"], "3/4", "{run}");
    }
}

/// A failover while the controller is down: the agents decide it among
/// themselves (provisional owners, signed notices), every chassis follows
/// during the outage, and the restarted controller takes the same claim,
/// with the announcement's time, as the next generation.
#[test]
fn controller_down_drill() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("headend");
    let r = lab.drill("controller-down", &[]);
    let variants = r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2, "{r}");
    assert_eq!(variants[0]["variant"], "overlay+assist", "{r}");
    for run in variants[0]["runs"].as_array().unwrap() {
        let outage = run["outage_ms"].as_f64().unwrap();
        let s = &run["stages"];
        eprintln!("controller-down run {}: outage {outage:.0} ms, stages {s}", run["run"]);
        assert!(outage < 1000.0 && !run["timed_out"].as_bool().unwrap(), "{run}");
        assert_eq!((run["old_master"].as_str(), run["new_master"].as_str()), (Some("pay1"), Some("pay2")), "{run}");
        assert_eq!(run["assisted"], true, "{run}");
        // Every chassis re-pointed the VIP without the controller...
        assert_eq!(run["agents_reprogrammed"], "4/4", "{run}");
        let (sniffed, last) = (s["garp_sniffed_ms"].as_f64().unwrap(), s["last_agent_ms"].as_f64().unwrap());
        assert!(0.0 < sniffed && sniffed <= last && last < 1000.0, "{s}");
        // ...and the controller, back, took that claim: observed at the
        // announcement, accepted after the restart, one generation on.
        let (observed, accepted) = (s["claim_observed_ms"].as_f64().unwrap(), s["claim_accepted_ms"].as_f64().unwrap());
        assert!((observed - sniffed).abs() <= 2.0 && accepted > last, "{s}");
        assert_eq!(run["extra_owner_changes"], 0, "{run}");
        assert!(run["generation"].as_u64().unwrap() >= 2, "{run}");
    }
    let ratio = r["ratio_p50"].as_f64().unwrap();
    assert!(ratio < 1.0, "controller-down (assisted) against link-down on a plain bridge: p50 ratio {ratio}\n{r}");
}

/// The chaos drill, briefly: failovers back to back while the controller,
/// the replicators and the agents of chassis without a member are killed
/// and restarted at random; no invariant may break.
#[test]
fn chaos_drill_breaks_no_invariant() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up(if has_replicator() { "replicator" } else { "headend" });
    let o = vipcast(&["drill", "--lab", &lab.name, "--vip", "pay-vip", "--chaos", "40", "--seed", "7", "--json"]);
    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["violations"], serde_json::json!([]), "{r:#}");
    assert!(r["failovers"].as_u64().unwrap() >= 3, "{r:#}");
    assert_eq!(r["checks"], r["failovers"], "{r:#}");
    let killed: u64 = r["killed"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    assert!(killed >= 3, "{r:#}");
}

#[test]
fn replicator_down_drill_or_a_clear_refusal() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = if has_replicator() { Some(Lab::up("replicator")) } else { None };
    if lab.as_ref().is_some_and(|l| l.replicators() == 0) {
        lab = None;
    }
    let Some(lab) = lab else {
        // No replicator: the drill must refuse, saying why.
        let lab = Lab::up("headend");
        let o = vipcast(&["drill", "--lab", &lab.name, "--vip", "pay-vip", "--fault", "replicator-down"]);
        assert!(!o.status.success());
        let t = text(&o);
        assert!(t.contains("runs no replicator"), "{t}");
        eprintln!("replicator-down SKIPPED: the lab runs no replicator (refused with: {})", t.trim());
        return;
    };
    let r = lab.drill("replicator-down", &[]);
    let v = &r["variants"][0];
    assert!(v["variant"].as_str().unwrap().starts_with("overlay"), "{v}");
    assert_eq!(r["variants"].as_array().unwrap().len(), 1, "replicator-down has no baseline");
    for run in v["runs"].as_array().unwrap() {
        let outage = run["outage_ms"].as_f64().unwrap();
        eprintln!(
            "replicator-down run {}: outage {outage:.0} ms, VIP moved to {} ({})",
            run["run"], run["new_master"], run["injected"]
        );
        assert!(outage < 1000.0, "{run}");
        assert!(!run["timed_out"].as_bool().unwrap(), "{run}");
    }
}

#[test]
fn demo_end_to_end() {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("demo.svg");
    let json = dir.path().join("demo.json");
    let md = dir.path().join("B.md");
    std::fs::write(&md, "# Benchmarks\n\nprose stays\n").unwrap();
    let started = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .current_dir(dir.path())
        .args(["demo", "--runs", "1", "--svg", svg.to_str().unwrap(), "--json", json.to_str().unwrap()])
        .args(["--markdown", md.to_str().unwrap()])
        .output()
        .unwrap();
    let out = text(&o);
    eprintln!("{out}");
    assert!(o.status.success(), "{out}");
    assert!(started.elapsed().as_secs() < 240, "the demo took {:?}", started.elapsed());
    assert!(out.contains("overlay / baseline outage p50"), "{out}");
    assert!(out.contains("The payment case"), "{out}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let faults: Vec<&str> = r["drills"].as_array().unwrap().iter().map(|d| d["fault"].as_str().unwrap()).collect();
    for f in ["link-down", "vm-freeze", "chassis-down"] {
        assert!(faults.contains(&f), "{faults:?}");
    }
    let variants: Vec<&str> =
        r["drills"][0]["variants"].as_array().unwrap().iter().map(|v| v["variant"].as_str().unwrap()).collect();
    assert_eq!(variants, ["overlay", "overlay+assist", "baseline"]);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let page = std::fs::read_to_string(&md).unwrap();
    assert!(
        page.starts_with("# Benchmarks\n\nprose stays\n") && page.contains("| link-down | inet1 | overlay+assist |"),
        "{page}"
    );
    // The IPv6 row, against an IPv6 baseline.
    assert!(page.contains("| link-down | client (IPv6) | overlay+assist |"), "{page}");
    assert!(page.contains("| link-down | client (IPv6) (bridge) | baseline |"), "{page}");
    // The payment case: link-down, assisted, nothing paid lost.
    let pay = &r["payments"]["runs"][0];
    assert_eq!(pay["variant"], "overlay+assist", "{pay:#}");
    assert_eq!(pay["verdict"]["lost"], serde_json::json!([]), "{pay:#}");
    assert!(pay["verdict"]["paid"].as_u64().unwrap() > 0, "{pay:#}");
    assert!(page.contains("The payment case") && page.contains("| http | link-down | overlay+assist |"), "{page}");
    let lab = r["drills"][0]["lab"].as_str().unwrap();
    assert!(lab.starts_with("demo"), "{lab}");
    assert!(!namespaces().contains(&format!("{lab}-")), "the demo left namespaces behind");
}
