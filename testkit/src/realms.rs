//! The two-realm lab: an sbc on the border between a private network and a
//! carrier's, each in network namespaces of its own (named per process,
//! removed on drop).
//!
//! ```text
//!  inside ns                 sbc ns                        outside ns
//!  phone 10.88.1.2 ─ eth0 ══ inside0  10.88.1.1
//!  pbx   10.88.1.3                    outside0 10.88.2.1 ══ eth0 ─ carrier 10.88.2.2
//!                                              fd88:2::1/64          fd88:2::2/64
//! ```
//!
//! With [`RealmLab::behind_nat`], a `nat` namespace sits between the sbc and
//! the carrier: the sbc's outside leg is private and the carrier reaches it
//! only at the public address [`PUBLIC`], which the NAT forwards (DNAT) to
//! [`SBC_OUTSIDE`]; what the sbc sends out leaves from [`PUBLIC`] (SNAT).
//!
//! ```text
//!  sbc ns outside0 10.88.2.1 ══ priv0 10.88.2.254 (nat ns) pub0 203.0.113.7 ══ eth0 203.0.113.2 (outside ns)
//! ```
//!
//! The inside and outside namespaces have no route to each other, and the
//! sbc namespace does not forward: [`RealmLab::check`] proves both, and
//! that every peer reaches the sbc's address on its side.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use crate::capture::Capture;
use crate::Netns;

/// The sbc's address in the inside realm.
pub const SBC_INSIDE: &str = "10.88.1.1";
/// A phone in the inside realm.
pub const PHONE: &str = "10.88.1.2";
/// A PBX in the inside realm.
pub const PBX: &str = "10.88.1.3";
/// The sbc's IPv4 address in the outside realm.
pub const SBC_OUTSIDE: &str = "10.88.2.1";
/// The carrier's IPv4 address (without NAT).
pub const CARRIER: &str = "10.88.2.2";
/// The sbc's IPv6 address in the outside realm (without NAT).
pub const SBC_OUTSIDE6: &str = "fd88:2::1";
/// The carrier's IPv6 address (without NAT).
pub const CARRIER6: &str = "fd88:2::2";
/// The NAT's address on the sbc's outside segment.
pub const NAT_INNER: &str = "10.88.2.254";
/// The public address of the sbc's outside realm behind the NAT.
pub const PUBLIC: &str = "203.0.113.7";
/// The carrier's address behind the NAT, on the public segment.
pub const CARRIER_PUBLIC: &str = "203.0.113.2";

/// The sbc's interface toward the inside, in the sbc namespace.
pub const SBC_INSIDE_DEV: &str = "inside0";
/// The sbc's interface toward the outside (or the NAT), in the sbc namespace.
pub const SBC_OUTSIDE_DEV: &str = "outside0";
/// The peers' interface, in the inside and outside namespaces.
pub const PEER_DEV: &str = "eth0";

/// The namespaces of the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Phones and the PBX.
    Inside,
    /// The sbc.
    Sbc,
    /// The carrier.
    Outside,
    /// The NAT in front of the sbc's outside realm (only [`RealmLab::behind_nat`]).
    Nat,
}

/// The namespaces, their links and addresses; removed on drop.
pub struct RealmLab {
    /// Phones and the PBX.
    pub inside: Netns,
    /// The sbc.
    pub sbc: Netns,
    /// The carrier.
    pub outside: Netns,
    /// The NAT, when the outside realm is behind one.
    pub nat: Option<Netns>,
}

impl RealmLab {
    /// The lab without NAT (IPv4 on both sides, IPv6 too outside). Needs
    /// root.
    pub fn new(tag: &str) -> Result<RealmLab, String> {
        let lab = RealmLab::namespaces(tag, false)?;
        lab.link_inside()?;
        let (sbc, out) = (&lab.sbc, &lab.outside);
        sbc.veth(SBC_OUTSIDE_DEV, out, PEER_DEV, None)?;
        sbc.addr(SBC_OUTSIDE_DEV, &format!("{SBC_OUTSIDE}/24"))?;
        sbc.addr(SBC_OUTSIDE_DEV, &format!("{SBC_OUTSIDE6}/64"))?;
        sbc.up(SBC_OUTSIDE_DEV)?;
        out.addr(PEER_DEV, &format!("{CARRIER}/24"))?;
        out.addr(PEER_DEV, &format!("{CARRIER6}/64"))?;
        out.up(PEER_DEV)?;
        Ok(lab)
    }

