/// Why bytes could not be decoded or a value could not be encoded.
///
/// Errors carry no heap data; `what` names the structure being read or
/// written (`"flow_mod"`, `"oxm eth_dst"`, `"action set_field"`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The input is shorter than the structure (or the length a field claims).
    #[error("{what}: truncated: needs {needed} bytes, has {available}")]
    Truncated { what: &'static str, needed: usize, available: usize },
    /// A length field is impossible: below the fixed part, not a multiple of
    /// the required alignment, or not what the structure's type demands.
    #[error("{what}: bad length {length}")]
    BadLength { what: &'static str, length: usize },
    /// A message header carries a version other than 0x04 (OpenFlow 1.3).
    /// HELLO is exempt: it is how versions are negotiated.
    #[error("unsupported OpenFlow version {0:#04x} (only 0x04, OpenFlow 1.3)")]
    BadVersion(u8),
    /// A field holds a value the protocol (or this codec) does not allow.
    #[error("{what}: invalid {field} {value:#x}")]
    Invalid { what: &'static str, field: &'static str, value: u64 },
    /// A value does not fit the length field that has to describe it.
    #[error("{what}: too long to encode: {length} bytes, at most {max}")]
    TooLong { what: &'static str, length: usize, max: usize },
}

impl Error {
    pub(crate) fn invalid(what: &'static str, field: &'static str, value: impl Into<u64>) -> Self {
        Error::Invalid { what, field, value: value.into() }
    }
}

/// Result of this crate.
pub type Result<T> = core::result::Result<T, Error>;
