//! Watch streams: what each agent (per chassis) and replicator is sent.
//!
//! NDJSON over a long-lived HTTP response, one [`Message`] per line:
//!
//! ```text
//! {"type":"snapshot","revision":41,"objects":[{"kind":"vpc",...},...]}   on connect
//! {"type":"delta","revision":42,"upserts":[{"kind":"vip",...}],"deletes":[]}
//! {"type":"ping","revision":42}                                          when idle
//! ```
//! A subscriber keeps the objects it was sent and the last revision
//! ([`Message::apply`]); on reconnect with `?from=REV` it gets one delta of
//! what changed after REV instead of a snapshot when the controller can tell.

use serde::{Deserialize, Serialize};
use vipcast_model::{Object, ObjectKey, State};

/// [`Object`] under a name the `ToSchema` derive does not take for its
/// free-form `Object` virtual type.
#[cfg(feature = "openapi")]
type AnyObject = Object;

/// A store revision (the controller's store's; compared, never assumed absolute).
pub type Revision = i64;

/// A store key, as it appears in `deletes`.
pub type WireKey = String;

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// Everything the subscriber should hold, replacing what it had.
    Snapshot {
        revision: Revision,
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<AnyObject>))]
        objects: Vec<Object>,
    },
    /// Changes since the previous message.
    Delta {
        revision: Revision,
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<AnyObject>))]
        upserts: Vec<Object>,
        /// Store keys of objects to drop, e.g. `/vipcast/ports/pay1`.
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
        deletes: Vec<WireKey>,
    },
    /// Keep-alive on an idle stream.
    Ping { revision: Revision },
}

impl Message {
    /// What a subscriber holds after this message, given what it held: the
    /// revision and the new state (a snapshot replaces, a delta applies), or
    /// `None` for a ping.
    pub fn apply(self, held: &State) -> Option<(Revision, State)> {
        match self {
            Message::Snapshot { revision, objects } => {
                let mut state = State::default();
                for o in objects {
                    state.put(o);
                }
                Some((revision, state))
            }
            Message::Delta { revision, upserts, deletes } => {
                let mut state = held.clone();
                for o in upserts {
                    state.put(o);
                }
                for k in deletes {
                    if let Some(key) = ObjectKey::parse(&k) {
                        state.delete(&key);
                    }
                }
                Some((revision, state))
            }
            Message::Ping { .. } => None,
        }
    }
}
