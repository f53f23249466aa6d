//! Link state changes of this chassis' interfaces, from rtnetlink's link
//! multicast group: no polling, so a VM port going down is known within
//! microseconds.

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkFlags;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::sync::mpsc;

/// Membership bit of the link group (`RTMGRP_LINK`).
const RTMGRP_LINK: u32 = 1;

/// An interface's carrier: `(ifindex, up)`, where up means administratively
/// up with its lower layer up.
pub type LinkEvent = (u32, bool);

/// Subscribes to link changes; events go to the returned receiver.
pub fn watch() -> std::io::Result<mpsc::UnboundedReceiver<LinkEvent>> {
    let (mut conn, _handle, mut messages) = rtnetlink::new_connection()?;
    conn.socket_mut().socket_mut().bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = msg.payload {
                let up = l.header.flags.contains(LinkFlags::Up) && l.header.flags.contains(LinkFlags::LowerUp);
                if tx.send((l.header.index, up)).is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}
