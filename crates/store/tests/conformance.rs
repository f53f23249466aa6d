//! One conformance suite, run against both backends.
//!
//! Every generic test is an `async fn(a, b)` taking two handles on one store:
//! for [`FileStore`] two clones of one store, for etcd two separate
//! [`EtcdStore`] clients (two controllers) on a throwaway etcd started by
//! [`testing::Etcd`] for that test alone. `conformance!` instantiates each test
//! once per backend (`file::NAME`, `etcd::NAME`).
//!
//! Backend-specific tests follow: the file's persistence across reopen and
//! across `kill -9` (the test binary re-executes itself as the writer),
//! history compaction, locking, lagging watchers; etcd's compaction.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use vipcast_store::{
    Compare, Error, EtcdStore, Event, FileOptions, FileStore, KeyValue, Op, Revision, Store, TxnResult, WatchBatch,
    WatchStream, testing,
};

type Dyn = Arc<dyn Store>;

/// How long a watch may take to deliver what is expected.
const WAIT: Duration = Duration::from_secs(15);

/// Two handles on one store and whatever keeps the store alive.
struct Backend {
    a: Dyn,
    b: Dyn,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn file_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    Backend { a: Arc::new(store.clone()), b: Arc::new(store), _keep: Box::new(dir) }
}

async fn etcd_backend() -> Backend {
    let etcd = tokio::task::spawn_blocking(testing::Etcd::start).await.unwrap();
    let a = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    let b = EtcdStore::connect(&etcd.endpoints()).await.unwrap();
    Backend { a: Arc::new(a), b: Arc::new(b), _keep: Box::new(etcd) }
}

/// A CA with etcd's server certificate (`etcd`, for 127.0.0.1) and a
/// controller's (`ctl`), which the store presents as its client certificate.
fn tls_pki() -> tempfile::TempDir {
    use vipcast_api::PeerRole;
    use vipcast_tls::pki;
    let dir = tempfile::tempdir().unwrap();
    pki::init(dir.path()).unwrap();
    for name in ["etcd", "ctl"] {
        let req =
            pki::Request { role: PeerRole::Controller, name: name.into(), sans: vec!["127.0.0.1".into()], days: 1 };
        pki::issue(dir.path(), &req).unwrap();
    }
    dir
}

fn tls_client(pki_dir: &std::path::Path, name: &str) -> rustls::ClientConfig {
    let d = vipcast_tls::pki::Dir(pki_dir.to_path_buf());
    vipcast_tls::client_config(&d.ca_cert(), &d.cert(name), &d.key(name)).unwrap()
}

/// etcd with `--client-cert-auth`, two stores over mutual TLS.
async fn etcd_tls_backend() -> Backend {
    let pki_dir = tls_pki();
    let d = vipcast_tls::pki::Dir(pki_dir.path().to_path_buf());
    let files = testing::TlsFiles { ca: d.ca_cert(), cert: d.cert("etcd"), key: d.key("etcd") };
    let etcd = tokio::task::spawn_blocking(move || testing::Etcd::start_tls(&files)).await.unwrap();
    let a = EtcdStore::connect_tls(&etcd.endpoints(), Some(tls_client(pki_dir.path(), "ctl"))).await.unwrap();
    let b = EtcdStore::connect_tls(&etcd.endpoints(), Some(tls_client(pki_dir.path(), "ctl"))).await.unwrap();
    Backend { a: Arc::new(a), b: Arc::new(b), _keep: Box::new((etcd, pki_dir)) }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::file_backend().await;
                    super::$name(backend.a.clone(), backend.b.clone()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::etcd_backend().await;
                    super::$name(backend.a.clone(), backend.b.clone()).await;
                }
            )*
        }
        mod etcd_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::etcd_tls_backend().await;
                    super::$name(backend.a.clone(), backend.b.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_range_delete_and_revisions,
    compare_and_swap,
    invalid_transactions,
    watch_replays_history_then_continues_live,
    watch_from_zero_sees_only_new_writes,
    watch_ignores_keys_outside_prefix,
    multi_op_txn_is_one_batch,
    lease_expiry_deletes_keys_and_watchers_see_it,
    lease_revoke_deletes_keys,
    lease_keep_alive_outlives_ttl,
    unknown_lease,
    race_of_cas_increments,
    probe_writes_without_a_revision,
);

