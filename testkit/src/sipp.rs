//! The sipp harness. [`Sipp`] is the binary (found, or the test skips);
//! [`SippCmd`] builds one sipp run in a scratch directory (sipp writes its
//! logs to its working directory) and spawns it, or runs it to the end
//! within a timeout; [`SippStats`] reads its `-trace_stat` file. The
//! scenario files the tests share live in `testkit/scenarios/`: see
//! [`scenario`] and [`Template`].

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::{ChildGuard, TestDir};

/// The path of the shared scenario file `name` (e.g. `uac_cancel.xml`).
pub fn scenario(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    assert!(path.is_file(), "no scenario {}", path.display());
    path
}

/// A text file with `@NAME@` placeholders (a scenario or a config), filled
/// in and checked: a placeholder left over is a panic.
pub struct Template {
    text: String,
}

impl Template {
    /// The shared scenario `name` (see [`scenario`]) as a template.
    pub fn scenario(name: &str) -> Template {
        Template::new(fs::read_to_string(scenario(name)).unwrap_or_else(|e| panic!("reading scenario {name}: {e}")))
    }

    /// A template of `text`.
    pub fn new(text: impl Into<String>) -> Template {
        Template { text: text.into() }
    }

    /// Replaces every `@NAME@` with `value`.
    #[must_use]
    pub fn set(mut self, name: &str, value: impl Display) -> Template {
        self.text = self.text.replace(&format!("@{name}@"), &value.to_string());
        self
    }

    /// The filled-in text; panics if a placeholder is left.
    pub fn text(self) -> String {
        let leftover = self.text.match_indices('@').find_map(|(i, _)| {
            let rest = &self.text[i + 1..];
            let len = rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(0);
            (len > 0 && rest[len..].starts_with('@')).then(|| rest[..len].to_owned())
        });
        assert!(leftover.is_none(), "unfilled placeholder @{}@", leftover.unwrap_or_default());
        self.text
    }

    /// Writes the filled-in text to `name` in `dir`; returns its path.
    pub fn write(self, dir: &TestDir, name: &str) -> PathBuf {
        dir.write(name, self.text())
    }
}

/// The sipp binary.
#[derive(Clone, Debug)]
pub struct Sipp {
    bin: PathBuf,
}

impl Sipp {
    /// sipp from `$PATH`, or `None` after a SKIPPED line (a panic under
    /// `CI=true`).
    pub fn find() -> Option<Sipp> {
        crate::require_binary("sipp").map(|bin| Sipp { bin })
    }

    /// The binary's path.
    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// A run in `dir` (its working directory and where its logs go).
    pub fn cmd(&self, dir: &Path) -> SippCmd {
        SippCmd { bin: self.bin.clone(), dir: dir.to_path_buf(), netns: None, head: Vec::new(), args: Vec::new() }
    }

    /// A UAS listening on `127.0.0.1:port`.
    pub fn uas(&self, dir: &Path, port: u16) -> SippCmd {
        self.cmd(dir).local("127.0.0.1", port)
    }

    /// A UAC on `127.0.0.1:port` calling `service` at `remote`.
    pub fn uac(&self, dir: &Path, remote: impl Display, service: &str, port: u16) -> SippCmd {
        self.cmd(dir).remote(remote).arg("-s").arg(service).local("127.0.0.1", port)
    }
}

/// One sipp run being built: the scenario, then the remote address, then
/// the other options in the order given, then `-nostdin`.
#[must_use]
pub struct SippCmd {
    bin: PathBuf,
    dir: PathBuf,
    /// The network namespace to run in (`ip netns exec`), if any.
    netns: Option<String>,
    /// Scenario and remote host, first on the command line.
    head: Vec<OsString>,
    args: Vec<OsString>,
}

impl SippCmd {
    /// One of sipp's built-in scenarios (`-sn uac`).
    pub fn sn(mut self, name: &str) -> Self {
        self.head.splice(0..0, ["-sn".into(), name.into()]);
        self
    }

    /// A scenario file (`-sf path`).
    pub fn sf(mut self, path: impl AsRef<OsStr>) -> Self {
        self.head.splice(0..0, ["-sf".into(), path.as_ref().to_owned()]);
        self
    }

    /// The shared scenario `name` from `testkit/scenarios/`.
    pub fn scenario(self, name: &str) -> Self {
        self.sf(scenario(name))
    }

    /// The address to send to.
    pub fn remote(mut self, remote: impl Display) -> Self {
        self.head.push(remote.to_string().into());
        self
    }

