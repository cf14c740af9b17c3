//! Shared helpers for media-relay integration tests.
//!
//! Each integration test crate pulls this in with `mod common;`, so not every
//! helper is used by every test (hence the `dead_code` allowance).
//!
//! What is here:
//! - [`ChildGuard`]: a spawned process whose stdout/stderr go to files and
//!   which is always stopped (SIGTERM, then SIGKILL) and reaped on drop; if
//!   the test is failing, the tail of its logs is printed.
//! - [`TestDir`]: a scratch directory under `std::env::temp_dir()`, removed
//!   on success and kept (path printed) on failure or with `XSBC_KEEP_TMP=1`.
//! - [`NgClient`]: an rtpengine "ng" protocol client over UDP
//!   (`"<cookie> <bencoded dict>"`), with unique cookies and retries.
//! - Port pickers, [`wait_until`], [`find_binary`], [`wait_for_sip`],
//!   Prometheus text scraping ([`scrape_metrics`], [`metric_value`]) and
//!   [`write_rtp_pcap`] (a synthetic RTP capture for sipp's
//!   `play_pcap_audio`).

#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The ng codec: the crate's own `media_relay::bencode` (re-exported so tests
// can write `common::bencode::Value`).
pub use media_relay::bencode;

use bencode::Value;

// ---------------------------------------------------------------------------
// Time and polling
// ---------------------------------------------------------------------------

/// Polls `cond` every `every` until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), nanos, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `CI=true` (or `1`) in the environment: required tools must be present.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1") | Ok("TRUE") | Ok("True"))
}

// ---------------------------------------------------------------------------
// Scratch directory
// ---------------------------------------------------------------------------

