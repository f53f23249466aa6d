//! The lab file: parsing, validation (every problem names its table and key)
//! and the plan derived from it. A file with errors creates nothing.

use std::path::Path;

use vipcast_lab::config::{Dataplane, Encap, LabConfig, StoreKind, Vrrp};
use vipcast_lab::plan::{Plan, br_phy_mac, vm_mac, vm_port_name};
use vipcast_lab::state::Root;
use vipcast_lab::topology::{UpOptions, up};

fn shop() -> LabConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/shop.toml");
    LabConfig::load(&path).unwrap()
}

/// A small valid lab, as TOML, to break in tests.
const SMALL: &str = r#"
name = "small"
[[vpc]]
name = "prod"
vni = 100
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
[[vm]]
name = "a"
chassis = "hv1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.11"
[[vm]]
name = "b"
chassis = "hv1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.12"
[[vip]]
name = "v"
vpc = "prod"
subnet = "web"
ip = "192.168.10.100"
members = ["a", "b"]
advert_int = 0.1
"#;

/// The problems of `text`, joined.
fn problems(text: &str) -> String {
    match LabConfig::parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn assert_problem(text: &str, needles: &[&str]) {
    let p = problems(text);
    for n in needles {
        assert!(p.contains(n), "expected {n:?} in:\n{p}");
    }
}

#[test]
fn the_example_is_valid_and_planned_as_documented() {
    let cfg = shop();
    assert_eq!(cfg.name, "shop");
    assert_eq!(cfg.controller.store, StoreKind::File);
    let plan = Plan::new(&cfg);
    assert_eq!(plan.net_ns, "shop-net");
    let ch: Vec<(String, String)> = plan.chassis.iter().map(|c| (c.ns.clone(), c.underlay_ip.to_string())).collect();
    assert_eq!(
        ch,
        [
            ("shop-hv1", "10.255.0.10"),
            ("shop-hv2", "10.255.0.11"),
            ("shop-hv3", "10.255.0.12"),
            ("shop-gw1", "10.255.0.13")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let pay1 = &plan.vms[0];
    assert_eq!((pay1.ns.as_str(), pay1.chassis_ns.as_str(), pay1.port.as_str()), ("shop-pay1", "shop-hv1", "vp0-pay1"));
    assert_eq!(pay1.addr.to_string(), "192.168.10.11/24");
    assert_eq!(pay1.gateway.unwrap().to_string(), "192.168.10.1");
    assert_eq!(pay1.mac, vm_mac("shop", 0));
    let inet1 = &plan.externals[0];
    assert_eq!(
        (inet1.ns.as_str(), inet1.gateway_ns.as_str(), inet1.gateway_if.as_str()),
        ("shop-inet1", "shop-gw1", "ext0")
    );
    assert_eq!(
        (inet1.gateway_addr.to_string(), inet1.addr.to_string()),
        ("172.30.0.1/30".into(), "172.30.0.2/30".into())
    );
    // keepalived in pay1 (first member, 150) and pay2 (100).
    assert_eq!(plan.keepalived.len(), 2);
    let (k1, k2) = (&plan.keepalived[0], &plan.keepalived[1]);
    assert_eq!((k1.vm.as_str(), k1.ns.as_str(), k2.vm.as_str()), ("pay1", "shop-pay1", "pay2"));
    for (k, prio) in [(k1, 150), (k2, 100)] {
        for line in [
            "interface eth0".to_string(),
            "virtual_router_id 1".into(),
            format!("priority {prio}"),
            "advert_int 0.1".into(),
            "version 3".into(),
            "192.168.10.100/24 dev eth0".into(),
        ] {
            assert!(k.config.contains(&line), "{line:?} missing from\n{}", k.config);
        }
        assert!(!k.config.contains("unicast"), "{}", k.config);
    }
    assert_ne!(k1.stem(), k2.stem());
    assert_eq!(
        plan.namespaces(),
        ["net", "hv1", "hv2", "hv3", "gw1", "pay1", "pay2", "client", "stage1", "inet1"].map(|n| format!("shop-{n}"))
    );
}

#[test]
fn macs_and_port_names_are_deterministic_unicast_and_short() {
    let m = vm_mac("shop", 258);
    assert_eq!(m, vm_mac("shop", 258));
    assert!(m.starts_with("02:") && m.ends_with(":01:02"), "{m}");
    assert_ne!(vm_mac("shop", 1), vm_mac("shop", 2));
    assert_ne!(vm_mac("shop", 1), vm_mac("shoq", 1));
    assert_eq!(vm_port_name(3, "pay1"), "vp3-pay1");
    assert_eq!(vm_port_name(12345, "averyveryverylongname"), "vp12345-averyve");
    assert!(vm_port_name(1, "fifteen-bytes-x").len() <= 15);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    assert_problem(&format!("{SMALL}\ncolour = \"blue\""), &["unknown field `colour`"]);
    let text = SMALL.replace("ip = \"192.168.10.11\"", "ip = \"192.168.10.11\"\nmtu = 9000");
    assert_problem(&text, &["unknown field `mtu`"]);
    assert_problem(
        &SMALL.replace("name = \"small\"", "name = \"small\"\n[controller]\nstore = \"zookeeper\""),
        &["zookeeper"],
    );
}

#[test]
fn the_small_lab_is_valid() {
    let cfg = LabConfig::parse(SMALL).unwrap();
    let plan = Plan::new(&cfg);
    assert_eq!(plan.keepalived.len(), 2);
    // Unicast: each instance names itself as source and the others as peers.
    let cfg =
        LabConfig::parse(&SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nunicast = true\nvrid = 42")).unwrap();
    let plan = Plan::new(&cfg);
    let a = &plan.keepalived[0].config;
    assert!(a.contains("unicast_src_ip 192.168.10.11") && a.contains("unicast_peer {\n        192.168.10.12\n"), "{a}");
    assert!(a.contains("virtual_router_id 42"), "{a}");
    // VRRPv2 with whole seconds.
    let cfg = LabConfig::parse(&SMALL.replace("advert_int = 0.1", "advert_int = 1\nvrrp_version = 2")).unwrap();
    assert!(Plan::new(&cfg).keepalived[0].config.contains("version 2\n"));
}

#[test]
fn the_control_plane_runs_over_mutual_tls_unless_the_file_opts_out() {
    let plan = Plan::new(&LabConfig::parse(SMALL).unwrap());
    assert!(plan.tls);
    let args = |plan: &Plan| -> String {
        let args = vipcast_lab::topology::agent_args(&plan.chassis[0], plan.tls);
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    };
    assert!(args(&plan).contains("--controller https://10.255.0.254:7600"), "{}", args(&plan));
    let plain = SMALL.replace("name = \"small\"", "name = \"small\"\n[controller]\ntls = false");
    let plan = Plan::new(&LabConfig::parse(&plain).unwrap());
    assert!(!plan.tls);
    assert!(args(&plan).contains("--controller http://10.255.0.254:7600"), "{}", args(&plan));
    let bad = SMALL.replace("name = \"small\"", "name = \"small\"\n[controller]\ntls = \"yes\"");
    assert!(LabConfig::parse(&bad).is_err());
}

#[test]
fn references_to_unknown_objects_name_the_key() {
    assert_problem(
        &SMALL.replace(
            "chassis = \"hv1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.11\"",
            "chassis = \"hv9\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.11\"",
        ),
        &["vm[0] \"a\", key \"chassis\": no [[chassis]] named \"hv9\""],
    );
    assert_problem(
        &SMALL.replacen("subnet = \"web\"\nip", "subnet = \"db\"\nip", 1),
        &["vm[0] \"a\", key \"subnet\": vpc \"prod\" has no subnet \"db\""],
    );
    assert_problem(
        &SMALL.replacen("vpc = \"prod\"\nsubnet = \"web\"\nip", "vpc = \"dev\"\nsubnet = \"web\"\nip", 1),
        &["vm[0] \"a\", key \"vpc\": no [[vpc]] named \"dev\""],
    );
    assert_problem(
        &SMALL.replace("members = [\"a\", \"b\"]", "members = [\"a\", \"c\"]"),
        &["vip[0] \"v\", key \"members\": no [[vm]] or [[host]] named \"c\""],
    );
    assert_problem(
        &format!("{SMALL}\n[[external]]\nname = \"inet\"\ngateway = \"hv1\""),
        &["external[0] \"inet\", key \"gateway\": chassis \"hv1\" has role = \"hypervisor\""],
    );
    assert_problem(
        &format!("{SMALL}\n[[subnet]]\nvpc = \"nope\"\nname = \"x\"\ncidr = \"10.1.0.0/24\""),
        &["subnet[1] \"x\", key \"vpc\": no [[vpc]] named \"nope\""],
    );
}

#[test]
fn addresses_are_checked() {
    assert_problem(
        &SMALL.replace("192.168.10.11", "192.168.11.11"),
        &["vm[0] \"a\", key \"ip\": 192.168.11.11 is not a host address of subnet \"web\" (192.168.10.0/24)"],
    );
    assert_problem(&SMALL.replace("192.168.10.11", "192.168.10.0"), &["vm[0] \"a\", key \"ip\""]);
    assert_problem(
        &SMALL.replace("192.168.10.12", "192.168.10.11"),
        &["vm[1] \"b\", key \"ip\": 192.168.10.11 is also vm[0]"],
    );
    assert_problem(&SMALL.replace("192.168.10.12", "192.168.10.1"), &["is also the gateway of subnet[0]"]);
    assert_problem(
        &SMALL.replace("192.168.10.100", "192.168.10.11"),
        &["vip[0] \"v\", key \"ip\": 192.168.10.11 is the address of vm[0]"],
    );
    assert_problem(
        &SMALL.replace("gateway = \"192.168.10.1\"", "gateway = \"10.0.0.1\""),
        &["subnet[0] \"web\", key \"gateway\""],
    );
    assert_problem(
        &SMALL.replace("192.168.10.0/24", "192.168.10.5/24"),
        &["key \"cidr\": 192.168.10.5/24 has host bits set"],
    );
    assert_problem(&SMALL.replace("vni = 100", "vni = 0"), &["vpc[0] \"prod\", key \"vni\": 0 is not in 1..=16777215"]);
    // The lab's own networks.
    let underlay = SMALL.replace("192.168.10.", "10.255.0.");
    assert_problem(&underlay, &["overlaps the lab's underlay 10.255.0.0/24"]);
}

#[test]
fn names_are_checked() {
    assert_problem(&SMALL.replace("name = \"small\"", "name = \"sm-all\""), &["key \"name\": lab name \"sm-all\""]);
    assert_problem(&SMALL.replace("name = \"small\"", "name = \"\""), &["key \"name\": lab name \"\""]);
    assert_problem(
        &SMALL.replace("name = \"hv1\"", "name = \"hypervisor-12345\""),
        &["chassis[0] \"hypervisor-12345\", key \"name\": node names are 1..=15 bytes"],
    );
    assert_problem(
        &SMALL.replace("name = \"b\"", "name = \"a\""),
        &["vm[1] \"a\", key \"name\": duplicate node name (also vm[0] \"a\")"],
    );
    assert_problem(
        &SMALL.replace("name = \"b\"", "name = \"hv1\""),
        &["duplicate node name (also chassis[0] \"hv1\")"],
    );
    assert_problem(
        &SMALL.replace("name = \"b\"", "name = \"net\""),
        &["vm[1] \"net\", key \"name\": \"net\" is reserved"],
    );
    assert_problem(&SMALL.replace("name = \"gw1\"", "name = \"ul0\""), &["chassis[1] \"ul0\", key \"name\""]);
    assert_problem(
        &format!("{SMALL}\n[[vpc]]\nname = \"prod\"\nvni = 100"),
        &[
            "vpc[1] \"prod\", key \"name\": duplicate VPC name",
            "vpc[1] \"prod\", key \"vni\": 100 is also the VNI of vpc \"prod\"",
        ],
    );
}

#[test]
fn vrrp_settings_are_checked() {
    assert_problem(
        &SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp_version = 2"),
        &["vip[0] \"v\", key \"advert_int\": VRRP version 2 needs whole seconds"],
    );
    assert_problem(
        &SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp_version = 4"),
        &["key \"vrrp_version\": 4"],
    );
    // vrrp = "vipcast" runs `vipcast vrrpd` with the keepalived.conf
    // keepalived would get, so the same settings are checked.
    let vipcast = SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp = \"vipcast\"");
    let plan = Plan::new(&LabConfig::parse(&vipcast).unwrap());
    assert_eq!(plan.keepalived.len(), 2);
    assert!(plan.keepalived.iter().all(|k| k.daemon == Vrrp::Vipcast && k.stem().starts_with("vrrpd-")));
    assert_problem(&vipcast.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp_version = 2"), &["key \"advert_int\""]);
    assert_problem(&SMALL.replace("advert_int = 0.1", "advert_int = 0"), &["key \"advert_int\""]);
    assert_problem(&SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrid = 0"), &["key \"vrid\""]);
    // vrrp = "none" needs no VRRP settings to be sensible.
    LabConfig::parse(&SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp = \"none\"")).unwrap();
    // Several problems are reported at once.
    let p = problems(&SMALL.replace("vni = 100", "vni = 0").replace("192.168.10.11", "192.168.99.1"));
    assert!(p.lines().count() >= 2, "{p}");
}

