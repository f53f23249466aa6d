use core::fmt;

/// The protocol layer an [`Error`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Vlan,
    Arp,
    Ipv4,
    Ipv6,
    Udp,
    Icmpv6,
    Vxlan,
    Gre,
    Vrrp,
    Pcap,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "802.1Q",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Udp => "udp",
            Layer::Icmpv6 => "icmpv6",
            Layer::Vxlan => "vxlan",
            Layer::Gre => "gre",
            Layer::Vrrp => "vrrp",
            Layer::Pcap => "pcap",
        })
    }
}

/// Why a buffer could not be parsed or a representation could not be emitted.
///
/// Errors carry no heap data, so counting and dropping a bad packet on a hot
/// path costs nothing beyond the check itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or the length a field claims).
    #[error("{layer}: truncated: needs {needed} bytes, has {available}")]
    Truncated { layer: Layer, needed: usize, available: usize },
    /// A field holds a value the protocol forbids.
    #[error("{layer}: invalid {field} {value}")]
    Invalid { layer: Layer, field: &'static str, value: u64 },
    /// A field holds a value this crate does not handle (but the protocol may).
    #[error("{layer}: unsupported {field} {value}")]
    Unsupported { layer: Layer, field: &'static str, value: u64 },
    /// The checksum does not match the contents.
    #[error("{layer}: bad checksum {received:#06x}, computed {computed:#06x}")]
    Checksum { layer: Layer, received: u16, computed: u16 },
}

impl Error {
    /// The layer the error is about.
    pub fn layer(&self) -> Layer {
        match *self {
            Error::Truncated { layer, .. }
            | Error::Invalid { layer, .. }
            | Error::Unsupported { layer, .. }
            | Error::Checksum { layer, .. } => layer,
        }
    }

    pub(crate) fn truncated(layer: Layer, needed: usize, available: usize) -> Self {
        Error::Truncated { layer, needed, available }
    }

    pub(crate) fn invalid(layer: Layer, field: &'static str, value: impl Into<u64>) -> Self {
        Error::Invalid { layer, field, value: value.into() }
    }

    pub(crate) fn unsupported(layer: Layer, field: &'static str, value: impl Into<u64>) -> Self {
        Error::Unsupported { layer, field, value: value.into() }
    }

    /// Checks that an input buffer holds `needed` bytes.
    pub(crate) fn check_len(layer: Layer, needed: usize, available: usize) -> Result<()> {
        if available < needed { Err(Error::truncated(layer, needed, available)) } else { Ok(()) }
    }
}

/// Result of this crate.
pub type Result<T> = core::result::Result<T, Error>;
