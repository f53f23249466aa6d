//! The payment workload: a service that takes payments over HTTP and writes
//! them through the database VIP, and the client that pays through the
//! service's VIP and records every answer.
//!
//! ```text
//!  client VM: payment-client ──POST /pay──► web VIP:80 ──► nginx ──► payment-backend
//!     Idempotency-Key: k<20 digits>          (member)         127.0.0.1:8080
//!     a key is retried until it is paid                          │ INSERT payments
//!                                                                v
//!                                                        db VIP:3306 (the pair)
//! ```
//! `POST /pay` answers 200 only after the commit, with the payment's id; a
//! key paid before (a retried request whose first attempt committed) gets
//! the same id (`replayed`). The backend answers 503 when the database
//! refused or the outcome is unknown; the client then retries with the same
//! key. Every acknowledged key must be stored exactly once, with the id the
//! client was given.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use crate::probe::now_us;
use crate::record::ApplyLine;
use crate::sql::{Conn, SqlError};

/// Requests larger than this (head or body) are refused.
pub const MAX_HEAD: usize = 8 * 1024;
pub const MAX_BODY: usize = 4 * 1024;
/// Connections served at once; more get 503 at once.
pub const MAX_CONNECTIONS: usize = 256;

/// How long the client waits for an answer before it retries the key. A
/// request the old master's kernel acknowledged gets no reset after the VIP
/// moves (nothing is retransmitted): only this timeout ends the wait. It
/// may be shorter than the backend's database timeout (500 ms): a retry of
/// a key whose first attempt commits later gets the same payment.
pub const IO_TIMEOUT: Duration = Duration::from_millis(300);

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Vec<u8>,
}

/// Why a request is refused, as the answer's status and JSON error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