// ---------------------------------------------------------------- helpers

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into(), lease: 0 }
}

fn put_leased(key: &str, value: &str, lease: i64) -> Op {
    Op::Put { key: key.into(), value: value.into(), lease }
}

fn delete(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn mod_rev(key: &str, revision: Revision) -> Compare {
    Compare::ModRevision { key: key.into(), revision }
}

/// Applies `ops` unconditionally; the new revision.
async fn write(store: &Dyn, ops: Vec<Op>) -> Revision {
    let result = store.txn(vec![], ops).await.unwrap();
    assert!(result.succeeded);
    result.revision
}

async fn value(store: &Dyn, key: &str) -> Option<String> {
    store.get(key).await.unwrap().map(|kv| String::from_utf8(kv.value).unwrap())
}

async fn next_batch(stream: &mut WatchStream) -> WatchBatch {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Ok(batch))) => batch,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch batch within {WAIT:?}"),
    }
}

async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn put_event(kv: &KeyValue) -> (String, String) {
    (kv.key.clone(), String::from_utf8(kv.value.clone()).unwrap())
}

/// `("put", key)` / `("delete", key)` of a batch, checking every event
/// carries the batch's revision.
fn shape(batch: &WatchBatch) -> Vec<(&'static str, String)> {
    batch
        .events
        .iter()
        .map(|e| match e {
            Event::Put(kv) => {
                assert_eq!(kv.mod_revision, batch.revision, "{batch:?}");
                ("put", kv.key.clone())
            }
            Event::Delete { key, revision } => {
                assert_eq!(*revision, batch.revision, "{batch:?}");
                ("delete", key.clone())
            }
        })
        .collect()
}

fn ev(kind: &'static str, key: &str) -> (&'static str, String) {
    (kind, key.to_owned())
}

/// The compaction reported by a watch, by the call or as the first item.
async fn expect_compacted(watch: vipcast_store::Result<WatchStream>) -> (Revision, Revision) {
    let mut stream = match watch {
        Err(Error::Compacted { requested, oldest }) => return (requested, oldest),
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(stream) => stream,
    };
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(Err(Error::Compacted { requested, oldest }))) => (requested, oldest),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

// ---------------------------------------------------------------- the suite

