#![no_main]
//! The replicator engine on arbitrary datagrams from a few sources: it never
//! panics, copies only go to the other members of the datagram's own VNI, and
//! probes (VNI 0) are only echoed. The same bytes are also tried as a GRE
//! packet (VNI 2 is a GRE VPC): copies stay in the key's own VPC.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Instant;

use vipcast_model::view::VniEntry;
use vipcast_replicator::{Action, Config, Table};

fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut view = BTreeMap::new();
        let vip: IpAddr = "192.168.10.100".parse().unwrap();
        let (vxlan, gre) = (vipcast_model::Encap::Vxlan, vipcast_model::Encap::Gre);
        view.insert(1, VniEntry { vpc: "a".into(), encap: vxlan, members: vec![ip(1), ip(2), ip(3)], vips: vec![vip] });
        view.insert(2, VniEntry { vpc: "b".into(), encap: gre, members: vec![ip(3), ip(4)], vips: vec![vip] });
        let cfg = Config { storm_pps: 1000, storm_burst: 50, ..Config::default() };
        Table::new(cfg, Instant::now()).rebuild(&view, (1..=5).map(ip), 1)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&who, datagram)) = data.split_first() else { return };
    let t = table();
    let from = SocketAddr::new(ip(who % 7), 4789);
    let d = t.handle(Instant::now(), from, datagram);
    match d.action {
        Action::Replicate { slot, skip } => {
            let vni = u32::from_be_bytes([0, datagram[4], datagram[5], datagram[6]]);
            let s = &t.slots()[slot];
            assert_eq!(s.vni, vni);
            assert_eq!(s.members()[skip], from.ip());
            for (i, a) in t.destinations(slot).iter().enumerate() {
                assert!(s.members().contains(&a.ip()));
                assert!(i == skip || a.ip() != from.ip());
            }
        }
        Action::Echo => assert_eq!(&datagram[4..7], &[0, 0, 0]),
        Action::Drop(_) => assert!(d.sniffed.is_none() || matches!(d.action, Action::Drop(vipcast_replicator::DropReason::Storm))),
    }
    let g = t.handle_gre(Instant::now(), from.ip(), datagram);
    match g.action {
        Action::Replicate { slot, skip } => {
            let s = &t.slots()[slot];
            assert_eq!(s.vni, 2, "only the GRE VPC replicates GRE");
            assert_eq!(s.members()[skip], from.ip());
        }
        Action::Echo => panic!("GRE is never echoed"),
        Action::Drop(_) => {}
    }
});