/// A uniquely named scratch directory under `std::env::temp_dir()`.
///
/// Removed on drop when the test passed; kept (and its path printed) when
/// the thread is panicking or `XSBC_KEEP_TMP` is set.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `<tmp>/xsbc-<label>-<pid>-<nanos>-<n>`.
    pub fn new(label: &str) -> TestDir {
        let path = std::env::temp_dir().join(format!("xsbc-{label}-{}", unique_suffix()));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, contents).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("XSBC_KEEP_TMP").is_some() {
            eprintln!("[test] keeping scratch dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Sends `sig` to `pid` (or, if `pid` is negative, to that process group).
#[allow(unsafe_code)]
fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers and has no memory-safety
    // preconditions; it is only ever called with ids of processes (or the
    // process group) this guard spawned and has not yet reaped.
    let _ = unsafe { libc::kill(pid, sig) };
}

/// A spawned child that is always stopped and reaped.
///
/// stdout and stderr go to `<dir>/<name>.stdout` / `<name>.stderr`. On drop
/// the child gets SIGTERM, then SIGKILL after a grace period, and is waited
/// for. With [`ChildGuard::spawn_group`] the child leads its own process
/// group and the signals go to the whole group (for daemons that fork
/// workers, such as Kamailio). If the test is panicking, the tail of both
/// logs is printed.
pub struct ChildGuard {
    name: String,
    child: Child,
    group: bool,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with output captured to files in `dir`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> ChildGuard {
        Self::spawn_inner(name, cmd, dir, false)
    }

    /// Like [`ChildGuard::spawn`], but the child gets its own process group
    /// and signals on drop go to that whole group.
    pub fn spawn_group(name: &str, cmd: &mut Command, dir: &Path) -> ChildGuard {
        Self::spawn_inner(name, cmd, dir, true)
    }

    fn spawn_inner(name: &str, cmd: &mut Command, dir: &Path, group: bool) -> ChildGuard {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let out = File::create(&stdout_path).unwrap_or_else(|e| panic!("create {}: {e}", stdout_path.display()));
        let err = File::create(&stderr_path).unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if group {
            cmd.process_group(0);
        }
        eprintln!("[test] starting {name}: {cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard { name: name.to_string(), child, group, stdout_path, stderr_path, status: None }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// The exit status if the child has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(20), || self.try_wait().is_some());
        self.status
    }

    /// Panics (with the log tail) if the child has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!("{} exited early with {status}\n{}", self.name, self.log_tail(40));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaps the child.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_some() {
            // The leader is gone; still sweep its group (workers may remain).
            if self.group {
                send_signal(-(self.pid() as i32), libc::SIGKILL);
            }
            return self.status;
        }
        let target = if self.group { -(self.pid() as i32) } else { self.pid() as i32 };
        send_signal(target, libc::SIGTERM);
        if self.wait_timeout(grace).is_none() {
            eprintln!("[test] {} ignored SIGTERM for {grace:?}; killing", self.name);
            send_signal(target, libc::SIGKILL);
            self.status = self.child.wait().ok();
        } else if self.group {
            // Make sure no worker outlives its leader.
            send_signal(target, libc::SIGKILL);
        }
        self.status
    }

    /// The last `lines` lines of stderr and stdout, labelled.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (label, path) in [("stderr", &self.stderr_path), ("stdout", &self.stdout_path)] {
            let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            let _ = writeln!(out, "----- {} {label} (last {} lines) -----", self.name, tail.len());
            for l in tail {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

/// Finds an executable by name in `$PATH` and the usual sbin directories
/// (Kamailio lives in /usr/sbin, often not in a non-root `$PATH`).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        dirs.push(PathBuf::from(extra));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// A UDP port on 127.0.0.1 that was free a moment ago (kernel-assigned).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr").port()
}

/// A port free for both UDP and TCP on 127.0.0.1 a moment ago (a SIP
/// listener binds both), chosen by the kernel so that concurrent test runs
/// on a shared machine do not collide.
pub fn free_sip_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
        let port = u.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether something is bound to UDP `127.0.0.1:port` (a bind attempt fails).
pub fn udp_port_in_use(port: u16) -> bool {
    UdpSocket::bind(("127.0.0.1", port)).is_err()
}

/// A TCP port on 127.0.0.1 that was free a moment ago (kernel-assigned).
pub fn free_tcp_port() -> u16 {
    let s = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral TCP port");
    s.local_addr().expect("local addr").port()
}

/// The first port of `len` consecutive UDP ports on 127.0.0.1 that were all
/// free a moment ago. The base is even and taken from 20000..32000, below
/// Linux's default ephemeral range, so ports handed out by
/// [`free_udp_port`] (here or in a concurrently running test) do not land
/// inside it; the starting point is derived from the pid and the clock so
/// that parallel tests start at different places.
pub fn free_udp_port_range(len: u16) -> u16 {
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    assert!(u32::from(len) < (HIGH - LOW) / 4, "port range too long");
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let mut seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    let span = HIGH - LOW - u32::from(len);
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let base = (LOW + (seed >> 8) % span) & !1;
        let base = base as u16;
        let all_free = (base..base + len).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free range of {len} UDP ports found in {LOW}..{HIGH}");
}

// ---------------------------------------------------------------------------
// ng protocol client
// ---------------------------------------------------------------------------

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
            prefix: format!("t{}", unique_suffix().replace('-', "_")),
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

/// Waits until the ng listener at `addr` answers `ping` with `pong`.
pub fn wait_for_udp_ng(addr: SocketAddr, timeout: Duration) -> bool {
    let mut client = NgClient::new(addr);
    client.timeout = Duration::from_millis(200);
    client.attempts = 1;
    wait_until(timeout, Duration::from_millis(50), || client.ping())
}

/// Renders a bencode value as compact JSON-like text, for logs and reports.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    render_into(v, &mut out);
    out
}

fn render_into(v: &Value, out: &mut String) {
    match v {
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Bytes(b) => {
            let _ = write!(out, "{:?}", String::from_utf8_lossy(b));
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_into(item, out);
            }
            out.push(']');
        }
        Value::Dict(items) => {
            out.push('{');
            for (i, (k, item)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{:?}: ", String::from_utf8_lossy(k));
                render_into(item, out);
            }
            out.push('}');
        }
    }
}

// ---------------------------------------------------------------------------
// ng tap: a transparent UDP proxy that records ng traffic
// ---------------------------------------------------------------------------

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
    log: std::sync::Arc<std::sync::Mutex<Vec<NgExchange>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn split_cookie(datagram: &[u8]) -> Option<(String, &[u8])> {
    let space = datagram.iter().position(|&b| b == b' ')?;
    let cookie = std::str::from_utf8(&datagram[..space]).ok()?.to_string();
    Some((cookie, &datagram[space + 1..]))
}

