//! Request and answer bodies of the calls agents, replicators and tools make
//! to the controller.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use vipcast_model::{Dataplane, Owner, Role};
use vipcast_packet::MacAddr;
use vipcast_packet::vrrp::{Version, VrrpRepr};

use crate::now_ms;

/// A chassis registration, the body of `PUT /v1/chassis/{name}` (the name is
/// the path's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChassisRegistration {
    /// Tunnel endpoint address on the underlay.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip", example = "172.31.0.1"))]
    pub underlay_ip: IpAddr,
    #[serde(default)]
    pub role: Role,
    /// `kernel` (default) or `ovs`.
    #[serde(default)]
    pub dataplane: Dataplane,
    /// Optional; must equal the name in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A replicator registration, the body of `PUT /v1/replicators/{name}` (the
/// name is the path's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReplicatorRegistration {
    /// Where it receives VXLAN (ip:port).
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "172.31.1.1:4789"))]
    pub address: SocketAddr,
    /// Optional; must equal the name in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The answer to a claim (`POST /v1/vips/{name}/claims`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimAnswer {
    pub result: ClaimResult,
    /// The VIP's owner after the claim.
    pub owner: Option<Owner>,
    /// Store revision the answer reflects.
    pub revision: i64,
}

/// What a claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClaimResult {
    /// The owner changed.
    Accepted,
    /// The claimant already was the owner.
    Unchanged,
    /// The VIP is on hold (flap damping): it stays with `owner`, nothing
    /// changed. Not an error: the claim need not be retried before the
    /// VIP's `damping.held_until`.
    Damped,
}

impl ClaimResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimResult::Accepted => "accepted",
            ClaimResult::Unchanged => "unchanged",
            ClaimResult::Damped => "damped",
        }
    }
}

/// What an agent (or a replicator, for the chassis an advert came from)
/// reports about a VRRP master: the body of `POST /v1/vrrp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VrrpReport {
    pub vpc: String,
    pub vrid: u8,
    /// 2 or 3.
    pub version: u8,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "ip"))]
    pub master_ip: IpAddr,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = "mac"))]
    pub master_mac: MacAddr,
    /// The chassis hosting the master.
    pub chassis: String,
    pub priority: u8,
    pub interval_cs: u16,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub addresses: Vec<IpAddr>,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub destinations: Vec<IpAddr>,
    #[serde(default)]
    pub auth_type: u8,
    /// ms since the epoch, the reporter's clock.
    pub observed_at: u64,
}

impl VrrpReport {
    /// The report of `advert`, sent from `master_ip` / `master_mac` on
    /// `chassis` to `destinations`, seen now.
    pub fn new(
        vpc: &str,
        chassis: &str,
        master_mac: MacAddr,
        master_ip: IpAddr,
        advert: &VrrpRepr,
        destinations: impl IntoIterator<Item = IpAddr>,
    ) -> VrrpReport {
        VrrpReport {
            vpc: vpc.to_string(),
            vrid: advert.vrid,
            version: if advert.version == Version::V3 { 3 } else { 2 },
            master_ip,
            master_mac,
            chassis: chassis.to_string(),
            priority: advert.priority,
            interval_cs: advert.interval_cs,
            addresses: advert.addresses.clone(),
            destinations: destinations.into_iter().collect(),
            auth_type: advert.auth_type,
            observed_at: now_ms(),
        }
    }
}
