//! The controller when its store fails: a full disk (a small tmpfs, filled)
//! fails writes with 503 and `/healthz` with 503, and writes resume without
//! a restart once there is room; a stopped etcd (SIGSTOP) makes `/healthz`
//! 503 within seconds; stored objects that cannot be decoded are refused at
//! start, or deleted and listed when recovering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use vipcast_controller::{Config, Controller, serve};
use vipcast_store::{EtcdStore, FileStore, Op, Store, testing};

/// A controller serving on 127.0.0.1:<random>, stopped on drop.
struct Server {
    url: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Probes every 200 ms, each allowed 500 ms.
fn fast_probes() -> Config {
    Config {
        store_probe: Duration::from_millis(200),
        store_probe_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

async fn start(store: Arc<dyn Store>) -> Server {
    let c = Controller::new(store, fast_probes()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(serve(listener, c, async {
        let _ = rx.await;
    }));
    Server { url, http: reqwest::Client::new(), stop: Some(tx) }
}

impl Server {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.http.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn vpc(&self, n: u32) -> (StatusCode, Value) {
        self.post("/v1/vpcs", json!({"name": format!("vpc{n}"), "vni": 1000 + n})).await
    }

    /// Polls `path` until it answers `want` (at most `within`); how long it took.
    async fn until(&self, path: &str, want: StatusCode, within: Duration) -> (Duration, Value) {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(path).await;
            if status == want {
                return (start.elapsed(), body);
            }
            assert!(start.elapsed() < within, "{path} still {status} after {within:?}: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_healthz_and_writes_resume_without_a_restart() {
    let disk = tokio::task::spawn_blocking(|| testing::Tmpfs::mount(8 << 20).unwrap()).await.unwrap();
    let store = Arc::new(FileStore::open(disk.path().join("store")).unwrap());
    let s = start(store.clone()).await;
    assert_eq!(s.vpc(0).await.0, StatusCode::CREATED);
    let (status, health) = s.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")), "{health}");

    let filler = disk.fill("filler").unwrap();
    let mut n = 1;
    let refused = loop {
        let (status, body) = s.vpc(n).await;
        if status != StatusCode::CREATED {
            break (status, body);
        }
        n += 1;
        assert!(n < 2000, "2000 VPCs created on a full disk");
    };
    eprintln!("disk filled ({} KiB); {} VPCs created, then {}", filler >> 10, n - 1, refused.1);
    assert_eq!(refused.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.1["error"]["code"], "store_unavailable", "{}", refused.1);
    assert!(refused.1["error"]["message"].as_str().unwrap().contains("No space left on device"), "{}", refused.1);
    // Unhealthy at once; still up for reads and watch streams.
    let (status, body) = s.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "store_read_only", "{body}");
    let (_, ready) = s.until("/readyz", StatusCode::OK, Duration::from_secs(5)).await;
    assert_eq!((ready["status"].as_str(), ready["writable"].as_bool()), (Some("read_only"), Some(false)), "{ready}");
    assert_eq!(s.get("/v1/vpcs/vpc0").await.0, StatusCode::OK);

    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let start = Instant::now();
    loop {
        let (status, body) = s.vpc(n).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no write within 10 s of freeing space: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("writes resumed {} ms after space was freed", start.elapsed().as_millis());
    s.until("/healthz", StatusCode::OK, Duration::from_secs(5)).await;
    for i in 0..=n {
        assert_eq!(s.get(&format!("/v1/vpcs/vpc{i}")).await.0, StatusCode::OK, "vpc{i}");
    }
    // The controller lets go of the store once stopped, so the file is
    // closed before the disk is unmounted.
    drop(s);
    let start = Instant::now();
    while Arc::strong_count(&store) > 1 {
        assert!(start.elapsed() < Duration::from_secs(10), "the stopped controller still holds the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(store);
}

/// Sends SIGSTOP to a process, and SIGCONT when dropped.
struct Stopped(u32);

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_etcd_makes_healthz_503_within_seconds() {
    let etcd = tokio::task::spawn_blocking(testing::Etcd::start).await.unwrap();
    let store = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    let s = start(Arc::new(store)).await;
    assert_eq!(s.vpc(0).await.0, StatusCode::CREATED);
    s.until("/healthz", StatusCode::OK, Duration::from_secs(5)).await;

    let stopped = Stopped::new(etcd.pid());
    let (took, body) = s.until("/healthz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5)).await;
    eprintln!("etcd stopped: /healthz 503 after {} ms: {body}", took.as_millis());
    assert!(body["error"]["message"].as_str().unwrap().contains("did not answer"), "{body}");
    // Reads do not answer either (the read probe follows the write's).
    s.until("/readyz", StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5)).await;

    drop(stopped);
    s.until("/healthz", StatusCode::OK, Duration::from_secs(15)).await;
    assert_eq!(s.vpc(1).await.0, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_objects_are_refused_and_recover_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FileStore::open(dir.path()).unwrap());
    {
        let c = Controller::new(store.clone(), Config::default()).await.unwrap();
        let vpc = vipcast_model::Vpc {
            name: "prod".into(),
            vni: 100,
            bum: Default::default(),
            arp_suppression: true,
            assist: true,
            encap: Default::default(),
        };
        c.write(vipcast_model::Command::CreateVpc(vpc)).await.unwrap();
    }
    let bad = Op::Put { key: "/vipcast/vpcs/bad".into(), value: b"{\"name\": 7}".to_vec(), lease: 0 };
    store.txn(vec![], vec![bad]).await.unwrap();

    match Controller::new(store.clone(), Config::default()).await {
        Err(vipcast_store::Error::Corrupt { what, message }) => {
            assert_eq!(what, "stored object /vipcast/vpcs/bad");
            assert!(message.contains("cannot be decoded"), "{message}");
        }
        other => panic!("an undecodable object was served: {:?}", other.map(|_| ())),
    }
    let c = Controller::new(store.clone(), Config { recover: true, ..Config::default() }).await.unwrap();
    assert_eq!(c.recovery().len(), 1, "{:?}", c.recovery());
    assert!(c.recovery()[0].starts_with("deleted stored object /vipcast/vpcs/bad"), "{:?}", c.recovery());
    assert!(store.get("/vipcast/vpcs/bad").await.unwrap().is_none());
    drop(c);
    let c = Controller::new(store.clone(), Config::default()).await.unwrap();
    assert!(c.recovery().is_empty());
    assert!(c.cache().current().state.vpcs.contains_key("prod"));
}
