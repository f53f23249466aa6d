//! The MariaDB/MySQL client/server protocol, as much as a drill client
//! needs: packet framing, the server's handshake (v10), the client's
//! handshake response with `mysql_native_password`, `COM_QUERY`, and the
//! server's OK, ERR and text result sets. Pure: bytes in, values out; every
//! decoder returns an error for bytes it cannot read and never panics.

use std::fmt;

/// Capabilities the client asks for.
pub const CLIENT_LONG_PASSWORD: u32 = 0x1;
pub const CLIENT_LONG_FLAG: u32 = 0x4;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_TRANSACTIONS: u32 = 0x2000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x20000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x80000;

/// The largest payload one packet carries (longer ones are split).
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// `COM_QUERY`.
pub const COM_QUERY: u8 = 0x03;

/// The only authentication plugin this client speaks.
pub const NATIVE_PASSWORD: &str = "mysql_native_password";

/// Bytes that are not what the protocol allows here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed server packet: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// A packet header: payload length and sequence id.
pub fn header(bytes: [u8; 4]) -> (usize, u8) {
    (usize::from(bytes[0]) | usize::from(bytes[1]) << 8 | usize::from(bytes[2]) << 16, bytes[3])
}

/// Frames `payload` (at most [`MAX_PAYLOAD`] bytes) as packet `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Result<Vec<u8>, Malformed> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Malformed("payload too long for one packet"));
    }
    let n = payload.len();
    let mut out = Vec::with_capacity(4 + n);
    out.extend_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8, seq]);
    out.extend_from_slice(payload);
    Ok(out)
}

/// A cursor over a payload.
#[derive(Debug)]
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Malformed> {
        let (&v, rest) = self.b.split_first().ok_or(Malformed("truncated"))?;
        self.b = rest;
        Ok(v)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.b.len() < n {
            return Err(Malformed("truncated"));
        }
        let (v, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(v)
    }

    fn uint(&mut self, n: usize) -> Result<u64, Malformed> {
        Ok(self.take(n)?.iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    fn nul_str(&mut self) -> Result<&'a [u8], Malformed> {
        let end = self.b.iter().position(|&c| c == 0).ok_or(Malformed("string without its NUL"))?;
        let s = self.take(end)?;
        self.u8()?;
        Ok(s)
    }

    /// A length-encoded integer; `None` for the NULL marker (0xfb).
    fn lenenc(&mut self) -> Result<Option<u64>, Malformed> {
        match self.u8()? {
            v @ 0..=0xfa => Ok(Some(u64::from(v))),
            0xfb => Ok(None),
            0xfc => self.uint(2).map(Some),
            0xfd => self.uint(3).map(Some),
            0xfe => self.uint(8).map(Some),
            _ => Err(Malformed("0xff is not a length")),
        }
    }

    fn lenenc_bytes(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.lenenc()? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| Malformed("length out of range"))?;
                self.take(n).map(Some)
            }
        }
    }
}

/// The server's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub server_version: String,
    pub connection_id: u32,
    pub capabilities: u32,
    /// The 20-byte scramble.
    pub scramble: Vec<u8>,
    pub plugin: String,
}

/// Decodes the server's handshake (protocol 10).
pub fn handshake(payload: &[u8]) -> Result<Handshake, Malformed> {
    let mut r = Reader { b: payload };
    if r.u8()? != 10 {
        return Err(Malformed("not protocol version 10"));
    }
    let server_version = String::from_utf8_lossy(r.nul_str()?).into_owned();
    let connection_id = r.uint(4)? as u32;
    let mut scramble = r.take(8)?.to_vec();
    r.u8()?;
    let lower = r.uint(2)? as u32;
    let mut capabilities = lower;
    let mut plugin = String::new();
    if !r.b.is_empty() {
        r.u8()?; // character set
        r.uint(2)?; // status
        capabilities |= (r.uint(2)? as u32) << 16;
        let auth_len = usize::from(r.u8()?);
        r.take(10)?;
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let n = auth_len.saturating_sub(8).max(13);
            let part = r.take(n)?;
            // The part ends with a NUL that is not part of the scramble.
            scramble.extend_from_slice(part.strip_suffix(&[0]).unwrap_or(part));
        }
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            plugin = String::from_utf8_lossy(r.nul_str().unwrap_or(r.b)).into_owned();
        }
    }
    if scramble.len() < 20 {
        return Err(Malformed("scramble shorter than 20 bytes"));
    }
    scramble.truncate(20);
    Ok(Handshake { server_version, connection_id, capabilities, scramble, plugin })
}

