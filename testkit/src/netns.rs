//! Network namespaces and veth pairs for tests. A [`Netns`] is created by
//! the test that uses it, named uniquely per process (so tests running in
//! parallel, in one binary or several, never share one) and deleted on
//! drop. Creating one needs root; see [`crate::env::require_root_and`].

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// Runs `ip args`; the error names the command and carries `ip`'s stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// Runs `program args`, successful or an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let what = || format!("{program} {}", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| format!("{}: {e}", what()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", what(), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A named network namespace (`/run/netns/NAME`), deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `xsbc-<tag>-<pid>-<n>` (keep `tag` short and distinct per
    /// test file). Fails without root.
    pub fn new(tag: &str) -> Result<Netns, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("xsbc-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name])?;
        Ok(Netns { name })
    }

    /// [`Netns::new`] with its loopback up.
    pub fn with_lo(tag: &str) -> Result<Netns, String> {
        let ns = Netns::new(tag)?;
        ns.up("lo")?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/NAME`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Moves the calling thread (only) into this namespace: sockets it
    /// creates afterwards live here. Panics if it cannot.
    pub fn enter(&self) {
        sys::enter_netns(&self.path()).unwrap_or_else(|e| panic!("entering netns {}: {e}", self.name));
    }

    /// Runs `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Sets `dev` up.
    pub fn up(&self, dev: &str) -> Result<(), String> {
        self.ip(&["link", "set", dev, "up"])
    }

    /// Adds `addr` (with its prefix length, e.g. `10.1.0.1/24`) to `dev`;
    /// IPv6 addresses skip duplicate address detection.
    pub fn addr(&self, dev: &str, addr: &str) -> Result<(), String> {
        if addr.contains(':') {
            self.ip(&["addr", "add", addr, "dev", dev, "nodad"])
        } else {
            self.ip(&["addr", "add", addr, "dev", dev])
        }
    }

    /// A veth pair: `dev` here, `peer_dev` in `peer`, both down. With
    /// `queues`, each end gets that many rx and tx queues.
    pub fn veth(&self, dev: &str, peer: &Netns, peer_dev: &str, queues: Option<u32>) -> Result<(), String> {
        let q = queues.map(|q| q.to_string());
        let qs: Vec<&str> = q.as_deref().map(|q| vec!["numtxqueues", q, "numrxqueues", q]).unwrap_or_default();
        let mut args = vec!["link", "add", dev];
        args.extend(&qs);
        args.extend(["type", "veth", "peer", "name", peer_dev]);
        args.extend(&qs);
        args.extend(["netns", peer.name()]);
        self.ip(&args)
    }

    /// A command that runs `program` in this namespace
    /// (`ip netns exec NAME program`); add arguments to it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` in this namespace, successful or an error.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// `sysctl -qw key=value` in this namespace.
    pub fn sysctl(&self, setting: &str) -> Result<(), String> {
        self.exec("sysctl", &["-qw", setting])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