    /// `-i ip -p port`.
    pub fn local(self, ip: &str, port: u16) -> Self {
        self.arg("-i").arg(ip).arg("-p").arg(port.to_string())
    }

    /// Media on `ip` (`-mi`), and on `port` (`-mp`) if given.
    pub fn media(self, ip: &str, port: Option<u16>) -> Self {
        let cmd = self.arg("-mi").arg(ip);
        match port {
            Some(p) => cmd.arg("-mp").arg(p.to_string()),
            None => cmd,
        }
    }

    /// `-m n`: stop after `n` calls.
    pub fn calls(self, n: u32) -> Self {
        self.arg("-m").arg(n.to_string())
    }

    /// `-r cps`: calls per second.
    pub fn rate(self, cps: u32) -> Self {
        self.arg("-r").arg(cps.to_string())
    }

    /// `-l n`: at most `n` calls at once.
    pub fn limit(self, n: u32) -> Self {
        self.arg("-l").arg(n.to_string())
    }

    /// `-d ms`: the built-in scenarios' pause (call length).
    pub fn hold_ms(self, ms: u32) -> Self {
        self.arg("-d").arg(ms.to_string())
    }

    /// `-t t1`: SIP over one TCP connection.
    pub fn tcp(self) -> Self {
        self.arg("-t").arg("t1")
    }

    /// `-timeout Ns`: sipp stops after `secs` seconds.
    pub fn timeout_s(self, secs: u32) -> Self {
        self.arg("-timeout").arg(format!("{secs}s"))
    }

    /// `-timeout_error`: and exits with an error when it does.
    pub fn timeout_error(self) -> Self {
        self.arg("-timeout_error")
    }

    /// `-trace_err`: unexpected messages go to `<scenario>_<pid>_errors.log`.
    pub fn trace_err(self) -> Self {
        self.arg("-trace_err")
    }

    /// `-trace_stat -stf path`: statistics for [`SippStats::read`].
    pub fn stats(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("-trace_stat").arg("-stf").arg(path)
    }

    /// `-trace_logs -log_file path`: the scenarios' `<log>` actions.
    pub fn log_file(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("-trace_logs").arg("-log_file").arg(path)
    }

    /// Runs sipp in the named network namespace (`ip netns exec NAME`).
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    /// Any other option.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// The command line (without `-nostdin`), for messages.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.current_dir(&self.dir).args(&self.head).args(&self.args).arg("-nostdin");
        cmd
    }

    /// Starts sipp; the guard stops it at the latest when dropped.
    pub fn spawn(self, name: &str) -> ChildGuard {
        ChildGuard::spawn(name, &mut self.command(), &self.dir)
    }

    /// Runs sipp to its end (at most `wait`), returning its exit status,
    /// `None` if it had to be stopped.
    pub fn finish(self, name: &str, wait: Duration) -> Option<ExitStatus> {
        self.spawn(name).wait_timeout(wait)
    }

    /// Runs sipp to its end (at most `wait`) and returns whether it
    /// exited 0; if not, the tail of its output is printed.
    pub fn run_ok(self, name: &str, wait: Duration) -> bool {
        let mut guard = self.spawn(name);
        let ok = guard.wait_timeout(wait).is_some_and(|s| s.success());
        if !ok {
            eprintln!("sipp {name} failed:\n{}", guard.log_tail(40));
        }
        ok
    }
}

/// The last row of a sipp `-trace_stat` file.
#[derive(Clone, Debug)]
pub struct SippStats {
    header: Vec<String>,
    last: Vec<String>,
}

impl SippStats {
    /// Reads `path`; `None` if it is missing or has no data row yet.
    pub fn read(path: &Path) -> Option<SippStats> {
        let text = fs::read_to_string(path).ok()?;
        let mut rows = text.lines().filter(|l| !l.trim().is_empty());
        let split = |l: &str| l.split(';').map(|c| c.trim().to_owned()).collect::<Vec<_>>();
        let header = split(rows.next()?);
        let last = split(rows.next_back()?);
        Some(SippStats { header, last })
    }

    /// A counter, e.g. `SuccessfulCall(C)`.
    pub fn get(&self, column: &str) -> Option<u64> {
        let i = self.header.iter().position(|h| h == column)?;
        self.last.get(i)?.parse().ok()
    }

    /// Calls that completed (`SuccessfulCall(C)`), 0 if not reported.
    pub fn successful(&self) -> u64 {
        self.get("SuccessfulCall(C)").unwrap_or(0)
    }

    /// Calls that failed (`FailedCall(C)`), 0 if not reported.
    pub fn failed(&self) -> u64 {
        self.get("FailedCall(C)").unwrap_or(0)
    }
}
