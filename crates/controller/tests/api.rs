//! The controller's REST API and watch streams, served for real on loopback
//! over the embedded store (and over a real etcd for the two-controller race).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use vipcast_controller::{Config, Controller, Message, serve};
use vipcast_model::Object;
use vipcast_store::{EtcdStore, FileStore, Store};

/// When the tests' claims were observed: one instant for all of them (so
/// racing claims never look stale to each other), within the controller's
/// clock window (±30 s; renewed after 20 s).
fn observed_at() -> u64 {
    static AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = vipcast_controller::now_ms();
    let at = AT.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(at) < 20_000 {
        return at;
    }
    AT.store(now, std::sync::atomic::Ordering::Relaxed);
    now
}

/// A controller serving on 127.0.0.1:<random>, stopped on drop.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(store: Arc<dyn Store>, dir: Option<tempfile::TempDir>) -> Server {
    let c =
        Controller::new(store, Config { watch_ping: Duration::from_millis(200), ..Default::default() }).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hb = tokio::net::UdpSocket::bind(listener.local_addr().unwrap()).await.unwrap();
    tokio::spawn(vipcast_controller::liveness::run(c.clone(), hb, Default::default()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, c, async {
        let _ = rx.await;
    }));
    Server { url, stop: Some(tx), _dir: dir }
}

async fn file_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    start(store, Some(dir)).await
}

struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    fn new(s: &Server) -> Api {
        Api { http: reqwest::Client::new(), url: s.url.clone() }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn raw_post(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}{path}", self.url)).body(body).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A VPC "prod" with subnet "web", chassis hv1..hv3, ports pay1 (hv1),
    /// pay2 (hv2), client (hv3), and VIP "pay-vip" on pay1/pay2.
    async fn populate(&self) {
        let ok = |(s, v): (StatusCode, Value)| assert!(s.is_success(), "{s} {v}");
        ok(self.post("/v1/vpcs", json!({"name": "prod", "vni": 100})).await);
        ok(self
            .post(
                "/v1/subnets",
                json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24", "gateway": "192.168.10.1"}),
            )
            .await);
        for i in 1..=3 {
            ok(self.put(&format!("/v1/chassis/hv{i}"), json!({"underlay_ip": format!("172.31.0.{i}")})).await);
        }
        for (i, (name, ch)) in [("pay1", "hv1"), ("pay2", "hv2"), ("client", "hv3")].iter().enumerate() {
            ok(self
                .post(
                    "/v1/ports",
                    json!({"name": name, "vpc": "prod", "subnet": "web", "chassis": ch,
                           "mac": format!("02:00:00:00:00:0{}", i + 1), "ip": format!("192.168.10.{}", 11 + i)}),
                )
                .await);
        }
        ok(self
            .post(
                "/v1/vips",
                json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1", "pay2"]}),
            )
            .await);
    }

    async fn claim(&self, mac: &str, chassis: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/vips/pay-vip/claims",
            json!({"mac": mac, "chassis": chassis, "source": "agent", "observed_at": observed_at()}),
        )
        .await
    }

    /// Every object, to check that refused writes change nothing.
    async fn everything(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for kind in ["vpcs", "subnets", "chassis", "ports", "vips", "replicators"] {
            out.push(self.get(&format!("/v1/{kind}")).await.1);
        }
        out
    }
}

