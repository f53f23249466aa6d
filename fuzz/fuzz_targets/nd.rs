#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 33 {
        return;
    }
    let (head, rest) = data.split_at(33);
    let src = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&head[..16]).unwrap());
    let dst = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&head[16..32]).unwrap());
    let _ = vipcast_packet::nd::NdRepr::parse(rest, src, dst, head[32]);
});
