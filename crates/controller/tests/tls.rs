//! The controller over mutual TLS with authorization, against real clients:
//! certificates from `vipcast_tls::pki`, the controller's own TLS listener,
//! `vipcast_client` with each identity. Who may do what cell by cell is
//! `authz_matrix.txt`, checked by `authz`'s unit test on the pure function
//! and here end to end over mutual TLS for every cell (and a certificate
//! from another CA on every row); also a compromised agent (403, nothing
//! changes), attribution, the metrics, and a reload that keeps established
//! watch streams.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vipcast_api::PeerRole;
use vipcast_client::{ControllerClient, Error, Method, Retry};
use vipcast_controller::tls::TlsServer;
use vipcast_controller::{Config, Controller, serve_tls};
use vipcast_store::FileStore;
use vipcast_tls::pki;

fn issue(dir: &Path, role: PeerRole, name: &str) {
    let sans = if role == PeerRole::Controller { vec!["127.0.0.1".to_string()] } else { vec![] };
    pki::issue(dir, &pki::Request { role, name: name.into(), sans, days: 30 }).unwrap();
}

fn client(url: &str, dir: &Path, name: &str) -> ControllerClient {
    let d = pki::Dir(dir.to_path_buf());
    let files = vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: d.cert(name), key: d.key(name) };
    ControllerClient::with_tls(url, Some(&files)).unwrap()
}

async fn code(c: &ControllerClient, method: Method, path: &str, body: Value) -> Result<Value, (u16, String)> {
    let body = (!body.is_null()).then_some(body);
    c.call(method, path, body.as_ref(), Retry::ONCE).await.map_err(|e| match e {
        Error::Refused { status, code, .. } => (status, code),
        Error::Unavailable(m) => (0, m),
    })
}

/// A controller over mutual TLS with authorization, and a PKI: admin alice,
/// viewer bob, agents hv1 and hv2, replicator rep1, the controller ctl, and
/// another CA (`foreign`) with an admin mallory.
struct Served {
    _dir: tempfile::TempDir,
    pki_dir: std::path::PathBuf,
    foreign: std::path::PathBuf,
    url: String,
    server: Arc<TlsServer>,
}

async fn serve(watch_ping: Duration) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir).unwrap();
    issue(&pki_dir, PeerRole::Controller, "ctl");
    for (role, name) in [
        (PeerRole::Admin, "alice"),
        (PeerRole::Viewer, "bob"),
        (PeerRole::Agent, "hv1"),
        (PeerRole::Agent, "hv2"),
        (PeerRole::Replicator, "rep1"),
    ] {
        issue(&pki_dir, role, name);
    }
    let foreign = dir.path().join("foreign");
    pki::init(&foreign).unwrap();
    issue(&foreign, PeerRole::Admin, "mallory");
    let d = pki::Dir(pki_dir.clone());
    let server = TlsServer::load(d.cert("ctl"), d.key("ctl"), d.ca_cert()).unwrap();
    let store = Arc::new(FileStore::open(dir.path().join("store")).unwrap());
    let config = Config { watch_ping, authorize: true, ..Default::default() };
    let c = Controller::new(store, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(serve_tls(listener, c, server.clone(), std::future::pending()));
    Served { _dir: dir, pki_dir, foreign, url, server }
}

