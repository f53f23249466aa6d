//! The database workload's client (`vipcast workload-client`, run in the
//! lab's client VM): `workers` connections to the VIP, each inserting one
//! row after the other as fast as the database acknowledges, every
//! operation's fate one line on stdout:
//!
//! ```text
//! op <id> <worker> <sent µs> <done µs> ack|refused|doubt
//! ```
//! `ack`: the server said OK (the commit is acknowledged). `refused`: it
//! said no (e.g. read-only while a standby is promoted): nothing was
//! written. `doubt`: the connection broke or timed out after the statement
//! was sent: it may or may not have been committed. Ids are unique across
//! runs (`base` + a counter).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::probe::now_us;
use crate::sql::{Conn, SqlError};

/// How the client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    pub user: String,
    pub password: String,
    pub workers: u32,
    /// A SYN to a MAC the VIP has left is lost silently; the kernel would
    /// retry after 1 s. Well under that, a new attempt goes out instead.
    pub connect_timeout: Duration,
    /// How long an operation may wait for its answer before it is in doubt.
    pub io_timeout: Duration,
}

/// A fate, as the line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Ack,
    Refused,
    Doubt,
}

impl Fate {
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Ack => "ack",
            Fate::Refused => "refused",
            Fate::Doubt => "doubt",
        }
    }

    pub fn parse(s: &str) -> Option<Fate> {
        [Fate::Ack, Fate::Refused, Fate::Doubt].into_iter().find(|f| f.as_str() == s)
    }
}

/// Pause after a refusal or a failed connection, so a member that says no
/// at once is not hammered.
const BACKOFF: Duration = Duration::from_millis(5);

/// Runs until killed (or stdout goes away).
pub fn run(cfg: &ClientConfig, mut out: impl Write) -> io::Result<()> {
    let base = now_us().saturating_mul(1000);
    writeln!(out, "start {base}")?;
    out.flush()?;
    let next = Arc::new(AtomicU64::new(base));
    let (tx, rx) = mpsc::channel::<String>();
    for w in 0..cfg.workers.max(1) {
        let cfg = cfg.clone();
        let next = next.clone();
        let tx = tx.clone();
        std::thread::spawn(move || worker(&cfg, w, &next, &tx));
    }
    drop(tx);
    write_lines(&rx, out)
}

/// Writes the workers' lines to `out` until every worker has gone; what
/// is queued goes out in one write.
pub(crate) fn write_lines(rx: &mpsc::Receiver<String>, mut out: impl Write) -> io::Result<()> {
    while let Ok(line) = rx.recv() {
        out.write_all(line.as_bytes())?;
        while let Ok(more) = rx.try_recv() {
            out.write_all(more.as_bytes())?;
        }
        out.flush()?;
    }
    Ok(())
}

fn worker(cfg: &ClientConfig, w: u32, next: &AtomicU64, tx: &mpsc::Sender<String>) {
    let mut conn: Option<Conn> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(cfg.addr, &cfg.user, &cfg.password, cfg.connect_timeout, cfg.io_timeout) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    std::thread::sleep(BACKOFF);
                    continue;
                }
            },
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let sent = now_us();
        let result = c.execute(&format!("INSERT INTO vipcast.ops (id, worker, sent_us) VALUES ({id}, {w}, {sent})"));
        let fate = match result {
            Ok(_) => Fate::Ack,
            Err(SqlError::Server(_)) => Fate::Refused,
            Err(SqlError::Io(_) | SqlError::Protocol(_)) => {
                conn = None;
                Fate::Doubt
            }
        };
        if tx.send(format!("op {id} {w} {sent} {} {}\n", now_us(), fate.as_str())).is_err() {
            return;
        }
        if fate != Fate::Ack {
            std::thread::sleep(BACKOFF);
        }
    }
}
