//! The relay on the `AF_XDP` datapath, end to end, in network namespaces
//! this test creates and removes:
//!
//! ```text
//! netns caller: ca 10.1.0.2/24 (+ 10.1.0.3, banned; 10.1.0.9, banned by
//!               the relay's config), fd00:1::2/64
//!    | veth
//! netns relay:  ra 10.1.0.1/24 fd00:1::1/64, rb 10.2.0.1/24 fd00:2::1/64,
//!               XDP + AF_XDP on both
//!    | veth
//! netns callee: eb 10.2.0.2/24 (+ 10.2.0.3, an intruder), fd00:2::2/64
//! ```
//!
//! A call is set up over ng with `direction: [a, b]` (and an IPv6 one over
//! `[a6, b6]`); RTP flows both ways
//! through the AF_XDP workers (checked with the XDP program's and the
//! relay's counters), latching and statistics match the socket datapath, a
//! stale copy of the program left attached is replaced, an
//! intruder is dropped, a banned source (put in the map by an operator's
//! tool, or by `relay.xdp_bans`) never reaches the worker, and deleting
//! the call stops forwarding. Another test sends the caller's media with
//! an 802.1Q tag (the kernel path, every packet relayed). Another test gives every veth two
//! queues: the senders spread flows over them by hash, as RSS does, and
//! every packet must still be relayed by its session's worker. Media
//! resumes after the egress link flaps, and frames the kernel completes
//! unsent when the egress veth loses its carrier are counted as drops. A
//! last test runs the relay without
//! privileges: with `datapath = "auto"` it says why and relays on sockets;
//! with `datapath = "xdp"` it exits with the reason.
//!
//! Needs root, `ip` and `ethtool`; prints `SKIPPED: ...` otherwise, and fails instead
//! under `CI=true`.
#![allow(clippy::unwrap_used, reason = "test code: a failed setup step should panic")]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use testkit::bencode::Value;
use testkit::netns::ip;
use testkit::ng::sdp_command;
use testkit::udp::recv_n;
use testkit::{skip, ChildGuard, Netns, NgClient, PacketSocket, TestDir};

const CALLER: &str = "10.1.0.2";
const BANNED: &str = "10.1.0.3";
/// Banned by the relay's configuration (`relay.xdp_bans`), as a /30.
const BANNED_BY_CONFIG: &str = "10.1.0.9";
const BANNED_PREFIX: &str = "10.1.0.8/30";
const RELAY_A: &str = "10.1.0.1";
const RELAY_B: &str = "10.2.0.1";
const CALLEE: &str = "10.2.0.2";
const INTRUDER: &str = "10.2.0.3";
const CALLER6: &str = "fd00:1::2";
const RELAY_A6: &str = "fd00:1::1";
const RELAY_B6: &str = "fd00:2::1";
const CALLEE6: &str = "fd00:2::2";

struct Lab {
    caller: Netns,
    relay: Netns,
    callee: Netns,
}

impl Lab {
    /// Builds the three namespaces, or says why it cannot. Each veth end
    /// has `queues` rx and tx queues: the sending end picks a queue by a
    /// hash of each flow's addresses and ports, as RSS does on a NIC.
    fn new(queues: u32) -> Result<Self, String> {
        let lab = Self { caller: Netns::new("xc")?, relay: Netns::new("xr")?, callee: Netns::new("xe")? };
        let (c, r, e) = (&lab.caller, &lab.relay, &lab.callee);
        r.veth("ra", c, "ca", Some(queues))?;
        r.veth("rb", e, "eb", Some(queues))?;
        for (ns, dev, addr) in [
            (r, "ra", RELAY_A),
            (r, "rb", RELAY_B),
            (c, "ca", CALLER),
            (c, "ca", BANNED),
            (c, "ca", BANNED_BY_CONFIG),
            (e, "eb", CALLEE),
            (e, "eb", INTRUDER),
        ] {
            ns.addr(dev, &format!("{addr}/24"))?;
        }
        for (ns, dev) in [(r, "ra"), (r, "rb"), (r, "lo"), (c, "ca"), (c, "lo"), (e, "eb"), (e, "lo")] {
            ns.up(dev)?;
        }
        c.ip(&["route", "add", "default", "via", RELAY_A])?;
        e.ip(&["route", "add", "default", "via", RELAY_B])?;
        for (ns, addr, dev) in [(r, RELAY_A6, "ra"), (r, RELAY_B6, "rb"), (c, CALLER6, "ca"), (e, CALLEE6, "eb")] {
            ns.addr(dev, &format!("{addr}/64"))?;
        }
        c.ip(&["-6", "route", "add", "default", "via", RELAY_A6])?;
        e.ip(&["-6", "route", "add", "default", "via", RELAY_B6])?;
        // A veth hands its peer frames whose UDP checksum holds only the
        // pseudo-header sum (checksum offload, CHECKSUM_PARTIAL); a wire
        // never carries those. The endpoints compute full checksums, as a
        // NIC would, so the relay's incremental update is checked for real.
        for (ns, dev) in [(c, "ca"), (e, "eb")] {
            ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
        }
        Ok(lab)
    }

    /// A UDP socket bound in `ns` (the thread returns to `back`).
    fn bind(ns: &Netns, addr: &str, back: &Netns) -> UdpSocket {
        ns.enter();
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        back.enter();
        s
    }
}

/// `extra`: more `[relay]` lines.
fn config(dir: &TestDir, datapath: &str, queues: u32, extra: &str) -> std::path::PathBuf {
    dir.write(
        "relay.toml",
        format!(
            "[relay]\ninterfaces = [\"a/{RELAY_A}\", \"b/{RELAY_B}\", \"a6/{RELAY_A6}\", \"b6/{RELAY_B6}\"]\nlisten_ng = \"127.0.0.1:22222\"\n\
             port_min = 30000\nport_max = 30099\nworkers = 1\ntimeout = 60\nmetrics = \"127.0.0.1:9101\"\n\
             log_level = \"info\"\ndatapath = \"{datapath}\"\nxdp_interfaces = [\"ra\", \"rb\"]\nxdp_queues = {queues}\n{extra}"
        ),
    )
}

/// Starts the relay in the relay namespace, optionally as `nobody`.
fn start_relay(lab: &Lab, dir: &TestDir, datapath: &str, unprivileged: bool) -> ChildGuard {
    start_relay_on(lab, dir, datapath, unprivileged, 1, "")
}

/// `queues`: the relay's `xdp_queues` (0: every rx queue of the interfaces).
fn start_relay_on(
    lab: &Lab,
    dir: &TestDir,
    datapath: &str,
    unprivileged: bool,
    queues: u32,
    extra: &str,
) -> ChildGuard {
    let cfg = config(dir, datapath, queues, extra);
    spawn_relay(lab, dir, &cfg, unprivileged)
}

