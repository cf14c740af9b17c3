//! The relay between two networks ("realms"), end to end, in network
//! namespaces this test creates and removes:
//!
//! ```text
//! netns inside:  ph 10.77.1.2/24                      (a phone)
//!    | veth
//! netns relay:   ri 10.77.1.1/24      interface "inside"
//!                ro 10.77.2.1/24      interface "outside" (or "outside6",
//!                   fd77:2::1/64      or advertised as 203.0.113.7)
//!    | veth
//! netns outside: ca 10.77.2.2/24 fd77:2::2/64         (a carrier)
//! ```
//!
//! Inside and outside have no route to each other (and the relay does not
//! forward): media gets across only through the relay. Calls are set up
//! over ng with `direction` = [offerer's interface, answerer's interface],
//! as the sbc does. Each leg is anchored on its own side's address: the SDP
//! sent to a side names that side's relay address (the advertised one
//! where set, in `c=` and, with `replace: [origin]`, `o=`) and no address
//! of the other side, and each side receives media from the relay's
//! address on that side. Covered on the socket datapath: IPv4 both sides,
//! calls in both directions and a re-INVITE from the outside, an advertised
//! address, an IPv6 outside with an IPv4 inside. On the `AF_XDP` datapath
//! (XDP on both veths): IPv4 both sides, and IPv4 to IPv6 (the worker
//! replaces the IP header), every packet received by the workers and sent
//! from their TX rings once the next hops are known, also with two queues
//! per interface, where frames are handed between workers. A relay whose
//! outside device is left out of `relay.xdp_interfaces` refuses the
//! `AF_XDP` datapath (`auto` relays on sockets instead).
//!
//! Needs root and `ip` (and `ethtool` for `AF_XDP`); prints `SKIPPED: ...`
//! otherwise, and fails instead under `CI=true`.
#![allow(clippy::unwrap_used, reason = "test code: a failed setup step should panic")]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use testkit::bencode::Value;
use testkit::ng::sdp_command;
use testkit::udp::recv_n;
use testkit::{skip, ChildGuard, Netns, NgClient, TestDir};

const PHONE: &str = "10.77.1.2";
const RELAY_IN: &str = "10.77.1.1";
const RELAY_OUT: &str = "10.77.2.1";
const CARRIER: &str = "10.77.2.2";
const RELAY_OUT6: &str = "fd77:2::1";
const CARRIER6: &str = "fd77:2::2";
const ADVERTISED: &str = "203.0.113.7";
const NG: &str = "127.0.0.1:22222";
const METRICS: &str = "127.0.0.1:9101";

/// The three namespaces.
struct Lab {
    inside: Netns,
    relay: Netns,
    outside: Netns,
}

impl Lab {
    /// Builds the namespaces, or says why it cannot (and fails under CI).
    /// `xdp_queues`: for the `AF_XDP` datapath, each veth end gets that
    /// many queues (the sender spreads flows over them by hash, as RSS
    /// does), and the endpoints compute full UDP checksums (see below).
    fn new_or_skip(test: &str, xdp_queues: Option<u32>) -> Option<Lab> {
        let tools: &[&str] = if xdp_queues.is_some() { &["ip", "ethtool"] } else { &["ip"] };
        if !testkit::env::require_root_and(test, tools) {
            return None;
        }
        match Lab::build(xdp_queues) {
            Ok(lab) => Some(lab),
            Err(e) => {
                skip(&format!("{test}: cannot build the namespace lab: {e}"));
                None
            }
        }
    }

