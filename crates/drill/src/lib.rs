//! Failover drills: how long a VIP is unreachable when its master fails, and
//! where the time goes — measured end to end in a `vipcast lab`, against a
//! native-L2 baseline built in the same run.
//!
//! ```text
//!  vipcast drill / demo
//!    │ lab::resolve: the VIP, its members, the client (lab state + REST API)
//!    v
//!  Session (per target: overlay lab, then baseline bridge)
//!    ├─ probe-responder in every member VM ◄──UDP── probe in the client VM
//!    │                                             (1 request / ms, lines
//!    │                                              to a file: record::Tail)
//!    ├─ per run: fault::inject ─► wait for the new master ─► analysis
//!    │           (outage from the probes) + stages (agent logs, VIP history)
//!    │           ─► fault undone ─► settle on the preferred master
//!    v
//!  report: table, JSON, markdown; svg: one run's timeline
//! ```
//! The prober, the responder and the VIP re-announcement are hidden `vipcast`
//! subcommands (`probe`, `probe-responder`, `announce`) run in the lab's
//! namespaces with `ip netns exec`. The analysis ([`analysis`], [`stages`])
//! is pure: every time is an argument.

pub mod analysis;
pub mod baseline;
pub mod chaos;
pub mod demo;
pub mod drill;
pub mod fault;
pub mod lab;
pub mod probe;
pub mod record;
pub mod report;
pub mod rng;
pub mod session;
pub mod sql;
pub mod stages;
pub mod svg;
pub mod target;
pub mod wire;
pub mod workload;

use std::net::IpAddr;

pub use drill::{Assist, Variants, drill, drills};
pub use fault::Fault;
pub use session::Options;

/// Errors of drills.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A lab operation failed.
    #[error("{0}")]
    Lab(#[from] vipcast_lab::Error),
    /// The drill cannot be done on this lab (e.g. replicator-down without a
    /// replicator).
    #[error("{0}")]
    Refused(String),
    /// Interrupted (Ctrl-C).
    #[error("interrupted")]
    Cancelled,
    /// Anything else, said in words.
    #[error("{0}")]
    Failed(String),
}

/// Result of drills.
pub type Result<T> = std::result::Result<T, Error>;

/// Sends three gratuitous ARPs (IPv4) or unsolicited neighbour
/// advertisements (IPv6) for `ip` at `dev`'s MAC out of `dev` — what a VRRP
/// master sends when it takes a VIP. Runs in the namespace of the process.
pub fn announce(dev: &str, ip: IpAddr) -> Result<()> {
    use vipcast_packet::MacAddr;
    let path = format!("/sys/class/net/{dev}/address");
    let mac: MacAddr = std::fs::read_to_string(&path)
        .map_err(|e| Error::Failed(format!("{path}: {e}")))?
        .trim()
        .parse()
        .map_err(|e| Error::Failed(format!("{path}: {e:?}")))?;
    let index = vipcast_sys::ifindex(dev).map_err(|e| Error::Failed(format!("interface {dev}: {e}")))?;
    let sock = vipcast_sys::PacketSocket::bind(index, vipcast_sys::ETH_P_ARP)
        .map_err(|e| Error::Failed(format!("packet socket on {dev}: {e}")))?;
    let frame = match ip {
        IpAddr::V4(v4) => vipcast_packet::build::garp(mac, v4, vipcast_packet::arp::ArpOp::Request),
        IpAddr::V6(v6) => vipcast_packet::build::unsolicited_na(mac, v6, v6, true)
            .map_err(|e| Error::Failed(format!("building the advertisement: {e}")))?,
    };
    for _ in 0..3 {
        sock.send(&frame).map_err(|e| Error::Failed(format!("sending on {dev}: {e}")))?;
    }
    Ok(())
}