async fn put_get_range_delete_and_revisions(a: Dyn, _: Dyn) {
    let r0 = a.revision().await.unwrap();
    assert_eq!(a.get("k/a").await.unwrap(), None);

    let r1 = write(&a, vec![put("k/a", "1")]).await;
    assert_eq!(r1, r0 + 1);
    let kv = a.get("k/a").await.unwrap().unwrap();
    assert_eq!(
        kv,
        KeyValue { key: "k/a".into(), value: b"1".to_vec(), create_revision: r1, mod_revision: r1, lease: 0 }
    );

    let r2 = write(&a, vec![put("k/a", "2")]).await;
    assert_eq!(r2, r1 + 1);
    let kv = a.get("k/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.value.as_slice()), (r1, r2, &b"2"[..]));

    let r3 = write(&a, vec![put("k/b", "x")]).await;
    let r4 = write(&a, vec![put("other", "y")]).await;
    assert_eq!((r3, r4), (r0 + 3, r0 + 4));
    let (kvs, at) = a.range("k/").await.unwrap();
    assert_eq!(at, r4);
    assert_eq!(kvs.iter().map(put_event).collect::<Vec<_>>(), [("k/a".into(), "2".into()), ("k/b".into(), "x".into())]);
    let (all, _) = a.range("").await.unwrap();
    assert_eq!(all.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["k/a", "k/b", "other"]);
    assert_eq!(a.range("nothing/").await.unwrap(), (vec![], r4));
    assert_eq!(a.revision().await.unwrap(), r4);

    let r5 = write(&a, vec![delete("k/a")]).await;
    assert_eq!(r5, r4 + 1);
    assert_eq!(a.get("k/a").await.unwrap(), None);
    assert_eq!(a.range("k/").await.unwrap().0.len(), 1);

    // Deleting an absent key, or an empty transaction, changes nothing: no revision.
    assert_eq!(a.txn(vec![], vec![delete("k/a")]).await.unwrap(), TxnResult { succeeded: true, revision: r5 });
    assert_eq!(a.txn(vec![], vec![]).await.unwrap(), TxnResult { succeeded: true, revision: r5 });
    assert_eq!(a.revision().await.unwrap(), r5);

    // Re-created after deletion: a new create revision.
    let r6 = write(&a, vec![put("k/a", "3")]).await;
    let kv = a.get("k/a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (r6, r6));
}

async fn compare_and_swap(a: Dyn, b: Dyn) {
    // "Absent" compare (mod revision 0) creates once.
    let r1 = a.txn(vec![mod_rev("cas", 0)], vec![put("cas", "v1")]).await.unwrap();
    assert!(r1.succeeded);
    let again = b.txn(vec![mod_rev("cas", 0)], vec![put("cas", "other")]).await.unwrap();
    assert_eq!(again, TxnResult { succeeded: false, revision: r1.revision });
    assert_eq!(value(&a, "cas").await.as_deref(), Some("v1"));

    // Swap on the current mod revision; a stale one fails and changes nothing.
    let r2 = b.txn(vec![mod_rev("cas", r1.revision)], vec![put("cas", "v2")]).await.unwrap();
    assert_eq!(r2, TxnResult { succeeded: true, revision: r1.revision + 1 });
    let stale = a.txn(vec![mod_rev("cas", r1.revision)], vec![put("cas", "v3")]).await.unwrap();
    assert_eq!(stale, TxnResult { succeeded: false, revision: r2.revision });
    let kv = a.get("cas").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.mod_revision, kv.create_revision), (&b"v2"[..], r2.revision, r1.revision));

    // Every compare must hold; then all ops apply in one revision.
    let mixed = a
        .txn(vec![mod_rev("cas", r2.revision), mod_rev("cas2", 5)], vec![put("cas", "no"), put("cas2", "no")])
        .await
        .unwrap();
    assert!(!mixed.succeeded);
    assert_eq!(a.get("cas2").await.unwrap(), None);
    let both = a
        .txn(vec![mod_rev("cas", r2.revision), mod_rev("cas2", 0)], vec![put("cas", "v4"), put("cas2", "w1")])
        .await
        .unwrap();
    assert_eq!(both, TxnResult { succeeded: true, revision: r2.revision + 1 });
    assert_eq!(a.get("cas").await.unwrap().unwrap().mod_revision, both.revision);
    assert_eq!(a.get("cas2").await.unwrap().unwrap().mod_revision, both.revision);

    // Compare-and-delete, after which "absent" holds again.
    let del = b.txn(vec![mod_rev("cas", both.revision)], vec![delete("cas")]).await.unwrap();
    assert!(del.succeeded);
    assert!(a.txn(vec![mod_rev("cas", 0)], vec![put("cas", "v5")]).await.unwrap().succeeded);
    assert_eq!(a.revision().await.unwrap(), both.revision + 2);
}

async fn invalid_transactions(a: Dyn, _: Dyn) {
    let r0 = a.revision().await.unwrap();
    let twice = a.txn(vec![], vec![put("dup", "1"), put("dup", "2")]).await;
    assert!(matches!(twice, Err(Error::InvalidArgument(_))), "{twice:?}");
    let put_delete = a.txn(vec![], vec![put("dup", "1"), delete("dup")]).await;
    assert!(matches!(put_delete, Err(Error::InvalidArgument(_))), "{put_delete:?}");
    let empty = a.txn(vec![], vec![put("", "1")]).await;
    assert!(matches!(empty, Err(Error::InvalidArgument(_))), "{empty:?}");
    assert_eq!(a.get("dup").await.unwrap(), None);
    assert_eq!(a.revision().await.unwrap(), r0);
}