#[test]
fn a_file_with_errors_creates_nothing() {
    let name = format!("lc{}", vipcast_lab::unique_id());
    let root_dir = std::env::temp_dir().join(format!("vipcast-lab-config-{name}"));
    let root = Root(root_dir.clone());
    // Valid TOML, invalid lab: up must refuse before building anything.
    let cfg: LabConfig = toml::from_str(
        &SMALL
            .replace("name = \"small\"", &format!("name = \"{name}\""))
            .replace("members = [\"a\", \"b\"]", "members = [\"a\", \"zz\"]"),
    )
    .unwrap();
    let err =
        up(&cfg, UpOptions { root: &root, exe: Path::new("/bin/false"), file: None, progress: &|_| {}, cancel: None })
            .unwrap_err();
    assert!(err.to_string().contains("no [[vm]] or [[host]] named \"zz\""), "{err}");
    assert!(vipcast_lab::teardown::lab_namespaces(&name).unwrap().is_empty());
    assert!(!root.state_dir(&name).exists());
    assert!(!root.state_file(&name).exists());
    let _ = std::fs::remove_dir_all(root_dir);
}

#[test]
fn registration_is_in_dependency_order() {
    let cfg = shop();
    let plan = Plan::new(&cfg);
    let calls = vipcast_lab::register::calls(&cfg, &plan);
    let order: Vec<String> = calls.iter().map(|c| format!("{} {}", c.method, c.path)).collect();
    let pos = |p: &str| order.iter().position(|o| o.starts_with(p)).unwrap();
    assert!(pos("POST /v1/vpcs") < pos("POST /v1/subnets"));
    assert!(pos("POST /v1/subnets") < pos("PUT /v1/chassis/"));
    assert!(pos("PUT /v1/chassis/") < pos("POST /v1/ports"));
    assert!(pos("POST /v1/ports") < pos("POST /v1/vips"));
    let gw = calls.iter().find(|c| c.path == "/v1/chassis/gw1").unwrap();
    assert_eq!(gw.body, serde_json::json!({"underlay_ip": "10.255.0.13", "role": "gateway", "dataplane": "kernel"}));
    let prod = calls.iter().find(|c| c.path == "/v1/vpcs" && c.body["name"] == "prod").unwrap();
    assert_eq!(prod.body["encap"], "vxlan");
    let pay1 = calls.iter().find(|c| c.path == "/v1/ports" && c.body["name"] == "pay1").unwrap();
    assert_eq!(
        pay1.body,
        serde_json::json!({"name": "pay1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": vm_mac("shop", 0), "ip": "192.168.10.11"})
    );
    let vip = calls.iter().find(|c| c.path == "/v1/vips").unwrap();
    assert_eq!(vip.body["members"], serde_json::json!(["pay1", "pay2"]));
    assert_eq!(calls.len(), 2 + 2 + 4 + 4 + 1);
}

