//! Following the controller: registration with heartbeats (the watch stream
//! is followed by `vipcast_client::WatchFollower`).
//!
//! ```text
//!  PUT /v1/replicators/{name} {address}   every `heartbeat` (idempotent: no
//!                                         store write unless it changed)
//!  GET /v1/watch/replicators/{name}[?from=REV] ──NDJSON──► WatchFollower ──► watch::Sender<Synced>
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use vipcast_api::ReplicatorRegistration;
use vipcast_client::ControllerClient;
pub use vipcast_client::Synced;

/// Who and where.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    /// The address chassis send VXLAN to.
    pub address: SocketAddr,
}

/// Registers once: `Ok(true)` when accepted, `Ok(false)` on a transient
/// failure, `Err` when the controller refuses the registration for good (4xx).
pub async fn register(client: &ControllerClient, id: &Identity) -> anyhow::Result<bool> {
    match client.register_replicator(&id.name, &ReplicatorRegistration { address: id.address, name: None }).await {
        Ok(()) => Ok(true),
        Err(e @ vipcast_client::Error::Refused { .. }) => {
            anyhow::bail!("the controller refused replicator {:?}: {e}", id.name)
        }
        Err(e) => {
            tracing::warn!(error = %e, "registering: controller unavailable");
            Ok(false)
        }
    }
}

/// Registers, then re-registers every `heartbeat` (so a registration that was
/// deleted comes back). Returns only if the controller refuses it for good.
pub async fn heartbeat(client: ControllerClient, id: Identity, heartbeat: Duration) -> anyhow::Error {
    let mut first = true;
    loop {
        match register(&client, &id).await {
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
