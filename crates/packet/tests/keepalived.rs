//! Real keepalived packets, parsed by the codecs.
//!
//! `live_keepalived_capture` runs two keepalived instances (Debian package) in
//! a pair of network namespaces joined by a veth, for each of VRRPv2/v3,
//! multicast/unicast, IPv4/IPv6 and keepalived's `old_unicast_checksum`,
//! captures what crosses the veth with tcpdump while the higher-priority node
//! becomes master, is stopped (SIGTERM) and the backup takes over, and checks
//! every advert (checksums verified), the gratuitous ARPs / unsolicited NAs of
//! both masters, and the priority-0 advert that hands over.
//! `keepalived_fixtures` checks the same of the captures kept under
//! `tests/fixtures/` (rewritten by the live test when
//! `VIPCAST_REGEN_FIXTURES=1`), so a codec change is judged against real
//! packets even where keepalived is absent.
//!
//! Topology, per scenario (`<id>` is random, so scenarios run in parallel):
//! ```text
//!  netns vck-<id>-a                       netns vck-<id>-b
//!  vck<id>a 02:00:00:99:00:01 ---veth--- vck<id>b 02:00:00:99:00:02
//!  10.99.0.1/24, prio 150 (master)       10.99.0.2/24, prio 100
//!  tcpdump -w on this end
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vipcast_lab::{Child, Netns, Veth, unique_id};
use vipcast_packet::announce::{self, AnnounceKind};
use vipcast_packet::ethernet::EthernetRepr;
use vipcast_packet::ip::{IpRepr, protocol};
use vipcast_packet::vrrp::{self, ChecksumPolicy, Version};
use vipcast_packet::{Error, MacAddr, pcap};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0x99, 0, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0x99, 0, 0x02]);

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    version: Version,
    unicast: bool,
    ipv6: bool,
    legacy_checksum: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "v2-multicast", version: Version::V2, unicast: false, ipv6: false, legacy_checksum: false },
    Scenario { name: "v2-unicast", version: Version::V2, unicast: true, ipv6: false, legacy_checksum: false },
    Scenario { name: "v3-multicast", version: Version::V3, unicast: false, ipv6: false, legacy_checksum: false },
    Scenario { name: "v3-unicast", version: Version::V3, unicast: true, ipv6: false, legacy_checksum: false },
    Scenario { name: "v3-ipv6-multicast", version: Version::V3, unicast: false, ipv6: true, legacy_checksum: false },
    Scenario {
        name: "v3-unicast-old-checksum",
        version: Version::V3,
        unicast: true,
        ipv6: false,
        legacy_checksum: true,
    },
];

impl Scenario {
    fn vip(&self) -> IpAddr {
        if self.ipv6 { "fd00:99::100".parse().unwrap() } else { "10.99.0.100".parse().unwrap() }
    }

    fn interval_cs(&self) -> u16 {
        match self.version {
            Version::V2 => 100,
            Version::V3 => 10,
        }
    }

    fn fixture(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("keepalived-{}.pcap", self.name))
    }

    fn config(&self, node: char, dev: &str) -> String {
        let (prio, src, peer) =
            if node == 'a' { (150, "10.99.0.1", "10.99.0.2") } else { (100, "10.99.0.2", "10.99.0.1") };
        let advert_int = match self.version {
            Version::V2 => "1",
            Version::V3 => "0.1",
        };
        let mut unicast = String::new();
        if self.unicast {
            unicast = format!("    unicast_src_ip {src}\n    unicast_peer {{\n        {peer}\n    }}\n");
        }
        if self.legacy_checksum {
            unicast.push_str("    old_unicast_checksum\n");
        }
        let vip = if self.ipv6 { "fd00:99::100/64".to_string() } else { "10.99.0.100/24".to_string() };
        format!(
            "global_defs {{\n    router_id ka_{node}\n}}\n\
             vrrp_instance VI_1 {{\n    state BACKUP\n    interface {dev}\n    virtual_router_id 51\n    \
             priority {prio}\n    advert_int {advert_int}\n    version {}\n{unicast}    \
             virtual_ipaddress {{\n        {vip}\n    }}\n}}\n",
            self.version.number()
        )
    }
}

