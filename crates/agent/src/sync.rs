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
use vipcast_api::Message;
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
    pub dataplane: vipcast_model::Dataplane,
}

/// Registers the chassis, retrying until the controller accepts it or refuses
/// it for good (a 4xx: the error is returned).
pub async fn register(http: &reqwest::Client, id: &Identity) -> anyhow::Result<()> {
    let url = format!("{}/v1/chassis/{}", id.controller, id.chassis);
    let body = serde_json::json!({ "underlay_ip": id.underlay_ip, "role": id.role, "dataplane": id.dataplane });
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

/// Sends a liveness heartbeat to the controller every `every`, forever
/// (UDP to the controller's host and port number; see
/// `vipcast_api::heartbeat`). The address is resolved again after a
/// send error, so a controller that moved is found.
pub async fn heartbeats(id: Identity, every: Duration) {
    let target = match reqwest::Url::parse(&id.controller) {
        Ok(u) => match (u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()), u.port_or_known_default()) {
            (Some(h), Some(p)) => (h, p),
            _ => {
                tracing::error!(controller = id.controller, "no host and port in the controller URL: no heartbeats");
                return;
            }
        },
        Err(e) => {
            tracing::error!(controller = id.controller, error = %e, "bad controller URL: no heartbeats");
            return;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    'connect: loop {
        let sock = async {
            let addr = tokio::net::lookup_host((target.0.as_str(), target.1))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other("no address"))?;
            let any: std::net::SocketAddr =
                if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
            let s = tokio::net::UdpSocket::bind(any).await?;
            s.connect(addr).await?;
            Ok::<_, std::io::Error>(s)
        }
        .await;
        let sock = match sock {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat socket; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            tick.tick().await;
            seq += 1;
            if let Err(e) = sock.send(&vipcast_api::heartbeat::encode_heartbeat(&id.chassis, seq)).await {
                // ICMP unreachable (controller restarting) shows up here: go on.
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::warn!(error = %e, "sending a heartbeat");
                    continue 'connect;
                }
            }
        }
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
