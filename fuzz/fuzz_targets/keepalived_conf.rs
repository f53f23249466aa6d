#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = vipcast_vrrpd::conf::parse(text, "fuzz.conf");
    }
});
