//! `GET /openapi.json`, checked against the server that serves it.
//!
//! The router is built from the same `routes!` list the document is (a route
//! cannot be served without being documented), so these tests check the
//! other direction and the contents: every documented operation is served at
//! its path and method, every other method on a documented path is refused
//! with 405, the statuses a probe gets are documented, and the request and
//! response bodies of a real session (every route, claims and watch streams
//! included) match the documented schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vipcast_controller::{Config, Controller, serve};
use vipcast_store::FileStore;

/// A controller serving on 127.0.0.1:<random> over a FileStore in a tempdir, stopped on drop.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn file_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let c =
        Controller::new(store, Config { watch_ping: Duration::from_millis(200), ..Default::default() }).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, c, async {
        let _ = rx.await;
    }));
    Server { url, stop: Some(tx), _dir: dir }
}

/// Fetches and sanity-checks the document.
async fn fetch_document(s: &Server) -> Value {
    let resp = reqwest::get(format!("{}/openapi.json", s.url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let text = resp.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3."), "openapi {version}");
    // It reads back as an OpenAPI document, and is the one the code generates.
    let typed: utoipa::openapi::OpenApi = serde_json::from_str(&text).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), doc);
    assert_eq!(serde_json::to_value(vipcast_controller::openapi_document()).unwrap(), doc);
    doc
}

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

/// (path template, method) -> operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                out.insert((path.clone(), method.clone()), op.clone());
            }
        }
    }
    out
}

/// `template` with each `{param}` replaced by `value(param)`.
fn fill(template: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let j = rest[i..].find('}').unwrap() + i;
        out.push_str(&value(&rest[i + 1..j]));
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    out
}

fn params_of(template: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fill(template, |p| {
        out.insert(p.to_string());
        String::new()
    });
    out
}

fn is_stream(op: &Value) -> bool {
    op["responses"]["200"]["content"].get("application/x-ndjson").is_some()
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap()
}

// ---- a checker for the part of JSON Schema the document uses ----

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unexpected type {other}"),
    }
}

/// Appends to `errs` where `v` does not match `schema`.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    if schema == &Value::Bool(false) {
        errs.push(format!("{at}: nothing is allowed here, got {v}"));
        return;
    }
    let schema = resolve(doc, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, v, at, errs);
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let fits: Vec<Vec<String>> = one
            .iter()
            .map(|s| {
                let mut e = Vec::new();
                check(doc, s, v, at, &mut e);
                e
            })
            .collect();
        let n = fits.iter().filter(|e| e.is_empty()).count();
        if n != 1 {
            errs.push(format!("{at}: {v} matches {n} of oneOf (expected 1): {fits:?}"));
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, v) => errs.push(format!("{at}: {v} is not a {t}")),
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_matches(t.as_str().unwrap(), v)) => {
            errs.push(format!("{at}: {v} is none of {ts:?}"))
        }
        _ => {}
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let (Some(min), Some(n)) = (schema.get("minimum").and_then(Value::as_f64), v.as_f64())
        && n < min
    {
        errs.push(format!("{at}: {n} < minimum {min}"));
    }
    if let (Some(max), Some(n)) = (schema.get("maximum").and_then(Value::as_f64), v.as_f64())
        && n > max
    {
        errs.push(format!("{at}: {n} > maximum {max}"));
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: required {r} missing from {v}"));
            }
        }
        for (k, x) in obj {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => check(doc, s, x, &format!("{at}.{k}"), errs),
                (None, Some(Value::Bool(false))) => errs.push(format!("{at}: {k} is not allowed")),
                (None, Some(extra)) if extra.is_object() => check(doc, extra, x, &format!("{at}.{k}"), errs),
                (None, _) => {}
            }
        }
    }
    if let Some(items) = v.as_array() {
        let prefix = schema.get("prefixItems").and_then(Value::as_array).map_or(&[][..], |p| &p[..]);
        for (i, x) in items.iter().enumerate() {
            let at = format!("{at}[{i}]");
            match (prefix.get(i), schema.get("items")) {
                (Some(s), _) | (None, Some(s)) => check(doc, s, x, &at, errs),
                (None, None) => {}
            }
        }
    }
}

