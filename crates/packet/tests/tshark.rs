//! Packets built by the codecs, judged by tshark (Wireshark's dissectors):
//! written to a pcap, decoded, and every field tshark reports compared with
//! what was encoded. No frame may be malformed or raise an expert warning,
//! and every checksum tshark checks must be good.
//!
//! tshark is a Debian package `.ci/run` installs; this test fails (it is not
//! skipped) when tshark is missing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

use vipcast_packet::arp::{ArpOp, ArpRepr};
use vipcast_packet::build::{self, Outer};
use vipcast_packet::ethernet::VlanTag;
use vipcast_packet::vrrp::{Version, VrrpRepr};
use vipcast_packet::{MacAddr, pcap};

const FIELDS: &[&str] = &[
    "frame.number",
    "_ws.expert.severity",
    "_ws.expert.message",
    "_ws.malformed",
    "frame.protocols",
    "eth.src",
    "vlan.id",
    "ip.checksum.status",
    "ip.ttl",
    "ipv6.hlim",
    "udp.checksum.status",
    "vrrp.version",
    "vrrp.type",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.addr_count",
    "vrrp.auth_type",
    "vrrp.adver_int",
    "vrrp.short_adver_int",
    "vrrp.ip_addr",
    "vrrp.ipv6_addr",
    "vrrp.checksum.status",
    "vxlan.vni",
    "vxlan.flag_i",
    "gre.key",
    "gre.proto",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
    "arp.isgratuitous",
    "icmpv6.checksum.status",
    "icmpv6.nd.na.flag.r",
    "icmpv6.nd.na.flag.s",
    "icmpv6.nd.na.flag.o",
    "icmpv6.nd.na.target_address",
    "icmpv6.opt.linkaddr",
];

/// Wireshark's "checksum good" status value.
const GOOD: &str = "1";
/// Expert severity of warnings and errors (PI_WARN, PI_ERROR).
const PI_WARN: u32 = 0x0060_0000;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Vec<(&'static str, String)>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vrrp_case(name: &'static str, repr: VrrpRepr, src: &str, dst: &str, dst_mac: Option<MacAddr>) -> Case {
    let src_mac = MacAddr([0x02, 0x00, 0x00, 0x00, 0x01, repr.vrid]);
    let frame = build::vrrp_frame(src_mac, dst_mac, ip(src), ip(dst), &repr).unwrap();
    let v6 = ip(src).is_ipv6();
    let addrs = repr.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let mut expect = vec![
        ("vrrp.version", repr.version.number().to_string()),
        ("vrrp.type", "1".into()),
        ("vrrp.virt_rtr_id", repr.vrid.to_string()),
        ("vrrp.prio", repr.priority.to_string()),
        ("vrrp.addr_count", repr.addresses.len().to_string()),
        ("vrrp.checksum.status", GOOD.into()),
        (if v6 { "vrrp.ipv6_addr" } else { "vrrp.ip_addr" }, addrs),
        (if v6 { "ipv6.hlim" } else { "ip.ttl" }, "255".into()),
    ];
    match repr.version {
        Version::V2 => {
            expect.push(("vrrp.adver_int", (repr.interval_cs / 100).to_string()));
            expect.push(("vrrp.auth_type", repr.auth_type.to_string()));
        }
        Version::V3 => expect.push(("vrrp.short_adver_int", repr.interval_cs.to_string())),
    }
    if !v6 {
        expect.push(("ip.checksum.status", GOOD.into()));
    }
    Case { name, frame, expect }
}

fn vrrp_repr(version: Version, vrid: u8, priority: u8, interval_cs: u16, addrs: &[&str]) -> VrrpRepr {
    VrrpRepr {
        version,
        vrid,
        priority,
        interval_cs,
        auth_type: 0,
        auth_data: [0; 8],
        addresses: addrs.iter().map(|a| ip(a)).collect(),
    }
}

