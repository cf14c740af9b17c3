//! The source guard in a real sbc over loopback: an INVITE flood from one
//! address is limited and then banned while a second caller's calls (real
//! sipp, another 127.0.0.x address) all complete; `sbc ctl ban`, `bans`
//! and `unban` end to end, over UDP and TCP; and ban replication through
//! a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sbc::guard::replica::BanReplica;
use support::{Ports, Sbc};
use testkit::{ChildGuard, Sipp, TestDir};

/// The trunk (sipp UAS) listens here: a trunk's address is exempt.
const UAS_IP: &str = "127.0.0.3";
/// The flooding caller.
const FLOOD_IP: &str = "127.0.0.2";
/// The legitimate caller.
const CALLER_IP: &str = "127.0.0.4";

fn config(dir: &TestDir, p: &Ports, guard: &str) -> String {
    format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\ntcp = true\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"uas\"\naddress = \"{UAS_IP}:{}\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"uas\"]\n\
         [health]\ninterval_ms = 0\n[cdr]\nfile = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{}\"\n\
         [control]\nsocket = \"{}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {}\nport_max = {}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n\
         [guard]\n{guard}\n",
        p.sip,
        p.a,
        dir.join("cdr.jsonl").display(),
        p.metrics,
        dir.join("ctl.sock").display(),
        p.relay,
        p.relay + 999
    )
}

fn relay_base() -> u16 {
    20000 + (std::process::id() % 8) as u16 * 1000
}