/// Starts the relay in the relay namespace on the config file `cfg`.
fn spawn_relay(lab: &Lab, dir: &TestDir, cfg: &std::path::Path, unprivileged: bool) -> ChildGuard {
    let mut cmd = if unprivileged {
        let mut cmd = lab.relay.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]);
        cmd.arg(env!("CARGO_BIN_EXE_media-relay"));
        cmd
    } else {
        lab.relay.command(env!("CARGO_BIN_EXE_media-relay"))
    };
    cmd.arg("--config").arg(cfg);
    ChildGuard::spawn("media-relay", &mut cmd, dir.path())
}

fn s(v: &str) -> Value {
    Value::str(v)
}

fn dict(pairs: &[(&str, Value)]) -> Value {
    let mut d = Value::dict();
    for (k, v) in pairs {
        d.insert(k, v.clone());
    }
    d
}

fn sdp(addr: &str, port: u16) -> String {
    let family = if addr.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=- 1 1 IN {family} {addr}\r\ns=-\r\nc=IN {family} {addr}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
    )
}

fn media_port(v: &Value) -> u16 {
    let sdp = std::str::from_utf8(v.get("sdp").and_then(Value::as_bytes).unwrap()).unwrap();
    let m = sdp.lines().find(|l| l.starts_with("m=")).expect("m= line");
    m.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Offer from the caller (SDP at `a`), answer from the callee (`b`), with
/// the legs on interfaces a and b. Returns (port the caller sends to, port
/// the callee sends to).
fn setup_call(ng: &NgClient, call: &str, a: SocketAddr, b: SocketAddr) -> (u16, u16) {
    setup_call_between(ng, call, a, b, if a.is_ipv6() { ["a6", "b6"] } else { ["a", "b"] })
}

/// [`setup_call`] with the caller's and callee's relay interfaces named.
fn setup_call_between(ng: &NgClient, call: &str, a: SocketAddr, b: SocketAddr, sides: [&str; 2]) -> (u16, u16) {
    let mut offer = sdp_command("offer", call, "alice", None, &sdp(&a.ip().to_string(), a.port()));
    offer.insert("direction", Value::List(vec![s(sides[0]), s(sides[1])]));
    let offer = ng.cmd(offer);
    assert_eq!(offer.get("result").and_then(Value::as_str), Some("ok"), "{offer:?}");
    let to_b = media_port(&offer);
    let answer = ng.cmd(sdp_command("answer", call, "alice", Some("bob"), &sdp(&b.ip().to_string(), b.port())));
    assert_eq!(answer.get("result").and_then(Value::as_str), Some("ok"), "{answer:?}");
    (media_port(&answer), to_b)
}

/// An RTP packet with a 172-byte payload: a 214-byte Ethernet frame.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Sends `n` packets (a few at a time, as a phone would) and returns what
/// arrived at `to`.
fn relay_burst(
    from: &UdpSocket,
    dest: SocketAddr,
    to: &UdpSocket,
    first_seq: u16,
    n: u16,
    ssrc: u32,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let send = |seq| {
        from.send_to(&rtp(seq, ssrc), dest).unwrap();
    };
    burst_with(send, to, first_seq, n)
}

/// [`relay_burst`] with the sending done by `send(seq)`.
fn burst_with(mut send: impl FnMut(u16), to: &UdpSocket, first_seq: u16, n: u16) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut got = Vec::new();
    for seq in first_seq..first_seq + n {
        send(seq);
        if seq % 8 == 7 {
            got.extend(recv_n(to, 8, Duration::from_millis(500)));
        }
    }
    let left = usize::from(n).saturating_sub(got.len());
    got.extend(recv_n(to, left, Duration::from_secs(2)));
    got
}

fn metric(spec: &str) -> f64 {
    testkit::metrics::metric_spec("127.0.0.1:9101".parse().unwrap(), spec)
}

/// The relay's counters that say where packets went, for failure messages.
fn counters() -> String {
    let body = testkit::metrics::http_get("127.0.0.1:9101".parse().unwrap(), "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && (l.contains("xdp") || l.contains("drops") || l.contains("packets_")))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn stream_stats(q: &Value, tag: &str) -> Value {
    q.get("tags")
        .and_then(|t| t.get(tag))
        .and_then(|t| t.get("medias"))
        .and_then(|m| m.as_list()?.first().cloned())
        .and_then(|m| m.get("streams").and_then(|s| s.as_list()?.first().cloned()))
        .unwrap_or_else(|| panic!("no RTP stream for tag {tag} in {q:?}"))
}

fn stat(v: &Value, key: &str) -> i64 {
    v.get("stats").and_then(|s| s.get(key)).and_then(Value::as_int).unwrap_or(-999)
}

fn wait_ng(relay: &mut ChildGuard) -> NgClient {
    let ng = NgClient::new("127.0.0.1:22222");
    let up = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        relay.try_wait().is_some() || ng.ping()
    });
    assert!(up && relay.try_wait().is_none(), "relay did not come up:\n{}", relay.log_tail(30));
    ng
}

/// The relay's `bans` map on interface `dev` of the relay namespace: found
/// through the program attached there, as an operator tool would.
fn relay_bans(lab: &Lab, dev: &str) -> xdp_prog::Bans<aya::maps::MapData> {
    let out = Command::new("ip").args(["-n", lab.relay.name(), "-j", "link", "show", "dev", dev]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // ... "xdp":{"mode":1,"prog":{"id":123, ...
    let at = text.find("\"prog\":{\"id\":").unwrap_or_else(|| panic!("no XDP program on {dev}: {text}"));
    let rest = &text[at + "\"prog\":{\"id\":".len()..];
    let id: u32 = rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap()].parse().unwrap();
    let prog = aya::programs::loaded_programs().filter_map(Result::ok).find(|p| p.id() == id).unwrap();
    for map_id in prog.map_ids().unwrap().unwrap_or_default() {
        let map = aya::maps::MapData::from_id(map_id).unwrap();
        if map.info().unwrap().name_as_str() == Some(xdp_prog::MAP_BANS) {
            let trie = aya::maps::LpmTrie::try_from(aya::maps::Map::LpmTrie(map)).unwrap();
            return xdp_prog::Bans::new(trie);
        }
    }
    panic!("program {id} on {dev} has no `bans` map");
}

fn run_in_thread(f: fn()) {
    // Namespaces are per thread: a thread of our own, so the harness's
    // threads never move.
    std::thread::spawn(f).join().unwrap();
}

