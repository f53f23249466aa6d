//! The kernel data plane, programmed for real in a namespace of its own:
//! a plan is applied, applying it again changes nothing, a VIP move changes
//! exactly one neighbour entry, and what iproute2 reports is what was meant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use vipcast_agent::kernel::Kernel;
use vipcast_agent::plan::{Fdb, Plan, VpcPlan};
use vipcast_lab::{Netns, Veth, unique_id};
use vipcast_packet::MacAddr;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `f` on a thread inside `ns` with a tokio runtime of its own (so the
/// netlink socket is opened in the namespace).
fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let name = ns.name().to_string();
    std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn base_plan() -> Plan {
    let mut vpcs = BTreeMap::new();
    vpcs.insert(
        4200,
        VpcPlan {
            name: "prod".into(),
            vni: 4200,
            proxy: true,
            ports: BTreeSet::from(["pay1".to_string()]),
            fdb: BTreeSet::from([
                Fdb { mac: mac("02:00:00:00:00:02"), dst: ip("10.255.0.12"), port: None },
                Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.12"), port: None },
                Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.13"), port: None },
            ]),
            neigh: BTreeMap::from([
                (ip("192.168.10.11"), mac("02:00:00:00:00:01")),
                (ip("192.168.10.12"), mac("02:00:00:00:00:02")),
                (ip("192.168.10.100"), mac("02:00:00:00:00:01")),
            ]),
            bridge_addrs: BTreeSet::new(),
            bridge_neigh: BTreeMap::new(),
            bridge_mac: None,
        },
    );
    Plan { local_ip: Some(ip("10.255.0.11")), vpcs, forwarding: false, unrouted: vec![], unsupported: vec![] }
}

#[test]
fn reconcile_is_idempotent_minimal_and_visible_to_iproute2() {
    let id = unique_id();
    let ns = Netns::new(format!("vca-{id}")).unwrap();
    // An underlay interface with the local address, and a "VM port" marked by alias.
    let _underlay = Veth::new(&format!("vca{id}u"), Some(&ns), &format!("vca{id}v"), Some(&ns)).unwrap();
    ns.ip(&["addr", "add", "10.255.0.11/24", "dev", &format!("vca{id}u")]).unwrap();
    let vm = Netns::new(format!("vca-{id}-vm")).unwrap();
    let _veth = Veth::new(&format!("vca{id}p"), Some(&ns), &format!("vca{id}e"), Some(&vm)).unwrap();
    ns.ip(&["link", "set", &format!("vca{id}p"), "alias", "vipcast-port:pay1"]).unwrap();

    let changes = in_ns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let k = Kernel::open().unwrap();
            let first = k.reconcile(&base_plan()).await.unwrap();
            let second = k.reconcile(&base_plan()).await.unwrap();
            // The VIP moves to pay2 (remote): one neighbour entry changes.
            let mut moved = base_plan();
            moved.vpcs.get_mut(&4200).unwrap().neigh.insert(ip("192.168.10.100"), mac("02:00:00:00:00:02"));
            let third = k.reconcile(&moved).await.unwrap();
            (first, second, third)
        })
    });
    assert!(changes.0.total() >= 8, "first apply: {:?}", changes.0);
    assert_eq!(changes.1.total(), 0, "second apply of the same plan changed {:?}", changes.1);
    assert_eq!((changes.2.total(), changes.2.neigh), (1, 1), "a VIP move: {:?}", changes.2);

    let vx = ns.ip(&["-d", "link", "show", "vc-vx-4200"]).unwrap();
    assert!(vx.contains("vxlan id 4200") && vx.contains("local 10.255.0.11") && vx.contains("dstport 4789"), "{vx}");
    assert!(vx.contains("nolearning") && vx.contains("proxy"), "{vx}");
    assert!(vx.contains("master vc-br-4200"), "{vx}");
    let port = ns.ip(&["link", "show", &format!("vca{id}p")]).unwrap();
    assert!(port.contains("master vc-br-4200"), "{port}");
    let fdb = ns.run("bridge", &["fdb", "show", "dev", "vc-vx-4200"]).unwrap();
    for line in [
        "00:00:00:00:00:00 dst 10.255.0.12 self permanent",
        "00:00:00:00:00:00 dst 10.255.0.13 self permanent",
        "02:00:00:00:00:02 dst 10.255.0.12 self permanent",
    ] {
        assert!(fdb.contains(line), "missing {line:?} in\n{fdb}");
    }
    let neigh = ns.ip(&["neigh", "show", "dev", "vc-vx-4200"]).unwrap();
    assert!(neigh.contains("192.168.10.100 lladdr 02:00:00:00:00:02 PERMANENT"), "{neigh}");

    // Without ARP suppression the device must be recreated without proxy;
    // a plan without the VPC removes its devices and frees the port.
    let changes = in_ns(&ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let k = Kernel::open().unwrap();
            let mut p = base_plan();
            p.vpcs.get_mut(&4200).unwrap().proxy = false;
            let a = k.reconcile(&p).await.unwrap();
            let b = k.reconcile(&Plan { local_ip: p.local_ip, ..Default::default() }).await.unwrap();
            (a, b)
        })
    });
    assert!(changes.0.links >= 2, "{:?}", changes.0);
    assert!(!ns.ip(&["-d", "link", "show"]).unwrap().contains("vc-"), "devices left behind");
    assert!(!ns.ip(&["link", "show", &format!("vca{id}p")]).unwrap().contains("master"), "port still enslaved");
}
