//! What opening a store file checks before anything is served, and what
//! [`FileOptions::recover`](super::FileOptions::recover) drops when a check
//! fails.
//!
//! ```text
//!  store.redb absent ──► made as store.redb.new (tables, format), fsynced, renamed
//!  store.redb empty  ──► refused (recover: moved aside, a new one made)
//!  redb open with integrity check: every page checksum of the committed trees
//!       refused / redb panicked ──► refused (recover: moved aside, a new one made)
//!  format marker: absent ──► refused (recover: moved aside); another version ──► refused
//!  records (verify): every kv record decodes, revisions add up, leases and their
//!       keys agree, the log is contiguous up to the store revision and decodes
//!       ──► refused (recover: the records deleted, the history dropped, the meta set)
//! ```

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError};

use super::{
    FILE_NAME, FORMAT, HEALTH, KV, LEASE_KEYS, LEASES, LOG, META, META_FORMAT, META_NEXT_LEASE, META_OLDEST,
    META_REVISION, NEW_FILE_NAME, decode_events, decode_kv, file_error, panicked,
};
use crate::{Error, LeaseId, Result, Revision};

/// Why a file could not be opened: it cannot be trusted (recover moves it
/// aside), or another failure (never recovered from: the file may be fine).
enum Failure {
    Corrupt(String),
    Other(Error),
}

fn corrupt(path: &Path, message: impl Into<String>) -> Error {
    Error::Corrupt { what: format!("store file {}", path.display()), message: message.into() }
}

/// Opens the store file at `path` (making a new one if there is none and
/// `create_missing`), and checks redb's integrity and the format marker.
/// With `recover`, a file that cannot be trusted is moved aside (said in
/// `report`) and a new one made.
pub(super) fn open(path: &Path, create_missing: bool, recover: bool, report: &mut Vec<String>) -> Result<Database> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create_missing => create(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(file_error(path, "the file is gone (removed while the store was open)"));
        }
        Err(e) => return Err(file_error(path, format!("cannot read it: {e}"))),
        Ok(m) if m.len() == 0 => {
            let reason = "the file is empty (0 bytes)";
            if !recover {
                return Err(corrupt(path, reason));
            }
            set_aside(path, reason, report)?;
            create(path)?;
        }
        Ok(_) => {}
    }
    match open_verified(path) {
        Ok(db) => Ok(db),
        Err(Failure::Corrupt(reason)) if recover => {
            set_aside(path, &reason, report)?;
            create(path)?;
            open_verified(path).map_err(|f| match f {
                Failure::Corrupt(reason) => corrupt(path, reason),
                Failure::Other(e) => e,
            })
        }
        Err(Failure::Corrupt(reason)) => Err(corrupt(path, reason)),
        Err(Failure::Other(e)) => Err(e),
    }
}

/// redb's open with its integrity check (every page checksum), a panic
/// caught, then the format marker.
fn open_verified(path: &Path) -> std::result::Result<Database, Failure> {
    let opened = std::panic::catch_unwind(|| {
        let mut builder = redb::Builder::new();
        builder.set_check_integrity_on_open(true);
        builder.open(path)
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Err(panic) => return Err(Failure::Corrupt(panicked("opening it", &panic))),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(Failure::Other(file_error(
                path,
                "already open by another process (or another FileStore in this one)",
            )));
        }
        Ok(Err(DatabaseError::Storage(StorageError::Io(e)))) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Failure::Corrupt(format!("not a redb database: {e}")));
        }
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(message)))) => {
            return Err(Failure::Corrupt(format!("redb: {message}")));
        }
        Ok(Err(other)) => return Err(Failure::Other(file_error(path, other.to_string()))),
    };
    let format = (|| -> std::result::Result<Option<i64>, redb::Error> {
        let rtx = db.begin_read()?;
        let meta = match rtx.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(meta.get(META_FORMAT)?.map(|g| g.value()))
    })();
    match format {
        Ok(Some(FORMAT)) => Ok(db),
        Ok(Some(other)) => {
            Err(Failure::Other(file_error(path, format!("unknown format {other} (this build reads {FORMAT})"))))
        }
        Ok(None) => Err(Failure::Corrupt("no vipcast format marker: not a vipcast store file".into())),
        Err(e) => Err(Failure::Corrupt(format!("reading its format: {e}"))),
    }
}

