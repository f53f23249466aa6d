//! The kernel data plane, programmed for real in a namespace of its own:
//! a plan is applied, applying it again changes nothing, a VIP move changes
//! exactly one neighbour entry, and what iproute2 reports is what was meant.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use vipcast_agent::kernel::{Kernel, Reconciler};
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
            physical: Default::default(),
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

fn gateway_plan() -> Plan {
    let mut p = base_plan();
    p.forwarding = true;
    let v = p.vpcs.get_mut(&4200).unwrap();
    v.ports.clear();
    v.bridge_mac = Some(mac("06:76:63:00:10:68"));
    v.bridge_addrs = BTreeSet::from(["192.168.10.1/24".parse().unwrap(), "192.168.20.1/24".parse().unwrap()]);
    v.bridge_neigh = BTreeMap::from([(ip("192.168.10.100"), mac("02:00:00:00:00:01"))]);
    p
}

/// Runs `f` with a kernel handle in `ns`, on a runtime of its own.
fn with_kernel<T: Send + 'static, F: Future<Output = T>>(
    ns: &Netns,
    f: impl FnOnce(Kernel) -> F + Send + 'static,
) -> T {
    in_ns(ns, || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { f(Kernel::open().unwrap()).await })
    })
}

#[test]
fn gateway_addresses_and_bridge_neighbours_survive_the_kernel_flushing_them() {
    let id = unique_id();
    let ns = Netns::new(format!("vcg-{id}")).unwrap();
    let _underlay = Veth::new(&format!("vcg{id}u"), Some(&ns), &format!("vcg{id}v"), Some(&ns)).unwrap();
    ns.ip(&["addr", "add", "10.255.0.11/24", "dev", &format!("vcg{id}u")]).unwrap();

    let first = with_kernel(&ns, |k| async move {
        let a = k.reconcile(&gateway_plan()).await.unwrap();
        let b = k.reconcile(&gateway_plan()).await.unwrap();
        (a, b)
    });
    assert_eq!(first.0.addrs, 2, "{:?}", first.0);
    assert_eq!(first.1.total(), 0, "{:?}", first.1);
    let br = ns.ip(&["addr", "show", "dev", "vc-br-4200"]).unwrap();
    assert!(
        br.contains("06:76:63:00:10:68") && br.contains("192.168.10.1/24") && br.contains("192.168.20.1/24"),
        "{br}"
    );
    let neigh = ns.ip(&["neigh", "show", "dev", "vc-br-4200"]).unwrap();
    assert!(neigh.contains("192.168.10.100 lladdr 02:00:00:00:00:01 PERMANENT"), "{neigh}");

    // The bridge's MAC changed behind the agent's back: set back, and the
    // neighbour entry the kernel flushed with it is there again.
    ns.ip(&["link", "set", "vc-br-4200", "address", "02:00:00:00:0b:0b"]).unwrap();
    assert!(!ns.ip(&["neigh", "show", "dev", "vc-br-4200"]).unwrap().contains("192.168.10.100"));
    // Then the last addresses go (the kernel flushes the bridge's
    // neighbours again): the entry stays.
    let after = with_kernel(&ns, |k| async move {
        let a = k.reconcile(&gateway_plan()).await.unwrap();
        let mut p = gateway_plan();
        p.vpcs.get_mut(&4200).unwrap().bridge_addrs.clear();
        let b = k.reconcile(&p).await.unwrap();
        let c = k.reconcile(&p).await.unwrap();
        (a, b, c)
    });
    assert_eq!((after.0.links, after.0.neigh, after.0.total()), (1, 1, 2), "{:?}", after.0);
    assert_eq!((after.1.addrs, after.1.neigh, after.1.total()), (2, 1, 3), "{:?}", after.1);
    assert_eq!(after.2.total(), 0, "{:?}", after.2);
    let br = ns.ip(&["addr", "show", "dev", "vc-br-4200"]).unwrap();
    assert!(br.contains("06:76:63:00:10:68") && !br.contains("192.168."), "{br}");
    let neigh = ns.ip(&["neigh", "show", "dev", "vc-br-4200"]).unwrap();
    assert!(neigh.contains("192.168.10.100 lladdr 02:00:00:00:00:01 PERMANENT"), "{neigh}");
    assert_eq!(ns.run("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap().trim(), "1");
}

#[test]
fn entries_that_are_not_the_plans_are_left_alone_across_vpcs() {
    let id = unique_id();
    let ns = Netns::new(format!("vcf-{id}")).unwrap();
    let _underlay = Veth::new(&format!("vcf{id}u"), Some(&ns), &format!("vcf{id}v"), Some(&ns)).unwrap();
    let under = format!("vcf{id}u");
    ns.ip(&["addr", "add", "10.255.0.11/24", "dev", &under]).unwrap();
    let mut plan = base_plan();
    for vni in [4201, 4202] {
        let mut v = plan.vpcs[&4200].clone();
        v.vni = vni;
        v.ports.clear();
        plan.vpcs.insert(vni, v);
    }
    let p = plan.clone();
    let first = with_kernel(&ns, move |k| async move { k.reconcile(&p).await.unwrap() });
    assert!(first.fdb == 9 && first.neigh == 9, "{first:?}");

    // Not ours: a neighbour the kernel resolved (not permanent) on a VXLAN
    // device, a permanent one on the underlay, an FDB entry on a bridge port.
    ns.ip(&["neigh", "add", "192.168.10.77", "lladdr", "02:00:00:00:00:77", "dev", "vc-vx-4201", "nud", "reachable"])
        .unwrap();
    ns.ip(&["neigh", "add", "10.255.0.77", "lladdr", "02:00:00:00:00:78", "dev", &under, "nud", "permanent"]).unwrap();
    ns.run("bridge", &["fdb", "add", "02:00:00:00:00:79", "dev", "vc-vx-4202", "master", "static"]).unwrap();
    // Ours and stale: a permanent neighbour and a VXLAN FDB entry on another VPC's device.
    ns.ip(&["neigh", "add", "192.168.10.88", "lladdr", "02:00:00:00:00:88", "dev", "vc-vx-4202", "nud", "permanent"])
        .unwrap();
    ns.run(
        "bridge",
        &["fdb", "append", "00:00:00:00:00:00", "dev", "vc-vx-4201", "dst", "10.255.0.88", "self", "permanent"],
    )
    .unwrap();
    let p = plan.clone();
    let second =
        with_kernel(&ns, move |k| async move { (k.reconcile(&p).await.unwrap(), k.reconcile(&p).await.unwrap()) });
    assert_eq!((second.0.fdb, second.0.neigh, second.0.total()), (1, 1, 2), "{:?}", second.0);
    assert_eq!(second.1.total(), 0, "{:?}", second.1);
    assert!(ns.ip(&["neigh", "show", "dev", "vc-vx-4201"]).unwrap().contains("192.168.10.77"));
    assert!(!ns.ip(&["neigh", "show", "dev", "vc-vx-4202"]).unwrap().contains("192.168.10.88"));
    assert!(ns.ip(&["neigh", "show", "dev", &under]).unwrap().contains("10.255.0.77"));
    let fdb = ns.run("bridge", &["fdb", "show"]).unwrap();
    assert!(fdb.contains("02:00:00:00:00:79 dev vc-vx-4202 master vc-br-4202 static"), "{fdb}");
    assert!(!fdb.contains("10.255.0.88"), "{fdb}");
}

/// The agent's reconciler: table changes are written as deltas without
/// reading the kernel (deletes included, the messages built from the
/// plan), a read afterwards finds nothing to repair, and what someone else
/// changed meanwhile is repaired and counted as drift.
#[test]
fn deltas_match_the_kernel_and_a_read_repairs_drift() {
    let id = unique_id();
    let ns = Netns::new(format!("vcd-{id}")).unwrap();
    let _underlay = Veth::new(&format!("vcd{id}u"), Some(&ns), &format!("vcd{id}v"), Some(&ns)).unwrap();
    ns.ip(&["addr", "add", "10.255.0.11/24", "dev", &format!("vcd{id}u")]).unwrap();
    let mut gw = gateway_plan();
    gw.vpcs.get_mut(&4200).unwrap().fdb.insert(Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.99"), port: Some(4790) });
    // Every kind of table entry changes: a VIP moves (device and bridge
    // neighbour), a remote port goes (FDB and neighbour), a flood
    // destination with its own UDP port goes and another comes.
    let mut moved = gw.clone();
    {
        let v = moved.vpcs.get_mut(&4200).unwrap();
        v.neigh.insert(ip("192.168.10.100"), mac("02:00:00:00:00:02"));
        v.bridge_neigh.insert(ip("192.168.10.100"), mac("02:00:00:00:00:02"));
        v.neigh.remove(&ip("192.168.10.12"));
        v.fdb.remove(&Fdb { mac: mac("02:00:00:00:00:02"), dst: ip("10.255.0.12"), port: None });
        v.fdb.remove(&Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.99"), port: Some(4790) });
        v.fdb.insert(Fdb { mac: MacAddr::ZERO, dst: ip("10.255.0.14"), port: None });
    }
    let (gw2, moved2) = (gw.clone(), moved.clone());
    let out = with_kernel(&ns, move |k| async move {
        let mut r = Reconciler::new(k);
        let first = r.reconcile(gw2.clone(), false).await.unwrap();
        let there = r.reconcile(moved2.clone(), false).await.unwrap();
        let back = r.reconcile(gw2.clone(), false).await.unwrap();
        let again = r.reconcile(moved2.clone(), false).await.unwrap();
        let check = r.reconcile(moved2, true).await.unwrap();
        (first, there, back, again, check)
    });
    assert!(out.0.read && out.0.changes.total() > 8, "the first reconcile reads: {:?}", out.0);
    for o in [&out.1, &out.2, &out.3] {
        assert!(!o.read, "a table change read the kernel: {o:?}");
        assert_eq!((o.changes.fdb, o.changes.neigh, o.changes.total()), (3, 3, 6), "{o:?}");
    }
    assert!(out.4.read && out.4.changes.total() == 0 && out.4.drift.total() == 0, "{:?}", out.4);
    let fdb = ns.run("bridge", &["fdb", "show", "dev", "vc-vx-4200"]).unwrap();
    assert!(fdb.contains("00:00:00:00:00:00 dst 10.255.0.14 self permanent"), "{fdb}");
    assert!(!fdb.contains("10.255.0.99") && !fdb.contains("02:00:00:00:00:02 dst"), "{fdb}");
    let neigh = ns.ip(&["neigh", "show", "dev", "vc-br-4200"]).unwrap();
    assert!(neigh.contains("192.168.10.100 lladdr 02:00:00:00:00:02 PERMANENT"), "{neigh}");

    // Someone deletes an entry and adds one: the next delta does not see
    // it, the next read repairs both and says so.
    ns.ip(&["neigh", "del", "192.168.10.100", "dev", "vc-vx-4200"]).unwrap();
    ns.run("bridge", &["fdb", "append", "00:00:00:00:00:00", "dev", "vc-vx-4200", "dst", "10.255.0.66", "self"])
        .unwrap();
    let out = with_kernel(&ns, move |k| async move {
        let mut r = Reconciler::new(k);
        let first = r.reconcile(moved.clone(), true).await.unwrap();
        // This thread is in the namespace: so is what it runs.
        let neigh_del = |ip: &str| {
            let st = std::process::Command::new("ip").args(["neigh", "del", ip, "dev", "vc-vx-4200"]).status();
            assert!(st.unwrap().success(), "ip neigh del {ip}");
        };
        neigh_del("192.168.10.100");
        let quiet = r.reconcile(moved.clone(), false).await.unwrap();
        let read = r.reconcile(moved.clone(), true).await.unwrap();
        // A delta that fails (what it deletes is gone already) leaves the
        // reconciler knowing nothing: the next call reads.
        neigh_del("192.168.10.11");
        let mut fewer = moved;
        fewer.vpcs.get_mut(&4200).unwrap().neigh.remove(&ip("192.168.10.11"));
        assert!(r.reconcile(fewer.clone(), false).await.is_err(), "deleting a missing entry succeeded");
        let after = r.reconcile(fewer, false).await.unwrap();
        assert!(after.read && after.changes.total() == 0, "{after:?}");
        (first, quiet, read)
    });
    // A fresh reconciler knows nothing yet: what it repairs is not drift.
    assert_eq!((out.0.changes.total(), out.0.drift.total()), (2, 0), "{:?}", out.0);
    assert_eq!(out.1.changes.total(), 0, "{:?}", out.1);
    assert_eq!((out.2.drift.neigh, out.2.drift.total()), (1, 1), "{:?}", out.2);
}
