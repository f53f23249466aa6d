//! The file store against broken files and a full disk: a file it cannot
//! trust (empty, truncated, bytes flipped, records that do not decode) is
//! refused with [`Error::Corrupt`] (or, with `recover`, opened with what
//! cannot be read dropped and said); a full disk fails writes with
//! [`Error::File`] and the store writes again once there is room, without
//! being opened again by its user.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redb::{ReadableDatabase, TableDefinition};
use vipcast_store::{Error, FileOptions, FileStore, KeyValue, Op, Revision, Store, testing};

fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.into(), value: value.into(), lease: 0 }
}

fn recovering() -> FileOptions {
    FileOptions { recover: true, ..FileOptions::default() }
}

/// A store with history: 300 revisions over 50 keys, one of them leased;
/// what it holds, once closed.
async fn populate(dir: &Path) -> (Vec<KeyValue>, Revision) {
    let store = FileStore::open(dir).unwrap();
    for i in 0..300 {
        let value = format!("{{\"name\":\"value {i}, padded to take some room in the file\"}}");
        store.txn(vec![], vec![put(&format!("/vipcast/vpcs/k{:02}", i % 50), &value)]).await.unwrap();
    }
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    store.txn(vec![], vec![Op::Put { key: "/vipcast/leased".into(), value: b"x".to_vec(), lease }]).await.unwrap();
    store.range("").await.unwrap()
}