#[test]
fn xdp_relays_both_ways_latches_counts_bans_and_stops_on_delete() {
    run_in_thread(xdp_call);
}

fn lab_or_skip(test: &str) -> Option<Lab> {
    lab_with_queues_or_skip(test, 1)
}

fn lab_with_queues_or_skip(test: &str, queues: u32) -> Option<Lab> {
    for tool in ["ip", "ethtool"] {
        if testkit::find_binary(tool).is_none() {
            skip(&format!("{test}: `{tool}` is not installed"));
            return None;
        }
    }
    match Lab::new(queues) {
        Ok(lab) => Some(lab),
        Err(e) => {
            skip(&format!("{test}: cannot build the namespace lab (needs root): {e}"));
            None
        }
    }
}

fn xdp_call() {
    let Some(lab) = lab_or_skip("xdp_relays_both_ways") else { return };
    let dir = TestDir::new("afxdp-call");
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4000"), &lab.relay);
    let banned = Lab::bind(&lab.caller, &format!("{BANNED}:4000"), &lab.relay);
    let banned_by_config = Lab::bind(&lab.caller, &format!("{BANNED_BY_CONFIG}:4000"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:5000"), &lab.relay);
    let intruder = Lab::bind(&lab.callee, &format!("{INTRUDER}:5000"), &lab.relay);
    // A copy of our program attached by other means (as a crashed run or an
    // operator could leave it): the relay must remove it and attach its own.
    let object = concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-prog/bpf/xsbc.bpf.o");
    ip(&["-n", lab.relay.name(), "link", "set", "dev", "ra", "xdpgeneric", "obj", object, "sec", "xdp"]).unwrap();
    // The thread stays in the relay namespace: ng and metrics are on its loopback.
    let ban_cfg = format!("xdp_bans = [\"{BANNED_PREFIX}\"]");
    let mut relay = start_relay_on(&lab, &dir, "xdp", false, 1, &ban_cfg);
    let ng = wait_ng(&mut relay);
    assert_eq!(metric("media_relay_datapath{datapath=\"xdp\"}"), 1.0, "{}", relay.log_tail(20));
    assert!(relay.log_tail(40).contains("detached a stale xsbc XDP program"), "{}", relay.log_tail(40));
    // veth has no AF_XDP zero-copy: the one queue runs in copy mode.
    assert_eq!(metric("media_relay_xdp_queues{mode=\"copy\"}"), 1.0);
    assert_eq!(metric("media_relay_xdp_queues{mode=\"zero_copy\"}"), 0.0);
    assert_eq!(metric("media_relay_xdp_interfaces{mode=\"native\"}"), 2.0, "ra and rb natively");
    assert_eq!(metric("media_relay_xdp_interfaces{mode=\"generic\"}"), 0.0);
    let link = Command::new("ip").args(["-n", lab.relay.name(), "link", "show", "dev", "ra"]).output().unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(link.contains(" xdp ") && link.contains("name xsbc_xdp"), "ours, natively attached: {link}");

    let (to_a, to_b) = setup_call(&ng, "xdp-call", caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
    let relay_b: SocketAddr = format!("{RELAY_B}:{to_b}").parse().unwrap();
    let steered_before = metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}");

    // Caller -> callee: every packet arrives, unchanged, from the relay's B side.
    let got = relay_burst(&caller, relay_a, &callee, 1, 50, 0x1111);
    assert_eq!(got.len(), 50, "callee got {} of 50\n{}\n{}", got.len(), counters(), relay.log_tail(20));
    assert!(got.iter().all(|(_, from)| *from == relay_b), "source is the relay's B-side port: {:?}", got[0].1);
    assert_eq!(got[9].0, rtp(10, 0x1111), "payload unchanged");
    // Callee -> caller, with one gap (seq 105 missing).
    let mut back = Vec::new();
    for seq in (100..131u16).filter(|s| *s != 105) {
        callee.send_to(&rtp(seq, 0x2222), relay_b).unwrap();
        if seq % 8 == 0 {
            back.extend(recv_n(&caller, 8, Duration::from_millis(300)));
        }
    }
    back.extend(recv_n(&caller, 30 - back.len(), Duration::from_secs(2)));
    assert_eq!(back.len(), 30, "caller got {} of 30\n{}\n{}", back.len(), counters(), relay.log_tail(20));
    assert!(back.iter().all(|(_, from)| *from == relay_a));

    // Nothing had made the relay resolve the callee's MAC before the first
    // packet to it: that packet and those after it, until the neighbour
    // was known, took the kernel path (and every one arrived, above). Once
    // the neighbours are known, the AF_XDP workers send everything from
    // their TX rings.
    std::thread::sleep(Duration::from_millis(300));
    let kernel_before = metric("media_relay_xdp_kernel_path_total");
    let relayed_before = metric("media_relay_packets_relayed_total");
    assert!(
        (1.0..=16.0).contains(&kernel_before),
        "{kernel_before} packets took the kernel path (want at least the first to the callee)\n{}",
        counters()
    );
    assert_eq!(relay_burst(&caller, relay_a, &callee, 51, 40, 0x1111).len(), 40, "{}", counters());
    assert_eq!(relay_burst(&callee, relay_b, &caller, 131, 40, 0x2222).len(), 40, "{}", counters());
    assert_eq!(metric("media_relay_xdp_kernel_path_total"), kernel_before, "{}", counters());
    assert_eq!(metric("media_relay_packets_relayed_total") - relayed_before, 80.0, "{}", counters());
    let steered = metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}") - steered_before;
    assert_eq!(steered, 160.0, "the XDP program steered every packet to AF_XDP\n{}", counters());
    assert_eq!(metric("media_relay_xdp_packets_total{verdict=\"redirect_failed\"}"), 0.0);

    // Statistics and latching, as on the socket datapath.
    let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s("xdp-call"))]));
    let from_a = stream_stats(&q, "alice");
    let from_b = stream_stats(&q, "bob");
    assert_eq!(stat(&from_a, "packets"), 90, "{from_a:?}");
    assert_eq!(stat(&from_a, "lost"), 0);
    assert_eq!(stat(&from_a, "bytes"), 90 * 172);
    assert_eq!(stat(&from_b, "packets"), 70);
    assert_eq!(stat(&from_b, "expected"), 71);
    assert_eq!(stat(&from_b, "lost"), 1, "one gap in the callee's sequence numbers");
    let ep = from_b.get("endpoint").and_then(|e| e.get("address")).and_then(Value::as_str).map(str::to_owned);
    assert_eq!(ep.as_deref(), Some(CALLEE), "callee's leg latched to its address: {from_b:?}");

    // An intruder sending to the callee's relay port is dropped and counted.
    for seq in 0..5u16 {
        intruder.send_to(&rtp(seq, 0x3333), relay_b).unwrap();
    }
    assert!(recv_n(&caller, 1, Duration::from_millis(400)).is_empty(), "intruder's packets were relayed");
    assert!(
        testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            metric("media_relay_drops_total{reason=\"foreign_source\"}") >= 5.0
        }),
        "foreign drops not counted"
    );
    let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s("xdp-call"))]));
    assert_eq!(stat(&stream_stats(&q, "bob"), "errors"), 5);

    // A banned source is dropped by the XDP program: its counter rises and
    // the worker never sees the packets (no new foreign-source drops).
    let mut bans = relay_bans(&lab, "ra");
    bans.ban(BANNED.parse().unwrap(), 32, xdp_prog::BanValue { reason: 7 }).unwrap();
    dropped_in_xdp(&banned, relay_a, &callee);

    // The prefix in `relay.xdp_bans` was in the map before the program was
    // attached, marked as the configuration's, and is dropped the same way.
    let entry = bans.lookup(BANNED_BY_CONFIG.parse().unwrap()).unwrap();
    assert_eq!(entry, Some(xdp_prog::BanValue { reason: 1 }), "{BANNED_PREFIX} from relay.xdp_bans");
    assert_eq!(bans.lookup(CALLER.parse().unwrap()).unwrap(), None, "the caller is not banned");
    assert!(relay.log_tail(60).contains("relay.xdp_bans"), "{}", relay.log_tail(60));
    dropped_in_xdp(&banned_by_config, relay_a, &callee);

    // IPv6: the same relaying over the IPv6 addresses of the same links
    // (neighbours learned over NDP; the incremental checksum update of
    // IPv6 headers checked by the callee's kernel).
    let caller6 = Lab::bind(&lab.caller, &format!("[{CALLER6}]:4002"), &lab.relay);
    let callee6 = Lab::bind(&lab.callee, &format!("[{CALLEE6}]:5002"), &lab.relay);
    let (to_a6, to_b6) = setup_call(&ng, "xdp-call6", caller6.local_addr().unwrap(), callee6.local_addr().unwrap());
    let relay_a6: SocketAddr = format!("[{RELAY_A6}]:{to_a6}").parse().unwrap();
    let relay_b6: SocketAddr = format!("[{RELAY_B6}]:{to_b6}").parse().unwrap();
    let steered6 = metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}");
    let kernel6 = metric("media_relay_xdp_kernel_path_total");
    let got = relay_burst(&caller6, relay_a6, &callee6, 1, 30, 0x6666);
    assert_eq!(got.len(), 30, "IPv6 callee got {} of 30\n{}", got.len(), counters());
    assert!(got.iter().all(|(_, from)| *from == relay_b6), "IPv6 source is the relay's B side");
    assert_eq!(got[3].0, rtp(4, 0x6666));
    let back = relay_burst(&callee6, relay_b6, &caller6, 1, 30, 0x7777);
    assert_eq!(back.len(), 30, "IPv6 caller got {} of 30\n{}", back.len(), counters());
    assert!(back.iter().all(|(_, from)| *from == relay_a6));
    // Once NDP has run, nothing takes the kernel path any more.
    std::thread::sleep(Duration::from_millis(300));
    let kernel6_after_learning = metric("media_relay_xdp_kernel_path_total");
    assert!(kernel6_after_learning - kernel6 <= 16.0, "IPv6 kernel path: {}", counters());
    assert_eq!(relay_burst(&caller6, relay_a6, &callee6, 31, 20, 0x6666).len(), 20, "{}", counters());
    assert_eq!(relay_burst(&callee6, relay_b6, &caller6, 31, 20, 0x7777).len(), 20, "{}", counters());
    assert_eq!(metric("media_relay_xdp_kernel_path_total"), kernel6_after_learning, "{}", counters());
    let steered6 = metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}") - steered6;
    assert_eq!(steered6, 100.0, "the XDP program steered every IPv6 packet\n{}", counters());
    let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s("xdp-call6"))]));
    assert_eq!(stat(&stream_stats(&q, "alice"), "packets"), 50);
    assert_eq!(stat(&stream_stats(&q, "bob"), "lost"), 0);

    // Deleting the call removes the steering entries and stops forwarding.
    let del = ng.cmd(dict(&[("command", s("delete")), ("call-id", s("xdp-call"))]));
    assert_eq!(del.get("result").and_then(Value::as_str), Some("ok"), "{del:?}");
    let steered_before = metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}");
    for seq in 300..310u16 {
        caller.send_to(&rtp(seq, 0x1111), relay_a).unwrap();
    }
    assert!(recv_n(&callee, 1, Duration::from_millis(500)).is_empty(), "forwarding continued after delete");
    assert_eq!(
        metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}"),
        steered_before,
        "a deleted call's port is still steered"
    );
    relay.assert_running();
    drop(relay);
}