    fn build(xdp_queues: Option<u32>) -> Result<Lab, String> {
        let lab = Lab { inside: Netns::new("rlmi")?, relay: Netns::new("rlmr")?, outside: Netns::new("rlmo")? };
        let (i, r, o) = (&lab.inside, &lab.relay, &lab.outside);
        r.veth("ri", i, "ph", xdp_queues)?;
        r.veth("ro", o, "ca", xdp_queues)?;
        for (ns, dev, addr) in [
            (r, "ri", format!("{RELAY_IN}/24")),
            (r, "ro", format!("{RELAY_OUT}/24")),
            (r, "ro", format!("{RELAY_OUT6}/64")),
            (i, "ph", format!("{PHONE}/24")),
            (o, "ca", format!("{CARRIER}/24")),
            (o, "ca", format!("{CARRIER6}/64")),
        ] {
            ns.addr(dev, &addr)?;
        }
        for (ns, dev) in [(r, "ri"), (r, "ro"), (r, "lo"), (i, "ph"), (i, "lo"), (o, "ca"), (o, "lo")] {
            ns.up(dev)?;
        }
        // No default routes and no forwarding: each side reaches only the
        // relay's address on its own link.
        r.sysctl("net.ipv4.ip_forward=0")?;
        r.sysctl("net.ipv6.conf.all.forwarding=0")?;
        if xdp_queues.is_some() {
            // A veth hands its peer frames whose UDP checksum holds only the
            // pseudo-header sum (checksum offload); a wire never carries
            // those. The endpoints compute full checksums, as a NIC would.
            for (ns, dev) in [(i, "ph"), (o, "ca")] {
                ns.exec("ethtool", &["-K", dev, "tx", "off"])?;
            }
        }
        Ok(lab)
    }

    /// A UDP socket bound in `ns`; the thread returns to the relay's namespace.
    fn bind(&self, ns: &Netns, addr: &str) -> UdpSocket {
        ns.enter();
        let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", ns.name()));
        self.relay.enter();
        s
    }

    /// Starts the relay in its namespace with `interfaces` (TOML list
    /// items) on `datapath` (XDP on both veths), and waits for ng. The
    /// calling thread enters the relay's namespace (ng and metrics are on
    /// its loopback).
    fn start_relay(&self, dir: &TestDir, datapath: &str, interfaces: &[String]) -> (ChildGuard, NgClient) {
        let mut relay = self.spawn_relay(dir, datapath, interfaces, &["ri", "ro"]);
        let ng = NgClient::new(NG);
        let up = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            relay.try_wait().is_some() || ng.ping()
        });
        assert!(up && relay.try_wait().is_none(), "relay did not come up:\n{}", relay.log_tail(30));
        let running = if datapath == "xdp" { "xdp" } else { "socket" };
        let datapath_metric = format!("media_relay_datapath{{datapath=\"{running}\"}}");
        assert_eq!(metric(&datapath_metric), 1.0, "{}", relay.log_tail(30));
        (relay, ng)
    }

    /// Spawns the relay as [`Lab::start_relay`] does, with the XDP program
    /// on `xdp_devices` (unless `datapath` is "socket").
    fn spawn_relay(&self, dir: &TestDir, datapath: &str, interfaces: &[String], xdp_devices: &[&str]) -> ChildGuard {
        self.relay.enter();
        let quoted =
            |items: &mut dyn Iterator<Item = &str>| items.map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
        let list = quoted(&mut interfaces.iter().map(String::as_str));
        let xdp = if datapath == "socket" {
            String::new()
        } else {
            format!("xdp_interfaces = [{}]\nxdp_queues = 0\n", quoted(&mut xdp_devices.iter().copied()))
        };
        let cfg = dir.write(
            "relay.toml",
            format!(
                "[relay]\ninterfaces = [{list}]\nlisten_ng = \"{NG}\"\nport_min = 30000\nport_max = 30099\n\
                 workers = 1\ntimeout = 60\nmetrics = \"{METRICS}\"\nlog_level = \"info\"\n\
                 datapath = \"{datapath}\"\n{xdp}"
            ),
        );
        let mut cmd = self.relay.command(env!("CARGO_BIN_EXE_media-relay"));
        cmd.arg("--config").arg(&cfg);
        ChildGuard::spawn("media-relay", &mut cmd, dir.path())
    }
}

fn metric(spec: &str) -> f64 {
    testkit::metrics::metric_spec(METRICS.parse().unwrap(), spec)
}

/// The relay's counters that say where packets went, for failure messages.
fn counters() -> String {
    let body = testkit::metrics::http_get(METRICS.parse().unwrap(), "/metrics").unwrap_or_default();
    body.lines()
        .filter(|l| !l.starts_with('#') && (l.contains("xdp") || l.contains("drops") || l.contains("packets_")))
        .filter(|l| !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn sdp(addr: SocketAddr) -> String {
    let (family, ip) = (if addr.is_ipv6() { "IP6" } else { "IP4" }, addr.ip());
    format!(
        "v=0\r\no=- 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=sendrecv\r\n",
        addr.port()
    )
}

/// The line of `sdp` starting with `prefix`.
fn line<'a>(sdp: &'a str, prefix: &str) -> &'a str {
    sdp.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} line in {sdp}"))
}