async fn watch_replays_history_then_continues_live(a: Dyn, b: Dyn) {
    let r1 = write(&a, vec![put("w/a", "1")]).await;
    let r2 = write(&a, vec![put("w/b", "2")]).await;
    let r3 = write(&a, vec![delete("w/a")]).await;
    let r4 = write(&a, vec![put("x/ignored", "-")]).await;
    let r5 = write(&a, vec![put("w/b", "3")]).await;

    let mut stream = b.watch("w/", r2).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r2, vec![ev("put", "w/b")]));
    match &batch.events[0] {
        Event::Put(kv) => assert_eq!((kv.create_revision, kv.value.as_slice()), (r2, &b"2"[..])),
        other => panic!("{other:?}"),
    }
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r3, vec![ev("delete", "w/a")]));
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r5, vec![ev("put", "w/b")]));
    match &batch.events[0] {
        Event::Put(kv) => assert_eq!((kv.create_revision, kv.value.as_slice()), (r2, &b"3"[..])),
        other => panic!("{other:?}"),
    }
    assert!(r4 < r5);
    assert_quiet(&mut stream).await;

    // Live from here, through the other handle, without gaps or repeats.
    let mut live = Vec::new();
    for i in 0..5 {
        live.push(write(&a, vec![put(&format!("w/live{i}"), "x")]).await);
    }
    for (i, revision) in live.into_iter().enumerate() {
        let batch = next_batch(&mut stream).await;
        assert_eq!((batch.revision, shape(&batch)), (revision, vec![ev("put", &format!("w/live{i}"))]));
    }
    assert_quiet(&mut stream).await;

    // From the first revision: the whole history again.
    let mut again = b.watch("w/", r1).await.unwrap();
    let revisions: Vec<Revision> =
        [next_batch(&mut again).await.revision, next_batch(&mut again).await.revision].into();
    assert_eq!(revisions, [r1, r2]);
}

async fn watch_from_zero_sees_only_new_writes(a: Dyn, b: Dyn) {
    write(&a, vec![put("z/old", "1")]).await;
    let mut stream = b.watch("z/", 0).await.unwrap();
    assert_quiet(&mut stream).await;
    let r = write(&a, vec![put("z/new", "2")]).await;
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r, vec![ev("put", "z/new")]));
    assert_quiet(&mut stream).await;
}

async fn watch_ignores_keys_outside_prefix(a: Dyn, b: Dyn) {
    let mut stream = b.watch("p/", 0).await.unwrap();
    write(&a, vec![put("q/1", "x")]).await;
    write(&a, vec![put("p", "x")]).await;
    write(&a, vec![put("pp/1", "x")]).await;
    let r = write(&a, vec![put("p/1", "x")]).await;
    let mixed = write(&a, vec![put("q/2", "x"), put("p/2", "x"), delete("q/1")]).await;
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r, vec![ev("put", "p/1")]));
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (mixed, vec![ev("put", "p/2")]));
    assert_quiet(&mut stream).await;
}

async fn multi_op_txn_is_one_batch(a: Dyn, b: Dyn) {
    write(&a, vec![put("m/old", "0")]).await;
    let mut stream = b.watch("m/", 0).await.unwrap();
    let r = write(&a, vec![put("m/a", "1"), put("m/b", "2"), delete("m/old"), delete("m/absent")]).await;
    let batch = next_batch(&mut stream).await;
    assert_eq!(batch.revision, r);
    assert_eq!(shape(&batch), vec![ev("put", "m/a"), ev("put", "m/b"), ev("delete", "m/old")]);
    let r2 = write(&a, vec![put("m/c", "3")]).await;
    assert_eq!(r2, r + 1);
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r2, vec![ev("put", "m/c")]));
}

