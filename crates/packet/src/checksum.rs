//! The Internet checksum (RFC 1071) and pseudo-headers (RFC 768, RFC 8200 §8.1).

use core::net::IpAddr;

/// One's-complement sum of 16-bit big-endian words, not yet folded or inverted.
/// An odd trailing byte is padded with zero.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let [a, b] = *c {
            acc = acc.wrapping_add(u32::from(u16::from_be_bytes([a, b])));
        }
    }
    if let [last] = *chunks.remainder() {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([last, 0])));
    }
    acc
}

/// Folds a running sum to 16 bits and inverts it: the value to put in a checksum field.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Sum of the IPv4 or IPv6 pseudo-header for an upper-layer protocol.
/// `src` and `dst` must be of the same family; mixed families sum both
/// addresses as given (the caller's error, never a panic).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, length: u32) -> u32 {
    let mut acc = 0u32;
    for a in [src, dst] {
        acc = acc.wrapping_add(match a {
            IpAddr::V4(v4) => sum(&v4.octets()),
            IpAddr::V6(v6) => sum(&v6.octets()),
        });
    }
    acc.wrapping_add(u32::from(protocol)).wrapping_add(length >> 16).wrapping_add(length & 0xffff)
}

/// Checksum of `data` preceded by a pseudo-header.
pub fn with_pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, data: &[u8]) -> u16 {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    finish(pseudo_header(src, dst, protocol, len).wrapping_add(sum(data)))
}

/// Sum of `data` as if the 16-bit field at byte offset `field` (even) were zero.
pub fn sum_without_field(data: &[u8], field: usize) -> u32 {
    let before = data.get(..field).unwrap_or(data);
    let after = data.get(field.saturating_add(2)..).unwrap_or_default();
    sum(before).wrapping_add(sum(after))
}

/// The checksum a field at offset `field` of `data` should hold, with the
/// pseudo-header of `src`/`dst`/`protocol` in front (`None`: no pseudo-header).
pub fn compute(pseudo: Option<(IpAddr, IpAddr, u8)>, data: &[u8], field: usize) -> u16 {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let head = pseudo.map_or(0, |(s, d, p)| pseudo_header(s, d, p, len));
    finish(head.wrapping_add(sum_without_field(data, field)))
}

/// Checksum of `data` alone.
pub fn of(data: &[u8]) -> u16 {
    finish(sum(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2 before inversion.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(of(&data), !0xddf2);
    }

    #[test]
    fn compute_ignores_the_field() {
        let data = [0x12, 0x34, 0xde, 0xad, 0x56, 0x78];
        assert_eq!(compute(None, &data, 2), of(&[0x12, 0x34, 0, 0, 0x56, 0x78]));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12, 0x34, 0x56]), of(&[0x12, 0x34, 0x56, 0x00]));
    }

    #[test]
    fn valid_buffer_sums_to_zero() {
        let mut data =
            vec![0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x00, 0x00, 0xff, 0x70, 0, 0, 10, 0, 0, 1, 224, 0, 0, 18];
        let c = of(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(of(&data), 0);
    }
}
