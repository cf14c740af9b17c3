//! Digest authentication with a real sipp and a real sbc: a right password,
//! a wrong one and an unknown user (the same answers), a replayed
//! nonce-count, alice trying to register bob, and calls to the trunk that
//! need credentials (toll fraud refused, an authenticated call answered).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::sipp::{SippStats, Template};
use testkit::{Sipp, TestDir};

fn ports() -> Ports {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ports::new(21000 + (std::process::id() % 10) as u16 * 90 + k * 30)
}

/// One test: sipp, a scratch dir, its ports and an sbc with `[auth]`
/// (users alice / `alice-pw` and bob / `bob-pw`) and trunk `carrier`.
struct Lab {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    s: Sbc,
    runs: std::cell::Cell<u32>,
}

impl Lab {
    fn start(label: &str) -> Option<Lab> {
        Self::start_with(label, &[("alice", "alice-pw"), ("bob", "bob-pw")])
    }

    fn start_with(label: &str, accounts: &[(&str, &str)]) -> Option<Lab> {
        let sipp = Sipp::find()?;
        let dir = TestDir::new(label);
        let p = ports();
        let passwd = |user: &str, pw: &str| {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sbc"))
                .args(["passwd", user, "--realm", "127.0.0.1"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), format!("{pw}\n").as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let users = dir.write(
            "users.txt",
            format!("# users\n{}", accounts.iter().map(|(u, pw)| passwd(u, pw)).collect::<String>()),
        );
        // sipp 3.6 answers only MD5, and only the first challenge it
        // sees: MD5 is offered first here.
        let cfg = format!(
            "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\n\
             [[trunk]]\nname = \"carrier\"\naddress = \"127.0.0.1:{a}\"\nprobe = false\n\
             [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n[health]\ninterval_ms = 0\n\
             [control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
             [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n\
             [auth]\nusers_file = \"{users}\"\nalgorithms = [\"MD5\", \"SHA-256\"]\n",
            sip = p.sip,
            a = p.a,
            ctl = dir.join("ctl.sock").display(),
            cdr = dir.join("cdr.jsonl").display(),
            m = p.metrics,
            r = p.relay,
            r2 = p.relay + 29,
            users = users.display(),
        );
        let s = Sbc::start(&dir, &p, &cfg, Some("info"));
        Some(Lab { sipp, dir, p, s, runs: std::cell::Cell::new(0) })
    }

    /// A fresh working directory for one sipp run (its message log goes there).
    fn run_dir(&self, name: &str) -> PathBuf {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let d = self.dir.join(&format!("{name}-{n}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Registers `aor` with `user`'s credentials and `pass`, expecting
    /// `expect` after the 401; returns whether sipp saw it, and the
    /// messages it sent and received.
    fn register(&self, aor: &str, user: &str, pass: &str, expect: u16) -> (bool, Vec<String>) {
        let d = self.run_dir(&format!("reg-{aor}-{user}"));
        let sf = Template::scenario("auth_register.xml")
            .set("AOR", aor)
            .set("USER", user)
            .set("PASS", pass)
            .set("EXPECT", expect)
            .write(&self.dir, &format!("reg-{}.xml", self.runs.get()));
        let ok = self
            .sipp
            .cmd(&d)
            .sf(&sf)
            .remote(self.s.sip)
            .local("127.0.0.1", self.p.uac)
            .calls(1)
            .timeout_s(15)
            .timeout_error()
            .arg("-trace_msg")
            .run_ok("register", Duration::from_secs(30));
        (ok, messages(&d))
    }
}

/// The SIP messages of a sipp `-trace_msg` log in `dir`, in order.
fn messages(dir: &std::path::Path) -> Vec<String> {
    let log = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .unwrap_or_default();
    log.split("-----------------------------------------------")
        .filter_map(|chunk| {
            let start = chunk.find("\n\n")? + 2;
            let m = chunk[start..].trim_start_matches('\n');
            (!m.trim().is_empty()).then(|| m.replace("\r\n", "\n"))
        })
        .collect()
}

/// A response's status line and header names (what must not differ
/// between an unknown user and a wrong password).
fn shape(m: &str) -> (String, Vec<String>) {
    let mut lines = m.lines();
    let status = lines.next().unwrap_or_default().to_owned();
    let names =
        lines.take_while(|l| !l.is_empty()).map(|l| l.split(':').next().unwrap_or_default().to_owned()).collect();
    (status, names)
}

/// The last message received that starts with `prefix`.
fn last_received<'a>(msgs: &'a [String], prefix: &str) -> &'a str {
    msgs.iter().rev().find(|m| m.starts_with(prefix)).map_or("", String::as_str)
}

#[test]
fn register_right_wrong_unknown_replayed_and_someone_elses() {
    let Some(t) = Lab::start("auth-register") else { return };
    // The right password.
    let (ok, right) = t.register("alice", "alice", "alice-pw", 200);
    assert!(ok, "alice registers with her password");
    assert!(last_received(&right, "SIP/2.0 401").contains("algorithm=MD5"));
    // A wrong password and an unknown user: both challenged again, alike.
    let (ok, wrong) = t.register("alice", "alice", "guess", 401);
    assert!(ok, "a wrong password gets a new challenge");
    let (ok, unknown) = t.register("mallory", "mallory", "guess", 401);
    assert!(ok, "an unknown user gets a new challenge");
    let (a, b) = (last_received(&wrong, "SIP/2.0 401"), last_received(&unknown, "SIP/2.0 401"));
    assert_eq!(shape(a), shape(b), "the same answer:\n{a}\n---\n{b}");
    assert!(!a.contains("stale"), "{a}");
    // Alice, with her own good credentials, registering bob: 403.
    let (ok, _) = t.register("bob", "alice", "alice-pw", 403);
    assert!(ok, "alice cannot register bob");

    // A replay: alice's authenticated REGISTER, captured, sent again as a
    // new transaction (new branch and CSeq, same credentials).
    let captured = right.iter().rfind(|m| m.starts_with("REGISTER") && m.contains("Authorization:")).unwrap();
    let replay = captured
        .replace("branch=z9hG4bK", "branch=z9hG4bKreplay")
        .replace("CSeq: 2 REGISTER", "CSeq: 3 REGISTER")
        .replace("<sip:alice@127.0.0.1:", "<sip:alice@127.0.0.66:")
        .replace('\n', "\r\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    // Our source port in the Via, so the answer comes here.
    let via_port = sock.local_addr().unwrap().port();
    let replay = replay.replace(&format!("127.0.0.1:{};branch", t.p.uac), &format!("127.0.0.1:{via_port};branch"));
    sock.send_to(replay.as_bytes(), t.s.sip).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("an answer to the replay");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("SIP/2.0 401 "), "a replayed nonce-count is refused: {answer}");

    assert_eq!(t.s.metric("sbc_auth_replays_total", &[]), 1.0);
    assert_eq!(t.s.metric("sbc_auth_failures_total", &[]), 2.0);
    assert_eq!(t.s.metric("sbc_auth_forbidden_total", &[]), 1.0);
    assert_eq!(t.s.metric("sbc_registrations_total", &[]), 1.0, "only alice's own registration");
    assert_eq!(t.s.metric("sbc_auth_users", &[]), 2.0);
}

#[test]
fn sighup_reloads_the_users_file_and_keeps_it_when_broken() {
    let Some(t) = Lab::start_with("auth-sighup", &[("alice", "alice-pw")]) else { return };
    let hup = || {
        let ok = std::process::Command::new("kill").args(["-HUP", &t.s.guard.pid().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    let reloads = |what: &str| t.s.log().lines().filter(|l| l.contains(what)).count();
    assert!(t.register("bob", "bob", "bob-pw", 401).0, "bob is not a user yet");
    // Bob's line added, SIGHUP: the log counts two users, and bob registers.
    let users = t.dir.join("users.txt");
    let mut text = std::fs::read_to_string(&users).unwrap();
    text.push_str(&sbc::auth::users::line_for("bob", "127.0.0.1", "bob-pw"));
    text.push('\n');
    std::fs::write(&users, &text).unwrap();
    hup();
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || reloads(
        "configuration reloaded"
    ) == 1));
    // SIGHUP reloads the whole configuration, the users file with it.
    assert!(t.s.log().contains("users: 2"), "the count is logged");
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || t
        .s
        .metric("sbc_auth_users", &[])
        == 2.0));
    assert!(t.register("bob", "bob", "bob-pw", 200).0, "bob registers after the reload");
    // A broken file: logged with its line number, the running
    // configuration (and its users table) stays.
    std::fs::write(&users, format!("{text}carol:127.0.0.1:not-a-hash:\n")).unwrap();
    hup();
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || reloads(
        "the running one stays"
    ) == 1));
    let line = t.s.log().lines().find(|l| l.contains("the running one stays")).unwrap().to_owned();
    assert!(line.contains("line 4"), "{line}");
    assert_eq!(t.s.metric("sbc_auth_users", &[]), 2.0);
    assert!(t.register("alice", "alice", "alice-pw", 200).0, "the old table still works");
}

#[test]
fn calls_to_the_trunk_need_credentials() {
    let Some(t) = Lab::start("auth-invite") else { return };
    let uas_dir = t.run_dir("trunk");
    let _trunk = t.sipp.uas(&uas_dir, t.p.a).sn("uas").spawn("trunk");
    std::thread::sleep(Duration::from_millis(300));
    // The callers are on 127.0.0.2: 127.0.0.1 is the trunk's address, a
    // trusted source.
    let uac =
        |d: &std::path::Path| t.sipp.cmd(d).remote(t.s.sip).arg("-s").arg("0044207946000").local("127.0.0.2", t.p.uac);
    // No credentials, a foreign From: 407, and the trunk never sees it.
    let sf = Template::scenario("uac_expect.xml").set("CODE", 407).write(&t.dir, "fraud.xml");
    let d = t.run_dir("fraud");
    let ok = uac(&d).sf(&sf).calls(1).timeout_s(15).timeout_error().run_ok("fraud", Duration::from_secs(30));
    assert!(ok, "an unauthenticated call to the trunk is challenged");
    // Alice with her password: answered by the trunk.
    let sf = Template::scenario("auth_invite.xml")
        .set("USER", "alice")
        .set("PASS", "alice-pw")
        .set("HOLD_MS", 200)
        .write(&t.dir, "call.xml");
    let d = t.run_dir("call");
    let stf = d.join("stats.csv");
    // sipp's digest-uri is the sbc's address unless told the Request-URI
    // (the sbc requires the Request-URI itself).
    let ok = uac(&d)
        .arg("-auth_uri")
        .arg(format!("0044207946000@{}", t.s.sip))
        .sf(&sf)
        .calls(1)
        .timeout_s(20)
        .timeout_error()
        .stats(&stf)
        .arg("-trace_msg")
        .run_ok("call", Duration::from_secs(30));
    assert!(ok, "an authenticated call goes through");
    assert_eq!(SippStats::read(&stf).map(|s| s.successful()), Some(1));
    assert_eq!(t.s.metric("sbc_call_attempts_total", &[]), 1.0, "only the authenticated call reached the trunk");
    assert_eq!(t.s.metric("sbc_auth_successes_total", &[]), 1.0);
    assert!(t.s.metric("sbc_auth_challenges_total", &[]) >= 2.0);
}

#[test]
fn both_nodes_of_a_pair_get_one_nonce_secret_from_redis() {
    if !testkit::env::runs("redis-server") {
        testkit::skip("redis-server is not installed (apt-get install redis-server)");
        return;
    }
    let dir = TestDir::new("auth-redis");
    let port = testkit::ports::free_tcp_port();
    let _redis = testkit::ChildGuard::spawn(
        "redis",
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .current_dir(dir.path()),
        dir.path(),
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let key = sbc::ha::secret::key("xsbc-test");
    let shared = |candidate: &[u8]| {
        let mut r = sbc::ha::redis::Redis::new(addr, Duration::from_millis(500));
        let mut got = None;
        testkit::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            got = sbc::ha::secret::shared(&mut r, &key, candidate).ok();
            got.is_some()
        });
        got.expect("redis answers")
    };
    let a = shared(&[1u8; 32]);
    let b = shared(&[2u8; 32]);
    assert_eq!(a, b, "the second node reads the first node's secret");
    assert_eq!(a, "01".repeat(32).into_bytes());
}

