//! Property tests of the engine: for any member tables and any datagram,
//! copies go only to the other members of the datagram's own VNI, every
//! drop has the right reason, and storm control never admits more than its
//! rate allows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use vipcast_model::view::VniEntry;

use crate::engine::{Action, Config, DropReason, PROBE_VNI, Table};

/// Underlay IPs 10.0.0.0..=10.0.0.15.
fn ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i % 16))
}

/// VNIs 1..=6, each with a subset of the 16 IPs; registered chassis a
/// superset of all members.
fn view() -> impl Strategy<Value = (BTreeMap<u32, VniEntry>, BTreeSet<u8>)> {
    (
        prop::collection::btree_map(1u32..=6, prop::collection::btree_set(0u8..16, 0..8), 0..6),
        prop::collection::btree_set(0u8..16, 0..16),
    )
        .prop_map(|(vnis, extra)| {
            let mut registered = extra;
            let view = vnis
                .into_iter()
                .map(|(vni, members)| {
                    registered.extend(members.iter().copied());
                    let entry = VniEntry {
                        vpc: format!("vpc{vni}"),
                        encap: vipcast_model::Encap::Vxlan,
                        members: members.iter().map(|&m| ip(m)).collect(),
                        vips: vec![],
                    };
                    (vni, entry)
                })
                .collect();
            (view, registered)
        })
}

/// A datagram: well-formed VXLAN with a VNI of 0..=8 and a random inner
/// frame, or random bytes.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u32..=8, any::<u8>(), prop::collection::vec(any::<u8>(), 0..80)).prop_map(|(vni, flags, inner)| {
            let v = vni.to_be_bytes();
            let mut d = vec![flags | 0x08, 0, 0, 0, v[1], v[2], v[3], 0];
            d.extend(inner);
            d
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #[test]
    fn copies_stay_in_the_vni_and_skip_the_sender(
        (view, registered) in view(),
        d in datagram(),
        src in 0u8..20,
        synced in any::<bool>(),
    ) {
        let cfg = Config { storm_pps: 0, ..Config::default() };
        let empty = Table::new(cfg, Instant::now());
        let t = if synced { empty.rebuild(&view, registered.iter().map(|&r| ip(r)), 1) } else { empty };
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, src)), 4789);
        let decision = t.handle(Instant::now(), from, &d);
        let header_ok = d.len() >= 8 && d[0] & 0x08 != 0;
        let vni = if d.len() >= 8 { u32::from_be_bytes([0, d[4], d[5], d[6]]) } else { u32::MAX };
        let members: BTreeSet<IpAddr> =
            if synced { view.get(&vni).map(|e| e.members.iter().copied().collect()).unwrap_or_default() } else { BTreeSet::new() };
        match decision.action {
            Action::Replicate { slot, skip } => {
                prop_assert!(header_ok && vni != PROBE_VNI && d.len() >= 22);
                prop_assert_eq!(t.slots()[slot].vni, vni);
                prop_assert!(members.contains(&from.ip()));
                let got: BTreeSet<IpAddr> = t
                    .destinations(slot)
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, a)| { assert_eq!(a.port(), 4789); a.ip() })
                    .collect();
                let want: BTreeSet<IpAddr> = members.iter().copied().filter(|m| *m != from.ip()).collect();
                prop_assert_eq!(got, want);
            }
            Action::Echo => prop_assert!(header_ok && vni == PROBE_VNI && synced),
            Action::Drop(DropReason::Malformed) => prop_assert!(!header_ok || (vni != PROBE_VNI && d.len() < 22)),
            Action::Drop(DropReason::NotSynced) => prop_assert!(!synced && header_ok && vni == PROBE_VNI),
            Action::Drop(DropReason::UnknownVni) => prop_assert!(header_ok && (!synced || !view.contains_key(&vni))),
            Action::Drop(DropReason::NotMember) => {
                prop_assert!(!members.contains(&from.ip()) && registered.contains(&src));
            }
            Action::Drop(DropReason::UnregisteredSource) => {
                prop_assert!(!members.contains(&from.ip()) && (src >= 16 || !registered.contains(&src)));
            }
            Action::Drop(DropReason::Storm) => prop_assert!(false, "storm control is off"),
            Action::Drop(DropReason::WrongEncap) => prop_assert!(false, "every VNI here is VXLAN"),
        }
        // Only frames accepted from members can be sniffed.
        if decision.sniffed.is_some() {
            let replicated = matches!(decision.action, Action::Replicate { .. });
            prop_assert!(replicated);
        }
    }

    #[test]
    fn storm_control_admits_at_most_burst_plus_rate(
        pps in 1u64..5000,
        burst in 1u64..200,
        gaps_us in prop::collection::vec(0u64..3000, 1..400),
    ) {
        let mut view = BTreeMap::new();
        view.insert(7, VniEntry { vpc: "v".into(), encap: vipcast_model::Encap::Vxlan, members: vec![ip(1), ip(2)], vips: vec![] });
        let t0 = Instant::now();
        let t = Table::new(Config { storm_pps: pps, storm_burst: burst, ..Config::default() }, t0)
            .rebuild(&view, [ip(1), ip(2)], 1);
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
        d.extend([0u8; 60]);
        let from = SocketAddr::new(ip(1), 1);
        let mut at = Duration::ZERO;
        let mut admitted = Vec::new();
        for g in gaps_us {
            at += Duration::from_micros(g);
            if matches!(t.handle(t0 + at, from, &d).action, Action::Replicate { .. }) {
                admitted.push(at);
            }
        }
        // In any window [a, b], at most burst + rate x (b - a) (+1 for rounding of the interval).
        let interval = Duration::from_nanos(1_000_000_000 / pps);
        for (i, &a) in admitted.iter().enumerate() {
            for (j, &b) in admitted.iter().enumerate().skip(i) {
                let allowed = burst + ((b - a).as_nanos() / interval.as_nanos()) as u64 + 1;
                prop_assert!((j - i + 1) as u64 <= allowed, "{} admitted in {:?}, allowed {}", j - i + 1, b - a, allowed);
            }
        }
        // Nothing is dropped while arrivals are no faster than the rate.
        prop_assert!(!admitted.is_empty());
    }

    #[test]
    fn frames_spaced_at_the_rate_all_pass(pps in 1u64..10_000, n in 1usize..200) {
        let mut view = BTreeMap::new();
        view.insert(7, VniEntry { vpc: "v".into(), encap: vipcast_model::Encap::Vxlan, members: vec![ip(1), ip(2)], vips: vec![] });
        let t0 = Instant::now();
        let t = Table::new(Config { storm_pps: pps, storm_burst: 1, ..Config::default() }, t0)
            .rebuild(&view, [ip(1)], 1);
        let mut d = vec![0x08, 0, 0, 0, 0, 0, 7, 0];
        d.extend([0u8; 60]);
        let interval = Duration::from_nanos(1_000_000_000 / pps);
        for i in 0..n {
            let at = t0 + interval * i as u32;
            let action = t.handle(at, SocketAddr::new(ip(1), 1), &d).action;
            prop_assert!(matches!(action, Action::Replicate { slot: 0, skip: 0 }), "{:?}", action);
        }
    }
}
