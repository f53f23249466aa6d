//! Serving HTTP/1.1 connections under limits: what `axum::serve` does, plus
//! timeouts on every connection and a cap on how many are open.
//!
//! ```text
//!  accept ──► at the cap? ──► close the connection idle the longest (none idle: 503, close)
//!    │
//!    └─► per connection: hyper http1 ─► request ─► api::router (limits on the request, JSON errors)
//!          watchdog: idle (no request in progress, nothing received) > idle_timeout ─► close
//!                    a request head started but not complete  > header_timeout ─► close
//!                    a request in progress (watch streams too) ─► no timer
//!                    a write blocked (the peer reads nothing) > write_stall_timeout ─► close
//! ```
//! A connection is *busy* from the moment hyper hands a request to the
//! router until the response body has been sent (or dropped), so a watch
//! stream — one response that never ends, with pings — is never cut by the
//! idle timeout; everything between requests is *idle*. Being idle is what
//! makes a connection closable: at the cap, a new connection closes the one
//! idle the longest (nginx does the same when it runs out of connections),
//! so idle sockets can never lock the API out. The body of a request has its
//! own deadline, in the router (`body_timeout`). A response — a watch stream
//! above all — whose client stops reading fills the socket and then the
//! stream's bounded queue; once a write has been blocked for
//! `write_stall_timeout` the connection is closed, busy or not, so a
//! subscriber that stopped reading holds no memory and no connection slot
//! (it resumes with `?from=REV` when it comes back).
//!
//! The decisions (which deadline applies, which connection to close) are
//! plain functions of the connections' phases, tested without sockets.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use crate::tls::{Peer, TlsServer};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::Controller;
use crate::metrics::CloseLabels;

/// Limits on connections and requests. Every duration and size here is
/// what a well-behaved agent never comes near.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most connections open at once. At the cap, a new connection closes
    /// the one idle the longest, or is answered 503 and closed if every one
    /// has a request in progress. Default 768: below the usual soft limit of
    /// 1024 descriptors with room for the store, sockets and logs (see
    /// [`HttpLimits::fit_descriptors`]).
    pub max_connections: usize,
    /// A connection with no request in progress that receives nothing for
    /// this long is closed (the keep-alive timeout; also counts for a new
    /// connection before its first byte). Default 60 s.
    pub idle_timeout: Duration,
    /// A request head (request line and headers) must be complete this long
    /// after its first byte arrived, or the connection is closed. Default 10 s.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head, or the
    /// request is answered 408 `body_timeout` and the connection closed.
    /// Default 10 s.
    pub body_timeout: Duration,
    /// Largest request body, in bytes: a larger `Content-Length` is answered
    /// 413 `body_too_large` before anything of it is read (a body without a
    /// length, once it grows past this). Default 1 MiB.
    pub max_body: usize,
    /// Longest request target (path and query), in bytes: 414 `uri_too_long`.
    /// Default 8 KiB.
    pub max_uri: usize,
    /// Largest header section (names and values), in bytes: 431
    /// `headers_too_large`. Default 32 KiB.
    pub max_headers: usize,
    /// How long a shutdown waits for requests in progress before closing
    /// their connections (watch streams never end by themselves). Default 5 s.
    pub shutdown_grace: Duration,
    /// A connection whose writes have made no progress for this long (the
    /// client reads nothing: its socket and its stream's queue are full) is
    /// closed, with a request in progress or not. Default 10 s.
    pub write_stall_timeout: Duration,
    /// Each connection's kernel send buffer, bytes (`SO_SNDBUF`; Linux
    /// doubles it): what a client that stops reading can hold of the
    /// controller's memory before its writes block. 0: the kernel's
    /// autotuning (up to `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default).
    /// Default 256 KiB, a snapshot's worth at 50 ms RTT and 10 MB/s.
    pub send_buffer: usize,
}

/// How much of a request head hyper buffers, in bytes. Heads between our
/// limits and this are answered with the JSON error body; beyond it (and for
/// more than 100 headers, or a target over 64 KiB) hyper itself answers 431
/// or 414, with an empty body, and closes the connection.
const HEAD_BUFFER: usize = 128 * 1024;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 768,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            max_uri: 8 * 1024,
            max_headers: 32 * 1024,
            shutdown_grace: Duration::from_secs(5),
            write_stall_timeout: Duration::from_secs(10),
            send_buffer: 256 * 1024,
        }
    }
}