/// `mysql_native_password`'s answer: SHA1(password) XOR
/// SHA1(scramble + SHA1(SHA1(password))); empty for an empty password.
pub fn native_password(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let sha1 = |parts: &[&[u8]]| {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    };
    let stage1 = sha1(&[password.as_bytes()]);
    let stage2 = sha1(&[&stage1]);
    let mix = sha1(&[scramble, &stage2]);
    stage1.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// The client's handshake response payload.
pub fn handshake_response(user: &str, auth: &[u8], database: Option<&str>) -> Vec<u8> {
    const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
    let mut caps = CLIENT_LONG_PASSWORD
        | CLIENT_LONG_FLAG
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH;
    if database.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    let mut p = Vec::with_capacity(64 + user.len());
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
    p.push(45); // utf8mb4_general_ci
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(auth.len().min(255) as u8);
    p.extend_from_slice(&auth[..auth.len().min(255)]);
    if let Some(db) = database {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(NATIVE_PASSWORD.as_bytes());
    p.push(0);
    p
}

/// `COM_QUERY` with `sql`.
pub fn query(sql: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(1 + sql.len());
    p.push(COM_QUERY);
    p.extend_from_slice(sql.as_bytes());
    p
}

/// An error the server sent (ERR packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub state: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERROR {} ({}): {}", self.code, self.state, self.message)
    }
}

/// What a packet after a command or the handshake response is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok {
        affected: u64,
        last_insert_id: u64,
    },
    Err(ServerError),
    /// The server asks for another authentication method.
    AuthSwitch {
        plugin: String,
        data: Vec<u8>,
    },
    /// A result set of this many columns follows.
    Columns(u64),
}

/// Decodes the first packet of a reply.
pub fn reply(payload: &[u8]) -> Result<Reply, Malformed> {
    let mut r = Reader { b: payload };
    match payload.first() {
        None => Err(Malformed("empty packet")),
        Some(0x00) => {
            r.u8()?;
            let affected = r.lenenc()?.ok_or(Malformed("NULL affected rows"))?;
            let last_insert_id = r.lenenc()?.ok_or(Malformed("NULL insert id"))?;
            Ok(Reply::Ok { affected, last_insert_id })
        }
        Some(0xff) => err(payload).map(Reply::Err),
        Some(0xfe) => {
            r.u8()?;
            let plugin = String::from_utf8_lossy(r.nul_str()?).into_owned();
            let data = r.b.strip_suffix(&[0]).unwrap_or(r.b).to_vec();
            Ok(Reply::AuthSwitch { plugin, data })
        }
        Some(_) => {
            let n = r.lenenc()?.ok_or(Malformed("NULL column count"))?;
            if !r.b.is_empty() {
                return Err(Malformed("bytes after the column count"));
            }
            Ok(Reply::Columns(n))
        }
    }
}

/// Decodes an ERR packet.
pub fn err(payload: &[u8]) -> Result<ServerError, Malformed> {
    let mut r = Reader { b: payload };
    if r.u8()? != 0xff {
        return Err(Malformed("not an ERR packet"));
    }
    let code = r.uint(2)? as u16;
    let mut state = String::new();
    if r.b.first() == Some(&b'#') {
        r.u8()?;
        state = String::from_utf8_lossy(r.take(5)?).into_owned();
    }
    Ok(ServerError { code, state, message: String::from_utf8_lossy(r.b).into_owned() })
}

/// Whether a packet of a result set ends a section (EOF packet).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < 9
}