async fn lease_expiry_deletes_keys_and_watchers_see_it(a: Dyn, b: Dyn) {
    let lease = a.lease_grant(Duration::from_secs(1)).await.unwrap();
    assert_ne!(lease, 0);
    let mut stream = b.watch("l/", 0).await.unwrap();
    let r = write(&a, vec![put_leased("l/a", "1", lease), put_leased("l/b", "2", lease), put("l/c", "3")]).await;
    assert_eq!(a.get("l/a").await.unwrap().unwrap().lease, lease);
    assert_eq!(a.get("l/c").await.unwrap().unwrap().lease, 0);
    assert_eq!(next_batch(&mut stream).await.revision, r);

    // Both keys go in one revision, as soon as the ttl is over.
    let batch = next_batch(&mut stream).await;
    assert!(batch.revision > r);
    let mut deleted = shape(&batch);
    deleted.sort();
    assert_eq!(deleted, vec![ev("delete", "l/a"), ev("delete", "l/b")]);
    assert_eq!(a.get("l/a").await.unwrap(), None);
    assert_eq!(value(&a, "l/c").await.as_deref(), Some("3"));
    assert!(matches!(a.lease_keep_alive(lease).await, Err(Error::LeaseNotFound(l)) if l == lease));
    assert!(matches!(a.lease_revoke(lease).await, Err(Error::LeaseNotFound(l)) if l == lease));
    let late = a.txn(vec![], vec![put_leased("l/late", "x", lease)]).await;
    assert!(matches!(late, Err(Error::LeaseNotFound(l)) if l == lease), "{late:?}");
}

async fn lease_revoke_deletes_keys(a: Dyn, b: Dyn) {
    let lease = a.lease_grant(Duration::from_secs(60)).await.unwrap();
    let r0 = a.revision().await.unwrap();
    // A lease without keys: granting and revoking create no revision.
    let empty = a.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert_ne!(empty, lease);
    a.lease_revoke(empty).await.unwrap();
    assert_eq!(a.revision().await.unwrap(), r0);

    write(&a, vec![put_leased("r/a", "1", lease)]).await;
    // Moving a key to no lease detaches it.
    write(&a, vec![put_leased("r/b", "2", lease)]).await;
    let r = write(&a, vec![put("r/b", "2 kept")]).await;
    let mut stream = b.watch("r/", r + 1).await.unwrap();
    b.lease_revoke(lease).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (r + 1, vec![ev("delete", "r/a")]));
    assert_eq!(a.get("r/a").await.unwrap(), None);
    assert_eq!(value(&a, "r/b").await.as_deref(), Some("2 kept"));
    assert!(matches!(a.lease_revoke(lease).await, Err(Error::LeaseNotFound(_))));
    assert!(matches!(a.lease_keep_alive(lease).await, Err(Error::LeaseNotFound(_))));
}

async fn lease_keep_alive_outlives_ttl(a: Dyn, b: Dyn) {
    let lease = a.lease_grant(Duration::from_secs(1)).await.unwrap();
    write(&a, vec![put_leased("ka/k", "1", lease)]).await;
    let mut stream = b.watch("ka/", 0).await.unwrap();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        b.lease_keep_alive(lease).await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(value(&a, "ka/k").await.as_deref(), Some("1"), "the key expired despite keep-alives");
    // Stop renewing: it goes.
    let batch = next_batch(&mut stream).await;
    assert_eq!(shape(&batch), vec![ev("delete", "ka/k")]);
    assert!(start.elapsed() >= Duration::from_secs(3));
}

async fn unknown_lease(a: Dyn, _: Dyn) {
    let bogus = 0x7eed_beef;
    let r0 = a.revision().await.unwrap();
    let res = a.txn(vec![], vec![put_leased("u/k", "1", bogus)]).await;
    assert!(matches!(res, Err(Error::LeaseNotFound(l)) if l == bogus), "{res:?}");
    assert!(matches!(a.lease_keep_alive(bogus).await, Err(Error::LeaseNotFound(l)) if l == bogus));
    assert!(matches!(a.lease_revoke(bogus).await, Err(Error::LeaseNotFound(l)) if l == bogus));
    assert_eq!(a.get("u/k").await.unwrap(), None);
    assert_eq!(a.revision().await.unwrap(), r0);
}