/// A client that trusts `ca` and presents no certificate.
fn anonymous(ca: &Path) -> reqwest::Client {
    let config = vipcast_tls::rustls::ClientConfig::builder_with_provider(Arc::new(
        vipcast_tls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(vipcast_tls::roots(ca).unwrap())
    .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config).build().unwrap()
}

/// The matrix's state (`authz_matrix.txt`): VPCs prod (head-end) and rep
/// (replicator mode), chassis hv1 and hv2, ports pay1, pay2 and r1, VIPs
/// pay-vip and rep-vip.
async fn build_matrix_state(admin: &ControllerClient) {
    for (m, path, body) in [
        (Method::POST, "/v1/vpcs", json!({"name": "prod", "vni": 100, "bum": "headend"})),
        (Method::POST, "/v1/vpcs", json!({"name": "rep", "vni": 200, "bum": "replicator"})),
        (Method::POST, "/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"})),
        (Method::POST, "/v1/subnets", json!({"vpc": "rep", "name": "web", "cidr": "192.168.20.0/24"})),
        (Method::PUT, "/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})),
        (Method::PUT, "/v1/chassis/hv2", json!({"underlay_ip": "10.0.0.2"})),
        (
            Method::POST,
            "/v1/ports",
            json!({"name": "pay1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:01", "ip": "192.168.10.11"}),
        ),
        (
            Method::POST,
            "/v1/ports",
            json!({"name": "pay2", "vpc": "prod", "subnet": "web", "chassis": "hv2", "mac": "02:00:00:00:00:02", "ip": "192.168.10.12"}),
        ),
        (
            Method::POST,
            "/v1/ports",
            json!({"name": "r1", "vpc": "rep", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:03", "ip": "192.168.20.11"}),
        ),
        (
            Method::POST,
            "/v1/vips",
            json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1", "pay2"]}),
        ),
        (
            Method::POST,
            "/v1/vips",
            json!({"name": "rep-vip", "vpc": "rep", "subnet": "web", "ip": "192.168.20.100", "members": ["r1"]}),
        ),
    ] {
        code(admin, m, path, body).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_authenticates_and_authorizes_every_request() {
    let Served { _dir, pki_dir, foreign, url, server } = serve(Duration::from_millis(100)).await;
    let d = pki::Dir(pki_dir.clone());

    let admin = client(&url, &pki_dir, "alice");
    let viewer = client(&url, &pki_dir, "bob");
    let hv1 = client(&url, &pki_dir, "hv1");
    let hv2 = client(&url, &pki_dir, "hv2");
    let rep = client(&url, &pki_dir, "rep1");

    // No certificate: /healthz answers, everything else is 401.
    let anon = anonymous(&d.ca_cert());
    assert_eq!(anon.get(format!("{url}/healthz")).send().await.unwrap().status(), 200);
    let r = anon.get(format!("{url}/v1/vpcs")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    // A certificate from another CA never completes the handshake.
    let f = pki::Dir(foreign.clone());
    let mallory = vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: f.cert("mallory"), key: f.key("mallory") };
    let mallory = ControllerClient::with_tls(&url, Some(&mallory)).unwrap();
    let none: Option<&()> = None;
    assert!(matches!(mallory.call(Method::GET, "/v1/vpcs", none, Retry::ONCE).await, Err(Error::Unavailable(_))));
    // A plain-HTTP client gets nowhere either.
    let plain = reqwest::get(url.replace("https://", "http://") + "/healthz").await;
    assert!(!plain.is_ok_and(|r| r.status().is_success()));

    // The admin builds two VPCs; pay-vip's members are on hv1 and hv2.
    build_matrix_state(&admin).await;
    let claim = |chassis: &str, mac: &str| json!({"mac": mac, "chassis": chassis, "source": "agent", "observed_at": vipcast_api::now_ms()});
    let owner = |v: &Value| v["owner"]["port"].as_str().map(str::to_string);
    let a = code(&hv2, Method::POST, "/v1/vips/pay-vip/claims", claim("hv2", "02:00:00:00:00:02")).await.unwrap();
    assert_eq!(owner(&a).as_deref(), Some("pay2"));

    // The viewer reads and cannot write.
    assert!(code(&viewer, Method::GET, "/v1/vips/pay-vip", Value::Null).await.is_ok());
    assert_eq!(
        code(&viewer, Method::POST, "/v1/vpcs", json!({"name": "x", "vni": 7})).await.unwrap_err(),
        (403, "forbidden".into())
    );

    // A compromised agent (hv1's certificate) tries to take the VIP with a
    // member port on hv2, to re-register hv2 and to read hv2's stream.
    assert_eq!(
        code(&hv1, Method::POST, "/v1/vips/pay-vip/claims", claim("hv2", "02:00:00:00:00:02")).await.unwrap_err().0,
        403
    );
    assert_eq!(
        code(&hv1, Method::POST, "/v1/vips/pay-vip/claims", claim("hv1", "02:00:00:00:00:02")).await.unwrap_err().0,
        403
    );
    assert_eq!(
        code(&hv1, Method::PUT, "/v1/chassis/hv2", json!({"underlay_ip": "10.0.0.66"})).await.unwrap_err().0,
        403
    );
    assert_eq!(code(&hv1, Method::GET, "/v1/watch/chassis/hv2", Value::Null).await.unwrap_err().0, 403);
    assert_eq!(code(&hv1, Method::POST, "/v1/vpcs", json!({"name": "x", "vni": 7})).await.unwrap_err().0, 403);
    let v = code(&admin, Method::GET, "/v1/vips/pay-vip", Value::Null).await.unwrap();
    assert_eq!(owner(&v).as_deref(), Some("pay2"), "the owner did not change");
    let hv2_rec = code(&admin, Method::GET, "/v1/chassis/hv2", Value::Null).await.unwrap();
    assert_eq!(hv2_rec["underlay_ip"], "10.0.0.2");
    // In its own name, with its own port, it may.
    code(&hv1, Method::PUT, "/v1/chassis/hv1", json!({"underlay_ip": "10.0.0.1"})).await.unwrap();
    let moved = code(&hv1, Method::POST, "/v1/vips/pay-vip/claims", claim("hv1", "02:00:00:00:00:01")).await.unwrap();
    assert_eq!(owner(&moved).as_deref(), Some("pay1"));
    // The VIP's history names who made each move, from the certificates.
    let history = code(&admin, Method::GET, "/v1/vips/pay-vip/history", Value::Null).await.unwrap();
    let actors: Vec<&str> = history.as_array().unwrap().iter().map(|h| h["actor"].as_str().unwrap_or("-")).collect();
    assert_eq!(actors, ["agent:hv2", "agent:hv1"]);
    // A replicator claims only for VPCs in replicator mode (prod is head-end).
    let rep_claim = json!({"mac": "02:00:00:00:00:02", "chassis": "hv2", "source": "replicator", "observed_at": vipcast_api::now_ms()});
    assert_eq!(code(&rep, Method::POST, "/v1/vips/pay-vip/claims", rep_claim).await.unwrap_err().0, 403);
    code(&rep, Method::PUT, "/v1/replicators/rep1", json!({"address": "10.0.1.1:4789"})).await.unwrap();
    assert_eq!(
        code(&rep, Method::PUT, "/v1/replicators/rep2", json!({"address": "10.0.1.2:4789"})).await.unwrap_err().0,
        403
    );

    let metrics = admin.call(Method::GET, "/metrics", none, Retry::ONCE).await.unwrap();
    let text = metrics.as_str().unwrap_or_default().to_string();
    assert!(text.contains("vipcast_controller_requests_denied_total{role=\"agent\",reason=\"not_own\"}"), "{text}");
    for which in ["server", "client_ca"] {
        let line = format!("vipcast_controller_certificate_expiry_timestamp_seconds{{certificate=\"{which}\"}} ");
        let value: i64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in {text}"))
            .trim()
            .parse()
            .unwrap();
        assert!(value > 1_700_000_000, "{which} expires at {value}");
    }

    // hv1's watch stream, one connection open across a reload of the
    // controller's files: its pings (every 100 ms) keep coming.
    let files = vipcast_tls::ClientFiles { ca: d.ca_cert(), cert: d.cert("hv1"), key: d.key("hv1") };
    let raw = reqwest::Client::builder().tls_backend_preconfigured(files.config().unwrap()).build().unwrap();
    let resp = raw.get(format!("{url}/v1/watch/chassis/hv1")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    use futures::StreamExt;
    let mut lines = 0;
    let mut reloaded = false;
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    while lines < 8 {
        let chunk =
            tokio::time::timeout_at(end, body.next()).await.expect("the stream stopped").expect("the stream ended");
        lines += chunk.unwrap().iter().filter(|&&b| b == b'\n').count();
        if lines >= 2 && !reloaded {
            server.reload().unwrap();
            reloaded = true;
        }
    }
    // New connections after the reload work.
    assert!(code(&viewer, Method::GET, "/v1/vpcs", Value::Null).await.is_ok());
    let _ = hv2;
}

/// `authz_matrix.txt` end to end: every request of the matrix, over mutual
/// TLS, as each of its identities (an admin, a viewer, agents hv1 and hv2,
/// replicator rep1, a controller's certificate, no certificate), plus a
/// certificate from another CA, which never completes a handshake. A cell
/// the matrix allows must not be refused by authorization (its handler may
/// still refuse it: 400, 404, 409); one it denies is 403 `forbidden` (or
/// 401 `unauthenticated`) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_matrix_holds_over_mutual_tls() {
    let Served { _dir, pki_dir, foreign, url, .. } = serve(Duration::from_secs(10)).await;
    let d = pki::Dir(pki_dir.clone());
    let http = |ca: &Path, cert: &Path, key: &Path| {
        let files = vipcast_tls::ClientFiles { ca: ca.into(), cert: cert.into(), key: key.into() };
        reqwest::Client::builder().tls_backend_preconfigured(files.config().unwrap()).build().unwrap()
    };
    // In the matrix's column order.
    let mut ids: Vec<(String, reqwest::Client)> = ["alice", "bob", "hv1", "hv2", "rep1", "ctl"]
        .iter()
        .map(|n| (n.to_string(), http(&d.ca_cert(), &d.cert(n), &d.key(n))))
        .collect();
    ids.push(("none".into(), anonymous(&d.ca_cert())));
    let f = pki::Dir(foreign.clone());
    let mallory = http(&d.ca_cert(), &f.cert("mallory"), &f.key("mallory"));

    let admin = client(&url, &pki_dir, "alice");
    build_matrix_state(&admin).await;
    let snapshot = |admin: ControllerClient| async move {
        let mut out = Vec::new();
        for path in ["/v1/vpcs", "/v1/subnets", "/v1/chassis", "/v1/ports", "/v1/vips", "/v1/replicators", "/v1/vrrp"] {
            let mut v = code(&admin, Method::GET, path, Value::Null).await.unwrap();
            // Liveness and ownership timestamps aside, what is stored.
            if let Some(items) = v.as_array_mut() {
                for i in items {
                    if let Some(o) = i.as_object_mut() {
                        o.remove("liveness");
                    }
                }
            }
            out.push(v);
        }
        out
    };

    let rows: Vec<(String, String, String, String)> = include_str!("authz_matrix.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                if f[2] == "-" { String::new() } else { f[2].to_string() },
                f[3].into(),
            )
        })
        .collect();
    // Deletes last (an admin's delete changes what later rows are judged
    // against), and in each row the admin last, for the same reason.
    let (deletes, others): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.0 == "DELETE");
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, path, body, want) in others.into_iter().chain(deletes) {
        assert_eq!(want.len(), ids.len(), "{method} {path}");
        let order: Vec<usize> = (1..ids.len()).chain([0]).collect();
        for i in order {
            let (name, http) = &ids[i];
            let expect = want.as_bytes()[i] as char;
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let before = if expect == 'y' { None } else { Some(snapshot(admin.clone()).await) };
            let mut req = http.request(m.clone(), format!("{url}{path}"));
            if !body.is_empty() {
                req = req.header("content-type", "application/json").body(body.clone());
            }
            let resp = tokio::time::timeout(Duration::from_secs(10), req.send()).await.unwrap().unwrap();
            let status = resp.status().as_u16();
            // Watch streams answer 200 and go on: only the head is read.
            let error = if status >= 400 {
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                v["error"]["code"].as_str().unwrap_or("").to_string()
            } else {
                String::new()
            };
            let got = match (status, error.as_str()) {
                (401, "unauthenticated") => 'u',
                (403, "forbidden") => 'n',
                _ => 'y',
            };
            cells += 1;
            if got != expect {
                wrong.push(format!("{method} {path} {body} as {name}: {status} {error}, want {expect}"));
            }
            if let Some(before) = before {
                assert_eq!(snapshot(admin.clone()).await, before, "{method} {path} as {name} changed the state");
            }
            // Another CA's certificate: no handshake, whatever the request.
            if i == 0 {
                let r = mallory.request(m, format!("{url}{path}")).send().await;
                assert!(r.is_err(), "{method} {path} from another CA: {:?}", r.map(|r| r.status()));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {cells} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
    eprintln!("{cells} cells over mutual TLS, each as the matrix says; another CA refused on every row");
}