fn assert_matches(doc: &Value, schema: &Value, v: &Value, what: &str) {
    let mut errs = Vec::new();
    check(doc, schema, v, "$", &mut errs);
    assert!(errs.is_empty(), "{what} does not match its schema:\n{}\n{v:#}", errs.join("\n"));
}

// ---- the tests ----

#[tokio::test]
async fn every_route_is_documented_and_served() {
    let s = file_server().await;
    let doc = fetch_document(&s).await;
    let ops = operations(&doc);

    // What the API offers today, at least (router() takes its routes from the
    // same list the document is generated from; this only names them).
    let floor = [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/vpcs", "get"),
        ("/v1/vpcs", "post"),
        ("/v1/vpcs/{name}", "get"),
        ("/v1/vpcs/{name}", "delete"),
        ("/v1/subnets", "get"),
        ("/v1/subnets", "post"),
        ("/v1/subnets/{vpc}/{name}", "get"),
        ("/v1/subnets/{vpc}/{name}", "delete"),
        ("/v1/chassis", "get"),
        ("/v1/chassis/{name}", "put"),
        ("/v1/chassis/{name}", "get"),
        ("/v1/chassis/{name}", "delete"),
        ("/v1/ports", "get"),
        ("/v1/ports", "post"),
        ("/v1/ports/{name}", "get"),
        ("/v1/ports/{name}", "delete"),
        ("/v1/vips", "get"),
        ("/v1/vips", "post"),
        ("/v1/vips/{name}", "get"),
        ("/v1/vips/{name}", "delete"),
        ("/v1/vips/{name}/members", "put"),
        ("/v1/vips/{name}/members/{port}", "put"),
        ("/v1/vips/{name}/history", "get"),
        ("/v1/vips/{name}/claims", "post"),
        ("/v1/replicators", "get"),
        ("/v1/replicators/{name}", "put"),
        ("/v1/replicators/{name}", "get"),
        ("/v1/replicators/{name}", "delete"),
        ("/v1/views/chassis/{name}", "get"),
        ("/v1/views/replicators", "get"),
        ("/v1/watch/chassis/{name}", "get"),
        ("/v1/watch/replicators/{name}", "get"),
    ];
    for (p, m) in floor {
        assert!(ops.contains_key(&(p.to_string(), m.to_string())), "{} {p} is not documented", m.to_uppercase());
    }

    let mut ids = BTreeSet::new();
    for ((path, m), op) in &ops {
        let what = format!("{} {path}", m.to_uppercase());
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()), "{what}: operationId used twice");
        // Path parameters: exactly those of the template, each required.
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .inspect(|p| assert_eq!(p["required"], true, "{what}: {p}"))
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(declared, params_of(path), "{what}: path parameters");
        // Every response is described; every JSON error is the error body.
        for (status, r) in op["responses"].as_object().unwrap() {
            assert!(r["description"].is_string(), "{what} {status}: a response needs a description");
            let code: u16 = status.parse().unwrap();
            if code >= 400
                && let Some(c) = r["content"].get("application/json")
            {
                assert_eq!(c["schema"]["$ref"], "#/components/schemas/ErrorBody", "{what} {status}");
            }
        }
        assert!(op["responses"].as_object().unwrap().keys().any(|k| k.starts_with('2')), "{what}: no success response");
    }

    // Every documented operation is served there: probed on an empty state,
    // it neither misses the router (404 no_route) nor the method (405), and
    // what it answers is documented.
    let http = reqwest::Client::new();
    for ((path, m), op) in &ops {
        let what = format!("{} {path}", m.to_uppercase());
        let url = format!("{}{}", s.url, fill(path, |p| format!("no-such-{p}")));
        let mut req = http.request(method(m), &url);
        if op.get("requestBody").is_some() {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        let documented = &op["responses"][status.as_str()];
        assert!(documented.is_object(), "{what} answered {status}, which is not documented");
        if is_stream(op) && status.is_success() {
            assert_eq!(resp.headers()["content-type"], "application/x-ndjson", "{what}");
            continue; // a watch stream does not end; dropping it closes it
        }
        let body = resp.text().await.unwrap();
        if let Some(c) = documented["content"].get("application/json") {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{what}: {e}: {body}"));
            assert_ne!(v["error"]["code"], "no_route", "{what}");
            assert_matches(&doc, &c["schema"], &v, &what);
        }
    }

    // Nothing else is served on a documented path.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = format!("{}{}", s.url, fill(path, |p| format!("no-such-{p}")));
        for m in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let status = http.request(method(m), &url).send().await.unwrap().status();
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{} {path} is served but not documented",
                m.to_uppercase()
            );
        }
    }

    // And the probe can tell a missing route.
    let resp = http.get(format!("{}/v1/no-such-route", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "no_route");
}

