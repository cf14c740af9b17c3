//! RFC 3263 selection and TTL caching against a table of DNS records.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::cache::{Cache, CacheConfig};
use super::rfc3263::{resolve, Answer, HostSpec, Lookup, LookupError, Naptr, Resolution, Server, Srv};
use crate::transport::Proto;

/// A zone: records by name; every query is recorded.
#[derive(Default)]
struct Zone {
    naptr: HashMap<String, Vec<Naptr>>,
    srv: HashMap<String, Vec<Srv>>,
    a: HashMap<String, Vec<IpAddr>>,
    failing: Vec<String>,
    asked: Vec<String>,
}

impl Zone {
    fn get<T: Clone>(&mut self, kind: &str, name: &str, m: &HashMap<String, Vec<T>>) -> Answer<T> {
        self.asked.push(format!("{kind} {name}"));
        if self.failing.iter().any(|f| f == name) {
            return Err(LookupError::Failed("SERVFAIL".into()));
        }
        m.get(name).map(|v| (v.clone(), 300)).ok_or(LookupError::NotFound)
    }
    fn naptr_rec(&mut self, name: &str, order: u16, service: &str, repl: &str) {
        let n = Naptr { order, preference: 10, flags: "s".into(), service: service.into(), replacement: repl.into() };
        self.naptr.entry(name.into()).or_default().push(n);
    }
    fn srv_rec(&mut self, name: &str, priority: u16, weight: u16, port: u16, target: &str) {
        self.srv.entry(name.into()).or_default().push(Srv { priority, weight, port, target: target.into() });
    }
    fn host(&mut self, name: &str, ip: &str) {
        self.a.entry(name.into()).or_default().push(ip.parse().unwrap());
    }
}

impl Lookup for Zone {
    fn naptr(&mut self, name: &str) -> Answer<Naptr> {
        let m = std::mem::take(&mut self.naptr);
        let r = self.get("NAPTR", name, &m);
        self.naptr = m;
        r
    }
    fn srv(&mut self, name: &str) -> Answer<Srv> {
        let m = std::mem::take(&mut self.srv);
        let r = self.get("SRV", name, &m);
        self.srv = m;
        r
    }
    fn addrs(&mut self, name: &str) -> Answer<IpAddr> {
        let m = std::mem::take(&mut self.a);
        let r = self.get("A", name, &m);
        self.a = m;
        r
    }
}