/// What the relay said to one side: its rewritten SDP.
struct Told {
    sdp: String,
}

impl Told {
    fn of(reply: &Value) -> Told {
        assert_eq!(reply.get("result").and_then(Value::as_str), Some("ok"), "{reply:?}");
        let sdp = std::str::from_utf8(reply.get("sdp").and_then(Value::as_bytes).unwrap()).unwrap().to_owned();
        Told { sdp }
    }

    /// The relay's media port in the `m=` line.
    fn port(&self) -> u16 {
        line(&self.sdp, "m=").split(' ').nth(1).unwrap().parse().unwrap()
    }

    /// The SDP names `addr` in `c=` and `o=` (the test always asks for
    /// `replace: [origin]`) and none of `absent`.
    fn names(&self, addr: &str, absent: &[&str]) {
        let family = if addr.contains(':') { "IP6" } else { "IP4" };
        assert_eq!(line(&self.sdp, "c="), format!("c=IN {family} {addr}"), "{}", self.sdp);
        assert_eq!(line(&self.sdp, "o="), format!("o=- 1 1 IN {family} {addr}"), "{}", self.sdp);
        for other in absent {
            assert!(!self.sdp.contains(other), "`{other}` leaked into {}", self.sdp);
        }
    }
}

/// Offer from `offerer` (its SDP at its socket's address, its side on
/// relay interface `sides[0]`), answer from `answerer` (`sides[1]`).
/// Returns what the relay told the answerer (the rewritten offer) and the
/// offerer (the rewritten answer).
fn call(ng: &NgClient, id: &str, offerer: &UdpSocket, answerer: &UdpSocket, sides: [&str; 2]) -> (Told, Told) {
    exchange(ng, id, ["from-tag", "to-tag"], offerer, answerer, sides)
}

/// [`call`] with the offerer's and answerer's tags given: a re-offer from
/// the callee swaps them.
fn exchange(
    ng: &NgClient,
    id: &str,
    tags: [&str; 2],
    offerer: &UdpSocket,
    answerer: &UdpSocket,
    sides: [&str; 2],
) -> (Told, Told) {
    let to_tag = (tags[0] != "from-tag").then_some(tags[1]);
    let mut offer = sdp_command("offer", id, tags[0], to_tag, &sdp(offerer.local_addr().unwrap()));
    offer.insert("direction", Value::List(sides.iter().map(|s| Value::str(s)).collect()));
    offer.insert("replace", Value::List(vec![Value::str("origin")]));
    let to_answerer = Told::of(&ng.cmd(offer));
    let mut answer = sdp_command("answer", id, tags[0], Some(tags[1]), &sdp(answerer.local_addr().unwrap()));
    answer.insert("replace", Value::List(vec![Value::str("origin")]));
    let to_offerer = Told::of(&ng.cmd(answer));
    (to_answerer, to_offerer)
}

/// An RTP packet with a 160-byte payload.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// Sends `n` packets from `from` to the relay at `relay` (a few at a time,
/// as a phone would) and checks that all of them reach `to`, unchanged and
/// from `seen_from` (the relay's address and port on `to`'s side).
fn relays(from: &UdpSocket, relay: SocketAddr, to: &UdpSocket, seen_from: SocketAddr, first: u16, n: u16, ssrc: u32) {
    let mut got = Vec::new();
    for seq in first..first + n {
        from.send_to(&rtp(seq, ssrc), relay).unwrap();
        if seq % 8 == 7 {
            got.extend(recv_n(to, 8, Duration::from_millis(500)));
        }
    }
    let left = usize::from(n).saturating_sub(got.len());
    got.extend(recv_n(to, left, Duration::from_secs(2)));
    let (src, dst) = (from.local_addr().unwrap(), to.local_addr().unwrap());
    assert_eq!(got.len(), usize::from(n), "{src} -> {relay} -> {dst}: {} of {n} arrived\n{}", got.len(), counters());
    for (i, (payload, sender)) in got.iter().enumerate() {
        assert_eq!(*sender, seen_from, "{dst} sees the relay's address on its own side");
        assert_eq!(*payload, rtp(first + i as u16, ssrc), "payload unchanged, in order");
    }
}

fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A leg's RTP stream in an ng `query` reply: (packets, latched address).
fn leg(q: &Value, tag: &str) -> (i64, String) {
    let stream = q
        .get("tags")
        .and_then(|t| t.get(tag))
        .and_then(|t| t.get("medias"))
        .and_then(|m| m.as_list()?.first().cloned())
        .and_then(|m| m.get("streams").and_then(|s| s.as_list()?.first().cloned()))
        .unwrap_or_else(|| panic!("no RTP stream for tag {tag} in {q:?}"));
    let packets = stream.get("stats").and_then(|s| s.get("packets")).and_then(Value::as_int).unwrap_or(-1);
    let at = stream.get("endpoint").and_then(|e| e.get("address")).and_then(Value::as_str).unwrap_or_default();
    (packets, at.to_owned())
}

fn query(ng: &NgClient, id: &str) -> Value {
    let mut q = Value::dict();
    q.insert("command", Value::str("query")).insert("call-id", Value::str(id));
    ng.cmd(q)
}

/// Runs `f` on a thread of its own: it enters namespaces.
fn run(f: fn()) {
    testkit::in_own_thread(f);
}

/// Interfaces "inside" and "outside" (`outside` is its `LOCAL[!ADVERTISED]`).
fn interfaces(outside: &str) -> Vec<String> {
    vec![format!("inside/{RELAY_IN}"), format!("outside/{outside}")]
}

#[test]
fn socket_datapath_relays_ipv4_between_inside_and_outside_in_both_directions() {
    run(socket_ipv4);
}