impl HttpLimits {
    /// The connection cap for a process that may open `soft` descriptors
    /// (its soft `RLIMIT_NOFILE`): all but a quarter of them, at most 256,
    /// kept for the store, the heartbeat socket, etcd connections and logs
    /// (1024 -> 768, 65536 -> 65280).
    pub fn fit_descriptors(mut self, soft: u64) -> HttpLimits {
        let soft = usize::try_from(soft).unwrap_or(usize::MAX);
        let reserve = (soft / 4).clamp(16, 256);
        self.max_connections = soft.saturating_sub(reserve).max(1);
        self
    }
}

/// Why a connection was closed by us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Idle for `idle_timeout`.
    Idle,
    /// A request head not complete after `header_timeout`.
    Header,
    /// Closed to make room for a new connection at the cap.
    Evicted,
    /// A write blocked for `write_stall_timeout`.
    Stalled,
}

impl Closed {
    fn label(self) -> &'static str {
        match self {
            Closed::Idle => "idle_timeout",
            Closed::Header => "header_timeout",
            Closed::Evicted => "evicted",
            Closed::Stalled => "write_stalled",
        }
    }
}

/// Where a connection is, with times as offsets from the server's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Phase {
    /// A request is in progress (from its dispatch to the end of its response).
    pub busy: bool,
    /// When it last had no request in progress (or was opened).
    pub idle_since: Duration,
    /// When the first byte of a next request head arrived, if one did since.
    pub head_started: Option<Duration>,
    /// Since when a write has been blocked, if one is.
    pub write_blocked: Option<Duration>,
}

impl Phase {
    /// When the connection is to be closed, and why, if nothing changes.
    pub fn deadline(&self, limits: &HttpLimits) -> Option<(Duration, Closed)> {
        let stalled = self.write_blocked.map(|t| (t + limits.write_stall_timeout, Closed::Stalled));
        if self.busy {
            return stalled;
        }
        let waiting = match self.head_started {
            Some(t) => (t + limits.header_timeout, Closed::Header),
            None => (self.idle_since + limits.idle_timeout, Closed::Idle),
        };
        Some(match stalled {
            Some(s) if s.0 < waiting.0 => s,
            _ => waiting,
        })
    }
}

/// The connection to close to make room: the one idle the longest; none if
/// every connection has a request in progress.
pub(crate) fn victim(phases: impl IntoIterator<Item = (u64, Phase)>) -> Option<u64> {
    phases.into_iter().filter(|(_, p)| !p.busy).min_by_key(|(id, p)| (p.idle_since, *id)).map(|(id, _)| id)
}

/// One connection's phase, shared by its I/O, its requests and its watchdog.
#[derive(Debug)]
struct Conn {
    epoch: Instant,
    /// Requests in progress.
    busy: AtomicU32,
    /// Milliseconds since `epoch` when it last became idle.
    idle_since: AtomicU64,
    /// 1 + milliseconds since `epoch` of the first byte of a head; 0: none.
    head_started: AtomicU64,
    /// 1 + milliseconds since `epoch` since a write is blocked; 0: none.
    write_blocked: AtomicU64,
    evict: AtomicBool,
    /// Something moved a deadline earlier, or asked to evict.
    wake: Notify,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Conn {
    fn new(epoch: Instant) -> Conn {
        Conn {
            epoch,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(ms(epoch.elapsed())),
            head_started: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
            evict: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        let head = self.head_started.load(Ordering::Acquire);
        let blocked = self.write_blocked.load(Ordering::Acquire);
        Phase {
            busy: self.busy.load(Ordering::Acquire) > 0,
            idle_since: Duration::from_millis(self.idle_since.load(Ordering::Acquire)),
            head_started: (head > 0).then(|| Duration::from_millis(head - 1)),
            write_blocked: (blocked > 0).then(|| Duration::from_millis(blocked - 1)),
        }
    }

    /// A write returned: blocked (`Pending`) or done. The first block wakes
    /// the watchdog (a new deadline); progress clears it.
    fn wrote<T>(&self, r: &Poll<T>) {
        if r.is_pending() {
            if self.write_blocked.load(Ordering::Acquire) == 0 {
                self.write_blocked.store(ms(self.epoch.elapsed()) + 1, Ordering::Release);
                self.wake.notify_one();
            }
        } else if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Release);
        }
    }

