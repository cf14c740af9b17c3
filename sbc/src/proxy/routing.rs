//! Routing of initial requests: registered users first, then static routes
//! by Request-URI user prefix or domain. Never an open relay: a request for a
//! domain that is not ours and matches no route is refused.

use std::net::SocketAddr;
use std::time::Instant;

use crate::config::Config;
use crate::location::{aor_key, Location};
use crate::sip::Uri;
use crate::transport::Proto;

/// One next hop to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Request-URI to send with.
    pub uri: String,
    /// Where to send it.
    pub dest: SocketAddr,
    /// Over what.
    pub proto: Proto,
    /// The realm it is reached in (its request leaves from that realm's socket).
    pub realm: usize,
    /// Trunk index, when it is a trunk.
    pub trunk: Option<usize>,
    /// For logs and CDRs: the trunk name or `user:<aor>`.
    pub label: String,
}

/// Why a request cannot be routed: the response to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'static str,
}

/// The AOR key of a URI on one of our domains: all local domains are one realm.
#[must_use]
pub fn local_aor(cfg: &Config, user: Option<&str>) -> String {
    aor_key(user, cfg.domains.first().map_or("localhost", String::as_str))
}

/// Orders one priority group by weight: a weighted draw without
/// replacement, driven by `seed` (the Call-ID's hash), so retransmissions of
/// one call see the same order and calls spread by weight.
fn weighted_order(cfg: &Config, group: &[usize], seed: u64) -> Vec<usize> {
    let mut left: Vec<usize> = group.to_vec();
    let mut out = Vec::with_capacity(left.len());
    let mut x = seed | 1;
    while !left.is_empty() {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let total: u64 = left.iter().map(|&i| u64::from(cfg.trunks.get(i).map_or(1, |t| t.weight))).sum();
        let mut pick = x % total.max(1);
        let mut k = 0;
        for (j, &i) in left.iter().enumerate() {
            let w = u64::from(cfg.trunks.get(i).map_or(1, |t| t.weight));
            if pick < w {
                k = j;
                break;
            }
            pick -= w;
        }
        out.push(left.remove(k));
    }
    out
}

fn trunk_targets(cfg: &Config, groups: &[Vec<usize>], user: Option<&str>, seed: u64) -> Vec<Target> {
    groups
        .iter()
        .flat_map(|g| weighted_order(cfg, g, seed))
        .collect::<Vec<_>>()
        .iter()
        .filter_map(|&i| cfg.trunks.get(i).map(|t| (i, t)))
        .map(|(i, t)| {
            let host = match (&t.dns, t.address) {
                // A trunk named by DNS keeps its name in the Request-URI;
                // its targets are filled in from the resolver's cache.
                (Some(d), _) => d.port.map_or_else(|| d.host.clone(), |p| format!("{}:{p}", d.host)),
                (None, SocketAddr::V4(a)) => format!("{}:{}", a.ip(), a.port()),
                (None, SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
            };
            let uri = match user {
                Some(u) => format!("sip:{u}@{host}"),
                None => format!("sip:{host}"),
            };
            let proto = t.transport.proto();
            Target {
                uri: format!("{uri}{}", proto.uri_param()),
                dest: t.address,
                proto,
                realm: t.realm,
                trunk: Some(i),
                label: t.name.clone(),
            }
        })
        .collect()
}

/// The best static route for a user and domain (`None`: our domains):
/// longest matching prefix wins, then config order.
fn static_route<'c>(cfg: &'c Config, user: &str, domain: Option<&str>) -> Option<&'c crate::config::Route> {
    cfg.routes
        .iter()
        .filter(|r| r.domain.as_deref() == domain && user.starts_with(&r.prefix))
        .max_by_key(|r| r.prefix.len())
        // max_by_key returns the last of equals; prefer the first in config order.
        .and_then(|best| cfg.routes.iter().find(|r| r.domain == best.domain && r.prefix == best.prefix))
}

/// The static route of a request to `ruri` (whether or not a registered
/// user takes it first).
#[must_use]
pub fn route_of<'c>(cfg: &'c Config, ruri: &Uri) -> Option<&'c crate::config::Route> {
    let user = ruri.user.as_deref().unwrap_or("");
    if cfg.is_local_host(&ruri.host, ruri.port) {
        return static_route(cfg, user, None);
    }
    let host = ruri.host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    static_route(cfg, user, Some(&host))
}