/// Parses `buf` (what was read so far): `Ok(None)` while incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request>, Refusal> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(refuse(431, "head_too_large", "request head over 8 KiB"))
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(refuse(431, "head_too_large", "request head over 8 KiB"));
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| refuse(400, "bad_request", "request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version)) = (first.next(), first.next(), first.next()) else {
        return Err(refuse(400, "bad_request", "malformed request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(refuse(400, "bad_request", "not HTTP/1.x"));
    }
    let mut length = 0usize;
    let mut key = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(refuse(400, "bad_request", "malformed header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| refuse(400, "bad_request", "Content-Length is not a number"))?;
            if length > MAX_BODY {
                return Err(refuse(413, "body_too_large", "body over 4 KiB"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse(411, "length_required", "chunked bodies are not taken; send Content-Length"));
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            key = Some(value.to_string());
        }
    }
    let body = &buf[end + 4..];
    if body.len() < length {
        return Ok(None);
    }
    Ok(Some(Request {
        method: method.to_string(),
        path: path.to_string(),
        idempotency_key: key,
        body: body[..length].to_vec(),
    }))
}

/// A key the service takes: 1 to 64 of `[A-Za-z0-9_-]` (it goes into SQL
/// as a literal, so nothing else may).
pub fn valid_key(key: &str) -> bool {
    (1..=64).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `POST /pay`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PayBody {
    /// In cents, 1 or more.
    amount: u64,
}

/// The backend: where it listens, the database, who it is.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub listen: SocketAddr,
    pub db: SocketAddr,
    pub user: String,
    pub password: String,
    pub name: String,
}

/// Connections to the database, reused.
#[derive(Debug)]
struct Pool {
    cfg: BackendConfig,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    fn take(&self) -> Result<Conn, SqlError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(c);
        }
        Conn::connect(
            self.cfg.db,
            &self.cfg.user,
            &self.cfg.password,
            Duration::from_millis(100),
            Duration::from_millis(500),
        )
    }

    fn give(&self, c: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 32 {
            idle.push(c);
        }
    }

    /// Pays `key` once: the new payment's id, or the id it was paid with.
    fn pay(&self, key: &str, amount: u64) -> Result<(u64, bool), Refusal> {
        let mut c = self.take().map_err(|e| refuse(503, "database_unavailable", e.to_string()))?;
        let name = &self.cfg.name;
        let insert =
            format!("INSERT INTO vipcast.payments (idem_key, amount, backend) VALUES ('{key}', {amount}, '{name}')");
        let result = match c.insert(&insert) {
            Ok((_, id)) => Ok((id, false)),
            // Paid before: the same payment again.
            Err(SqlError::Server(e)) if e.code == 1062 => {
                match c.query(&format!("SELECT id FROM vipcast.payments WHERE idem_key = '{key}'")) {
                    Ok(rows) => rows
                        .first()
                        .and_then(|r| r.first().cloned().flatten())
                        .and_then(|v| v.parse().ok())
                        .map(|id| (id, true))
                        .ok_or_else(|| refuse(503, "database_in_doubt", "paid before, but its row is not readable")),
                    Err(e) => Err(refuse(503, "database_in_doubt", e.to_string())),
                }
            }
            Err(SqlError::Server(e)) => Err(refuse(503, "database_refused", e.to_string())),
            Err(e) => {
                // The connection is gone: whether it committed is unknown.
                return Err(refuse(503, "database_in_doubt", e.to_string()));
            }
        };
        self.give(c);
        result
    }
}

fn answer(stream: &mut TcpStream, status: u16, body: &serde_json::Value) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let text = body.to_string();
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

fn error_body(r: &Refusal, field: Option<&str>) -> serde_json::Value {
    serde_json::json!({"error": {"code": r.code, "message": r.message, "field": field}})
}

fn serve_one(pool: &Pool, stream: &mut TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let req = loop {
        match parse_request(&buf) {
            Ok(Some(r)) => break r,
            Ok(None) => {}
            Err(r) => return answer(stream, r.status, &error_body(&r, None)),
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health") => answer(stream, 200, &serde_json::json!({"ok": true, "backend": pool.cfg.name})),
        ("POST", "/pay") => {
            let key = req.idempotency_key.unwrap_or_default();
            if !valid_key(&key) {
                let r = refuse(400, "invalid_key", "Idempotency-Key: 1 to 64 of A-Z a-z 0-9 _ -");
                return answer(stream, 400, &error_body(&r, Some("Idempotency-Key")));
            }
            let body: PayBody = match serde_json::from_slice(&req.body) {
                Ok(b) => b,
                Err(e) => {
                    let r = refuse(400, "invalid_body", format!("body: {e}"));
                    return answer(stream, 400, &error_body(&r, Some("amount")));
                }
            };
            if body.amount == 0 || body.amount > 1_000_000_000 {
                let r = refuse(400, "invalid_amount", "amount: 1 to 1000000000 cents");
                return answer(stream, 400, &error_body(&r, Some("amount")));
            }
            match pool.pay(&key, body.amount) {
                Ok((id, replayed)) => answer(
                    stream,
                    200,
                    &serde_json::json!({"payment_id": id, "key": key, "replayed": replayed, "backend": pool.cfg.name}),
                ),
                Err(r) => answer(stream, r.status, &error_body(&r, None)),
            }
        }
        _ => {
            let r = refuse(404, "not_found", format!("no {} {}", req.method, req.path));
            answer(stream, 404, &error_body(&r, None))
        }
    }
}

/// Serves until the process ends: one thread per connection, at most
/// [`MAX_CONNECTIONS`].
pub fn serve(cfg: BackendConfig) -> io::Result<()> {
    let listener = TcpListener::bind(cfg.listen)?;
    let pool = Arc::new(Pool { cfg, idle: Mutex::new(Vec::new()) });
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            let r = refuse(503, "busy", "too many connections");
            let _ = answer(&mut stream, 503, &error_body(&r, None));
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (pool, active) = (pool.clone(), active.clone());
        std::thread::spawn(move || {
            let _ = serve_one(&pool, &mut stream);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

/// How the payment client runs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub addr: SocketAddr,
    pub workers: u32,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
}

/// What one attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 200: paid, with this id.
    Paid(u64),
    /// Another HTTP status (503: the database said no or does not know).
    Status(u16),
    /// The connection broke or timed out after the request was sent.
    Doubt,
    /// No connection: the request was not sent.
    Unsent,
}

/// The key of number `n`: fixed width, so keys sort as numbers.
pub fn key(n: u64) -> String {
    format!("k{n:020}")
}

fn attempt(cfg: &ClientConfig, key: &str) -> Outcome {
    let Ok(mut s) = TcpStream::connect_timeout(&cfg.addr, cfg.connect_timeout) else { return Outcome::Unsent };
    let _ = s.set_read_timeout(Some(cfg.io_timeout));
    let _ = s.set_write_timeout(Some(cfg.io_timeout));
    let _ = s.set_nodelay(true);
    let body = r#"{"amount":1250}"#;
    let req = format!(
        "POST /pay HTTP/1.1\r\nHost: pay\r\nIdempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return Outcome::Doubt;
    }
    let mut resp = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if resp.len() + n <= 16 * 1024 => resp.extend_from_slice(&chunk[..n]),
            Ok(_) | Err(_) => return Outcome::Doubt,
        }
    }
    parse_response(&resp)
}

/// The outcome an HTTP response says.
pub fn parse_response(resp: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(resp);
    let Some(status) = text.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else { return Outcome::Doubt };
    if status != 200 {
        return Outcome::Status(status);
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["payment_id"].as_u64())
        .map_or(Outcome::Doubt, Outcome::Paid)
}

/// Runs until killed: each worker pays key after key, each key retried
/// until paid; one line per attempt:
/// `pay <key number> <attempt> <sent µs> <done µs> paid <id> | status <code> | doubt | unsent`.
pub fn run_client(cfg: &ClientConfig, mut out: impl Write) -> io::Result<()> {
    let base = now_us().saturating_mul(1000);
    writeln!(out, "start {base}")?;
    out.flush()?;
    let next = Arc::new(AtomicU64::new(base));
    let (tx, rx) = mpsc::channel::<String>();
    for _ in 0..cfg.workers.max(1) {
        let (cfg, next, tx) = (cfg.clone(), next.clone(), tx.clone());
        std::thread::spawn(move || {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let k = key(n);
                for a in 1u32.. {
                    let sent = now_us();
                    let o = attempt(&cfg, &k);
                    let what = match o {
                        Outcome::Paid(id) => format!("paid {id}"),
                        Outcome::Status(s) => format!("status {s}"),
                        Outcome::Doubt => "doubt".into(),
                        Outcome::Unsent => "unsent".into(),
                    };
                    if tx.send(format!("pay {n} {a} {sent} {} {what}\n", now_us())).is_err() {
                        return;
                    }
                    if matches!(o, Outcome::Paid(_)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
    }
    drop(tx);
    super::client::write_lines(&rx, out)
}

/// One attempt, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub key: u64,
    pub attempt: u32,
    pub sent_us: u64,
    pub done_us: u64,
    pub outcome: Outcome,
}

/// The client's attempts.
#[derive(Debug, Default, Clone)]
pub struct PayLog {
    pub base: Option<u64>,
    pub attempts: Vec<Attempt>,
}

impl ApplyLine for PayLog {
    fn apply_line(&mut self, line: &str) {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("start") => self.base = w.next().and_then(|v| v.parse().ok()),
            Some("pay") => {
                let mut num = || w.next().and_then(|v| v.parse::<u64>().ok());
                let (Some(key), Some(attempt), Some(sent_us), Some(done_us)) = (num(), num(), num(), num()) else {
                    return;
                };
                let outcome = match (w.next(), w.next().and_then(|v| v.parse::<u64>().ok())) {
                    (Some("paid"), Some(id)) => Outcome::Paid(id),
                    (Some("status"), Some(s)) => match u16::try_from(s) {
                        Ok(s) => Outcome::Status(s),
                        Err(_) => return,
                    },
                    (Some("doubt"), None) => Outcome::Doubt,
                    (Some("unsent"), None) => Outcome::Unsent,
                    _ => return,
                };
                let Ok(attempt) = u32::try_from(attempt) else { return };
                self.attempts.push(Attempt { key, attempt, sent_us, done_us, outcome });
            }
            _ => {}
        }
    }
}

impl PayLog {
    /// Paid attempts finished in `[from_us, to_us)`.
    pub fn paid_between(&self, from_us: u64, to_us: u64) -> usize {
        self.attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Paid(_)) && (from_us..to_us).contains(&a.done_us))
            .count()
    }

    /// The longest time without a paid answer in `[from_us, to_us]`.
    pub fn longest_gap(&self, from_us: u64, to_us: u64) -> Option<u64> {
        let paid = self.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Paid(_))).map(|a| a.done_us);
        super::ops::longest_gap(paid, from_us, to_us)
    }

    /// 5xx answers finished in `[from_us, to_us)`.
    pub fn server_errors(&self, from_us: u64, to_us: u64) -> usize {
        self.attempts
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Status(s) if s >= 500) && (from_us..to_us).contains(&a.done_us))
            .count()
    }
}