/// Ten packets from the banned `from` to a call's port: none reaches `to`,
/// the program counts them as banned, and the worker never sees them (no
/// foreign-source drops).
fn dropped_in_xdp(from: &UdpSocket, port: SocketAddr, to: &UdpSocket) {
    let banned_before = metric("media_relay_xdp_packets_total{verdict=\"dropped_banned\"}");
    let foreign_before = metric("media_relay_drops_total{reason=\"foreign_source\"}");
    for seq in 0..10u16 {
        from.send_to(&rtp(seq, 0x4444), port).unwrap();
    }
    let source = from.local_addr().unwrap();
    assert!(recv_n(to, 1, Duration::from_millis(400)).is_empty(), "packets from banned {source} were relayed");
    let banned_now = metric("media_relay_xdp_packets_total{verdict=\"dropped_banned\"}");
    assert!(banned_now - banned_before >= 10.0, "{source}: dropped_banned {banned_before} -> {banned_now}");
    assert_eq!(metric("media_relay_drops_total{reason=\"foreign_source\"}"), foreign_before);
}

/// Sets up `call` and checks that 20 packets get through each way.
fn relays_a_call_both_ways(ng: &NgClient, call: &str, caller: &UdpSocket, callee: &UdpSocket) {
    let (to_a, to_b) = setup_call(ng, call, caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
    let relay_b: SocketAddr = format!("{RELAY_B}:{to_b}").parse().unwrap();
    assert_eq!(relay_burst(caller, relay_a, callee, 1, 20, 1).len(), 20, "{call}: caller to callee");
    assert_eq!(relay_burst(callee, relay_b, caller, 1, 20, 2).len(), 20, "{call}: callee to caller");
}

#[test]
fn vlan_tagged_media_is_relayed_through_the_kernel_path() {
    run_in_thread(vlan_call);
}

#[test]
fn media_to_a_host_behind_a_gateway_leaves_from_the_tx_ring() {
    run_in_thread(via_gateway);
}

/// The callee's media address is on a network behind a router (the callee
/// namespace itself, at 10.2.0.2): the relay's route to it names that
/// gateway. The worker must put the gateway's MAC on the frames (a wrong
/// one and the callee's kernel drops them as meant for another host) and
/// send them from its TX ring once the gateway is known. The relay also
/// replaces a stale copy of its program attached natively.
fn via_gateway() {
    const BEHIND: &str = "10.3.0.2";
    let Some(lab) = lab_or_skip("via_gateway") else { return };
    ip(&["-n", lab.callee.name(), "addr", "add", &format!("{BEHIND}/32"), "dev", "eb"]).unwrap();
    ip(&["-n", lab.relay.name(), "route", "add", "10.3.0.0/24", "via", CALLEE]).unwrap();
    let dir = TestDir::new("afxdp-gateway");
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4008"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{BEHIND}:5008"), &lab.relay);
    // A stale copy of our program attached natively this time (the first
    // test leaves one in generic mode): replaced the same way.
    let object = concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-prog/bpf/xsbc.bpf.o");
    ip(&["-n", lab.relay.name(), "link", "set", "dev", "rb", "xdpdrv", "obj", object, "sec", "xdp"]).unwrap();
    let mut relay = start_relay(&lab, &dir, "xdp", false);
    let ng = wait_ng(&mut relay);
    assert!(relay.log_tail(40).contains("detached a stale xsbc XDP program"), "{}", relay.log_tail(40));
    assert_eq!(metric("media_relay_xdp_interfaces{mode=\"native\"}"), 2.0, "{}", relay.log_tail(40));
    let (to_a, to_b) = setup_call(&ng, "gateway-call", caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
    let relay_b: SocketAddr = format!("{RELAY_B}:{to_b}").parse().unwrap();
    // The first packets may wait for the gateway's MAC on the kernel path.
    assert_eq!(relay_burst(&caller, relay_a, &callee, 1, 20, 0x8a8a).len(), 20, "{}", counters());
    assert_eq!(relay_burst(&callee, relay_b, &caller, 1, 20, 0x8b8b).len(), 20, "{}", counters());
    std::thread::sleep(Duration::from_millis(300));
    let kernel = metric("media_relay_xdp_kernel_path_total");
    let relayed = metric("media_relay_packets_relayed_total");
    let got = relay_burst(&caller, relay_a, &callee, 21, 40, 0x8a8a);
    assert_eq!(got.len(), 40, "callee behind the gateway got {} of 40\n{}", got.len(), counters());
    assert!(got.iter().all(|(_, from)| *from == relay_b), "from the relay's B side: {:?}", got[0].1);
    assert_eq!(
        metric("media_relay_xdp_kernel_path_total"),
        kernel,
        "through the gateway from the TX ring\n{}",
        counters()
    );
    assert_eq!(metric("media_relay_packets_relayed_total") - relayed, 40.0, "{}", counters());
    let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s("gateway-call"))]));
    let ep = stream_stats(&q, "bob")
        .get("endpoint")
        .and_then(|e| e.get("address"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    assert_eq!(ep.as_deref(), Some(BEHIND), "{q:?}");
    relay.assert_running();
    drop(relay);
}

/// The MAC address of `dev` in namespace `ns`, as `aa:bb:cc:dd:ee:ff`.
fn mac(ns: &str, dev: &str) -> String {
    let path = format!("/sys/class/net/{dev}/address");
    let out = Command::new("ip").args(["netns", "exec", ns, "cat", &path]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// [`mac`] as bytes.
fn mac_bytes(ns: &str, dev: &str) -> [u8; 6] {
    let text = mac(ns, dev);
    let bytes: Vec<u8> = text.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    bytes.try_into().unwrap_or_else(|_| panic!("{dev} in {ns}: MAC `{text}`"))
}

/// A packet socket on interface `dev` of namespace `ns`: sends whole
/// frames. The thread returns to `back`.
fn raw_sender(ns: &Netns, dev: &str, back: &Netns) -> PacketSocket {
    ns.enter();
    let raw = PacketSocket::open(dev);
    back.enter();
    raw.unwrap_or_else(|e| panic!("packet socket on {dev} in {}: {e}", ns.name()))
}

/// An Ethernet frame with one 802.1Q tag carrying a UDP datagram over IPv4
/// (header checksum set; UDP checksum 0, "none", which IPv4 allows).
fn tagged_frame(macs: ([u8; 6], [u8; 6]), vid: u16, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else { panic!("IPv4 only") };
    let mut f = Vec::with_capacity(46 + payload.len());
    f.extend_from_slice(&macs.1); // destination
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    let mut ip = [0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    ip[10..12].copy_from_slice(&(!u16::try_from(folded).unwrap()).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&from.port().to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The caller's media arrives at `ra`, the interface the XDP program is
/// attached to, with an 802.1Q tag (sent whole through a packet socket:
/// the test kernel has no VLAN devices). The program steers tagged frames
/// to the worker like any other media; the worker does not rewrite tagged
/// frames and sends their payload through the leg's socket instead, so
/// every packet is relayed, by the kernel, and counted. The callee's
/// media back to the caller is untagged and leaves from the TX ring.
fn vlan_call() {
    let Some(lab) = lab_or_skip("vlan_tagged_media") else { return };
    let dir = TestDir::new("afxdp-vlan");
    // These leave the thread in the relay namespace, where ng and the
    // metrics listen on its loopback.
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4006"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:5006"), &lab.relay);
    let raw = raw_sender(&lab.caller, "ca", &lab.relay);
    let mut relay = start_relay(&lab, &dir, "xdp", false);
    let ng = wait_ng(&mut relay);
    let macs = (mac_bytes(lab.caller.name(), "ca"), mac_bytes(lab.relay.name(), "ra"));
    let (to_a, to_b) = setup_call(&ng, "vlan-call", caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
    let relay_b: SocketAddr = format!("{RELAY_B}:{to_b}").parse().unwrap();
    let steered = || metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}");
    let kernel = || metric("media_relay_xdp_kernel_path_total");

    // Twice: the second round runs with every neighbour known.
    for (round, first) in [(1, 1u16), (2, 101)] {
        let (steered_before, kernel_before) = (steered(), kernel());
        let from = caller.local_addr().unwrap();
        let got = burst_with(
            |seq| raw.send(&tagged_frame(macs, 7, from, relay_a, &rtp(seq, 0x7a7a))).unwrap(),
            &callee,
            first,
            20,
        );
        assert_eq!(
            got.len(),
            20,
            "round {round}: callee got {} of 20\n{}\n{}",
            got.len(),
            counters(),
            relay.log_tail(20)
        );
        assert!(got.iter().all(|(_, from)| *from == relay_b), "from the relay's B side: {:?}", got[0].1);
        assert_eq!(got[4].0, rtp(first + 4, 0x7a7a), "payload unchanged");
        // The program steered the tagged frames; the worker sent every one
        // through the kernel.
        assert_eq!(steered() - steered_before, 20.0, "round {round}\n{}", counters());
        assert_eq!(kernel() - kernel_before, 20.0, "round {round}\n{}", counters());

        let kernel_before = kernel();
        let back = relay_burst(&callee, relay_b, &caller, first, 20, 0x7b7b);
        assert_eq!(back.len(), 20, "round {round}: caller got {} of 20\n{}", back.len(), counters());
        assert!(back.iter().all(|(_, from)| *from == relay_a), "from the relay's A side: {:?}", back[0].1);
        if round == 2 {
            assert_eq!(kernel(), kernel_before, "untagged media takes the TX ring\n{}", counters());
        }
    }
    let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s("vlan-call"))]));
    let (from_a, from_b) = (stream_stats(&q, "alice"), stream_stats(&q, "bob"));
    assert_eq!((stat(&from_a, "packets"), stat(&from_a, "bytes")), (40, 40 * 172), "{from_a:?}");
    assert_eq!(stat(&from_b, "packets"), 40, "{from_b:?}");
    let ep = from_a.get("endpoint").and_then(|e| e.get("address")).and_then(Value::as_str).map(str::to_owned);
    assert_eq!(ep.as_deref(), Some(CALLER), "the caller's leg latched to the tagged frames' source: {from_a:?}");
    relay.assert_running();
    drop(relay);
}