#[tokio::test]
async fn vpc_body_and_error_body_schemas() {
    let s = file_server().await;
    let doc = fetch_document(&s).await;

    let body = &doc["paths"]["/v1/vpcs"]["post"]["requestBody"];
    assert_eq!(body["required"], true);
    let vpc = resolve(&doc, &body["content"]["application/json"]["schema"]);
    let props: BTreeSet<&str> = vpc["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(props, BTreeSet::from(["name", "vni", "bum", "arp_suppression", "assist", "encap"]));
    assert_eq!(resolve(&doc, &vpc["properties"]["encap"])["enum"], json!(["vxlan", "gre"]));
    assert_eq!(vpc["required"], json!(["name", "vni"]));
    assert_eq!(vpc["additionalProperties"], false, "unknown fields are refused");
    assert_eq!(resolve(&doc, &vpc["properties"]["bum"])["enum"], json!(["headend", "replicator"]));
    assert_eq!(vpc["properties"]["arp_suppression"]["default"], true);

    let err = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(err["required"], json!(["error"]));
    let detail = resolve(&doc, &err["properties"]["error"]);
    let props: BTreeSet<&str> = detail["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(props, BTreeSet::from(["code", "message", "field"]));
    assert_eq!(detail["required"], json!(["code", "message"]));

    // The special string types say what they hold.
    let port = &doc["components"]["schemas"]["Port"]["properties"];
    assert_eq!(port["mac"]["type"], "string");
    assert_eq!(port["mac"]["example"], "02:00:00:00:00:01");
    assert_eq!(port["ip"]["type"], "string");
    assert_eq!(doc["components"]["schemas"]["Subnet"]["properties"]["cidr"]["format"], "cidr");
    assert_eq!(doc["components"]["schemas"]["Replicator"]["properties"]["address"]["type"], "string");
}

/// Calls the API and checks the request body, the status and the response
/// body against the document.
struct Api<'a> {
    doc: &'a Value,
    url: String,
    http: reqwest::Client,
}

impl Api<'_> {
    async fn call(&self, m: &str, template: &str, args: &[&str], body: Option<Value>) -> (StatusCode, Value) {
        let op = &self.doc["paths"][template][m];
        let what = format!("{} {template}", m.to_uppercase());
        assert!(op.is_object(), "{what} is not documented");
        let mut args = args.iter();
        let path = fill(template, |_| args.next().unwrap().to_string());
        let mut req = self.http.request(method(m), format!("{}{path}", self.url));
        if let Some(b) = &body {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{what} takes no body");
            assert_matches(self.doc, schema, b, &format!("{what} request"));
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let documented = &op["responses"][status.as_str()];
        assert!(documented.is_object(), "{what} answered {status}, which is not documented");
        let text = resp.text().await.unwrap();
        let v = match documented["content"].get("application/json") {
            Some(c) => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_matches(self.doc, &c["schema"], &v, &format!("{what} {status}"));
                v
            }
            None => Value::String(text),
        };
        (status, v)
    }

    async fn ok(&self, m: &str, template: &str, args: &[&str], body: Option<Value>) -> Value {
        let (status, v) = self.call(m, template, args, body).await;
        assert!(status.is_success(), "{} {template}: {status} {v}", m.to_uppercase());
        v
    }
}