impl NgTap {
    /// Starts forwarding to `relay`.
    pub fn start(relay: SocketAddr) -> NgTap {
        use std::collections::HashMap;
        use std::sync::atomic::AtomicBool;
        use std::sync::{Arc, Mutex};

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

// ---------------------------------------------------------------------------
// SIP
// ---------------------------------------------------------------------------

/// Sends a SIP OPTIONS to `addr` over UDP and waits for any final `SIP/2.0`
/// response (the status line is returned), retrying until `timeout`.
pub fn sip_options(addr: SocketAddr, timeout: Duration) -> Option<String> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    let local = sock.local_addr().ok()?;
    let tag = unique_suffix().replace('-', "");
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{tag};rport\r\n\
         Max-Forwards: 10\r\n\
         From: <sip:probe@{local}>;tag={tag}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: probe-{tag}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let _ = sock.send_to(msg.as_bytes(), addr);
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let status = text.lines().next().unwrap_or_default().to_string();
            // Skip provisional responses; keep listening.
            if status.starts_with("SIP/2.0 ") && !status.starts_with("SIP/2.0 1") {
                return Some(status);
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

/// Waits until a SIP server at `addr` answers OPTIONS with a 200.
pub fn wait_for_sip(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(sip_options(addr, timeout), Some(s) if s.starts_with("SIP/2.0 200"))
}

// ---------------------------------------------------------------------------
// Prometheus text exposition scraping
// ---------------------------------------------------------------------------

/// One sample line of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// `GET http://<addr>/metrics` (plain HTTP/1.0) and parse the body.
pub fn scrape_metrics(addr: SocketAddr) -> Result<Vec<MetricSample>, String> {
    let body = http_get(addr, "/metrics")?;
    Ok(parse_metrics(&body))
}

/// A minimal HTTP/1.0 GET; returns the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| format!("malformed HTTP response from {addr}: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path} on {addr}: {status}"));
    }
    Ok(body.to_string())
}

/// Parses Prometheus text format sample lines (`name{k="v",...} value [ts]`);
/// comments and malformed lines are skipped.
pub fn parse_metrics(text: &str) -> Vec<MetricSample> {
    text.lines().filter_map(parse_metric_line).collect()
}

fn parse_metric_line(line: &str) -> Option<MetricSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut key = String::new();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    close = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    // Quoted value with \\, \" and \n escapes.
                    if chars.next().map(|(_, q)| q) != Some('"') {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            (_, '"') => break,
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, other) => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key).trim().to_string(), value));
                }
                other => key.push(other),
            }
        }
        rest = &after[close? + 1..];
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(MetricSample { name, labels, value })
}

