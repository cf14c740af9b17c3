//! Processes and shell commands of the namespace labs (HA pair, realms):
//! a command run for its status or its output, and a process that is
//! killed when dropped and shows the tail of its log when a test panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a command; whether it succeeded (output discarded).
pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command; its standard output (empty on failure).
pub fn sh_out(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A process of the lab: TERM then KILL on drop; the tail of its log is
/// printed when the test is failing.
pub struct Proc {
    /// For the log tail's heading.
    pub name: String,
    /// The process, until it is gone.
    pub child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits up to `timeout` for it to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let Some(c) = self.child.as_mut() else { return true };
            if c.try_wait().ok().flatten().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            std::thread::sleep(Duration::from_millis(200));
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- {} (last lines of {}) ----", self.name, self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Starts `cmd` in network namespace `ns`, its output in `dir/NAME.log`.
///
/// # Panics
/// When the log cannot be created or `ip netns exec` cannot be started.
pub fn spawn_in(ns: &str, dir: &std::path::Path, name: &str, cmd: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).expect("log file");
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdout(f.try_clone().expect("log file"))
        .stderr(f)
        .spawn()
        .expect("ip netns exec");
    Proc { name: name.to_owned(), child: Some(child), log }
}

/// The JSON objects of a JSON-lines file (CDRs, `xsbc-ua` reports); none
/// when it does not exist yet.
pub fn json_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The command line of an `xsbc-ua` in `role` (`caller` or `callee`) on
/// `local`, through the sbc at `proxy`, with RTP from `rtp_ip` ports
/// `rtp_base` up, reporting to `report`, then `args`.
pub fn xsbc_ua(
    role: &str,
    local: &str,
    proxy: &str,
    rtp: (&str, &str),
    report: &std::path::Path,
    args: &[&str],
) -> Vec<String> {
    let mut cmd: Vec<String> = [
        env!("CARGO_BIN_EXE_xsbc-ua"),
        role,
        "--local",
        local,
        "--proxy",
        proxy,
        "--rtp-ip",
        rtp.0,
        "--rtp-base",
        rtp.1,
        "--report",
        &report.to_string_lossy(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    cmd.extend(args.iter().map(|s| (*s).to_owned()));
    cmd
}

/// Removes a lab's scratch directory, unless the test is failing or
/// `XSBC_KEEP_TMP` is set: then it says where the files are.
pub fn remove_unless_failing(dir: &std::path::Path) {
    if !std::thread::panicking() && std::env::var("XSBC_KEEP_TMP").is_err() {
        let _ = std::fs::remove_dir_all(dir);
    } else {
        eprintln!("lab files kept in {}", dir.display());
    }
}
