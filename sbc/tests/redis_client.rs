//! The pair's Redis client against a real `redis-server` on loopback: TLS
//! checked against a given CA (and refused without it), scripts sent by
//! SHA and loaded again after `SCRIPT FLUSH`, and a wrong password
//! refused. Needs `redis-server` (built with TLS, as Debian's is); skips
//! without it, except under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::SocketAddr;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sbc::ha::redis::{Endpoint, Redis, RedisTarget, Reply, Script};
use testkit::TestDir;

fn redis_server(dir: &TestDir, args: &[&str]) -> testkit::ChildGuard {
    let mut cmd = std::process::Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]).args(args).current_dir(dir.path());
    testkit::ChildGuard::spawn("redis", &mut cmd, dir.path())
}

fn answers(r: &mut Redis) -> bool {
    testkit::wait_until(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || matches!(r.cmd(&[b"PING"]), Ok(Reply::Status(s)) if s == "PONG"),
    )
}

#[test]
fn tls_with_a_ca_file_and_auth() {
    if testkit::env::require_binary("redis-server").is_none() {
        return;
    }
    let dir = TestDir::new("redis-tls");
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &*ca).unwrap();
    let ca_pem = {
        let c: &rcgen::Certificate = ca.as_ref();
        c.pem()
    };
    let (c, k, a) =
        (dir.write("redis.pem", cert.pem()), dir.write("redis.key", key.serialize_pem()), dir.write("ca.pem", &ca_pem));
    let port = testkit::ports::free_tcp_port();
    let _redis = redis_server(
        &dir,
        &[
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            c.to_str().unwrap(),
            "--tls-key-file",
            k.to_str().unwrap(),
            "--tls-ca-cert-file",
            a.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "pw",
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let target = RedisTarget {
        endpoint: Endpoint::Direct("127.0.0.1".into(), port),
        username: None,
        password: Some("pw".into()),
        tls: true,
        ca_pem: Some(ca_pem.into_bytes()),
    };
    let mut r = Redis::new(target.clone(), Duration::from_millis(500));
    assert!(answers(&mut r), "no PONG over TLS: {:?}", r.cmd(&[b"PING"]));
    // A script by SHA: NOSCRIPT the first time and after a flush, loaded
    // each time.
    let s = Script::new("return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])");
    assert_eq!(r.eval(&s, &[b"n"], &[b"10"]).unwrap(), Reply::Int(11));
    assert_eq!(r.cmd(&[b"SCRIPT", b"FLUSH"]).unwrap(), Reply::Status("OK".into()));
    assert_eq!(r.eval(&s, &[b"n"], &[b"10"]).unwrap(), Reply::Int(12));
    // Plain TCP to the TLS port, the system roots, or a wrong password: refused.
    let mut plain =
        Redis::new(RedisTarget { password: Some("pw".into()), ..RedisTarget::from(addr) }, Duration::from_millis(300));
    assert!(!matches!(plain.cmd(&[b"PING"]), Ok(Reply::Status(_))));
    let mut no_ca = Redis::new(RedisTarget { ca_pem: None, ..target.clone() }, Duration::from_millis(500));
    let e = no_ca.cmd(&[b"PING"]).expect_err("a server certificate from an unknown CA was accepted");
    assert!(e.to_string().to_lowercase().contains("cert"), "{e}");
    let mut wrong = Redis::new(RedisTarget { password: Some("nope".into()), ..target }, Duration::from_millis(500));
    assert!(wrong.cmd(&[b"PING"]).is_err(), "a wrong password was accepted");
}

/// A write to a replica (a demoted master) answers READONLY: the reply is
/// returned as an error and the connection is dropped, so that the next
/// call finds the master again (through Sentinel, when configured).
#[test]
fn readonly_drops_the_connection() {
    if testkit::env::require_binary("redis-server").is_none() {
        return;
    }
    let dir = TestDir::new("redis-readonly");
    let port = testkit::ports::free_tcp_port();
    // A replica of a master that is not there: it answers reads, refuses writes.
    let _redis = redis_server(&dir, &["--port", &port.to_string(), "--replicaof", "127.0.0.1", "1"]);
    let mut r = Redis::new(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500));
    assert!(answers(&mut r));
    assert!(r.connected());
    let w = r.cmd(&[b"SET", b"k", b"v"]).unwrap();
    assert!(matches!(&w, Reply::Error(e) if e.starts_with("READONLY")), "{w:?}");
    assert!(!r.connected(), "still connected to a read-only server");
    // Reads still work (on a new connection).
    assert_eq!(r.cmd(&[b"GET", b"k"]).unwrap(), Reply::Bulk(None));
}
