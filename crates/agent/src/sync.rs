//! Following the controller: registration, then the chassis' watch stream
//! applied to a local copy of the objects this chassis is sent.
//!
//! ```text
//!  PUT /v1/chassis/{me} (retried until it works)
//!  GET /v1/watch/chassis/{me}[?from=REV] ──NDJSON──► apply ──► watch::Sender<Synced>
//!        ▲                                                         │
//!        └──── reconnect with the last revision (100 ms .. 2 s backoff)
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use vipcast_controller::Message;
use vipcast_model::{Role, State};

/// The local copy at one revision.
#[derive(Debug, Clone, Default)]
pub struct Synced {
    pub revision: i64,
    pub state: Arc<State>,
    /// Whether this revision came from a snapshot (or is the first one).
    pub snapshot: bool,
}

/// Where and who.
#[derive(Debug, Clone)]
pub struct Identity {
    pub controller: String,
    pub chassis: String,
    pub underlay_ip: std::net::IpAddr,
    pub role: Role,
}

/// Registers the chassis, retrying until the controller accepts it or refuses
/// it for good (a 4xx: the error is returned).
pub async fn register(http: &reqwest::Client, id: &Identity) -> anyhow::Result<()> {
    let url = format!("{}/v1/chassis/{}", id.controller, id.chassis);
    let body = serde_json::json!({ "underlay_ip": id.underlay_ip, "role": id.role });
    let mut delay = Duration::from_millis(100);
    loop {
        match http.put(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() => {
                let text = r.text().await.unwrap_or_default();
                anyhow::bail!("the controller refused chassis {:?}: {text}", id.chassis);
            }
            Ok(r) => tracing::warn!(status = %r.status(), "registering: controller error; retrying"),
            Err(e) => tracing::warn!(error = %e, "registering: controller unreachable; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Follows the watch stream forever, publishing every revision.
pub async fn follow(http: reqwest::Client, id: Identity, tx: watch::Sender<Synced>) {
    let mut delay = Duration::from_millis(100);
    loop {
        let from = tx.borrow().revision;
        let url = if from > 0 {
            format!("{}/v1/watch/chassis/{}?from={from}", id.controller, id.chassis)
        } else {
            format!("{}/v1/watch/chassis/{}", id.controller, id.chassis)
        };
        match stream_once(&http, &url, &tx).await {
            Ok(()) => tracing::warn!("watch stream ended; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "watch stream failed; reconnecting"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn stream_once(http: &reqwest::Client, url: &str, tx: &watch::Sender<Synced>) -> anyhow::Result<()> {
    let resp = http.get(url).send().await?.error_for_status()?;
    let mut body = resp.bytes_stream();
    let mut buf = Vec::new();
    // No line for 3 pings' time: the controller is gone even if TCP is not.
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(15), body.next()).await? {
        buf.extend_from_slice(&chunk?);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let msg: Message = serde_json::from_slice(&line)?;
            apply(tx, msg);
        }
    }
    Ok(())
}

/// Applies one message to the local copy.
pub fn apply(tx: &watch::Sender<Synced>, msg: Message) {
    let snapshot = matches!(msg, Message::Snapshot { .. });
    let next = msg.apply(&tx.borrow().state);
    if let Some((revision, state)) = next {
        tx.send_replace(Synced { revision, state: Arc::new(state), snapshot });
    }
}
