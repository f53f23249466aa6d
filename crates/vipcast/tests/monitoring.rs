//! The alerting rules and the Grafana dashboard (`monitoring/`): promtool
//! checks the rules and runs their unit tests, and every vipcast series the
//! rules and the dashboard use is one the project really exports (read from
//! a real controller's `/metrics` and the agent's encoder).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn promtool_checks_the_rules_and_their_tests_pass() {
    let dir = repo().join("monitoring/prometheus");
    for args in [["check", "rules", "vipcast-rules.yml"], ["test", "rules", "vipcast-rules.test.yml"]] {
        let o = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian prometheus, installed by scripts/setup.sh)");
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "promtool {}:\n{said}", args.join(" "));
        eprintln!("promtool {}: {}", args.join(" "), said.trim());
    }
}

/// Sample names a text exposition can hold: counters `_total`, histograms
/// `_bucket`, `_sum`, `_count`, the rest as named.
fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if (w.next(), w.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(name), Some(kind)) = (w.next(), w.next()) else { continue };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
            _ => {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The `vipcast_...` names in `text`.
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text.get(i..).and_then(|t| t.find("vipcast_")).map(|a| a + i) {
        let end =
            b.iter().skip(at).position(|c| !(c.is_ascii_alphanumeric() || *c == b'_')).map_or(b.len(), |n| at + n);
        out.insert(text.get(at..end).unwrap_or_default().to_string());
        i = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_use_only_series_that_are_exported() {
    use vipcast_api::PeerRole;
    use vipcast_tls::pki;
    // A real controller, in process, on loopback, over mutual TLS (the
    // certificate gauges and denied requests exist only so), that has seen
    // a little of everything the rules look at.
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let d = pki::init(&pki_dir).unwrap();
    let issue = |role, name: &str, sans: Vec<String>| {
        pki::issue(&pki_dir, &pki::Request { role, name: name.into(), sans, days: 30 }).unwrap();
    };
    issue(PeerRole::Controller, "ctl", vec!["127.0.0.1".into()]);
    issue(PeerRole::Admin, "alice", vec![]);
    issue(PeerRole::Viewer, "bob", vec![]);
    let store = Arc::new(vipcast_store::FileStore::open(dir.path().join("store")).unwrap());
    let config = vipcast_controller::Config { authorize: true, ..Default::default() };
    let c = vipcast_controller::Controller::new(store, config).await.unwrap();
    let tls = vipcast_controller::tls::TlsServer::load(d.cert("ctl"), d.key("ctl"), d.ca_cert()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(vipcast_controller::serve_tls(listener, c, tls, async {
        let _ = stopped.await;
    }));
    let as_who = |name: &str| {
        let files = vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: d.cert(name), key: d.key(name) };
        vipcast_client::ControllerClient::with_tls(&url, Some(&files)).unwrap()
    };
    let (admin, viewer) = (as_who("alice"), as_who("bob"));
    let call = |who: &vipcast_client::ControllerClient, m: reqwest::Method, path: &str, body: serde_json::Value| {
        let (who, path) = (who.clone(), path.to_string());
        async move { who.call(m, &path, Some(&body), vipcast_client::Retry::ONCE).await }
    };
    use reqwest::Method;
    use serde_json::json;
    for (path, body) in [
        ("/v1/vpcs", json!({"name": "prod", "vni": 100})),
        ("/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"})),
        (
            "/v1/ports",
            json!({"name": "pay1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:01", "ip": "192.168.10.11"}),
        ),
        (
            "/v1/vips",
            json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1"]}),
        ),
    ] {
        if path == "/v1/ports" {
            call(&admin, Method::PUT, "/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})).await.unwrap();
        }
        call(&admin, Method::POST, path, body).await.unwrap();
    }
    let claim =
        |mac: &str| json!({"mac": mac, "chassis": "hv1", "source": "agent", "observed_at": vipcast_api::now_ms()});
    call(&admin, Method::POST, "/v1/vips/pay-vip/claims", claim("02:00:00:00:00:01")).await.unwrap();
    assert!(call(&admin, Method::POST, "/v1/vips/pay-vip/claims", claim("02:00:00:00:00:09")).await.is_err());
    assert!(call(&viewer, Method::POST, "/v1/vpcs", json!({"name": "x", "vni": 7})).await.is_err());
    let none: Option<&()> = None;
    let metrics = |who: vipcast_client::ControllerClient| async move {
        let url = format!("{}/metrics", who.base());
        who.http().get(&url).send().await.unwrap().text().await.unwrap()
    };
    let _ = admin.call(Method::GET, "/v1/vpcs", none, vipcast_client::Retry::ONCE).await;
    let controller = metrics(admin.clone()).await;
    let _ = stop.send(());
    let mut have = exported(&controller);
    have.extend(exported(&vipcast_agent::metrics::Stats::default().encode()));
    assert!(
        have.contains("vipcast_controller_vip_split_brain") && have.contains("vipcast_agent_drift_total"),
        "{have:?}"
    );

    let rules = std::fs::read_to_string(repo().join("monitoring/prometheus/vipcast-rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(repo().join("monitoring/grafana/vipcast.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut wanted =
        used(&rules.lines().filter(|l| l.trim_start().starts_with("expr:")).collect::<Vec<_>>().join("\n"));
    wanted.extend(exprs.iter().flat_map(|e| used(e)));
    let missing: Vec<&String> = wanted.iter().filter(|n| !have.contains(*n)).collect();
    assert!(missing.is_empty(), "series used but not exported: {missing:?}\nexported: {have:?}");
    // Each alert the issue names is there.
    for alert in [
        "VipcastSplitBrain",
        "VipcastChassisDead",
        "VipcastReplicatorDown",
        "VipcastClaimsRefusedRising",
        "VipcastRequestsDeniedRising",
        "VipcastCertificateExpiring",
        "VipcastVipWithoutOwner",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
    }
}
