//! Authenticated heartbeats against the real liveness driver: with a
//! heartbeat secret, a chassis signing with its key stays alive; forged,
//! unsigned and replayed heartbeats change nothing; and a dead chassis is
//! still declared dead while an attacker replays its recorded heartbeats.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vipcast_api::heartbeat::{encode_heartbeat, encode_signed};
use vipcast_controller::liveness::LivenessConfig;
use vipcast_controller::{Config, Controller, serve};
use vipcast_store::FileStore;
use vipcast_tls::heartbeat::{chassis_key, sign};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_fresh_heartbeats_keep_a_chassis_alive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FileStore::open(dir.path()).unwrap());
    let c = Controller::new(store, Config::default()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let secret = [42u8; 32];
    let hb = tokio::net::UdpSocket::bind(addr).await.unwrap();
    let cfg = LivenessConfig { secret: Some(secret), ..Default::default() };
    tokio::spawn(vipcast_controller::liveness::run(c.clone(), hb, cfg));
    tokio::spawn(serve(listener, c, std::future::pending()));
    let http = reqwest::Client::new();
    let r = http.put(format!("{url}/v1/chassis/hv1")).json(&json!({"underlay_ip": "10.0.0.1"})).send().await.unwrap();
    assert!(r.status().is_success());
    let liveness = async || -> Value {
        let v: Value = http.get(format!("{url}/v1/chassis/hv1")).send().await.unwrap().json().await.unwrap();
        v["liveness"].clone()
    };
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    let sock = Arc::new(sock);

    // Unsigned and forged heartbeats (another key) never make it alive.
    let wrong = chassis_key(&[1u8; 32], "hv1");
    for seq in 1..=20u64 {
        sock.send(&encode_heartbeat("hv1", seq)).await.unwrap();
        sock.send(&encode_signed("hv1", seq, |m| sign(&wrong, m))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(liveness().await, Value::Null, "no real heartbeat was heard");

    // The real agent: signed with hv1's key, every 20 ms; recorded as it goes.
    let key = chassis_key(&secret, "hv1");
    let beating = Arc::new(AtomicBool::new(true));
    let recorded = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (b, so, rec) = (beating.clone(), sock.clone(), recorded.clone());
    tokio::spawn(async move {
        let mut seq = 0u64;
        while b.load(Ordering::Relaxed) {
            seq = (seq + 1).max(vipcast_api::now_ms() * 1000);
            let d = encode_signed("hv1", seq, |m| sign(&key, m));
            let _ = so.send(&d).await;
            rec.lock().unwrap().push(d);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let wait = async |want: bool| {
        let t = Instant::now();
        while liveness().await["alive"] != json!(want) {
            assert!(t.elapsed() < Duration::from_secs(5), "alive never became {want}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t.elapsed()
    };
    wait(true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(liveness().await["alive"], json!(true), "kept alive by its signed heartbeats");

    // The agent stops; an attacker replays everything it recorded, every 10 ms.
    beating.store(false, Ordering::Relaxed);
    let replay: Vec<Vec<u8>> = recorded.lock().unwrap().clone();
    assert!(replay.len() > 10);
    let so = sock.clone();
    let attacker = tokio::spawn(async move {
        loop {
            for d in &replay {
                let _ = so.send(d).await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let took = wait(false).await;
    assert!(took < Duration::from_secs(2), "declared dead despite the replays, after {took:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(liveness().await["alive"], json!(false), "replays never bring it back");
    attacker.abort();
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let count = |result: &str| -> u64 {
        let prefix = format!("vipcast_controller_chassis_heartbeats_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(count("unsigned") >= 20 && count("bad_tag") >= 20 && count("replayed") > 100, "{metrics}");
}
