//! OFPT_ERROR bodies (spec §7.4.4) and the names of their types and codes.

use core::fmt;

/// An error a switch reports: type, code, and usually the first bytes (at
/// least 64) of the request that failed, whose header carries its xid.
///
/// For `err_type` [`OFPET_EXPERIMENTER`] the `code` is the experimenter's
/// `exp_code` and `data` starts with the 32-bit experimenter id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorMsg {
    pub err_type: u16,
    pub code: u16,
    pub data: Vec<u8>,
}

pub const OFPET_HELLO_FAILED: u16 = 0;
pub const OFPET_BAD_REQUEST: u16 = 1;
pub const OFPET_BAD_ACTION: u16 = 2;
pub const OFPET_BAD_INSTRUCTION: u16 = 3;
pub const OFPET_BAD_MATCH: u16 = 4;
pub const OFPET_FLOW_MOD_FAILED: u16 = 5;
pub const OFPET_GROUP_MOD_FAILED: u16 = 6;
pub const OFPET_PORT_MOD_FAILED: u16 = 7;
pub const OFPET_TABLE_MOD_FAILED: u16 = 8;
pub const OFPET_QUEUE_OP_FAILED: u16 = 9;
pub const OFPET_SWITCH_CONFIG_FAILED: u16 = 10;
pub const OFPET_ROLE_REQUEST_FAILED: u16 = 11;
pub const OFPET_METER_MOD_FAILED: u16 = 12;
pub const OFPET_TABLE_FEATURES_FAILED: u16 = 13;
pub const OFPET_EXPERIMENTER: u16 = 0xffff;

/// The spec's name of an error type.
pub fn error_type_name(err_type: u16) -> Option<&'static str> {
    Some(match err_type {
        OFPET_HELLO_FAILED => "OFPET_HELLO_FAILED",
        OFPET_BAD_REQUEST => "OFPET_BAD_REQUEST",
        OFPET_BAD_ACTION => "OFPET_BAD_ACTION",
        OFPET_BAD_INSTRUCTION => "OFPET_BAD_INSTRUCTION",
        OFPET_BAD_MATCH => "OFPET_BAD_MATCH",
        OFPET_FLOW_MOD_FAILED => "OFPET_FLOW_MOD_FAILED",
        OFPET_GROUP_MOD_FAILED => "OFPET_GROUP_MOD_FAILED",
        OFPET_PORT_MOD_FAILED => "OFPET_PORT_MOD_FAILED",
        OFPET_TABLE_MOD_FAILED => "OFPET_TABLE_MOD_FAILED",
        OFPET_QUEUE_OP_FAILED => "OFPET_QUEUE_OP_FAILED",
        OFPET_SWITCH_CONFIG_FAILED => "OFPET_SWITCH_CONFIG_FAILED",
        OFPET_ROLE_REQUEST_FAILED => "OFPET_ROLE_REQUEST_FAILED",
        OFPET_METER_MOD_FAILED => "OFPET_METER_MOD_FAILED",
        OFPET_TABLE_FEATURES_FAILED => "OFPET_TABLE_FEATURES_FAILED",
        OFPET_EXPERIMENTER => "OFPET_EXPERIMENTER",
        _ => return None,
    })
}