/// SMALL with `[[chassis]] hv1` on Open vSwitch and the VPC's `encap` set.
fn with_ovs(encap: &str) -> String {
    SMALL
        .replace("[[chassis]]\nname = \"hv1\"\n", "[[chassis]]\nname = \"hv1\"\ndataplane = \"ovs\"\n")
        .replace("vni = 100\n", &format!("vni = 100\nencap = \"{encap}\"\n"))
}

#[test]
fn dataplane_and_encap_default_to_kernel_and_vxlan() {
    let cfg = LabConfig::parse(SMALL).unwrap();
    assert!(cfg.chassis.iter().all(|c| c.dataplane == Dataplane::Kernel));
    assert_eq!(cfg.vpc[0].encap, Encap::Vxlan);
    let plan = Plan::new(&cfg);
    assert!(!plan.has_ovs());
    assert!(plan.chassis.iter().all(|c| c.br_phy_mac.is_none()));
}

#[test]
fn ovs_chassis_and_gre_vpcs_are_planned_and_registered() {
    let cfg = LabConfig::parse(&with_ovs("gre")).unwrap();
    assert_eq!(cfg.chassis[0].dataplane, Dataplane::Ovs);
    assert_eq!(cfg.chassis[1].dataplane, Dataplane::Kernel);
    assert_eq!(cfg.vpc[0].encap, Encap::Gre);
    let plan = Plan::new(&cfg);
    assert!(plan.has_ovs());
    let hv1 = &plan.chassis[0];
    assert_eq!(hv1.dataplane, Dataplane::Ovs);
    let mac = hv1.br_phy_mac.clone().unwrap();
    assert_eq!(mac, br_phy_mac("small", 0));
    assert!(mac.starts_with("0e:") && mac.ends_with(":00:0a"), "{mac}");
    assert_ne!(br_phy_mac("small", 0), br_phy_mac("small", 1));
    assert_ne!(br_phy_mac("small", 0), br_phy_mac("other", 0));
    assert!(plan.vms.iter().all(|vm| vm.dataplane == Dataplane::Ovs));

    let args: Vec<String> =
        vipcast_lab::topology::agent_args(hv1, plan.tls).iter().map(|a| a.to_string_lossy().into()).collect();
    assert_eq!(
        args.join(" "),
        "agent --chassis hv1 --underlay-ip 10.255.0.10 --controller https://10.255.0.254:7600 --role hypervisor \
         --metrics-listen 10.255.0.10:7611 --dataplane ovs --openflow-listen 127.0.0.1:6653"
    );
    let gw1: Vec<String> =
        vipcast_lab::topology::agent_args(&plan.chassis[1], false).iter().map(|a| a.to_string_lossy().into()).collect();
    assert!(!gw1.iter().any(|a| a.contains("dataplane") || a.contains("openflow")), "{gw1:?}");

    let calls = vipcast_lab::register::calls(&cfg, &plan);
    let vpc = calls.iter().find(|c| c.path == "/v1/vpcs").unwrap();
    assert_eq!(vpc.body["encap"], "gre");
    let hv1 = calls.iter().find(|c| c.path == "/v1/chassis/hv1").unwrap();
    assert_eq!(hv1.body, serde_json::json!({"underlay_ip": "10.255.0.10", "role": "hypervisor", "dataplane": "ovs"}));
    let gw1 = calls.iter().find(|c| c.path == "/v1/chassis/gw1").unwrap();
    assert_eq!(gw1.body["dataplane"], "kernel");

    // A VXLAN VPC may span both data planes.
    let mixed = with_ovs("vxlan").replace(
        "chassis = \"hv1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.12\"",
        "chassis = \"gw1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.12\"",
    );
    let cfg = LabConfig::parse(&mixed).unwrap();
    let plan = Plan::new(&cfg);
    let dp: Vec<Dataplane> = plan.vms.iter().map(|vm| vm.dataplane).collect();
    assert_eq!(dp, [Dataplane::Ovs, Dataplane::Kernel]);
}