fn arp_expect(arp: &ArpRepr) -> Vec<(&'static str, String)> {
    vec![
        ("arp.opcode", u16::from(arp.op).to_string()),
        ("arp.src.hw_mac", arp.sender_mac.to_string()),
        ("arp.src.proto_ipv4", arp.sender_ip.to_string()),
        ("arp.dst.hw_mac", arp.target_mac.to_string()),
        ("arp.dst.proto_ipv4", arp.target_ip.to_string()),
    ]
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        vrrp_case(
            "vrrp v2 multicast",
            vrrp_repr(Version::V2, 51, 150, 100, &["10.99.0.100"]),
            "10.99.0.1",
            "224.0.0.18",
            None,
        ),
        vrrp_case(
            "vrrp v2 three addresses",
            vrrp_repr(Version::V2, 52, 100, 300, &["10.99.1.100", "10.99.1.101", "10.99.1.102"]),
            "10.99.1.1",
            "224.0.0.18",
            None,
        ),
        vrrp_case(
            "vrrp v3 ipv4 multicast",
            vrrp_repr(Version::V3, 53, 200, 10, &["10.99.2.100"]),
            "10.99.2.1",
            "224.0.0.18",
            None,
        ),
        vrrp_case(
            "vrrp v3 ipv4 unicast",
            vrrp_repr(Version::V3, 54, 0, 4095, &["10.99.3.100", "10.99.3.101"]),
            "10.99.3.1",
            "10.99.3.2",
            Some(MacAddr([2, 0, 0, 0, 3, 2])),
        ),
        vrrp_case(
            "vrrp v3 ipv6 multicast",
            vrrp_repr(Version::V3, 55, 255, 100, &["fd00:99::100", "fd00:99::101"]),
            "fe80::1",
            "ff02::12",
            None,
        ),
        vrrp_case(
            "vrrp v3 ipv6 unicast",
            vrrp_repr(Version::V3, 56, 1, 1, &["fd00:98::100"]),
            "fe80::1",
            "fe80::2",
            Some(MacAddr([2, 0, 0, 0, 6, 2])),
        ),
    ];

    let mac = MacAddr([0x02, 0x42, 0x0a, 0x63, 0x00, 0x0b]);
    let vip = Ipv4Addr::new(10, 99, 4, 100);
    let garp_req =
        ArpRepr { op: ArpOp::Request, sender_mac: mac, sender_ip: vip, target_mac: MacAddr::ZERO, target_ip: vip };
    let mut expect = arp_expect(&garp_req);
    expect.push(("arp.isgratuitous", "1".into()));
    cases.push(Case { name: "gratuitous arp request", frame: build::garp(mac, vip, ArpOp::Request), expect });

    let vip = Ipv4Addr::new(10, 99, 5, 100);
    let garp_rep = ArpRepr { op: ArpOp::Reply, sender_mac: mac, sender_ip: vip, target_mac: mac, target_ip: vip };
    let mut expect = arp_expect(&garp_rep);
    expect.push(("arp.isgratuitous", "1".into()));
    cases.push(Case { name: "gratuitous arp reply", frame: build::garp(mac, vip, ArpOp::Reply), expect });

    let tagged = ArpRepr {
        op: ArpOp::Request,
        sender_mac: mac,
        sender_ip: Ipv4Addr::new(10, 99, 6, 11),
        target_mac: MacAddr::ZERO,
        target_ip: Ipv4Addr::new(10, 99, 6, 12),
    };
    let mut expect = arp_expect(&tagged);
    expect.push(("vlan.id", "42".into()));
    cases.push(Case {
        name: "802.1Q tagged arp request",
        frame: build::arp_frame(MacAddr::BROADCAST, mac, Some(VlanTag { pcp: 0, dei: false, vid: 42 }), &tagged)
            .unwrap(),
        expect,
    });

    let target: Ipv6Addr = "fd00:97::100".parse().unwrap();
    for (name, router) in
        [("unsolicited neighbour advertisement (host)", false), ("unsolicited neighbour advertisement (router)", true)]
    {
        cases.push(Case {
            name,
            frame: build::unsolicited_na(mac, target, "fe80::42:aff:fe63:b".parse().unwrap(), router).unwrap(),
            expect: vec![
                ("icmpv6.checksum.status", GOOD.into()),
                ("icmpv6.nd.na.flag.r", u8::from(router).to_string()),
                ("icmpv6.nd.na.flag.s", "0".into()),
                ("icmpv6.nd.na.flag.o", "1".into()),
                ("icmpv6.nd.na.target_address", target.to_string()),
                ("icmpv6.opt.linkaddr", mac.to_string()),
                ("ipv6.hlim", "255".into()),
            ],
        });
    }

    let outer = Outer {
        src_mac: MacAddr([2, 0, 0, 0, 0xaa, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0xaa, 2]),
        src: ip("172.31.0.1"),
        dst: ip("172.31.0.2"),
    };
    let inner_vip = Ipv4Addr::new(10, 99, 7, 100);
    let inner_mac = MacAddr([2, 0, 0, 0, 7, 1]);
    let inner = ArpRepr {
        op: ArpOp::Request,
        sender_mac: inner_mac,
        sender_ip: inner_vip,
        target_mac: MacAddr::ZERO,
        target_ip: inner_vip,
    };
    let mut expect = arp_expect(&inner);
    expect.extend([
        ("vxlan.vni", "4096".to_string()),
        ("vxlan.flag_i", "1".into()),
        ("udp.checksum.status", GOOD.into()),
        ("ip.checksum.status", GOOD.into()),
    ]);
    cases.push(Case {
        name: "garp in vxlan",
        frame: build::vxlan_frame(&outer, 49152, 4096, &build::garp(inner_mac, inner_vip, ArpOp::Request)).unwrap(),
        expect,
    });

    let vr = vrrp_repr(Version::V3, 57, 120, 10, &["10.99.8.100"]);
    let vrrp_inner =
        build::vrrp_frame(MacAddr([2, 0, 0, 0, 8, 1]), None, ip("10.99.8.1"), ip("224.0.0.18"), &vr).unwrap();
    cases.push(Case {
        name: "vrrp v3 in vxlan",
        frame: build::vxlan_frame(&outer, 50000, 16_777_215, &vrrp_inner).unwrap(),
        expect: vec![
            ("vxlan.vni", "16777215".into()),
            ("vrrp.virt_rtr_id", "57".into()),
            ("vrrp.checksum.status", GOOD.into()),
            ("vrrp.short_adver_int", "10".into()),
        ],
    });

    let inner_vip = Ipv4Addr::new(10, 99, 9, 100);
    let inner = ArpRepr {
        op: ArpOp::Reply,
        sender_mac: inner_mac,
        sender_ip: inner_vip,
        target_mac: inner_mac,
        target_ip: inner_vip,
    };
    let mut expect = arp_expect(&inner);
    expect.extend([("gre.key", "100".to_string()), ("gre.proto", "0x6558".into())]);
    cases.push(Case {
        name: "garp in gre with key",
        frame: build::gre_frame(&outer, Some(100), &build::garp(inner_mac, inner_vip, ArpOp::Reply)).unwrap(),
        expect,
    });

    let inner_vip = Ipv4Addr::new(10, 99, 10, 100);
    let inner = ArpRepr {
        op: ArpOp::Request,
        sender_mac: inner_mac,
        sender_ip: inner_vip,
        target_mac: MacAddr::ZERO,
        target_ip: inner_vip,
    };
    let mut expect = arp_expect(&inner);
    expect.extend([("gre.key", "7".to_string()), ("gre.proto", "0x6558".into()), ("udp.checksum.status", GOOD.into())]);
    cases.push(Case {
        name: "garp in gre-in-udp",
        frame: build::gre_in_udp_frame(&outer, 51000, Some(7), &build::garp(inner_mac, inner_vip, ArpOp::Request))
            .unwrap(),
        expect,
    });
    cases
}

