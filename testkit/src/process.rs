//! [`ChildGuard`]: a spawned process whose stdout and stderr go to files,
//! always stopped (SIGTERM, then SIGKILL) and reaped on drop, with the tail
//! of its logs printed when the test is failing.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{sys, wait_until};

// ---------------------------------------------------------------------------

/// A spawned child that is always stopped and reaped.
///
/// stdout and stderr go to `<dir>/<name>.stdout` / `<name>.stderr`. On drop
/// the child gets SIGTERM, then SIGKILL after a grace period, and is waited
/// for. With [`ChildGuard::spawn_group`] the child leads its own process
/// group and the signals go to the whole group (for daemons that fork
/// workers, such as Kamailio). If the test is panicking, the tail of both
/// logs is printed.
pub struct ChildGuard {
    name: String,
    child: Child,
    group: bool,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with output captured to files in `dir`.
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> ChildGuard {
        Self::spawn_inner(name, cmd, dir, false)
    }

    /// Like [`ChildGuard::spawn`], but the child gets its own process group
    /// and signals on drop go to that whole group.
    pub fn spawn_group(name: &str, cmd: &mut Command, dir: &Path) -> ChildGuard {
        Self::spawn_inner(name, cmd, dir, true)
    }

    fn spawn_inner(name: &str, cmd: &mut Command, dir: &Path, group: bool) -> ChildGuard {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        let out = File::create(&stdout_path).unwrap_or_else(|e| panic!("create {}: {e}", stdout_path.display()));
        let err = File::create(&stderr_path).unwrap_or_else(|e| panic!("create {}: {e}", stderr_path.display()));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        if group {
            cmd.process_group(0);
        }
        eprintln!("[test] starting {name}: {cmd:?}");
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard { name: name.to_string(), child, group, stdout_path, stderr_path, status: None }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// The exit status if the child has exited (non-blocking).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, Duration::from_millis(20), || self.try_wait().is_some());
        self.status
    }

    /// Panics (with the log tail) if the child has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!("{} exited early with {status}\n{}", self.name, self.log_tail(40));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; reaps the child.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_some() {
            // The leader is gone; still sweep its group (workers may remain).
            if self.group {
                sys::kill(-(self.pid() as i32), libc::SIGKILL);
            }
            return self.status;
        }
        let target = if self.group { -(self.pid() as i32) } else { self.pid() as i32 };
        sys::kill(target, libc::SIGTERM);
        if self.wait_timeout(grace).is_none() {
            eprintln!("[test] {} ignored SIGTERM for {grace:?}; killing", self.name);
            sys::kill(target, libc::SIGKILL);
            self.status = self.child.wait().ok();
        } else if self.group {
            // Make sure no worker outlives its leader.
            sys::kill(target, libc::SIGKILL);
        }
        self.status
    }

    /// SIGKILL now (a crash: no cleanup runs) and reap.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none() {
            let target = if self.group { -(self.pid() as i32) } else { self.pid() as i32 };
            sys::kill(target, libc::SIGKILL);
            self.status = self.child.wait().ok();
        }
        self.status
    }

    /// The last `lines` lines of stderr and stdout, labelled.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for (label, path) in [("stderr", &self.stderr_path), ("stdout", &self.stdout_path)] {
            let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            let _ = writeln!(out, "----- {} {label} (last {} lines) -----", self.name, tail.len());
            for l in tail {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}
