//! The rtpengine "ng" control protocol over UDP (`"<cookie> <bencode>"`):
//! [`NgClient`] sends commands with unique cookies and retries, and
//! [`NgTap`] sits between a signalling peer and the relay and records
//! every exchange.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use crate::bencode::render;
use crate::bencode::{self, Value};
use crate::wait_until;

/// An rtpengine "ng" control-protocol client (UDP, `"<cookie> <bencode>"`).
///
/// Cookies are unique per process run (pid, start time and a counter), so a
/// relay's reply cache never answers a new command with an old reply.
/// A lost datagram is retried with the same cookie, which makes the retry
/// idempotent on rtpengine-compatible relays.
pub struct NgClient {
    sock: UdpSocket,
    server: SocketAddr,
    prefix: String,
    counter: AtomicU64,
    /// Per-attempt receive timeout.
    pub timeout: Duration,
    /// Attempts per command (first send included).
    pub attempts: u32,
}

impl NgClient {
    /// A client for the ng listener at `server` (e.g. `127.0.0.1:2223`).
    pub fn new(server: impl ToSocketAddrs) -> NgClient {
        let server = server.to_socket_addrs().ok().and_then(|mut a| a.next()).expect("ng server address must resolve");
        let bind = if server.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let sock = UdpSocket::bind(bind).expect("bind ng client socket");
        NgClient {
            sock,
            server,
            prefix: format!("t{}", crate::unique_suffix().replace('-', "_")),
            counter: AtomicU64::new(0),
            timeout: Duration::from_millis(500),
            attempts: 4,
        }
    }

    /// The relay address this client talks to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `dict` and returns the decoded reply dictionary, or an error
    /// after all attempts timed out (or the reply did not parse).
    pub fn try_cmd(&self, dict: &Value) -> Result<Value, String> {
        let cookie = format!("{}_{}", self.prefix, self.counter.fetch_add(1, Ordering::Relaxed));
        let mut msg = Vec::with_capacity(256);
        msg.extend_from_slice(cookie.as_bytes());
        msg.push(b' ');
        msg.extend_from_slice(&dict.to_bytes());
        let mut buf = vec![0u8; 65_536];
        for _ in 0..self.attempts.max(1) {
            self.sock.send_to(&msg, self.server).map_err(|e| format!("ng send: {e}"))?;
            let deadline = Instant::now() + self.timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
                let n = match self.sock.recv_from(&mut buf) {
                    Ok((n, from)) if from == self.server => n,
                    Ok(_) => continue,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                    // ECONNREFUSED from an earlier send: nobody listening (yet).
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                        break;
                    }
                    Err(e) => return Err(format!("ng recv: {e}")),
                };
                let reply = &buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    continue;
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue; // a late reply to an earlier command or attempt
                }
                return bencode::decode(&reply[space + 1..])
                    .map_err(|e| format!("ng reply does not decode ({e}): {:?}", String::from_utf8_lossy(reply)));
            }
        }
        Err(format!("no ng reply from {} after {} attempts", self.server, self.attempts))
    }

    /// Like [`NgClient::try_cmd`] but panics on failure.
    pub fn cmd(&self, dict: Value) -> Value {
        self.try_cmd(&dict).unwrap_or_else(|e| panic!("ng {}: {e}", describe_cmd(&dict)))
    }

    /// `{command: ping}` answered with `{result: pong}`.
    pub fn ping(&self) -> bool {
        let mut d = Value::dict();
        d.insert("command", "ping".into());
        matches!(self.try_cmd(&d), Ok(r) if r.get("result").and_then(Value::as_str) == Some("pong"))
    }
}

fn describe_cmd(dict: &Value) -> String {
    dict.get("command").and_then(Value::as_str).unwrap_or("<no command>").to_string()
}

/// An `offer` or `answer` (or any command carrying SDP) as an ng
/// dictionary: `command`, `call-id`, `from-tag`, `to-tag` if given, `sdp`,
/// in that order. Add more keys with [`Value::insert`].
pub fn sdp_command(command: &str, call_id: &str, from_tag: &str, to_tag: Option<&str>, sdp: &str) -> Value {
    let mut d = Value::dict();
    d.insert("command", command.into()).insert("call-id", call_id.into()).insert("from-tag", from_tag.into());
    if let Some(to) = to_tag {
        d.insert("to-tag", to.into());
    }
    d.insert("sdp", sdp.into());
    d
}