    /// Bytes arrived: the start of a request head if none is in progress.
    fn received(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Acquire) == 0 {
            self.head_started.store(ms(self.epoch.elapsed()) + 1, Ordering::Release);
            self.wake.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(0, Ordering::Release);
        Busy(self.clone())
    }
}

/// A request in progress, until dropped with its response body.
#[derive(Debug)]
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(ms(c.epoch.elapsed()), Ordering::Release);
        c.head_started.store(0, Ordering::Release);
        if c.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            c.wake.notify_one();
        }
    }
}

/// A response body that keeps its connection busy until sent or dropped.
struct Tracked {
    body: axum::body::Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket (or its TLS stream), telling its connection when bytes arrive.
struct Watched<S> {
    stream: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.received();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.conn.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.conn.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.stream).poll_flush(cx);
        self.conn.wrote(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The open connections.
#[derive(Debug, Default)]
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    next: u64,
}

impl Table {
    /// At the cap (`cap` reached, counting connections asked to close that
    /// have not closed yet): asks the connection idle the longest to close.
    /// True if there is room for one more (now or once an asked one
    /// closes), false if every connection has a request in progress.
    fn make_room(&self, cap: usize) -> bool {
        let asked = |c: &Conn| c.evict.load(Ordering::Acquire);
        let closing = self.conns.values().filter(|c| asked(c)).count();
        if self.conns.len() - closing < cap {
            return true;
        }
        let candidates = self.conns.iter().filter(|(_, c)| !asked(c)).map(|(id, c)| (*id, c.phase()));
        let Some(c) = victim(candidates).and_then(|id| self.conns.get(&id)) else { return false };
        c.evict.store(true, Ordering::Release);
        c.wake.notify_one();
        true
    }
}

/// The answer to a connection beyond the cap when none can be closed.
fn refused() -> Vec<u8> {
    let body = r#"{"error":{"code":"too_many_connections","message":"every connection has a request in progress"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    c: Arc<Controller>,
    tls: Option<Arc<TlsServer>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = c.config.http.clone();
    let epoch = Instant::now();
    let table = Arc::new(Mutex::new(Table::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, addr) = match accepted {
            Ok(x) => x,
            Err(e) => {
                use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, WouldBlock};
                // One connection failed: go on. Out of descriptors: make
                // room. Anything else: do not spin on it.
                if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock) {
                    continue;
                }
                if matches!(e.raw_os_error(), Some(EMFILE | ENFILE)) {
                    lock(&table).make_room(0);
                }
                c.metrics.accept_errors.inc();
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        if limits.send_buffer > 0
            && let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer)
        {
            tracing::debug!(%addr, error = %e, "setting the send buffer");
        }
        let conn = Arc::new(Conn::new(epoch));
        let id = {
            let mut t = lock(&table);
            // At the cap the new connection is taken at once while the one
            // asked to close closes: the cap's reserve of descriptors (see
            // `fit_descriptors`) covers the moment both are open.
            if t.conns.len() >= limits.max_connections && !t.make_room(limits.max_connections) {
                drop(t);
                c.metrics.connections_closed.get_or_create(&CloseLabels { reason: "refused" }).inc();
                let _ = stream.try_write(&refused());
                continue;
            }
            t.next += 1;
            let id = t.next;
            t.conns.insert(id, conn.clone());
            id
        };
        c.metrics.connections.inc();
        let (app, limits, c2, table, stop) = (app.clone(), limits.clone(), c.clone(), table.clone(), stop_rx.clone());
        let tls = tls.clone();
        tasks.spawn(async move {
            let closed = match tls {
                None => connection(stream, Peer { addr, identity: None }, conn, app, &limits, stop).await,
                // The handshake runs in the connection's own task, bounded
                // in time: a slow or foreign client holds up nobody else. A
                // certificate from another CA fails here.
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let identity = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(vipcast_tls::identity_of);
                        connection(stream, Peer { addr, identity }, conn, app, &limits, stop).await
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%addr, error = %e, "TLS handshake refused");
                        None
                    }
                    Err(_) => {
                        tracing::info!(%addr, "TLS handshake timed out");
                        None
                    }
                },
            };
            lock(&table).conns.remove(&id);
            c2.metrics.connections.dec();
            if let Some(why) = closed {
                c2.metrics.connections_closed.get_or_create(&CloseLabels { reason: why.label() }).inc();
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            () = &mut grace => {
                tracing::info!(open = tasks.len(), "shutdown: closing connections with requests in progress");
                tasks.abort_all();
                while tasks.join_next().await.is_some() {}
                break;
            }
        }
    }
    Ok(())
}

