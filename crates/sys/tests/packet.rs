//! A frame sent on one end of a veth arrives on the other as `Incoming`; an
//! `ETH_P_ALL` socket on the sending end sees it as `Outgoing`; the sending
//! socket itself does not see its own frames, and a socket bound to one
//! protocol sees only incoming frames (the kernel hands outgoing frames to
//! `ETH_P_ALL` sockets only) — which is what the agent's sniffer relies on.
//! Runs in its own namespace.

use std::time::{Duration, Instant};

use vipcast_lab::{Netns, Veth, unique_id};
use vipcast_sys::{Direction, ETH_P_ARP, PacketSocket};

#[test]
fn frames_cross_a_veth_with_their_direction() {
    let id = unique_id();
    let ns = Netns::new(format!("vcs-{id}")).unwrap();
    let (a, b) = (format!("vcs{id}a"), format!("vcs{id}b"));
    let _veth = Veth::new(&a, Some(&ns), &b, Some(&ns)).unwrap();
    // Sockets must be opened inside the namespace: do it on a thread of its own.
    let name = ns.name().to_string();
    let (frame, incoming, outgoing) = std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        let ia = vipcast_sys::ifindex(&a).unwrap();
        let ib = vipcast_sys::ifindex(&b).unwrap();
        let tx = PacketSocket::bind(ia, ETH_P_ARP).unwrap();
        let observer = PacketSocket::bind(ia, vipcast_sys::ETH_P_ALL).unwrap();
        let arp_only = PacketSocket::bind(ia, ETH_P_ARP).unwrap();
        let rx = PacketSocket::bind(ib, ETH_P_ARP).unwrap();
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        frame
            .extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 1]);
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(5);
        let (mut incoming, mut outgoing) = (None, None);
        while Instant::now() < end && (incoming.is_none() || outgoing.is_none()) {
            // Until the veth has carrier on both ends frames are dropped: resend.
            if incoming.is_none() {
                assert_eq!(tx.send(&frame).unwrap(), frame.len());
            }
            std::thread::sleep(Duration::from_millis(5));
            while let Ok((n, d)) = rx.recv(&mut buf) {
                incoming = Some((buf[..n].to_vec(), d));
            }
            while let Ok((n, d)) = observer.recv(&mut buf) {
                if buf[..n] == frame[..] {
                    outgoing = Some((buf[..n].to_vec(), d));
                }
            }
            assert!(tx.recv(&mut buf).is_err(), "the sender saw its own frame");
            assert!(arp_only.recv(&mut buf).is_err(), "a protocol-bound socket saw an outgoing frame");
        }
        (frame, incoming, outgoing)
    })
    .join()
    .unwrap();
    assert_eq!(incoming, Some((frame.clone(), Direction::Incoming)));
    assert_eq!(outgoing, Some((frame, Direction::Outgoing)));
}

#[test]
fn the_sniff_filter_passes_received_arp_na_and_vrrp_and_sent_vrrp_only() {
    use vipcast_sys::{ETH_P_ALL, SNIFF_FILTER};
    let id = unique_id();
    let ns = Netns::new(format!("vcf-{id}")).unwrap();
    let (a, b) = (format!("vcf{id}a"), format!("vcf{id}b"));
    let _veth = Veth::new(&a, Some(&ns), &b, Some(&ns)).unwrap();
    let name = ns.name().to_string();
    let seen = std::thread::spawn(move || {
        vipcast_sys::enter_netns(&name).unwrap();
        let (ia, ib) = (vipcast_sys::ifindex(&a).unwrap(), vipcast_sys::ifindex(&b).unwrap());
        let tx = PacketSocket::bind(ia, ETH_P_ALL).unwrap();
        let sniff_b = PacketSocket::bind(ib, ETH_P_ALL).unwrap();
        sniff_b.attach_filter(&SNIFF_FILTER).unwrap();
        let sniff_a = PacketSocket::bind(ia, ETH_P_ALL).unwrap();
        sniff_a.attach_filter(&SNIFF_FILTER).unwrap();
        let mac = vipcast_packet::MacAddr([2, 0, 0, 0, 0, 1]);
        let garp = vipcast_packet::build::garp(mac, "10.0.0.1".parse().unwrap(), vipcast_packet::arp::ArpOp::Request);
        let na =
            vipcast_packet::build::unsolicited_na(mac, "fd00::1".parse().unwrap(), "fe80::1".parse().unwrap(), false)
                .unwrap();
        let vrrp = {
            let repr = vipcast_packet::vrrp::VrrpRepr {
                version: vipcast_packet::vrrp::Version::V3,
                vrid: 7,
                priority: 100,
                interval_cs: 10,
                auth_type: 0,
                auth_data: [0; 8],
                addresses: vec!["10.0.0.100".parse().unwrap()],
            };
            vipcast_packet::build::vrrp_frame(
                mac,
                None,
                "10.0.0.1".parse().unwrap(),
                "224.0.0.18".parse().unwrap(),
                &repr,
            )
            .unwrap()
        };
        let ipv4 = {
            let ip =
                vipcast_packet::ip::IpRepr::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), 17, 64, 0)
                    .unwrap();
            vipcast_packet::build::ip_frame(vipcast_packet::MacAddr::BROADCAST, mac, &ip, &[]).unwrap()
        };
        let mut buf = [0u8; 2048];
        let mut got_b = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && got_b.len() < 3 {
            for f in [&ipv4, &garp, &na, &vrrp] {
                tx.send(f).unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
            while let Ok((n, _)) = sniff_b.recv(&mut buf) {
                got_b.push(buf[..n].to_vec());
            }
        }
        let mut got_a = Vec::new();
        while let Ok((n, dir)) = sniff_a.recv(&mut buf) {
            assert_eq!(dir, Direction::Outgoing);
            got_a.push(buf[..n].to_vec());
        }
        assert!(!got_a.is_empty(), "the filter dropped an outgoing VRRP advert");
        assert!(got_a.iter().all(|f| f == &vrrp), "the filter let an outgoing frame other than VRRP through");
        (got_b, garp, na, ipv4, vrrp)
    })
    .join()
    .unwrap();
    let (got, garp, na, ipv4, vrrp) = seen;
    assert!(got.contains(&garp) && got.contains(&na), "the filter dropped an announcement");
    assert!(got.contains(&vrrp), "the filter dropped a VRRP advert");
    assert!(!got.contains(&ipv4), "the filter let plain IPv4 through");
}
