#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (addrs, rest) = data.split_at(8);
    let src = std::net::Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
    let dst = std::net::Ipv4Addr::new(addrs[4], addrs[5], addrs[6], addrs[7]);
    let _ = vipcast_packet::udp::UdpRepr::parse(rest, Some((src.into(), dst.into())));
    let _ = vipcast_packet::udp::UdpRepr::parse(rest, None);
});