/// One text-protocol row: `columns` values, `None` for NULL.
pub fn row(payload: &[u8], columns: u64) -> Result<Vec<Option<String>>, Malformed> {
    let mut r = Reader { b: payload };
    let mut out = Vec::new();
    for _ in 0..columns {
        out.push(r.lenenc_bytes()?.map(|b| String::from_utf8_lossy(b).into_owned()));
    }
    if !r.b.is_empty() {
        return Err(Malformed("bytes after the last column"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A handshake as MariaDB 10.11 sends it.
    fn server_hello() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.19-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh");
        p.push(0);
        let caps: u32 = 0xf7fe | CLIENT_PLUGIN_AUTH | CLIENT_MULTI_RESULTS;
        p.extend_from_slice(&(caps as u16).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"ijklmnopqrst\0");
        p.extend_from_slice(b"mysql_native_password\0");
        p
    }

    #[test]
    fn reads_a_mariadb_handshake() {
        let h = handshake(&server_hello()).unwrap();
        assert_eq!(h.server_version, "5.5.5-10.11.19-MariaDB");
        assert_eq!(h.connection_id, 7);
        assert_eq!(h.scramble, b"abcdefghijklmnopqrst");
        assert_eq!(h.plugin, NATIVE_PASSWORD);
        assert!(h.capabilities & CLIENT_SECURE_CONNECTION != 0);
    }

    #[test]
    fn every_truncated_handshake_is_refused() {
        let full = server_hello();
        // Up to the end of the first scramble part nothing is optional.
        for n in 0..full.len() - 35 {
            assert!(handshake(&full[..n]).is_err(), "{n} bytes accepted");
        }
    }

    #[test]
    fn native_password_matches_the_server_formula() {
        // SHA1("secret") XOR SHA1(scramble + SHA1(SHA1("secret"))), computed
        // by hand from the definition with the same digest: symmetric check.
        let scramble = b"abcdefghijklmnopqrst";
        let answer = native_password("secret", scramble);
        assert_eq!(answer.len(), 20);
        let sha1 =
            |b: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref().to_vec();
        let stage2 = sha1(&sha1(b"secret"));
        let mut salted = scramble.to_vec();
        salted.extend_from_slice(&stage2);
        let mix = sha1(&salted);
        // The server recovers SHA1(password) and checks its SHA1 is stage2.
        let stage1: Vec<u8> = answer.iter().zip(&mix).map(|(a, b)| a ^ b).collect();
        assert_eq!(sha1(&stage1), stage2);
        assert!(native_password("", scramble).is_empty());
    }

    #[test]
    fn replies() {
        assert_eq!(reply(&[0, 1, 0, 2, 0, 0, 0]).unwrap(), Reply::Ok { affected: 1, last_insert_id: 0 });
        let mut e = vec![0xff, 0x0a, 0x05, b'#'];
        e.extend_from_slice(b"HY000The MariaDB server is running with the --read-only option");
        match reply(&e).unwrap() {
            Reply::Err(se) => {
                assert_eq!(se.code, 1290);
                assert_eq!(se.state, "HY000");
                assert!(se.message.contains("read-only"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(reply(&[2]).unwrap(), Reply::Columns(2));
        assert_eq!(
            reply(b"\xfemysql_native_password\0abc\0").unwrap(),
            Reply::AuthSwitch { plugin: NATIVE_PASSWORD.into(), data: b"abc".to_vec() }
        );
        assert!(reply(&[]).is_err());
        assert!(reply(&[0xfc, 1]).is_err());
    }

    #[test]
    fn rows_and_nulls() {
        assert_eq!(row(b"\x0212\xfb", 2).unwrap(), vec![Some("12".into()), None]);
        assert!(row(b"\x0212", 2).is_err());
        assert!(row(b"\x0212x", 1).is_err());
        assert!(is_eof(&[0xfe, 0, 0, 2, 0]));
        assert!(!is_eof(&[0xfe; 9]));
    }

    #[test]
    fn frames_and_headers() {
        let f = frame(3, b"abc").unwrap();
        assert_eq!(f, [3, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(header([3, 0, 0, 3]), (3, 3));
        assert_eq!(header([0xff, 0xff, 0xff, 0]), (MAX_PAYLOAD, 0));
        assert!(frame(0, &vec![0; MAX_PAYLOAD + 1]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cols in 0u64..8) {
            let _ = handshake(&bytes);
            let _ = reply(&bytes);
            let _ = err(&bytes);
            let _ = row(&bytes, cols);
            let _ = is_eof(&bytes);
        }
    }
}
