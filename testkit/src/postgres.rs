//! A private PostgreSQL cluster for one test: `initdb` into a fresh
//! directory under /tmp, `pg_ctl` start and stop on a free port, `psql` to
//! query it. As root the server runs as the `postgres` user (it refuses
//! root). Trust authentication, `fsync = off`: a test database.
//!
//! [`Postgres::require`] skips (fails under `CI=true`) when Debian's
//! `postgresql` is not installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::env;

/// A private cluster, stopped and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    /// The TCP port it listens on.
    pub port: u16,
    /// The addresses it listens on (`listen_addresses`).
    pub listen: String,
    /// The network namespace it runs in, if any.
    netns: Option<String>,
    running: bool,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
pub fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .or_else(|| env::find_binary("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

impl Postgres {
    /// A new initialised (not started) cluster listening on 127.0.0.1, or
    /// `None` with a SKIPPED line when PostgreSQL is not installed.
    pub fn require(label: &str) -> Option<Postgres> {
        Self::require_on(label, "127.0.0.1")
    }

    /// Like [`require`](Self::require), listening on `listen` (a
    /// `listen_addresses` value, e.g. `"*"`).
    pub fn require_on(label: &str, listen: &str) -> Option<Postgres> {
        Self::require_in(label, None, listen)
    }

    /// Like [`require`](Self::require), run inside the network namespace
    /// `netns` (when given) and listening on `listen` there.
    pub fn require_in(label: &str, netns: Option<&str>, listen: &str) -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            env::skip("PostgreSQL (Debian `postgresql`) is not installed");
            return None;
        };
        if env::is_root() && env::find_binary("runuser").is_none() {
            env::skip("running PostgreSQL as root needs `runuser`");
            return None;
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "xsbc-pg-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("create the cluster directory");
        let pg = Postgres {
            bin,
            root,
            port: crate::ports::free_tcp_port(),
            listen: listen.to_owned(),
            netns: netns.map(str::to_owned),
            running: false,
        };
        if env::is_root() {
            let out = run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&pg.root));
            assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = run(pg.as_owner("initdb").arg("-D").arg(pg.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]));
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        // Clients from other addresses (a namespace lab) are trusted too.
        let hba = pg.data().join("pg_hba.conf");
        let mut text = fs::read_to_string(&hba).expect("read pg_hba.conf");
        text.push_str("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n");
        fs::write(&hba, text).expect("write pg_hba.conf");
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A command for a PostgreSQL binary, run as `postgres` when we are root.
    fn as_owner(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = self.in_netns();
        if env::is_root() {
            c.args(["runuser", "-u", "postgres", "--"]).arg(exe);
        } else {
            c.arg(exe);
        }
        c
    }

    /// `ip netns exec <ns>` (or `env`, which just runs what follows).
    fn in_netns(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c
            }
            None => Command::new("env"),
        }
    }

    /// The address clients in its namespace reach it on.
    fn host(&self) -> &str {
        if self.listen == "*" || self.listen.contains(',') {
            "127.0.0.1"
        } else {
            &self.listen
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses='{}' -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.root.display(),
            self.listen
        );
        let out = run(self
            .as_owner("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &opts, "-l"])
            .arg(self.log())
            .args(["-w", "-t", "30", "start"]));
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        self.running = true;
    }

    /// Stops the server (fast: open connections are closed).
    pub fn stop(&mut self) {
        let out =
            run(self.as_owner("pg_ctl").arg("-D").arg(self.data()).args(["-m", "fast", "-w", "-t", "30", "stop"]));
        assert!(out.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&out.stderr));
        self.running = false;
    }

    /// Whether [`start`](Self::start) was called last.
    pub fn running(&self) -> bool {
        self.running
    }

    /// The server log file.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn log_tail(&self) -> String {
        let s = fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// A connection string for `host`, libpq style.
    pub fn conninfo_at(&self, host: &str) -> String {
        format!("host={host} port={} user=postgres dbname=postgres connect_timeout=2", self.port)
    }

    /// A connection string for 127.0.0.1.
    pub fn conninfo(&self) -> String {
        self.conninfo_at("127.0.0.1")
    }

    /// Runs `sql` with psql (unaligned, tuples only, `|` separated); the
    /// output lines, or the error text.
    pub fn query(&self, sql: &str) -> Result<Vec<String>, String> {
        let out = run(self
            .in_netns()
            .arg(self.bin.join("psql"))
            .args(["-h", self.host(), "-p", &self.port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-At", "-v", "ON_ERROR_STOP=1", "-c", sql]));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = run(self.as_owner("pg_ctl").arg("-D").arg(self.data()).args(["-m", "immediate", "-w", "stop"]));
        }
        if std::thread::panicking() {
            eprintln!("[test] postgres log tail:\n{}", self.log_tail());
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}
