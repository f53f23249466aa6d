//! The probe protocol: one UDP datagram each way, no state on the responder.
//!
//! ```text
//! request (20 bytes)                      reply (21 + n bytes)
//!  0      4          12         20         0      4          12         20  21
//! +------+----------+----------+          +------+----------+----------+---+-----------+
//! | VCPQ | seq (BE) | sent µs  |          | VCPA | seq (BE) | sent µs  | n | responder |
//! +------+----------+----------+          +------+----------+----------+---+-----------+
//! ```
//! The reply carries the request's sequence number and send time back
//! (the prober keeps no table of outstanding requests) and the responder's
//! name, so the prober knows *who* answered. Parsers never panic; anything
//! that is not exactly this shape is `None`.

/// First bytes of a request.
pub const REQUEST_MAGIC: [u8; 4] = *b"VCPQ";
/// First bytes of a reply.
pub const REPLY_MAGIC: [u8; 4] = *b"VCPA";
/// Length of a request.
pub const REQUEST_LEN: usize = 20;
/// Longest responder name a reply carries (longer names are cut).
pub const MAX_NAME: usize = 255;

/// A probe request: its sequence number and when it was sent (µs since the
/// Unix epoch, the prober's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub seq: u64,
    pub sent_us: u64,
}

impl Request {
    /// The request's bytes.
    pub fn emit(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        let (magic, rest) = b.split_at_mut(4);
        magic.copy_from_slice(&REQUEST_MAGIC);
        let (seq, sent) = rest.split_at_mut(8);
        seq.copy_from_slice(&self.seq.to_be_bytes());
        sent.copy_from_slice(&self.sent_us.to_be_bytes());
        b
    }

    /// A request, if `b` is exactly one.
    pub fn parse(b: &[u8]) -> Option<Request> {
        if b.len() != REQUEST_LEN {
            return None;
        }
        let (magic, rest) = b.split_first_chunk::<4>()?;
        if *magic != REQUEST_MAGIC {
            return None;
        }
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (sent, _) = rest.split_first_chunk::<8>()?;
        Some(Request { seq: u64::from_be_bytes(*seq), sent_us: u64::from_be_bytes(*sent) })
    }
}

/// A reply: the request it answers and who answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    pub request: Request,
    pub responder: &'a str,
}

impl Reply<'_> {
    /// Appends the reply's bytes to `out` (the name cut to [`MAX_NAME`]
    /// bytes at a character boundary).
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut end = self.responder.len().min(MAX_NAME);
        while !self.responder.is_char_boundary(end) {
            end -= 1;
        }
        let name = self.responder.get(..end).unwrap_or_default();
        out.extend_from_slice(&REPLY_MAGIC);
        out.extend_from_slice(&self.request.seq.to_be_bytes());
        out.extend_from_slice(&self.request.sent_us.to_be_bytes());
        out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(name.as_bytes());
    }

    /// A reply, if `b` is exactly one (the name must be UTF-8).
    pub fn parse(b: &[u8]) -> Option<Reply<'_>> {
        let (magic, rest) = b.split_first_chunk::<4>()?;
        if *magic != REPLY_MAGIC {
            return None;
        }
        let (seq, rest) = rest.split_first_chunk::<8>()?;
        let (sent, rest) = rest.split_first_chunk::<8>()?;
        let (n, name) = rest.split_first()?;
        if name.len() != usize::from(*n) {
            return None;
        }
        let responder = std::str::from_utf8(name).ok()?;
        Some(Reply {
            request: Request { seq: u64::from_be_bytes(*seq), sent_us: u64::from_be_bytes(*sent) },
            responder,
        })
    }
}

/// The responder's answer to datagram `request`, or `None` if it is not a
/// probe request.
pub fn answer(request: &[u8], responder: &str) -> Option<Vec<u8>> {
    let request = Request::parse(request)?;
    let mut out = Vec::with_capacity(REQUEST_LEN + 1 + responder.len());
    Reply { request, responder }.emit(&mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips() {
        let r = Request { seq: 0x0102_0304_0506_0708, sent_us: 1_795_564_426_139_123 };
        assert_eq!(Request::parse(&r.emit()), Some(r));
    }

    #[test]
    fn reply_round_trips_and_names_the_responder() {
        let r = Request { seq: 7, sent_us: 42 };
        let bytes = answer(&r.emit(), "pay2").unwrap();
        let reply = Reply::parse(&bytes).unwrap();
        assert_eq!(reply, Reply { request: r, responder: "pay2" });
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let name = "é".repeat(200); // 400 bytes
        let bytes = answer(&Request { seq: 1, sent_us: 2 }.emit(), &name).unwrap();
        let reply = Reply::parse(&bytes).unwrap();
        assert_eq!(reply.responder.len(), 254);
        assert!(name.starts_with(reply.responder));
    }

    #[test]
    fn anything_else_is_refused_without_panicking() {
        let good = Request { seq: 1, sent_us: 2 }.emit();
        assert_eq!(Request::parse(&good[..19]), None);
        let mut bad = good;
        bad[0] = b'X';
        assert_eq!(Request::parse(&bad), None);
        assert_eq!(answer(b"hello", "x"), None);
        let reply = answer(&good, "pay1").unwrap();
        for cut in 0..reply.len() {
            assert_eq!(Reply::parse(&reply[..cut]), None, "cut at {cut}");
        }
        let mut longer = reply.clone();
        longer.push(b'!');
        assert_eq!(Reply::parse(&longer), None);
        // Arbitrary bytes never panic.
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = Request::parse(&junk);
            let _ = Reply::parse(&junk);
        }
    }
}
