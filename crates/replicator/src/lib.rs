//! vipcast's BUM replicator: copies each VPC's broadcast, unknown-unicast and
//! multicast VXLAN frames to every other chassis of the VPC, and reports the
//! gratuitous ARPs / unsolicited NAs of VIPs it sees on the way as claims.
//!
//! ```text
//!            controller
//!   PUT /v1/replicators/{name}  ▲   │ GET /v1/watch/replicators/{name} (NDJSON)
//!   (heartbeat)                 │   v
//!   POST /v1/vips/{vip}/claims  │  sync ──state──► Table::rebuild ──► Dataplane::set_table
//!        ▲                      │   │
//!        └──── sniff task ◄─────┘   └──state──► sniff task (VNI/IP -> VIP, underlay IP -> chassis)
//!                 ▲
//!                 │ Sniffed (bounded queue, try_send)
//!   chassis ──VXLAN──► N workers (SO_REUSEPORT sockets; recvmmsg -> engine -> GSO trains -> sendmmsg)
//!                 │                                      ──VXLAN──► every other member chassis
//!   admin HTTP: /healthz, /metrics
//! ```
//!
//! * [`engine`]: the decision for one datagram, sans I/O — time is an
//!   argument; per-VNI member tables, drop reasons, storm control, sniffing;
//! * [`dataplane`]: the worker threads and their batched I/O;
//! * [`sync`]: registration, heartbeats and the watch stream;
//! * [`sniff`]: sniffed announcements -> deduplicated claims;
//! * [`admin`]: `/healthz` and `/metrics`;
//! * [`bench`](mod@bench): `vipcast bench replicate`;
//! * [`cli`]: `vipcast replicator` flags.
//!
//! ## Contract
//!
//! A datagram is copied, unchanged, to each member chassis of its VNI (their
//! underlay IPs, UDP port 4789 by default) except the one that sent it —
//! and only if the sender is itself a member of that VNI. Frames of unknown
//! VNIs, from unregistered sources or from chassis outside the VNI, and
//! malformed ones are dropped and counted; nothing is ever sent into another
//! VNI. Order is kept per destination within what one worker receives.
//!
//! ## Health probes
//!
//! Agents pick a healthy replicator per VNI and re-home within a second. A
//! **probe** is a VXLAN datagram to the replicator's listen address with the
//! I flag set and **VNI 0** (never a VPC's: VPC VNIs are 1..=16777215),
//! with any payload (or none). The replicator sends the same datagram back,
//! byte for byte, to the source address and port it came from, from its
//! listen address. Probes go through the same workers and sockets as
//! replication, so an answer means the data path is alive. A replicator
//! answers probes only once it holds a view from the controller (before,
//! it could not replicate); it keeps answering with its last view if the
//! controller goes away. Probes are answered from any source: the echo is
//! the size of the probe, so it cannot amplify.
//!
//! ## Storm control
//!
//! Per VNI, frames from members are admitted at `storm_pps` per second with
//! bursts of `storm_burst` (a GCRA on one atomic per VNI, shared by the
//! workers of a node), counted before replication. Sniffing happens before
//! storm control, so a VIP move is still seen while its VPC storms.

#[cfg(feature = "driver")]
pub mod admin;
#[cfg(feature = "driver")]
pub mod bench;
#[cfg(feature = "driver")]
pub mod cli;
#[cfg(feature = "driver")]
pub mod dataplane;
#[cfg(feature = "driver")]
mod driver;
pub mod engine;
#[cfg(test)]
mod engine_props;
#[cfg(feature = "driver")]
pub mod gre;
#[cfg(feature = "driver")]
pub mod sniff;
#[cfg(feature = "driver")]
pub mod sync;

#[cfg(feature = "driver")]
pub use driver::*;
pub use engine::{Action, Config, Decision, DropReason, PROBE_VNI, Sniffed, Table};
