//! The agent against a real controller, in namespaces: it attaches the VM
//! ports to its bridge, claims a VIP when a VM sends a gratuitous ARP for it,
//! and re-announces the VIP into the other local VM ports when it moves.
//!
//! ```text
//!  netns vcg-<id>-hv (controller on 127.0.0.1, agent "hv1")
//!     vcg<id>1 ──veth── vcg<id>a  netns vcg-<id>-vm1  (port pay1)
//!     vcg<id>2 ──veth── vcg<id>b  netns vcg-<id>-vm2  (port pay2)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vipcast_lab::{Netns, Veth, unique_id};
use vipcast_packet::MacAddr;
use vipcast_packet::announce::{self, AnnounceKind};
use vipcast_packet::arp::ArpOp;
use vipcast_sys::{ETH_P_ARP, PacketSocket};

const PAY1: &str = "02:00:00:0a:00:01";
const PAY2: &str = "02:00:00:0a:00:02";

/// Runs `f` on a fresh thread inside namespace `name`.
fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        f()
    })
}

/// Sends a gratuitous ARP for `vip` at `mac` out of `dev` in namespace `ns`.
fn send_garp(ns: &str, dev: &str, mac: &str, vip: &str) {
    let (dev, mac, vip) = (dev.to_string(), mac.parse::<MacAddr>().unwrap(), vip.parse().unwrap());
    in_ns(ns, move || {
        let s = PacketSocket::bind(vipcast_sys::ifindex(&dev).unwrap(), ETH_P_ARP).unwrap();
        s.send(&vipcast_packet::build::garp(mac, vip, ArpOp::Request)).unwrap();
    })
    .join()
    .unwrap();
}