fn socket_ipv4() {
    let Some(lab) = Lab::new_or_skip("socket_ipv4_realms", None) else { return };
    let dir = TestDir::new("realms-v4");
    let phone = lab.bind(&lab.inside, &format!("{PHONE}:4000"));
    let carrier = lab.bind(&lab.outside, &format!("{CARRIER}:5000"));
    // The sides cannot reach each other but through the relay.
    let direct = phone.send_to(b"x", sa(CARRIER, 5000));
    assert!(direct.is_err(), "the inside has a route to the outside");
    let (mut relay, ng) = lab.start_relay(&dir, "socket", &interfaces(RELAY_OUT));

    // Phone calls carrier: the offer goes out, the answer comes in.
    let (to_carrier, to_phone) = call(&ng, "out-call", &phone, &carrier, ["inside", "outside"]);
    to_carrier.names(RELAY_OUT, &["10.77.1."]);
    to_phone.names(RELAY_IN, &["10.77.2."]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    relays(&phone, relay_in, &carrier, relay_out, 1, 40, 0x1001);
    relays(&carrier, relay_out, &phone, relay_in, 1, 40, 0x1002);
    let q = query(&ng, "out-call");
    assert_eq!(leg(&q, "from-tag"), (40, PHONE.to_owned()), "{q:?}");
    assert_eq!(leg(&q, "to-tag"), (40, CARRIER.to_owned()), "{q:?}");

    // A re-INVITE from the carrier (the sbc names its side first): each
    // leg keeps its interface and port, and media keeps flowing.
    let (to_phone, to_carrier) =
        exchange(&ng, "out-call", ["to-tag", "from-tag"], &carrier, &phone, ["outside", "inside"]);
    to_phone.names(RELAY_IN, &["10.77.2."]);
    to_carrier.names(RELAY_OUT, &["10.77.1."]);
    assert_eq!((to_phone.port(), to_carrier.port()), (relay_in.port(), relay_out.port()), "same ports");
    relays(&phone, relay_in, &carrier, relay_out, 41, 20, 0x1001);
    relays(&carrier, relay_out, &phone, relay_in, 41, 20, 0x1002);

    // Carrier calls phone: the same, the other way round.
    let phone2 = lab.bind(&lab.inside, &format!("{PHONE}:4002"));
    let carrier2 = lab.bind(&lab.outside, &format!("{CARRIER}:5002"));
    let (to_phone, to_carrier) = call(&ng, "in-call", &carrier2, &phone2, ["outside", "inside"]);
    to_phone.names(RELAY_IN, &["10.77.2."]);
    to_carrier.names(RELAY_OUT, &["10.77.1."]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    relays(&carrier2, relay_out, &phone2, relay_in, 1, 40, 0x2001);
    relays(&phone2, relay_in, &carrier2, relay_out, 1, 40, 0x2002);
    assert_eq!(metric("media_relay_drops_total"), 0.0, "{}", counters());

    // A direction naming an interface the relay does not have: an error
    // that names it, and no call.
    let mut offer = sdp_command("offer", "nowhere-call", "from-tag", None, &sdp(phone.local_addr().unwrap()));
    offer.insert("direction", Value::List(vec![Value::str("inside"), Value::str("nowhere")]));
    let reply = ng.cmd(offer);
    assert_eq!(reply.get("result").and_then(Value::as_str), Some("error"), "{reply:?}");
    let reason = reply.get("error-reason").and_then(Value::as_str).unwrap_or_default();
    assert!(reason.contains("`nowhere`"), "{reply:?}");
    let q = query(&ng, "nowhere-call");
    assert_eq!(q.get("result").and_then(Value::as_str), Some("error"), "{q:?}");
    relay.assert_running();
}

#[test]
fn socket_datapath_advertises_the_outside_address_only_toward_the_outside() {
    run(socket_advertised);
}

fn socket_advertised() {
    let Some(lab) = Lab::new_or_skip("socket_advertised_realm", None) else { return };
    let dir = TestDir::new("realms-adv");
    let phone = lab.bind(&lab.inside, &format!("{PHONE}:4000"));
    let carrier = lab.bind(&lab.outside, &format!("{CARRIER}:5000"));
    let (mut relay, ng) = lab.start_relay(&dir, "socket", &interfaces(&format!("{RELAY_OUT}!{ADVERTISED}")));

    // Out: the offer toward the carrier names the public address, never
    // the local one behind the NAT; the inside sees only the inside address.
    let (to_carrier, to_phone) = call(&ng, "out-call", &phone, &carrier, ["inside", "outside"]);
    to_carrier.names(ADVERTISED, &["10.77.1.", RELAY_OUT]);
    to_phone.names(RELAY_IN, &["10.77.2.", ADVERTISED]);
    // The 1:1 NAT in front of the outside address is not modelled: the
    // carrier sends to the local address the public one maps to.
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    relays(&phone, relay_in, &carrier, relay_out, 1, 20, 0x3001);
    relays(&carrier, relay_out, &phone, relay_in, 1, 20, 0x3002);

    // In: the answer toward the carrier names the public address too.
    let phone2 = lab.bind(&lab.inside, &format!("{PHONE}:4002"));
    let carrier2 = lab.bind(&lab.outside, &format!("{CARRIER}:5002"));
    let (to_phone, to_carrier) = call(&ng, "in-call", &carrier2, &phone2, ["outside", "inside"]);
    to_phone.names(RELAY_IN, &["10.77.2.", ADVERTISED]);
    to_carrier.names(ADVERTISED, &["10.77.1.", RELAY_OUT]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    relays(&carrier2, relay_out, &phone2, relay_in, 1, 20, 0x4001);
    relays(&phone2, relay_in, &carrier2, relay_out, 1, 20, 0x4002);
    relay.assert_running();
}

#[test]
fn socket_datapath_relays_between_an_ipv4_inside_and_an_ipv6_outside() {
    run(socket_ipv6_outside);
}

fn socket_ipv6_outside() {
    let Some(lab) = Lab::new_or_skip("socket_ipv6_outside_realm", None) else { return };
    let dir = TestDir::new("realms-v6");
    let phone = lab.bind(&lab.inside, &format!("{PHONE}:4000"));
    let carrier = lab.bind(&lab.outside, &format!("[{CARRIER6}]:5000"));
    let (mut relay, ng) = lab.start_relay(&dir, "socket", &interfaces(RELAY_OUT6));

    let (to_carrier, to_phone) = call(&ng, "v6-out", &phone, &carrier, ["inside", "outside"]);
    to_carrier.names(RELAY_OUT6, &["10.77.", "IP4"]);
    to_phone.names(RELAY_IN, &["fd77:", "IP6"]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT6, to_carrier.port()));
    relays(&phone, relay_in, &carrier, relay_out, 1, 40, 0x5001);
    relays(&carrier, relay_out, &phone, relay_in, 1, 40, 0x5002);
    let q = query(&ng, "v6-out");
    assert_eq!(leg(&q, "from-tag"), (40, PHONE.to_owned()), "{q:?}");
    assert_eq!(leg(&q, "to-tag"), (40, CARRIER6.to_owned()), "{q:?}");

    // And a call from the IPv6 carrier to the IPv4 phone.
    let phone2 = lab.bind(&lab.inside, &format!("{PHONE}:4002"));
    let carrier2 = lab.bind(&lab.outside, &format!("[{CARRIER6}]:5002"));
    let (to_phone, to_carrier) = call(&ng, "v6-in", &carrier2, &phone2, ["outside", "inside"]);
    to_phone.names(RELAY_IN, &["fd77:", "IP6"]);
    to_carrier.names(RELAY_OUT6, &["10.77.", "IP4"]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT6, to_carrier.port()));
    relays(&carrier2, relay_out, &phone2, relay_in, 1, 20, 0x6001);
    relays(&phone2, relay_in, &carrier2, relay_out, 1, 20, 0x6002);
    assert_eq!(metric("media_relay_drops_total"), 0.0, "{}", counters());

    // An IPv4 address toward the IPv6 outside (a misrouted answer, or the
    // interfaces named the wrong way round) could carry no media: an error
    // naming the interface, in the offer as in the answer.
    let mismatch = |reply: &Value, addr: &str, iface: &str| {
        assert_eq!(reply.get("result").and_then(Value::as_str), Some("error"), "{reply:?}");
        let reason = reply.get("error-reason").and_then(Value::as_str).unwrap_or_default();
        assert!(reason.contains(addr) && reason.contains(&format!("`{iface}`")), "{reply:?}");
    };
    let mut offer = sdp_command("offer", "wrong-way", "from-tag", None, &sdp(phone.local_addr().unwrap()));
    offer.insert("direction", Value::List(vec![Value::str("outside"), Value::str("inside")]));
    mismatch(&ng.cmd(offer), PHONE, "outside");
    assert_eq!(query(&ng, "wrong-way").get("result").and_then(Value::as_str), Some("error"), "no call");
    let mut offer = sdp_command("offer", "v4-answer", "from-tag", None, &sdp(phone.local_addr().unwrap()));
    offer.insert("direction", Value::List(vec![Value::str("inside"), Value::str("outside")]));
    Told::of(&ng.cmd(offer));
    let answer = sdp_command("answer", "v4-answer", "from-tag", Some("to-tag"), &sdp(sa(CARRIER, 5004)));
    mismatch(&ng.cmd(answer), CARRIER, "outside");
    relay.assert_running();
}

#[test]
fn xdp_datapath_relays_between_inside_and_outside_and_across_families() {
    run(xdp_realms);
}

fn xdp_realms() {
    let Some(lab) = Lab::new_or_skip("xdp_realms", Some(1)) else { return };
    let dir = TestDir::new("realms-xdp");
    let phone = lab.bind(&lab.inside, &format!("{PHONE}:4000"));
    let carrier = lab.bind(&lab.outside, &format!("{CARRIER}:5000"));
    let ifaces = [interfaces(RELAY_OUT), vec![format!("outside6/{RELAY_OUT6}")]].concat();
    let (mut relay, ng) = lab.start_relay(&dir, "xdp", &ifaces);
    assert_eq!(metric("media_relay_xdp_interfaces{mode=\"native\"}"), 2.0, "ri and ro: {}", relay.log_tail(30));
    let steered = || metric("media_relay_xdp_packets_total{verdict=\"redirected_media\"}");
    let kernel = || metric("media_relay_xdp_kernel_path_total");
    let relayed = || metric("media_relay_packets_relayed_total");

    // IPv4 on both sides.
    let (to_carrier, to_phone) = call(&ng, "xdp-v4", &phone, &carrier, ["inside", "outside"]);
    to_carrier.names(RELAY_OUT, &["10.77.1."]);
    to_phone.names(RELAY_IN, &["10.77.2."]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    // The first packets to each side may take the kernel path while the
    // relay learns the next hop's MAC.
    relays(&phone, relay_in, &carrier, relay_out, 1, 20, 0x7001);
    relays(&carrier, relay_out, &phone, relay_in, 1, 20, 0x7002);
    std::thread::sleep(Duration::from_millis(300));
    let (steered0, kernel0, relayed0) = (steered(), kernel(), relayed());
    relays(&phone, relay_in, &carrier, relay_out, 21, 40, 0x7001);
    relays(&carrier, relay_out, &phone, relay_in, 21, 40, 0x7002);
    // Every packet was steered to an AF_XDP worker by the program on its
    // ingress interface and left from the other interface's TX ring.
    assert_eq!(steered() - steered0, 80.0, "{}", counters());
    assert_eq!(kernel(), kernel0, "once the neighbours are known, nothing takes the kernel path\n{}", counters());
    assert_eq!(relayed() - relayed0, 80.0, "{}", counters());
    let q = query(&ng, "xdp-v4");
    assert_eq!(leg(&q, "from-tag"), (60, PHONE.to_owned()), "{q:?}");
    assert_eq!(leg(&q, "to-tag"), (60, CARRIER.to_owned()), "{q:?}");

    // IPv4 inside, IPv6 outside: the worker replaces the IP header (the
    // frame grows or shrinks by 20 bytes) and sends from the TX ring too.
    let phone6 = lab.bind(&lab.inside, &format!("{PHONE}:4002"));
    let carrier6 = lab.bind(&lab.outside, &format!("[{CARRIER6}]:5002"));
    let (to_carrier, to_phone) = call(&ng, "xdp-v6", &phone6, &carrier6, ["inside", "outside6"]);
    to_carrier.names(RELAY_OUT6, &["10.77.", "IP4"]);
    to_phone.names(RELAY_IN, &["fd77:", "IP6"]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT6, to_carrier.port()));
    // The carrier's IPv6 neighbour is learned on the first packets.
    relays(&phone6, relay_in, &carrier6, relay_out, 1, 10, 0x8001);
    relays(&carrier6, relay_out, &phone6, relay_in, 1, 10, 0x8002);
    std::thread::sleep(Duration::from_millis(300));
    let (steered0, kernel0, relayed0) = (steered(), kernel(), relayed());
    relays(&phone6, relay_in, &carrier6, relay_out, 11, 30, 0x8001);
    relays(&carrier6, relay_out, &phone6, relay_in, 11, 30, 0x8002);
    assert_eq!(steered() - steered0, 60.0, "the AF_XDP workers received every packet\n{}", counters());
    assert_eq!(kernel(), kernel0, "and sent each from the TX ring\n{}", counters());
    assert_eq!(relayed() - relayed0, 60.0, "{}", counters());
    assert_eq!(metric("media_relay_drops_total"), 0.0, "{}", counters());
    let q = query(&ng, "xdp-v6");
    assert_eq!(leg(&q, "from-tag"), (40, PHONE.to_owned()), "{q:?}");
    assert_eq!(leg(&q, "to-tag"), (40, CARRIER6.to_owned()), "{q:?}");
    relay.assert_running();
}

#[test]
fn xdp_datapath_relays_across_families_when_rss_spreads_flows_over_queues() {
    run(xdp_realms_two_queues);
}

/// Two rx queues per interface, one worker each: a call's frames that
/// arrive on the other worker's queue are handed to its owner, which must
/// still be able to turn them from IPv4 into IPv6 and back on its TX ring.
fn xdp_realms_two_queues() {
    const CALLS: u16 = 8;
    let Some(lab) = Lab::new_or_skip("xdp_realms_two_queues", Some(2)) else { return };
    let dir = TestDir::new("realms-xdp-mq");
    let (mut relay, ng) = lab.start_relay(&dir, "xdp", &interfaces(RELAY_OUT6));
    assert_eq!(metric("media_relay_xdp_queues{mode=\"copy\"}"), 2.0, "{}", relay.log_tail(30));
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let phone = lab.bind(&lab.inside, &format!("{PHONE}:{}", 4100 + i));
        let carrier = lab.bind(&lab.outside, &format!("[{CARRIER6}]:{}", 5100 + i));
        let id = format!("mq-{i}");
        let (to_carrier, to_phone) = call(&ng, &id, &phone, &carrier, ["inside", "outside"]);
        let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT6, to_carrier.port()));
        calls.push((phone, carrier, relay_in, relay_out));
    }
    // Neighbours first (the first packets may take the kernel path).
    let (phone, carrier, relay_in, relay_out) = &calls[0];
    relays(phone, *relay_in, carrier, *relay_out, 1, 4, 0x9000);
    relays(carrier, *relay_out, phone, *relay_in, 1, 4, 0x9001);
    std::thread::sleep(Duration::from_millis(300));
    let kernel = metric("media_relay_xdp_kernel_path_total");
    for (k, (phone, carrier, relay_in, relay_out)) in calls.iter().enumerate() {
        let ssrc = 0x9100 + 2 * k as u32;
        relays(phone, *relay_in, carrier, *relay_out, 11, 20, ssrc);
        relays(carrier, *relay_out, phone, *relay_in, 11, 20, ssrc + 1);
    }
    for w in ["0", "1"] {
        let got = metric(&format!("media_relay_packets_received_total{{worker=\"{w}\"}}"));
        assert!(got > 0.0, "queue {w} received nothing: the lab did not spread flows\n{}", counters());
    }
    assert!(metric("media_relay_xdp_queue_handoff_total") >= 20.0, "{}", counters());
    assert_eq!(
        metric("media_relay_xdp_kernel_path_total"),
        kernel,
        "handed frames too left from a TX ring\n{}",
        counters()
    );
    assert_eq!(metric("media_relay_drops_total"), 0.0, "{}", counters());
    relay.assert_running();
}