#[test]
fn without_privileges_auto_falls_back_to_sockets_and_xdp_refuses() {
    run_in_thread(fallback);
}

fn fallback() {
    let Some(lab) = lab_or_skip("without_privileges_auto_falls_back") else { return };
    if testkit::find_binary("setpriv").is_none() {
        return skip("setpriv (util-linux) is not installed");
    }
    let dir = TestDir::new("afxdp-fallback");
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4000"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:5000"), &lab.relay);

    // datapath = "xdp" without privileges: exits, saying why.
    let mut strict = start_relay(&lab, &dir, "xdp", true);
    let status = strict.wait_timeout(Duration::from_secs(15)).expect("relay with datapath = xdp kept running");
    assert!(!status.success());
    let log = strict.log_tail(20);
    assert!(log.contains("AF_XDP datapath cannot run") && log.contains("no privileges"), "{log}");
    drop(strict);

    // datapath = "auto": logs the reason, relays on the socket datapath.
    let mut relay = start_relay(&lab, &dir, "auto", true);
    let ng = wait_ng(&mut relay);
    assert_eq!(metric("media_relay_datapath{datapath=\"socket\"}"), 1.0);
    let log = relay.log_tail(40);
    assert!(log.contains("falling back to the socket datapath") && log.contains("no privileges"), "{log}");
    relays_a_call_both_ways(&ng, "fallback-call", &caller, &callee);
    relay.assert_running();
}

