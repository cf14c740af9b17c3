//! A trunk named by DNS in the proxy: its resolved targets in SRV order,
//! failover from one target to the next within a call, health per target,
//! and what happens while the name has no answer. The resolver is a fixed
//! cache filled by the test.

use std::time::Duration;

use super::sip::{respond, Request};
use super::{only_to, Harness, CALLER, TRUNK_B};
use crate::dns::rfc3263::{Resolution, Server};
use crate::dns::{CacheConfig, Dns, HostSpec};
use crate::transport::Proto;

const PRIMARY: &str = "127.0.0.1:5071";
const SECONDARY: &str = "127.0.0.1:5072";

/// Trunk `a` is `carrier.example` (probes off, as in the harness), then `b`.
fn harness() -> (Harness, Dns) {
    let cfg = Harness::config().replace("address = \"127.0.0.1:5070\"", "address = \"carrier.example\"")
        + "\n[dns]\nservers = [\"127.0.0.1:9\"]\n";
    let mut h = Harness::with_config(&cfg);
    let dns = Dns::fixed(CacheConfig::default());
    h.proxy.core.dns_trunks.set_resolver(dns.clone());
    (h, dns)
}

/// What trunk `a` is resolved from (the embedded config gives it
/// `transport = "udp"`: SRV `_sip._udp` without NAPTR).
fn spec(h: &Harness) -> HostSpec {
    let spec = h.proxy.core.cfg.trunks[0].dns.clone().unwrap();
    assert_eq!((spec.host.as_str(), spec.transport), ("carrier.example", Some(Proto::Udp)));
    spec
}

fn resolve(h: &Harness, dns: &Dns) {
    let server = |priority, addr: &str| Server {
        priority,
        weight: 1,
        addrs: vec![addr.parse().unwrap()],
        proto: Proto::Udp,
        name: addr.into(),
    };
    let r = Resolution { servers: vec![server(20, SECONDARY), server(10, PRIMARY)], ttl: 300 };
    dns.insert(&spec(h), Ok(r), h.now);
}

#[test]
fn a_trunk_named_by_dns_waits_for_its_answer_then_tries_its_targets_in_srv_order() {
    let (mut h, dns) = harness();
    // No answer yet: the trunk is passed over, the call goes to trunk b.
    let out = h.send(CALLER, &Request::new("INVITE", "d1").sdp(6000).build());
    let inv = only_to(&out, TRUNK_B).msg.clone();
    let out = h.send(TRUNK_B, &respond(&inv, 200, Some(7000)));
    assert_eq!(only_to(&out, CALLER).code(), 200);

    resolve(&h, &dns);
    let out = h.send(CALLER, &Request::new("INVITE", "d2").sdp(6000).build());
    let first = only_to(&out, PRIMARY).msg.clone();
    assert_eq!(first.request_uri(), Some("sip:1000@carrier.example"), "the name stays in the Request-URI");
    // A 503 from the primary target: the secondary target of the same
    // trunk, before trunk b.
    let out = h.send(PRIMARY, &respond(&first, 503, None));
    let second = only_to(&out, SECONDARY).msg.clone();
    let out = h.send(SECONDARY, &respond(&second, 200, Some(7000)));
    assert_eq!(only_to(&out, CALLER).code(), 200);
}

#[test]
fn failures_take_a_target_down_not_the_trunk() {
    let (mut h, dns) = harness();
    resolve(&h, &dns);
    // Three 503s from the primary (health.down_after = 3).
    for k in 0..3 {
        let out = h.send(CALLER, &Request::new("INVITE", &format!("f{k}")).sdp(6000).build());
        let first = only_to(&out, PRIMARY).msg.clone();
        let out = h.send(PRIMARY, &respond(&first, 503, None));
        let second = only_to(&out, SECONDARY).msg.clone();
        h.send(SECONDARY, &respond(&second, 200, Some(7000)));
    }
    // The primary target is DOWN: the next call goes straight to the
    // secondary; the trunk is still UP.
    let out = h.send(CALLER, &Request::new("INVITE", "f9").sdp(6000).build());
    assert!(out.iter().all(|s| s.dest != super::addr(PRIMARY)), "{out:#?}");
    only_to(&out, SECONDARY);
    let table = h.proxy.core.control("trunks");
    assert!(table.lines().any(|l| l.contains(PRIMARY) && l.contains("DOWN")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("a ") && l.contains("carrier.example") && l.contains("UP")), "{table}");
    // Not probed: back after the hold-down (10 s by default).
    h.advance(Duration::from_secs(11));
    let out = h.send(CALLER, &Request::new("INVITE", "f10").sdp(6000).build());
    only_to(&out, PRIMARY);
}

#[test]
fn no_target_at_all_gets_503_with_retry_after() {
    let cfg = Harness::config()
        .replace("address = \"127.0.0.1:5070\"", "address = \"carrier.example\"")
        .replace("trunks = [\"a\", \"b\"]", "trunks = [\"a\"]")
        + "\n[dns]\nservers = [\"127.0.0.1:9\"]\n";
    let mut h = Harness::with_config(&cfg);
    let dns = Dns::fixed(CacheConfig::default());
    h.proxy.core.dns_trunks.set_resolver(dns.clone());
    dns.insert(&spec(&h), Err(crate::dns::rfc3263::LookupError::NotFound), h.now);
    let out = h.send(CALLER, &Request::new("INVITE", "n1").sdp(6000).build());
    let r = out.iter().find(|s| s.dest == super::addr(CALLER) && s.code() >= 200).unwrap();
    assert_eq!(r.code(), 503);
    assert_eq!(r.msg.header("retry-after"), Some("5"));
    assert_eq!(out.len(), 2, "100 and 503, nothing sent anywhere: {out:#?}");
}