/// Sends an OPTIONS from `ip` to the sbc; whether an answer came within 1 s.
fn answered_from(ip: &str, sbc: SocketAddr) -> bool {
    let s = UdpSocket::bind((ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let port = s.local_addr().unwrap().port();
    let m = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{port};branch=z9hG4bKg{port}\r\nMax-Forwards: 70\r\n\
         From: <sip:t@{ip}>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: g{port}@{ip}\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    s.send_to(m.as_bytes(), sbc).unwrap();
    let mut buf = [0u8; 2048];
    s.recv(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"SIP/2.0 200"))
}

/// Opens a TCP connection from `ip` to the sbc; whether it stays open (a
/// read times out) rather than being closed at once.
fn tcp_stays_open_from(ip: &str, sbc: SocketAddr) -> bool {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(ip.parse().unwrap(), 0).into()).unwrap();
    s.connect(&sbc.into()).unwrap();
    let mut t: std::net::TcpStream = s.into();
    t.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut b = [0u8; 16];
    matches!(t.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
}

#[test]
fn a_flood_is_banned_while_another_callers_calls_complete() {
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("sbc-guard-flood");
    let p = Ports::new(relay_base());
    let guard = "invite_per_s = 20\ninvite_burst = 20\nban_after_rate_drops = 50\nban_time_s = 120";
    let sbc = Sbc::start(&dir, &p, &config(&dir, &p, guard), None);
    let _uas = sipp.cmd(dir.path()).sn("uas").local(UAS_IP, p.a).timeout_s(120).spawn("uas");
    std::thread::sleep(Duration::from_millis(300));
    // The attacker: 300 INVITEs a second from one address, far past its
    // limit (its calls are short: sipp's built-in uac hangs up at once).
    let flood = sipp
        .cmd(dir.path())
        .sn("uac")
        .remote(sbc.sip)
        .arg("-s")
        .arg("1000")
        .local(FLOOD_IP, testkit::ports::free_sip_port())
        .rate(300)
        .calls(1500)
        .timeout_s(15)
        .spawn("flood");
    std::thread::sleep(Duration::from_millis(500));
    // The legitimate caller, at the same time, at 10 calls a second.
    let ok = sipp
        .cmd(dir.path())
        .sn("uac")
        .remote(sbc.sip)
        .arg("-s")
        .arg("2000")
        .local(CALLER_IP, p.uac)
        .rate(10)
        .calls(40)
        .timeout_s(60)
        .timeout_error()
        .run_ok("caller", Duration::from_secs(90));
    drop(flood);
    assert!(ok, "every call of the second caller completed");
    let bans = sbc.ctl("bans");
    let line = bans.lines().find(|l| l.starts_with(&format!("{FLOOD_IP}/32")));
    assert!(line.is_some_and(|l| l.contains("rate")), "the flooder is banned for its rate:\n{bans}");
    assert!(!bans.contains(CALLER_IP), "the caller is not banned:\n{bans}");
    assert!(sbc.metric("sbc_guard_dropped_total", &[("reason", "invite_rate")]) >= 50.0);
    assert!(sbc.metric("sbc_guard_dropped_total", &[("reason", "banned")]) > 0.0, "the flood went on, and was dropped");
    assert_eq!(sbc.metric("sbc_guard_bans_total", &[("reason", "rate")]), 1.0);
    assert_eq!(sbc.metric("sbc_guard_bans_active", &[]), 1.0);
    assert!(!answered_from(FLOOD_IP, sbc.sip), "everything from the flooder is dropped");
    assert!(answered_from(CALLER_IP, sbc.sip));
    let log = sbc.log();
    assert!(log.contains("guard: source banned") && log.contains(FLOOD_IP), "the ban is logged");
}

#[test]
fn ctl_ban_list_and_unban_over_udp_and_tcp() {
    let dir = TestDir::new("sbc-guard-ctl");
    let p = Ports::new(relay_base() + 500);
    let sbc = Sbc::start(&dir, &p, &config(&dir, &p, "never_ban = [\"127.0.0.9\"]"), None);
    let target = "127.0.0.5";
    assert!(answered_from(target, sbc.sip));
    assert!(tcp_stays_open_from(target, sbc.sip));
    let reply = sbc.ctl("ban 127.0.0.5 --for 10m");
    assert_eq!(reply, "ok: 127.0.0.5/32 banned for 600s\n");
    let bans = sbc.ctl("bans");
    let line = bans.lines().find(|l| l.starts_with("127.0.0.5/32")).unwrap_or_default();
    assert!(line.contains("manual") && (595..=600).any(|s| line.contains(&format!(" {s} "))), "{bans}");
    assert!(!answered_from(target, sbc.sip), "UDP from a banned address is dropped");
    assert!(!tcp_stays_open_from(target, sbc.sip), "a TCP connection from it is closed at accept");
    assert!(answered_from("127.0.0.6", sbc.sip), "others are answered");
    assert!(sbc.metric("sbc_guard_dropped_total", &[("reason", "banned")]) >= 2.0);
    let refused = sbc.ctl("ban 127.0.0.9");
    assert!(refused.contains("never_ban"), "{refused}");
    assert_eq!(sbc.ctl("unban 127.0.0.5"), "ok: 127.0.0.5/32 unbanned\n");
    assert!(answered_from(target, sbc.sip));
    assert_eq!(sbc.metric("sbc_guard_bans_active", &[]), 0.0);
    let log = sbc.log();
    assert!(log.contains("audit: operator banned 127.0.0.5/32"), "{log}");
    assert!(log.contains("audit: operator unbanned 127.0.0.5/32"), "{log}");
    assert!(log.contains("audit: operator ban refused"), "{log}");
}

/// A redis-server on a free loopback port.
fn redis(dir: &TestDir) -> Option<(ChildGuard, SocketAddr)> {
    let bin = testkit::env::require_binary("redis-server")?;
    let port = testkit::ports::free_tcp_port();
    let mut cmd = std::process::Command::new(bin);
    let port_s = port.to_string();
    cmd.args(["--bind", "127.0.0.1", "--port", &port_s, "--save", "", "--appendonly", "no"]);
    let child = ChildGuard::spawn("redis", &mut cmd, dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let up = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    assert!(up, "redis-server did not start");
    Some((child, addr))
}

fn wait_loaded(r: &BanReplica) -> Vec<sbc::guard::BanRecord> {
    r.request_load();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = r.try_loaded() {
            return v;
        }
        assert!(Instant::now() < until, "no load from Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bans_are_replicated_through_redis_and_survive_a_new_node() {
    let dir = TestDir::new("sbc-guard-redis");
    let Some((_redis, addr)) = redis(&dir) else { return };
    let cfg = sbc::config::Config::from_toml(
        &(sbc::config::DEFAULT_TOML.to_owned() + "\n[guard]\nban_time_s = 300\nnever_ban = [\"10.9.0.0/16\"]\n"),
    )
    .unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let prefix = format!("xsbc-guard-test-{}", std::process::id());
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let now = Instant::now();

    // The active node bans two sources and lifts one.
    let a = BanReplica::spawn(addr, &prefix, Arc::clone(&shutdown)).unwrap();
    let mut ga = sbc::guard::Guard::new(&cfg, Arc::new(sbc::metrics::SbcMetrics::default()), now, unix);
    ga.track_changes();
    let scanner = b"OPTIONS sip:x SIP/2.0\r\nUser-Agent: sipvicious\r\n\r\n";
    assert!(!ga.check("192.0.2.1".parse().unwrap(), scanner, now));
    assert!(!ga.check("192.0.2.2".parse().unwrap(), scanner, now));
    assert!(ga.control("ban 198.51.100.0/24 --for 1h", now).unwrap().starts_with("ok"));
    assert!(ga.control("unban 192.0.2.2", now).unwrap().starts_with("ok"));
    for c in ga.take_changes() {
        a.send(c);
    }
    let mut loaded = wait_loaded(&a);
    loaded.sort_by(|x, y| x.net.cmp(&y.net));
    let nets: Vec<&str> = loaded.iter().map(|r| r.net.as_str()).collect();
    assert_eq!(nets, vec!["192.0.2.1/32", "198.51.100.0/24"], "placed bans are in Redis, the lifted one is not");
    assert_eq!(loaded[0].reason, "scanner");
    assert_eq!(loaded[0].until, unix + 300, "the absolute expiry");

    // A new node (the standby taking over) loads them and enforces them.
    let b = BanReplica::spawn(addr, &prefix, Arc::clone(&shutdown)).unwrap();
    let later = now + Duration::from_secs(100);
    let mut gb = sbc::guard::Guard::new(&cfg, Arc::new(sbc::metrics::SbcMetrics::default()), later, unix + 100);
    gb.track_changes();
    gb.load_asked(later);
    assert_eq!(gb.import(&wait_loaded(&b), later), 2);
    assert!(!gb.check("192.0.2.1".parse().unwrap(), b"OPTIONS sip:x SIP/2.0\r\n\r\n", later));
    assert!(!gb.check("198.51.100.77".parse().unwrap(), b"OPTIONS sip:x SIP/2.0\r\n\r\n", later));
    let left = gb.ban_of("192.0.2.1".parse().unwrap()).map(|x| x.until.duration_since(later).as_secs());
    assert_eq!(left, Some(200), "the ban keeps its end, not a fresh ban_time");
    // Its expiry is replicated too.
    gb.tick(later + Duration::from_secs(200));
    for c in gb.take_changes() {
        b.send(c);
    }
    let nets: Vec<String> = wait_loaded(&b).into_iter().map(|r| r.net).collect();
    assert_eq!(nets, vec!["198.51.100.0/24".to_string()], "the expired ban left Redis");
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
}