#[test]
fn zero_copy_demanded_on_veth_exits_or_falls_back_naming_the_key() {
    run_in_thread(zero_copy_on_veth);
}

fn zero_copy_on_veth() {
    let Some(lab) = lab_or_skip("zero_copy_demanded_on_veth") else { return };
    let dir = TestDir::new("afxdp-zero-copy");
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4000"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:5000"), &lab.relay);
    let on = "xdp_zero_copy = \"on\"\n";

    // datapath = "xdp": the bind fails, and the relay exits saying why.
    let mut strict = start_relay_on(&lab, &dir, "xdp", false, 1, on);
    let status = strict.wait_timeout(Duration::from_secs(15)).expect("relay with xdp_zero_copy = on kept running");
    assert!(!status.success());
    let log = strict.log_tail(20);
    assert!(
        log.contains("AF_XDP datapath cannot run")
            && log.contains("no AF_XDP zero-copy support, which relay.xdp_zero_copy"),
        "{log}"
    );
    drop(strict);

    // datapath = "auto": the same reason, and media flows over sockets.
    let mut relay = start_relay_on(&lab, &dir, "auto", false, 1, on);
    let ng = wait_ng(&mut relay);
    assert_eq!(metric("media_relay_datapath{datapath=\"socket\"}"), 1.0);
    let log = relay.log_tail(40);
    assert!(log.contains("falling back to the socket datapath") && log.contains("relay.xdp_zero_copy"), "{log}");
    relays_a_call_both_ways(&ng, "zero-copy-call", &caller, &callee);
    drop(relay);

    // "off" (copy mode, asked for) runs the AF_XDP datapath.
    let mut copy = start_relay_on(&lab, &dir, "xdp", false, 1, "xdp_zero_copy = \"off\"\n");
    let _ng = wait_ng(&mut copy);
    assert_eq!(metric("media_relay_datapath{datapath=\"xdp\"}"), 1.0, "{}", copy.log_tail(20));
    assert_eq!(metric("media_relay_xdp_queues{mode=\"copy\"}"), 1.0);
}

#[test]
fn media_resumes_after_the_egress_link_flaps() {
    run_in_thread(|| link_flap("xdp"));
}

#[test]
fn media_resumes_after_the_egress_link_flaps_on_the_socket_datapath() {
    run_in_thread(|| link_flap("socket"));
}

/// A relay on `datapath` with one call from the caller to the callee,
/// which has relayed packets 1 to 20 (SSRC 7).
struct OneCall {
    relay: ChildGuard,
    _ng: NgClient,
    caller: UdpSocket,
    callee: UdpSocket,
    /// The relay's port for the caller.
    relay_a: SocketAddr,
}

fn one_call(lab: &Lab, dir: &TestDir, datapath: &str, call: &str) -> OneCall {
    let caller = Lab::bind(&lab.caller, &format!("{CALLER}:4000"), &lab.relay);
    let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:5000"), &lab.relay);
    let mut relay = start_relay(lab, dir, datapath, false);
    let ng = wait_ng(&mut relay);
    let (to_a, _) = setup_call(&ng, call, caller.local_addr().unwrap(), callee.local_addr().unwrap());
    let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
    assert_eq!(relay_burst(&caller, relay_a, &callee, 1, 20, 7).len(), 20, "{call}: before the outage");
    OneCall { relay, _ng: ng, caller, callee, relay_a }
}