/// 8 tasks (alternating between the two handles) each add 1 to a counter 25
/// times with read / compare mod revision / retry: no update is lost or
/// doubled, and every successful write has its own revision.
async fn race_of_cas_increments(a: Dyn, b: Dyn) {
    const TASKS: usize = 8;
    const EACH: usize = 25;
    let key = "race/counter";
    let r0 = a.revision().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            let mut conflicts = 0;
            while done.len() < EACH {
                let (n, rev) = match store.get(key).await.unwrap() {
                    Some(kv) => (String::from_utf8(kv.value).unwrap().parse::<u64>().unwrap(), kv.mod_revision),
                    None => (0, 0),
                };
                let next = (n + 1).to_string();
                let res = store.txn(vec![mod_rev(key, rev)], vec![put(key, &next)]).await.unwrap();
                if res.succeeded {
                    done.push((n + 1, res.revision));
                } else {
                    conflicts += 1;
                }
            }
            (done, conflicts)
        }));
    }
    let mut writes = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let (done, c) = task.await.unwrap();
        writes.extend(done);
        conflicts += c;
    }
    let total = (TASKS * EACH) as u64;
    assert_eq!(value(&a, key).await, Some(total.to_string()));
    writes.sort_by_key(|(_, revision)| *revision);
    let revisions: std::collections::BTreeSet<Revision> = writes.iter().map(|(_, r)| *r).collect();
    assert_eq!(revisions.len(), writes.len(), "two writes share a revision");
    // In revision order the values count 1, 2, ... total: no lost or doubled update.
    assert_eq!(writes.iter().map(|(v, _)| *v).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    // Failed compares wrote nothing.
    assert_eq!(a.revision().await.unwrap(), r0 + total as Revision);
    eprintln!("race: {total} increments, {conflicts} failed compares retried");
}

async fn probe_writes_without_a_revision(a: Dyn, b: Dyn) {
    let revision = write(&a, vec![put("h/k", "1")]).await;
    let mut watch = b.watch("", 0).await.unwrap();
    for _ in 0..3 {
        a.probe().await.unwrap();
        b.probe().await.unwrap();
    }
    assert_eq!(a.revision().await.unwrap(), revision, "a probe creates no revision");
    assert_quiet(&mut watch).await;
    assert_eq!(a.range("").await.unwrap().0.len(), 1, "and no key");
}

