//! The controller under hostile or broken clients, served for real on
//! loopback: connections that never finish a request or never send one,
//! bodies too large or too slow, more idle sockets than the process has
//! descriptors (in a child process with `ulimit -n 1024`), requests with
//! made-up methods, error answers, and a flood of junk on the heartbeat
//! port. Every test is bounded in time (timeouts of a few hundred ms here)
//! and leaves nothing behind (servers stop on drop, the child is killed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vipcast_controller::liveness::{LivenessConfig, SourcePolicy, encode_heartbeat};
use vipcast_controller::{Config, Controller, HttpLimits, serve};
use vipcast_store::FileStore;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A controller on 127.0.0.1:<random> (and its heartbeat port, if asked
/// for), stopped on drop.
struct Server {
    addr: SocketAddr,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    liveness: Option<tokio::task::JoinHandle<std::io::Error>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(l) = self.liveness.take() {
            l.abort();
        }
    }
}

async fn start(config: Config, liveness: Option<LivenessConfig>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let c = Controller::new(store, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let liveness = match liveness {
        Some(cfg) => {
            let hb = tokio::net::UdpSocket::bind(addr).await.unwrap();
            Some(tokio::spawn(vipcast_controller::liveness::run(c.clone(), hb, cfg)))
        }
        None => None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, c, async {
        let _ = rx.await;
    }));
    Server { addr, url: format!("http://{addr}"), stop: Some(tx), liveness, _dir: dir }
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of the series `name{labels}` in a Prometheus text exposition (0 if absent).
fn series(metrics: &str, name_and_labels: &str) -> u64 {
    let prefix = format!("{name_and_labels} ");
    metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Waits until the peer closes `s` (EOF or reset), reading and dropping
/// what comes; the time it took, or `None` if still open after `limit`.
async fn closed_within(s: &mut (impl AsyncReadExt + Unpin), limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(t.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Value,
    /// From the end of the request to the end of the answer.
    took: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one HTTP/1.1 answer with a `content-length` off `s` (within 5 s).
async fn read_answer(s: &mut (impl AsyncReadExt + Unpin), since: Instant) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = &buf[end + 4..end + 4 + len];
                    let status = head[9..12].parse().unwrap();
                    let body = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap() };
                    return Answer { status, head, body, took: since.elapsed() };
                }
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a whole answer: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.expect("no answer within 5 s")
}

/// Sends `request` on a new connection and reads the answer.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_answer(&mut s, Instant::now()).await
}