    /// The lab with the outside realm behind a NAT (IPv4 only): see the
    /// module doc. Needs root and `iptables`.
    pub fn behind_nat(tag: &str) -> Result<RealmLab, String> {
        let lab = RealmLab::namespaces(tag, true)?;
        lab.link_inside()?;
        let (sbc, out) = (&lab.sbc, &lab.outside);
        let nat = lab.nat.as_ref().ok_or("no nat namespace")?;
        sbc.veth(SBC_OUTSIDE_DEV, nat, "priv0", None)?;
        sbc.addr(SBC_OUTSIDE_DEV, &format!("{SBC_OUTSIDE}/24"))?;
        sbc.up(SBC_OUTSIDE_DEV)?;
        nat.addr("priv0", &format!("{NAT_INNER}/24"))?;
        nat.up("priv0")?;
        nat.veth("pub0", out, PEER_DEV, None)?;
        nat.addr("pub0", &format!("{PUBLIC}/24"))?;
        nat.up("pub0")?;
        out.addr(PEER_DEV, &format!("{CARRIER_PUBLIC}/24"))?;
        out.up(PEER_DEV)?;
        // The sbc reaches the public network through the NAT only.
        sbc.ip(&["route", "add", "203.0.113.0/24", "via", NAT_INNER])?;
        nat.sysctl("net.ipv4.ip_forward=1")?;
        let nat_rule = |args: &[&str]| nat.exec("iptables", args);
        nat_rule(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "pub0",
            "-d",
            PUBLIC,
            "-j",
            "DNAT",
            "--to-destination",
            SBC_OUTSIDE,
        ])?;
        nat_rule(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "pub0",
            "-s",
            SBC_OUTSIDE,
            "-j",
            "SNAT",
            "--to-source",
            PUBLIC,
        ])?;
        Ok(lab)
    }

    fn namespaces(tag: &str, nat: bool) -> Result<RealmLab, String> {
        let inside = Netns::with_lo(&format!("{tag}-in"))?;
        let sbc = Netns::with_lo(&format!("{tag}-sbc"))?;
        let outside = Netns::with_lo(&format!("{tag}-out"))?;
        let nat = if nat { Some(Netns::with_lo(&format!("{tag}-nat"))?) } else { None };
        // The sbc joins the realms; it never routes between them.
        sbc.sysctl("net.ipv4.ip_forward=0")?;
        sbc.sysctl("net.ipv6.conf.all.forwarding=0")?;
        Ok(RealmLab { inside, sbc, outside, nat })
    }

    fn link_inside(&self) -> Result<(), String> {
        let (sbc, ins) = (&self.sbc, &self.inside);
        sbc.veth(SBC_INSIDE_DEV, ins, PEER_DEV, None)?;
        sbc.addr(SBC_INSIDE_DEV, &format!("{SBC_INSIDE}/24"))?;
        sbc.up(SBC_INSIDE_DEV)?;
        ins.addr(PEER_DEV, &format!("{PHONE}/24"))?;
        ins.addr(PEER_DEV, &format!("{PBX}/24"))?;
        ins.up(PEER_DEV)
    }

    /// Whether the outside realm is behind the NAT.
    pub fn natted(&self) -> bool {
        self.nat.is_some()
    }

    /// The carrier's IPv4 address.
    pub fn carrier(&self) -> &'static str {
        if self.natted() {
            CARRIER_PUBLIC
        } else {
            CARRIER
        }
    }

    /// The sbc's outside IPv4 address as the carrier sees it (the public
    /// one behind the NAT).
    pub fn sbc_outside_seen(&self) -> &'static str {
        if self.natted() {
            PUBLIC
        } else {
            SBC_OUTSIDE
        }
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: Host) -> &Netns {
        match host {
            Host::Inside => &self.inside,
            Host::Sbc => &self.sbc,
            Host::Outside => &self.outside,
            Host::Nat => self.nat.as_ref().expect("this lab has no NAT"),
        }
    }

    /// Runs `f` on a thread of its own inside `host`'s namespace.
    pub fn run_in<T: Send + 'static>(&self, host: Host, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.ns(host).path();
        crate::in_own_thread(move || {
            crate::sys::enter_netns(&path).unwrap_or_else(|e| panic!("entering {path}: {e}"));
            f()
        })
    }

    /// Captures the peers' side of the wire: `eth0` in the inside or
    /// outside namespace (what the phones or the carrier see).
    pub fn capture(&self, host: Host) -> Result<Capture, String> {
        let label = match host {
            Host::Inside => "inside",
            Host::Outside => "outside",
            Host::Sbc | Host::Nat => return Err("capture the peers' side: Inside or Outside".into()),
        };
        Capture::start(self.ns(host), PEER_DEV, label)
    }

    /// A UDP datagram from `from` (in `from_host`) to `to`, answered by a
    /// socket bound to `bind` in `to_host`. Returns the source the receiver
    /// saw and the source the reply came from.
    pub fn udp_exchange(
        &self,
        from_host: Host,
        from: SocketAddr,
        to: SocketAddr,
        to_host: Host,
        bind: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), String> {
        let (bound_tx, bound_rx) = mpsc::channel::<Result<(), String>>();
        let rx_path = self.ns(to_host).path();
        let receiver = std::thread::spawn(move || -> Result<SocketAddr, String> {
            let ready = crate::sys::enter_netns(&rx_path)
                .map_err(|e| e.to_string())
                .and_then(|()| UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}")));
            let sock = match ready {
                Ok(s) => {
                    let _ = bound_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let (_, seen) = sock.recv_from(&mut buf).map_err(|e| format!("nothing reached {bind}: {e}"))?;
            sock.send_to(b"pong", seen).map_err(|e| format!("reply to {seen}: {e}"))?;
            Ok(seen)
        });
        bound_rx.recv_timeout(Duration::from_secs(5)).map_err(|e| e.to_string())??;
        let reply = self.run_in(from_host, move || -> Result<SocketAddr, String> {
            let sock = UdpSocket::bind(from).map_err(|e| format!("bind {from}: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
            sock.send_to(b"ping", to).map_err(|e| format!("send {from} -> {to}: {e}"))?;
            let mut buf = [0u8; 64];
            let (_, replied) = sock.recv_from(&mut buf).map_err(|e| format!("no reply from {to}: {e}"))?;
            Ok(replied)
        });
        let seen = receiver.join().map_err(|_| "receiver panicked".to_owned())??;
        Ok((seen, reply?))
    }

    /// Whether anything in `host` can send to `to` at all: `Err` with the
    /// kernel's refusal (no route) is what isolation looks like.
    pub fn can_send(&self, host: Host, to: SocketAddr) -> Result<(), String> {
        self.run_in(host, move || {
            let any: IpAddr = if to.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
            let sock = UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|e| format!("bind {any}: {e}"))?;
            sock.send_to(b"leak?", to).map(|_| ()).map_err(|e| e.to_string())
        })
    }

    /// Checks the lab: each peer reaches the sbc's address on its side (and
    /// gets its answer back), behind the NAT through the public address
    /// only; and nothing on one side can send to the other.
    pub fn check(&self) -> Result<(), String> {
        let sa = |ip: &str, port: u16| -> SocketAddr { SocketAddr::new(ip.parse().expect("a lab address"), port) };
        let (seen, reply) =
            self.udp_exchange(Host::Inside, sa(PHONE, 0), sa(SBC_INSIDE, 9999), Host::Sbc, sa(SBC_INSIDE, 9999))?;
        expect_ip(seen, PHONE, "the sbc sees the phone")?;
        expect_ip(reply, SBC_INSIDE, "the phone hears the sbc")?;
        let carrier = self.carrier();
        let (seen, reply) = self.udp_exchange(
            Host::Outside,
            sa(carrier, 0),
            sa(self.sbc_outside_seen(), 9999),
            Host::Sbc,
            sa(SBC_OUTSIDE, 9999),
        )?;
        expect_ip(seen, carrier, "the sbc sees the carrier")?;
        expect_ip(reply, self.sbc_outside_seen(), "the carrier hears the sbc at the address it called")?;
        if !self.natted() {
            let (seen, reply) = self.udp_exchange(
                Host::Outside,
                sa(CARRIER6, 0),
                sa(SBC_OUTSIDE6, 9999),
                Host::Sbc,
                sa(SBC_OUTSIDE6, 9999),
            )?;
            expect_ip(seen, CARRIER6, "the sbc sees the carrier over IPv6")?;
            expect_ip(reply, SBC_OUTSIDE6, "the carrier hears the sbc over IPv6")?;
        }
        // Isolation: no route from one side to the other, in any family.
        let mut leaks = Vec::new();
        let mut isolated = |host: Host, to: SocketAddr| {
            if self.can_send(host, to).is_ok() {
                leaks.push(format!("{host:?} can send to {to}"));
            }
        };
        isolated(Host::Inside, sa(self.carrier(), 9));
        isolated(Host::Inside, sa(SBC_OUTSIDE, 9));
        isolated(Host::Inside, sa(CARRIER6, 9));
        isolated(Host::Inside, sa(SBC_OUTSIDE6, 9));
        isolated(Host::Outside, sa(PHONE, 9));
        isolated(Host::Outside, sa(SBC_INSIDE, 9));
        if self.natted() {
            isolated(Host::Outside, sa(SBC_OUTSIDE, 9));
            isolated(Host::Inside, sa(PUBLIC, 9));
        }
        if leaks.is_empty() {
            Ok(())
        } else {
            Err(format!("the realms are not isolated: {}", leaks.join("; ")))
        }
    }
}

fn expect_ip(got: SocketAddr, want: &str, what: &str) -> Result<(), String> {
    if got.ip().to_string() == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want}, got {got}"))
    }
}