/// What a capture must show.
fn check(s: &Scenario, bytes: &[u8]) -> Result<(), String> {
    let cap = pcap::read(bytes).map_err(|e| format!("{}: {e}", s.name))?;
    if cap.linktype != pcap::LINKTYPE_ETHERNET {
        return Err(format!("{}: link type {}", s.name, cap.linktype));
    }
    let (mut from_a, mut from_b, mut shutdown, mut announced_a, mut announced_b_after_shutdown) = (0, 0, 0, 0, 0);
    for (i, r) in cap.records.iter().enumerate() {
        let n = i + 1;
        let (eth, payload) = EthernetRepr::parse(r.data).map_err(|e| format!("{} frame {n}: {e}", s.name))?;
        if let Some(a) = announce::classify(r.data).map_err(|e| format!("{} frame {n}: {e}", s.name))? {
            let want = if s.ipv6 { AnnounceKind::UnsolicitedNa } else { AnnounceKind::GratuitousRequest };
            match (a.ip == s.vip() && a.kind == want, a.mac) {
                (true, MAC_A) => announced_a += 1,
                // Both start as backup; at 0.1 s intervals the backup may win
                // the first election before the master's first advert arrives,
                // and announce too, before it is preempted.
                (true, MAC_B) => announced_b_after_shutdown += usize::from(shutdown > 0),
                _ => return Err(format!("{} frame {n}: unexpected announcement {a:?}", s.name)),
            }
        }
        let Ok((ip, _)) = IpRepr::parse(payload) else { continue };
        if ip.protocol() != protocol::VRRP {
            continue;
        }
        let policy = if s.legacy_checksum {
            // The legacy checksum must be refused by default, and accepted on request.
            match vrrp::parse_frame(r.data, ChecksumPolicy::Strict) {
                Err(Error::Checksum { .. }) => {}
                other => return Err(format!("{} frame {n}: strict parse of a legacy checksum gave {other:?}", s.name)),
            }
            ChecksumPolicy::AllowLegacyUnicast
        } else {
            ChecksumPolicy::Strict
        };
        let (_, ip, v) = vrrp::parse_frame(r.data, policy).map_err(|e| format!("{} frame {n}: {e}", s.name))?;
        let expect_dst: IpAddr = match (s.unicast, s.ipv6, eth.src == MAC_A) {
            (true, _, true) => "10.99.0.2".parse().unwrap(),
            (true, _, false) => "10.99.0.1".parse().unwrap(),
            (false, false, _) => vrrp::IPV4_GROUP.into(),
            (false, true, _) => vrrp::IPV6_GROUP.into(),
        };
        let ok = v.version == s.version
            && v.vrid == 51
            && v.interval_cs == s.interval_cs()
            && v.addresses == [s.vip()]
            && v.auth_type == 0
            && v.auth_data == [0; 8]
            && ip.dst() == expect_dst
            && ip.hop_limit() == 255;
        if !ok {
            return Err(format!("{} frame {n}: unexpected advert {v:?} to {}", s.name, ip.dst()));
        }
        match (eth.src, v.priority) {
            (MAC_A, 150) => from_a += 1,
            (MAC_A, 0) => shutdown += 1,
            (MAC_B, 100) => from_b += 1,
            (src, p) => return Err(format!("{} frame {n}: advert from {src} priority {p}", s.name)),
        }
    }
    if from_a < 2 || shutdown < 1 || announced_a < 1 || from_b < 1 || announced_b_after_shutdown < 1 {
        return Err(format!(
            "{}: master: {from_a} adverts, {announced_a} announcements, {shutdown} priority-0 adverts; \
             backup: {from_b} adverts, {announced_b_after_shutdown} announcements after the handover",
            s.name
        ));
    }
    Ok(())
}

