//! The Redis connection of the HA thread, the ban replica and the nonce
//! secret, on the `redis` crate (RESP2, blocking). It adds what the pair
//! needs on top of the crate:
//!
//! - every call has a timeout (connect, write and read), so an unreachable
//!   server is noticed within one check interval;
//! - replies come back as [`Reply`] values, a Redis error reply included,
//!   so callers decide what an error means;
//! - Lua scripts are sent by SHA1 (`EVALSHA`) and loaded on `NOSCRIPT`
//!   ([`Redis::eval`]);
//! - with Sentinel ([`Endpoint::Sentinel`]), the master is asked of the
//!   sentinels on every (re)connection and checked with `ROLE`, and a
//!   `READONLY` (or `MASTERDOWN`, `LOADING`) reply drops the connection so
//!   that the next call finds the new master after a failover.
//!
//! A failed call drops the connection; the next call reconnects.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionLike, IntoConnectionInfo, RedisConnectionInfo, Value};

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

    fn from_value(v: Value) -> Self {
        match v {
            Value::Nil => Self::Bulk(None),
            Value::Int(i) => Self::Int(i),
            Value::BulkString(b) => Self::Bulk(Some(b)),
            Value::Array(a) | Value::Set(a) => Self::Array(Some(a.into_iter().map(Self::from_value).collect())),
            Value::Map(m) => {
                Self::Array(Some(m.into_iter().flat_map(|(k, v)| [Self::from_value(k), Self::from_value(v)]).collect()))
            }
            Value::SimpleString(s) => Self::Status(s),
            Value::Okay => Self::Status("OK".into()),
            Value::Attribute { data, .. } => Self::from_value(*data),
            Value::Boolean(b) => Self::Int(i64::from(b)),
            Value::VerbatimString { text, .. } => Self::Bulk(Some(text.into_bytes())),
            Value::ServerError(e) => {
                Self::Error(e.details().map_or_else(|| e.code().to_owned(), |d| format!("{} {d}", e.code())))
            }
            other => Self::Status(format!("{other:?}")),
        }
    }

    /// An error reply that means this server is not (or no longer) the
    /// writable master: find the master again.
    fn means_not_master(&self) -> bool {
        matches!(self, Self::Error(e) if ["READONLY", "MASTERDOWN", "LOADING"].iter().any(|p| e.starts_with(p)))
    }
}

/// Where the Redis master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One server (`ha.redis`): host and port.
    Direct(String, u16),
    /// Asked of these sentinels (`ha.sentinels`) for `master_name`.
    Sentinel {
        /// The sentinels, tried in order; the one that answered moves first.
        sentinels: Vec<SocketAddr>,
        /// `ha.master_name`.
        master_name: String,
    },
}

/// How to reach Redis: the endpoint, AUTH and TLS (`[ha]` `redis`,
/// `sentinels`, `redis_username`, `redis_password`, `redis_tls`,
/// `redis_ca_file`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// The server, or the sentinels to ask for it.
    pub endpoint: Endpoint,
    /// ACL user (`AUTH user password`); `None`: `AUTH password` alone.
    pub username: Option<String>,
    /// `AUTH` password; `None`: no `AUTH`.
    pub password: Option<String>,
    /// TLS to the servers and the sentinels.
    pub tls: bool,
    /// PEM CA certificates to verify the servers with; `None`: the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("endpoint", &self.endpoint)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("tls", &self.tls)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.endpoint {
            Endpoint::Direct(host, port) => write!(f, "{scheme}://{host}:{port}"),
            Endpoint::Sentinel { sentinels, master_name } => {
                let list: Vec<String> = sentinels.iter().map(ToString::to_string).collect();
                write!(f, "{scheme} master `{master_name}` via sentinels {}", list.join(","))
            }
        }
    }
}

impl From<SocketAddr> for RedisTarget {
    /// One plain server without AUTH.
    fn from(a: SocketAddr) -> Self {
        Self {
            endpoint: Endpoint::Direct(a.ip().to_string(), a.port()),
            username: None,
            password: None,
            tls: false,
            ca_pem: None,
        }
    }
}

/// What is left until `deadline` (at least 10 ms, so that a late step
/// still gets one try).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))
}

fn err(e: &redis::RedisError) -> io::Error {
    let kind = if e.is_timeout() { io::ErrorKind::TimedOut } else { io::ErrorKind::Other };
    io::Error::new(kind, format!("redis: {e}"))
}

