//! Ethernet MAC addresses.

use core::fmt;
use core::str::FromStr;

/// A 48-bit IEEE 802 MAC address. Displays as lowercase colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The VRRP virtual router MAC for IPv4, `00:00:5e:00:01:{vrid}` (RFC 5798 §7.3).
    pub const fn vrrp_v4(vrid: u8) -> MacAddr {
        MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, vrid])
    }

    /// The VRRP virtual router MAC for IPv6, `00:00:5e:00:02:{vrid}` (RFC 5798 §7.3).
    pub const fn vrrp_v6(vrid: u8) -> MacAddr {
        MacAddr([0x00, 0x00, 0x5e, 0x00, 0x02, vrid])
    }

    /// The Ethernet multicast MAC an IPv6 multicast address maps to, `33:33:` + low 32 bits (RFC 2464 §7).
    pub const fn ipv6_multicast(addr: core::net::Ipv6Addr) -> MacAddr {
        let o = addr.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }

    /// The Ethernet multicast MAC an IPv4 multicast address maps to, `01:00:5e:` + low 23 bits (RFC 1112 §6.4).
    pub const fn ipv4_multicast(addr: core::net::Ipv4Addr) -> MacAddr {
        let o = addr.octets();
        MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
    }

    /// The raw octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group bit set (multicast or broadcast).
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// ff:ff:ff:ff:ff:ff
    pub const fn is_broadcast(&self) -> bool {
        let o = self.0;
        o[0] == 0xff && o[1] == 0xff && o[2] == 0xff && o[3] == 0xff && o[4] == 0xff && o[5] == 0xff
    }

    /// 00:00:00:00:00:00
    pub const fn is_zero(&self) -> bool {
        let o = self.0;
        o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] == 0 && o[4] == 0 && o[5] == 0
    }

    /// A unicast, non-zero address: what a port or a host may own.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// A VRRP virtual router MAC (IPv4 or IPv6), and its VRID.
    pub const fn vrrp_vrid(&self) -> Option<u8> {
        let o = self.0;
        if o[0] == 0 && o[1] == 0 && o[2] == 0x5e && o[3] == 0 && (o[4] == 1 || o[4] == 2) { Some(o[5]) } else { None }
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(o: [u8; 6]) -> Self {
        MacAddr(o)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex octets separated by ':' or '-'")]
pub struct ParseMacError {
    input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError { input: s.chars().take(64).collect() };
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for byte in out.iter_mut() {
            let part = parts.next().ok_or_else(err)?;
            if part.is_empty() || part.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse() {
        let m: MacAddr = "02:AB:0c:00:01:ff".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:0c:00:01:ff");
        assert_eq!("02-ab-0c-00-01-ff".parse::<MacAddr>().unwrap(), m);
        for bad in ["", "02:ab:0c:00:01", "02:ab:0c:00:01:ff:00", "0g:00:00:00:00:00", "002:0:0:0:0:0", "1:2:3:4:5:"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(MacAddr::ZERO.is_zero() && !MacAddr::ZERO.is_unicast());
        assert_eq!(MacAddr::vrrp_v4(51).to_string(), "00:00:5e:00:01:33");
        assert_eq!(MacAddr::vrrp_v6(7).vrrp_vrid(), Some(7));
        assert_eq!(MacAddr::ipv4_multicast("224.0.0.18".parse().unwrap()).to_string(), "01:00:5e:00:00:12");
        assert_eq!(MacAddr::ipv6_multicast("ff02::12".parse().unwrap()).to_string(), "33:33:00:00:00:12");
    }
}