#[tokio::test]
async fn validation_errors_name_the_field_and_change_nothing() {
    let s = file_server().await;
    let api = Api::new(&s);
    api.populate().await;
    let before = api.everything().await;

    let cases: Vec<(&str, Value, StatusCode, &str, Option<&str>)> = vec![
        ("/v1/vpcs", json!({"name": "dev", "vni": 0}), StatusCode::BAD_REQUEST, "invalid_vni", Some("vni")),
        ("/v1/vpcs", json!({"name": "dev", "vni": 16777216}), StatusCode::BAD_REQUEST, "invalid_vni", Some("vni")),
        ("/v1/vpcs", json!({"name": "dev", "vni": 100}), StatusCode::CONFLICT, "duplicate_vni", Some("vni")),
        ("/v1/vpcs", json!({"name": "prod", "vni": 5}), StatusCode::CONFLICT, "exists", Some("name")),
        (
            "/v1/vpcs",
            json!({"name": "dev", "vni": 5, "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("colour"),
        ),
        ("/v1/vpcs", json!({"name": "dev", "vni": "five"}), StatusCode::BAD_REQUEST, "invalid_body", Some("vni")),
        (
            "/v1/vpcs",
            json!({"name": "dev", "vni": 5, "bum": "flood"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("bum"),
        ),
        (
            "/v1/subnets",
            json!({"vpc": "prod", "name": "db", "cidr": "10.0.0.0/33"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("cidr"),
        ),
        (
            "/v1/subnets",
            json!({"vpc": "prod", "name": "db", "cidr": "10.0.0.0/8", "gateway": "11.0.0.1"}),
            StatusCode::BAD_REQUEST,
            "gateway_outside_subnet",
            Some("gateway"),
        ),
        (
            "/v1/subnets",
            json!({"vpc": "nope", "name": "db", "cidr": "10.0.0.0/8"}),
            StatusCode::BAD_REQUEST,
            "unknown_vpc",
            Some("vpc"),
        ),
        (
            "/v1/subnets",
            json!({"vpc": "prod", "name": "web2", "cidr": "192.168.10.128/25"}),
            StatusCode::CONFLICT,
            "overlapping_cidr",
            Some("cidr"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "01:00:5e:00:00:01", "ip": "192.168.10.50"}),
            StatusCode::BAD_REQUEST,
            "invalid_mac",
            Some("mac"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "00:00:00:00:00:00", "ip": "192.168.10.50"}),
            StatusCode::BAD_REQUEST,
            "invalid_mac",
            Some("mac"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "nonsense", "ip": "192.168.10.50"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            Some("mac"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:01:01", "ip": "192.168.99.50"}),
            StatusCode::BAD_REQUEST,
            "ip_outside_subnet",
            Some("ip"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:01:01", "ip": "192.168.10.11"}),
            StatusCode::CONFLICT,
            "duplicate_ip",
            Some("ip"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:01", "ip": "192.168.10.50"}),
            StatusCode::CONFLICT,
            "duplicate_mac",
            Some("mac"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv9", "mac": "02:00:00:00:01:01", "ip": "192.168.10.50"}),
            StatusCode::BAD_REQUEST,
            "unknown_chassis",
            Some("chassis"),
        ),
        (
            "/v1/ports",
            json!({"name": "p", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:01:01", "ip": "192.168.10.100"}),
            StatusCode::CONFLICT,
            "duplicate_ip",
            Some("ip"),
        ),
        (
            "/v1/vips",
            json!({"name": "v", "vpc": "prod", "subnet": "web", "ip": "192.168.10.12", "members": ["pay1"]}),
            StatusCode::CONFLICT,
            "duplicate_ip",
            Some("ip"),
        ),
        (
            "/v1/vips",
            json!({"name": "v", "vpc": "prod", "subnet": "web", "ip": "192.168.10.101", "members": ["ghost"]}),
            StatusCode::BAD_REQUEST,
            "unknown_port",
            Some("members"),
        ),
        (
            "/v1/vips",
            json!({"name": "v", "vpc": "prod", "subnet": "web", "ip": "192.168.10.101"}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
    ];
    for (path, body, status, code, field) in cases {
        let (s, v) = api.post(path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        assert_eq!(v["error"]["code"], code, "{path} {body}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{path} {body}: {v}");
        }
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (s, v) = api.raw_post("/v1/vpcs", "{\"name\": ").await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
    let (s, v) = api.put("/v1/chassis/hv4", json!({"underlay_ip": "172.31.0.1"})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("duplicate_underlay_ip")));
    // Deleting what is referenced is a conflict; unknown names are 404.
    for (path, status) in [
        ("/v1/vpcs/prod", StatusCode::CONFLICT),
        ("/v1/subnets/prod/web", StatusCode::CONFLICT),
        ("/v1/chassis/hv1", StatusCode::CONFLICT),
        ("/v1/ports/pay1", StatusCode::CONFLICT),
        ("/v1/ports/ghost", StatusCode::NOT_FOUND),
    ] {
        assert_eq!(api.delete(path).await.0, status, "{path}");
    }
    let (s, v) = api.put("/v1/vips/pay-vip/members", json!({"members": ["pay1", "client-typo"]})).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_port")));
    assert_eq!(api.everything().await, before, "a refused write changed the state");

    // Valid deletes work once nothing refers to the object.
    assert_eq!(api.delete("/v1/ports/client").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/ports/client").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn claims_move_the_vip_and_refuse_spoofing() {
    let s = file_server().await;
    let api = Api::new(&s);
    api.populate().await;
    let (st, v) = api.claim("02:00:00:00:00:01", "hv1").await;
    assert_eq!(
        (st, v["result"].as_str(), v["owner"]["generation"].as_u64()),
        (StatusCode::OK, Some("accepted"), Some(1))
    );
    // keepalived's burst of five: one change.
    for _ in 0..4 {
        assert_eq!(api.claim("02:00:00:00:00:01", "hv1").await.1["result"], "unchanged");
    }
    assert_eq!(api.claim("02:00:00:00:00:02", "hv2").await.1["owner"]["generation"], 2);
    let (st, v) = api.claim("02:00:00:00:00:03", "hv3").await;
    assert_eq!((st, v["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_member")));
    let (st, _) = api.claim("02:00:00:00:00:01", "hv2").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, vip) = api.get("/v1/vips/pay-vip").await;
    assert_eq!((vip["owner"]["port"].as_str(), vip["owner"]["chassis"].as_str()), (Some("pay2"), Some("hv2")));
    assert_eq!(vip["split_brain"], false);
    let (_, hist) = api.get("/v1/vips/pay-vip/history").await;
    let gens: Vec<u64> = hist.as_array().unwrap().iter().map(|h| h["generation"].as_u64().unwrap()).collect();
    assert_eq!(gens, [1, 2]);
    assert_eq!(hist[1]["previous_port"], "pay1");
    // Rapid alternation flags split-brain.
    api.claim("02:00:00:00:00:01", "hv1").await;
    api.claim("02:00:00:00:00:02", "hv2").await;
    assert_eq!(api.get("/v1/vips/pay-vip").await.1["split_brain"], true);
    let metrics = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("vipcast_controller_claims_total{result=\"refused\"} 2"), "{metrics}");
    assert!(metrics.contains("vipcast_controller_claims_total{result=\"unchanged\"} 4"), "{metrics}");
}

/// Reads NDJSON messages from a watch stream.
struct Watch {
    lines: std::pin::Pin<Box<dyn futures::Stream<Item = Message> + Send>>,
}

impl Watch {
    async fn open(url: &str) -> Watch {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.bytes_stream();
        let lines = futures::stream::unfold((bytes, Vec::<u8>::new()), |(mut bytes, mut buf)| async move {
            loop {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    let m: Message = serde_json::from_slice(&line).unwrap();
                    return Some((m, (bytes, buf)));
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    _ => return None,
                }
            }
        });
        Watch { lines: Box::pin(lines) }
    }

    /// The next message that is not a ping.
    async fn next(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), self.lines.next()).await.unwrap().unwrap();
            if !matches!(m, Message::Ping { .. }) {
                return m;
            }
        }
    }
}

fn revision(m: &Message) -> i64 {
    match m {
        Message::Snapshot { revision, .. } | Message::Delta { revision, .. } | Message::Ping { revision } => *revision,
    }
}

#[tokio::test]
async fn watch_streams_snapshot_then_one_vip_per_move_and_resume() {
    let s = file_server().await;
    let api = Api::new(&s);
    api.populate().await;
    let mut w = Watch::open(&format!("{}/v1/watch/chassis/hv3", s.url)).await;
    let first = w.next().await;
    let Message::Snapshot { objects, .. } = &first else { panic!("{first:?}") };
    // hv3 hosts "client" in prod: it gets prod, its subnet, all 3 ports, the VIP and the 3 chassis.
    assert_eq!(objects.len(), 1 + 1 + 3 + 1 + 3, "{objects:?}");

    api.claim("02:00:00:00:00:01", "hv1").await;
    let m = w.next().await;
    let Message::Delta { upserts, deletes, .. } = &m else { panic!("{m:?}") };
    assert!(deletes.is_empty());
    assert_eq!(upserts.len(), 1, "a VIP move must be a delta of one VIP: {upserts:?}");
    let Object::Vip(v) = &upserts[0] else { panic!("{upserts:?}") };
    assert_eq!(v.owner.as_ref().map(|o| o.port.as_str()), Some("pay1"));
    let seen = revision(&m);
    drop(w);

    // While the subscriber is away the VIP moves twice; it resumes with one delta.
    api.claim("02:00:00:00:00:02", "hv2").await;
    api.claim("02:00:00:00:00:01", "hv1").await;
    let mut w = Watch::open(&format!("{}/v1/watch/chassis/hv3?from={seen}", s.url)).await;
    let m = w.next().await;
    let Message::Delta { upserts, .. } = &m else { panic!("resume should be a delta: {m:?}") };
    assert_eq!(upserts.len(), 1);
    let Object::Vip(v) = &upserts[0] else { panic!() };
    assert_eq!(v.owner.as_ref().map(|o| o.generation), Some(3));

    // A chassis that does not take part in a VPC hears nothing of it.
    let mut other = Watch::open(&format!("{}/v1/watch/chassis/hv9", s.url)).await;
    assert!(matches!(other.next().await, Message::Snapshot { objects, .. } if objects.is_empty()));
    api.put("/v1/chassis/hv9", json!({"underlay_ip": "172.31.0.9"})).await;
    let m = other.next().await;
    assert!(matches!(&m, Message::Delta { upserts, .. } if upserts.len() == 1), "{m:?}");
    api.claim("02:00:00:00:00:02", "hv2").await;
    // hv3 gets the move; hv9 only its ping.
    assert!(matches!(w.next().await, Message::Delta { .. }));
    let idle = tokio::time::timeout(Duration::from_millis(600), other.next()).await;
    assert!(idle.is_err(), "hv9 was sent {idle:?}");

    // A port created on hv9 in prod makes it take part: it gets the whole VPC.
    api.post(
        "/v1/ports",
        json!({"name": "p9", "vpc": "prod", "subnet": "web", "chassis": "hv9", "mac": "02:00:00:00:00:09", "ip": "192.168.10.19"}),
    )
    .await;
    let m = other.next().await;
    let Message::Delta { upserts, .. } = &m else { panic!("{m:?}") };
    assert_eq!(upserts.len(), 1 + 1 + 4 + 1 + 3, "{upserts:?}"); // vpc, subnet, 4 ports, vip, hv1..3 (hv9 it has)
    // ...and hv3 learns the new port and the chassis it is behind.
    let m = w.next().await;
    let Message::Delta { upserts, deletes, .. } = &m else { panic!("{m:?}") };
    let mut kinds: Vec<String> = upserts.iter().map(|o| format!("{:?}", o.key())).collect();
    kinds.sort();
    assert_eq!(kinds, ["Chassis(\"hv9\")", "Port(\"p9\")"], "{m:?}");
    assert!(deletes.is_empty());
    // Removing it takes both away again.
    assert_eq!(api.delete("/v1/ports/p9").await.0, StatusCode::NO_CONTENT);
    let m = w.next().await;
    let Message::Delta { upserts, deletes, .. } = &m else { panic!("{m:?}") };
    let mut deletes = deletes.clone();
    deletes.sort();
    assert!(upserts.is_empty(), "{m:?}");
    assert_eq!(deletes, ["/vipcast/chassis/hv9", "/vipcast/ports/p9"]);
}

#[tokio::test]
async fn two_controllers_on_one_etcd_never_lose_or_duplicate_a_generation() {
    let etcd = vipcast_store::testing::Etcd::start();
    let a = start(Arc::new(EtcdStore::connect(&etcd.endpoints()).await.unwrap()), None).await;
    let b = start(Arc::new(EtcdStore::connect(&etcd.endpoints()).await.unwrap()), None).await;
    let (api_a, api_b) = (Api::new(&a), Api::new(&b));
    api_a.populate().await;
    // Both controllers serve the same state.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api_b.get("/v1/vips/pay-vip").await.0, StatusCode::OK);

    // Racing claims, alternating members, through both controllers at once.
    let rounds = 30;
    let run = |api: Api, mac: &'static str, chassis: &'static str| async move {
        let mut accepted = 0;
        for _ in 0..rounds {
            let (s, v) = api.claim(mac, chassis).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            if v["result"] == "accepted" {
                accepted += 1;
            }
        }
        accepted
    };
    let (x, y) =
        tokio::join!(run(Api::new(&a), "02:00:00:00:00:01", "hv1"), run(Api::new(&b), "02:00:00:00:00:02", "hv2"));
    let (_, hist) = api_a.get("/v1/vips/pay-vip/history").await;
    let gens: Vec<u64> = hist.as_array().unwrap().iter().map(|h| h["generation"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (1..=(x + y) as u64).collect();
    assert_eq!(gens, expected, "generations must be 1..=accepted, each once");
    let owner_gen = api_b.get("/v1/vips/pay-vip").await.1["owner"]["generation"].as_u64().unwrap();
    assert_eq!(owner_gen, (x + y) as u64);

    // Conflicting creations on both controllers: exactly one wins.
    let (ra, rb) = tokio::join!(
        api_a.post("/v1/vpcs", json!({"name": "dev-a", "vni": 300})),
        api_b.post("/v1/vpcs", json!({"name": "dev-b", "vni": 300}))
    );
    let wins = [ra.0, rb.0].iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(wins, 1, "{ra:?} {rb:?}");
    assert!([ra.0, rb.0].contains(&StatusCode::CONFLICT));
}

#[tokio::test]
async fn chassis_liveness_follows_heartbeats() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use vipcast_controller::liveness::encode_heartbeat;
    let s = file_server().await;
    let api = Api::new(&s);
    assert_eq!(api.put("/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})).await.0, StatusCode::OK);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(s.url.trim_start_matches("http://")).await.unwrap();
    let sock = Arc::new(sock);
    // Garbage and unknown chassis change nothing.
    sock.send(b"hello").await.unwrap();
    sock.send(&encode_heartbeat("nobody", 1)).await.unwrap();
    // Heartbeats every 20 ms while `beating`.
    let beating = Arc::new(AtomicBool::new(true));
    let (b, so) = (beating.clone(), sock.clone());
    tokio::spawn(async move {
        let mut seq = 0;
        loop {
            if b.load(Ordering::Relaxed) {
                seq += 1;
                let _ = so.send(&encode_heartbeat("hv1", seq)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let wait_alive = async |want: bool| {
        let t = std::time::Instant::now();
        loop {
            let v = api.get("/v1/chassis/hv1").await.1;
            if v["liveness"]["alive"] == json!(want) {
                return (t.elapsed(), v["liveness"].clone());
            }
            assert!(t.elapsed() < Duration::from_secs(5), "alive never became {want}: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    wait_alive(true).await;
    // Registering again keeps what the controller decided.
    let (st, body) = api.put("/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})).await;
    assert_eq!((st, body["liveness"]["alive"].clone()), (StatusCode::OK, json!(true)));
    // Silence: dead after the 150 ms timeout.
    beating.store(false, Ordering::Relaxed);
    let (after, l) = wait_alive(false).await;
    assert!(after >= Duration::from_millis(110), "declared dead too early: {after:?}");
    assert!(l["last_heard_ms"].as_u64().unwrap() <= l["since_ms"].as_u64().unwrap(), "{l}");
    // It comes back with its next heartbeat.
    beating.store(true, Ordering::Relaxed);
    wait_alive(true).await;
    let metrics = api.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"vipcast_controller_chassis_heartbeats_total{result="malformed"} 1"#,
        r#"vipcast_controller_chassis_heartbeats_total{result="unknown_chassis"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in metrics:\n{metrics}");
    }
    // (A stalled test runtime may add flaps, never remove them.)
    let count = |result: &str| -> u64 {
        let prefix = format!("vipcast_controller_chassis_liveness_changes_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(count("dead") >= 1 && count("alive") >= 2, "{metrics}");
}

#[tokio::test]
async fn a_vpc_patch_changes_only_its_settings() {
    let s = file_server().await;
    let api = Api::new(&s);
    assert_eq!(api.post("/v1/vpcs", json!({"name": "prod", "vni": 100})).await.0, StatusCode::CREATED);
    let patch = async |path: &str, body: Value| api.call(reqwest::Method::PATCH, path, Some(body)).await;
    let (st, v) = patch("/v1/vpcs/prod", json!({"assist": false})).await;
    assert_eq!((st, v["assist"].clone(), v["arp_suppression"].clone()), (StatusCode::OK, json!(false), json!(true)));
    assert_eq!(api.get("/v1/vpcs/prod").await.1["assist"], json!(false));
    // Refused: unknown or immutable fields, wrong types, no such VPC; nothing changes.
    let (st, e) = patch("/v1/vpcs/prod", json!({"vni": 7})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    let (st, e) = patch("/v1/vpcs/prod", json!({"assist": "yes"})).await;
    assert_eq!((st, e["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("assist")), "{e}");
    assert_eq!(patch("/v1/vpcs/nope", json!({"assist": true})).await.0, StatusCode::NOT_FOUND);
    let v = api.get("/v1/vpcs/prod").await.1;
    assert_eq!((v["vni"].clone(), v["assist"].clone()), (json!(100), json!(false)));
}

#[tokio::test]
async fn the_vrrp_view_follows_reports_and_shows_on_the_vip() {
    let s = file_server().await;
    let api = Api::new(&s);
    api.post("/v1/vpcs", json!({"name": "prod", "vni": 100})).await;
    api.post("/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"})).await;
    api.put("/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})).await;
    api.put("/v1/chassis/hv2", json!({"underlay_ip": "10.0.0.2"})).await;
    for (n, c, mac, ip) in
        [("pay1", "hv1", "02:00:00:00:00:01", "192.168.10.11"), ("pay2", "hv2", "02:00:00:00:00:02", "192.168.10.12")]
    {
        let p = json!({"name": n, "vpc": "prod", "subnet": "web", "chassis": c, "mac": mac, "ip": ip});
        assert_eq!(api.post("/v1/ports", p).await.0, StatusCode::CREATED);
    }
    let vip =
        json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1", "pay2"]});
    assert_eq!(api.post("/v1/vips", vip).await.0, StatusCode::CREATED);
    let report = |chassis: &str, mac: &str, ip: &str, priority: u8| {
        json!({"vpc": "prod", "vrid": 51, "version": 3, "master_ip": ip, "master_mac": mac, "chassis": chassis,
               "priority": priority, "interval_cs": 10, "addresses": ["192.168.10.100"],
               "destinations": ["224.0.0.18"], "observed_at": 1})
    };
    let (st, r) = api.post("/v1/vrrp", report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!((r["id"].clone(), r["master"]["port"].clone()), (json!("51-ipv4"), json!("pay1")));
    let v = api.get("/v1/vips/pay-vip").await.1;
    assert_eq!(v["vrrp"][0]["master"]["port"], json!("pay1"), "{v}");
    assert_eq!(v["vrrp"][0]["priority"], json!(150));
    // Refused, nothing stored: a chassis speaking for a port it does not host,
    // bad fields; each names the problem.
    for (body, status, code) in [
        (report("hv2", "02:00:00:00:00:01", "192.168.10.11", 100), StatusCode::FORBIDDEN, "not_a_local_port"),
        (
            {
                let mut b = report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150);
                b["vrid"] = json!(0);
                b
            },
            StatusCode::BAD_REQUEST,
            "invalid_vrid",
        ),
        (
            {
                let mut b = report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150);
                b["version"] = json!(4);
                b
            },
            StatusCode::BAD_REQUEST,
            "invalid_version",
        ),
        (
            {
                let mut b = report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150);
                b["addresses"] = json!(["fd00::1"]);
                b
            },
            StatusCode::BAD_REQUEST,
            "invalid_addresses",
        ),
        (
            {
                let mut b = report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150);
                b["vpc"] = json!("nope");
                b
            },
            StatusCode::BAD_REQUEST,
            "unknown_vpc",
        ),
        (
            {
                let mut b = report("hv1", "02:00:00:00:00:01", "192.168.10.11", 150);
                b["vrid"] = json!(300);
                b
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (st, e) = api.post("/v1/vrrp", body).await;
        assert_eq!((st, e["error"]["code"].as_str().unwrap_or_default()), (status, code), "{e}");
    }
    assert_eq!(api.get("/v1/vrrp").await.1.as_array().unwrap().len(), 1);
    // The backup takes over: its chassis reports it; an assist is counted.
    let (st, e) = api
        .post(
            "/v1/vrrp/prod/51-ipv4/assists",
            json!({"fault": "chassis-dead", "by": "hv2", "master": "192.168.10.11", "at_ms": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{e}");
    let (st, r) = api.post("/v1/vrrp", report("hv2", "02:00:00:00:00:02", "192.168.10.12", 100)).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!((r["master"]["port"].clone(), r["assists"].clone()), (json!("pay2"), json!(1)), "{r}");
    assert_eq!(r["last_assist"]["fault"], json!("chassis-dead"));
    let (st, _) = api
        .post(
            "/v1/vrrp/prod/9-ipv4/assists",
            json!({"fault": "port-down", "by": "hv2", "master": "192.168.10.11", "at_ms": 5}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let metrics = api.http.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    for line in [
        "vipcast_controller_vrrp_routers 1",
        "vipcast_controller_vrrp_master_changes_total 2",
        r#"vipcast_controller_assisted_handovers_total{fault="chassis-dead"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in metrics:\n{metrics}");
    }
    assert_eq!(api.delete("/v1/vrrp/prod/51-ipv4").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/vips/pay-vip").await.1["vrrp"], json!([]));
}
