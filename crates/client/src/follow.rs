//! Following a watch stream: a snapshot on (re)connect, then deltas, applied
//! to a local copy published on a `tokio::sync::watch` channel.
//!
//! ```text
//!  GET /v1/watch/<chassis/NAME | replicators/NAME>[?from=REV] ──NDJSON──► Message::apply ──► Synced
//!        ▲                                                                                  │
//!        └──── reconnect with the last revision held (100 ms doubling to 2 s; back to 100 ms
//!              after a stream that delivered something)
//! ```
//! A stream silent for three pings' time (15 s) is taken for dead even if
//! TCP is not.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use vipcast_api::Message;
use vipcast_model::State;

use crate::ControllerClient;

/// No line for this long: the controller is gone even if TCP is not.
const SILENCE: Duration = Duration::from_secs(15);

/// The longest line accepted (a snapshot comes as one line).
const MAX_LINE: usize = 256 << 20;

/// The local copy at one revision.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub revision: i64,
    pub state: Arc<State>,
    /// Whether this revision came from a snapshot.
    pub snapshot: bool,
    /// Whether anything was received yet.
    pub received: bool,
}

/// Follows one subscriber's watch stream.
#[derive(Debug, Clone)]
pub struct WatchFollower {
    client: ControllerClient,
    /// `/v1/watch/chassis/NAME` or `/v1/watch/replicators/NAME`.
    path: String,
}

impl WatchFollower {
    /// The stream of chassis `name`'s agent.
    pub fn chassis(client: ControllerClient, name: &str) -> WatchFollower {
        WatchFollower { client, path: format!("/v1/watch/chassis/{name}") }
    }

    /// The stream of replicator `name`.
    pub fn replicator(client: ControllerClient, name: &str) -> WatchFollower {
        WatchFollower { client, path: format!("/v1/watch/replicators/{name}") }
    }

    /// Follows the stream until `tx` has no receivers, publishing every
    /// revision.
    pub async fn run(self, tx: watch::Sender<Synced>) {
        self.run_reporting(tx, None).await;
    }

    /// [`WatchFollower::run`], also saying in `up` whether the stream is
    /// connected (true from its first message to its end).
    pub async fn run_reporting(self, tx: watch::Sender<Synced>, up: Option<watch::Sender<bool>>) {
        let set = |v: bool| {
            if let Some(u) = &up {
                u.send_if_modified(|s| std::mem::replace(s, v) != v);
            }
        };
        let mut delay = Duration::from_millis(100);
        loop {
            let from = tx.borrow().revision;
            let mut url = format!("{}{}", self.client.base(), self.path);
            if from > 0 {
                url.push_str(&format!("?from={from}"));
            }
            let result = self.stream_once(&url, &tx, &|| set(true)).await;
            set(false);
            match result {
                Ok(true) => {
                    tracing::warn!("watch stream ended; reconnecting");
                    delay = Duration::from_millis(100);
                }
                Ok(false) => tracing::warn!("watch stream ended before any message; reconnecting"),
                Err(e) => tracing::warn!(error = %e, "watch stream failed; reconnecting"),
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// One connection; whether it delivered at least one message.
    async fn stream_once(
        &self,
        url: &str,
        tx: &watch::Sender<Synced>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<bool, String> {
        let resp = self.client.http().get(url).send().await.map_err(|e| e.to_string())?;
        let resp = resp.error_for_status().map_err(|e| e.to_string())?;
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut any = false;
        loop {
            let chunk = match tokio::time::timeout(SILENCE, body.next()).await {
                Err(_) => return Err(format!("no line for {} s", SILENCE.as_secs())),
                Ok(None) => return Ok(any),
                Ok(Some(chunk)) => chunk.map_err(|e| e.to_string())?,
            };
            if buf.len() + chunk.len() > MAX_LINE {
                return Err(format!("a watch line over {} MiB", MAX_LINE >> 20));
            }
            buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(i) = buf.get(start..).and_then(|rest| rest.iter().position(|&b| b == b'\n')) {
                let line = buf.get(start..start + i).unwrap_or_default();
                let msg: Message = serde_json::from_slice(line).map_err(|e| format!("a watch line: {e}"))?;
                apply(tx, msg);
                if !any {
                    connected();
                }
                any = true;
                start += i + 1;
            }
            buf.drain(..start);
        }
    }
}

/// Applies one message to the local copy.
pub fn apply(tx: &watch::Sender<Synced>, msg: Message) {
    // A ping says the stream holds everything up to its revision: a later
    // resume may start there. Nothing changed, so nobody is woken.
    if let Message::Ping { revision } = msg {
        tx.send_if_modified(|s| {
            if s.received && revision > s.revision {
                s.revision = revision;
            }
            false
        });
        return;
    }
    let snapshot = matches!(msg, Message::Snapshot { .. });
    // Not in the `if let`: the read guard would live through `send_replace`.
    let next = msg.apply(&tx.borrow().state);
    if let Some((revision, state)) = next {
        tx.send_replace(Synced { revision, state: Arc::new(state), snapshot, received: true });
    }
}