/// The value of the sample named `name` whose labels include all of
/// `labels` (other labels may be present). With several matches, the first.
pub fn metric_value(samples: &[MetricSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
}

// ---------------------------------------------------------------------------
// Synthetic RTP capture
// ---------------------------------------------------------------------------

/// Writes a classic pcap file (Ethernet, microsecond timestamps) holding
/// `count` RTP packets of one stream: payload type `pt`, `payload_len`
/// payload bytes filled with `fill`, one every `ptime_ms` milliseconds, the
/// RTP timestamp advancing by `payload_len` (right for 8 kHz G.711).
/// Addresses and ports inside are placeholders: sipp's `play_pcap_audio`
/// replaces them with the call's media addresses.
pub fn write_rtp_pcap(path: &Path, count: u32, ptime_ms: u32, pt: u8, payload_len: usize, fill: u8) -> io::Result<()> {
    let mut out = Vec::new();
    // Global header: magic, v2.4, thiszone, sigfigs, snaplen, LINKTYPE_ETHERNET.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());

    let src_ip = [10u8, 0, 0, 1];
    let dst_ip = [10u8, 0, 0, 2];
    let (src_port, dst_port) = (40_000u16, 40_002u16);
    let ssrc = 0x5853_4243u32; // "XSBC"
    let start_secs = 1_700_000_000u32;
    for i in 0..count {
        let mut rtp = Vec::with_capacity(12 + payload_len);
        rtp.push(0x80); // V=2, no padding/extension/CSRC
        rtp.push(pt & 0x7f | if i == 0 { 0x80 } else { 0 }); // marker on the first
        rtp.extend_from_slice(&(i as u16).to_be_bytes());
        rtp.extend_from_slice(&(i.wrapping_mul(payload_len as u32)).to_be_bytes());
        rtp.extend_from_slice(&ssrc.to_be_bytes());
        rtp.resize(12 + payload_len, fill);

        let udp_len = (8 + rtp.len()) as u16;
        let ip_len = 20 + udp_len;
        let mut ip = Vec::with_capacity(20);
        ip.extend_from_slice(&[0x45, 0x00]);
        ip.extend_from_slice(&ip_len.to_be_bytes());
        ip.extend_from_slice(&(i as u16).to_be_bytes()); // identification
        ip.extend_from_slice(&[0x40, 0x00, 64, 17, 0, 0]); // DF, TTL 64, UDP, csum 0
        ip.extend_from_slice(&src_ip);
        ip.extend_from_slice(&dst_ip);
        let csum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&csum.to_be_bytes());

        let mut frame = Vec::with_capacity(14 + ip_len as usize);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]); // dst MAC
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]); // src MAC
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&src_port.to_be_bytes());
        frame.extend_from_slice(&dst_port.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes()); // UDP checksum: none
        frame.extend_from_slice(&rtp);

        let t_us = u64::from(i) * u64::from(ptime_ms) * 1000;
        out.extend_from_slice(&(start_secs + (t_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    fs::write(path, out)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The sum over all series of `name` whose labels include `labels` (e.g.
/// per-worker counters), scraped from `addr`. Panics if scraping fails.
pub fn metric_sum(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape_metrics(addr)
        .unwrap_or_else(|e| panic!("scraping {addr}: {e}"))
        .iter()
        .filter(|m| m.name == name && labels.iter().all(|(k, v)| m.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|m| m.value)
        .sum()
}

/// [`metric_sum`] for a spec written as Prometheus shows it:
/// `name{k="v",...}` (the labels may be a subset of the series' labels).
pub fn metric_spec(addr: SocketAddr, spec: &str) -> f64 {
    let (name, labels) = spec.split_once('{').unwrap_or((spec, ""));
    let want: Vec<(&str, &str)> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    metric_sum(addr, name, &want)
}

/// A binary the test needs: `None` (with a SKIPPED line) when it is missing,
/// and a panic instead under `CI=true`, where every test must run.
pub fn require_binary(name: &str) -> Option<PathBuf> {
    let found = find_binary(name);
    if found.is_none() {
        assert!(!in_ci(), "{name} must be installed under CI=true");
        eprintln!("SKIPPED: {name} is not installed");
    }
    found
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// The helpers' only `unsafe`: entering a network namespace.
#[allow(unsafe_code, reason = "setns(2) has no safe wrapper in std")]
mod netns_sys {
    use std::os::fd::AsRawFd;

    pub fn enter(path: &str) -> std::io::Result<()> {
        let ns = std::fs::File::open(path)?;
        // SAFETY: setns(2) takes an fd that `ns` keeps open for the call and
        // a flag; it changes this thread's namespace and touches no memory.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Moves the calling thread (only) into the network namespace at `path`
/// (e.g. `/run/netns/NAME`): sockets it creates afterwards live there.
pub fn enter_netns(path: &str) -> io::Result<()> {
    netns_sys::enter(path)
}

/// Reads up to `n` datagrams from `sock`, each within `wait` of the last
/// (or of the call); returns what arrived, with the senders.
pub fn recv_n(sock: &UdpSocket, n: usize, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).expect("setting a read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => out.push((buf[..len].to_vec(), from)),
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn metrics_lines_parse() {
        let text = "# HELP x y\n# TYPE a gauge\na 3\nb{media=\"both\",k=\"q\\\"x\"} 10 1700000000\nc{} 1.5e3\n";
        let m = parse_metrics(text);
        assert_eq!(metric_value(&m, "a", &[]), Some(3.0));
        assert_eq!(metric_value(&m, "b", &[("media", "both")]), Some(10.0));
        assert_eq!(m[1].labels[1], ("k".to_string(), "q\"x".to_string()));
        assert_eq!(metric_value(&m, "c", &[]), Some(1500.0));
        assert_eq!(metric_value(&m, "b", &[("media", "audio")]), None);
    }
}