#[test]
fn unknown_dataplanes_and_encaps_are_refused() {
    assert_problem(
        &SMALL.replace("name = \"hv1\"\n", "name = \"hv1\"\ndataplane = \"dpdk\"\n"),
        &["dataplane", "unknown variant `dpdk`", "`kernel`", "`ovs`"],
    );
    assert_problem(
        &SMALL.replace("vni = 100\n", "vni = 100\nencap = \"geneve\"\n"),
        &["encap", "unknown variant `geneve`", "`vxlan`", "`gre`"],
    );
    assert_problem(&SMALL.replace("vni = 100\n", "vni = 100\nencap = 4\n"), &["encap"]);
}

#[test]
fn a_gre_vpc_with_a_vm_on_a_kernel_chassis_names_both() {
    // Both VMs on hv1 (a kernel chassis); the VPC uses GRE.
    let text = SMALL.replace("vni = 100\n", "vni = 100\nencap = \"gre\"\n");
    let p = problems(&text);
    for vm in ["vm[0] \"a\"", "vm[1] \"b\""] {
        let line = p.lines().find(|l| l.starts_with(vm)).unwrap_or_else(|| panic!("no problem for {vm}:\n{p}"));
        for needle in
            ["key \"chassis\"", "vpc \"prod\"", "encap = \"gre\"", "chassis[0] \"hv1\"", "dataplane = \"kernel\""]
        {
            assert!(line.contains(needle), "{needle:?} not in {line:?}");
        }
    }
    assert_eq!(p.lines().count(), 2, "{p}");
    // On an OVS chassis it is fine, and so is a GRE VPC without VMs on kernel chassis.
    LabConfig::parse(&with_ovs("gre")).unwrap();
    // One VM moved to the kernel chassis gw1: only that one is refused.
    let text = with_ovs("gre").replace(
        "chassis = \"hv1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.12\"",
        "chassis = \"gw1\"\nvpc = \"prod\"\nsubnet = \"web\"\nip = \"192.168.10.12\"",
    );
    let p = problems(&text);
    assert!(p.starts_with("vm[1] \"b\", key \"chassis\"") && p.contains("chassis[1] \"gw1\""), "{p}");
    assert_eq!(p.lines().count(), 1, "{p}");
}

