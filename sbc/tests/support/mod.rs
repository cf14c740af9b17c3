//! What the sbc's integration tests share: ports for one test, an `sbc`
//! process started on a config and waited for, and what it reports (metrics,
//! CDRs, `sbc ctl`). Each test file takes it with `mod support;`; the
//! helpers every crate's tests share are in `testkit`.
#![allow(dead_code, reason = "each test file uses a part")]

pub mod lab;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::{metrics, ports, ChildGuard, TestDir};

/// Ports for one test: the sbc's SIP and metrics, two trunks (`a`, `b`),
/// a UAC, and the first port of the relay's media range.
pub struct Ports {
    pub sip: u16,
    pub metrics: u16,
    pub a: u16,
    pub b: u16,
    pub uac: u16,
    pub relay: u16,
}

impl Ports {
    /// Signalling ports come from the kernel so that concurrent runs on a
    /// shared machine do not collide; the relay's media range starts at
    /// `relay` (spread by pid by the caller; the relay skips ports it cannot
    /// bind).
    pub fn new(relay: u16) -> Ports {
        Ports {
            sip: ports::free_sip_port(),
            metrics: ports::free_tcp_port(),
            a: ports::free_sip_port(),
            b: ports::free_sip_port(),
            uac: ports::free_sip_port(),
            relay,
        }
    }
}

/// A running sbc.
pub struct Sbc {
    pub guard: ChildGuard,
    pub sip: SocketAddr,
    pub metrics: SocketAddr,
    pub cdr: PathBuf,
    pub ctl: PathBuf,
}

impl Sbc {
    /// Writes `config` to `sbc.toml` in `dir`, starts `sbc run` on it (with
    /// `RUST_LOG` if given) and waits until it answers OPTIONS on
    /// `127.0.0.1:p.sip`. The config is expected to put its CDRs in
    /// `cdr.jsonl` and its control socket at `ctl.sock` in `dir`.
    pub fn start(dir: &TestDir, p: &Ports, config: &str, rust_log: Option<&str>) -> Sbc {
        let path = dir.write("sbc.toml", config);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sbc"));
        cmd.args(["run", "--config"]).arg(&path);
        if let Some(level) = rust_log {
            cmd.env("RUST_LOG", level);
        }
        let guard = ChildGuard::spawn("sbc", &mut cmd, dir.path());
        let sip = SocketAddr::from(([127, 0, 0, 1], p.sip));
        assert!(testkit::sip::wait_for_sip(sip, Duration::from_secs(10)), "sbc did not answer OPTIONS");
        let metrics = SocketAddr::from(([127, 0, 0, 1], p.metrics));
        Sbc { guard, sip, metrics, cdr: dir.join("cdr.jsonl"), ctl: dir.join("ctl.sock") }
    }

    /// The sum over the series of `name` whose labels include `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metrics::metric_sum(self.metrics, name, labels)
    }

    /// Waits up to 10 s for the gauge `name` to return to 0.
    pub fn wait_gauge_zero(&self, name: &str) {
        assert!(
            testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || self.metric(name, &[]) == 0.0),
            "{name} did not return to 0 (is {})",
            self.metric(name, &[])
        );
    }

    /// The CDRs written so far.
    pub fn cdrs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.cdr)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The `target` of each CDR, in order.
    pub fn targets(&self) -> Vec<String> {
        self.cdrs().iter().filter_map(|v| v["target"].as_str().map(str::to_owned)).collect()
    }

    /// `sbc ctl --socket <ctl> cmd...`: its stdout.
    pub fn ctl(&self, cmd: &str) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_sbc"))
            .args(["ctl", "--socket"])
            .arg(&self.ctl)
            .args(cmd.split_whitespace())
            .output()
            .expect("sbc ctl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The sbc's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.guard.stderr_path()).unwrap()
    }
}