impl RedisTarget {
    /// A client for `host:port`, with this target's AUTH (`with_auth`) and TLS.
    fn client(&self, host: &str, port: u16, with_auth: bool) -> io::Result<redis::Client> {
        let mut info = (host, port).into_connection_info().map_err(|e| err(&e))?;
        if self.tls {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            });
        }
        if with_auth {
            let mut r = RedisConnectionInfo::default();
            if let Some(u) = &self.username {
                r = r.set_username(u);
            }
            if let Some(p) = &self.password {
                r = r.set_password(p);
            }
            info = info.set_redis_settings(r);
        }
        match (&self.ca_pem, self.tls) {
            (Some(ca), true) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) },
            ),
            _ => redis::Client::open(info),
        }
        .map_err(|e| err(&e))
    }
}

/// One connection.
pub struct Redis {
    target: RedisTarget,
    timeout: Duration,
    conn: Option<redis::Connection>,
    /// The master last found through the sentinels (for the logs).
    master: Option<(String, u16)>,
}

/// A Lua script, sent by its SHA1.
pub struct Script {
    inner: redis::Script,
    code: &'static str,
}

impl Script {
    /// The script `code` and its hash.
    #[must_use]
    pub fn new(code: &'static str) -> Self {
        Self { inner: redis::Script::new(code), code }
    }
}

