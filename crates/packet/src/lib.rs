//! Packet codecs for vipcast. No I/O, no clock, no allocation on the parse path.
//!
//! Every protocol has two faces, in the smoltcp style:
//!
//! * a **typed view** (`XxxPacket<T: AsRef<[u8]>>`) over a byte buffer, with
//!   `new_checked` and field getters (setters when `T: AsMut<[u8]>`);
//! * a **representation** (`XxxRepr`) with `parse`, `buffer_len` and `emit`.
//!
//! ## The no-panic contract
//!
//! Parsing takes bytes straight off the wire. No function of this crate
//! panics on any input: once `new_checked` (or `check_len`) has returned `Ok`,
//! no accessor of that view panics either, and every other function returns an
//! [`Error`] naming the layer and the field that was wrong. Unknown values of
//! enumerated fields are preserved (`Other(u8)`), not rejected, unless the
//! protocol says such a packet must be discarded (e.g. a VRRP version other
//! than 2 or 3). Fuzz targets under `fuzz/` hold the crate to this.
//!
//! ## What comes from where
//!
//! Ethernet (with 802.1Q), ARP, IPv4, IPv6, UDP and the ICMPv6 header come from
//! `etherparse`; this crate wraps them in small representations with one error
//! type. VXLAN (RFC 7348), GRE (RFC 2784/2890), GRE-in-UDP (RFC 8086), VRRP v2
//! (RFC 3768) and v3 (RFC 5798), neighbour discovery bodies (RFC 4861) and the
//! pcap file format are written here.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod announce;
pub mod arp;
pub mod build;
pub mod checksum;
mod error;
pub mod ethernet;
pub mod gre;
pub mod ip;
pub mod mac;
pub mod nd;
pub mod pcap;
pub mod udp;
pub mod vrrp;
pub mod vxlan;

pub use error::{Error, Layer, Result};
pub use mac::MacAddr;