#[test]
fn a_mariadb_workload_is_a_keepalived_pair_with_role_tracking() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/db.toml");
    let cfg = LabConfig::load(&path).unwrap();
    let plan = Plan::new(&cfg);
    assert_eq!(plan.keepalived.len(), 2);
    for k in &plan.keepalived {
        // Equal priorities, no preemption: the role file decides.
        assert!(k.config.contains("    priority 100\n"), "{}", k.config);
        assert!(k.config.contains("nopreempt"));
        assert!(k.config.contains("script_user root"));
        let dir = format!("{}/mariadb-db-vip-{}", vipcast_lab::plan::STATE_DIR_TOKEN, k.vm);
        assert!(k.config.contains(&format!("file {dir}/role\n    weight 50")), "{}", k.config);
        assert!(k.config.contains(&format!("file {dir}/health\n    weight 0")), "{}", k.config);
        assert!(k.config.contains(&format!("notify \"{dir}/dbctl notify\"")), "{}", k.config);
    }
    // Without a workload, the first member is preferred as before.
    let plain = Plan::new(&LabConfig::parse(SMALL).unwrap());
    assert!(plain.keepalived[0].config.contains("priority 150") && !plain.keepalived[0].config.contains("nopreempt"));

    let three = SMALL.replace("members = [\"a\", \"b\"]", "members = [\"a\"]\nworkload = \"mariadb\"");
    assert!(problems(&three).contains("a MariaDB pair needs exactly 2 members, not 1"), "{}", problems(&three));
    let none = SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nvrrp = \"none\"\nworkload = \"mariadb\"");
    assert!(problems(&none).contains("set vrrp = \"keepalived\""), "{}", problems(&none));
    let unknown = SMALL.replace("advert_int = 0.1", "advert_int = 0.1\nworkload = \"postgres\"");
    assert!(problems(&unknown).contains("workload"), "{}", problems(&unknown));
}

