//! The overlay end to end (root; real namespaces, real kernel VXLAN, real
//! keepalived), through `vipcast lab`:
//!
//! ```text
//!            net: controller, underlay bridge 10.255.0.0/24
//!     ┌───────────┬───────────┬───────────┬───────────┐
//!    hv1         hv2         hv3         gw1 ── ext0 ── inet1 (external)
//!    pay1        pay2        client
//!    (keepalived, VIP .100)  stage1 (other VPC, pay1's address)
//! ```
//! VMs reach each other in every BUM / ARP-suppression mode, overlapping VPCs
//! stay isolated, a keepalived failover (master's port down) is answered by
//! the backup within 1 s from inside the VPC and from outside through the
//! gateway with the controller recording the new owner, and an agent restart
//! loses no probe of an established flow. With the master's port down the
//! agent speaks for the dead master (priority-0 advert): the outage falls
//! below VRRP's own Master_Down_Interval (0.36 s here); a frozen master gets
//! no such help. Every lab goes down on drop.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vipcast_lab::unique_id;

fn vipcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipcast")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

/// The data plane of hv1, hv2 and hv3, and the VPCs' encapsulation.
#[derive(Debug, Clone, Copy)]
struct Plane {
    dataplanes: [&'static str; 3],
    encap: &'static str,
}

impl Plane {
    const KERNEL: Plane = Plane { dataplanes: ["kernel"; 3], encap: "vxlan" };
}

/// A lab that is up; `lab down` on drop.
struct Lab {
    name: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// A lab of the shape in the module doc, with the given VPC settings.
    fn up(bum: &str, arp_suppression: bool, unicast: bool) -> Lab {
        Lab::up_with(bum, arp_suppression, unicast, true)
    }

    /// The same, choosing whether the VPC has platform-assisted handover.
    fn up_with(bum: &str, arp_suppression: bool, unicast: bool, assist: bool) -> Lab {
        Lab::up_vrrp(bum, arp_suppression, unicast, assist, "advert_int = 0.1")
    }

    /// The same, with the VIP's VRRP settings given as lab keys.
    fn up_vrrp(bum: &str, arp_suppression: bool, unicast: bool, assist: bool, vrrp: &str) -> Lab {
        Lab::up_full(bum, arp_suppression, unicast, assist, vrrp, Plane::KERNEL)
    }

    /// The same, with the data plane of hv1..hv3 and the VPCs' encapsulation.
    fn up_full(bum: &str, arp_suppression: bool, unicast: bool, assist: bool, vrrp: &str, plane: Plane) -> Lab {
        let name = format!("ov{}", unique_id());
        let dp = |i: usize| match plane.dataplanes[i] {
            "kernel" => String::new(),
            d => format!("dataplane = \"{d}\"\n"),
        };
        let (dp1, dp2, dp3) = (dp(0), dp(1), dp(2));
        let encap = if plane.encap == "vxlan" { String::new() } else { format!("encap = \"{}\"\n", plane.encap) };
        // Replicator mode gets two replicators.
        let replicators =
            if bum == "replicator" { "[[replicator]]\nname = \"rep1\"\n[[replicator]]\nname = \"rep2\"\n" } else { "" };
        let file = format!(
            r#"name = "{name}"
[controller]
store = "file"
[[vpc]]
name = "prod"
vni = 100
bum = "{bum}"
arp_suppression = {arp_suppression}
assist = {assist}
{encap}[[vpc]]
name = "stage"
vni = 200
bum = "{bum}"
arp_suppression = {arp_suppression}
{encap}[[subnet]]
vpc = "prod"
name = "web"
cidr = "192.168.10.0/24"
gateway = "192.168.10.1"
[[subnet]]
vpc = "stage"
name = "web"
cidr = "192.168.10.0/24"
[[chassis]]
name = "hv1"
{dp1}[[chassis]]
name = "hv2"
{dp2}[[chassis]]
name = "hv3"
{dp3}[[chassis]]
name = "gw1"
role = "gateway"
[[vm]]
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
[[vm]]
name = "stage1"
chassis = "hv3"
vpc = "stage"
subnet = "web"
ip = "192.168.10.11"
[[vip]]
name = "pay-vip"
vpc = "prod"
subnet = "web"
ip = "192.168.10.100"
members = ["pay1", "pay2"]
vrrp = "keepalived"
{vrrp}
unicast = {unicast}
[[external]]
name = "inet1"
gateway = "gw1"
{replicators}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.toml");
        std::fs::write(&path, file).unwrap();
        let lab = Lab { name, _dir: dir };
        let o = vipcast(&["lab", "up", path.to_str().unwrap()]);
        assert!(o.status.success(), "lab up failed:\n{}", text(&o));
        lab
    }

    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["lab", "exec", &self.name, node, "--"];
        args.extend_from_slice(cmd);
        vipcast(&args)
    }

    fn ping_ok(&self, from: &str, to: &str) -> bool {
        self.exec(from, &["ping", "-c", "1", "-W", "1", to]).status.success()
    }