/// Decides where an initial request goes.
///
/// # Errors
/// The response to send when there is nowhere to go.
pub fn route(cfg: &Config, location: &Location, ruri: &Uri, seed: u64, now: Instant) -> Result<Vec<Target>, Refusal> {
    let scheme = ruri.scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return Err(Refusal { code: 416, reason: "Unsupported URI Scheme" });
    }
    let user = ruri.user.as_deref();
    if cfg.is_local_host(&ruri.host, ruri.port) {
        let aor = local_aor(cfg, user);
        let bindings = location.lookup(&aor, now);
        if !bindings.is_empty() {
            return Ok(bindings
                .into_iter()
                .map(|b| Target {
                    uri: b.contact.clone(),
                    dest: b.source,
                    // Over TCP and TLS, `source` names the phone's own
                    // connection (its flow), which the transport reuses.
                    proto: b.transport.proto(),
                    realm: b.realm,
                    trunk: None,
                    label: format!("user:{aor}"),
                })
                .collect());
        }
        if let Some(r) = static_route(cfg, user.unwrap_or(""), None) {
            return Ok(trunk_targets(cfg, &r.trunks, user, seed));
        }
        if location.is_known(&aor) {
            return Err(Refusal { code: 480, reason: "Temporarily Unavailable" });
        }
        return Err(Refusal { code: 404, reason: "Not Found" });
    }
    let host = ruri.host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match static_route(cfg, user.unwrap_or(""), Some(&host)) {
        Some(r) => Ok(trunk_targets(cfg, &r.trunks, user, seed)),
        None => Err(Refusal { code: 403, reason: "Relaying Denied" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::Binding;
    use std::time::Duration;

    fn cfg() -> Config {
        let toml = crate::config::DEFAULT_TOML.replace(
            "[[route]]\nprefix = \"\"\ntrunks = [\"local-trunk\"]",
            "[[trunk]]\nname = \"b\"\naddress = \"127.0.0.1:5080\"\ntransport = \"tcp\"\n\
             [[route]]\nprefix = \"9\"\ntrunks = [\"local-trunk\", \"b\"]\n\
             [[route]]\nprefix = \"\"\ndomain = \"carrier.example\"\ntrunks = [\"b\"]",
        );
        Config::from_toml(&toml).unwrap()
    }

    fn uri(s: &str) -> Uri {
        Uri::parse(s).unwrap()
    }

    #[test]
    fn prefix_routes_to_ordered_trunks() {
        let c = cfg();
        let t = route(&c, &Location::new(), &uri("sip:9123@127.0.0.1"), 1, Instant::now()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].uri, "sip:9123@127.0.0.1:5070");
        assert_eq!(t[0].label, "local-trunk");
        assert_eq!(t[1].proto, Proto::Tcp);
        assert_eq!(t[1].uri, "sip:9123@127.0.0.1:5080;transport=tcp");
    }

    #[test]
    fn unknown_user_404_known_user_480_registered_user_found() {
        let c = cfg();
        let now = Instant::now();
        let mut loc = Location::new();
        assert_eq!(route(&c, &loc, &uri("sip:alice@127.0.0.1"), 1, now).unwrap_err().code, 404);
        let aor = local_aor(&c, Some("alice"));
        let b = Binding {
            contact: "sip:alice@10.9.9.9:5062".into(),
            source: "127.0.0.1:5062".parse().unwrap(),
            transport: crate::location::Transport::Udp,
            call_id: "x".into(),
            cseq: 1,
            expires_at: now,
            q: 1000,
            realm: 0,
        };
        loc.update(&aor, b, Duration::from_secs(60), now).unwrap();
        let t = route(&c, &loc, &uri("sip:alice@localhost"), 1, now).unwrap();
        assert_eq!(t[0].dest, "127.0.0.1:5062".parse().unwrap(), "reached at the registered source (NAT)");
        assert_eq!(t[0].uri, "sip:alice@10.9.9.9:5062");
        let later = now + Duration::from_secs(61);
        assert_eq!(route(&c, &loc, &uri("sip:alice@127.0.0.1"), 1, later).unwrap_err().code, 480);
    }

    #[test]
    fn weights_spread_calls_within_a_priority_group() {
        let toml = crate::config::DEFAULT_TOML.replace(
            "[[route]]\nprefix = \"\"\ntrunks = [\"local-trunk\"]",
            "[[trunk]]\nname = \"heavy\"\naddress = \"127.0.0.1:5081\"\nweight = 3\n\
             [[route]]\nprefix = \"\"\ntrunks = [\"local-trunk|heavy\"]",
        );
        let c = Config::from_toml(&toml).unwrap();
        let mut first_heavy = 0;
        for seed in 0..4000u64 {
            let t = route(
                &c,
                &Location::new(),
                &uri("sip:1@127.0.0.1"),
                seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                Instant::now(),
            )
            .unwrap();
            assert_eq!(t.len(), 2, "both members of the group are tried");
            if t[0].label == "heavy" {
                first_heavy += 1;
            }
        }
        // Weight 3 of 4: about 3000 of 4000 calls try "heavy" first.
        assert!((2700..3300).contains(&first_heavy), "{first_heavy}");
    }

    #[test]
    fn never_an_open_relay() {
        let c = cfg();
        let e = route(&c, &Location::new(), &uri("sip:bob@evil.example"), 1, Instant::now()).unwrap_err();
        assert_eq!(e.code, 403);
        let t = route(&c, &Location::new(), &uri("sip:bob@carrier.example"), 1, Instant::now()).unwrap();
        assert_eq!(t[0].label, "b", "a domain route is allowed");
        assert_eq!(route(&c, &Location::new(), &uri("tel:+123"), 1, Instant::now()).unwrap_err().code, 416);
    }
}