#[test]
fn a_payment_service_names_a_mariadb_vip_of_its_vpc() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/pay.toml");
    let cfg = LabConfig::load(&path).unwrap();
    let plan = Plan::new(&cfg);
    let web: Vec<_> = plan.keepalived.iter().filter(|k| k.vip == "pay-vip").collect();
    assert_eq!(web.len(), 2);
    // The web tier keeps the preferred member (150) and preemption; its
    // health file is tracked.
    assert!(web[0].config.contains("priority 150") && !web[0].config.contains("nopreempt"), "{}", web[0].config);
    let dir = format!("{}/http-pay-vip-pay1", vipcast_lab::plan::STATE_DIR_TOKEN);
    assert!(web[0].config.contains(&format!("file {dir}/health\n    weight 0")), "{}", web[0].config);

    let text = std::fs::read_to_string(&path).unwrap();
    let no_db = text.replace("database = \"db-vip\"\n", "");
    assert!(problems(&no_db).contains("key \"database\": a payment service needs"), "{}", problems(&no_db));
    let not_db = text.replace("database = \"db-vip\"", "database = \"pay-vip\"");
    assert!(problems(&not_db).contains("is not a workload = \"mariadb\" VIP"), "{}", problems(&not_db));
    let missing = text.replace("database = \"db-vip\"", "database = \"nope\"");
    assert!(problems(&missing).contains("no [[vip]] named \"nope\""), "{}", problems(&missing));
    let stray = SMALL.replace("advert_int = 0.1", "advert_int = 0.1\ndatabase = \"v\"");
    assert!(problems(&stray).contains("only for workload = \"http\""), "{}", problems(&stray));
}