/// Runs one scenario in its own namespaces and returns the capture's bytes.
fn capture(s: Scenario, dir: &Path) -> Result<Vec<u8>, String> {
    let id = unique_id();
    let err = |e: vipcast_lab::Error| format!("{}: {e}", s.name);
    let a = Netns::new(format!("vck-{id}-a")).map_err(err)?;
    let b = Netns::new(format!("vck-{id}-b")).map_err(err)?;
    let (da, db) = (format!("vck{id}a"), format!("vck{id}b"));
    let _veth = Veth::new(&da, Some(&a), &db, Some(&b)).map_err(err)?;
    for (ns, dev, mac, addr) in [(&a, &da, MAC_A, "10.99.0.1/24"), (&b, &db, MAC_B, "10.99.0.2/24")] {
        ns.ip(&["link", "set", dev, "down"]).map_err(err)?;
        ns.ip(&["link", "set", dev, "address", &mac.to_string()]).map_err(err)?;
        ns.ip(&["addr", "add", addr, "dev", dev]).map_err(err)?;
        // No duplicate address detection: a tentative link-local address
        // cannot source VRRPv3 adverts (keepalived: "send advert error 22").
        ns.run("sysctl", &["-qw", &format!("net.ipv6.conf.{dev}.accept_dad=0")]).map_err(err)?;
        ns.ip(&["link", "set", dev, "up"]).map_err(err)?;
    }
    let pcap_path = dir.join(format!("{}.pcap", s.name));
    let tcpdump_log = dir.join(format!("{}-tcpdump.log", s.name));
    let mut tcpdump = Child::spawn(
        a.command("tcpdump").args(["-i", &da, "--immediate-mode", "-U", "-n", "-Z", "root", "-w"]).arg(&pcap_path),
        &tcpdump_log,
    )
    .map_err(err)?;
    wait_for(Duration::from_secs(10), || std::fs::read_to_string(&tcpdump_log).is_ok_and(|l| l.contains("listening")))
        .map_err(|_| format!("{}: tcpdump did not start", s.name))?;

    let mut daemons = Vec::new();
    for (ns, node, dev) in [(&a, 'a', &da), (&b, 'b', &db)] {
        let conf = dir.join(format!("{}-{node}.conf", s.name));
        std::fs::write(&conf, s.config(node, dev)).map_err(|e| e.to_string())?;
        let pid = |what: &str| dir.join(format!("{}-{node}-{what}.pid", s.name));
        let mut cmd = ns.command("keepalived");
        cmd.args(["-n", "-l", "-D", "-G", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(pid("main"))
            .arg("-r")
            .arg(pid("vrrp"))
            .arg("-c")
            .arg(pid("check"))
            .arg("-b")
            .arg(pid("bfd"));
        daemons.push(Child::spawn(&mut cmd, &dir.join(format!("{}-{node}.log", s.name))).map_err(err)?);
    }
    // Master after 3 x interval + skew (3.4 s for v2 at 1 s, 0.34 s for v3 at
    // 0.1 s); then let a few adverts pass.
    let vip = s.vip().to_string();
    wait_for(Duration::from_secs(15), || a.ip(&["addr", "show", "dev", &da]).is_ok_and(|o| o.contains(&vip)))
        .map_err(|_| format!("{}: node a never became master (see {})", s.name, dir.display()))?;
    std::thread::sleep(Duration::from_millis(u64::from(s.interval_cs()) * 25));
    // SIGTERM: the master sends its priority-0 advert within milliseconds and
    // the backup takes over after its skew time ((256 - 100) / 256 x interval:
    // 0.61 s for v2, 0.06 s for v3), announcing the VIP.
    let _ = Command::new("kill").args(["-TERM", &daemons[0].id().to_string()]).status();
    let vip_on_b =
        wait_for(Duration::from_secs(3), || b.ip(&["addr", "show", "dev", &db]).is_ok_and(|o| o.contains(&vip)));
    std::thread::sleep(Duration::from_millis(200));
    if vip_on_b.is_err() {
        return Err(format!("{}: node b did not take over (see {})", s.name, dir.display()));
    }
    tcpdump.terminate(Duration::from_secs(2));
    drop(daemons);
    std::fs::read(&pcap_path).map_err(|e| format!("{}: {e}", s.name))
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

#[test]
fn live_keepalived_capture() {
    let dir = std::env::temp_dir().join(format!("vipcast-keepalived-{}", unique_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let regen = std::env::var_os("VIPCAST_REGEN_FIXTURES").is_some();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = SCENARIOS
            .iter()
            .map(|&s| {
                (
                    s,
                    scope.spawn({
                        let dir = &dir;
                        move || capture(s, dir)
                    }),
                )
            })
            .collect();
        handles.into_iter().map(|(s, h)| (s, h.join().unwrap())).collect()
    });
    let mut failures = Vec::new();
    for (s, r) in results {
        match r.and_then(|bytes| check(&s, &bytes).map(|()| bytes)) {
            Ok(bytes) if regen => std::fs::write(s.fixture(), bytes).unwrap(),
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert!(failures.is_empty(), "logs in {}:\n{}", dir.display(), failures.join("\n"));
}

#[test]
fn keepalived_fixtures() {
    for s in SCENARIOS {
        let bytes = std::fs::read(s.fixture()).unwrap_or_else(|e| panic!("{}: {e}", s.fixture().display()));
        check(s, &bytes).unwrap();
    }
}
