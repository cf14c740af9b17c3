#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

//! The hardened example config in `docs/security.md` is a valid config and
//! means what the document says: it is read from the document itself, its
//! file paths pointed at files made here.

use std::path::Path;

use sbc::config::{AclAction, Config};

/// The first ```toml block after `## A hardened example`.
fn example() -> String {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md")).unwrap();
    let section = doc.split("## A hardened example").nth(1).expect("docs/security.md has a hardened example");
    let block = section.split("```toml\n").nth(1).expect("with a toml block");
    block.split("```").next().unwrap().to_owned()
}

#[test]
fn the_hardened_example_loads_and_is_hardened() {
    let dir = testkit::dir::TestDir::new("security-example");
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["voice.example.com".to_owned()]).unwrap().self_signed(&key).unwrap();
    let users = format!("{}\n", sbc::auth::users::line_for("alice", "voice.example.com", "secret"));
    let text = example()
        .replace("/etc/xsbc/tls/cert.pem", &file("cert.pem", &cert.pem()))
        .replace("/etc/xsbc/tls/key.pem", &file("key.pem", &key.serialize_pem()))
        .replace("/etc/xsbc/users", &file("users", &users))
        .replace("/etc/xsbc/nonce-secret", &file("nonce-secret", "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IQ==\n"));
    let c = Config::from_toml(&text).unwrap_or_else(|e| panic!("the hardened example does not load: {e}\n{text}"));

    // Two realms, both with TLS; the public one drops everyone but the
    // carrier, the private one admits only its network.
    assert_eq!(c.realms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["inside", "outside"]);
    assert!(c.realms.iter().all(|r| r.tls_listen.is_some()), "{:?}", c.realms);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    let (inside, outside) = (&c.acls[0], &c.acls[1]);
    assert_eq!(outside.action, AclAction::Drop);
    let carrier_ip = ip("198.51.100.3");
    let is_trunk = c.trunk_at(carrier_ip, 1).is_some();
    assert!(outside.permits(carrier_ip, is_trunk), "the carrier gets in");
    assert!(!outside.permits(ip("192.0.2.66"), false), "a scanner on the public side does not");
    assert!(inside.permits(ip("10.20.3.4"), false), "a phone inside gets in");
    assert!(!inside.permits(ip("192.0.2.66"), false));
    // The carrier is trusted only from its sources, and sees nothing inside.
    let carrier = &c.trunks[0];
    assert_eq!(c.trunk_at("198.51.100.3".parse().unwrap(), 1), Some(0));
    assert_eq!(c.trunk_at("198.51.100.3".parse().unwrap(), 0), None, "only in its own realm");
    assert_eq!(c.trunk_at("198.51.100.99".parse().unwrap(), 1), None);
    assert!(carrier.policy.topology_hiding && carrier.policy.callid_rewrite);
    assert!(carrier.policy.strip_headers.iter().any(|h| h.eq_ignore_ascii_case("User-Agent")));
    // Our users authenticate, also to reach them from outside.
    let auth = c.auth.as_ref().expect("[auth]");
    assert!(auth.require_for_inbound);
    assert_eq!(auth.users.len(), 1);
    assert!(auth.secret.is_some());
    // Metrics stay off the public address.
    assert!(c.metrics.is_some_and(|m| m.ip().is_loopback()));
}