/// Makes a new, empty store file at `path`: under a temporary name, tables
/// and format committed, fsynced, then renamed into place.
fn create(path: &Path) -> Result<()> {
    let tmp = path.with_file_name(NEW_FILE_NAME);
    let fail = |e: &dyn std::fmt::Display| file_error(path, format!("cannot make a new store file: {e}"));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(&e)),
    }
    let made = (|| -> std::result::Result<(), redb::Error> {
        let db = redb::Builder::new().create(&tmp)?;
        let mut wtx = db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        {
            let mut meta = wtx.open_table(META)?;
            meta.insert(META_FORMAT, FORMAT)?;
            meta.insert(META_REVISION, 0)?;
            meta.insert(META_OLDEST, 1)?;
            meta.insert(META_NEXT_LEASE, 1)?;
            wtx.open_table(KV)?;
            wtx.open_table(LOG)?;
            wtx.open_table(LEASES)?;
            wtx.open_table(LEASE_KEYS)?;
            wtx.open_table(HEALTH)?;
        }
        wtx.commit()?;
        db.close()?;
        Ok(())
    })();
    made.map_err(|e| fail(&e))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| fail(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(&e))?;
    sync_dir(path).map_err(|e| fail(&e))
}

/// Moves the file at `path` aside as `store.redb.corrupt-<unix time>`.
fn set_aside(path: &Path, reason: &str, report: &mut Vec<String>) -> Result<()> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut aside = path.with_file_name(format!("{FILE_NAME}.corrupt-{secs}"));
    let mut n = 1;
    while aside.exists() {
        aside = path.with_file_name(format!("{FILE_NAME}.corrupt-{secs}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside)
        .and_then(|()| sync_dir(path))
        .map_err(|e| file_error(path, format!("cannot move it aside to {}: {e}", aside.display())))?;
    report.push(format!(
        "the store file could not be trusted ({reason}): moved to {} and an empty store started (every object, lease and revision it held is dropped)",
        aside.display()
    ));
    Ok(())
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// What is wrong with the records, and how recovery fixes it.
#[derive(Debug)]
struct Finding {
    problem: String,
    fix: Fix,
}

#[derive(Debug)]
enum Fix {
    DeleteKey(String),
    DeleteLeaseKey(LeaseId, String),
    AddLeaseKey(LeaseId, String),
    SetMeta(&'static str, i64),
    /// Deletes the log entries up to `to`; the history then starts at `oldest`.
    DropLogTo {
        to: Revision,
        oldest: Revision,
    },
    CreateTable(&'static str),
}

/// What the store holds once verified: its revision and its leases.
pub(super) type Verified = (Revision, Vec<(LeaseId, Duration)>);

/// Checks every record of an open store file. Without `recover`, the first
/// problem is an [`Error::Corrupt`]; with it, problems are fixed in one
/// transaction and described, one sentence each.
pub(super) fn verify(db: &Database, path: &Path, recover: bool) -> Result<(Verified, Vec<String>)> {
    let redb_err = |e: redb::Error| corrupt(path, format!("redb: {e}"));
    let findings = inspect(db).map_err(redb_err)?;
    if findings.is_empty() {
        return Ok((state(db).map_err(redb_err)?, Vec::new()));
    }
    if !recover {
        let more = match findings.len() {
            1 => String::new(),
            n => format!(" (and {} more problems)", n - 1),
        };
        return Err(corrupt(path, format!("{}{more}", findings[0].problem)));
    }
    let mut report = Vec::with_capacity(findings.len());
    let fixed = (|| -> std::result::Result<(), redb::Error> {
        let mut wtx = db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        for f in &findings {
            match &f.fix {
                Fix::DeleteKey(key) => {
                    wtx.open_table(KV)?.remove(key.as_str())?;
                    report.push(format!("{}: deleted the key", f.problem));
                }
                Fix::DeleteLeaseKey(lease, key) => {
                    wtx.open_table(LEASE_KEYS)?.remove((*lease, key.as_str()))?;
                    report.push(format!("{}: detached it", f.problem));
                }
                Fix::AddLeaseKey(lease, key) => {
                    wtx.open_table(LEASE_KEYS)?.insert((*lease, key.as_str()), ())?;
                    report.push(format!("{}: attached it", f.problem));
                }
                Fix::SetMeta(name, value) => {
                    wtx.open_table(META)?.insert(*name, *value)?;
                    report.push(format!("{}: set {name} to {value}", f.problem));
                }
                Fix::DropLogTo { to, oldest } => {
                    wtx.open_table(LOG)?.retain_in(..=*to, |_, _| false)?;
                    wtx.open_table(META)?.insert(META_OLDEST, *oldest)?;
                    report.push(format!(
                        "{}: dropped the history up to revision {to} (watchers resuming from before {oldest} get a snapshot)",
                        f.problem
                    ));
                }
                Fix::CreateTable(name) => {
                    match *name {
                        "kv" => drop(wtx.open_table(KV)?),
                        "log" => drop(wtx.open_table(LOG)?),
                        "leases" => drop(wtx.open_table(LEASES)?),
                        _ => drop(wtx.open_table(LEASE_KEYS)?),
                    }
                    report.push(format!("{}: made it empty", f.problem));
                }
            }
        }
        wtx.commit()?;
        Ok(())
    })();
    fixed.map_err(redb_err)?;
    let again = inspect(db).map_err(redb_err)?;
    if let Some(f) = again.first() {
        return Err(corrupt(path, format!("still after recovery: {}", f.problem)));
    }
    Ok((state(db).map_err(redb_err)?, report))
}

/// The revision and the leases of a verified file.
fn state(db: &Database) -> std::result::Result<Verified, redb::Error> {
    let rtx = db.begin_read()?;
    let revision = rtx.open_table(META)?.get(META_REVISION)?.map_or(0, |g| g.value());
    let mut leases = Vec::new();
    for entry in rtx.open_table(LEASES)?.iter()? {
        let (id, ttl) = entry?;
        leases.push((id.value(), Duration::from_millis(ttl.value())));
    }
    Ok((revision, leases))
}

/// Every problem of the records, each with its fix.
fn inspect(db: &Database) -> std::result::Result<Vec<Finding>, redb::Error> {
    let mut out = Vec::new();
    let rtx = db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let revision = meta.get(META_REVISION)?.map(|g| g.value());
    let oldest = meta.get(META_OLDEST)?.map(|g| g.value());
    let next_lease = meta.get(META_NEXT_LEASE)?.map(|g| g.value());

    let mut missing_table = |name: &'static str, e: redb::TableError| match e {
        redb::TableError::TableDoesNotExist(_) => {
            out.push(Finding { problem: format!("table {name} is missing"), fix: Fix::CreateTable(name) });
            Ok(())
        }
        other => Err(redb::Error::from(other)),
    };

    let mut leases = HashSet::new();
    match rtx.open_table(LEASES) {
        Ok(table) => {
            for entry in table.iter()? {
                leases.insert(entry?.0.value());
            }
        }
        Err(e) => missing_table("leases", e)?,
    }

    // kv: records decode, revisions add up, leases exist.
    let mut attached: HashMap<String, LeaseId> = HashMap::new();
    let mut max_mod = 0;
    let mut findings = Vec::new();
    match rtx.open_table(KV) {
        Ok(table) => {
            for entry in table.iter()? {
                let (key, record) = entry?;
                let key = key.value();
                match decode_kv(key, record.value()) {
                    Err(what) => findings.push(Finding {
                        problem: format!("the record of key {key:?} cannot be decoded ({what})"),
                        fix: Fix::DeleteKey(key.to_owned()),
                    }),
                    Ok(kv) if kv.create_revision < 1 || kv.mod_revision < kv.create_revision => {
                        findings.push(Finding {
                            problem: format!(
                                "key {key:?} has revisions that do not add up (created at {}, modified at {})",
                                kv.create_revision, kv.mod_revision
                            ),
                            fix: Fix::DeleteKey(key.to_owned()),
                        })
                    }
                    Ok(kv) if kv.lease != 0 && !leases.contains(&kv.lease) => findings.push(Finding {
                        problem: format!("key {key:?} is attached to lease {}, which does not exist", kv.lease),
                        fix: Fix::DeleteKey(key.to_owned()),
                    }),
                    Ok(kv) => {
                        max_mod = max_mod.max(kv.mod_revision);
                        if kv.lease != 0 {
                            attached.insert(key.to_owned(), kv.lease);
                        }
                    }
                }
            }
        }
        Err(e) => missing_table("kv", e)?,
    }

    // lease_keys: every entry is a lease's key, every leased key has one.
    match rtx.open_table(LEASE_KEYS) {
        Ok(table) => {
            let mut seen = HashSet::new();
            for entry in table.iter()? {
                let (k, _) = entry?;
                let (lease, key) = k.value();
                if attached.get(key) == Some(&lease) {
                    seen.insert(key.to_owned());
                } else {
                    findings.push(Finding {
                        problem: format!("lease {lease} lists key {key:?}, which is not attached to it"),
                        fix: Fix::DeleteLeaseKey(lease, key.to_owned()),
                    });
                }
            }
            for (key, lease) in &attached {
                if !seen.contains(key) {
                    findings.push(Finding {
                        problem: format!("key {key:?} is attached to lease {lease}, which does not list it"),
                        fix: Fix::AddLeaseKey(*lease, key.clone()),
                    });
                }
            }
        }
        Err(e) => missing_table("lease_keys", e)?,
    }

    // The log: contiguous, decodable, ending at the store revision.
    let mut first = None;
    let mut last = None;
    let mut drop_to = None;
    match rtx.open_table(LOG) {
        Ok(table) => {
            for entry in table.iter()? {
                let (rev, events) = entry?;
                let rev = rev.value();
                if let Some(prev) = last
                    && rev != prev + 1
                {
                    findings.push(Finding {
                        problem: format!("the history has a gap between revisions {prev} and {rev}"),
                        fix: Fix::DropLogTo { to: rev - 1, oldest: rev },
                    });
                    drop_to = Some(rev - 1);
                }
                if let Err(what) = decode_events(rev, events.value()) {
                    findings.push(Finding {
                        problem: format!("the history entry of revision {rev} cannot be decoded ({what})"),
                        fix: Fix::DropLogTo { to: rev, oldest: rev + 1 },
                    });
                    drop_to = Some(rev);
                }
                first.get_or_insert(rev);
                last = Some(rev);
            }
        }
        Err(e) => missing_table("log", e)?,
    }
    out.append(&mut findings);

    // The store revision: at least every record's and every history entry's.
    let latest = max_mod.max(last.unwrap_or(0));
    let revision = match revision {
        Some(r) if r >= latest => r,
        Some(r) => {
            out.push(Finding {
                problem: format!("the store revision {r} is older than what was written at revision {latest}"),
                fix: Fix::SetMeta(META_REVISION, latest),
            });
            latest
        }
        None => {
            out.push(Finding {
                problem: "the store revision is missing".into(),
                fix: Fix::SetMeta(META_REVISION, latest),
            });
            latest
        }
    };
    // The history must reach the store revision, and start where it says.
    let mut dropped = drop_to.is_some();
    if let Some(l) = last
        && l < revision
    {
        out.push(Finding {
            problem: format!("the history ends at revision {l}, before the store revision {revision}"),
            fix: Fix::DropLogTo { to: l, oldest: revision + 1 },
        });
        dropped = true;
    }
    if !dropped {
        let wanted = first.unwrap_or(revision + 1);
        match oldest {
            Some(o) if o == wanted => {}
            // An empty history may be said to start anywhere after the revision.
            Some(o) if first.is_none() && o > revision => {}
            Some(o) => out.push(Finding {
                problem: format!("the history is said to start at revision {o}, but starts at {wanted}"),
                fix: Fix::SetMeta(META_OLDEST, wanted),
            }),
            None => out.push(Finding {
                problem: "the start of the history is missing".into(),
                fix: Fix::SetMeta(META_OLDEST, wanted),
            }),
        }
    }

    let max_lease = leases.iter().copied().max().unwrap_or(0);
    match next_lease {
        Some(n) if n > max_lease => {}
        Some(n) => out.push(Finding {
            problem: format!("the next lease id {n} is not above the lease {max_lease} granted"),
            fix: Fix::SetMeta(META_NEXT_LEASE, max_lease + 1),
        }),
        None => out.push(Finding {
            problem: "the next lease id is missing".into(),
            fix: Fix::SetMeta(META_NEXT_LEASE, max_lease + 1),
        }),
    }
    Ok(out)
}