/// Runs tshark over a capture; one map of field -> value per frame.
fn tshark(pcap_path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap_path);
    for pref in ["ip.check_checksum:TRUE", "udp.check_checksum:TRUE", "vrrp.v3_checksum_as_in_v2:FALSE"] {
        cmd.args(["-o", pref]);
    }
    // GRE-in-UDP (RFC 8086) has no default port registration in tshark.
    cmd.args(["-d", "udp.port==4754,gre"]);
    cmd.args(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark is required (Debian package tshark; .ci/run installs it)");
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            FIELDS
                .iter()
                .zip(line.split('\t'))
                .filter(|(_, v)| !v.is_empty())
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn tshark_decodes_what_we_encode() {
    let cases = cases();
    let mut w = pcap::Writer::default();
    for (i, c) in cases.iter().enumerate() {
        w.push(1_764_000_000_000_000 + i as u64 * 1000, &c.frame).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("vipcast-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("codecs.pcap");
    std::fs::write(&path, w.into_bytes()).unwrap();
    let frames = tshark(&path);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(frames.len(), cases.len(), "tshark saw {} frames", frames.len());

    let mut failures = Vec::new();
    for (c, got) in cases.iter().zip(&frames) {
        if got.contains_key("_ws.malformed") {
            failures.push(format!("{}: malformed ({:?})", c.name, got.get("frame.protocols")));
        }
        if let Some(sev) = got.get("_ws.expert.severity") {
            for s in sev.split(',') {
                let s: u32 = s.parse().unwrap_or(u32::MAX);
                if s >= PI_WARN {
                    failures.push(format!("{}: expert warning {:?}", c.name, got.get("_ws.expert.message")));
                }
            }
        }
        for (field, want) in &c.expect {
            let have = got.get(*field).map(String::as_str).unwrap_or("<absent>");
            let same = normalize(have) == normalize(want);
            if !same {
                failures.push(format!("{}: {field} = {have}, encoded {want}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "tshark disagrees:\n{}", failures.join("\n"));
}

/// Wireshark prints booleans as 1/0 or True/False and integers in hex or
/// decimal depending on the field and version; compare the values.
fn normalize(v: &str) -> String {
    match v {
        "True" => "1".into(),
        "False" => "0".into(),
        _ => match v.strip_prefix("0x").map(|h| u64::from_str_radix(h, 16)) {
            Some(Ok(n)) => n.to_string(),
            _ => v.to_string(),
        },
    }
}
