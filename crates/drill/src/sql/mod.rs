//! A small blocking MariaDB client for the database workload's drill
//! client: [`wire`] is the protocol (pure), [`Conn`] one TCP connection.

pub mod wire;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub use wire::ServerError;

/// The largest reply packet read (a drill's rows are small).
const MAX_PACKET: usize = 1 << 20;

/// Why a statement did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The connection broke or timed out: whether a statement sent on it
    /// took effect is unknown.
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The server refused.
    #[error("{0}")]
    Server(ServerError),
    /// The server sent something this client cannot read.
    #[error("{0}")]
    Protocol(#[from] wire::Malformed),
}

/// One authenticated connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    seq: u8,
}

impl Conn {
    /// Connects (giving up after `connect_timeout`), authenticates with
    /// `mysql_native_password`; reads and writes then time out after
    /// `io_timeout`.
    pub fn connect(
        addr: SocketAddr,
        user: &str,
        password: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Conn, SqlError> {
        let stream = TcpStream::connect_timeout(&addr, connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        let mut c = Conn { stream, seq: 0 };
        let hello = wire::handshake(&c.read()?)?;
        let auth = wire::native_password(password, &hello.scramble);
        c.write(&wire::handshake_response(user, &auth, None))?;
        loop {
            match wire::reply(&c.read()?)? {
                wire::Reply::Ok { .. } => return Ok(c),
                wire::Reply::Err(e) => return Err(SqlError::Server(e)),
                wire::Reply::AuthSwitch { plugin, data } if plugin == wire::NATIVE_PASSWORD => {
                    c.write(&wire::native_password(password, &data))?;
                }
                wire::Reply::AuthSwitch { plugin, .. } => {
                    return Err(SqlError::Protocol(wire::Malformed(if plugin.is_empty() {
                        "authentication switch without a plugin"
                    } else {
                        "authentication plugin other than mysql_native_password"
                    })));
                }
                wire::Reply::Columns(_) => return Err(wire::Malformed("rows during authentication").into()),
            }
        }
    }

    fn read(&mut self) -> Result<Vec<u8>, SqlError> {
        let mut head = [0u8; 4];
        self.stream.read_exact(&mut head)?;
        let (len, seq) = wire::header(head);
        if len > MAX_PACKET {
            return Err(wire::Malformed("reply packet larger than the client reads").into());
        }
        self.seq = seq.wrapping_add(1);
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload)?;
        Ok(payload)
    }

    fn write(&mut self, payload: &[u8]) -> Result<(), SqlError> {
        let packet = wire::frame(self.seq, payload)?;
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&packet)?;
        Ok(())
    }

    fn command(&mut self, sql: &str) -> Result<wire::Reply, SqlError> {
        self.seq = 0;
        self.write(&wire::query(sql))?;
        Ok(wire::reply(&self.read()?)?)
    }

    /// Runs a statement without rows; the affected row count.
    pub fn execute(&mut self, sql: &str) -> Result<u64, SqlError> {
        self.insert(sql).map(|(affected, _)| affected)
    }

    /// Runs a statement without rows; the affected row count and the last
    /// insert id.
    pub fn insert(&mut self, sql: &str) -> Result<(u64, u64), SqlError> {
        match self.command(sql)? {
            wire::Reply::Ok { affected, last_insert_id } => Ok((affected, last_insert_id)),
            wire::Reply::Err(e) => Err(SqlError::Server(e)),
            wire::Reply::Columns(n) => {
                self.rows(n)?;
                Ok((0, 0))
            }
            wire::Reply::AuthSwitch { .. } => Err(wire::Malformed("authentication switch after a query").into()),
        }
    }

    /// Runs a query; its rows (text values, `None` for NULL).
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        match self.command(sql)? {
            wire::Reply::Ok { .. } => Ok(Vec::new()),
            wire::Reply::Err(e) => Err(SqlError::Server(e)),
            wire::Reply::Columns(n) => self.rows(n),
            wire::Reply::AuthSwitch { .. } => Err(wire::Malformed("authentication switch after a query").into()),
        }
    }

    fn rows(&mut self, columns: u64) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        // Column definitions, then EOF.
        loop {
            let p = self.read()?;
            if wire::is_eof(&p) {
                break;
            }
        }
        let mut rows = Vec::new();
        loop {
            let p = self.read()?;
            if wire::is_eof(&p) {
                return Ok(rows);
            }
            if p.first() == Some(&0xff) {
                return Err(SqlError::Server(wire::err(&p)?));
            }
            rows.push(wire::row(&p, columns)?);
        }
    }
}