#[test]
fn xdp_datapath_refuses_a_realm_whose_device_has_no_xdp_and_auto_falls_back() {
    run(xdp_device_missing);
}

/// The outside's device is left out of `relay.xdp_interfaces`: media from
/// the carrier would reach only a UDP socket no `AF_XDP` worker reads. With
/// `datapath = "xdp"` the relay exits naming the interface and the keys;
/// with `auto` it says so and relays both ways on sockets.
fn xdp_device_missing() {
    let Some(lab) = Lab::new_or_skip("xdp_realm_device_missing", Some(1)) else { return };
    let dir = TestDir::new("realms-xdp-missing");
    let phone = lab.bind(&lab.inside, &format!("{PHONE}:4000"));
    let carrier = lab.bind(&lab.outside, &format!("{CARRIER}:5000"));
    let why = "relay.interfaces `outside` (10.77.2.1) is on the network of `ro`, which is not in relay.xdp_interfaces";

    let mut strict = lab.spawn_relay(&dir, "xdp", &interfaces(RELAY_OUT), &["ri"]);
    let status = strict.wait_timeout(Duration::from_secs(15)).expect("the relay kept running");
    assert!(!status.success());
    assert!(strict.log_tail(20).contains(why), "{}", strict.log_tail(20));
    drop(strict);

    let mut relay = lab.spawn_relay(&dir, "auto", &interfaces(RELAY_OUT), &["ri"]);
    let ng = NgClient::new(NG);
    let up = testkit::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        relay.try_wait().is_some() || ng.ping()
    });
    assert!(up && relay.try_wait().is_none(), "relay did not come up:\n{}", relay.log_tail(30));
    assert_eq!(metric("media_relay_datapath{datapath=\"socket\"}"), 1.0, "{}", relay.log_tail(30));
    let log = relay.log_tail(40);
    assert!(log.contains("falling back to the socket datapath") && log.contains(why), "{log}");
    let (to_carrier, to_phone) = call(&ng, "fallback", &phone, &carrier, ["inside", "outside"]);
    let (relay_in, relay_out) = (sa(RELAY_IN, to_phone.port()), sa(RELAY_OUT, to_carrier.port()));
    relays(&phone, relay_in, &carrier, relay_out, 1, 20, 0xa001);
    relays(&carrier, relay_out, &phone, relay_in, 1, 20, 0xa002);
    relay.assert_running();
}
