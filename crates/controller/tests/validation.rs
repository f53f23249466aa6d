//! Registrations the model refuses, over HTTP: tunnel endpoints that are no
//! host's, a VRRP virtual MAC given as a port's, a VRRP master outside its
//! VPC. Each has its own code, and a refused write changes nothing.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use vipcast_controller::{Config, Controller, serve};
use vipcast_store::FileStore;

/// A controller on 127.0.0.1:<random> over a FileStore in a tempdir, stopped on drop.
struct Server {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let config = Config { watch_ping: Duration::from_millis(200), ..Default::default() };
    let c = Controller::new(store, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, c, async {
        let _ = rx.await;
    }));
    Server { url, _dir: dir, stop: Some(tx) }
}

async fn call(url: &str, method: reqwest::Method, path: &str, body: Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new().request(method, format!("{url}{path}")).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn each_validation_gap_is_refused_with_its_own_code() {
    use reqwest::Method;
    let s = start().await;
    let ok = |(st, v): (StatusCode, Value)| assert!(st.is_success(), "{st} {v}");
    ok(call(&s.url, Method::POST, "/v1/vpcs", json!({"name": "prod", "vni": 100})).await);
    ok(call(&s.url, Method::POST, "/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"}))
        .await);
    ok(call(&s.url, Method::PUT, "/v1/chassis/hv1", json!({"underlay_ip": "172.31.0.1"})).await);
    let port = |mac: &str| json!({"name": "p2", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": mac, "ip": "192.168.10.12"});
    ok(call(&s.url, Method::POST, "/v1/ports", json!({"name": "p1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:01", "ip": "192.168.10.11"})).await);
    let report = |ip: &str| {
        json!({"vpc": "prod", "vrid": 51, "version": 3, "master_ip": ip, "master_mac": "02:00:00:00:00:01",
               "chassis": "hv1", "priority": 150, "interval_cs": 10, "addresses": ["192.168.10.100"],
               "destinations": ["224.0.0.18"], "observed_at": 1})
    };
    let before: Vec<Value> = {
        let mut out = Vec::new();
        for kind in ["chassis", "ports", "vrrp"] {
            out.push(call(&s.url, Method::GET, &format!("/v1/{kind}"), Value::Null).await.1);
        }
        out
    };
    let cases: Vec<(Method, &str, Value, StatusCode, &str, &str)> = vec![
        (
            Method::PUT,
            "/v1/chassis/hv2",
            json!({"underlay_ip": "::ffff:172.31.0.1"}),
            StatusCode::BAD_REQUEST,
            "ipv4_mapped_underlay_ip",
            "underlay_ip",
        ),
        (
            Method::PUT,
            "/v1/chassis/hv2",
            json!({"underlay_ip": "255.255.255.255"}),
            StatusCode::BAD_REQUEST,
            "broadcast_underlay_ip",
            "underlay_ip",
        ),
        (
            Method::PUT,
            "/v1/chassis/hv2",
            json!({"underlay_ip": "127.0.0.1"}),
            StatusCode::BAD_REQUEST,
            "loopback_underlay_ip",
            "underlay_ip",
        ),
        (
            Method::PUT,
            "/v1/chassis/hv2",
            json!({"underlay_ip": "169.254.1.1"}),
            StatusCode::BAD_REQUEST,
            "link_local_underlay_ip",
            "underlay_ip",
        ),
        (
            Method::PUT,
            "/v1/chassis/hv2",
            json!({"underlay_ip": "172.31.0.1"}),
            StatusCode::CONFLICT,
            "duplicate_underlay_ip",
            "underlay_ip",
        ),
        (Method::POST, "/v1/ports", port("00:00:5e:00:01:33"), StatusCode::BAD_REQUEST, "vrrp_virtual_mac", "mac"),
        (Method::POST, "/v1/ports", port("00:00:5e:00:02:07"), StatusCode::BAD_REQUEST, "vrrp_virtual_mac", "mac"),
        (Method::POST, "/v1/vrrp", report("10.1.2.3"), StatusCode::BAD_REQUEST, "master_outside_subnet", "master_ip"),
        (
            Method::POST,
            "/v1/vrrp",
            report("192.168.10.255"),
            StatusCode::BAD_REQUEST,
            "master_outside_subnet",
            "master_ip",
        ),
    ];
    for (method, path, body, status, code, field) in cases {
        let (st, e) = call(&s.url, method, path, body.clone()).await;
        assert_eq!(
            (st, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (status, Some(code), Some(field)),
            "{path} {body}: {e}"
        );
    }
    let mut after = Vec::new();
    for kind in ["chassis", "ports", "vrrp"] {
        after.push(call(&s.url, Method::GET, &format!("/v1/{kind}"), Value::Null).await.1);
    }
    assert_eq!(after, before, "a refused write changed something");
    // What is allowed still is.
    ok(call(&s.url, Method::PUT, "/v1/chassis/hv2", json!({"underlay_ip": "172.31.0.2"})).await);
    ok(call(&s.url, Method::POST, "/v1/ports", port("02:00:00:00:00:02")).await);
    ok(call(&s.url, Method::POST, "/v1/vrrp", report("192.168.10.11")).await);
}