#[test]
fn agent_programs_ports_claims_and_reannounces() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
    let id = unique_id();
    let hv = Netns::new(format!("vcg-{id}-hv")).unwrap();
    let vm1 = Netns::new(format!("vcg-{id}-vm1")).unwrap();
    let vm2 = Netns::new(format!("vcg-{id}-vm2")).unwrap();
    let (p1, p2, e1, e2) = (format!("vcg{id}1"), format!("vcg{id}2"), format!("vcg{id}a"), format!("vcg{id}b"));
    let _l1 = Veth::new(&p1, Some(&hv), &e1, Some(&vm1)).unwrap();
    let _l2 = Veth::new(&p2, Some(&hv), &e2, Some(&vm2)).unwrap();
    hv.ip(&["link", "set", &p1, "alias", "vipcast-port:pay1"]).unwrap();
    hv.ip(&["link", "set", &p2, "alias", "vipcast-port:pay2"]).unwrap();
    vm1.ip(&["link", "set", &e1, "address", PAY1]).unwrap();
    vm2.ip(&["link", "set", &e2, "address", PAY2]).unwrap();
    let (ul_a, ul_b) = (format!("vcg{id}u"), format!("vcg{id}v"));
    let _ul = Veth::new(&ul_a, Some(&hv), &ul_b, Some(&hv)).unwrap();
    hv.ip(&["addr", "add", "10.255.0.11/24", "dev", &ul_a]).unwrap();

    // Controller and agent inside the chassis namespace, on one runtime.
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().to_path_buf();
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = in_ns(hv.name(), move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let store = Arc::new(vipcast_store::FileStore::open(&store_dir).unwrap());
            let c = vipcast_controller::Controller::new(store, Default::default()).await.unwrap();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            let hb = tokio::net::UdpSocket::bind(l.local_addr().unwrap()).await.unwrap();
            tokio::spawn(vipcast_controller::liveness::run(c.clone(), hb, Default::default()));
            tokio::spawn(vipcast_controller::serve(l, c, async {
                let _ = std::future::pending::<()>().await;
            }));
            let agent = tokio::spawn(vipcast_agent::run(vipcast_agent::Config {
                controller: url.clone(),
                chassis: "hv1".into(),
                underlay_ip: "10.255.0.11".parse().unwrap(),
                role: vipcast_model::Role::Hypervisor,
                sniff: true,
                announce_burst: 3,
                assist: true,
                heartbeat: Duration::from_millis(50),
                dataplane: vipcast_model::Dataplane::Kernel,
                openflow_listen: "127.0.0.1:6653".parse().unwrap(),
                ovsdb: String::new(),
                peer: vipcast_agent::peer::PeerConfig::default(),
                metrics_listen: Some("127.0.0.1:9797".parse().unwrap()),
            }));
            url_tx.send(url).unwrap();
            let _ = stop_rx.await;
            agent.abort();
        });
    });
    let url = url_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    // Clients of the controller run in the namespace too.
    let (req_tx, req_rx) =
        std::sync::mpsc::channel::<(String, String, serde_json::Value, std::sync::mpsc::Sender<serde_json::Value>)>();
    let client = in_ns(hv.name(), move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let http = reqwest::Client::new();
            while let Ok((method, path, body, reply)) = req_rx.recv() {
                let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
                // A path of the controller's, or a whole URL (the agent's metrics).
                let full = if path.starts_with("http://") { path } else { format!("{url}{path}") };
                let mut r = http.request(m, full);
                if !body.is_null() {
                    r = r.json(&body);
                }
                let text = r.send().await.unwrap().text().await.unwrap_or_default();
                let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
                let _ = reply.send(v);
            }
        });
    });
    let api = |method: &str, path: &str, body: serde_json::Value| {
        let (tx, rx) = std::sync::mpsc::channel();
        req_tx.send((method.into(), path.into(), body, tx)).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap()
    };
    api("POST", "/v1/vpcs", json!({"name": "prod", "vni": 100, "bum": "headend"}));
    api("POST", "/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"}));
    api("PUT", "/v1/chassis/hv2", json!({"underlay_ip": "10.255.0.12"}));
    // The agent's heartbeats make its chassis alive; hv2 has no agent and
    // is never heard, so nothing is decided for it.
    let end = Instant::now() + Duration::from_secs(5);
    while api("GET", "/v1/chassis/hv1", Value::Null)["liveness"]["alive"] != json!(true) {
        assert!(Instant::now() < end, "hv1 never became alive: {}", api("GET", "/v1/chassis/hv1", Value::Null));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(api("GET", "/v1/chassis/hv2", Value::Null)["liveness"], Value::Null);
    api(
        "POST",
        "/v1/ports",
        json!({"name": "pay1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": PAY1, "ip": "192.168.10.11"}),
    );
    api(
        "POST",
        "/v1/ports",
        json!({"name": "pay2", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": PAY2, "ip": "192.168.10.12"}),
    );
    api(
        "POST",
        "/v1/ports",
        json!({"name": "far", "vpc": "prod", "subnet": "web", "chassis": "hv2", "mac": "02:00:00:0a:00:09", "ip": "192.168.10.19"}),
    );
    let v = api(
        "POST",
        "/v1/vips",
        json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1", "pay2"]}),
    );
    assert_eq!(v["name"], "pay-vip", "{v}");

    // The agent builds the VPC's devices and attaches both ports.
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out waiting for {what}");
    };
    wait("ports attached", &|| {
        [&p1, &p2].iter().all(|p| hv.ip(&["link", "show", p]).is_ok_and(|o| o.contains("master vc-br-100")))
    });
    // The remote port's entry and hv2's flooding entry: the revision that
    // brought `far` may be reconciled after the one that attached the ports.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let fdb = hv.run("bridge", &["fdb", "show", "dev", "vc-vx-100"]).unwrap();
        if fdb.contains("02:00:00:0a:00:09 dst 10.255.0.12") && fdb.contains("00:00:00:00:00:00 dst 10.255.0.12") {
            break;
        }
        assert!(Instant::now() < end, "{fdb}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // vm1 announces the VIP: the agent claims it for pay1.
    let owner = |want: &str| api("GET", "/v1/vips/pay-vip", serde_json::Value::Null)["owner"]["port"] == want;
    let started = Instant::now();
    while !owner("pay1") {
        assert!(started.elapsed() < Duration::from_secs(10), "the agent never claimed the VIP for pay1");
        send_garp(vm1.name(), &e1, PAY1, "192.168.10.100");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Neighbour entries (ARP suppression) only for remote MACs: the VXLAN
    // device's proxy would answer a local VM's gratuitous ARP and make the
    // bridge learn the local MAC behind the VXLAN port.
    wait("neighbour entry for the remote port", &|| {
        hv.ip(&["neigh", "show", "dev", "vc-vx-100"])
            .is_ok_and(|o| o.contains("192.168.10.19 lladdr 02:00:00:0a:00:09"))
    });
    let neigh = hv.ip(&["neigh", "show", "dev", "vc-vx-100"]).unwrap();
    for local in ["192.168.10.100", "192.168.10.11", "192.168.10.12"] {
        assert!(!neigh.contains(&format!("{local} ")), "an entry for local address {local}:\n{neigh}");
    }

    // Someone deletes the remote port's neighbour entry behind the agent's
    // back: its periodic read (every 5 s) puts it back and counts it.
    let metrics = || match api("GET", "http://127.0.0.1:9797/metrics", Value::Null) {
        Value::String(s) => s,
        other => panic!("metrics: {other}"),
    };
    assert!(metrics().contains("vipcast_agent_drift_total{kind=\"neigh\"} 0"), "{}", metrics());
    hv.ip(&["neigh", "del", "192.168.10.19", "dev", "vc-vx-100"]).unwrap();
    let end = Instant::now() + Duration::from_secs(12);
    while !metrics().contains("vipcast_agent_drift_total{kind=\"neigh\"} 1") {
        assert!(Instant::now() < end, "drift never counted:\n{}", metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = hv.ip(&["neigh", "show", "dev", "vc-vx-100"]).unwrap();
    assert!(back.contains("192.168.10.19 lladdr 02:00:00:0a:00:09 PERMANENT"), "not repaired:\n{back}");

    // A listener in vm1 for what the agent sends into its port.
    let (l_ns, l_dev) = (vm1.name().to_string(), e1.clone());
    let listener = in_ns(&l_ns, move || {
        let s = PacketSocket::bind(vipcast_sys::ifindex(&l_dev).unwrap(), ETH_P_ARP).unwrap();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok((n, _)) = s.recv(&mut buf)
                && let Ok(Some(a)) = announce::classify(&buf[..n])
                && a.mac.to_string() == PAY2
            {
                return Some(a);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    });
    std::thread::sleep(Duration::from_millis(100));
    // vm2 takes over: the agent claims for pay2, re-points the VIP and tells vm1.
    send_garp(vm2.name(), &e2, PAY2, "192.168.10.100");
    let a = listener.join().unwrap().expect("vm1 heard no announcement of the new owner");
    assert_eq!((a.kind, a.ip.to_string()), (AnnounceKind::GratuitousRequest, "192.168.10.100".to_string()));
    assert!(owner("pay2"));
    let hist = api("GET", "/v1/vips/pay-vip/history", serde_json::Value::Null);
    assert_eq!(hist.as_array().map(Vec::len), Some(2), "{hist}");
    assert_eq!(hist[1]["source"], "agent");

    // A GARP for the VIP from a MAC that is no member is refused (no change).
    send_garp(vm1.name(), &e1, "02:00:00:0a:00:77", "192.168.10.100");
    std::thread::sleep(Duration::from_millis(300));
    assert!(owner("pay2"));

    drop(req_tx);
    client.join().unwrap();
    let _ = stop_tx.send(());
    server.join().unwrap();
}
