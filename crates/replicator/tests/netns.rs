//! The replicator end to end, in network namespaces, with the kernel's own
//! VXLAN devices as the chassis (no agent: the BUM entries point at the
//! replicator by hand, and nothing but the replicator sniffs).
//!
//! ```text
//!                       netns vrp-<id>-ul: bridge br0 (10.77.0.254, an unregistered host)
//!          ┌───────────────────┬───────────────┴───┬───────────────────┐
//!  vrp-<id>-c1 10.77.0.11   vrp-<id>-c2 .12     vrp-<id>-c3 .13     vrp-<id>-rep .100
//!   br100: vx100 + vm1       br100: vx100+vm2    br100: vx100 + vm3   controller (127.0.0.1)
//!   br200: vx200 + vm4                           br200: vx200 + vm5   replicator :4789, admin
//!
//!  vx<N>: vxlan id N local <underlay> dstport 4789 nolearning,
//!         fdb 00:00:00:00:00:00 -> 10.77.0.100 (every BUM frame goes to the replicator)
//!  VPC prod (VNI 100): vm1 192.168.10.11, vm2 .12, vm3 .13
//!  VPC dev  (VNI 200): vm4 192.168.10.12 (vm2's IP, other VPC), vm5 .15
//! ```
//! Every namespace, link and process is a guard: a failing test leaves
//! nothing behind. Names carry a random id: tests run in parallel.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vipcast_lab::{Child, Netns, Veth, unique_id};
use vipcast_packet::MacAddr;
use vipcast_packet::arp::ArpOp;
use vipcast_sys::{Direction, ETH_P_ALL, PacketSocket};

const REPLICATOR: &str = "10.77.0.100";
const VIP: &str = "192.168.10.100";

/// A VM: name, chassis index, VPC, IP, MAC.
const VMS: [(&str, usize, &str, &str, &str); 5] = [
    ("vm1", 0, "prod", "192.168.10.11", "02:00:00:77:00:01"),
    ("vm2", 1, "prod", "192.168.10.12", "02:00:00:77:00:02"),
    ("vm3", 2, "prod", "192.168.10.13", "02:00:00:77:00:03"),
    ("vm4", 0, "dev", "192.168.10.12", "02:00:00:77:00:04"),
    ("vm5", 2, "dev", "192.168.10.15", "02:00:00:77:00:05"),
];

/// Runs `f` on a fresh thread inside namespace `name`.
fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        f()
    })
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// The controller and the replicator, on one runtime on a thread inside the
/// replicator's namespace; stopped on drop.
struct Plane {
    rt: tokio::runtime::Handle,
    url: String,
    admin: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Plane {
    fn start(ns: &str, engine: vipcast_replicator::Config) -> Plane {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = in_ns(ns, move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let handle = rt.handle().clone();
            rt.block_on(async move {
                let store = Arc::new(vipcast_store::FileStore::open(&store_dir).unwrap());
                let c = vipcast_controller::Controller::new(store, Default::default()).await.unwrap();
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", l.local_addr().unwrap());
                tokio::spawn(vipcast_controller::serve(l, c, std::future::pending()));
                let listen: SocketAddr = format!("{REPLICATOR}:4789").parse().unwrap();
                let sockets = vipcast_replicator::bind_sockets(listen, 2).unwrap();
                let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let admin_url = format!("http://{}", admin.local_addr().unwrap());
                let mut opts = vipcast_replicator::Options::new("rep1", url.clone(), listen);
                opts.engine = engine;
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                tx.send((handle, url, admin_url)).unwrap();
                vipcast_replicator::run(opts, sockets, Some(admin), shutdown).await.unwrap();
            });
        });
        let (rt, url, admin) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Plane { rt, url, admin, http: reqwest::Client::new(), stop: Some(stop_tx), thread: Some(thread), _dir: dir }
    }

