#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    use vipcast_packet::vrrp::{self, ChecksumPolicy, Family, VrrpPacket};
    let _ = vrrp::parse_frame(data, ChecksumPolicy::AllowLegacyUnicast);
    let _ = vrrp::parse_ip(data, ChecksumPolicy::Strict);
    for family in [Family::V4, Family::V6] {
        if let Ok(p) = VrrpPacket::new_checked(data, family) {
            for i in 0..usize::from(p.count()) {
                assert!(p.address(i).is_some());
            }
            let _ = p.auth_data();
        }
    }
});