/// labs/metal.toml: hosts join the VM list after the VMs, cabled to their
/// gateway (and the standby), registered as physical ports; dual stack.
#[test]
fn hosts_are_physical_ports_of_their_gateways() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/metal.toml");
    let cfg = LabConfig::load(&path).unwrap();
    let plan = Plan::new(&cfg);
    let m2 = plan.vms.iter().find(|v| v.name == "metal2").unwrap();
    assert_eq!((m2.chassis.as_str(), m2.port.as_str(), m2.attached_dev()), ("gw1", "ph1", "ph1".to_string()));
    let standby = m2.host.as_ref().unwrap().standby.as_ref().unwrap();
    assert_eq!(standby.0, "gw2");
    let pay1 = plan.vms.iter().find(|v| v.name == "pay1").unwrap();
    assert_eq!(pay1.addr6.unwrap().to_string(), "fd00:10::11/64");
    assert_eq!(pay1.gateway6, Some("fd00:10::1".parse().unwrap()));
    let calls = vipcast_lab::register::calls(&cfg, &plan);
    let port =
        |name: &str| calls.iter().find(|c| c.path == "/v1/ports" && c.body["name"] == name).unwrap().body.clone();
    let b = port("metal2");
    assert_eq!(
        (b["type"].as_str(), b["interface"].as_str(), b["standby_chassis"].as_str()),
        (Some("physical"), Some("ph1"), Some("gw2"))
    );
    assert_eq!(port("pay1")["ip6"], "fd00:10::11");
    assert!(port("pay1").get("type").is_none());
    // The IPv6 VIP's members are its dual-stack VMs and hosts; keepalived
    // speaks IPv6 for it.
    let k = plan.keepalived.iter().find(|k| k.vip == "web-vip6" && k.vm == "metal1").unwrap();
    assert!(k.config.contains("fd00:10::100/64"), "{}", k.config);
}

#[test]
fn hosts_are_checked() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../labs/metal.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert_problem(
        &text.replace("gateway = \"gw1\"               # cabled", "gateway = \"hv1\"               # cabled"),
        &["host[0] \"metal1\", key \"gateway\"", "role = \"gateway\""],
    );
    assert_problem(
        &text.replace("standby_gateway = \"gw2\"", "standby_gateway = \"gw1\""),
        &["host[1] \"metal2\", key \"standby_gateway\""],
    );
    assert_problem(
        &text.replace("standby_gateway = \"gw2\"", "standby_gateway = \"nope\""),
        &["no [[chassis]] named \"nope\""],
    );
    assert_problem(&text.replace("# vlan = 30", "vlan = 4095"), &["host[1] \"metal2\", key \"vlan\""]);
    assert_problem(
        &text.replace("ip6 = \"fd00:10::21\"", "ip6 = \"fd00:99::21\""),
        &["host[0] \"metal1\", key \"ip6\""],
    );
    assert_problem(
        &text.replace("ip6 = \"fd00:10::21\"", "ip6 = \"fd00:10::11\""),
        &["key \"ip6\": fd00:10::11 is also vm[0] \"pay1\""],
    );
    assert_problem(
        &text.replace(
            "members = [\"metal1\", \"pay1\"]\nadvert_int = 0.1\n\n[[external]]",
            "members = [\"metal2\", \"pay1\"]\nadvert_int = 0.1\n\n[[external]]",
        ),
        &["\"metal2\" is in vpc \"prod\" subnet \"web\""],
    );
}
