//! Who is calling: the identity a client certificate carries.
//!
//! A vipcast certificate names its holder in a URI subject alternative name
//! `vipcast://<role>/<name>` (and, for people reading it, in the subject:
//! CN = name, OU = role). The controller believes nothing else: not a
//! header, not a body field (etcd's CVE-2018-16886 came from trusting one).

use std::fmt;
use std::str::FromStr;

/// What a certificate holder may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerRole {
    /// A controller's server certificate.
    Controller,
    /// A chassis' agent; its name is the chassis'.
    Agent,
    /// A replicator; its name is the replicator's.
    Replicator,
    /// An operator who may do everything.
    Admin,
    /// An operator who may read everything and change nothing.
    Viewer,
}

impl PeerRole {
    pub const ALL: [PeerRole; 5] =
        [PeerRole::Controller, PeerRole::Agent, PeerRole::Replicator, PeerRole::Admin, PeerRole::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Controller => "controller",
            PeerRole::Agent => "agent",
            PeerRole::Replicator => "replicator",
            PeerRole::Admin => "admin",
            PeerRole::Viewer => "viewer",
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeerRole {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerRole, String> {
        PeerRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (controller, agent, replicator, admin or viewer)"))
    }
}

/// A verified peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: PeerRole,
    pub name: String,
}

/// The URI scheme of identities in certificates.
pub const URI_SCHEME: &str = "vipcast://";

impl Identity {
    pub fn new(role: PeerRole, name: &str) -> Identity {
        Identity { role, name: name.to_string() }
    }

    /// `vipcast://<role>/<name>`, as carried in the certificate.
    pub fn uri(&self) -> String {
        format!("{URI_SCHEME}{}/{}", self.role, self.name)
    }

    /// The identity of a `vipcast://<role>/<name>` URI.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let (role, name) = uri.strip_prefix(URI_SCHEME)?.split_once('/')?;
        let role = role.parse().ok()?;
        (valid_name(name)).then(|| Identity { role, name: name.to_string() })
    }

    /// How writes are attributed: `agent:hv1`, `admin:alice`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }
}

/// Names as the API takes them: 1-63 letters, digits, `.`, `_` or `-`.
pub fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_refused() {
        let id = Identity::new(PeerRole::Agent, "hv1");
        assert_eq!(id.uri(), "vipcast://agent/hv1");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id.clone()));
        assert_eq!(id.actor(), "agent:hv1");
        for bad in
            ["vipcast://agent/", "vipcast://root/x", "https://agent/hv1", "vipcast://agent/a/b", "vipcast://agent"]
        {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }
}
