//! Heartbeat keys: one secret on the controller; each chassis' key derived
//! from it (`HMAC-SHA256(secret, "vipcast heartbeat key v1\0" || chassis)`), so
//! the controller needs no key table and an agent holds only its own key
//! (handed to it with its certificate, `NAME.hbkey`).

use std::path::Path;

use aws_lc_rs::hmac;

use crate::Error;

/// Bytes of a secret, a key and a tag.
pub const LEN: usize = 32;

const LABEL: &[u8] = b"vipcast heartbeat key v1\0";

/// A new random secret, hex.
pub fn new_secret() -> Result<String, Error> {
    let mut b = [0u8; LEN];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Error::Invalid("no randomness for the heartbeat secret".into()))?;
    Ok(to_hex(&b))
}

/// Reads a secret or key file (hex).
pub fn read_secret(path: &Path) -> Result<[u8; LEN], Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    from_hex(text.trim()).ok_or_else(|| Error::file(path, format!("not {LEN} bytes of hex")))
}

/// The heartbeat key of `chassis` under `secret`.
pub fn chassis_key(secret: &[u8; LEN], chassis: &str) -> [u8; LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(LABEL);
    ctx.update(chassis.as_bytes());
    let mut out = [0u8; LEN];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The tag of `message` under `key`.
pub fn sign(key: &[u8; LEN], message: &[u8]) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    out.copy_from_slice(hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message).as_ref());
    out
}

/// Whether `tag` is `message`'s under `key` (constant time).
pub fn verify(key: &[u8; LEN], message: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), message, tag).is_ok()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn from_hex(s: &str) -> Option<[u8; LEN]> {
    if s.len() != LEN * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; LEN];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_per_chassis_and_tags_verify() {
        let secret = from_hex(&new_secret().unwrap()).unwrap();
        let (a, b) = (chassis_key(&secret, "hv1"), chassis_key(&secret, "hv2"));
        assert_ne!(a, b);
        assert_eq!(a, chassis_key(&secret, "hv1"));
        let tag = sign(&a, b"beat");
        assert!(verify(&a, b"beat", &tag));
        assert!(!verify(&b, b"beat", &tag));
        assert!(!verify(&a, b"beaT", &tag));
        assert_eq!(from_hex(&to_hex(&a)), Some(a));
        assert_eq!(from_hex("zz"), None);
    }
}