impl OneCall {
    /// Sends one packet at a time (from sequence number 42) until one
    /// arrives, for up to 10 s, then a burst of `n` that must all arrive.
    fn resumes(&self, what: &str, n: u16) {
        let mut seq = 41;
        let resumed = testkit::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            seq += 1;
            self.caller.send_to(&rtp(seq, 7), self.relay_a).unwrap();
            !recv_n(&self.callee, 1, Duration::from_millis(100)).is_empty()
        });
        assert!(resumed, "no media after {what}\n{}\n{}", counters(), self.relay.log_tail(30));
        let after = relay_burst(&self.caller, self.relay_a, &self.callee, seq + 1, n, 7);
        assert_eq!(after.len(), usize::from(n), "after {what}\n{}", counters());
    }
}

fn link_flap(datapath: &str) {
    let Some(lab) = lab_or_skip("media_resumes_after_the_egress_link_flaps") else { return };
    let dir = TestDir::new(&format!("afxdp-flap-{datapath}"));
    let mut c = one_call(&lab, &dir, datapath, "flap-call");
    let (caller, callee, relay_a) = (&c.caller, &c.callee, c.relay_a);

    // The callee-side link goes down: nothing can leave towards the callee,
    // the relay keeps running, and it says why the packets were dropped.
    ip(&["-n", lab.relay.name(), "link", "set", "rb", "down"]).unwrap();
    let lost = relay_burst(caller, relay_a, callee, 21, 20, 7);
    assert!(lost.len() < 20, "link down, yet {} of 20 arrived", lost.len());
    c.relay.assert_running();
    // Every packet it could not send is counted, under the right reason.
    let want = (20 - lost.len()) as f64;
    let counted = testkit::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        metric("media_relay_drops_total{reason=\"unreachable\"}") >= want
    });
    assert!(counted, "{want} drops counted as unreachable\n{}", counters());
    assert_eq!(metric("media_relay_drops_total{reason=\"send_buffer_full\"}"), 0.0, "{}", counters());

    // Back up: the kernel has flushed rb's neighbours, so on AF_XDP the
    // first packets take the kernel path, which resolves the callee again;
    // then media flows as before.
    ip(&["-n", lab.relay.name(), "link", "set", "rb", "up"]).unwrap();
    c.resumes("the link came back", 40);
    if datapath == "xdp" {
        assert!(metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}") >= 80.0, "{}", counters());
    }
    c.relay.assert_running();
}

#[test]
fn frames_the_kernel_completes_unsent_when_the_egress_loses_carrier_are_counted() {
    run_in_thread(carrier_loss);
}

/// The callee's end of the veth goes down, so `rb` stays up but loses its
/// carrier. A permanent neighbour entry survives that (the kernel flushes
/// only the others), so the worker keeps the callee's MAC and puts the
/// frames on `rb`'s TX ring, and the kernel completes them unsent (copy
/// mode: `sendto` fails with `EBUSY`, one frame per call). The window in
/// which a link-down event has not reached the relay yet looks the same.
/// Those frames are unreachable drops, not relayed packets.
fn carrier_loss() {
    let Some(lab) = lab_or_skip("frames_the_kernel_completes_unsent_are_counted") else { return };
    let dir = TestDir::new("afxdp-carrier");
    let (r, e) = (lab.relay.name(), lab.callee.name());
    ip(&["-n", r, "neigh", "replace", CALLEE, "lladdr", &mac(e, "eb"), "nud", "permanent", "dev", "rb"]).unwrap();
    let mut c = one_call(&lab, &dir, "xdp", "carrier-call");
    let relayed = metric("media_relay_packets_relayed_total");

    ip(&["-n", e, "link", "set", "eb", "down"]).unwrap();
    let no_carrier = testkit::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        let out = Command::new("ip").args(["-n", r, "link", "show", "rb"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains("NO-CARRIER")
    });
    assert!(no_carrier, "rb kept its carrier after eb went down");
    let lost = relay_burst(&c.caller, c.relay_a, &c.callee, 21, 20, 7);
    assert!(lost.is_empty(), "no carrier, yet {} of 20 arrived", lost.len());
    let counted = testkit::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        metric("media_relay_drops_total{reason=\"unreachable\"}") >= 20.0
    });
    assert!(counted, "20 frames sent into a link without carrier, not all counted as unreachable\n{}", counters());
    assert_eq!(metric("media_relay_packets_relayed_total"), relayed, "{}", counters());
    assert_eq!(metric("media_relay_drops_total{reason=\"send_buffer_full\"}"), 0.0, "{}", counters());
    assert_eq!(metric("media_relay_xdp_kernel_path_total"), 0.0, "the permanent entry keeps frames on the ring");

    // Carrier back: media flows again through the same TX ring.
    ip(&["-n", e, "link", "set", "eb", "up"]).unwrap();
    c.resumes("the carrier came back", 20);
    c.relay.assert_running();
}

#[test]
fn xdp_relays_every_call_when_rss_spreads_flows_over_queues() {
    run_in_thread(multi_queue);
}