    /// Waits until `from` reaches `to` (keepalived needs ~0.4 s to elect).
    fn wait_reachable(&self, from: &str, to: &str) {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if self.ping_ok(from, to) {
                return;
            }
        }
        panic!("{from} never reached {to} in lab {}", self.name);
    }

    fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.ctl(args);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `vipcast ctl --json ARGS` as the lab's admin.
    fn ctl(&self, args: &[&str]) -> Output {
        let status = vipcast(&["lab", "status", &self.name, "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let url = st["controller_url"].as_str().unwrap().to_string();
        let mut full = vec!["ctl", "--json", "--controller", &url];
        // The lab's admin identity, when its control plane runs over mutual TLS.
        let tls = &st["tls"];
        for (flag, key) in [("--ca", "ca"), ("--cert", "cert"), ("--key", "key")] {
            if let Some(path) = tls[key].as_str() {
                full.extend([flag, path]);
            }
        }
        full.extend_from_slice(args);
        vipcast(&full)
    }

    /// Lines of the lab's keepalived logs that complain about what they
    /// received (checksum, TTL, address list, authentication, version...).
    fn keepalived_complaints(&self) -> Vec<String> {
        let dir = format!("/run/vipcast/labs/{}", self.name);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if !(name.starts_with("keepalived-") && name.ends_with(".log")) {
                continue;
            }
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            for line in text.lines() {
                let l = line.to_lowercase();
                if ["invalid", "bad ", "checksum", "mismatch", "wrong", "ttl", "not present", "unknown"]
                    .iter()
                    .any(|w| l.contains(w))
                {
                    out.push(format!("{name}: {line}"));
                }
            }
        }
        out
    }

    /// Kills `node`'s agent (SIGKILL); returns its command line.
    fn kill_agent(&self, node: &str) -> Vec<String> {
        let agent = self.process("agent", node);
        let pid = agent["pid"].as_i64().unwrap().to_string();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
        agent["command"].as_str().unwrap().split_whitespace().map(String::from).collect()
    }

    /// Starts an agent again in `node` with `cmd` (killed on drop).
    fn start_agent(&self, node: &str, cmd: &[String]) -> Prober {
        let mut args = vec!["lab", "exec", &self.name, node, "--"];
        args.extend(cmd.iter().map(String::as_str));
        let child =
            Command::new(env!("CARGO_BIN_EXE_vipcast")).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        Prober { child: Some(child.unwrap()) }
    }

    fn process(&self, role: &str, node: &str) -> serde_json::Value {
        let status = vipcast(&["lab", "status", &self.name, "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        st["processes"].as_array().unwrap().iter().find(|p| p["role"] == role && p["node"] == node).unwrap().clone()
    }

    /// Starts a prober: ICMP echo to `to` every 10 ms (100/s) for `secs`.
    fn probe(&self, from: &str, to: &str, secs: u32) -> Prober {
        let child = Command::new(env!("CARGO_BIN_EXE_vipcast"))
            .args(["lab", "exec", &self.name, from, "--", "ping", "-D", "-n", "-i", "0.01", "-W", "1", "-w"])
            .arg(secs.to_string())
            .arg(to)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Prober { child: Some(child) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = vipcast(&["lab", "down", &self.name]);
        if !std::thread::panicking() {
            assert!(o.status.success(), "{}", text(&o));
            let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
            let prefix = format!("{}-", self.name);
            assert!(!String::from_utf8_lossy(&left.stdout).contains(&prefix), "namespaces left behind");
        }
    }
}

/// A running child: a `ping -D` ([`Prober::finish`] gives the replies' timing)
/// or a restarted agent; killed on drop.
struct Prober {
    child: Option<Child>,
}

/// What a prober saw.
#[derive(Debug)]
struct Probed {
    sent: usize,
    replies: usize,
    /// The longest time without a reply, seconds.
    longest_gap: f64,
}

impl Prober {
    fn finish(mut self) -> Probed {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let mut times = Vec::new();
        let mut sent = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(n) = line.split(" packets transmitted").next().filter(|_| line.contains("packets transmitted"))
            {
                sent = n.trim().parse().unwrap_or(0);
            }
            if line.contains("bytes from")
                && let Some(ts) = line.strip_prefix('[').and_then(|l| l.split(']').next())
            {
                times.push(ts.parse::<f64>().unwrap());
            }
        }
        let longest_gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        Probed { sent, replies: times.len(), longest_gap }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn reachability(bum: &str, arp: bool) {
    let lab = Lab::up(bum, arp, false);
    for (from, to) in
        [("client", "192.168.10.11"), ("client", "192.168.10.12"), ("pay1", "192.168.10.12"), ("pay2", "192.168.10.50")]
    {
        lab.wait_reachable(from, to);
    }
    lab.wait_reachable("client", "192.168.10.100");
    lab.wait_reachable("inet1", "192.168.10.100");
}

#[test]
fn vms_reach_each_other_headend_with_arp_suppression() {
    reachability("headend", true);
}

#[test]
fn vms_reach_each_other_headend_without_arp_suppression() {
    reachability("headend", false);
}

#[test]
fn vms_reach_each_other_via_replicators_with_arp_suppression() {
    reachability("replicator", true);
}

#[test]
fn vms_reach_each_other_via_replicators_without_arp_suppression() {
    reachability("replicator", false);
}

#[test]
fn keepalived_failover_via_replicators() {
    failover("replicator", true, false);
}

#[test]
fn keepalived_failover_via_replicators_plain_arp() {
    failover("replicator", false, false);
}

#[test]
fn losing_a_replicator_keeps_broadcast_working() {
    // Without ARP suppression every ARP request is broadcast through the
    // replicator of the VNI; VRRP multicast too.
    let lab = Lab::up("replicator", false, false);
    lab.wait_reachable("client", "192.168.10.12");
    lab.wait_reachable("client", "192.168.10.100");
    let owner = lab.ctl_json(&["vip", "show", "pay-vip"])["owner"]["generation"].clone();
    // Kill the replicator the VPC uses (both, in turn, would be the same test:
    // kill the one the agents chose).
    let used = ["rep1", "rep2"]
        .into_iter()
        .find(|r| {
            let log = plain(
                &std::fs::read_to_string(format!("/run/vipcast/labs/{}/agent-hv3.log", lab.name)).unwrap_or_default(),
            );
            log.lines()
                .rev()
                .find(|l| l.contains("vni=100") && l.contains("BUM via replicator"))
                .is_some_and(|l| l.contains(r))
        })
        .expect("no agent reported the replicator it uses");
    let pid = lab.process("replicator", used)["pid"].as_i64().unwrap().to_string();
    let killed = Instant::now();
    assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    // A fresh ARP resolution (broadcast) must succeed again within 1 s.
    loop {
        let _ = lab.exec("client", &["ip", "neigh", "flush", "dev", "eth0"]);
        if lab.exec("client", &["ping", "-c", "1", "-W", "0.2", "192.168.10.12"]).status.success() {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(1), "broadcast did not recover within 1 s");
    }
    eprintln!("broadcast through the other replicator after {:.3} s", killed.elapsed().as_secs_f64());
    // VRRP multicast kept flowing: the backup never took over.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lab.ctl_json(&["vip", "show", "pay-vip"])["owner"]["generation"], owner, "the VIP moved: split brain");
}

/// `vipcast ctl vip check`: every chassis' data plane (read back from its
/// kernel through its agent) and every replicator's table against the
/// controller's record; a neighbour entry changed behind an agent's back is
/// reported until the agent's periodic read repairs it.
#[test]
fn vip_check_compares_every_data_plane_with_the_record() {
    let lab = Lab::up("replicator", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let c = lab.ctl_json(&["vip", "check", "pay-vip"]);
    assert_eq!(c["consistent"], true, "{c:#}");
    let owner_mac = c["owner"]["mac"].clone();
    let chassis: Vec<&str> = c["chassis"].as_array().unwrap().iter().map(|x| x["chassis"].as_str().unwrap()).collect();
    assert_eq!(chassis, ["gw1", "hv1", "hv2", "hv3"], "{c:#}");
    for x in c["chassis"].as_array().unwrap() {
        assert_eq!(
            (&x["verdict"], &x["mac"], x["read_back"].as_bool()),
            (&"agrees".into(), &owner_mac, Some(true)),
            "{x}"
        );
    }
    assert_eq!(c["chassis"][0]["routed_mac"], owner_mac, "the gateway routes to the owner: {c:#}");
    let reps = c["replicators"].as_array().unwrap();
    assert_eq!(reps.len(), 2, "{c:#}");
    assert!(reps.iter().all(|r| r["verdict"] == "agrees"), "{c:#}");
    // hv3's ARP answer for the VIP changed behind its agent's back.
    let o = lab.exec(
        "hv3",
        &[
            "ip",
            "neigh",
            "replace",
            "192.168.10.100",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "vc-vx-100",
            "nud",
            "permanent",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = lab.ctl(&["vip", "check", "pay-vip"]);
    assert!(!o.status.success(), "a check that differs exits non-zero");
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["consistent"], false);
    let hv3 = c["chassis"].as_array().unwrap().iter().find(|x| x["chassis"] == "hv3").unwrap();
    assert_eq!((&hv3["verdict"], &hv3["mac"]), (&"differs".into(), &"02:00:00:00:00:99".into()), "{hv3}");
    // The agent's periodic read (every 5 s) repairs it.
    let start = Instant::now();
    while lab.ctl(&["vip", "check", "pay-vip"]).status.code() != Some(0) {
        assert!(start.elapsed() < Duration::from_secs(12), "not repaired");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn overlapping_vpcs_stay_isolated() {
    isolation(&Lab::up("headend", true, false));
}

fn isolation(lab: &Lab) {
    lab.wait_reachable("client", "192.168.10.11");
    // client reached prod's .11 (pay1), never stage1 which has the same address.
    let neigh = text(&lab.exec("client", &["ip", "neigh", "show", "192.168.10.11"]));
    let pay1_mac = text(&lab.exec("pay1", &["cat", "/sys/class/net/eth0/address"]));
    assert!(neigh.contains(pay1_mac.trim()), "client resolved .11 to {neigh}, pay1 is {pay1_mac}");
    // While prod pings .11, nothing of it reaches stage1's wire.
    let capture = Command::new(env!("CARGO_BIN_EXE_vipcast"))
        .args([
            "lab", "exec", &lab.name, "stage1", "--", "timeout", "3", "tcpdump", "-i", "eth0", "-nn", "-c", "1", "icmp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        assert!(lab.ping_ok("client", "192.168.10.11"));
    }
    let status = capture.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(124), "stage1 saw an ICMP packet from the other VPC");
    // stage1 cannot reach prod at all.
    assert!(!lab.ping_ok("stage1", "192.168.10.12"));
}

fn failover(bum: &str, arp: bool, unicast: bool) -> (Probed, Probed) {
    failover_with(bum, arp, unicast, true)
}

fn failover_with(bum: &str, arp: bool, unicast: bool, assist: bool) -> (Probed, Probed) {
    let lab = Lab::up_with(bum, arp, unicast, assist);
    lab.wait_reachable("client", "192.168.10.100");
    lab.wait_reachable("inet1", "192.168.10.100");
    let before = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!(before["owner"]["port"], "pay1", "{before}");
    let inside = lab.probe("client", "192.168.10.100", 5);
    let outside = lab.probe("inet1", "192.168.10.100", 5);
    std::thread::sleep(Duration::from_millis(1500));
    // The master "dies": its port goes down.
    let o = lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let (inside, outside) = (inside.finish(), outside.finish());
    eprintln!("{bum} arp_suppression={arp} unicast={unicast} assist={assist}: inside {inside:?}, outside {outside:?}");
    assert!(inside.sent > 100 && inside.replies > 50, "the prober did not run: {inside:?}");
    assert!(inside.longest_gap < 1.0, "outage inside the VPC {:.3} s", inside.longest_gap);
    assert!(outside.longest_gap < 1.0, "outage through the gateway {:.3} s", outside.longest_gap);
    let after = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!(
        (after["owner"]["port"].as_str(), after["owner"]["chassis"].as_str()),
        (Some("pay2"), Some("hv2")),
        "{after}"
    );
    // One master only: the old one no longer holds the VIP.
    let old = text(&lab.exec("pay1", &["ip", "-4", "addr", "show"]));
    assert!(!old.contains("192.168.10.100"), "pay1 still holds the VIP:\n{old}");
    assert!(text(&lab.exec("pay2", &["ip", "-4", "addr", "show"])).contains("192.168.10.100"));
    // The VRRP view follows: pay2's chassis reports the new master, and an
    // assisted handover is recorded on the router.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let v = lab.ctl_json(&["vip", "show", "pay-vip"]);
        let r = &v["vrrp"][0];
        let assisted = r["last_assist"]["fault"] == "port-down" && r["assists"].as_u64() >= Some(1);
        if r["master"]["port"] == "pay2" && r["master"]["chassis"] == "hv2" && assisted == assist {
            assert_eq!(r["destinations"].as_array().map(Vec::len), Some(1), "{r}");
            break;
        }
        assert!(Instant::now() < end, "VRRP view not updated (assist {assist}): {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.keepalived_complaints(), Vec::<String>::new(), "keepalived complained");
    (inside, outside)
}

/// RFC 5798 Master_Down_Interval of the backup (priority 100, 0.1 s): what
/// an unassisted failover must wait at least.
const MASTER_DOWN_S: f64 = 0.3 + 0.1 * 156.0 / 256.0;

#[test]
fn keepalived_failover_headend_arp_suppression() {
    let (inside, outside) = failover("headend", true, false);
    // Port down is a certain fault: the agent sends the master's priority-0
    // advert and the backup takes over after its skew time, not after
    // Master_Down_Interval.
    assert!(inside.longest_gap < MASTER_DOWN_S, "assisted failover took {:.3} s", inside.longest_gap);
    assert!(outside.longest_gap < MASTER_DOWN_S, "assisted failover took {:.3} s", outside.longest_gap);
}

#[test]
fn keepalived_failover_without_assistance_waits_for_vrrp() {
    // The same fault with assistance switched off on the VPC: the backup
    // waits for its Master_Down_Timer (up to one interval less, since it runs
    // from the last advert).
    let (inside, _) = failover_with("headend", true, false, false);
    assert!(inside.longest_gap > MASTER_DOWN_S - 0.12, "unassisted failover took only {:.3} s", inside.longest_gap);
}

#[test]
fn assisted_handover_vrrpv2_at_keepalived_default_interval() {
    vrrpv2_at_default_interval(false);
}

#[test]
fn assisted_handover_vrrpv2_unicast_peers() {
    vrrpv2_at_default_interval(true);
}

fn vrrpv2_at_default_interval(unicast: bool) {
    // VRRPv2, advert_int 1 (keepalived's default): unassisted, the backup
    // waits 3 x 1 s + 0.61 s; assisted, 0.61 s (its skew time).
    let lab = Lab::up_vrrp("headend", true, unicast, true, "advert_int = 1\nvrrp_version = 2");
    lab.wait_reachable("client", "192.168.10.100");
    let probe = lab.probe("client", "192.168.10.100", 5);
    std::thread::sleep(Duration::from_millis(1500));
    let o = lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let p = probe.finish();
    eprintln!("VRRPv2 advert_int 1, unicast {unicast}, assisted: {p:?}");
    assert_eq!(lab.keepalived_complaints(), Vec::<String>::new(), "keepalived complained");
    assert!(p.longest_gap < 1.0, "assisted v2 failover took {:.3} s (native: 3.6 s)", p.longest_gap);
    let after = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!(after["owner"]["port"], "pay2", "{after}");
}

#[test]
fn keepalived_failover_headend_plain_arp() {
    failover("headend", false, false);
}

#[test]
fn keepalived_failover_unicast_peers() {
    let (inside, _) = failover("headend", true, true);
    assert!(inside.longest_gap < MASTER_DOWN_S, "assisted unicast failover took {:.3} s", inside.longest_gap);
}

#[test]
fn the_master_port_set_down_on_its_chassis_stays_down() {
    // The dead VM as the platform sees it: its port on the chassis set down.
    // The agent must not bring it back up; the backup takes over, assisted.
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let probe = lab.probe("client", "192.168.10.100", 4);
    std::thread::sleep(Duration::from_millis(1500));
    let o = lab.exec("hv1", &["ip", "link", "set", "vp0-pay1", "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let p = probe.finish();
    eprintln!("chassis-side port down: {p:?}");
    assert!(p.longest_gap < MASTER_DOWN_S, "{p:?}");
    let port = text(&lab.exec("hv1", &["ip", "link", "show", "vp0-pay1"]));
    assert!(!port.contains(",UP"), "the agent brought the port back up: {port}");
    assert_eq!(lab.ctl_json(&["vip", "show", "pay-vip"])["owner"]["port"], "pay2");
}

#[test]
fn a_frozen_master_gets_no_assistance() {
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let wait_owner = |port: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while lab.ctl_json(&["vip", "show", "pay-vip"])["owner"]["port"] != port {
            assert!(Instant::now() < end, "{port} never became the owner");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_owner("pay1");
    // Freeze keepalived in pay1: its port stays up, so no fault is certain,
    // and the backup takes over only when its Master_Down_Timer fires. (The
    // VM's kernel still answers pings: the takeover is timed from the
    // controller's record of the claim.)
    let frozen_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    // (Namespaces do not separate process ids: signal pay1's own processes.)
    let pids = Command::new("ip").args(["netns", "pids", &format!("{}-pay1", lab.name)]).output().unwrap();
    let pids: Vec<String> = String::from_utf8_lossy(&pids.stdout).split_whitespace().map(String::from).collect();
    assert!(!pids.is_empty());
    for pid in &pids {
        assert!(Command::new("kill").args(["-STOP", pid]).status().unwrap().success());
    }
    wait_owner("pay2");
    let history = lab.ctl_json(&["vip", "history", "pay-vip"]);
    let moved_at = history.as_array().unwrap().last().unwrap()["accepted_at"].as_u64().unwrap();
    let took = (moved_at - frozen_at) as f64 / 1000.0;
    eprintln!("frozen master: taken over after {took:.3} s");
    // The backup's timer started at the last advert, up to one interval
    // (0.1 s) before the freeze; an assisted takeover would take its skew
    // time, 0.061 s.
    assert!(took >= MASTER_DOWN_S - 0.1 - 0.02, "a frozen master was helped: taken over after {took:.3} s");
    assert!(took < 1.0, "taken over after {took:.3} s");
    for pid in &pids {
        let _ = Command::new("kill").args(["-CONT", pid]).status();
    }
}

#[test]
fn agent_restart_loses_no_probe() {
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.12");
    let probe = lab.probe("client", "192.168.10.12", 4);
    std::thread::sleep(Duration::from_millis(800));
    // Kill the agent of pay2's chassis and start it again with the same flags.
    let cmd = lab.kill_agent("hv2");
    let mut restarted = lab.start_agent("hv2", &cmd);
    let p = probe.finish();
    let still_up = restarted.child.as_mut().unwrap().try_wait().unwrap().is_none();
    drop(restarted);
    assert!(still_up, "the restarted agent exited");
    assert!(p.sent > 100, "the prober did not run: {p:?}");
    assert_eq!(p.replies, p.sent, "probes lost across an agent restart: {p:?}");
    assert!(p.longest_gap < 0.1, "{p:?}");
}

#[test]
fn a_dead_chassis_masters_are_spoken_for() {
    dead_chassis(Plane::KERNEL);
}

#[test]
fn a_dead_chassis_masters_are_spoken_for_on_ovs_chassis() {
    if ovs_or_skip("a_dead_chassis_masters_are_spoken_for_on_ovs_chassis") {
        dead_chassis(OVS_GRE);
    }
}

fn dead_chassis(plane: Plane) {
    // keepalived's default interval (1 s, VRRPv3): a native takeover waits
    // Master_Down_Interval (3.6 s) from the last advert, so at least 2.6 s
    // after the fault; the assisted one at most 1.25 intervals (the adverts
    // must have stopped) + the backup's skew time (0.61 s) after it. The
    // margin survives a loaded machine, where the liveness write and the
    // watch push can take a while (the drill measures the 0.1 s case).
    let lab = Lab::up_full("headend", true, false, true, "advert_int = 1", plane);
    lab.wait_reachable("client", "192.168.10.100");
    let probe = lab.probe("client", "192.168.10.100", 7);
    std::thread::sleep(Duration::from_millis(1500));
    // pay1's chassis cut from the underlay: nothing on it can speak, and its
    // agent's heartbeats stop. The controller declares it dead after 150 ms;
    // the agents hosting backups send the priority-0 advert for pay1 once
    // its adverts have stopped.
    let o =
        Command::new("ip").args(["-n", &format!("{}-net", lab.name), "link", "set", "hv1", "down"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let p = probe.finish();
    eprintln!("chassis down, assisted (advert_int 1, {plane:?}): {p:?}");
    assert!(p.sent > 100 && p.replies > 50, "the prober did not run: {p:?}");
    assert!(p.longest_gap < 2.5, "chassis-down failover took {:.3} s (native: 2.6 to 3.6 s)", p.longest_gap);
    assert_eq!(lab.ctl_json(&["chassis", "show", "hv1"])["liveness"]["alive"], false);
    let v = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!(v["owner"]["port"], "pay2", "{v}");
    assert_eq!(v["vrrp"][0]["last_assist"]["fault"], "chassis-dead", "{v}");
    assert!(text(&lab.exec("pay2", &["ip", "-4", "addr", "show"])).contains("192.168.10.100"));
    assert_eq!(lab.keepalived_complaints(), Vec::<String>::new(), "keepalived complained");
}

#[test]
fn an_agent_restart_on_the_masters_chassis_is_not_a_dead_chassis() {
    // The agent of pay1's chassis is away long enough to be declared dead,
    // but the chassis forwards pay1's adverts all along: no agent may speak
    // for pay1, the VIP stays, no probe is lost.
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let probe = lab.probe("client", "192.168.10.100", 4);
    std::thread::sleep(Duration::from_millis(800));
    let cmd = lab.kill_agent("hv1");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(lab.ctl_json(&["chassis", "show", "hv1"])["liveness"]["alive"], false, "hv1 was not declared dead");
    let restarted = lab.start_agent("hv1", &cmd);
    let p = probe.finish();
    let alive = lab.ctl_json(&["chassis", "show", "hv1"])["liveness"]["alive"].clone();
    drop(restarted);
    assert_eq!(alive, true, "hv1 did not come back alive");
    assert!(p.sent > 100, "the prober did not run: {p:?}");
    assert_eq!(p.replies, p.sent, "probes lost: {p:?}");
    let v = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!(v["owner"]["port"], "pay1", "{v}");
    assert!(v["vrrp"][0]["last_assist"].is_null(), "an assisted handover was done: {v}");
    assert!(!text(&lab.exec("pay2", &["ip", "-4", "addr", "show"])).contains("192.168.10.100"), "pay2 took over");
}

// ---- Open vSwitch chassis (the agent as their OpenFlow controller) ----

/// Open vSwitch is installed (setup.sh does it; CI requires it).
fn ovs_or_skip(test: &str) -> bool {
    let there = std::path::Path::new("/usr/sbin/ovs-vswitchd").exists();
    if !there {
        assert!(std::env::var_os("VIPCAST_REQUIRE_OVS").is_none(), "{test}: Open vSwitch is required but missing");
        eprintln!("{test}: skipped, Open vSwitch is not installed (scripts/setup.sh installs it)");
    }
    there
}

const OVS_GRE: Plane = Plane { dataplanes: ["ovs"; 3], encap: "gre" };

#[test]
fn ovs_chassis_reach_and_isolate_over_gre() {
    if !ovs_or_skip("ovs_chassis_reach_and_isolate_over_gre") {
        return;
    }
    let lab = Lab::up_full("headend", true, false, true, "advert_int = 0.1", OVS_GRE);
    for (from, to) in [("client", "192.168.10.12"), ("pay1", "192.168.10.12"), ("pay2", "192.168.10.50")] {
        lab.wait_reachable(from, to);
    }
    isolation(&lab);
}

#[test]
fn ovs_and_kernel_chassis_share_a_vxlan_vpc() {
    if !ovs_or_skip("ovs_and_kernel_chassis_share_a_vxlan_vpc") {
        return;
    }
    // hv2 runs the kernel data plane, hv1 and hv3 Open vSwitch; gw1 (kernel)
    // routes the external client in.
    let plane = Plane { dataplanes: ["ovs", "kernel", "ovs"], encap: "vxlan" };
    let lab = Lab::up_full("headend", true, false, true, "advert_int = 0.1", plane);
    for (from, to) in [
        ("client", "192.168.10.11"),
        ("client", "192.168.10.12"),
        ("pay2", "192.168.10.11"),
        ("inet1", "192.168.10.11"),
        ("inet1", "192.168.10.100"),
    ] {
        lab.wait_reachable(from, to);
    }
    // stage1 (VPC stage, pay1's address) is on hv3, an Open vSwitch chassis here.
    isolation(&lab);
}

#[test]
fn keepalived_failover_through_ovs_chassis() {
    if !ovs_or_skip("keepalived_failover_through_ovs_chassis") {
        return;
    }
    let lab = Lab::up_full("headend", true, false, true, "advert_int = 0.1", OVS_GRE);
    lab.wait_reachable("client", "192.168.10.100");
    let end = Instant::now() + Duration::from_secs(10);
    while lab.ctl_json(&["vip", "show", "pay-vip"])["owner"]["port"] != "pay1" {
        assert!(Instant::now() < end, "pay1 never became the owner");
        std::thread::sleep(Duration::from_millis(50));
    }
    let probe = lab.probe("client", "192.168.10.100", 5);
    std::thread::sleep(Duration::from_millis(1500));
    let o = lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let p = probe.finish();
    eprintln!("keepalived failover through Open vSwitch chassis (GRE): {p:?}");
    assert!(p.sent > 100 && p.replies > 50, "the prober did not run: {p:?}");
    assert!(p.longest_gap < 1.0, "outage {:.3} s", p.longest_gap);
    let after = lab.ctl_json(&["vip", "show", "pay-vip"]);
    assert_eq!((after["owner"]["port"].as_str(), after["owner"]["chassis"].as_str()), (Some("pay2"), Some("hv2")));
    assert!(text(&lab.exec("pay2", &["ip", "-4", "addr", "show"])).contains("192.168.10.100"));
    assert_eq!(lab.keepalived_complaints(), Vec::<String>::new(), "keepalived complained");
}

#[test]
fn ovs_agent_restart_loses_no_probe() {
    if !ovs_or_skip("ovs_agent_restart_loses_no_probe") {
        return;
    }
    let lab = Lab::up_full("headend", true, false, true, "advert_int = 0.1", OVS_GRE);
    lab.wait_reachable("client", "192.168.10.12");
    let probe = lab.probe("client", "192.168.10.12", 4);
    std::thread::sleep(Duration::from_millis(800));
    // The agent of pay2's chassis: its switch keeps forwarding, reconnects,
    // and the full resync adds before it deletes.
    let cmd = lab.kill_agent("hv2");
    let mut restarted = lab.start_agent("hv2", &cmd);
    let p = probe.finish();
    let still_up = restarted.child.as_mut().unwrap().try_wait().unwrap().is_none();
    drop(restarted);
    assert!(still_up, "the restarted agent exited");
    assert!(p.sent > 100, "the prober did not run: {p:?}");
    assert_eq!(p.replies, p.sent, "probes lost across an agent restart: {p:?}");
}

/// Peer liveness: the agents of hv2 (the backup's chassis) and hv3 watch hv1
/// (the master's) directly. Losing hv1's echo while its master still
/// advertises moves nothing: an agent restart on hv1, hv1's echo cut off
/// from hv2 while the adverts still arrive, an underlay flap shorter than the
/// detection time. Then hv1 really goes: the VIP moves, spoken for.
#[test]
fn peer_liveness_moves_nothing_while_the_master_still_advertises() {
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let vip = || lab.ctl_json(&["vip", "show", "pay-vip"]);
    let wait_owner = |port: &str| {
        let end = Instant::now() + Duration::from_secs(5);
        while vip()["owner"]["port"] != port {
            assert!(Instant::now() < end, "the VIP did not go to {port}: {}", vip());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_owner("pay1");
    // pay2 master once (pay1's link down, then up: pay1 preempts): hv2's
    // agent learns pay2's priority, hence its Skew_Time, and may speak for
    // pay1 that much before pay1's next advert is overdue.
    assert!(lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]).status.success());
    wait_owner("pay2");
    assert!(lab.exec("pay1", &["ip", "link", "set", "eth0", "up"]).status.success());
    wait_owner("pay1");
    let owner = vip()["owner"].clone();
    let hv1 = lab.ctl_json(&["chassis", "show", "hv1"])["underlay_ip"].as_str().unwrap().to_string();
    let log = |node: &str| std::fs::read_to_string(format!("/run/vipcast/labs/{}/agent-{node}.log", lab.name)).unwrap();
    let downs = |node: &str| log(node).matches("peer chassis down").count();
    let early = |node: &str| log(node).matches("spoken for early advertises again").count();
    // The watch is in place once hv2's agent heard pay1's adverts (they come every 0.1 s).
    std::thread::sleep(Duration::from_millis(500));
    let unmoved = |what: &str| {
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(vip()["owner"], owner, "the VIP moved after {what}");
    };

    // hv2 cannot reach hv1 (a blackhole route), but hv1's adverts still
    // arrive at hv2: for two seconds. hv2's agent speaks for pay1 early (it
    // knows pay2's Skew_Time), pay1's next advert cancels pay2's takeover,
    // and the agent waits for overdue adverts from then on.
    let (before, early_before) = (downs("hv2"), early("hv2"));
    let route = ["ip", "route", "add", "blackhole", &format!("{hv1}/32")];
    assert!(lab.exec("hv2", &route).status.success());
    std::thread::sleep(Duration::from_millis(2000));
    let o = lab.exec("hv2", &["ip", "route", "del", "blackhole", &format!("{hv1}/32")]);
    assert!(o.status.success(), "{}", text(&o));
    unmoved("an echo partition between hv1 and hv2");
    assert!(downs("hv2") > before, "hv2 never saw hv1 down behind the blackhole\n{}", log("hv2"));
    assert!(early("hv2") > early_before, "hv2 never spoke early for pay1: the case proves nothing\n{}", log("hv2"));

    // hv1's agent killed and restarted a second later.
    let before = downs("hv2");
    let cmd = lab.kill_agent("hv1");
    std::thread::sleep(Duration::from_millis(1000));
    let _restarted = lab.start_agent("hv1", &cmd);
    unmoved("hv1's agent restarted");
    assert!(downs("hv2") > before, "hv2 never saw hv1 down: the case proves nothing\n{}", log("hv2"));

    // hv1 off the underlay for 15 ms (less than the 30 ms detection).
    let before = downs("hv2");
    let flap = "ip link set ul0 down; sleep 0.015; ip link set ul0 up";
    let o = lab.exec("hv1", &["sh", "-c", flap]);
    assert!(o.status.success(), "{}", text(&o));
    unmoved("a 15 ms underlay flap");
    assert_eq!(downs("hv2"), before, "a flap shorter than the detection time was seen\n{}", log("hv2"));

    // hv1 gone for good: the VIP moves to pay2, and the handover was
    // assisted (spoken for by hv2's or hv3's agent).
    let o = lab.exec("hv1", &["ip", "link", "set", "ul0", "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let end = Instant::now() + Duration::from_secs(5);
    while vip()["owner"]["port"] != "pay2" {
        assert!(Instant::now() < end, "the VIP did not move: {}", vip());
        std::thread::sleep(Duration::from_millis(50));
    }
    let spoke = ["hv2", "hv3"].iter().any(|n| log(n).contains("peer chassis down"));
    assert!(spoke, "nobody saw hv1 go");
}

/// SIGHUP makes an agent read its certificate and key again (a renewed
/// certificate): the connections it makes from then on present the new
/// one, and so do its provisional-owner notices. Shown with a certificate
/// of another CA: after SIGHUP hv1's claims are refused at the handshake
/// and its notices are not believed by hv2; its own certificate back and
/// SIGHUP again, its claim goes through.
#[test]
fn sighup_reloads_an_agents_certificate() {
    let lab = Lab::up("headend", true, false);
    lab.wait_reachable("client", "192.168.10.100");
    let vip = || lab.ctl_json(&["vip", "show", "pay-vip"]);
    let wait_owner = |port: &str, secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while vip()["owner"]["port"] != port {
            assert!(Instant::now() < end, "the VIP is not on {port}: {}", vip());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_owner("pay1", 5);
    let agent = lab.process("agent", "hv1");
    let words: Vec<&str> = agent["command"].as_str().unwrap().split_whitespace().collect();
    let arg = |flag: &str| words.iter().position(|w| *w == flag).map(|i| words[i + 1].to_string()).unwrap();
    let (cert, key) = (arg("--cert"), arg("--key"));
    let pid = agent["pid"].as_i64().unwrap().to_string();
    let log = |node: &str| std::fs::read_to_string(format!("/run/vipcast/labs/{}/agent-{node}.log", lab.name)).unwrap();
    let hup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let wait_log = |node: &str, what: &str, n: usize| {
        let end = Instant::now() + Duration::from_secs(5);
        while log(node).matches(what).count() < n {
            assert!(Instant::now() < end, "{node} never logged {what:?} ({n})\n{}", log(node));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // hv1's certificate replaced by one of another CA (same name), reloaded.
    let dir = tempfile::tempdir().unwrap();
    let (saved_cert, saved_key) = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let foreign = dir.path().join("foreign");
    let pki = |args: &[&str]| assert!(vipcast(args).status.success());
    pki(&["pki", "init", foreign.to_str().unwrap()]);
    pki(&["pki", "issue", foreign.to_str().unwrap(), "--role", "agent", "--name", "hv1"]);
    std::fs::copy(foreign.join("hv1.crt"), &cert).unwrap();
    std::fs::copy(foreign.join("hv1.key"), &key).unwrap();
    hup();
    wait_log("hv1", "SIGHUP: certificate, key and CA reloaded", 1);
    // pay2 takes the VIP (its link is fine), then pay1 takes it back: hv1's
    // claim cannot reach the controller with that certificate, and hv2 does
    // not believe hv1's notice.
    assert!(lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]).status.success());
    wait_owner("pay2", 5);
    let refused_before = log("hv2").matches("notice not authenticated").count();
    assert!(lab.exec("pay1", &["ip", "link", "set", "eth0", "up"]).status.success());
    wait_log("hv2", "notice not authenticated", refused_before + 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(vip()["owner"]["port"], "pay2", "a claim went through with a certificate of another CA");
    // Its own certificate back, SIGHUP: the next claim (every 500 ms) goes through.
    std::fs::write(&cert, saved_cert).unwrap();
    std::fs::write(&key, saved_key).unwrap();
    hup();
    wait_log("hv1", "SIGHUP: certificate, key and CA reloaded", 2);
    wait_owner("pay1", 5);
}