/// Reads NDJSON lines of a watch stream as JSON values.
async fn watch_lines(url: &str) -> std::pin::Pin<Box<dyn futures::Stream<Item = Value> + Send>> {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let lines = futures::stream::unfold((resp.bytes_stream(), Vec::<u8>::new()), |(mut bytes, mut buf)| async move {
        loop {
            if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                return Some((serde_json::from_slice(&line).unwrap(), (bytes, buf)));
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    });
    Box::pin(lines)
}

#[tokio::test]
async fn a_session_matches_the_document() {
    let s = file_server().await;
    let doc = fetch_document(&s).await;
    let api = Api { doc: &doc, url: s.url.clone(), http: reqwest::Client::new() };

    // Both stream kinds, opened before anything exists.
    let message = &doc["paths"]["/v1/watch/chassis/{name}"]["get"]["responses"]["200"]["content"]["application/x-ndjson"]
        ["schema"];
    let mut hv1 = watch_lines(&format!("{}/v1/watch/chassis/hv1", s.url)).await;
    let mut reps = watch_lines(&format!("{}/v1/watch/replicators/rep1?from=0", s.url)).await;

    api.ok("post", "/v1/vpcs", &[], Some(json!({"name": "prod", "vni": 100}))).await;
    api.ok(
        "post",
        "/v1/vpcs",
        &[],
        Some(json!({"name": "dev", "vni": 200, "bum": "headend", "arp_suppression": false})),
    )
    .await;
    let subnet = json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24", "gateway": "192.168.10.1"});
    api.ok("post", "/v1/subnets", &[], Some(subnet)).await;
    api.ok("post", "/v1/subnets", &[], Some(json!({"vpc": "dev", "name": "lab", "cidr": "fd00:1::/64"}))).await;
    for i in 1..=3 {
        let name = format!("hv{i}");
        api.ok("put", "/v1/chassis/{name}", &[&name], Some(json!({"underlay_ip": format!("172.31.0.{i}")}))).await;
    }
    let gw = json!({"underlay_ip": "fd00::9", "role": "gateway", "name": "gw1"});
    api.ok("put", "/v1/chassis/{name}", &["gw1"], Some(gw)).await;
    for (i, (name, ch)) in [("pay1", "hv1"), ("pay2", "hv2"), ("client", "hv3")].iter().enumerate() {
        let port = json!({"name": name, "vpc": "prod", "subnet": "web", "chassis": ch,
                          "mac": format!("02:00:00:00:00:0{}", i + 1), "ip": format!("192.168.10.{}", 11 + i)});
        api.ok("post", "/v1/ports", &[], Some(port)).await;
    }
    let vip = json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1"]});
    api.ok("post", "/v1/vips", &[], Some(vip)).await;
    api.ok("put", "/v1/vips/{name}/members", &["pay-vip"], Some(json!({"members": ["pay1", "pay2"]}))).await;
    let v =
        api.ok("put", "/v1/vips/{name}/members/{port}", &["pay-vip", "pay2"], Some(json!({"eligible": false}))).await;
    assert_eq!(v["ineligible"], json!(["pay2"]));
    let v =
        api.ok("put", "/v1/vips/{name}/members/{port}", &["pay-vip", "pay2"], Some(json!({"eligible": true}))).await;
    assert_eq!(v["ineligible"], json!([]));
    let (status, e) = api
        .call("put", "/v1/vips/{name}/members/{port}", &["pay-vip", "client"], Some(json!({"eligible": false})))
        .await;
    assert_eq!(
        (status.as_u16(), e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (400, Some("not_member"), Some("port"))
    );
    api.ok("put", "/v1/replicators/{name}", &["rep1"], Some(json!({"address": "172.31.1.1:4789"}))).await;
    api.ok("put", "/v1/replicators/{name}", &["rep6"], Some(json!({"address": "[fd00::6]:4789", "name": "rep6"})))
        .await;

    // Claims: accepted, unchanged, refused.
    // Observed now: the controller refuses claims more than 30 s off its clock.
    let now = vipcast_controller::now_ms();
    let claim = |mac: &str, ch: &str| json!({"mac": mac, "chassis": ch, "source": "agent", "observed_at": now});
    let a = api.ok("post", "/v1/vips/{name}/claims", &["pay-vip"], Some(claim("02:00:00:00:00:01", "hv1"))).await;
    assert_eq!(a["result"], "accepted");
    let a = api.ok("post", "/v1/vips/{name}/claims", &["pay-vip"], Some(claim("02:00:00:00:00:01", "hv1"))).await;
    assert_eq!(a["result"], "unchanged");
    let b = json!({"mac": "00:00:5e:00:01:07", "chassis": "hv2", "source": "replicator", "observed_at": now + 1});
    api.ok("post", "/v1/vips/{name}/claims", &["pay-vip"], Some(b)).await;
    let (status, e) =
        api.call("post", "/v1/vips/{name}/claims", &["pay-vip"], Some(claim("02:00:00:00:00:03", "hv3"))).await;
    assert_eq!((status, e["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("not_member")));

    // Every read, on a populated state.
    for (template, args) in [
        ("/healthz", &[][..]),
        ("/v1/vpcs", &[]),
        ("/v1/vpcs/{name}", &["prod"]),
        ("/v1/subnets", &[]),
        ("/v1/subnets/{vpc}/{name}", &["prod", "web"]),
        ("/v1/chassis", &[]),
        ("/v1/chassis/{name}", &["gw1"]),
        ("/v1/ports", &[]),
        ("/v1/ports/{name}", &["pay1"]),
        ("/v1/vips", &[]),
        ("/v1/vips/{name}", &["pay-vip"]),
        ("/v1/vips/{name}/history", &["pay-vip"]),
        ("/v1/replicators", &[]),
        ("/v1/replicators/{name}", &["rep6"]),
        ("/v1/views/chassis/{name}", &["hv1"]),
        ("/v1/views/chassis/{name}", &["gw1"]),
        ("/v1/views/replicators", &[]),
    ] {
        api.ok("get", template, args, None).await;
    }
    let history = api.ok("get", "/v1/vips/{name}/history", &["pay-vip"], None).await;
    assert_eq!(history.as_array().unwrap().len(), 2);
    let metrics = api.ok("get", "/metrics", &[], None).await;
    assert!(metrics.as_str().unwrap().contains("vipcast_controller_claims_total"));

    // Refusals carry the documented statuses and the error body.
    let conflicts = [
        ("post", "/v1/vpcs", vec![], Some(json!({"name": "again", "vni": 100})), "duplicate_vni"),
        ("post", "/v1/vpcs", vec![], Some(json!({"name": "a/b", "vni": 300})), "invalid_name"),
        ("delete", "/v1/vpcs/{name}", vec!["prod"], None, "in_use"),
        ("delete", "/v1/ports/{name}", vec!["pay1"], None, "in_use"),
        ("put", "/v1/chassis/{name}", vec!["hv9"], Some(json!({"underlay_ip": "172.31.0.1"})), "duplicate_underlay_ip"),
        ("get", "/v1/views/chassis/{name}", vec!["ghost"], None, "not_found"),
    ];
    for (m, template, args, body, code) in conflicts {
        let (status, e) = api.call(m, template, &args, body).await;
        assert!(status.is_client_error(), "{m} {template}: {status}");
        assert_eq!(e["error"]["code"], code, "{m} {template}");
    }
    let resp = reqwest::get(format!("{}/v1/views/replicators?from=x", s.url)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "documented as a plain-text 400");

    // Deletes.
    api.ok("delete", "/v1/replicators/{name}", &["rep6"], None).await;
    api.ok("delete", "/v1/vips/{name}", &["pay-vip"], None).await;
    api.ok("delete", "/v1/ports/{name}", &["client"], None).await;
    api.ok("delete", "/v1/chassis/{name}", &["hv3"], None).await;
    api.ok("delete", "/v1/subnets/{vpc}/{name}", &["dev", "lab"], None).await;
    api.ok("delete", "/v1/vpcs/{name}", &["dev"], None).await;

    // What the streams carried, up to now: a snapshot, then deltas with
    // upserts of every kind and deletes.
    let healthz = api.ok("get", "/healthz", &[], None).await;
    let now = healthz["revision"].as_i64().unwrap();
    for (name, stream) in [("hv1", &mut hv1), ("rep1", &mut reps)] {
        let mut kinds = BTreeSet::new();
        let mut types = BTreeSet::new();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap();
            assert_matches(&doc, message, &m, &format!("a watch message to {name}"));
            types.insert(m["type"].as_str().unwrap().to_string());
            for o in m["objects"].as_array().into_iter().chain(m["upserts"].as_array()).flatten() {
                kinds.insert(o["kind"].as_str().unwrap().to_string());
            }
            // Pings carry the revision a stream has reached, concerned or not.
            if m["revision"].as_i64().unwrap() >= now {
                break;
            }
        }
        assert!(types.contains("delta"), "{name}: {types:?}");
        for k in ["vpc", "chassis", "port", "vip", "replicator"] {
            assert!(kinds.contains(k), "{name} was sent no {k}: {kinds:?}");
        }
    }
}