/// The spec's name of an error code, for the types a controller of flows and
/// groups meets.
pub fn error_code_name(err_type: u16, code: u16) -> Option<&'static str> {
    const HELLO_FAILED: &[&str] = &["OFPHFC_INCOMPATIBLE", "OFPHFC_EPERM"];
    const BAD_REQUEST: &[&str] = &[
        "OFPBRC_BAD_VERSION",
        "OFPBRC_BAD_TYPE",
        "OFPBRC_BAD_MULTIPART",
        "OFPBRC_BAD_EXPERIMENTER",
        "OFPBRC_BAD_EXP_TYPE",
        "OFPBRC_EPERM",
        "OFPBRC_BAD_LEN",
        "OFPBRC_BUFFER_EMPTY",
        "OFPBRC_BUFFER_UNKNOWN",
        "OFPBRC_BAD_TABLE_ID",
        "OFPBRC_IS_SLAVE",
        "OFPBRC_BAD_PORT",
        "OFPBRC_BAD_PACKET",
        "OFPBRC_MULTIPART_BUFFER_OVERFLOW",
    ];
    const BAD_ACTION: &[&str] = &[
        "OFPBAC_BAD_TYPE",
        "OFPBAC_BAD_LEN",
        "OFPBAC_BAD_EXPERIMENTER",
        "OFPBAC_BAD_EXP_TYPE",
        "OFPBAC_BAD_OUT_PORT",
        "OFPBAC_BAD_ARGUMENT",
        "OFPBAC_EPERM",
        "OFPBAC_TOO_MANY",
        "OFPBAC_BAD_QUEUE",
        "OFPBAC_BAD_OUT_GROUP",
        "OFPBAC_MATCH_INCONSISTENT",
        "OFPBAC_UNSUPPORTED_ORDER",
        "OFPBAC_BAD_TAG",
        "OFPBAC_BAD_SET_TYPE",
        "OFPBAC_BAD_SET_LEN",
        "OFPBAC_BAD_SET_ARGUMENT",
    ];
    const BAD_INSTRUCTION: &[&str] = &[
        "OFPBIC_UNKNOWN_INST",
        "OFPBIC_UNSUP_INST",
        "OFPBIC_BAD_TABLE_ID",
        "OFPBIC_UNSUP_METADATA",
        "OFPBIC_UNSUP_METADATA_MASK",
        "OFPBIC_BAD_EXPERIMENTER",
        "OFPBIC_BAD_EXP_TYPE",
        "OFPBIC_BAD_LEN",
        "OFPBIC_EPERM",
    ];
    const BAD_MATCH: &[&str] = &[
        "OFPBMC_BAD_TYPE",
        "OFPBMC_BAD_LEN",
        "OFPBMC_BAD_TAG",
        "OFPBMC_BAD_DL_ADDR_MASK",
        "OFPBMC_BAD_NW_ADDR_MASK",
        "OFPBMC_BAD_WILDCARDS",
        "OFPBMC_BAD_FIELD",
        "OFPBMC_BAD_VALUE",
        "OFPBMC_BAD_MASK",
        "OFPBMC_BAD_PREREQ",
        "OFPBMC_DUP_FIELD",
        "OFPBMC_EPERM",
    ];
    const FLOW_MOD_FAILED: &[&str] = &[
        "OFPFMFC_UNKNOWN",
        "OFPFMFC_TABLE_FULL",
        "OFPFMFC_BAD_TABLE_ID",
        "OFPFMFC_OVERLAP",
        "OFPFMFC_EPERM",
        "OFPFMFC_BAD_TIMEOUT",
        "OFPFMFC_BAD_COMMAND",
        "OFPFMFC_BAD_FLAGS",
    ];
    const GROUP_MOD_FAILED: &[&str] = &[
        "OFPGMFC_GROUP_EXISTS",
        "OFPGMFC_INVALID_GROUP",
        "OFPGMFC_WEIGHT_UNSUPPORTED",
        "OFPGMFC_OUT_OF_GROUPS",
        "OFPGMFC_OUT_OF_BUCKETS",
        "OFPGMFC_CHAINING_UNSUPPORTED",
        "OFPGMFC_WATCH_UNSUPPORTED",
        "OFPGMFC_LOOP",
        "OFPGMFC_UNKNOWN_GROUP",
        "OFPGMFC_CHAINED_GROUP",
        "OFPGMFC_BAD_TYPE",
        "OFPGMFC_BAD_COMMAND",
        "OFPGMFC_BAD_BUCKET",
        "OFPGMFC_BAD_WATCH",
        "OFPGMFC_EPERM",
    ];
    const SWITCH_CONFIG_FAILED: &[&str] = &["OFPSCFC_BAD_FLAGS", "OFPSCFC_BAD_LEN", "OFPSCFC_EPERM"];
    let names = match err_type {
        OFPET_HELLO_FAILED => HELLO_FAILED,
        OFPET_BAD_REQUEST => BAD_REQUEST,
        OFPET_BAD_ACTION => BAD_ACTION,
        OFPET_BAD_INSTRUCTION => BAD_INSTRUCTION,
        OFPET_BAD_MATCH => BAD_MATCH,
        OFPET_FLOW_MOD_FAILED => FLOW_MOD_FAILED,
        OFPET_GROUP_MOD_FAILED => GROUP_MOD_FAILED,
        OFPET_SWITCH_CONFIG_FAILED => SWITCH_CONFIG_FAILED,
        _ => return None,
    };
    names.get(usize::from(code)).copied()
}

impl ErrorMsg {
    /// The xid of the failed request, when `data` holds its header.
    pub fn request_xid(&self) -> Option<u32> {
        let xid: [u8; 4] = self.data.get(4..8)?.try_into().ok()?;
        Some(u32::from_be_bytes(xid))
    }
}

impl fmt::Display for ErrorMsg {
    /// `OFPET_BAD_ACTION/OFPBAC_BAD_OUT_PORT (type 2, code 4, 72 bytes of data)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match error_type_name(self.err_type) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "error type {}", self.err_type)?,
        }
        if self.err_type == OFPET_EXPERIMENTER {
            let id = self.data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes);
            match id {
                Some(id) => write!(f, " experimenter {id:#010x} exp_code {}", self.code)?,
                None => write!(f, " exp_code {}", self.code)?,
            }
        } else if let Some(code) = error_code_name(self.err_type, self.code) {
            write!(f, "/{code}")?;
        }
        write!(f, " (type {}, code {}, {} bytes of data)", self.err_type, self.code, self.data.len())
    }
}
