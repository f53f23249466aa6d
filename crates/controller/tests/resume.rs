//! What 200 watch streams resuming at once (`?from=1`) cost a controller at
//! a high revision: time to each stream's first line and the process' peak
//! RSS while they are served. In its own test binary so that the peak RSS is
//! this test's alone; the numbers are printed (`cargo test -p
//! vipcast-controller --test resume -- --nocapture`).
//!
//! The store is a file in a temporary directory under `/dev/shm` when there is
//! one (the setup's 17,000 fsynced writes take seconds there), else under the
//! system's temporary directory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::json;
use vipcast_controller::{Config, Controller, Message, serve};
use vipcast_model::{Object, Vpc};
use vipcast_store::{Compare, FileStore, KeyValue, LeaseId, Op, Revision, Store, TxnResult, WatchStream};

/// Subscribers resuming at once.
const RESUMES: usize = 200;
/// The revision the store is brought to before they resume.
const REVISION: i64 = 17_000;

/// A store that counts the watches opened from a past revision (each one a
/// replay of the store's history).
struct Counting {
    inner: FileStore,
    replays: AtomicUsize,
}

#[async_trait]
impl Store for Counting {
    async fn get(&self, key: &str) -> vipcast_store::Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> vipcast_store::Result<(Vec<KeyValue>, Revision)> {
        self.inner.range(prefix).await
    }
    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> vipcast_store::Result<TxnResult> {
        self.inner.txn(compares, ops).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> vipcast_store::Result<WatchStream> {
        if from > 0 {
            self.replays.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.watch(prefix, from).await
    }
    async fn revision(&self) -> vipcast_store::Result<Revision> {
        self.inner.revision().await
    }
    async fn lease_grant(&self, ttl: Duration) -> vipcast_store::Result<LeaseId> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> vipcast_store::Result<()> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> vipcast_store::Result<()> {
        self.inner.lease_revoke(lease).await
    }
    async fn probe(&self) -> vipcast_store::Result<()> {
        self.inner.probe().await
    }
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// `VmRSS` (resident set) of this process, in KiB.
fn current_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Resets the peak resident set to the current one (Linux 4.0+).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resumes_from_far_back_cost_what_snapshots_cost() {
    let dir = match std::fs::metadata("/dev/shm") {
        Ok(m) if m.is_dir() => tempfile::tempdir_in("/dev/shm").unwrap(),
        _ => tempfile::tempdir().unwrap(),
    };
    let store = Arc::new(Counting { inner: FileStore::open(dir.path()).unwrap(), replays: AtomicUsize::new(0) });
    let c = Controller::new(store.clone(), Config::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, c.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = http.post(format!("{url}{path}")).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{} {}", resp.status(), resp.text().await.unwrap());
        }
    };
    post("/v1/vpcs", json!({"name": "prod", "vni": 100})).await;
    post("/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "10.0.0.0/16"})).await;
    for i in 0..RESUMES {
        let resp = http
            .put(format!("{url}/v1/chassis/hv{i}"))
            .json(&json!({"underlay_ip": format!("172.31.{}.{}", i / 250, i % 250 + 1)}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
        let port = json!({"name": format!("p{i}"), "vpc": "prod", "subnet": "web", "chassis": format!("hv{i}"),
                          "mac": format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256),
                          "ip": format!("10.0.{}.{}", i / 250, i % 250 + 1)});
        post("/v1/ports", port).await;
    }
    // The rest straight into the store (the cache follows): one VPC setting
    // flipped back and forth.
    let setup = Instant::now();
    let vpc = c.cache().current().state.vpcs.get("prod").cloned().unwrap();
    let mut assist = false;
    while store.revision().await.unwrap() < REVISION {
        let obj = Object::Vpc(Vpc { assist, ..vpc.clone() });
        let put = Op::Put { key: obj.key().store_key(), value: obj.to_value(), lease: 0 };
        store.txn(vec![], vec![put]).await.unwrap();
        assist = !assist;
    }
    c.cache().wait_for(REVISION).await;
    eprintln!("resume: store at revision {} ({:.1} s of writes)", REVISION, setup.elapsed().as_secs_f64());

    let replays_before = store.replays.load(Ordering::Relaxed);
    // The same subscribers three times, the streams of each round open at
    // once: connecting afresh, resuming from revision 1 (older than the
    // window the cache keeps: a snapshot), resuming from 100 revisions ago
    // (a delta of the VPC).
    let fresh = round(&http, &url, "").await;
    let far = round(&http, &url, "?from=1").await;
    let near = round(&http, &url, &format!("?from={}", REVISION - 100)).await;
    let _ = stop.send(());
    for m in &fresh.firsts {
        assert!(matches!(m, Message::Snapshot { revision, objects } if *revision >= REVISION && !objects.is_empty()));
    }
    for m in &far.firsts {
        assert!(matches!(m, Message::Snapshot { revision, .. } if *revision >= REVISION), "{m:?}");
    }
    for m in &near.firsts {
        assert!(
            matches!(m, Message::Delta { upserts, deletes, .. } if upserts.len() == 1 && deletes.is_empty()),
            "{m:?}"
        );
    }
    // Resumes are answered from memory: no replay of the store's history.
    assert_eq!(store.replays.load(Ordering::Relaxed), replays_before, "resumes replayed the store's history");
    // Generous bounds (a debug build on a busy CI machine).
    for r in [&fresh, &far, &near] {
        assert!(r.slowest() < Duration::from_secs(10), "{}: slowest first line after {:?}", r.what, r.slowest());
        assert!(r.peak_growth_kib < 128 * 1024, "{}: peak RSS grew by {} KiB", r.what, r.peak_growth_kib);
    }
}

/// The first lines of one round of subscribers, how long each took, and
/// how much the peak RSS grew while they were served.
struct Round {
    what: String,
    firsts: Vec<Message>,
    waits: Vec<Duration>,
    peak_growth_kib: u64,
}

impl Round {
    fn slowest(&self) -> Duration {
        self.waits.last().copied().unwrap_or_default()
    }
}

/// Opens [`RESUMES`] chassis watch streams with `query` at once and reads
/// the first line of each.
async fn round(http: &reqwest::Client, url: &str, query: &str) -> Round {
    reset_peak_rss();
    let base = current_rss_kib();
    let started = Instant::now();
    let mut streams = Vec::new();
    for i in 0..RESUMES {
        let req = http.get(format!("{url}/v1/watch/chassis/hv{i}{query}"));
        streams.push(tokio::spawn(async move {
            let t = Instant::now();
            let resp = req.send().await.unwrap();
            let mut body = resp.bytes_stream();
            let mut line = Vec::new();
            while !line.contains(&b'\n') {
                line.extend_from_slice(&body.next().await.unwrap().unwrap());
            }
            let end = line.iter().position(|&b| b == b'\n').unwrap();
            let first: Message = serde_json::from_slice(&line[..end]).unwrap();
            (t.elapsed(), first)
        }));
    }
    let mut firsts = Vec::new();
    let mut waits = Vec::new();
    for s in streams {
        let (wait, first) = s.await.unwrap();
        waits.push(wait);
        firsts.push(first);
    }
    let all = started.elapsed();
    let peak = peak_rss_kib();
    waits.sort();
    let what = if query.is_empty() { "connect".to_string() } else { query.to_string() };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "resume: {RESUMES} concurrent {what:<13} at revision {REVISION}: first line p50 {:>5.0} ms, max {:>5.0} ms, \
         all in {:>5.0} ms; peak RSS {:.1} MiB ({:+.1} MiB)",
        ms(waits[waits.len() / 2]),
        ms(waits[waits.len() - 1]),
        ms(all),
        peak as f64 / 1024.0,
        (peak as f64 - base as f64) / 1024.0,
    );
    Round { what, firsts, waits, peak_growth_kib: peak.saturating_sub(base) }
}