/// A baresip config for a phone on `ip` (interface `dev`) that sends a
/// sine tone and plays what it receives into a file.
fn baresip_config(dir: &std::path::Path, ip: &str, dev: &str) -> String {
    // ausine makes 48 kHz stereo only; baresip resamples to PCMU.
    format!(
        "poll_method epoll\nsip_listen {ip}:5062\nsip_transports udp\nnet_interface {dev}\n\
         audio_player aufile,{rx}\naudio_source ausine,440\naudio_alert aufile,/dev/null\n\
         ausrc_srate 48000\nausrc_channels 2\nauplay_srate 48000\nauplay_channels 1\n\
         module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule ausine.so\nmodule aufile.so\n\
         module_app account.so\nmodule_app menu.so\n",
        rx = dir.join("rx.wav").display()
    )
}

#[test]
fn baresip_registers_with_digest_and_calls_with_media_both_ways() {
    if !testkit::env::require_root_and("baresip digest call", &["baresip"]) {
        return;
    }
    testkit::in_own_thread(baresip_call);
}

/// In a namespace of its own: the sbc on 10.99.0.1 (on lo), alice's
/// baresip on 10.99.1.2 (v1) and bob's on 10.99.2.3 (v2, a veth pair's
/// two ends). Both register with digest; alice calls bob (407, then
/// credentials), bob answers, both send audio for a few seconds.
fn baresip_call() {
    let ns = testkit::Netns::with_lo("authbs").unwrap();
    ns.ip(&["link", "add", "v1", "type", "veth", "peer", "name", "v2"]).unwrap();
    for (dev, addr) in [("v1", "10.99.1.2/24"), ("v2", "10.99.2.3/24"), ("lo", "10.99.0.1/32")] {
        ns.up(dev).unwrap();
        ns.addr(dev, addr).unwrap();
    }
    ns.enter();
    let dir = TestDir::new("auth-baresip");
    let mut users = String::new();
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        users.push_str(&sbc::auth::users::line_for(user, "10.99.0.1", pw));
        users.push('\n');
    }
    let users = dir.write("users.txt", users);
    // baresip 1.0 (libre) gives up on a challenge list that names SHA-256
    // at all, even after an MD5 one: offer MD5 only.
    let cfg = format!(
        "[sip]\nlisten = \"10.99.0.1:5060\"\ndomains = [\"10.99.0.1\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"10.99.0.1:5070\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n[health]\ninterval_ms = 0\n\
         [control]\nsocket = \"off\"\n[cdr]\nfile = \"off\"\n[metrics]\nlisten = \"10.99.0.1:9102\"\n\
         [relay]\ninterfaces = [\"10.99.0.1\"]\nlisten_ng = \"off\"\nport_min = 40000\nport_max = 40099\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n\
         [auth]\nusers_file = \"{}\"\nalgorithms = [\"MD5\"]\n",
        users.display()
    );
    let path = dir.write("sbc.toml", cfg);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sbc"));
    cmd.args(["run", "--config"]).arg(&path).env("RUST_LOG", "info");
    let _sbc = testkit::ChildGuard::spawn("sbc", &mut cmd, dir.path());
    let sip = std::net::SocketAddr::from(([10, 99, 0, 1], 5060));
    assert!(testkit::sip::wait_for_sip(sip, Duration::from_secs(10)), "sbc did not answer OPTIONS");
    let metrics = std::net::SocketAddr::from(([10, 99, 0, 1], 9102));
    let metric = |name: &str, labels: &[(&str, &str)]| testkit::metrics::metric_sum(metrics, name, labels);

    let phone = |name: &str, user: &str, pw: &str, ip: &str, dev: &str| -> PathBuf {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config"), baresip_config(&d, ip, dev)).unwrap();
        std::fs::write(
            d.join("accounts"),
            format!("<sip:{user}@10.99.0.1>;auth_pass={pw};outbound=\"sip:10.99.0.1:5060\";answermode=auto;regint=600;audio_codecs=PCMU\n"),
        )
        .unwrap();
        d
    };
    let bob_dir = phone("bob", "bob", "bob-pw", "10.99.2.3", "v2");
    let _bob = testkit::ChildGuard::spawn(
        "baresip-bob",
        std::process::Command::new("baresip")
            .arg("-f")
            .arg(&bob_dir)
            .args(["-t", "20"])
            .stdin(std::process::Stdio::null()),
        &bob_dir,
    );
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            metric("sbc_registrations_total", &[]) >= 1.0
        }),
        "bob registers with digest"
    );
    let alice_dir = phone("alice", "alice", "alice-pw", "10.99.1.2", "v1");
    let mut alice = testkit::ChildGuard::spawn(
        "baresip-alice",
        std::process::Command::new("baresip")
            .arg("-f")
            .arg(&alice_dir)
            .args(["-t", "9", "-e", "/dial sip:bob@10.99.0.1"])
            .stdin(std::process::Stdio::null()),
        &alice_dir,
    );
    let _ = alice.wait_timeout(Duration::from_secs(20));
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            metric("media_relay_sessions_ended_total", &[("media", "both")]) >= 1.0
        }),
        "a call with media both ways ended: {}",
        alice.log_tail(30)
    );
    // Both registered (alice unregisters again when she quits).
    assert!(metric("sbc_registrations_total", &[]) >= 2.0, "both phones registered");
    assert_eq!(metric("sbc_call_answers_total", &[]), 1.0);
    assert!(metric("sbc_auth_successes_total", &[]) >= 3.0, "two REGISTERs and the INVITE authenticated");
    assert_eq!(metric("sbc_auth_failures_total", &[]), 0.0);
}
