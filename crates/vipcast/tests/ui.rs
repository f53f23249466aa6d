//! The status page (`/ui`) in a real browser: headless Chromium (Debian
//! `chromium`), driven over the DevTools protocol on a pipe, loads the
//! page from a lab's controller; a failover in the lab (the master's link
//! down) must show the new owner on the page within a second of the
//! controller accepting it, with no reload. A screenshot is written to
//! `$VIPCAST_UI_SCREENSHOT` (default `target/ui-status-page.png`).
//! Over mutual TLS the page answers like the API: 401 without a certificate.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn vipcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vipcast")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A lab over plain HTTP (a browser presenting a client certificate needs a
/// certificate store; authorization is the API's either way, tested below).
struct Lab {
    name: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    fn up(tls: bool) -> Lab {
        let name = format!("ui{}", vipcast_lab::unique_id());
        let file = format!(
            r#"name = "{name}"
[controller]
tls = {tls}
[[vpc]]
name = "prod"
vni = 100
bum = "headend"
[[subnet]]
vpc = "prod"
name = "web"
cidr = "192.168.10.0/24"
[[chassis]]
name = "hv1"
[[chassis]]
name = "hv2"
[[chassis]]
name = "hv3"
[[vm]]
name = "pay1"
chassis = "hv1"
vpc = "prod"
subnet = "web"
ip = "192.168.10.11"
[[vm]]
name = "pay2"
chassis = "hv2"
vpc = "prod"
subnet = "web"
ip = "192.168.10.12"
[[vm]]
name = "client"
chassis = "hv3"
vpc = "prod"
subnet = "web"
ip = "192.168.10.50"
[[vip]]
name = "pay-vip"
vpc = "prod"
subnet = "web"
ip = "192.168.10.100"
members = ["pay1", "pay2"]
advert_int = 0.1
"#
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab.toml");
        std::fs::write(&path, file).unwrap();
        let lab = Lab { name, _dir: dir };
        let o = vipcast(&["lab", "up", path.to_str().unwrap()]);
        assert!(o.status.success(), "lab up failed:\n{}", text(&o));
        lab
    }

    fn status(&self) -> Value {
        serde_json::from_slice(&vipcast(&["lab", "status", &self.name, "--json"]).stdout).unwrap()
    }

    fn owner(&self) -> Option<(String, u64)> {
        let url = self.status()["controller_url"].as_str()?.to_string();
        let body =
            vipcast_lab::state::http_get(&format!("{url}/v1/vips/pay-vip"), None, Duration::from_secs(2)).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        Some((v["owner"]["port"].as_str()?.to_string(), v["owner"]["generation"].as_u64()?))
    }

    fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["lab", "exec", &self.name, node, "--"];
        args.extend_from_slice(cmd);
        vipcast(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let o = vipcast(&["lab", "down", &self.name]);
        if !std::thread::panicking() {
            assert!(o.status.success(), "{}", text(&o));
        }
    }
}

/// Headless Chromium driven over `--remote-debugging-pipe` (DevTools
/// protocol messages, NUL-terminated JSON, on fds 3 and 4).
struct Chrome {
    child: Child,
    to: File,
    from: BufReader<File>,
    next: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Chrome {
    fn start() -> Chrome {
        let (cmd_r, cmd_w) = std::io::pipe().unwrap();
        let (resp_r, resp_w) = std::io::pipe().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let (r, w) = (cmd_r.as_raw_fd(), resp_w.as_raw_fd());
        let mut cmd = Command::new("chromium");
        cmd.args([
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--window-size=1500,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        vipcast_sys::inherit_fds(&mut cmd, &[(r, 3), (w, 4)]);
        let child = cmd.spawn().expect("chromium (Debian chromium, installed by scripts/setup.sh)");
        drop((cmd_r, resp_w));
        let mut c = Chrome {
            child,
            to: File::from(std::os::fd::OwnedFd::from(cmd_w)),
            from: BufReader::new(File::from(std::os::fd::OwnedFd::from(resp_r))),
            next: 0,
            session: String::new(),
            _profile: profile,
        };
        let target = c.call("Target.createTarget", json!({"url": "about:blank"}));
        let id = target["targetId"].as_str().unwrap().to_string();
        let attached = c.call("Target.attachToTarget", json!({"targetId": id, "flatten": true}));
        c.session = attached["sessionId"].as_str().unwrap().to_string();
        c
    }

    /// Sends a command (to the page once attached) and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut msg = json!({"id": self.next, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the pipe");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"].as_u64() == Some(self.next) {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn eval(&mut self, js: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true}))["result"]["value"].clone()
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const OWNER: &str = r#"(() => { const r = document.querySelector('tr[data-vip="pay-vip"]');
    return r ? [r.querySelector('.owner-port').textContent, r.querySelector('.owner-generation').textContent,
                document.getElementById('live').textContent] : null; })()"#;

#[test]
fn the_status_page_shows_a_failover_within_a_second() {
    let lab = Lab::up(false);
    let url = lab.status()["controller_url"].as_str().unwrap().to_string();
    // The VIP has an owner first (keepalived elects pay1).
    let start = Instant::now();
    while lab.owner().is_none_or(|o| o.0 != "pay1") {
        assert!(start.elapsed() < Duration::from_secs(15), "pay1 never owned the VIP: {:?}", lab.owner());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut chrome = Chrome::start();
    chrome.call("Page.enable", json!({}));
    chrome.call("Page.navigate", json!({"url": format!("{url}/ui")}));
    let start = Instant::now();
    loop {
        let v = chrome.eval(OWNER);
        if v.get(0).and_then(Value::as_str) == Some("pay1") && v.get(2).and_then(Value::as_str) == Some("live") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the page never showed pay1, live: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The chassis table is there too.
    let chassis =
        chrome.eval("[...document.querySelectorAll('#chassis tr[data-chassis]')].map(r => r.dataset.chassis)");
    assert_eq!(chassis, json!(["hv1", "hv2", "hv3"]));
    // A failover: pay1's link down. The page follows, without a reload.
    let before = lab.owner().unwrap().1;
    assert!(lab.exec("pay1", &["ip", "link", "set", "eth0", "down"]).status.success());
    let cut = Instant::now();
    let accepted = loop {
        if let Some((port, generation)) = lab.owner()
            && port == "pay2"
            && generation > before
        {
            break Instant::now();
        }
        assert!(cut.elapsed() < Duration::from_secs(10), "the VIP never moved to pay2");
        std::thread::sleep(Duration::from_millis(10));
    };
    let shown = loop {
        let v = chrome.eval(OWNER);
        if v.get(0).and_then(Value::as_str) == Some("pay2") {
            break Instant::now();
        }
        assert!(accepted.elapsed() < Duration::from_secs(5), "the page still shows {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lag = shown.saturating_duration_since(accepted);
    eprintln!("the page showed pay2 {} ms after the controller answered it", lag.as_millis());
    assert!(lag < Duration::from_secs(1), "{} ms", lag.as_millis());
    // The timeline has a band per change.
    let bands = chrome.eval(r#"document.querySelectorAll('tr[data-vip="pay-vip"] svg.timeline rect').length"#);
    assert!(bands.as_u64().unwrap() >= 2, "{bands}");
    let shot = chrome.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = std::env::var("VIPCAST_UI_SCREENSHOT")
        .unwrap_or_else(|_| format!("{}/../../target/ui-status-page.png", env!("CARGO_MANIFEST_DIR")));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {path}");
}

#[test]
fn over_mutual_tls_the_page_is_the_apis_to_authorize() {
    let lab = Lab::up(true);
    let st = lab.status();
    let url = st["controller_url"].as_str().unwrap().to_string();
    let tls = &st["tls"];
    let files = vipcast_tls::ClientFiles {
        ca: tls["ca"].as_str().unwrap().into(),
        cert: tls["cert"].as_str().unwrap().into(),
        key: tls["key"].as_str().unwrap().into(),
    };
    // With the lab's admin certificate: the page and its assets.
    for (path, kind) in [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")] {
        let body = vipcast_lab::state::http_get(&format!("{url}{path}"), Some(&files), Duration::from_secs(5)).unwrap();
        assert!(!body.is_empty(), "{path} ({kind})");
    }
    // Without a certificate: 401, as the API.
    let config = vipcast_tls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        vipcast_tls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(vipcast_tls::roots(&files.ca).unwrap())
    .with_no_client_auth();
    let anon = reqwest::Client::builder().tls_backend_preconfigured(config).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for path in ["/ui", "/ui/app.js", "/v1/watch/vips"] {
        let status = rt.block_on(async { anon.get(format!("{url}{path}")).send().await.unwrap().status() });
        assert_eq!(status.as_u16(), 401, "{path}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
