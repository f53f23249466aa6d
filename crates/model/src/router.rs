//! The key of a VRRP virtual router, as every party names it.

use vipcast_packet::vrrp::Family;

/// A virtual router: its VPC, its VRID and its address family (a VRID
/// names one router per family, RFC 5798 §5.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouterKey {
    pub vpc: String,
    pub vrid: u8,
    pub family: Family,
}

impl RouterKey {
    /// The router of `vrid` in `vpc` whose master has address `master`.
    pub fn new(vpc: &str, vrid: u8, master: std::net::IpAddr) -> RouterKey {
        RouterKey { vpc: vpc.to_string(), vrid, family: Family::of(master) }
    }

    /// Its id in the API (`/v1/vrrp/{vpc}/{id}`): `<vrid>-ipv4` or `<vrid>-ipv6`.
    pub fn id(&self) -> String {
        crate::vrrp_router_id(self.vrid, self.family == Family::V6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(RouterKey::new("prod", 51, "192.168.10.11".parse().unwrap()).id(), "51-ipv4");
        assert_eq!(RouterKey::new("prod", 51, "fd00::1".parse().unwrap()).id(), "51-ipv6");
    }
}
