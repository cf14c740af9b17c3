//! A small blocking Redis client (RESP2 over TCP), enough for the HA lease,
//! the replicated hashes and the change stream. Every call has a timeout, so
//! an unreachable server is noticed within one check interval.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Int(i64),
    /// `$n` bulk string; `None` is the null bulk.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` is the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The integer, when it is one.
    #[must_use]
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Self::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The bulk or status text, when it is one.
    #[must_use]
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Self::Status(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The array items (empty for a null array or another type).
    #[must_use]
    pub fn items(&self) -> &[Reply] {
        match self {
            Self::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// One connection.
pub struct Redis {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol: {what}"))
}

fn read_reply(r: &mut impl BufRead, depth: usize) -> io::Result<Reply> {
    if depth > 8 {
        return Err(bad("nesting too deep"));
    }
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.len() < 3 || !line.ends_with(b"\r\n") {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis connection closed"));
    }
    let body = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    let num = || body.parse::<i64>().map_err(|_| bad("bad length"));
    match line[0] {
        b'+' => Ok(Reply::Status(body)),
        b'-' => Ok(Reply::Error(body)),
        b':' => Ok(Reply::Int(num()?)),
        b'$' => {
            let n = num()?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let n = usize::try_from(n).map_err(|_| bad("bad length"))?;
            if n > 512 * 1024 * 1024 {
                return Err(bad("bulk too large"));
            }
            let mut buf = vec![0; n + 2];
            io::Read::read_exact(r, &mut buf)?;
            buf.truncate(n);
            Ok(Reply::Bulk(Some(buf)))
        }
        b'*' => {
            let n = num()?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let n = usize::try_from(n).map_err(|_| bad("bad length"))?;
            let mut v = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                v.push(read_reply(r, depth + 1)?);
            }
            Ok(Reply::Array(Some(v)))
        }
        _ => Err(bad("unknown reply type")),
    }
}

impl Redis {
    /// A client for `addr`; it connects on first use.
    #[must_use]
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self { addr, timeout, conn: None }
    }

    /// Whether a connection is open.
    #[must_use]
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Drops the connection (the next call reconnects).
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    fn connection(&mut self, read_timeout: Duration) -> io::Result<&mut (TcpStream, BufReader<TcpStream>)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_write_timeout(Some(self.timeout))?;
            let r = BufReader::new(s.try_clone()?);
            self.conn = Some((s, r));
        }
        let c = self.conn.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        c.0.set_read_timeout(Some(read_timeout))?;
        Ok(c)
    }

    /// Sends several commands in one write and reads their replies. Any I/O
    /// error drops the connection.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        self.pipeline_with_timeout(cmds, self.timeout)
    }

    /// [`pipeline`](Self::pipeline) with a longer read timeout (blocking reads).
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub fn pipeline_with_timeout(&mut self, cmds: &[Vec<Vec<u8>>], read_timeout: Duration) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        for c in cmds {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            encode(&mut out, &args);
        }
        let result = (|| {
            let (w, r) = self.connection(read_timeout)?;
            w.write_all(&out)?;
            let mut replies = Vec::with_capacity(cmds.len());
            for _ in cmds {
                replies.push(read_reply(r, 0)?);
            }
            Ok(replies)
        })();
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// One command.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors; a Redis error reply is `Ok(Reply::Error)`.
    pub fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let v: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        self.pipeline(&[v])?.pop().ok_or_else(|| bad("no reply"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_type() {
        let mut r: &[u8] = b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$0\r\n\r\n*-1\r\n";
        assert_eq!(read_reply(&mut r, 0).unwrap(), Reply::Status("OK".into()));
        assert_eq!(read_reply(&mut r, 0).unwrap(), Reply::Error("ERR x".into()));
        assert_eq!(read_reply(&mut r, 0).unwrap().as_int(), Some(42));
        assert_eq!(read_reply(&mut r, 0).unwrap().as_text().as_deref(), Some("abc"));
        assert_eq!(read_reply(&mut r, 0).unwrap(), Reply::Bulk(None));
        let a = read_reply(&mut r, 0).unwrap();
        assert_eq!(a.items(), &[Reply::Int(1), Reply::Bulk(Some(Vec::new()))]);
        assert_eq!(read_reply(&mut r, 0).unwrap(), Reply::Array(None));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for input in [&b"?x\r\n"[..], b"$abc\r\n", b"$5\r\nab", b":\r\n", b"", b"*1\r\n"] {
            let mut r = input;
            assert!(read_reply(&mut r, 0).is_err(), "{input:?}");
        }
    }

    #[test]
    fn encodes_bulk_arrays() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"v v"]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n");
    }
}
