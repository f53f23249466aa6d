//! The kernel over rtnetlink: interfaces (index, MAC, up / running, their
//! addresses), virtual addresses added and removed, and link events.

use std::collections::HashMap;
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::mpsc;
use vipcast_packet::MacAddr;

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    /// Administratively up and running (carrier): keepalived's test for a
    /// tracked interface.
    pub up: bool,
}

impl Link {
    fn from_message(m: &LinkMessage) -> Link {
        let flags = m.header.flags;
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Address(a) => l.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr),
                _ => {}
            }
        }
        l
    }
}

/// An address configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    pub net: IpNet,
    pub secondary: bool,
}

/// A failed netlink request, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct KernelError {
    what: String,
    #[source]
    source: rtnetlink::Error,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

/// An rtnetlink connection in the current network namespace.
#[derive(Debug, Clone)]
pub struct Kernel {
    handle: Handle,
}

impl Kernel {
    /// Opens the connection (its task runs on the current tokio runtime).
    pub fn open() -> std::io::Result<Kernel> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    /// Every interface.
    pub async fn links(&self) -> Result<Vec<Link>, KernelError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| KernelError { what: "listing links".into(), source })?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// The addresses of interface `index`.
    pub async fn addrs(&self, index: u32) -> Result<Vec<Addr>, KernelError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|source| KernelError { what: format!("listing addresses of interface {index}"), source })?;
        let mut out = Vec::new();
        for m in msgs.iter().filter(|m| m.header.index == index) {
            let ip = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip
                && let Ok(net) = IpNet::new(ip, m.header.prefix_len)
            {
                out.push(Addr { net, secondary: m.header.flags.contains(AddressHeaderFlags::Secondary) });
            }
        }
        Ok(out)
    }

    /// Adds `net` to interface `index`; already there is fine. IPv6
    /// addresses skip duplicate address detection (`nodad`, as keepalived
    /// adds them): the backup that held it a moment ago must not make it fail.
    pub async fn add_addr(&self, index: u32, net: IpNet) -> Result<(), KernelError> {
        let mut req = self.handle.address().add(index, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(KernelError { what: format!("adding {net} to interface {index}"), source }),
        }
    }

    /// Removes `net` from interface `index`; already gone is fine.
    pub async fn del_addr(&self, index: u32, net: IpNet) -> Result<(), KernelError> {
        let mut m = AddressMessage::default();
        m.header.family = match net {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        m.header.prefix_len = net.prefix_len();
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(net.addr()));
        if net.addr().is_ipv6() {
            m.attributes.clear();
            m.attributes.push(AddressAttribute::Address(net.addr()));
        }
        match self.handle.address().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ENODEV)) => Ok(()),
            Err(source) => Err(KernelError { what: format!("removing {net} from interface {index}"), source }),
        }
    }
}

/// The address adverts are sent from: IPv4, the interface's first primary
/// address that is not one of `vips`; IPv6, its link-local address.
pub fn primary_address(addrs: &[Addr], v6: bool, vips: &[IpAddr]) -> Option<IpAddr> {
    addrs
        .iter()
        .map(|a| (a.net.addr(), a.secondary))
        .filter(|(ip, _)| !vips.contains(ip))
        .find(|(ip, secondary)| match ip {
            IpAddr::V4(_) => !v6 && !secondary,
            IpAddr::V6(a) => v6 && a.is_unicast_link_local(),
        })
        .map(|(ip, _)| ip)
}

/// Watches link state: sends `(name, up)` for every change after the
/// initial `known` states, as the kernel announces it (RTNLGRP_LINK), so a
/// tracked interface going down is seen within milliseconds, not a poll.
pub fn watch_links(known: HashMap<String, bool>, tx: mpsc::UnboundedSender<(String, bool)>) -> std::io::Result<()> {
    let (conn, _handle, mut messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])?;
    tokio::spawn(conn);
    tokio::spawn(async move {
        let mut known = known;
        while let Some((msg, _)) = messages.next().await {
            let (link, gone) = match msg.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    (Link::from_message(&m), false)
                }
                netlink_packet_core::NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    (Link::from_message(&m), true)
                }
                _ => continue,
            };
            if link.name.is_empty() {
                continue;
            }
            let up = link.up && !gone;
            if known.insert(link.name.clone(), up) != Some(up) && tx.send((link.name, up)).is_err() {
                return;
            }
        }
    });
    Ok(())
}
