//! SIGHUP reloads a running `media-relay`'s file: `relay.timeout` and
//! `relay.max_sessions` take effect on the calls it holds and the next
//! offers; a change to a key fixed at start (`relay.port_min`) or a broken
//! file is refused in the log, naming the key, and the relay keeps running
//! on what it had.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use testkit::ng::{sdp_command, wait_for_udp_ng};
use testkit::{ChildGuard, NgClient, TestDir};

const SDP: &str =
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

fn config(ng: u16, pmin: u16, keys: &str) -> String {
    format!(
        "[relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"127.0.0.1:{ng}\"\nport_min = {pmin}\nport_max = {}\n\
         workers = 1\nmetrics = \"off\"\n{keys}\n",
        pmin + 39
    )
}

fn offer(ng: &NgClient, call: &str) -> String {
    let r = ng.cmd(sdp_command("offer", call, "t1", None, SDP));
    r.get("result").and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

fn hup(relay: &ChildGuard) {
    assert!(Command::new("kill").args(["-HUP", &relay.pid().to_string()]).status().unwrap().success());
}

fn wait_log(relay: &ChildGuard, what: &str, n: usize) {
    let ok = testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        std::fs::read_to_string(relay.stderr_path()).unwrap_or_default().matches(what).count() >= n
    });
    assert!(ok, "no `{what}` (x{n}) in the log:\n{}", relay.log_tail(30));
}

#[test]
fn sighup_applies_timeout_and_max_sessions_and_refuses_the_rest() {
    let dir = TestDir::new("mr-reload");
    let ng_port = testkit::ports::free_sip_port();
    let pmin = 47000 + (std::process::id() % 50) as u16 * 40;
    let path = dir.write("relay.toml", config(ng_port, pmin, "timeout = 60\nmax_sessions = 1"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_media-relay"));
    cmd.arg("--config").arg(&path).env("RUST_LOG", "info");
    let relay = ChildGuard::spawn("media-relay", &mut cmd, dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], ng_port));
    assert!(wait_for_udp_ng(addr, Duration::from_secs(10)), "{}", relay.log_tail(30));
    let ng = NgClient::new(addr);

    assert_eq!(offer(&ng, "c1"), "ok");
    assert_eq!(offer(&ng, "c2"), "error", "max_sessions = 1");

    // Reloadable keys: more sessions, a 1 s timeout (applies to c1 too).
    std::fs::write(&path, config(ng_port, pmin, "timeout = 1\nmax_sessions = 5\nlog_level = \"debug\"")).unwrap();
    hup(&relay);
    wait_log(&relay, "SIGHUP: configuration reloaded", 1);
    assert_eq!(offer(&ng, "c2"), "ok", "max_sessions = 5 now");
    wait_log(&relay, "no media in either direction: deleting call", 2);

    // A key fixed at start, then a broken file: refused, naming the key.
    std::fs::write(&path, config(ng_port, pmin + 1, "timeout = 1\nmax_sessions = 5")).unwrap();
    hup(&relay);
    wait_log(&relay, "config key `relay.port_min` changed: it needs a restart", 1);
    std::fs::write(&path, config(ng_port, pmin, "timeout = 0")).unwrap();
    hup(&relay);
    wait_log(&relay, "configuration not reloaded, the running one stays: config key `relay.timeout`", 1);
    // Still running on the reloaded values.
    for c in ["c3", "c4", "c5"] {
        assert_eq!(offer(&ng, c), "ok", "{}", relay.log_tail(20));
    }
}