/// `EMFILE` and `ENFILE` (Linux): out of descriptors, per process and system-wide.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves one connection; returns why we closed it (`None`: it ended by
/// itself — the client closed it, an error, or a shutdown).
async fn connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: Peer,
    conn: Arc<Conn>,
    app: Router,
    limits: &HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> Option<Closed> {
    let svc_conn = conn.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = svc_conn.begin();
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer.clone()));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap_or_else(|never| match never {});
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let io = TokioIo::new(Watched { stream, conn: conn.clone() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(HEAD_BUFFER);
    let http = builder.serve_connection(io, svc);
    tokio::pin!(http);
    loop {
        let deadline = conn.phase().deadline(limits);
        let sleep = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until((conn.epoch + at).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = http.as_mut() => return None,
            () = sleep => {
                // Still the same deadline (a request may have begun since).
                if let Some((at, why)) = conn.phase().deadline(limits)
                    && conn.epoch + at <= Instant::now()
                {
                    return Some(why);
                }
            }
            () = conn.wake.notified() => {
                if conn.evict.load(Ordering::Acquire) {
                    if !conn.phase().busy {
                        return Some(Closed::Evicted);
                    }
                    // A request began meanwhile: it stays.
                    conn.evict.store(false, Ordering::Release);
                }
            }
            r = stop.changed() => {
                if r.is_ok() {
                    http.as_mut().graceful_shutdown();
                    let _ = http.as_mut().await;
                }
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn limits() -> HttpLimits {
        HttpLimits { idle_timeout: s(60), header_timeout: s(10), ..Default::default() }
    }

    #[test]
    fn an_idle_connection_has_the_idle_deadline_and_a_started_head_the_header_deadline() {
        let idle = Phase { busy: false, idle_since: s(5), head_started: None, write_blocked: None };
        assert_eq!(idle.deadline(&limits()), Some((s(65), Closed::Idle)));
        // The first byte of a head: the (here shorter) header deadline from it.
        let head = Phase { head_started: Some(s(20)), ..idle };
        assert_eq!(head.deadline(&limits()), Some((s(30), Closed::Header)));
        // A slow head cannot outlast the header timeout by trickling bytes:
        // the deadline counts from its first byte, whatever came after.
        let busy = Phase { busy: true, ..head };
        assert_eq!(busy.deadline(&limits()), None, "a request in progress (a watch stream) has no deadline");
        // ... until its writes block: a client that reads nothing.
        let stalled = Phase { write_blocked: Some(s(100)), ..busy };
        assert_eq!(stalled.deadline(&limits()), Some((s(110), Closed::Stalled)));
        // Idle with a write blocked: whichever comes first.
        assert_eq!(Phase { write_blocked: Some(s(50)), ..idle }.deadline(&limits()), Some((s(60), Closed::Stalled)));
        assert_eq!(Phase { write_blocked: Some(s(58)), ..idle }.deadline(&limits()), Some((s(65), Closed::Idle)));
    }

    #[test]
    fn the_connection_idle_longest_makes_room_and_busy_ones_never_do() {
        let p = |busy, idle: u64| Phase { busy, idle_since: s(idle), head_started: None, write_blocked: None };
        assert_eq!(victim([(1, p(false, 30)), (2, p(true, 1)), (3, p(false, 10)), (4, p(false, 20))]), Some(3));
        // A head in progress is not a request in progress.
        let slow = Phase { head_started: Some(s(40)), ..p(false, 2) };
        assert_eq!(victim([(1, p(false, 30)), (7, slow)]), Some(7));
        assert_eq!(victim([(1, p(true, 0)), (2, p(true, 0))]), None);
        assert_eq!(victim([]), None);
    }

    #[test]
    fn the_cap_leaves_descriptors_for_the_rest() {
        let cap = |soft| HttpLimits::default().fit_descriptors(soft).max_connections;
        assert_eq!(cap(1024), 768);
        assert_eq!(cap(65536), 65280);
        assert_eq!(cap(64), 48);
        assert_eq!(cap(10), 1);
        let r = String::from_utf8(refused()).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.ends_with(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }
}
