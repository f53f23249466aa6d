//! vipcast's wire types: what the controller, the agents, the replicators
//! and the tools send each other, and nothing that serves or stores them.
//!
//! * [`watch`]: the lines of a watch stream ([`Message`]) and how a
//!   subscriber applies them;
//! * [`messages`]: registrations, claims and their answers, VRRP reports
//!   (assist records and claims themselves are model types, re-exported);
//! * [`heartbeat`]: the liveness datagram's codec;
//! * [`event`]: the typed catalog of the events drills read from the logs;
//! * [`identity`]: who a client certificate names (`vipcast://<role>/<name>`).
//!
//! With the feature `openapi` the types derive `utoipa::ToSchema` for the
//! controller's OpenAPI document; agents and replicators build without it.

pub mod event;
pub mod heartbeat;
pub mod identity;
pub mod messages;
pub mod watch;

use std::time::{SystemTime, UNIX_EPOCH};

pub use event::{Event, EventKind, SniffedAt};
pub use identity::{Identity, PeerRole};
pub use messages::{ChassisRegistration, ClaimAnswer, ClaimResult, ReplicatorRegistration, VrrpReport};
pub use vipcast_model::claim::Claim;
pub use vipcast_model::{AssistFault, AssistRecord, ClaimSource};
pub use watch::{Message, Revision, WireKey};

/// Milliseconds since the Unix epoch, now (the clock claims, reports and
/// records carry).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
