//! Following the controller: registration with heartbeats, then the
//! replicators' watch stream applied to a local copy of the state.
//!
//! ```text
//!  PUT /v1/replicators/{name} {address}   every `heartbeat` (idempotent: no
//!                                         store write unless it changed)
//!  GET /v1/watch/replicators/{name}[?from=REV] ──NDJSON──► apply ──► watch::Sender<Synced>
//!        ▲                                                                │
//!        └──── reconnect with the last revision (100 ms .. 2 s backoff)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use vipcast_api::Message;
use vipcast_model::State;

/// The local copy at one revision.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub revision: i64,
    pub state: Arc<State>,
    /// Whether anything was received yet.
    pub received: bool,
}

/// Who and where.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Controller base URL, without a trailing slash.
    pub controller: String,
    pub name: String,
    /// The address chassis send VXLAN to.
    pub address: SocketAddr,
}

/// Registers once: `Ok(true)` when accepted, `Ok(false)` on a transient
/// failure, `Err` when the controller refuses the registration for good (4xx).
pub async fn register(http: &reqwest::Client, id: &Identity) -> anyhow::Result<bool> {
    let url = format!("{}/v1/replicators/{}", id.controller, id.name);
    match http.put(&url).json(&serde_json::json!({ "address": id.address })).send().await {
        Ok(r) if r.status().is_success() => Ok(true),
        Ok(r) if r.status().is_client_error() => {
            let text = r.text().await.unwrap_or_default();
            anyhow::bail!("the controller refused replicator {:?}: {text}", id.name)
        }
        Ok(r) => {
            tracing::warn!(status = %r.status(), "registering: controller error");
            Ok(false)
        }
        Err(e) => {
            tracing::warn!(error = %e, "registering: controller unreachable");
            Ok(false)
        }
    }
}

/// Registers, then re-registers every `heartbeat` (so a registration that was
/// deleted comes back). Returns only if the controller refuses it for good.
pub async fn heartbeat(http: reqwest::Client, id: Identity, heartbeat: Duration) -> anyhow::Error {
    let mut first = true;
    loop {
        match register(&http, &id).await {
            Ok(true) if first => {
                tracing::info!(name = id.name, address = %id.address, "registered");
                first = false;
            }
            Ok(_) => {}
            Err(e) => return e,
        }
        tokio::time::sleep(if first { Duration::from_millis(200) } else { heartbeat }).await;
    }
}

/// Follows the watch stream until `tx` has no receivers, publishing every revision.
pub async fn follow(http: reqwest::Client, id: Identity, tx: watch::Sender<Synced>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let from = tx.borrow().revision;
        let mut url = format!("{}/v1/watch/replicators/{}", id.controller, id.name);
        if from > 0 {
            url.push_str(&format!("?from={from}"));
        }
        match stream_once(&http, &url, &tx).await {
            Ok(true) => {
                tracing::warn!("watch stream ended; reconnecting");
                delay = Duration::from_millis(100);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "watch stream failed; reconnecting"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// One connection; `Ok(true)` if it delivered at least one message.
async fn stream_once(http: &reqwest::Client, url: &str, tx: &watch::Sender<Synced>) -> anyhow::Result<bool> {
    let resp = http.get(url).send().await?.error_for_status()?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    let mut any = false;
    // No line for 3 pings' time: the controller is gone even if TCP is not.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(15), body.next()).await? {
        buf.extend_from_slice(&chunk?);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
            let msg: Message = serde_json::from_slice(&buf[start..start + i])?;
            apply(tx, msg);
            any = true;
            start += i + 1;
        }
        buf.drain(..start);
    }
    Ok(any)
}

/// Applies one message to the local copy.
pub fn apply(tx: &watch::Sender<Synced>, msg: Message) {
    let next = msg.apply(&tx.borrow().state);
    if let Some((revision, state)) = next {
        tx.send_replace(Synced { revision, state: Arc::new(state), received: true });
    }
}