    /// An HTTP call made from the namespace (on the plane's runtime).
    fn call(&self, method: &str, url: String, body: Value) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, url);
        if !body.is_null() {
            r = r.json(&body);
        }
        let f = self.rt.spawn(async move {
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        });
        futures::executor::block_on(f).unwrap()
    }

    fn api(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, v) = self.call(method, format!("{}{path}", self.url), body);
        assert!(status < 300, "{method} {path}: {status} {v}");
        v
    }

    fn healthz(&self) -> Value {
        self.call("GET", format!("{}/healthz", self.admin), Value::Null).1
    }

    /// A metric of the replicator's /metrics (first line starting with `name`).
    fn metric(&self, name: &str) -> f64 {
        let text = self.call("GET", format!("{}/metrics", self.admin), Value::Null).1;
        let text = text.as_str().unwrap_or_default().to_string();
        text.lines()
            .find(|l| {
                l.strip_prefix(name).is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn owner(&self) -> Value {
        self.api("GET", "/v1/vips/pay-vip", Value::Null)["owner"].clone()
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The whole topology; `plane` is declared first so it stops first.
struct Topo {
    plane: Plane,
    id: String,
    ul: Netns,
    chassis: Vec<Netns>,
    vms: Vec<Netns>,
    _rep: Netns,
    _links: Vec<Veth>,
}

impl Topo {
    fn new(engine: vipcast_replicator::Config) -> Topo {
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("info").try_init();
        let id = unique_id();
        let ns = |n: &str| Netns::new(format!("vrp-{id}-{n}")).unwrap();
        let ul = ns("ul");
        let rep = ns("rep");
        let chassis: Vec<Netns> = (1..=3).map(|i| ns(&format!("c{i}"))).collect();
        let vms: Vec<Netns> = VMS.iter().map(|v| ns(v.0)).collect();
        let mut links = Vec::new();
        ul.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        ul.ip(&["addr", "add", "10.77.0.254/24", "dev", "br0"]).unwrap();
        ul.ip(&["link", "set", "br0", "up"]).unwrap();
        // Underlay: a port of br0 per chassis and for the replicator.
        let underlay: Vec<(&Netns, String, String)> = chassis
            .iter()
            .enumerate()
            .map(|(i, c)| (c, format!("vr{id}u{i}"), format!("10.77.0.{}/24", 11 + i)))
            .chain([(&rep, format!("vr{id}ur"), format!("{REPLICATOR}/24"))])
            .collect();
        for (n, dev, addr) in &underlay {
            let peer = dev.replacen('u', "b", 1);
            links.push(Veth::new(dev, Some(n), &peer, Some(&ul)).unwrap());
            ul.ip(&["link", "set", &peer, "master", "br0"]).unwrap();
            n.ip(&["addr", "add", addr, "dev", dev]).unwrap();
        }
        // Chassis: a bridge and a VXLAN device per VPC present.
        for (i, c) in chassis.iter().enumerate() {
            let local = format!("10.77.0.{}", 11 + i);
            for vni in ["100", "200"] {
                if vni == "200" && i == 1 {
                    continue;
                }
                let (vx, br) = (format!("vx{vni}"), format!("br{vni}"));
                c.ip(&[
                    "link",
                    "add",
                    &vx,
                    "type",
                    "vxlan",
                    "id",
                    vni,
                    "local",
                    &local,
                    "dstport",
                    "4789",
                    "nolearning",
                ])
                .unwrap();
                c.ip(&["link", "add", &br, "type", "bridge", "mcast_snooping", "0"]).unwrap();
                c.ip(&["link", "set", &vx, "master", &br]).unwrap();
                c.ip(&["link", "set", &vx, "up"]).unwrap();
                c.ip(&["link", "set", &br, "up"]).unwrap();
                c.run("bridge", &["fdb", "append", "00:00:00:00:00:00", "dev", &vx, "dst", REPLICATOR]).unwrap();
            }
        }
        // VMs.
        for (j, ((_, ci, vpc, ip, mac), vm)) in VMS.iter().zip(&vms).enumerate() {
            let (port, eth) = (format!("vr{id}p{j}"), format!("vr{id}e{j}"));
            links.push(Veth::new(&port, Some(&chassis[*ci]), &eth, Some(vm)).unwrap());
            let br = if *vpc == "prod" { "br100" } else { "br200" };
            chassis[*ci].ip(&["link", "set", &port, "master", br]).unwrap();
            vm.ip(&["link", "set", &eth, "down"]).unwrap();
            vm.ip(&["link", "set", &eth, "address", mac, "mtu", "1450"]).unwrap();
            vm.ip(&["addr", "add", &format!("{ip}/24"), "dev", &eth]).unwrap();
            vm.run("sysctl", &["-qw", &format!("net.ipv6.conf.{eth}.disable_ipv6=1")]).unwrap();
            vm.ip(&["link", "set", &eth, "up"]).unwrap();
        }

        let plane = Plane::start(rep.name(), engine);
        for (name, vni) in [("prod", 100), ("dev", 200)] {
            plane.api(
                "POST",
                "/v1/vpcs",
                json!({"name": name, "vni": vni, "bum": "replicator", "arp_suppression": false}),
            );
            plane.api("POST", "/v1/subnets", json!({"vpc": name, "name": "web", "cidr": "192.168.10.0/24"}));
        }
        for i in 0..3 {
            plane.api("PUT", &format!("/v1/chassis/c{}", i + 1), json!({"underlay_ip": format!("10.77.0.{}", 11 + i)}));
        }
        for (name, ci, vpc, ip, mac) in VMS {
            plane.api(
                "POST",
                "/v1/ports",
                json!({"name": name, "vpc": vpc, "subnet": "web", "chassis": format!("c{}", ci + 1), "mac": mac, "ip": ip}),
            );
        }
        plane.api(
            "POST",
            "/v1/vips",
            json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": VIP, "members": ["vm1", "vm2"]}),
        );
        wait_for("the replicator's table (2 VNIs, 5 members)", Duration::from_secs(10), || {
            let h = plane.healthz();
            h["status"] == "ok" && h["vnis"] == 2 && h["members"] == 5
        });
        assert_eq!(plane.api("GET", "/v1/replicators/rep1", Value::Null)["address"], "10.77.0.100:4789");
        Topo { plane, id, ul, chassis, vms, _rep: rep, _links: links }
    }

    fn eth(&self, vm: usize) -> String {
        format!("vr{}e{vm}", self.id)
    }

    fn ping(&self, vm: usize, ip: &str) -> bool {
        self.vms[vm].run("ping", &["-c", "2", "-i", "0.2", "-W", "2", ip]).is_ok()
    }

    /// Sends `frames` out of VM `vm`'s interface.
    fn send_frames(&self, vm: usize, frames: Vec<Vec<u8>>) {
        let dev = self.eth(vm);
        in_ns(self.vms[vm].name(), move || {
            let s = PacketSocket::bind(vipcast_sys::ifindex(&dev).unwrap(), ETH_P_ALL).unwrap();
            for f in frames {
                s.send(&f).unwrap();
            }
        })
        .join()
        .unwrap();
    }

    /// Counts frames VM `vm` receives for `d` that `pred` accepts, in the background.
    fn listen(
        &self,
        vm: usize,
        d: Duration,
        pred: impl Fn(&[u8]) -> bool + Send + 'static,
    ) -> std::thread::JoinHandle<usize> {
        let dev = self.eth(vm);
        let h = in_ns(self.vms[vm].name(), move || {
            let s = PacketSocket::bind(vipcast_sys::ifindex(&dev).unwrap(), ETH_P_ALL).unwrap();
            let mut buf = [0u8; 2048];
            let end = Instant::now() + d;
            let mut n = 0;
            while Instant::now() < end {
                match s.recv(&mut buf) {
                    Ok((len, Direction::Incoming)) if pred(&buf[..len]) => n += 1,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            n
        });
        std::thread::sleep(Duration::from_millis(50));
        h
    }
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

/// A broadcast frame from `src` with a marker EtherType and `tag` in the payload.
fn marked(src: &str, tag: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac(src).0);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(&tag.to_be_bytes());
    f.resize(60, 0);
    f
}

fn is_marked(f: &[u8], tag: u32) -> bool {
    f.len() >= 18 && f[12..14] == [0x88, 0xb5] && f[14..18] == tag.to_be_bytes()
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    vipcast_packet::vxlan::VxlanRepr { vni }.emit(&mut d).unwrap();
    d.extend_from_slice(inner);
    d
}

/// Sends one UDP datagram to the replicator from namespace `ns`; returns
/// what comes back within `wait`, if anything.
fn udp_exchange(ns: &str, payload: Vec<u8>, wait: Duration) -> Option<(Vec<u8>, SocketAddr, Duration)> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        let t = Instant::now();
        s.send_to(&payload, format!("{REPLICATOR}:4789")).unwrap();
        let mut buf = [0u8; 2048];
        s.recv_from(&mut buf).ok().map(|(n, from)| (buf[..n].to_vec(), from, t.elapsed()))
    })
    .join()
    .unwrap()
}

#[test]
fn broadcast_and_multicast_cross_three_chassis_and_never_another_vni() {
    let t = Topo::new(vipcast_replicator::Config::default());
    let p = &t.plane;

    // ARP (broadcast) and the ICMP that follows (unknown unicast: no FDB
    // entries) only have the replicator to go through.
    let vm4_hears_vm1 = t.listen(3, Duration::from_secs(3), |f| f.len() >= 12 && f[6..12] == mac(VMS[0].4).0);
    assert!(t.ping(0, "192.168.10.12"), "vm1 -> vm2 (c1 -> c2)");
    assert!(t.ping(0, "192.168.10.13"), "vm1 -> vm3 (c1 -> c3)");
    assert!(t.ping(1, "192.168.10.13"), "vm2 -> vm3 (c2 -> c3)");
    assert!(p.metric("vipcast_replicator_vni_rx_frames_total{vni=\"100\"") > 0.0);
    // vm4 has vm2's IP in VPC dev: it never hears prod's ARP for it.
    assert_eq!(vm4_hears_vm1.join().unwrap(), 0, "a prod frame reached VPC dev");

    // VRRP multicast (224.0.0.18) from vm1 reaches vm2 and vm3, not vm4/vm5.
    let advert = vipcast_packet::vrrp::VrrpRepr {
        version: vipcast_packet::vrrp::Version::V3,
        vrid: 51,
        priority: 150,
        interval_cs: 10,
        auth_type: 0,
        auth_data: [0; vipcast_packet::vrrp::AUTH_DATA_LEN],
        addresses: vec![VIP.parse().unwrap()],
    };
    let frame = vipcast_packet::build::vrrp_frame(
        MacAddr::vrrp_v4(51),
        None,
        VMS[0].3.parse().unwrap(),
        "224.0.0.18".parse().unwrap(),
        &advert,
    )
    .unwrap();
    let want = frame.clone();
    let hear = |vm: usize| {
        let want = want.clone();
        t.listen(vm, Duration::from_secs(2), move |f| f == want.as_slice())
    };
    let (h2, h3, h4, h5) = (hear(1), hear(2), hear(3), hear(4));
    t.send_frames(0, vec![frame; 3]);
    assert_eq!(h2.join().unwrap(), 3, "vm2 got the VRRP adverts");
    assert_eq!(h3.join().unwrap(), 3, "vm3 got the VRRP adverts");
    assert_eq!((h4.join().unwrap(), h5.join().unwrap()), (0, 0), "VPC dev got prod's VRRP adverts");

    // VPC dev (c1, c3) works, and c2, not in it, sees none of its VXLAN.
    let c2_dev = {
        let dev = format!("vr{}u1", t.id);
        in_ns(t.chassis[1].name(), move || {
            let s = PacketSocket::bind(vipcast_sys::ifindex(&dev).unwrap(), ETH_P_ALL).unwrap();
            let (mut buf, mut n) = ([0u8; 2048], 0);
            let end = Instant::now() + Duration::from_secs(2);
            while Instant::now() < end {
                match s.recv(&mut buf) {
                    // IPv4, UDP, to port 4789, VNI 200.
                    Ok((len, _))
                        if len >= 50 && buf[12..14] == [8, 0] && buf[23] == 17 && buf[36..38] == [0x12, 0xb5] =>
                    {
                        if buf[46..49] == [0, 0, 200] {
                            n += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert!(t.ping(3, "192.168.10.15"), "vm4 -> vm5 in VPC dev (c1 -> c3)");
    assert_eq!(c2_dev.join().unwrap(), 0, "c2 received VNI 200 traffic");

    // Injection: c2 (a chassis, not in dev) and the underlay host
    // (unregistered) send VNI 200 broadcasts straight to the replicator.
    // (Counted as deltas: while the test registered ports one by one, the
    // chassis' bridges already sent IPv6 chatter into VPCs they were not in yet.)
    let not_member = "vipcast_replicator_drops_total{reason=\"not_member\"";
    let unregistered = "vipcast_replicator_drops_total{reason=\"unregistered_source\"";
    let before = (p.metric(not_member), p.metric(unregistered));
    let h5 = t.listen(4, Duration::from_secs(1), |f| is_marked(f, 0xbad));
    let spoof = vxlan(200, &marked(VMS[1].4, 0xbad));
    assert!(udp_exchange(t.chassis[1].name(), spoof.clone(), Duration::from_millis(200)).is_none());
    assert!(udp_exchange(t.ul.name(), spoof, Duration::from_millis(200)).is_none());
    assert_eq!(h5.join().unwrap(), 0, "an injected frame reached VPC dev");
    assert_eq!(p.metric(not_member) - before.0, 1.0);
    assert_eq!(p.metric(unregistered) - before.1, 1.0);
}

#[test]
fn probes_are_echoed_unchanged_and_only_vni_zero() {
    let t = Topo::new(vipcast_replicator::Config::default());
    let probe = vxlan(vipcast_replicator::PROBE_VNI, b"probe 42");
    for ns in [t.chassis[0].name(), t.ul.name()] {
        let r = udp_exchange(ns, probe.clone(), Duration::from_secs(2));
        if r.is_none() {
            let m = t.plane.call("GET", format!("{}/metrics", t.plane.admin), Value::Null).1;
            panic!("no probe answer: {}", m.as_str().unwrap_or_default());
        }
        let (back, from, rtt) = r.unwrap();
        assert_eq!(back, probe);
        assert_eq!(from.to_string(), format!("{REPLICATOR}:4789"));
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");
    }
    // A header alone is a probe too; VNI 0 without the I flag is not.
    let bare = vxlan(0, &[]);
    assert_eq!(udp_exchange(t.chassis[2].name(), bare.clone(), Duration::from_secs(2)).map(|r| r.0), Some(bare));
    let mut no_i = probe.clone();
    no_i[0] = 0;
    assert!(udp_exchange(t.chassis[0].name(), no_i, Duration::from_millis(300)).is_none());
    // A VPC's VNI is replicated, never echoed.
    assert!(udp_exchange(t.chassis[0].name(), vxlan(100, &marked(VMS[0].4, 1)), Duration::from_millis(300)).is_none());
    assert_eq!(t.plane.metric("vipcast_replicator_probes_echoed_total"), 3.0);
    assert_eq!(t.plane.metric("vipcast_replicator_drops_total{reason=\"malformed\""), 1.0);
}

#[test]
fn a_garp_burst_sniffed_by_the_replicator_is_one_claim() {
    let t = Topo::new(vipcast_replicator::Config::default());
    let p = &t.plane;
    assert!(p.owner().is_null());
    // keepalived-style: five gratuitous ARPs from vm2.
    let garp = |m: &str| vipcast_packet::build::garp(mac(m), VIP.parse().unwrap(), ArpOp::Request);
    let started = Instant::now();
    t.send_frames(1, vec![garp(VMS[1].4); 5]);
    wait_for("the VIP owned by vm2", Duration::from_secs(5), || p.owner()["port"] == "vm2");
    eprintln!("GARP -> owner in the controller: {:?}", started.elapsed());
    assert_eq!(p.owner()["chassis"], "c2");
    let hist = p.api("GET", "/v1/vips/pay-vip/history", Value::Null);
    assert_eq!(hist[0]["source"], "replicator", "{hist}");
    wait_for("5 announcements sniffed", Duration::from_secs(2), || {
        p.metric("vipcast_replicator_announcements_sniffed_total") == 5.0
    });
    assert_eq!(p.metric("vipcast_replicator_claims_total{result=\"accepted\""), 1.0);
    assert_eq!(p.metric("vipcast_replicator_announcements_suppressed_total"), 4.0);

    // vm1 takes over with a gratuitous ARP reply: the VIP moves to c1.
    t.send_frames(0, vec![vipcast_packet::build::garp(mac(VMS[0].4), VIP.parse().unwrap(), ArpOp::Reply)]);
    wait_for("the VIP owned by vm1", Duration::from_secs(5), || p.owner()["port"] == "vm1");
    assert_eq!(p.owner()["generation"], 2);

    // vm3 is no member: its announcement is refused by the controller.
    t.send_frames(2, vec![garp(VMS[2].4)]);
    wait_for("the refusal", Duration::from_secs(5), || {
        p.metric("vipcast_replicator_claims_total{result=\"refused\"") == 1.0
    });
    assert_eq!(p.owner()["port"], "vm1");
}

#[test]
fn keepalived_elects_one_master_across_chassis_and_its_failover_is_claimed() {
    let t = Topo::new(vipcast_replicator::Config::default());
    let p = &t.plane;
    let dir = tempfile::tempdir().unwrap();
    let mut daemons = Vec::new();
    for (vm, prio) in [(0usize, 150), (1, 100)] {
        let conf = dir.path().join(format!("ka{vm}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n    router_id ka{vm}\n}}\nvrrp_instance VI_1 {{\n    state BACKUP\n    interface {}\n    \
                 virtual_router_id 51\n    priority {prio}\n    advert_int 0.1\n    version 3\n    \
                 virtual_ipaddress {{\n        {VIP}/24\n    }}\n}}\n",
                t.eth(vm)
            ),
        )
        .unwrap();
        let pid = |what: &str| dir.path().join(format!("ka{vm}-{what}.pid"));
        let mut cmd = t.vms[vm].command("keepalived");
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
        daemons.push(Child::spawn(&mut cmd, &dir.path().join(format!("ka{vm}.log"))).unwrap());
    }
    let has_vip = |vm: usize| t.vms[vm].ip(&["addr", "show", "dev", &t.eth(vm)]).is_ok_and(|o| o.contains(VIP));
    wait_for("vm1 master, claimed through the replicator", Duration::from_secs(15), || {
        has_vip(0) && p.owner()["port"] == "vm1"
    });
    // VRRP crosses the overlay: vm2 stays backup (no split brain).
    for _ in 0..20 {
        assert!(!has_vip(1), "vm2 holds the VIP too: the adverts did not cross");
        std::thread::sleep(Duration::from_millis(50));
    }
    // With no agent anywhere, the VRRP view comes from the replicator alone.
    let master_port = |want: &str| {
        let v = p.api("GET", "/v1/vips/pay-vip", Value::Null);
        v["vrrp"][0]["master"]["port"] == want
            && v["vrrp"][0]["vrid"] == 51
            && v["vrrp"][0]["priority"].as_u64().is_some()
            && v["vrrp"][0]["destinations"] == json!(["224.0.0.18"])
    };
    wait_for("the VRRP view naming vm1 master", Duration::from_secs(5), || master_port("vm1"));
    // vm1 dies (its port goes down): vm2 takes over and its GARPs move the VIP.
    let started = Instant::now();
    t.vms[0].ip(&["link", "set", &t.eth(0), "down"]).unwrap();
    wait_for("the VIP moved to vm2", Duration::from_secs(10), || p.owner()["port"] == "vm2");
    eprintln!("vm1 down -> VIP owned by vm2 in the controller: {:?}", started.elapsed());
    assert!(has_vip(1));
    let hist = p.api("GET", "/v1/vips/pay-vip/history", Value::Null);
    let hist = hist.as_array().unwrap();
    assert_eq!(hist.len(), 2, "{hist:?}");
    assert!(hist.iter().all(|h| h["source"] == "replicator"));
    wait_for("the VRRP view naming vm2 master", Duration::from_secs(5), || master_port("vm2"));
    drop(daemons);
}

#[test]
fn storm_control_clips_a_broadcast_storm_in_its_vni_only() {
    let t = Topo::new(vipcast_replicator::Config { storm_pps: 200, storm_burst: 50, ..Default::default() });
    let p = &t.plane;
    let heard = t.listen(1, Duration::from_secs(2), |f| is_marked(f, 7));
    // 2,000 broadcast frames as fast as vm1 can send them (well under a second).
    let started = Instant::now();
    t.send_frames(0, (0..2000).map(|_| marked(VMS[0].4, 7)).collect());
    let took = started.elapsed();
    let n = heard.join().unwrap();
    let allowed = 50.0 + 200.0 * (took.as_secs_f64() + 0.1);
    assert!(n > 0 && (n as f64) <= allowed, "vm2 got {n} of 2000 in {took:?} (allowed {allowed})");
    let storm = p.metric("vipcast_replicator_vni_storm_drops_total{vni=\"100\"");
    assert!(storm >= 2000.0 - allowed, "storm drops {storm}");
    assert_eq!(p.metric("vipcast_replicator_drops_total{reason=\"storm\""), storm);
    // The other VPC is not affected.
    assert!(t.ping(3, "192.168.10.15"));
    assert_eq!(p.metric("vipcast_replicator_vni_storm_drops_total{vni=\"200\""), 0.0);
    // Once the storm is over, VNI 100 works again.
    std::thread::sleep(Duration::from_millis(300));
    assert!(t.ping(0, "192.168.10.12"));
}

#[test]
fn gre_packets_of_a_gre_vpc_reach_every_other_member_and_nothing_else() {
    use vipcast_sys::raw::{IPPROTO_GRE, RawIpv4Socket, ipv4_payload};
    let t = Topo::new(vipcast_replicator::Config::default());
    // A GRE VPC needs Open vSwitch chassis: the three register as such (the
    // kernel VXLAN devices of the other VPCs do not matter here).
    for i in 0..3 {
        t.plane.api(
            "PUT",
            &format!("/v1/chassis/c{}", i + 1),
            json!({"underlay_ip": format!("10.77.0.{}", 11 + i), "dataplane": "ovs"}),
        );
    }
    t.plane.api("POST", "/v1/vpcs", json!({"name": "tun", "vni": 300, "bum": "replicator", "encap": "gre"}));
    t.plane.api("POST", "/v1/subnets", json!({"vpc": "tun", "name": "web", "cidr": "10.1.0.0/24"}));
    for i in 0..3 {
        let body = json!({"name": format!("t{i}"), "vpc": "tun", "subnet": "web", "chassis": format!("c{}", i + 1),
                          "mac": format!("02:00:00:78:00:0{i}"), "ip": format!("10.1.0.{}", 11 + i)});
        t.plane.api("POST", "/v1/ports", body);
    }
    wait_for("the replicator's table (3 VNIs)", Duration::from_secs(10), || t.plane.healthz()["vnis"] == 3);
    // What it replicates to, per VNI, as it reports it.
    let m = t.plane.call("GET", format!("{}/members", t.plane.admin), Value::Null).1;
    let tun = m["vnis"].as_array().unwrap().iter().find(|v| v["vni"] == 300).cloned().unwrap_or_default();
    assert_eq!(
        (&tun["vpc"], &tun["encap"], &tun["members"]),
        (&json!("tun"), &json!("gre"), &json!(["10.77.0.11", "10.77.0.12", "10.77.0.13"])),
        "{m}"
    );
    assert_eq!(m["synced"], true, "{m}");
    // Every chassis listens for GRE; c1 sends one packet, key 300.
    let listeners: Vec<_> = t
        .chassis
        .iter()
        .map(|c| {
            in_ns(c.name(), || {
                let s = RawIpv4Socket::bind(IPPROTO_GRE, std::net::Ipv4Addr::UNSPECIFIED).unwrap();
                s.set_recv_timeout(Duration::from_millis(200)).unwrap();
                let mut got = Vec::new();
                let end = Instant::now() + Duration::from_secs(2);
                let mut buf = [0u8; 2048];
                while Instant::now() < end {
                    if let Ok((n, from)) = s.recv_from(&mut buf)
                        && let Some(p) = ipv4_payload(&buf[..n])
                    {
                        got.push((from, p.to_vec()));
                    }
                }
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut packet = Vec::new();
    vipcast_packet::gre::GreRepr { protocol: 0x6558, checksum: false, key: Some(300), sequence: None }
        .emit(&mut packet, &marked("02:00:00:78:00:00", 77));
    let sent = packet.clone();
    in_ns(t.chassis[0].name(), move || {
        let s = RawIpv4Socket::bind(IPPROTO_GRE, std::net::Ipv4Addr::UNSPECIFIED).unwrap();
        s.send_to(&sent, REPLICATOR.parse().unwrap()).unwrap();
    })
    .join()
    .unwrap();
    // The same VNI as VXLAN is the wrong encapsulation for this VPC.
    assert!(
        udp_exchange(t.chassis[0].name(), vxlan(300, &marked("02:00:00:78:00:00", 78)), Duration::from_millis(300))
            .is_none()
    );
    let got: Vec<Vec<(std::net::Ipv4Addr, Vec<u8>)>> = listeners.into_iter().map(|l| l.join().unwrap()).collect();
    let from_rep = |i: usize| got[i].iter().filter(|(f, p)| f.to_string() == REPLICATOR && *p == packet).count();
    assert_eq!((from_rep(0), from_rep(1), from_rep(2)), (0, 1, 1), "copies per chassis");
    assert_eq!(t.plane.metric("vipcast_replicator_gre_tx_copies_total"), 2.0);
    assert_eq!(t.plane.metric("vipcast_replicator_drops_total{reason=\"wrong_encap\""), 1.0);
}