fn spec(s: &str) -> HostSpec {
    HostSpec::parse(s, None, false).unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Always the same draw.
fn fixed(v: u32) -> impl FnMut() -> u32 {
    move || v
}

fn carrier() -> Zone {
    let mut z = Zone::default();
    z.naptr_rec("carrier.example", 10, "SIP+D2U", "_sip._udp.carrier.example.");
    z.naptr_rec("carrier.example", 20, "SIP+D2T", "_sip._tcp.carrier.example.");
    z.naptr_rec("carrier.example", 5, "E2U+sip", "ignored.example.");
    z.srv_rec("_sip._udp.carrier.example", 10, 1, 5070, "a.carrier.example.");
    z.srv_rec("_sip._udp.carrier.example", 20, 1, 5071, "b.carrier.example.");
    z.srv_rec("_sip._tcp.carrier.example", 10, 1, 5080, "a.carrier.example.");
    z.host("a.carrier.example", "10.0.0.1");
    z.host("b.carrier.example", "10.0.0.2");
    z.host("carrier.example", "10.0.0.9");
    z
}

#[test]
fn host_spec_parsing() {
    assert_eq!(spec("Carrier.Example.").host, "carrier.example");
    assert_eq!(spec("carrier.example:5080").port, Some(5080));
    assert_eq!(spec("[2001:db8::1]:5070").ip(), Some("2001:db8::1".parse().unwrap()));
    assert_eq!(spec("[2001:db8::1]").port, None);
    assert_eq!(spec("192.0.2.1").port, None);
    assert!(!spec("192.0.2.1").needs_dns());
    assert!(spec("carrier.example").needs_dns());
    for bad in ["", "a b", "host:0", "host:99999", "-bad.example", "999.1.1.1", "[::1", "x..y"] {
        assert_eq!(HostSpec::parse(bad, None, false), None, "{bad}");
    }
}

#[test]
fn naptr_then_srv_then_a() {
    let mut z = carrier();
    let r = resolve(&spec("carrier.example"), &mut z).unwrap();
    let order = r.order(&mut fixed(0));
    assert_eq!(
        order,
        vec![(sa("10.0.0.1:5070"), Proto::Udp), (sa("10.0.0.1:5080"), Proto::Tcp), (sa("10.0.0.2:5071"), Proto::Udp)],
        "by SRV priority; equal priorities keep the NAPTR order"
    );
    assert_eq!(z.asked[0], "NAPTR carrier.example");
    assert!(!z.asked.iter().any(|q| q.contains("ignored")), "services we do not speak are skipped");
}

#[test]
fn explicit_port_or_numeric_ip_skip_naptr_and_srv() {
    let mut z = carrier();
    let r = resolve(&spec("carrier.example:5090"), &mut z).unwrap();
    assert_eq!(r.order(&mut fixed(0)), vec![(sa("10.0.0.9:5090"), Proto::Udp)]);
    assert_eq!(z.asked, vec!["A carrier.example"]);
    let mut z = carrier();
    let r = resolve(&spec("192.0.2.7"), &mut z).unwrap();
    assert_eq!(r.order(&mut fixed(0)), vec![(sa("192.0.2.7:5060"), Proto::Udp)]);
    let tls = HostSpec::parse("192.0.2.7", None, true).unwrap();
    assert_eq!(resolve(&tls, &mut z).unwrap().order(&mut fixed(0)), vec![(sa("192.0.2.7:5061"), Proto::Tls)]);
    assert!(z.asked.is_empty(), "no DNS for an IP literal");
}

#[test]
fn transport_param_skips_naptr_and_picks_its_srv() {
    let mut z = carrier();
    let s = HostSpec::parse("carrier.example", Some(Proto::Tcp), false).unwrap();
    let r = resolve(&s, &mut z).unwrap();
    assert_eq!(r.order(&mut fixed(0)), vec![(sa("10.0.0.1:5080"), Proto::Tcp)]);
    assert_eq!(z.asked[0], "SRV _sip._tcp.carrier.example");
    // No SRV for that transport: A/AAAA with the default port.
    let mut z = carrier();
    let s = HostSpec::parse("carrier.example", Some(Proto::Tls), false).unwrap();
    let r = resolve(&s, &mut z).unwrap();
    assert_eq!(r.order(&mut fixed(0)), vec![(sa("10.0.0.9:5061"), Proto::Tls)]);
}

#[test]
fn without_naptr_srv_per_transport_and_sips_uses_tls_only() {
    let mut z = carrier();
    z.naptr.clear();
    let r = resolve(&spec("carrier.example"), &mut z).unwrap();
    let got = r.order(&mut fixed(0));
    assert_eq!(got[0], (sa("10.0.0.1:5070"), Proto::Udp));
    assert!(got.contains(&(sa("10.0.0.1:5080"), Proto::Tcp)));
    let mut z = carrier();
    z.srv_rec("_sips._tcp.carrier.example", 1, 1, 5061, "a.carrier.example.");
    z.naptr_rec("carrier.example", 1, "SIPS+D2T", "_sips._tcp.carrier.example.");
    let s = HostSpec::parse("carrier.example", None, true).unwrap();
    assert_eq!(resolve(&s, &mut z).unwrap().order(&mut fixed(0)), vec![(sa("10.0.0.1:5061"), Proto::Tls)]);
    // Nothing but an A record.
    let mut z = Zone::default();
    z.host("plain.example", "10.0.0.5");
    assert_eq!(
        resolve(&spec("plain.example"), &mut z).unwrap().order(&mut fixed(0)),
        vec![(sa("10.0.0.5:5060"), Proto::Udp)]
    );
    assert_eq!(resolve(&spec("nowhere.example"), &mut z), Err(LookupError::NotFound));
    z.failing.push("down.example".into());
    assert!(matches!(resolve(&spec("down.example"), &mut z), Err(LookupError::Failed(_))), "a failure is not NXDOMAIN");
}

fn server(priority: u16, weight: u16, ip: &str) -> Server {
    Server { priority, weight, addrs: vec![sa(ip)], proto: Proto::Udp, name: ip.into() }
}

#[test]
fn srv_weighted_order_follows_rfc_2782() {
    let r = Resolution {
        servers: vec![server(20, 0, "10.0.0.9:1"), server(10, 1, "10.0.0.1:1"), server(10, 3, "10.0.0.3:1")],
        ttl: 60,
    };
    // Running sums over [w1, w3] are 1 and 4: a draw of 0 or 1 picks the
    // first, 2..=4 the second. The priority 20 server always comes last.
    let first = |draw: u32| r.order(&mut fixed(draw))[0].0;
    assert_eq!(first(0), sa("10.0.0.1:1"));
    assert_eq!(first(1), sa("10.0.0.1:1"));
    assert_eq!(first(2), sa("10.0.0.3:1"));
    assert_eq!(first(4), sa("10.0.0.3:1"));
    assert_eq!(r.order(&mut fixed(2))[2].0, sa("10.0.0.9:1"));
    // Over many draws: RFC 2782 draws from 0..=sum (5 values here), of
    // which 2, 3 and 4 pick the weight-3 server: 3/5 of the time.
    let mut x = 12345u32;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let heavy = (0..4000).filter(|_| r.order(&mut rand)[0].0 == sa("10.0.0.3:1")).count();
    assert!((2250..2550).contains(&heavy), "{heavy}");
    // Zero weights: picked only on a draw of 0, otherwise after the others.
    let z = Resolution { servers: vec![server(1, 5, "10.0.0.5:1"), server(1, 0, "10.0.0.0:1")], ttl: 1 };
    assert_eq!(z.order(&mut fixed(0))[0].0, sa("10.0.0.0:1"));
    assert_eq!(z.order(&mut fixed(3))[0].0, sa("10.0.0.5:1"));
}

#[test]
fn cache_honours_ttl_with_caps_and_negative_caching() {
    let cfg = CacheConfig {
        min_ttl: Duration::from_secs(10),
        max_ttl: Duration::from_secs(100),
        negative_ttl: Duration::from_secs(30),
    };
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let mut c = Cache::new(cfg);
    let s = spec("carrier.example");
    let res = |ttl| Resolution { servers: vec![server(1, 1, "10.0.0.1:5060")], ttl };
    assert!(c.get(&s, t0).is_none());
    assert_eq!(c.store(&s, Ok(res(60)), t0), Duration::from_secs(60), "its own TTL");
    assert!(c.get(&s, at(59)).is_some());
    assert!(c.get(&s, at(60)).is_none(), "expired at the TTL");
    assert_eq!(c.store(&s, Ok(res(1)), t0), Duration::from_secs(10), "raised to min_ttl");
    assert_eq!(c.store(&s, Ok(res(86400)), t0), Duration::from_secs(100), "cut to max_ttl");
    // A server failure keeps the answer we have, for negative_ttl.
    assert_eq!(c.store(&s, Err(LookupError::Failed("timeout".into())), at(100)), Duration::from_secs(30));
    assert!(c.get(&s, at(129)).unwrap().is_ok(), "served stale through a DNS outage");
    // NXDOMAIN replaces it, for negative_ttl.
    c.store(&s, Err(LookupError::NotFound), at(130));
    assert_eq!(c.get(&s, at(159)).cloned().unwrap().unwrap_err(), LookupError::NotFound);
    assert!(c.get(&s, at(160)).is_none(), "asked again after negative_ttl");
    c.purge_expired(at(160));
    assert!(c.peek(&s).is_none(), "expired answers are purged");
    // A failure with nothing to keep is negative too.
    let other = spec("other.example");
    c.store(&other, Err(LookupError::Failed("timeout".into())), t0);
    assert!(c.get(&other, at(29)).unwrap().is_err());
}