fn assert_error(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    assert_eq!(a.body["error"]["code"], code, "{a:?}");
    assert!(a.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_slow_bodies_and_idle_connections_are_closed() {
    let http =
        HttpLimits { idle_timeout: ms(400), header_timeout: ms(300), body_timeout: ms(300), ..Default::default() };
    // Pings far apart: the watch stream below stays quiet for longer than every timeout.
    let s = start(Config { http, watch_ping: Duration::from_secs(60), ..Default::default() }, None).await;

    // A watch stream: one response that never ends.
    let resp = reqwest::get(format!("{}/v1/watch/replicators/rep1", s.url)).await.unwrap();
    let mut watch = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap();
    assert!(first.starts_with(b"{\"type\":\"snapshot\""), "{first:?}");

    // Open and silent from the start.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let opened_silent = Instant::now();
    // Silent after one request (keep-alive).
    let mut kept = TcpStream::connect(s.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    assert_eq!(read_answer(&mut kept, Instant::now()).await.status, 200);
    let kept_quiet = Instant::now();
    // A head trickling in, a byte every 50 ms, never complete.
    let (mut head_r, mut head_w) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let head_began = Instant::now();
    let trickle_head = tokio::spawn(async move {
        head_w.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ").await.unwrap();
        while head_w.write_all(b"a").await.is_ok() {
            tokio::time::sleep(ms(50)).await;
        }
    });
    // A body trickling in after a complete head.
    let (mut body_r, mut body_w) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let sent_head = Instant::now();
    let trickle_body = tokio::spawn(async move {
        let head =
            "POST /v1/vpcs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
        body_w.write_all(head.as_bytes()).await.unwrap();
        body_w.write_all(b"{\"name\":").await.unwrap();
        while body_w.write_all(b" ").await.is_ok() {
            tokio::time::sleep(ms(50)).await;
        }
    });

    // Each waited for at the same time, timed from when it went quiet.
    let limit = Duration::from_secs(3);
    let now = Instant::now();
    let (idle, idle_kept, slow_head, slow_body) = tokio::join!(
        closed_within(&mut silent, limit),
        closed_within(&mut kept, limit),
        closed_within(&mut head_r, limit),
        async {
            let a = read_answer(&mut body_r, sent_head).await;
            (closed_within(&mut body_r, limit).await, a)
        },
    );
    let since = |opened: Instant, d: Option<Duration>| (now + d.unwrap()).saturating_duration_since(opened);
    let idle = since(opened_silent, Some(idle.expect("an idle new connection stayed open")));
    let idle_kept = since(kept_quiet, Some(idle_kept.expect("an idle kept-alive connection stayed open")));
    let slow_head = since(head_began, Some(slow_head.expect("a trickling head kept its connection open")));
    let (body_closed, slow_body) = slow_body;
    assert_error(&slow_body, 408, "body_timeout");
    assert_eq!(slow_body.header("connection"), Some("close"));
    assert!(body_closed.is_some(), "not closed after the 408");
    eprintln!(
        "closed after: idle {idle:?}, idle after a request {idle_kept:?}, trickling head {slow_head:?}; \
         trickling body answered 408 after {:?}",
        slow_body.took
    );
    // By the timeouts, not at once (generous: load only makes them later).
    assert!(idle >= ms(300) && idle_kept >= ms(300) && slow_head >= ms(200), "{idle:?} {idle_kept:?} {slow_head:?}");
    assert!(slow_body.took >= ms(250), "{slow_body:?}");
    trickle_head.abort();
    trickle_body.abort();

    // The watch stream, silent all along, is still there and carries what changes now.
    let created = reqwest::Client::new()
        .post(format!("{}/v1/vpcs", s.url))
        .json(&json!({"name": "prod", "vni": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let delta = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap();
    let delta: Value = serde_json::from_slice(&delta).unwrap();
    assert_eq!(
        (delta["type"].as_str(), delta["upserts"][0]["name"].as_str()),
        (Some("delta"), Some("prod")),
        "{delta}"
    );

    let m = metrics(&s.url).await;
    assert!(series(&m, r#"vipcast_controller_http_connections_closed_total{reason="idle_timeout"}"#) >= 2, "{m}");
    assert!(series(&m, r#"vipcast_controller_http_connections_closed_total{reason="header_timeout"}"#) >= 1, "{m}");
}

#[tokio::test]
async fn every_refusal_answers_the_json_error_body() {
    let s = start(Config::default(), None).await;
    // A body announced as 100 MB: refused from its Content-Length, at once.
    let a = exchange(
        s.addr,
        b"POST /v1/vpcs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000000\r\n\r\n",
    )
    .await;
    assert_error(&a, 413, "body_too_large");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(a.took < Duration::from_secs(2), "{a:?}");
    // A body without a length, growing past the limit (1 MiB).
    let big = futures::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024])));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/vpcs", s.url))
        .body(reqwest::Body::wrap_stream(big))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "body_too_large");
    // A method the path does not have: 405 with Allow, and the error body.
    let a = exchange(s.addr, b"DELETE /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_error(&a, 405, "method_not_allowed");
    assert!(a.header("allow").is_some_and(|v| v.contains("GET")), "{a:?}");
    let a = exchange(s.addr, b"BREW /v1/vpcs HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_error(&a, 405, "method_not_allowed");
    // A path too long, headers too large.
    let a =
        exchange(s.addr, format!("GET /v1/vpcs/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(10_000)).as_bytes()).await;
    assert_error(&a, 414, "uri_too_long");
    let a = exchange(
        s.addr,
        format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(40_000)).as_bytes(),
    )
    .await;
    assert_error(&a, 431, "headers_too_large");
    // A query string that is not understood, on both routes that take one.
    for path in ["/v1/watch/chassis/hv1?from=x", "/v1/watch/replicators/r1?from=x", "/v1/views/replicators?from=x"] {
        let a = exchange(s.addr, format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes()).await;
        assert_error(&a, 400, "invalid_query");
        assert_eq!(a.body["error"]["field"], "from", "{a:?}");
    }
    // No route.
    assert_error(&exchange(s.addr, b"GET /nope HTTP/1.1\r\nhost: x\r\n\r\n").await, 404, "no_route");
    // Data after the JSON value: refused, nothing created; whitespace is fine.
    let post = |body: &str| {
        format!(
            "POST /v1/vpcs HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let a = exchange(s.addr, post(r#"{"name":"x1","vni":500} junk"#).as_bytes()).await;
    assert_error(&a, 400, "malformed_json");
    assert!(a.body["error"]["message"].as_str().unwrap().contains("trailing"), "{a:?}");
    let a = exchange(s.addr, post(r#"{"name":"x1","vni":500}{"name":"x2","vni":501}"#).as_bytes()).await;
    assert_error(&a, 400, "malformed_json");
    assert_error(&exchange(s.addr, b"GET /v1/vpcs/x1 HTTP/1.1\r\nhost: x\r\n\r\n").await, 404, "not_found");
    let a = exchange(s.addr, post("{\"name\":\"x1\",\"vni\":500} \r\n\t").as_bytes()).await;
    assert_eq!(a.status, 201, "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_and_paths_leave_the_metrics_small() {
    let s = start(Config::default(), None).await;
    let http = reqwest::Client::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let requests: Vec<(String, String)> = (0..10_000)
        .map(|i| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let path = if i % 2 == 0 { "/healthz".to_string() } else { format!("/v1/vpcs/{:x}/x", seed >> 16) };
            (format!("M{:X}", seed >> 24), path)
        })
        .collect();
    let answered = futures::stream::iter(requests)
        .map(|(m, path)| {
            let req = http.request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), format!("{}{path}", s.url));
            async move { req.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(8)
        .collect::<Vec<u16>>()
        .await;
    assert!(answered.iter().all(|&st| st == 405 || st == 404), "{:?}", &answered[..10]);
    let m = metrics(&s.url).await;
    let other: u64 = m
        .lines()
        .filter(|l| l.starts_with("vipcast_controller_http_requests_total{") && l.contains("method=\"other\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let series = m.lines().filter(|l| l.starts_with("vipcast_controller_http_requests_total{")).count();
    eprintln!("/metrics after 10000 requests with made-up methods: {} bytes, {series} request series", m.len());
    assert_eq!(other, 10_000, "{m}");
    assert!(series <= 4, "{m}");
    assert!(m.len() < 16 * 1024, "/metrics is {} bytes", m.len());
    // Matched routes are labelled by their template, not the path.
    reqwest::get(format!("{}/v1/vpcs/some-name", s.url)).await.unwrap();
    let m = metrics(&s.url).await;
    assert!(m.contains(r#"method="GET",route="/v1/vpcs/{name}",status="404""#), "{m}");
    assert!(!m.contains("some-name"), "{m}");
}

// ---- more idle sockets than descriptors, in a child process ----

/// Environment variable that makes [`child_controller`] serve.
const CHILD: &str = "VIPCAST_TEST_LIMITS_CHILD";

/// Not a test: the entry of the child process of
/// [`idle_sockets_beyond_the_descriptor_limit_leave_the_api_answering`]
/// (this test binary run again with `ulimit -n 1024`). It sets up as
/// `vipcast controller` does — soft limit raised to the hard one, the
/// connection cap fitted to it — prints its address and serves until its
/// stdin closes.
#[test]
fn child_controller() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let soft = vipcast_sys::raise_nofile_limit().unwrap();
    let http = HttpLimits::default().fit_descriptors(soft);
    let cap = http.max_connections;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FileStore::open(dir.path()).unwrap());
        let config = Config { http, watch_ping: ms(100), ..Default::default() };
        let c = Controller::new(store, config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("CHILD {} {soft} {cap}", listener.local_addr().unwrap());
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        serve(listener, c, async {
            let _ = stdin_closed.await;
        })
        .await
        .unwrap();
    });
}

/// The child process, killed on drop.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts [`child_controller`] under `ulimit` (`-n 1024`: soft and hard;
/// `-S -n 1024`: the soft limit only); its address, descriptor limit and cap.
fn spawn_child(ulimit: &str) -> (Child, SocketAddr, u64, usize) {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args(["child_controller", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Child(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // (after libtest's "test child_controller ... ", on the same line)
            if let Some((_, rest)) = line.split_once("CHILD ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).expect("the child controller did not start");
    let mut it = line.split(' ');
    let addr = it.next().unwrap().parse().unwrap();
    let soft = it.next().unwrap().parse().unwrap();
    let cap = it.next().unwrap().parse().unwrap();
    (child, addr, soft, cap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_descriptor_limit_leave_the_api_answering() {
    const IDLE: usize = 1_100;
    // This process opens the idle sockets: it needs the descriptors.
    let ours = vipcast_sys::raise_nofile_limit().unwrap();
    if ours < (IDLE + 200) as u64 {
        eprintln!("skipped: this process may open {ours} descriptors, fewer than {IDLE} sockets need");
        return;
    }
    let (_, hard) = vipcast_sys::nofile_limit().unwrap();
    for ulimit in ["-n 1024", "-S -n 1024"] {
        let (child, addr, soft, cap) = spawn_child(ulimit);
        let url = format!("http://{addr}");
        match ulimit {
            "-n 1024" => assert_eq!((soft, cap), (1024, 768), "soft = hard = 1024: the cap leaves a quarter"),
            _ => assert_eq!(soft, hard, "the soft limit is raised to the hard one"),
        }
        // A watch stream first: a request in progress, which no idle socket displaces.
        let mut watch = reqwest::get(format!("{url}/v1/watch/replicators/rep1")).await.unwrap().bytes_stream();
        assert!(tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().is_some());
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // Let the child accept them all.
        tokio::time::sleep(ms(300)).await;
        let t = Instant::now();
        let http = reqwest::Client::new();
        for _ in 0..5 {
            let r = tokio::time::timeout(Duration::from_secs(5), http.get(format!("{url}/healthz")).send()).await;
            let r = r.expect("the API did not answer within 5 s").unwrap();
            assert_eq!(r.status(), 200);
        }
        let r = http.post(format!("{url}/v1/vpcs")).json(&json!({"name": "prod", "vni": 100})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let answered = t.elapsed();
        // The watch stream carries the new VPC (and pings): it was never closed.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("\"prod\"") {
            let left = deadline.checked_duration_since(Instant::now()).expect("the watch stream did not carry the VPC");
            let chunk =
                tokio::time::timeout(left, watch.next()).await.unwrap().expect("the watch stream ended").unwrap();
            seen.extend_from_slice(&chunk);
        }
        let m = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        let open = series(&m, "vipcast_controller_http_connections");
        let evicted = series(&m, r#"vipcast_controller_http_connections_closed_total{reason="evicted"}"#);
        eprintln!(
            "ulimit {ulimit}: descriptors {soft}, cap {cap}; {IDLE} idle sockets: API answered 6 requests in \
             {answered:?}; {open} connections open, {evicted} idle ones closed to make room"
        );
        assert!(open as usize <= cap + 1, "{open} open, cap {cap}");
        if cap < IDLE {
            assert!(evicted as usize >= IDLE - cap, "{evicted} evicted");
        }
        drop(idle);
        drop(child);
    }
}

// ---- heartbeats under a flood ----

/// What a flood did.
#[derive(Debug)]
struct Flood {
    deaths: u64,
    hv1_unchanged: bool,
    hv2: Value,
    malformed: u64,
    wrong_source: u64,
    drops: u64,
    api_ok: u32,
}

#[test]
fn a_junk_flood_declares_no_live_chassis_dead_and_other_sources_are_ignored() {
    // As `vipcast controller` runs: underlay sources only, junk dropped in the kernel.
    let f = in_netns(|| flood(LivenessConfig::hardened()));
    assert_eq!(f.deaths, 0, "a live chassis was declared dead during the flood: {f:?}");
    assert!(f.hv1_unchanged, "hv1's liveness changed during the flood: {f:?}");
    assert_eq!(f.hv2, Value::Null, "heartbeats from another address than hv2's counted: {f:?}");
    assert!(f.wrong_source > 0 && f.drops > 0, "{f:?}");
    assert!(f.api_ok > 0, "the API did not answer during the flood: {f:?}");
}

/// The same flood without the socket filter: every datagram reaches the
/// receiving thread. Not asserted on (on a loaded 2-core machine the
/// thread can fall behind one sender); for measurements:
/// `cargo test -p vipcast-controller --test limits -- --ignored --nocapture`.
#[test]
#[ignore]
fn a_junk_flood_without_the_socket_filter() {
    let f = in_netns(|| flood(LivenessConfig { source: SourcePolicy::Underlay, ..Default::default() }));
    assert!(f.malformed > 0, "{f:?}");
}

/// Runs `f` on a runtime inside a namespace of its own, where an
/// interface holds the chassis' underlay addresses 10.88.0.11-14 (a chassis'
/// `underlay_ip` may not be a loopback address); the controller listens on
/// the namespace's 127.0.0.1. The namespace goes when the test ends.
fn in_netns<F: std::future::Future<Output = Flood> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> Flood {
    let ns = vipcast_lab::Netns::new(format!("vcfl{}", vipcast_lab::unique_id())).unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    // (No dummy driver in this kernel: a veth pair inside the namespace.)
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]).unwrap();
    ns.ip(&["link", "set", "d1", "up"]).unwrap();
    for a in ["10.88.0.11/32", "10.88.0.12/32", "10.88.0.13/32", "10.88.0.14/32"] {
        ns.ip(&["addr", "add", a, "dev", "d0"]).unwrap();
    }
    ns.ip(&["link", "set", "d0", "up"]).unwrap();
    let name = ns.name().to_string();
    // Threads (the runtime's, the senders') are created from this one and
    // inherit its namespace.
    let flood = std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(f())
    })
    .join()
    .unwrap();
    drop(ns);
    flood
}

/// hv1 heartbeats from its underlay address every 50 ms, hv2's heartbeats
/// come from another address than its own; then one thread sends junk as
/// fast as it can for 3 s.
async fn flood(cfg: LivenessConfig) -> Flood {
    let s = start(Config::default(), Some(cfg)).await;
    let http = reqwest::Client::new();
    // hv1 heartbeats from its underlay address; hv2's heartbeats come from
    // another address than its own, and must not count.
    for (name, ip) in [("hv1", "10.88.0.11"), ("hv2", "10.88.0.12")] {
        let r =
            http.put(format!("{}/v1/chassis/{name}", s.url)).json(&json!({"underlay_ip": ip})).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let beat = |name: &'static str, from: &'static str| {
        let (stop, to) = (stop.clone(), s.addr);
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind((from, 0)).unwrap();
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let _ = sock.send_to(&encode_heartbeat(name, seq), to);
                std::thread::sleep(ms(50));
            }
        })
    };
    let beaters = [beat("hv1", "10.88.0.11"), beat("hv2", "10.88.0.13")];
    let chassis = async |name: &str| -> Value {
        http.get(format!("{}/v1/chassis/{name}", s.url)).send().await.unwrap().json().await.unwrap()
    };
    let t = Instant::now();
    while chassis("hv1").await["liveness"]["alive"] != json!(true) {
        assert!(t.elapsed() < Duration::from_secs(5), "hv1 never became alive");
        tokio::time::sleep(ms(20)).await;
    }
    let before = chassis("hv1").await["liveness"].clone();

    // Junk as fast as one thread can send it for 3 s, from another address
    // and from hv1's own (another port): zeros, random bytes, and
    // heartbeats naming hv1 from the wrong address.
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent, to) = (stop.clone(), sent.clone(), s.addr);
        std::thread::spawn(move || {
            let socks = [
                std::net::UdpSocket::bind("10.88.0.14:0").unwrap(),
                std::net::UdpSocket::bind("10.88.0.11:0").unwrap(),
            ];
            let spoof = encode_heartbeat("hv1", 1);
            let mut junk = [0u8; 20];
            let mut x = 1u64;
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < Duration::from_secs(3) && !stop.load(Ordering::Relaxed) {
                for i in 0..512u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    junk[..8].copy_from_slice(&x.to_le_bytes());
                    let what: &[u8] = if i % 64 == 0 { &spoof } else { &junk };
                    let _ = socks[(i % 2) as usize].send_to(what, to);
                    n += 1;
                }
            }
            sent.store(n, Ordering::Relaxed);
            t.elapsed()
        })
    };
    // The API keeps answering meanwhile.
    let mut api_ok = 0;
    while !flood.is_finished() {
        if http.get(format!("{}/healthz", s.url)).send().await.is_ok_and(|r| r.status() == 200) {
            api_ok += 1;
        }
        tokio::time::sleep(ms(100)).await;
    }
    let flood_took = tokio::task::spawn_blocking(move || flood.join().unwrap()).await.unwrap();
    tokio::time::sleep(ms(300)).await;
    let after = chassis("hv1").await["liveness"].clone();
    let hv2 = chassis("hv2").await["liveness"].clone();
    stop.store(true, Ordering::Relaxed);
    for b in beaters {
        tokio::task::spawn_blocking(move || b.join().unwrap()).await.unwrap();
    }

    let m = metrics(&s.url).await;
    let n = |r: &str| series(&m, &format!("vipcast_controller_chassis_heartbeats_total{{result=\"{r}\"}}"));
    let deaths = series(&m, r#"vipcast_controller_chassis_liveness_changes_total{result="dead"}"#);
    let drops = series(&m, "vipcast_controller_heartbeat_socket_drops_total");
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "flood (socket filter {}): {sent} datagrams in {flood_took:?} ({:.0}/s); the controller counted {} malformed, {} from the \
         wrong source, {} ok, {} too soon; the kernel dropped {drops}; false deaths: {deaths}; API answered {api_ok} \
         times during the flood",
        cfg.socket_filter,
        sent as f64 / flood_took.as_secs_f64(),
        n("malformed"),
        n("wrong_source"),
        n("ok"),
        n("too_soon"),
    );
    Flood {
        deaths,
        hv1_unchanged: after == before,
        hv2,
        malformed: n("malformed"),
        wrong_source: n("wrong_source"),
        drops,
        api_ok,
    }
}

/// Resident set size of this process, KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A watch subscriber that stops reading fills its socket and its stream's
/// bounded queue; once its writes have been blocked for
/// `write_stall_timeout` it is disconnected (counted), the controller's
/// memory stays flat, another subscriber of the same chassis keeps seeing
/// every move at once, and the stalled one resumes with `?from=REV`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_and_the_others_keep_up() {
    stalled_subscriber(ms(500), r#"vipcast_controller_http_connections_closed_total{reason="write_stalled"}"#).await;
}

/// The same with writes allowed to block for a minute: the stream's queue
/// of revisions (`fanout::QUEUE`, 256) is the bound that cuts it, long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_a_queue_behind_is_cut_and_the_others_keep_up() {
    stalled_subscriber(Duration::from_secs(60), "vipcast_controller_watch_dropped_total").await;
}

async fn stalled_subscriber(write_stall_timeout: Duration, cut_metric: &str) {
    const VIPS: usize = 100;
    const MOVES: usize = 2_000;
    let http = HttpLimits { write_stall_timeout, send_buffer: 64 * 1024, ..Default::default() };
    let s = start(Config { http, watch_ping: ms(20), ..Default::default() }, None).await;
    let api = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Value| {
        let req = api.request(method, format!("{}{path}", s.url)).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {v}");
            v
        }
    };
    use reqwest::Method;
    call(Method::POST, "/v1/vpcs".into(), json!({"name": "prod", "vni": 100})).await;
    call(
        Method::POST,
        "/v1/subnets".into(),
        json!({"vpc": "prod", "name": "web", "cidr": "10.1.0.0/16", "gateway": "10.1.0.1"}),
    )
    .await;
    for i in 1..=3 {
        call(Method::PUT, format!("/v1/chassis/hv{i}"), json!({"underlay_ip": format!("172.31.0.{i}")})).await;
    }
    let mac = |side: usize, n: usize| format!("02:00:00:{side:02x}:{:02x}:{:02x}", n >> 8, n & 0xff);
    let port = |name: String, chassis: &str, mac: String, ip: String| json!({"name": name, "vpc": "prod", "subnet": "web", "chassis": chassis, "mac": mac, "ip": ip});
    call(Method::POST, "/v1/ports".into(), port("client".into(), "hv3", mac(3, 0), "10.1.3.1".into())).await;
    for n in 0..VIPS {
        for side in 1..=2 {
            let p = port(format!("m{side}-{n}"), &format!("hv{side}"), mac(side, n), format!("10.1.{side}.{}", n + 10));
            call(Method::POST, "/v1/ports".into(), p).await;
        }
        let vip = json!({"name": format!("vip{n}"), "vpc": "prod", "subnet": "web", "ip": format!("10.1.100.{}", n + 10),
                         "members": [format!("m1-{n}"), format!("m2-{n}")]});
        call(Method::POST, "/v1/vips".into(), vip).await;
    }

    // The subscriber that stops reading: a small receive buffer, the
    // request sent, nothing ever read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(s.addr).await.unwrap();
    stalled.write_all(b"GET /v1/watch/chassis/hv3 HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();

    // The one that reads: every delta's revision, as it arrives.
    let (seen_tx, mut seen) = tokio::sync::watch::channel(0i64);
    let resp = api.get(format!("{}/v1/watch/chassis/hv3", s.url)).send().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let m: Value = serde_json::from_slice(&line).unwrap();
                if let Some(rev) = m["revision"].as_i64() {
                    seen_tx.send_replace(rev);
                }
            }
        }
    });
    let watchers = |m: &str| series(m, "vipcast_controller_watchers");
    let stalls = |m: &str| series(m, cut_metric);
    let deadline = Instant::now() + Duration::from_secs(10);
    while watchers(&metrics(&s.url).await) < 2 {
        assert!(Instant::now() < deadline, "both subscribers connect");
        tokio::time::sleep(ms(20)).await;
    }
    // The revision both hold before the moves (the reader's snapshot).
    let from = *seen.borrow();
    let rss_before = rss_kib();

    // Moves: each VIP in turn to its other member (20 a VIP at most in this
    // test's few seconds: far below flap damping), each timed until the
    // reading subscriber holds it.
    let mut took = Vec::with_capacity(MOVES);
    let mut cut_after = None;
    for i in 0..MOVES {
        let (n, side) = (i % VIPS, 1 + (i / VIPS) % 2);
        let claim = json!({"mac": mac(side, n), "chassis": format!("hv{side}"), "source": "agent",
                           "observed_at": vipcast_api::now_ms()});
        let t = Instant::now();
        let answer = call(Method::POST, format!("/v1/vips/vip{n}/claims"), claim).await;
        let revision = answer["revision"].as_i64().unwrap_or_else(|| panic!("{answer}"));
        tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|r| *r >= revision))
            .await
            .expect("the reading subscriber saw the move within 5 s")
            .unwrap();
        took.push(t.elapsed());
        if cut_after.is_none() && i % 100 == 99 && stalls(&metrics(&s.url).await) == 1 {
            cut_after = Some(i + 1);
        }
    }
    let m = metrics(&s.url).await;
    let cut_after = cut_after.unwrap_or_else(|| panic!("the stalled subscriber was not cut after {MOVES} moves:\n{m}"));
    assert_eq!(stalls(&m), 1, "{m}");
    assert_eq!(watchers(&m), 1, "only the reading subscriber is left: {m}");
    let grew_kib = rss_kib().saturating_sub(rss_before);
    took.sort();
    let p = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    eprintln!(
        "cut after {cut_after} moves; claim -> reading subscriber p50 {:?} p99 {:?} max {:?}; RSS grew {grew_kib} KiB",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert!(grew_kib < 64 * 1024, "RSS grew {grew_kib} KiB");
    assert!(p(0.99) < Duration::from_secs(1), "p99 {:?}", p(0.99));
    // The socket is closed by the controller once its writes have been
    // blocked for the stall timeout (a stream cut by its queue ends at once,
    // but what is buffered for the socket waits for that timeout).
    if write_stall_timeout < Duration::from_secs(5) {
        assert!(closed_within(&mut stalled, Duration::from_secs(5)).await.is_some(), "the stalled socket is closed");
    }

    // Back, from the revision before the moves: the first message brings it
    // to the current revision (a delta from the window, or a snapshot).
    let resp = api.get(format!("{}/v1/watch/chassis/hv3?from={from}", s.url)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut first = Vec::new();
    while !first.contains(&b'\n') {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.unwrap().unwrap().unwrap();
        first.extend_from_slice(&chunk);
    }
    let end = first.iter().position(|&b| b == b'\n').unwrap();
    let m: Value = serde_json::from_slice(&first[..end]).unwrap();
    assert!(matches!(m["type"].as_str(), Some("snapshot" | "delta")), "{m}");
    assert_eq!(m["revision"].as_i64(), Some(*seen.borrow()), "resumed at the current revision");
    reader.abort();
}
