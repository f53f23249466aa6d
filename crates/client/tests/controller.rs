//! The client against a real controller (FileStore in a temporary
//! directory, on 127.0.0.1): typed calls and their errors, the retry policy
//! when nothing answers, and the watch follower across a controller restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;
use vipcast_api::{ChassisRegistration, Claim, ClaimResult, ClaimSource};
use vipcast_client::{ControllerClient, Error, Method, Retry, Synced, WatchFollower};
use vipcast_controller::{Config, Controller, serve};
use vipcast_store::FileStore;

/// A controller on its own runtime (so that stopping it ends every
/// connection at once, as a crash would), on `addr` (or a free port) over
/// the store in `dir`. Dropping it stops it.
struct Running {
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn start(dir: &std::path::Path, addr: &str) -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let store = Arc::new(FileStore::open(dir).unwrap());
    let url = runtime.block_on(async {
        let c = Controller::new(store, Config { watch_ping: Duration::from_millis(200), ..Default::default() })
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, c, std::future::pending()));
        url
    });
    Running { url, runtime: Some(runtime) }
}

async fn wait_for(what: &str, rx: &mut watch::Receiver<Synced>, f: impl Fn(&Synced) -> bool) -> Synced {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let s = rx.borrow_and_update();
            if f(&s) {
                return s.clone();
            }
        }
        let left = end.saturating_duration_since(Instant::now());
        assert!(tokio::time::timeout(left, rx.changed()).await.is_ok(), "timed out waiting for {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_calls_errors_and_a_follower_that_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let controller = tokio::task::block_in_place(|| start(dir.path(), "127.0.0.1:0"));
    let url = controller.url.clone();
    let c = ControllerClient::new(&url).unwrap();
    let none: Option<&()> = None;
    for (path, body) in [
        ("/v1/vpcs", json!({"name": "prod", "vni": 100})),
        ("/v1/subnets", json!({"vpc": "prod", "name": "web", "cidr": "192.168.10.0/24"})),
    ] {
        c.call(Method::POST, path, Some(&body), Retry::ONCE).await.unwrap();
    }
    let reg = ChassisRegistration {
        underlay_ip: "10.0.0.1".parse().unwrap(),
        role: Default::default(),
        dataplane: Default::default(),
        name: None,
    };
    c.register_chassis_until_accepted("hv1", &reg).await.unwrap();
    let port = json!({"name": "pay1", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:01", "ip": "192.168.10.11"});
    c.call(Method::POST, "/v1/ports", Some(&port), Retry::ONCE).await.unwrap();
    let vip = json!({"name": "pay-vip", "vpc": "prod", "subnet": "web", "ip": "192.168.10.100", "members": ["pay1"]});
    c.call(Method::POST, "/v1/vips", Some(&vip), Retry::ONCE).await.unwrap();

    // The follower holds the chassis' objects.
    let (tx, mut rx) = watch::channel(Synced::default());
    let follower = tokio::spawn(WatchFollower::chassis(c.clone(), "hv1").run(tx));
    let first = wait_for("the snapshot", &mut rx, |s| s.state.vips.contains_key("pay-vip")).await;
    assert!(first.snapshot && first.received);

    // Claims: accepted, then unchanged; a foreign MAC is refused with the
    // controller's code, at once (no retry can help).
    let claim = |mac: &str| Claim {
        mac: mac.parse().unwrap(),
        chassis: "hv1".into(),
        source: ClaimSource::Agent,
        observed_at: vipcast_api::now_ms(),
    };
    let a = c.claim("pay-vip", &claim("02:00:00:00:00:01")).await.unwrap();
    assert_eq!((a.result, a.owner.as_ref().map(|o| o.generation)), (ClaimResult::Accepted, Some(1)));
    assert_eq!(c.claim("pay-vip", &claim("02:00:00:00:00:01")).await.unwrap().result, ClaimResult::Unchanged);
    let refused = c.claim("pay-vip", &claim("02:00:00:00:00:09")).await.unwrap_err();
    assert!(matches!(&refused, Error::Refused { status: 403, code, .. } if code == "not_member"), "{refused:?}");
    let missing = c.call(Method::GET, "/v1/vips/nosuch", none, Retry::FAILOVER).await.unwrap_err();
    assert!(matches!(&missing, Error::Refused { status: 404, code, .. } if code == "not_found"), "{missing:?}");
    let moved = wait_for("the owner", &mut rx, |s| s.state.vips["pay-vip"].owner.is_some()).await;
    assert!(!moved.snapshot, "a move arrives as a delta");

    // The controller goes away: calls fail after the retry policy's attempts.
    let held = rx.borrow().revision;
    let addr = url.trim_start_matches("http://").to_string();
    tokio::task::block_in_place(|| drop(controller));
    let t = Instant::now();
    let down = c.claim("pay-vip", &claim("02:00:00:00:00:01")).await.unwrap_err();
    assert!(matches!(down, Error::Unavailable(_)), "{down:?}");
    assert!(t.elapsed() >= Retry::FAILOVER.pause * (Retry::FAILOVER.attempts - 1), "retried");

    // Back on the same address with the same store: the follower resumes
    // from the revision it holds and sees what changed meanwhile.
    let _again = tokio::task::block_in_place(|| start(dir.path(), &addr));
    let port2 = json!({"name": "pay2", "vpc": "prod", "subnet": "web", "chassis": "hv1", "mac": "02:00:00:00:00:02", "ip": "192.168.10.12"});
    c.call(Method::POST, "/v1/ports", Some(&port2), Retry::FAILOVER).await.unwrap();
    let resumed = wait_for("pay2 after the restart", &mut rx, |s| s.state.ports.contains_key("pay2")).await;
    assert!(resumed.revision > held);
    assert!(resumed.state.vips["pay-vip"].owner.is_some());
    follower.abort();
}
