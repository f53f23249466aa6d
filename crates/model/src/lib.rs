//! vipcast's state model, with no I/O and no clock.
//!
//! * [`objects`]: what operators create (VPCs, subnets, chassis, ports, VIPs,
//!   replicators) and what the control plane records (VIP owners, history);
//! * [`State`]: all objects of a region, with the validation every write goes
//!   through ([`State::check`]) and the store key of each object;
//! * [`command`]: every write as a [`Command`], and [`command::apply`], what
//!   it does to a state (the objects to write and delete, and its outcome);
//! * [`claim`]: VIP ownership arbitration from sniffed GARP / NA claims;
//! * [`view`]: the pure functions computing what one chassis must program
//!   and what the replicators need;
//! * [`RouterKey`]: how a VRRP virtual router is named.
//!
//! Time enters only as arguments (`now_ms`, milliseconds since the Unix epoch).

pub mod claim;
pub mod command;
pub mod index;
pub mod objects;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod router;
mod state;
pub mod view;

pub use command::Command;
pub use objects::*;
pub use router::RouterKey;
pub use state::{Invalid, InvalidKind, Object, ObjectKey, State, history_prefix, objects_prefix};