/// Payments judged against the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PayVerdict {
    /// Keys paid (acknowledged) in the window.
    pub paid: usize,
    /// Attempts that were retries of a key.
    pub retries: usize,
    /// Attempts in doubt (the key was then retried).
    pub in_doubt: usize,
    /// Paid keys whose answer said `replayed`... not logged; keys paid
    /// after an attempt in doubt.
    pub paid_after_doubt: usize,
    /// Paid but not stored: must be empty.
    pub lost: Vec<u64>,
    /// Stored with another id than the client was given, or paid twice
    /// with different ids: must be empty.
    pub wrong_id: Vec<u64>,
    /// Stored but never sent: must be empty.
    pub phantoms: Vec<u64>,
}

impl PayVerdict {
    pub fn clean(&self) -> bool {
        self.lost.is_empty() && self.wrong_id.is_empty() && self.phantoms.is_empty()
    }
}

/// Judges the keys paid in `[from_us, snapshot_us)` against `stored`
/// (key number → payment id, at the snapshot); every stored key must have
/// been sent. Lists are capped at 20.
pub fn verify(log: &PayLog, stored: &BTreeMap<u64, u64>, from_us: u64, snapshot_us: u64) -> PayVerdict {
    const SHOW: usize = 20;
    let mut v = PayVerdict::default();
    let mut paid: BTreeMap<u64, u64> = BTreeMap::new();
    let mut doubted = std::collections::BTreeSet::new();
    let mut sent = std::collections::BTreeSet::new();
    for a in &log.attempts {
        if a.outcome != Outcome::Unsent {
            sent.insert(a.key);
        }
        if !(from_us..snapshot_us).contains(&a.done_us) {
            continue;
        }
        v.retries += usize::from(a.attempt > 1);
        match a.outcome {
            Outcome::Doubt => {
                v.in_doubt += 1;
                doubted.insert(a.key);
            }
            Outcome::Paid(id) => {
                if let Some(before) = paid.insert(a.key, id)
                    && before != id
                    && v.wrong_id.len() < SHOW
                {
                    v.wrong_id.push(a.key);
                }
            }
            _ => {}
        }
    }
    v.paid = paid.len();
    v.paid_after_doubt = paid.keys().filter(|k| doubted.contains(k)).count();
    for (k, id) in &paid {
        match stored.get(k) {
            None if v.lost.len() < SHOW => v.lost.push(*k),
            Some(s) if s != id && v.wrong_id.len() < SHOW => v.wrong_id.push(*k),
            _ => {}
        }
    }
    v.phantoms = stored.keys().filter(|k| !sent.contains(k)).take(SHOW).copied().collect();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests() {
        let r =
            parse_request(b"POST /pay HTTP/1.1\r\nIdempotency-Key: k1\r\nContent-Length: 15\r\n\r\n{\"amount\":1250}")
                .unwrap()
                .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.idempotency_key.as_deref()), ("POST", "/pay", Some("k1")));
        assert_eq!(r.body, b"{\"amount\":1250}");
        assert_eq!(parse_request(b"POST /pay HTTP/1.1\r\nContent-Length: 15\r\n\r\n{\"am").unwrap(), None);
        assert_eq!(parse_request(b"GET /health HTTP/1.0\r\n").unwrap(), None);
        assert_eq!(parse_request(b"GET\r\n\r\n").unwrap_err().code, "bad_request");
        assert_eq!(parse_request(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n").unwrap_err().status, 413);
        assert_eq!(parse_request(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err().status, 411);
        assert_eq!(parse_request(&vec![b'a'; MAX_HEAD + 1]).unwrap_err().status, 431);
        assert!(
            valid_key("k00000000000000000001")
                && !valid_key("k'; DROP")
                && !valid_key("")
                && !valid_key(&"a".repeat(65))
        );
    }

    #[test]
    fn responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"payment_id\":42}";
        assert_eq!(parse_response(ok), Outcome::Paid(42));
        assert_eq!(parse_response(b"HTTP/1.1 502 Bad Gateway\r\n\r\n"), Outcome::Status(502));
        assert_eq!(parse_response(b""), Outcome::Doubt);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n{}"), Outcome::Doubt);
    }

    fn log(lines: &[&str]) -> PayLog {
        let mut l = PayLog::default();
        for line in lines {
            l.apply_line(line);
        }
        l
    }

    #[test]
    fn every_paid_key_once_with_its_id() {
        let l = log(&[
            "pay 1 1 0 10 paid 7",
            "pay 2 1 10 20 doubt",
            "pay 2 2 20 30 paid 8",
            "pay 3 1 30 40 status 503",
            "pay 3 2 40 50 paid 9",
            "pay 4 1 50 60 unsent",
        ]);
        let stored: BTreeMap<u64, u64> = [(1, 7), (2, 8), (3, 9)].into();
        let v = verify(&l, &stored, 0, 100);
        assert!(v.clean(), "{v:?}");
        assert_eq!((v.paid, v.retries, v.in_doubt, v.paid_after_doubt), (3, 2, 1, 1));
        // A paid key missing, one stored under another id, one never sent.
        let stored: BTreeMap<u64, u64> = [(1, 7), (2, 99), (4, 5), (5, 6)].into();
        let v = verify(&l, &stored, 0, 100);
        assert_eq!((v.lost.clone(), v.wrong_id.clone(), v.phantoms.clone()), (vec![3], vec![2], vec![4, 5]));
        assert_eq!(l.server_errors(0, 100), 1);
        assert_eq!(l.longest_gap(0, 100), Some(20));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&bytes);
            let _ = parse_response(&bytes);
            let mut l = PayLog::default();
            l.apply_line(&String::from_utf8_lossy(&bytes));
        }
    }
}