fn expect_corrupt(result: vipcast_store::Result<FileStore>) -> String {
    match result {
        Err(Error::Corrupt { what, message }) => {
            assert!(what.starts_with("store file ") && what.ends_with("store.redb"), "{what}");
            message
        }
        Err(other) => panic!("expected a corrupt store, got {other}"),
        Ok(store) => panic!("a broken store file was opened: {:?}", store.path()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_refused_and_recover_starts_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.redb");
    std::fs::write(&file, b"").unwrap();
    let message = expect_corrupt(FileStore::open(dir.path()));
    assert!(message.contains("empty (0 bytes)"), "{message}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 0, "a refused file is left as it was");

    let store = FileStore::open_with(dir.path(), recovering()).unwrap();
    let recovery = store.recovery().join("\n");
    assert!(recovery.contains("empty (0 bytes)") && recovery.contains("an empty store started"), "{recovery}");
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("store.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the empty file is kept aside");
    assert_eq!(store.revision().await.unwrap(), 0);
    store.txn(vec![], vec![put("a", "1")]).await.unwrap();
    drop(store);
    // Sound again: opened without recovery, reporting nothing.
    let store = FileStore::open(dir.path()).unwrap();
    assert!(store.recovery().is_empty());
    assert_eq!(store.revision().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path()).await;
    let file = dir.path().join("store.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 2).unwrap();
    let message = expect_corrupt(FileStore::open(dir.path()));
    assert!(message.contains("truncated"), "{message}");
}

/// Each run flips 8 random bits of the file: the store is either refused or
/// holds exactly what was written (the bits were in unused pages), never
/// something else, and opening never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bits_are_refused_or_change_nothing() {
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    let written = populate(&original).await;
    let bytes = std::fs::read(original.join("store.redb")).unwrap();
    let mut seed: u64 = 0x5eed_f11b;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut refused = 0;
    for run in 0..12 {
        let dir = base.path().join(format!("run{run}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut flipped = bytes.clone();
        for _ in 0..8 {
            let at = (next() % flipped.len() as u64) as usize;
            flipped[at] ^= 1 << (next() % 8);
        }
        std::fs::write(dir.join("store.redb"), &flipped).unwrap();
        match FileStore::open(&dir) {
            Err(Error::Corrupt { message, .. }) => {
                refused += 1;
                eprintln!("run {run}: refused: {message}");
            }
            Err(other) => panic!("run {run}: {other}"),
            Ok(store) => {
                assert_eq!(store.range("").await.unwrap(), written, "run {run}: opened with other contents");
                let mut history = store.watch("", 1).await.unwrap();
                for revision in 1..=written.1 {
                    let batch = tokio::time::timeout(Duration::from_secs(10), history.next()).await.unwrap();
                    assert_eq!(batch.unwrap().unwrap().revision, revision, "run {run}");
                }
            }
        }
    }
    assert!(refused > 0, "no run hit a page in use");

    // A flip inside a stored value: refused, and recovery starts over.
    let dir = base.path().join("value");
    std::fs::create_dir_all(&dir).unwrap();
    let needle = b"value 299, padded";
    let at = bytes.windows(needle.len()).position(|w| w == needle).expect("the last value is in the file");
    let mut flipped = bytes.clone();
    flipped[at + 6] ^= 0x01;
    std::fs::write(dir.join("store.redb"), &flipped).unwrap();
    let message = expect_corrupt(FileStore::open(&dir));
    assert!(message.contains("redb"), "{message}");
    let store = FileStore::open_with(&dir, recovering()).unwrap();
    assert!(store.recovery().join("\n").contains("moved to"), "{:?}", store.recovery());
    assert_eq!(store.range("").await.unwrap(), (vec![], 0));
}

/// Writes a record that does not decode and breaks the history, straight
/// through redb, the way a bug or another program could.
fn damage_records(file: &Path) {
    let db = redb::Database::open(file).unwrap();
    let wtx = db.begin_write().unwrap();
    {
        let mut kv = wtx.open_table(TableDefinition::<&str, &[u8]>::new("kv")).unwrap();
        kv.insert("/vipcast/vpcs/bad", [1u8, 2, 3].as_slice()).unwrap();
        let mut log = wtx.open_table(TableDefinition::<i64, &[u8]>::new("log")).unwrap();
        log.insert(120, [1u8, 9].as_slice()).unwrap();
    }
    wtx.commit().unwrap();
    drop(db);
    // The file itself is sound for redb.
    redb::Database::open(file).unwrap().begin_read().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_refused_and_recover_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let (written, revision) = populate(dir.path()).await;
    damage_records(&dir.path().join("store.redb"));
    let message = expect_corrupt(FileStore::open(dir.path()));
    assert!(message.contains("\"/vipcast/vpcs/bad\" cannot be decoded") && message.contains("1 more"), "{message}");

    let store = FileStore::open_with(dir.path(), recovering()).unwrap();
    let recovery = store.recovery().to_vec();
    assert_eq!(recovery.len(), 2, "{recovery:#?}");
    assert!(recovery[0].contains("/vipcast/vpcs/bad") && recovery[0].contains("deleted the key"), "{recovery:#?}");
    assert!(
        recovery[1].contains("revision 120 cannot be decoded")
            && recovery[1].contains("dropped the history up to revision 120"),
        "{recovery:#?}"
    );
    // Everything else is kept; the history starts after the bad entry.
    assert_eq!(store.range("").await.unwrap(), (written, revision));
    match store.watch("", 100).await {
        Err(Error::Compacted { requested: 100, oldest: 121 }) => {}
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut history = store.watch("", 121).await.unwrap();
    assert_eq!(history.next().await.unwrap().unwrap().revision, 121);
    // The lease came back, with its key.
    let leased = store.get("/vipcast/leased").await.unwrap().unwrap();
    store.lease_keep_alive(leased.lease).await.unwrap();
}

/// A tmpfs small enough to fill, the store in it, and a watcher.
struct FullDisk {
    disk: testing::Tmpfs,
    store: Arc<FileStore>,
}

fn full_disk() -> FullDisk {
    let disk = testing::Tmpfs::mount(8 << 20).unwrap();
    let store = Arc::new(FileStore::open(disk.path().join("store")).unwrap());
    FullDisk { disk, store }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_and_they_resume_once_there_is_room() {
    let FullDisk { disk, store } = tokio::task::spawn_blocking(full_disk).await.unwrap();
    let value = "x".repeat(2000);
    store.txn(vec![], vec![put("/vipcast/first", &value)]).await.unwrap();
    store.probe().await.unwrap();
    let mut watch = store.watch("/vipcast/", 0).await.unwrap();
    let filler = disk.fill("filler").unwrap();
    eprintln!("filled the disk with {} KiB", filler >> 10);
    match store.probe().await {
        Err(Error::File { message, .. }) => assert!(message.contains("free on its filesystem"), "{message}"),
        other => panic!("probe on a full disk: {other:?}"),
    }

    // Writes go on until redb needs a page the disk does not have.
    let mut acked = Vec::new();
    let failure = loop {
        let key = format!("/vipcast/k{:04}", acked.len());
        match store.txn(vec![], vec![put(&key, &value)]).await {
            Ok(r) => acked.push((key, r.revision)),
            Err(e) => break e,
        }
        assert!(acked.len() < 4000, "4000 writes on a full disk");
    };
    eprintln!("{} writes acknowledged on the full disk, then: {failure}", acked.len());
    match &failure {
        Error::File { message, .. } => assert!(message.contains("No space left"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Still full: writes keep failing (the file is reopened at most once a
    // second, and each attempt finds the disk full).
    assert!(store.txn(vec![], vec![put("/vipcast/again", "1")]).await.is_err());
    assert!(store.probe().await.is_err());
    // Reads go on meanwhile.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.get("/vipcast/first").await.unwrap().unwrap().value, value.as_bytes());

    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = loop {
        match store.txn(vec![], vec![put("/vipcast/after", "1")]).await {
            Ok(r) => break r.revision,
            Err(e) => {
                assert!(Instant::now() < deadline, "no write within 10 s of freeing space: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    store.probe().await.unwrap();
    // Nothing acknowledged was lost, and the watcher opened before the
    // failure carries on (revisions a failed commit may have left are
    // delivered too, in order).
    for (key, revision) in &acked {
        assert_eq!(store.get(key).await.unwrap().unwrap().mod_revision, *revision);
    }
    let mut last = 1;
    loop {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(batch.revision, last + 1, "watch revisions without gaps");
        last = batch.revision;
        if last == resumed {
            break;
        }
    }
    drop(watch);
    drop(store);
}
