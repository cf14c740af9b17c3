//! The Debian package: `scripts/package.sh` builds it with cargo-deb (the
//! debug binaries, to keep the test quick), and it is installed for real
//! with `dpkg -i` on this machine, checked, run, and purged.
//!
//! - the control data: `Depends: adduser`, both configuration files as
//!   conffiles, the maintainer scripts;
//! - after `dpkg -i`: the `xsbc` system user, `/etc/xsbc` readable by its
//!   group only, `systemd-analyze verify` passing on both units, the units'
//!   user, capabilities and sandbox, and `sbc check-config` passing on
//!   `/etc/xsbc/sbc.toml` as the service user;
//! - the installed sbc, run as that user from its state directory with the
//!   packaged configuration, answers OPTIONS, and `sbc ctl trunks` reaches
//!   it over the control socket in `/run/xsbc`;
//! - `dpkg --purge` removes the programs and the state directory.
//!
//! Needs root, dpkg, cargo-deb and systemd-analyze (scripts/test.sh
//! installs them). It binds 127.0.0.1:5060, so it takes the tests' lock.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use testkit::{ChildGuard, TestDir};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package when the test ends, however it ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "xsbc"]).output();
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

#[test]
fn the_debian_package_installs_verifies_runs_and_purges() {
    if !testkit::env::require_root_and(
        "the package test",
        &["dpkg", "dpkg-deb", "cargo-deb", "systemd-analyze", "runuser"],
    ) {
        return;
    }
    let dir = TestDir::new("package");

    // Build.
    let out = run(Command::new(repo_root().join("scripts/package.sh"))
        .args(["--profile", "dev", "--output"])
        .arg(dir.path()));
    let deb = PathBuf::from(text(&out).lines().last().expect("package.sh prints the package").trim());
    assert!(deb.is_file() && deb.file_name().unwrap().to_string_lossy().starts_with("xsbc_"), "{deb:?}");

    // Control data.
    let info = text(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    assert!(info.contains("Package: xsbc"), "{info}");
    assert!(info.lines().any(|l| l.starts_with(" Depends:") && l.contains("adduser")), "{info}");
    for script in ["postinst", "prerm", "postrm", "conffiles"] {
        assert!(info.contains(script), "no {script}:\n{info}");
    }
    let conffiles = text(&run(Command::new("dpkg-deb").args(["--info"]).arg(&deb).arg("conffiles")));
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/xsbc/sbc.toml", "/etc/xsbc/media-relay.toml"]);

    // Install.
    let _ = Command::new("dpkg").args(["--purge", "xsbc"]).output();
    let installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let id = text(&run(Command::new("id").arg("xsbc")));
    assert!(id.contains("(xsbc)"), "the service user: {id}");
    let ls = text(&run(Command::new("stat").args(["-c", "%a %U %G %n", "/etc/xsbc", "/etc/xsbc/sbc.toml"])));
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["750 root xsbc /etc/xsbc", "640 root xsbc /etc/xsbc/sbc.toml"]);

    // The units.
    let units = ["/lib/systemd/system/xsbc-sbc.service", "/lib/systemd/system/xsbc-media-relay.service"];
    let verify = Command::new("systemd-analyze").arg("verify").args(units).output().unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}\n{}",
        verify.status,
        String::from_utf8_lossy(&verify.stderr)
    );
    for unit in units {
        let u = std::fs::read_to_string(unit).unwrap();
        for line in [
            "User=xsbc",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=xsbc",
            "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_NICE CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_SYS_NICE CAP_NET_BIND_SERVICE",
        ] {
            assert!(u.lines().any(|l| l == line), "{unit} lacks {line}");
        }
    }
    let check = text(&run(Command::new("runuser").args([
        "-u",
        "xsbc",
        "--",
        "/usr/bin/sbc",
        "check-config",
        "--config",
        "/etc/xsbc/sbc.toml",
    ])));
    assert!(check.contains("configuration OK"), "{check}");
    run(Command::new("runuser").args([
        "-u",
        "xsbc",
        "--",
        "/usr/bin/media-relay",
        "--config",
        "/etc/xsbc/media-relay.toml",
        "--check-config",
    ]));

    // Run it as the service would: as xsbc, from its state directory, with
    // its runtime directory for the control socket (systemd makes both).
    for d in ["/var/lib/xsbc", "/run/xsbc"] {
        run(Command::new("install").args(["-d", "-o", "xsbc", "-g", "xsbc", "-m", "0750", d]));
    }
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "xsbc", "--", "/usr/bin/sbc", "run", "--config", "/etc/xsbc/sbc.toml"])
        .current_dir("/var/lib/xsbc");
    let mut sbc = ChildGuard::spawn("installed sbc", &mut cmd, dir.path());
    let sip: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let got = testkit::sip::sip_options_from("127.0.0.1".parse().unwrap(), sip, Duration::from_secs(10));
    sbc.assert_running();
    assert!(got.as_deref().is_some_and(|s| s.starts_with("SIP/2.0 200")), "OPTIONS to the installed sbc: {got:?}");
    let trunks = text(&run(Command::new("runuser").args([
        "-u",
        "xsbc",
        "--",
        "/usr/bin/sbc",
        "ctl",
        "--socket",
        "/run/xsbc/sbc.sock",
        "trunks",
    ])));
    assert!(trunks.contains("local-trunk"), "sbc ctl trunks over /run/xsbc/sbc.sock: {trunks}");
    drop(sbc);

    // Purge.
    drop(installed);
    assert!(!Path::new("/usr/bin/sbc").exists(), "purge left /usr/bin/sbc");
    assert!(!Path::new("/var/lib/xsbc").exists(), "purge left /var/lib/xsbc");
    assert!(!Path::new("/etc/xsbc/sbc.toml").exists(), "purge left the configuration");
    let _ = std::fs::remove_dir("/run/xsbc");
}