/// Waits until the ng listener at `addr` answers `ping` with `pong`.
pub fn wait_for_udp_ng(addr: SocketAddr, timeout: Duration) -> bool {
    let mut client = NgClient::new(addr);
    client.timeout = Duration::from_millis(200);
    client.attempts = 1;
    wait_until(timeout, Duration::from_millis(50), || client.ping())
}

/// One ng command seen by an [`NgTap`], with the relay's reply if one came.
#[derive(Clone, Debug)]
pub struct NgExchange {
    /// The cookie.
    pub cookie: String,
    /// Where the command came from (the ng client, e.g. a Kamailio worker).
    pub client: SocketAddr,
    /// The decoded command dictionary (`None` if it did not decode).
    pub command: Option<Value>,
    /// The raw command datagram.
    pub raw_command: Vec<u8>,
    /// The decoded reply (the latest, if the command was retransmitted).
    pub reply: Option<Value>,
}

impl NgExchange {
    /// The `command` key of the command, e.g. `"offer"`.
    pub fn name(&self) -> Option<&str> {
        self.command.as_ref()?.get("command")?.as_str()
    }

    /// A string key of the command, e.g. `"call-id"`.
    pub fn key(&self, key: &str) -> Option<&str> {
        self.command.as_ref()?.get(key)?.as_str()
    }

    /// The `result` key of the reply, e.g. `"ok"`.
    pub fn result(&self) -> Option<&str> {
        self.reply.as_ref()?.get("result")?.as_str()
    }
}

/// A transparent ng proxy: clients send to [`NgTap::addr`], datagrams are
/// forwarded unchanged to the relay, replies are routed back by cookie, and
/// every exchange is recorded. Lets a test assert which commands a
/// signalling peer (Kamailio) really sent.
pub struct NgTap {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<NgExchange>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn split_cookie(datagram: &[u8]) -> Option<(String, &[u8])> {
    let space = datagram.iter().position(|&b| b == b' ')?;
    let cookie = std::str::from_utf8(&datagram[..space]).ok()?.to_string();
    Some((cookie, &datagram[space + 1..]))
}

impl NgTap {
    /// Starts forwarding to `relay`.
    pub fn start(relay: SocketAddr) -> NgTap {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind ng tap");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind ng tap upstream");
        let addr = front.local_addr().expect("tap addr");
        let poll = Some(Duration::from_millis(100));
        front.set_read_timeout(poll).expect("timeout");
        back.set_read_timeout(poll).expect("timeout");
        let log: Arc<Mutex<Vec<NgExchange>>> = Arc::default();
        let clients: Arc<Mutex<HashMap<String, SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));

        let forward = {
            let (front, back) = (front.try_clone().expect("clone"), back.try_clone().expect("clone"));
            let (log, clients, stop) = (log.clone(), clients.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, client)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    let datagram = &buf[..n];
                    if let Some((cookie, body)) = split_cookie(datagram) {
                        let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        if !clients.contains_key(&cookie) {
                            log.push(NgExchange {
                                cookie: cookie.clone(),
                                client,
                                command: bencode::decode(body).ok(),
                                raw_command: datagram.to_vec(),
                                reply: None,
                            });
                        }
                        clients.insert(cookie, client);
                    }
                    let _ = back.send_to(datagram, relay);
                }
            })
        };
        let reverse = {
            let (log, clients, stop) = (log.clone(), clients, stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, _)) = back.recv_from(&mut buf) else {
                        continue;
                    };
                    let datagram = &buf[..n];
                    let Some((cookie, body)) = split_cookie(datagram) else {
                        continue;
                    };
                    let client = clients.lock().unwrap_or_else(|e| e.into_inner()).get(&cookie).copied();
                    if let Some(client) = client {
                        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(x) = log.iter_mut().rev().find(|x| x.cookie == cookie) {
                            x.reply = bencode::decode(body).ok();
                        }
                        drop(log);
                        let _ = front.send_to(datagram, client);
                    }
                }
            })
        };
        NgTap { addr, log, stop, threads: vec![forward, reverse] }
    }

    /// Where ng clients should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Everything recorded so far, in arrival order.
    pub fn exchanges(&self) -> Vec<NgExchange> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for NgTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