/// Two rx queues on each relay interface, one worker per queue: each
/// session lives in one worker, but the senders' hash puts about half the
/// flows on the other queue. Those frames must be handed to the owner and
/// relayed, with the owner's latching and statistics, and none dropped.
fn multi_queue() {
    const CALLS: u16 = 12;
    const PACKETS: u16 = 20;
    let Some(lab) = lab_with_queues_or_skip("xdp_relays_every_call_on_two_queues", 2) else { return };
    let dir = TestDir::new("afxdp-mq");
    // The thread lives in the relay namespace: ng and metrics are on its loopback.
    lab.relay.enter();
    // xdp_queues = 0: one worker per rx queue found on the interfaces.
    let mut relay = start_relay_on(&lab, &dir, "xdp", false, 0, "");
    let ng = wait_ng(&mut relay);
    assert!(relay.log_tail(40).contains("queues=2"), "two queues detected:\n{}", relay.log_tail(40));
    assert_eq!(metric("media_relay_xdp_queues{mode=\"copy\"}"), 2.0);
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let caller = Lab::bind(&lab.caller, &format!("{CALLER}:{}", 4100 + i), &lab.relay);
        let callee = Lab::bind(&lab.callee, &format!("{CALLEE}:{}", 5100 + i), &lab.relay);
        let id = format!("mq-{i}");
        let (to_a, to_b) = setup_call(&ng, &id, caller.local_addr().unwrap(), callee.local_addr().unwrap());
        let relay_a: SocketAddr = format!("{RELAY_A}:{to_a}").parse().unwrap();
        let relay_b: SocketAddr = format!("{RELAY_B}:{to_b}").parse().unwrap();
        calls.push((id, caller, callee, relay_a, relay_b));
    }
    for (id, caller, callee, relay_a, relay_b) in &calls {
        let ssrc = 0x5000 + u32::from(relay_a.port());
        let got = relay_burst(caller, *relay_a, callee, 1, PACKETS, ssrc);
        assert_eq!(got.len(), usize::from(PACKETS), "{id}: callee got {}\n{}", got.len(), counters());
        assert!(got.iter().all(|(_, from)| from == relay_b), "{id}: from the relay's B side");
        let back = relay_burst(callee, *relay_b, caller, 1, PACKETS, ssrc + 1);
        assert_eq!(back.len(), usize::from(PACKETS), "{id}: caller got {}\n{}", back.len(), counters());
        assert!(back.iter().all(|(_, from)| from == relay_a), "{id}: from the relay's A side");
    }
    let total = f64::from(CALLS * PACKETS * 2);
    // Both queues carried media, some of it for sessions owned by the other
    // worker, and nothing was lost on the way.
    for w in ["0", "1"] {
        let got = metric(&format!("media_relay_packets_received_total{{worker=\"{w}\"}}"));
        assert!(got > 0.0, "queue {w} received nothing: the lab did not spread flows\n{}", counters());
    }
    let handed = metric("media_relay_xdp_queue_handoff_total");
    assert!(handed >= f64::from(PACKETS), "frames handed between workers: {handed}\n{}", counters());
    assert_eq!(metric("media_relay_drops_total{reason=\"no_session\"}"), 0.0, "{}", counters());
    assert_eq!(metric("media_relay_drops_total{reason=\"queue_handoff_full\"}"), 0.0, "{}", counters());
    assert_eq!(metric("media_relay_packets_received_total"), total, "{}", counters());
    assert_eq!(metric("media_relay_packets_relayed_total"), total, "{}", counters());
    // The owner accounted every packet, wherever it arrived.
    for (id, ..) in &calls {
        let q = ng.cmd(dict(&[("command", s("query")), ("call-id", s(id))]));
        for tag in ["alice", "bob"] {
            let st = stream_stats(&q, tag);
            assert_eq!(stat(&st, "packets"), i64::from(PACKETS), "{id} {tag}: {st:?}");
            assert_eq!(stat(&st, "lost"), 0, "{id} {tag}: {st:?}");
        }
    }
    relay.assert_running();
}

#[test]
fn a_napi_thread_that_outranks_real_time_workers_is_reported() {
    run_in_thread(napi_ranking);
}

/// Threads whose name marks them as NAPI threads of `dev` (any namespace).
fn napi_threads(dev: &str) -> Vec<String> {
    let prefix = format!("napi/{dev}-");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim().starts_with(&prefix)))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn napi_ranking() {
    let Some(lab) = lab_or_skip("a_napi_thread_that_outranks_real_time_workers_is_reported") else { return };
    if testkit::find_binary("chrt").is_none() {
        skip("a_napi_thread_that_outranks_real_time_workers_is_reported: `chrt` is not installed");
        return;
    }
    let dir = TestDir::new("afxdp-napi");
    // The ng and metrics ports are the relay namespace's loopback.
    lab.relay.enter();
    let before = napi_threads("ra");
    let rt = "worker_scheduling = \"fifo\"\nworker_priority = 40\n";
    let mut relay = start_relay_on(&lab, &dir, "xdp", false, 1, rt);
    let _ng = wait_ng(&mut relay);
    assert_eq!(metric("media_relay_datapath{datapath=\"xdp\"}"), 1.0, "{}", relay.log_tail(20));
    // Threaded NAPI on the relay's `ra`: the kernel starts its threads.
    let ok = Command::new("ip")
        .args(["netns", "exec", lab.relay.name(), "sh", "-c", "echo 1 > /sys/class/net/ra/threaded"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "threaded NAPI on ra");
    let mut ours = Vec::new();
    assert!(
        testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            ours = napi_threads("ra").into_iter().filter(|t| !before.contains(t)).collect();
            !ours.is_empty()
        }),
        "no napi/ra-* thread appeared"
    );
    // The kernel's netdev family (asked in the relay's namespace, as the
    // relay does) names exactly these threads for `ra`.
    let snap = media_relay::afxdp::neigh::read_snapshot().unwrap();
    let ra = snap.link_by_name("ra").expect("ra in the relay namespace").index;
    match media_relay::afxdp::neigh::napi_contexts(ra) {
        Ok(napis) => {
            let mut pids: Vec<String> = napis.iter().filter_map(|n| n.pid).map(|p| p.to_string()).collect();
            pids.sort();
            let mut want = ours.clone();
            want.sort();
            assert_eq!(pids, want, "{napis:?}");
        }
        // Before Linux 6.8 the relay matches the threads by name.
        Err(e) => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let mut v = release.trim().split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
            let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
            assert!((major, minor) < (6, 8), "Linux {release} has the netdev NAPI dump, yet: {e}");
            eprintln!("no NAPI dump from the netdev family ({e}); the relay matches threads by name");
        }
    }
    let log = || std::fs::read_to_string(relay.stderr_path()).unwrap_or_default();
    let names_ours = |l: &str| ours.iter().any(|pid| l.contains(&format!(" pid={pid} ")));
    // At the default policy the thread runs below the workers: said once.
    assert!(
        testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            log().lines().any(|l| l.contains("below the real-time media workers") && names_ours(l))
        }),
        "{}",
        relay.log_tail(20)
    );
    assert!(!log().contains("outranks the real-time media workers"), "{}", relay.log_tail(20));
    // The gauges follow the log line within the same look.
    let rank = |r: &str| metric(&format!("media_relay_xdp_napi_threads{{rank=\"{r}\"}}"));
    let ranks_are = |want: (f64, f64)| {
        testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            (rank("above_workers"), rank("below_workers")) == want
        })
    };
    let n = ours.len() as f64;
    assert!(ranks_are((0.0, n)), "{} {}", rank("above_workers"), rank("below_workers"));
    // Raised above the workers, as an interrupt would be: a warning that
    // names the setting to change.
    for pid in &ours {
        let ok = Command::new("chrt").args(["-f", "-p", "50", pid]).status().is_ok_and(|s| s.success());
        assert!(ok, "chrt -f -p 50 {pid}");
    }
    assert!(
        testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            log().lines().any(|l| {
                l.contains("outranks the real-time media workers")
                    && l.contains("relay.worker_priority above 50")
                    && l.contains("napi=fifo 50")
                    && names_ours(l)
            })
        }),
        "{}",
        relay.log_tail(20)
    );
    assert!(ranks_are((n, 0.0)), "{} {}", rank("above_workers"), rank("below_workers"));
    relay.assert_running();
}