impl Redis {
    /// A client for `target`; it connects on first use. `timeout` bounds
    /// each connect, write and read (and the whole sentinel round).
    #[must_use]
    pub fn new(target: impl Into<RedisTarget>, timeout: Duration) -> Self {
        Self { target: target.into(), timeout, conn: None, master: None }
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

    /// Asks the sentinels for the master, each with what is left of one
    /// timeout; the first that answers moves to the front.
    fn discover(&mut self, deadline: Instant) -> io::Result<(String, u16)> {
        let Endpoint::Sentinel { sentinels, master_name } = &self.target.endpoint else {
            return Err(io::Error::other("not a sentinel endpoint"));
        };
        let (sentinels, master_name) = (sentinels.clone(), master_name.clone());
        let mut last = io::Error::other("no sentinel configured");
        for (i, s) in sentinels.iter().enumerate() {
            match self.ask_sentinel(*s, &master_name, left(deadline)) {
                Ok(m) => {
                    if let Endpoint::Sentinel { sentinels, .. } = &mut self.target.endpoint {
                        sentinels[..=i].rotate_right(1);
                    }
                    return Ok(m);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `SENTINEL get-master-addr-by-name` on one sentinel (TLS as for the
    /// servers, no AUTH).
    fn ask_sentinel(&self, s: SocketAddr, master_name: &str, timeout: Duration) -> io::Result<(String, u16)> {
        let client = self.target.client(&s.ip().to_string(), s.port(), false)?;
        let mut conn = client.get_connection_with_timeout(timeout).map_err(|e| err(&e))?;
        conn.set_read_timeout(Some(timeout)).map_err(|e| err(&e))?;
        conn.set_write_timeout(Some(timeout)).map_err(|e| err(&e))?;
        let v: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master_name)
            .query(&mut conn)
            .map_err(|e| err(&e))?;
        v.ok_or_else(|| io::Error::other(format!("sentinel {s} knows no master `{master_name}`")))
    }

    /// Connects (asking the sentinels first), all within one timeout.
    fn connect(&mut self) -> io::Result<redis::Connection> {
        let deadline = Instant::now() + self.timeout;
        let sentinel = matches!(self.target.endpoint, Endpoint::Sentinel { .. });
        let (host, port) = match &self.target.endpoint {
            Endpoint::Direct(h, p) => (h.clone(), *p),
            Endpoint::Sentinel { .. } => self.discover(deadline)?,
        };
        let client = self.target.client(&host, port, true)?;
        let mut c = client.get_connection_with_timeout(left(deadline)).map_err(|e| err(&e))?;
        if sentinel {
            // The sentinels may still name a demoted master.
            c.set_read_timeout(Some(left(deadline))).map_err(|e| err(&e))?;
            let role: Vec<Value> = redis::cmd("ROLE").query(&mut c).map_err(|e| err(&e))?;
            if !matches!(role.first(), Some(Value::BulkString(r)) if r == b"master") {
                return Err(io::Error::other(format!("{host}:{port} is not a master (yet)")));
            }
            if self.master.as_ref() != Some(&(host.clone(), port)) {
                tracing::info!(master = %format!("{host}:{port}"), "HA: Redis master found through Sentinel");
                self.master = Some((host, port));
            }
        }
        c.set_read_timeout(Some(self.timeout)).map_err(|e| err(&e))?;
        c.set_write_timeout(Some(self.timeout)).map_err(|e| err(&e))?;
        Ok(c)
    }

    /// Sends several commands in one write and reads their replies. Any I/O
    /// error drops the connection; so does a reply saying this server is
    /// not the master.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        let mut p = redis::pipe();
        for c in cmds {
            let mut cmd = redis::Cmd::new();
            for a in c {
                cmd.arg(a.as_slice());
            }
            p.add_command(cmd);
        }
        let packed = p.get_packed_pipeline();
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let c = self.conn.as_mut().ok_or_else(|| io::Error::other("not connected"))?;
        match c.req_packed_commands(&packed, 0, cmds.len()) {
            Ok(v) => {
                let replies: Vec<Reply> = v.into_iter().map(Reply::from_value).collect();
                if replies.iter().any(Reply::means_not_master) {
                    self.conn = None;
                }
                Ok(replies)
            }
            Err(e) => {
                self.conn = None;
                Err(err(&e))
            }
        }
    }

    /// One command.
    ///
    /// # Errors
    /// Connection, timeout or protocol errors; a Redis error reply is `Ok(Reply::Error)`.
    pub fn cmd(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let v: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
        self.pipeline(&[v])?.pop().ok_or_else(|| io::Error::other("redis: no reply"))
    }

    /// Runs `script` by its SHA1 (`EVALSHA`), loading it first when the
    /// server does not have it (`NOSCRIPT`, e.g. after a restart or a
    /// failover).
    ///
    /// # Errors
    /// As [`pipeline`](Self::pipeline); a Redis error reply is `Ok(Reply::Error)`.
    pub fn eval(&mut self, script: &Script, keys: &[&[u8]], args: &[&[u8]]) -> io::Result<Reply> {
        let mut cmd: Vec<Vec<u8>> = vec![b"EVALSHA".to_vec(), script.inner.get_hash().as_bytes().to_vec()];
        cmd.push(keys.len().to_string().into_bytes());
        cmd.extend(keys.iter().chain(args).map(|a| a.to_vec()));
        let r = self.pipeline(std::slice::from_ref(&cmd))?.pop().ok_or_else(|| io::Error::other("redis: no reply"))?;
        if !matches!(&r, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
            return Ok(r);
        }
        let load = vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), script.code.as_bytes().to_vec()];
        self.pipeline(&[load, cmd])?.pop().ok_or_else(|| io::Error::other("redis: no reply"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_every_reply_type() {
        assert_eq!(Reply::from_value(Value::Okay), Reply::Status("OK".into()));
        assert_eq!(Reply::from_value(Value::Int(42)).as_int(), Some(42));
        assert_eq!(Reply::from_value(Value::BulkString(b"abc".to_vec())).as_text().as_deref(), Some("abc"));
        assert_eq!(Reply::from_value(Value::Nil), Reply::Bulk(None));
        let a = Reply::from_value(Value::Array(vec![Value::Int(1), Value::BulkString(Vec::new())]));
        assert_eq!(a.items(), &[Reply::Int(1), Reply::Bulk(Some(Vec::new()))]);
    }

    #[test]
    fn readonly_and_masterdown_mean_find_the_master_again() {
        assert!(Reply::Error("READONLY You can't write against a read only replica.".into()).means_not_master());
        assert!(Reply::Error("MASTERDOWN Link with MASTER is down".into()).means_not_master());
        assert!(!Reply::Error("ERR unknown command".into()).means_not_master());
        assert!(!Reply::Int(1).means_not_master());
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let mut t = RedisTarget::from("127.0.0.1:6379".parse::<SocketAddr>().unwrap_or_else(|_| unreachable!()));
        t.password = Some("hunter2".into());
        assert!(!format!("{t:?}").contains("hunter2"));
        assert_eq!(t.to_string(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn an_unreachable_server_fails_within_the_timeout() {
        // A port nobody listens on (bound then closed).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(l);
        let t0 = Instant::now();
        let mut r = Redis::new(addr, Duration::from_millis(200));
        assert!(r.cmd(&[b"PING"]).is_err());
        assert!(!r.connected());
        let s = RedisTarget {
            endpoint: Endpoint::Sentinel { sentinels: vec![addr, addr], master_name: "m".into() },
            ..RedisTarget::from(addr)
        };
        let mut r = Redis::new(s, Duration::from_millis(200));
        assert!(r.cmd(&[b"PING"]).is_err());
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