// ---------------------------------------------------------------- file only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (revision, lease, before) = {
        let store: Dyn = Arc::new(FileStore::open(dir.path()).unwrap());
        write(&store, vec![put("p/a", "1")]).await;
        write(&store, vec![put("p/a", "2"), put("p/b", "3")]).await;
        write(&store, vec![delete("p/b")]).await;
        let lease = store.lease_grant(Duration::from_secs(1)).await.unwrap();
        let revision = write(&store, vec![put_leased("p/leased", "4", lease)]).await;
        (revision, lease, store.range("").await.unwrap())
        // Dropped here: the file is closed.
    };
    let store: Dyn = Arc::new(FileStore::open(dir.path()).unwrap());
    assert_eq!(store.revision().await.unwrap(), revision);
    assert_eq!(store.range("").await.unwrap(), before);

    // The whole history is still there for watchers.
    let mut stream = store.watch("p/", 1).await.unwrap();
    let shapes: Vec<_> = [
        next_batch(&mut stream).await,
        next_batch(&mut stream).await,
        next_batch(&mut stream).await,
        next_batch(&mut stream).await,
    ]
    .iter()
    .map(|b| (b.revision, shape(b)))
    .collect();
    assert_eq!(
        shapes,
        vec![
            (1, vec![ev("put", "p/a")]),
            (2, vec![ev("put", "p/a"), ev("put", "p/b")]),
            (3, vec![ev("delete", "p/b")]),
            (4, vec![ev("put", "p/leased")]),
        ]
    );

    // The lease came back with a fresh ttl, and still expires.
    store.lease_keep_alive(lease).await.unwrap();
    let batch = next_batch(&mut stream).await;
    assert_eq!((batch.revision, shape(&batch)), (5, vec![ev("delete", "p/leased")]));
    // New writes and leases continue the sequences.
    assert_eq!(write(&store, vec![put("p/c", "5")]).await, 6);
    assert!(store.lease_grant(Duration::from_secs(5)).await.unwrap() > lease);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_history_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions { history: 5, ..FileOptions::default() };
    let store: Dyn = Arc::new(FileStore::open_with(dir.path(), options).unwrap());
    for i in 1..=10 {
        write(&store, vec![put("c/k", &i.to_string())]).await;
    }
    assert_eq!(expect_compacted(store.watch("c/", 1).await).await, (1, 6));
    assert_eq!(expect_compacted(store.watch("", 5).await).await, (5, 6));
    let mut stream = store.watch("c/", 6).await.unwrap();
    for revision in 6..=10 {
        assert_eq!(next_batch(&mut stream).await.revision, revision);
    }
    // Watching from now on works whatever the history.
    let mut live = store.watch("c/", 0).await.unwrap();
    assert_eq!(write(&store, vec![put("c/k", "11")]).await, 11);
    assert_eq!(next_batch(&mut live).await.revision, 11);
    assert_eq!(next_batch(&mut stream).await.revision, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_second_open_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    match FileStore::open(dir.path()) {
        Err(Error::File { path, message }) => {
            assert!(path.ends_with("store.redb"), "{path}");
            assert!(message.contains("already open"), "{message}");
        }
        other => panic!("second open: {other:?}"),
    }
    drop(store);
    FileStore::open(dir.path()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lagging_watchers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A live buffer of 2 revisions, and more writes than one replay step (256).
    let options = FileOptions { watch_buffer: 2, ..FileOptions::default() };
    let store: Dyn = Arc::new(FileStore::open_with(dir.path(), options).unwrap());
    let mut live = store.watch("", 0).await.unwrap();
    let n = 300;
    for i in 1..=n {
        write(&store, vec![put(&format!("lag/{}", i % 7), &i.to_string())]).await;
    }
    let mut replayed = store.watch("lag/", 1).await.unwrap();
    for revision in 1..=n {
        assert_eq!(next_batch(&mut live).await.revision, revision);
        assert_eq!(next_batch(&mut replayed).await.revision, revision);
    }
    // Both go on live.
    write(&store, vec![put("lag/x", "x")]).await;
    assert_eq!(next_batch(&mut live).await.revision, n + 1);
    assert_eq!(next_batch(&mut replayed).await.revision, n + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_ends_when_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let mut stream = store.watch("", 0).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(WAIT, stream.next()).await.expect("the watch did not end");
    assert!(end.is_none(), "{end:?}");
    // And the file is free again.
    FileStore::open(dir.path()).unwrap();
}

/// Env var naming the store directory of the writer process that
/// `file_kill_9_keeps_acknowledged_writes` starts.
const CHILD_DIR: &str = "VIPCAST_STORE_TEST_CHILD_DIR";

/// Not a test on its own: the writer process of
/// `file_kill_9_keeps_acknowledged_writes` (does nothing without the env var).
#[tokio::test]
async fn helper_kill_9_writer() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let store: Dyn = Arc::new(FileStore::open(&dir).unwrap());
    println!("open");
    let start = std::time::Instant::now();
    // Bounded in case the parent dies without killing us.
    for i in 0..10_000u32 {
        if start.elapsed() > Duration::from_secs(60) {
            break;
        }
        let revision = write(&store, vec![put(&format!("kill/{i:05}"), &i.to_string())]).await;
        println!("acked {i} {revision}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_kill_9_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let log = dir.path().join("writer.log");
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["helper_kill_9_writer", "--exact", "--nocapture", "--test-threads", "1"]).env(CHILD_DIR, &store_dir);
    let child = vipcast_lab::Child::spawn(&mut cmd, &log).unwrap();

    let acked = |log: &std::path::Path| -> Vec<(u32, Revision)> {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Only complete lines: the last one may be cut by the kill.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .filter_map(|l| l.strip_prefix("acked "))
            .map(|l| {
                let (i, rev) = l.split_once(' ').unwrap();
                (i.parse().unwrap(), rev.parse().unwrap())
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked(&log).len() < 50 {
        assert!(std::time::Instant::now() < deadline, "writer made no progress: {:?}", std::fs::read_to_string(&log));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another process holds the file: we cannot open it.
    match FileStore::open(&store_dir) {
        Err(Error::File { message, .. }) => assert!(message.contains("already open"), "{message}"),
        other => panic!("open beside the writer: {other:?}"),
    }
    drop(child); // SIGKILL, mid-write
    let acked = acked(&log);
    let store: Dyn = Arc::new(FileStore::open(&store_dir).unwrap());
    let revision = store.revision().await.unwrap();
    let (kvs, _) = store.range("kill/").await.unwrap();
    // Every acknowledged write is there, and nothing half-written: one key per revision.
    assert!(revision >= acked.len() as Revision, "{revision} < {} acked", acked.len());
    assert_eq!(kvs.len() as Revision, revision);
    for (i, rev) in &acked {
        let kv = &kvs[*i as usize];
        assert_eq!(
            (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
            (format!("kill/{i:05}").as_str(), i.to_string().as_bytes(), *rev)
        );
    }
    eprintln!("kill -9: {} writes acknowledged, {revision} found", acked.len());
}

// ---------------------------------------------------------------- etcd only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_history_is_compacted() {
    let backend = etcd_backend().await;
    assert!(matches!(EtcdStore::connect(&[]).await, Err(Error::InvalidArgument(_))));
    let a = backend.a.clone();
    let first = write(&a, vec![put("c/k", "1")]).await;
    for i in 2..=10 {
        write(&a, vec![put("c/k", &i.to_string())]).await;
    }
    let etcd = EtcdStore::connect(&backend_endpoints(&backend)).await.unwrap();
    etcd.compact(first + 5).await.unwrap();
    let (requested, oldest) = expect_compacted(a.watch("c/", first).await).await;
    assert_eq!((requested, oldest), (first, first + 5));
    let mut stream = a.watch("c/", first + 5).await.unwrap();
    for revision in first + 5..=first + 9 {
        assert_eq!(next_batch(&mut stream).await.revision, revision);
    }
}

/// etcd with `--client-cert-auth` serves only clients presenting a
/// certificate of its CA, over TLS, and is verified by the store in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_client_certificates_refuses_everyone_else() {
    let pki_dir = tls_pki();
    let d = vipcast_tls::pki::Dir(pki_dir.path().to_path_buf());
    let files = testing::TlsFiles { ca: d.ca_cert(), cert: d.cert("etcd"), key: d.key("etcd") };
    let etcd = tokio::task::spawn_blocking(move || testing::Etcd::start_tls(&files)).await.unwrap();
    let endpoints = etcd.endpoints();
    let host = endpoints[0].trim_start_matches("https://").to_string();
    let refused = |r: Result<EtcdStore, Error>, what: &str| match r {
        Err(Error::Unavailable(m)) => eprintln!("{what}: {m}"),
        other => panic!("{what}: {other:?}"),
    };
    // No client certificate.
    let trusting = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(vipcast_tls::roots(&d.ca_cert()).unwrap())
    };
    refused(EtcdStore::connect_tls(&endpoints, Some(trusting().with_no_client_auth())).await, "no client certificate");
    // A client certificate of another CA, etcd itself trusted.
    let foreign = tls_pki();
    let f = vipcast_tls::pki::Dir(foreign.path().to_path_buf());
    let (certs, key) =
        (vipcast_tls::load_certs(&f.cert("ctl")).unwrap(), vipcast_tls::load_key(&f.key("ctl")).unwrap());
    let impostor = trusting().with_client_auth_cert(certs, key).unwrap();
    refused(EtcdStore::connect_tls(&endpoints, Some(impostor)).await, "a client certificate of another CA");
    // etcd's certificate not trusted.
    refused(EtcdStore::connect_tls(&endpoints, Some(tls_client(foreign.path(), "ctl"))).await, "etcd of another CA");
    // Plain HTTP to a TLS port.
    refused(EtcdStore::connect(std::slice::from_ref(&host)).await, "plain HTTP");
    // A scheme that does not match the configuration.
    assert!(matches!(EtcdStore::connect(&endpoints).await, Err(Error::InvalidArgument(_))));
    // The right certificate: written and read back.
    let store: Dyn = Arc::new(EtcdStore::connect_tls(&[host], Some(tls_client(pki_dir.path(), "ctl"))).await.unwrap());
    let revision = write(&store, vec![put("tls/k", "v")]).await;
    assert!(revision > 0);
}

fn backend_endpoints(backend: &Backend) -> Vec<String> {
    backend._keep.downcast_ref::<testing::Etcd>().unwrap().endpoints()
}
