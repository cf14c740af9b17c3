//! Two realms end to end: the sbc in a namespace of its own between an
//! `inside` namespace (phones, PBX) and an `outside` one (the carrier), which
//! have no route to each other (`testkit::realms` draws the lab).
//!
//! sipp and `xsbc-ua` calls cross the border both ways carrying RTP both
//! ways; a phone registers inside and the carrier calls it; a call is put on
//! hold and resumed across the border; the outside realm sits behind a NAT
//! and advertises its public address; the outside realm is IPv6 while the
//! inside one is IPv4. Each side's wire is captured (`AF_PACKET`, the pcap
//! files are kept with a failing test's scratch dir) and must name only that
//! side's sbc address: in IP headers, Via, Record-Route, Contact, the
//! Request-URI, SDP (c=, o=), and anywhere else in the text, since the
//! scenarios write domains, not addresses, in From, To and Call-ID.
//!
//! One more runs the calls with the relay on the AF_XDP datapath, its XDP
//! program attached to both of the sbc's legs.
//!
//! Needs root, `ip` and sipp (and `iptables` for the NAT); without them each
//! test says so and skips, except under CI=true, where it must run.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use testkit::capture::{Capture, Captured, Packet, UDP};
use testkit::realms::{self, Host, RealmLab};
use testkit::sipp::{SippCmd, Template};
use testkit::{ChildGuard, Sipp, TestDir};

/// The labs use fixed names and addresses inside their namespaces, and the
/// machine has two cores: one lab at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The sbc's SIP port in both realms, and the peers' ports.
const SIP_PORT: u16 = 5060;
const UAC_PORT: u16 = 5062;
const PHONE_PORT: u16 = 5070;
const UAS_MEDIA_PORT: u16 = 6000;

/// How the outside realm is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outside {
    /// IPv4, on the sbc's own address.
    V4,
    /// IPv4 behind a NAT: the sbc advertises the public address.
    Nat,
    /// IPv6.
    V6,
}

/// One test: its lab, scratch dir and sbc.
struct Test {
    sipp: Sipp,
    /// The sbc, stopped before the lab goes away.
    sbc: Option<ChildGuard>,
    lab: RealmLab,
    outside: Outside,
    /// The relay on the AF_XDP datapath, attached to both of the sbc's legs.
    xdp: bool,
    dir: TestDir,
    _serial: MutexGuard<'static, ()>,
}

fn can_run(what: &str, outside: Outside) -> bool {
    let mut tools = vec!["ip", "sipp"];
    if outside == Outside::Nat {
        tools.push("iptables");
    }
    testkit::env::require_root_and(what, &tools)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn sa(host: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(host), port)
}

impl Test {
    /// The lab (checked), without the sbc; `None` when it cannot run.
    fn lab(tag: &str, outside: Outside) -> Option<Test> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        if !can_run(&format!("realms {tag}"), outside) {
            return None;
        }
        let sipp = Sipp::find()?;
        let dir = TestDir::new(&format!("realms-{tag}"));
        let lab = match outside {
            Outside::Nat => RealmLab::behind_nat(tag),
            Outside::V4 | Outside::V6 => RealmLab::new(tag),
        }
        .unwrap_or_else(|e| panic!("building the lab: {e}"));
        lab.check().unwrap_or_else(|e| panic!("the lab is not what it should be: {e}"));
        Some(Test { sipp, sbc: None, lab, outside, xdp: false, dir, _serial: serial })
    }

    /// The lab with the sbc running on it.
    fn start(tag: &str, outside: Outside) -> Option<Test> {
        Test::start_on(tag, outside, false)
    }

    /// [`Test::start`], with the relay on the AF_XDP datapath if `xdp`.
    fn start_on(tag: &str, outside: Outside, xdp: bool) -> Option<Test> {
        let mut t = Test::lab(tag, outside)?;
        t.xdp = xdp;
        t.start_sbc();
        Some(t)
    }

    /// The sbc's outside address as the carrier sees it.
    fn sbc_outside(&self) -> &'static str {
        match self.outside {
            Outside::V4 => realms::SBC_OUTSIDE,
            Outside::Nat => realms::PUBLIC,
            Outside::V6 => realms::SBC_OUTSIDE6,
        }
    }

    /// The sbc's outside address as bound in its namespace.
    fn sbc_outside_bound(&self) -> &'static str {
        match self.outside {
            Outside::V4 | Outside::Nat => realms::SBC_OUTSIDE,
            Outside::V6 => realms::SBC_OUTSIDE6,
        }
    }

    /// The carrier's address.
    fn carrier(&self) -> &'static str {
        match self.outside {
            Outside::V4 => realms::CARRIER,
            Outside::Nat => realms::CARRIER_PUBLIC,
            Outside::V6 => realms::CARRIER6,
        }
    }

    /// The sbc's config: the two realms, the carrier trunk in the outside
    /// one, every number routed to it.
    fn config(&self) -> String {
        let (listen, advertise, media) = match self.outside {
            Outside::V4 => {
                (format!("{}:{SIP_PORT}", realms::SBC_OUTSIDE), String::new(), realms::SBC_OUTSIDE.to_owned())
            }
            Outside::Nat => (
                format!("{}:{SIP_PORT}", realms::SBC_OUTSIDE),
                format!("advertise = \"{}\"\n", realms::PUBLIC),
                format!("{}!{}", realms::SBC_OUTSIDE, realms::PUBLIC),
            ),
            Outside::V6 => {
                (format!("[{}]:{SIP_PORT}", realms::SBC_OUTSIDE6), String::new(), realms::SBC_OUTSIDE6.to_owned())
            }
        };
        let trunk = SocketAddr::new(ip(self.carrier()), SIP_PORT);
        format!(
            r#"[sip]
domains = ["sbc.example", "{inside}"]
invite_timeout_ms = 2000
log_level = "debug"

[[realm]]
name = "inside"
listen = "{inside}:{SIP_PORT}"
media = "inside"

[[realm]]
name = "outside"
listen = "{listen}"
{advertise}media = "outside"

[[trunk]]
name = "carrier"
address = "{trunk}"
realm = "outside"
probe = false

[[route]]
prefix = ""
trunks = ["carrier"]

[health]
interval_ms = 0

[cdr]
file = "{cdr}"

[metrics]
listen = "127.0.0.1:9100"

[control]
socket = "off"

[relay]
interfaces = ["inside/{inside}", "outside/{media}"]
listen_ng = "off"
port_min = 40000
port_max = 40999
workers = 1
timeout = 60
metrics = "off"
{datapath}"#,
            inside = realms::SBC_INSIDE,
            datapath = if self.xdp {
                // The peers send over veth with partial (offloaded) UDP
                // checksums.
                format!(
                    "datapath = \"xdp\"\nxdp_interfaces = [\"{}\", \"{}\"]\nxdp_full_checksum = true\n",
                    realms::SBC_INSIDE_DEV,
                    realms::SBC_OUTSIDE_DEV
                )
            } else {
                "datapath = \"socket\"\n".to_owned()
            },
            cdr = self.dir.join("cdr.jsonl").display(),
        )
    }

    /// Starts the sbc in its namespace and waits until both realms answer
    /// OPTIONS, each from its own side.
    fn start_sbc(&mut self) {
        let cfg = self.dir.write("sbc.toml", self.config());
        let mut cmd = self.lab.sbc.command(env!("CARGO_BIN_EXE_sbc"));
        cmd.args(["run", "--config"]).arg(&cfg);
        self.sbc = Some(ChildGuard::spawn("sbc", &mut cmd, self.dir.path()));
        let inside = sa(realms::SBC_INSIDE, SIP_PORT);
        let mut got = None;
        for _ in 0..20 {
            // An sbc that refused its config fails here, at once.
            self.sbc_running();
            got = self.lab.run_in(Host::Inside, move || {
                testkit::sip::sip_options_from(ip(realms::PHONE), inside, Duration::from_millis(500))
            });
            if got.is_some() {
                break;
            }
        }
        assert!(got.as_deref().is_some_and(|s| s.starts_with("SIP/2.0 200")), "inside realm: OPTIONS got {got:?}");
        let (carrier, outside) = (ip(self.carrier()), sa(self.sbc_outside(), SIP_PORT));
        let got = self
            .lab
            .run_in(Host::Outside, move || testkit::sip::sip_options_from(carrier, outside, Duration::from_secs(5)));
        assert!(got.as_deref().is_some_and(|s| s.starts_with("SIP/2.0 200")), "outside realm: OPTIONS got {got:?}");
    }

    fn sbc_running(&mut self) {
        if let Some(s) = self.sbc.as_mut() {
            s.assert_running();
        }
    }

    /// A sipp run in `host`'s namespace, bound to `local:port`.
    fn sipp(&self, host: Host, local: &str, port: u16) -> SippCmd {
        self.sipp.cmd(self.dir.path()).netns(self.lab.ns(host).name()).local(local, port)
    }

    /// A UAS answering with SDP and echoing RTP (`uas_echo.xml`), or
    /// `scenario`, for one call, bound in `host` at `local:port`.
    fn uas(&self, name: &str, host: Host, local: &str, port: u16, scenario: &str) -> ChildGuard {
        let log = self.dir.join(&format!("{name}_log.txt"));
        let cmd = self
            .sipp(host, local, port)
            .scenario(scenario)
            .media(local, Some(UAS_MEDIA_PORT))
            .arg("-rtp_echo")
            .calls(1)
            .timeout_s(30)
            .trace_err()
            .log_file(log);
        let guard = cmd.spawn(name);
        std::thread::sleep(Duration::from_millis(300));
        guard
    }

    /// A UAC in `host` at `local` calling `service` at `remote` with
    /// `scenario` (a path); returns whether it completed.
    fn uac(
        &self,
        name: &str,
        host: Host,
        local: &str,
        remote: SocketAddr,
        service: &str,
        scenario: &std::path::Path,
    ) -> bool {
        let cmd = self
            .sipp(host, local, UAC_PORT)
            .sf(scenario)
            .remote(remote)
            .arg("-s")
            .arg(service)
            .arg("-cid_str")
            .arg("%u-%p@realm.invalid")
            .media(local, None)
            .calls(1)
            .timeout_s(30)
            .timeout_error()
            .trace_err()
            .log_file(self.dir.join(&format!("{name}_log.txt")));
        cmd.run_ok(name, Duration::from_secs(40))
    }

    /// The RTP caller's scenario: one second of A-law, then BYE.
    fn uac_rtp(&self) -> std::path::PathBuf {
        let audio = self.dir.write("pcma.raw", vec![0xd5u8; 50 * 160]);
        Template::scenario("realm_uac_rtp.xml")
            .set("AUDIO", audio.display())
            .set("PAUSE_MS", 1500)
            .write(&self.dir, "uac.xml")
    }

    /// Registers `user` from the phone (contact `PHONE:PHONE_PORT`) over the
    /// inside realm.
    fn register(&self, user: &str) {
        let out = self
            .lab
            .inside
            .command(env!("CARGO_BIN_EXE_xsbc-ua"))
            .args(["register", "--local", &format!("{}:{PHONE_PORT}", realms::PHONE)])
            .args(["--proxy", &format!("{}:{SIP_PORT}", realms::SBC_INSIDE), "--user", user])
            .output()
            .expect("xsbc-ua runs");
        assert!(out.status.success(), "REGISTER from inside failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Captures on both sides around `f`; the pcap files go to the scratch
    /// dir as `<label>-inside.pcap` and `<label>-outside.pcap`.
    fn captured<T>(&self, label: &str, f: impl FnOnce() -> T) -> (T, Captured, Captured) {
        let inside = self.lab.capture(Host::Inside).unwrap_or_else(|e| panic!("{e}"));
        let outside = self.lab.capture(Host::Outside).unwrap_or_else(|e| panic!("{e}"));
        let result = f();
        let (inside, outside) = (Capture::stop(inside), Capture::stop(outside));
        for c in [&inside, &outside] {
            let _ = c.save(&self.dir.join(&format!("{label}-{}.pcap", c.label)));
        }
        (result, inside, outside)
    }

    /// The CDRs written so far.
    fn cdrs(&self) -> Vec<serde_json::Value> {
        self.dir.read("cdr.jsonl").lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits for the CDR of the call `call_id`; says what is wrong unless
    /// the call ended with the caller's BYE after a 200 and the relay
    /// counted RTP from both legs.
    fn cdr_problem(&self, call_id: &str) -> Result<(), String> {
        testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            self.cdrs().iter().any(|r| r["call_id"] == call_id)
        });
        let records = self.cdrs();
        let r = records.iter().find(|r| r["call_id"] == call_id).ok_or(format!("no CDR for {call_id}: {records:?}"))?;
        if r["final_code"] != 200 || r["end_reason"] != "caller-bye" {
            return Err(format!("CDR: not answered and ended by the caller: {r}"));
        }
        let legs = r["relay"].as_array().ok_or(format!("CDR: no relay statistics: {r}"))?;
        let packets: Vec<u64> = legs.iter().map(|l| l["media"][0]["packets"].as_u64().unwrap_or(0)).collect();
        if packets.len() != 2 || packets.iter().any(|&n| n < 20) {
            return Err(format!("CDR: RTP packets per leg through the relay {packets:?}: {r}"));
        }
        Ok(())
    }

    /// The sbc's address on `side` as written in messages (the advertised
    /// one behind the NAT).
    fn own(&self, side: Host) -> &'static str {
        if side == Host::Inside {
            realms::SBC_INSIDE
        } else {
            self.sbc_outside()
        }
    }

    /// What must never appear on `side`'s wire: the other realm's addresses
    /// (lowercase text prefixes).
    fn forbidden(&self, side: Host) -> Vec<&'static str> {
        match (side, self.outside) {
            (Host::Inside, _) => vec!["10.88.2.", "fd88:", "203.0.113."],
            // Behind the NAT, or on IPv6, no private IPv4 address of the
            // sbc's either.
            (_, Outside::Nat | Outside::V6) => vec!["10.88."],
            (_, Outside::V4) => vec!["10.88.1."],
        }
    }

    /// Checks one side's capture: only that side's addresses, the sbc's
    /// own Via alone on the requests it sends, its address in Record-Route,
    /// Contact and SDP. Returns a summary line and every problem found
    /// (each offending line once, with the message it is in).
    fn check_side(&self, side: Host, cap: &Captured) -> (String, Vec<String>) {
        let own = self.own(side);
        let own_ip = ip(own);
        let forbidden = self.forbidden(side);
        let packets = cap.packets();
        let mut problems: Vec<String> = Vec::new();
        let mut note = |p: &Packet, what: String| {
            let line = format!("{} wire, {} -> {} [{}]: {what}", cap.label, p.src, p.dst, p.start_line());
            if !problems.contains(&line) {
                problems.push(line);
            }
        };
        let leaks = |text: &str| forbidden.iter().any(|f| text.to_ascii_lowercase().contains(f));
        for p in &packets {
            if leaks(&p.src.to_string()) || leaks(&p.dst.to_string()) {
                note(p, "IP header of the other realm".into());
            }
            if p.is_sip() {
                for l in p.text().lines().filter(|l| leaks(l)) {
                    note(p, format!("other realm's address in {l:?}"));
                }
            } else if leaks(&p.text()) {
                note(p, format!("other realm's address in a non-SIP payload of {} bytes", p.payload.len()));
            }
        }
        let sip = cap.sip();
        let from_sbc: Vec<&Packet> = sip.iter().filter(|p| p.src == own_ip).collect();
        let none_from_sbc = from_sbc.is_empty().then(|| format!("{} wire: no SIP from the sbc ({own})", cap.label));
        let mut invites = 0;
        for p in &from_sbc {
            let line = p.start_line();
            let vias: Vec<String> =
                p.headers("via").iter().flat_map(|v| v.split(',').map(|s| s.trim().to_owned())).collect();
            if !line.starts_with("SIP/2.0") {
                // A request the sbc forwards or sends: its own Via alone.
                if vias.len() != 1 {
                    note(p, format!("{} Vias on a request from the sbc: {vias:?}", vias.len()));
                }
                if !vias.first().is_some_and(|v| v.contains(own)) {
                    note(p, format!("the sbc's Via does not name {own}: {vias:?}"));
                }
            }
            let initial = !p.headers("to").first().is_some_and(|to| to.contains("tag="));
            if line.starts_with("INVITE ") && initial {
                invites += 1;
                let rr = p.headers("record-route");
                if !rr.first().is_some_and(|r| r.contains(own)) {
                    note(p, format!("the INVITE's top Record-Route does not name {own}: {rr:?}"));
                }
            }
            for contact in p.headers("contact") {
                if !contact.contains(own) {
                    note(p, format!("Contact {contact} is not the sbc's {own}"));
                }
            }
            for l in p.body().lines().filter(|l| l.starts_with("c=") || l.starts_with("o=")) {
                if !l.contains(own) {
                    note(p, format!("SDP line {l:?} does not name {own}"));
                }
            }
        }
        problems.extend(none_from_sbc);
        let (to_sbc, from_sbc_rtp) = media_counts(cap, own_ip);
        let summary = format!(
            "{} wire: {} SIP messages ({} from the sbc, {invites} initial INVITEs), RTP {to_sbc} to the sbc, {from_sbc_rtp} from it",
            cap.label,
            sip.len(),
            from_sbc.len()
        );
        (summary, problems)
    }

    /// Both sides' checks, RTP both ways on both wires, and the call's CDR
    /// (`call_id`): every problem found, for [`assert_none`].
    fn check_call(&self, inside: &Captured, outside: &Captured, call_id: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (side, cap) in [(Host::Inside, inside), (Host::Outside, outside)] {
            let (summary, found) = self.check_side(side, cap);
            eprintln!("{summary}");
            problems.extend(found);
            let (to, from) = media_counts(cap, ip(self.own(side)));
            if to < 20 || from < 20 {
                problems.push(format!("RTP both ways on the {} wire: {summary}", cap.label));
            }
        }
        if let Err(e) = self.cdr_problem(call_id) {
            problems.push(e);
        }
        problems
    }

    /// The phone calls 1000 (routed to the carrier) with RTP; the carrier
    /// answers and echoes it. Returns the captures, inside and outside.
    fn call_out(&self, label: &str) -> (Captured, Captured) {
        let uac = self.uac_rtp();
        let carrier = self.carrier();
        let mut uas = self.uas("carrier", Host::Outside, carrier, SIP_PORT, "uas_echo.xml");
        let (ok, inside, outside) = self.captured(label, || {
            self.uac("phone", Host::Inside, realms::PHONE, sa(realms::SBC_INSIDE, SIP_PORT), "1000", &uac)
        });
        assert!(ok, "the call from inside to the carrier failed\n{}", self.sbc_log_tail());
        let st = uas.wait_timeout(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "the carrier's UAS did not finish cleanly\n{}", uas.log_tail(30));
        (inside, outside)
    }

    /// The phone registers as alice inside; the carrier calls alice with
    /// RTP; the phone answers and echoes it.
    fn call_in(&self, label: &str) -> (Captured, Captured) {
        let uac = self.uac_rtp();
        self.register("alice");
        let mut phone = self.uas("phone", Host::Inside, realms::PHONE, PHONE_PORT, "uas_echo.xml");
        let remote = sa(self.sbc_outside(), SIP_PORT);
        let (ok, inside, outside) =
            self.captured(label, || self.uac("carrier", Host::Outside, self.carrier(), remote, "alice", &uac));
        assert!(ok, "the call from the carrier to the registered phone failed\n{}", self.sbc_log_tail());
        let st = phone.wait_timeout(Duration::from_secs(10));
        assert!(st.is_some_and(|s| s.success()), "the phone's UAS did not finish cleanly\n{}", phone.log_tail(30));
        (inside, outside)
    }

    /// The Call-ID of the one INVITE on a capture.
    fn call_id(cap: &Captured) -> String {
        let sip = cap.sip();
        let invite = sip.iter().find(|p| p.start_line().starts_with("INVITE ")).expect("an INVITE on the wire");
        invite.headers("call-id").first().cloned().expect("a Call-ID")
    }

    /// The sum of the sbc's metric `name` (scraped in its namespace).
    fn metric(&self, name: &str) -> f64 {
        let name = name.to_owned();
        self.lab.run_in(Host::Sbc, move || testkit::metrics::metric_spec(sa("127.0.0.1", 9100), &name))
    }

    fn sbc_log_tail(&self) -> String {
        self.sbc.as_ref().map(|s| s.log_tail(60)).unwrap_or_default()
    }
}

impl Drop for Test {
    fn drop(&mut self) {
        // The sbc goes before its namespace.
        self.sbc.take();
    }
}

#[test]
fn the_lab_isolates_the_realms_and_sipp_reaches_each_side() {
    for kind in [Outside::V4, Outside::Nat, Outside::V6] {
        let tag = match kind {
            Outside::V4 => "rlab",
            Outside::Nat => "rlabn",
            Outside::V6 => "rlab6",
        };
        let Some(t) = Test::lab(tag, kind) else { return };
        let uac = t.uac_rtp();
        // A sipp UAS echoing RTP stands in for the sbc in its namespace and
        // is called with RTP from each side on the sbc's address there.
        let sides = [
            (Host::Inside, realms::PHONE, realms::SBC_INSIDE, realms::SBC_INSIDE),
            (Host::Outside, t.carrier(), t.sbc_outside_bound(), t.sbc_outside()),
        ];
        for (host, local, bound, seen) in sides {
            let mut uas = t.uas("sbc-ns", Host::Sbc, bound, SIP_PORT, "uas_echo.xml");
            let (ok, inside, outside) =
                t.captured(&format!("lab-{host:?}"), || t.uac("peer", host, local, sa(seen, SIP_PORT), "1000", &uac));
            assert!(ok, "{kind:?}: sipp in {host:?} did not reach the sbc namespace at {seen}");
            assert!(uas.wait_timeout(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", uas.log_tail(20));
            let cap = if host == Host::Inside { &inside } else { &outside };
            let (to, from) = media_counts(cap, ip(seen));
            // Behind the NAT the stand-in answers with its private address
            // (it knows nothing of the NAT), which the carrier cannot reach:
            // only the sbc's advertised address makes RTP flow there.
            if !(kind == Outside::Nat && host == Host::Outside) {
                assert!(
                    to >= 20 && from >= 20,
                    "{kind:?}: RTP on the {} wire: {to} to {seen}, {from} from it",
                    cap.label
                );
            }
            let other = if host == Host::Inside { &outside } else { &inside };
            assert!(other.sip().is_empty(), "{kind:?}: SIP leaked to the {} wire", other.label);
        }
        eprintln!("{kind:?} lab: isolated, and sipp calls with RTP reach the sbc namespace from both sides");
    }
}

/// Fails with every problem listed, if there is any.
fn assert_none(problems: &[String]) {
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// RTP (UDP that is not SIP) on a wire to `addr` and from it.
fn media_counts(cap: &Captured, addr: IpAddr) -> (usize, usize) {
    let packets = cap.packets();
    let media: Vec<&Packet> = packets
        .iter()
        .filter(|p| p.proto == UDP && !p.is_sip() && p.src_port != SIP_PORT && p.dst_port != SIP_PORT)
        .collect();
    (media.iter().filter(|p| p.dst == addr).count(), media.iter().filter(|p| p.src == addr).count())
}

#[test]
fn a_call_from_inside_to_the_carrier_carries_rtp_and_hides_the_inside() {
    let Some(t) = Test::start("rout", Outside::V4) else { return };
    let (inside, outside) = t.call_out("out");
    assert_none(&t.check_call(&inside, &outside, &Test::call_id(&inside)));
}

#[test]
fn the_carrier_calls_a_phone_registered_inside() {
    let Some(t) = Test::start("rin", Outside::V4) else { return };
    let (inside, outside) = t.call_in("in");
    let id = Test::call_id(&outside);
    assert_none(&t.check_call(&inside, &outside, &id));
    let r = t.cdrs().into_iter().find(|r| r["call_id"] == id.as_str()).unwrap();
    assert_eq!(r["target"].as_str(), Some("user:alice@sbc.example"), "{r}");
}

#[test]
fn xsbc_ua_calls_cross_both_ways_with_rtp() {
    let Some(t) = Test::start("rua", Outside::V4) else { return };
    let ua = |host: Host, name: &str, args: &str| -> ChildGuard {
        let mut cmd = t.lab.ns(host).command(env!("CARGO_BIN_EXE_xsbc-ua"));
        cmd.args(args.split_whitespace()).arg("--report").arg(t.dir.join(&format!("{name}.jsonl")));
        ChildGuard::spawn(name, &mut cmd, t.dir.path())
    };
    let report = |name: &str| -> Vec<serde_json::Value> {
        t.dir.read(&format!("{name}.jsonl")).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let (phone, carrier) = (realms::PHONE, realms::CARRIER);
    let sbc_in = format!("{}:{SIP_PORT}", realms::SBC_INSIDE);
    let sbc_out = format!("{}:{SIP_PORT}", realms::SBC_OUTSIDE);
    // Two calls each way; the callee hangs up the odd one, so BYEs cross
    // the border in both directions.
    let calls = "--callee-hangup-odd --calls 2 --rate 5 --duration-ms 1500 --max-ms 12000";
    // Out: the phone calls 1000, routed to the carrier.
    let _callee = ua(
        Host::Outside,
        "carrier-callee",
        &format!("callee --local {carrier}:{SIP_PORT} --proxy {sbc_out} --rtp-ip {carrier} --rtp-base 30000 --duration-ms 1500 --run-ms 15000"),
    );
    let mut caller = ua(
        Host::Inside,
        "phone-caller",
        &format!(
            "caller --local {phone}:{PHONE_PORT} --proxy {sbc_in} --rtp-ip {phone} --rtp-base 20000 --to 1000 {calls}"
        ),
    );
    assert!(caller.wait_timeout(Duration::from_secs(20)).is_some(), "the inside caller did not finish");
    // In: the phone registers as bob, the carrier calls bob.
    t.register("bob");
    let _phone = ua(
        Host::Inside,
        "phone-callee",
        &format!("callee --local {phone}:{PHONE_PORT} --proxy {sbc_in} --rtp-ip {phone} --rtp-base 22000 --duration-ms 1500 --run-ms 15000"),
    );
    let mut caller2 = ua(
        Host::Outside,
        "carrier-caller",
        &format!("caller --local {carrier}:{UAC_PORT} --proxy {sbc_out} --rtp-ip {carrier} --rtp-base 32000 --to bob {calls}"),
    );
    assert!(caller2.wait_timeout(Duration::from_secs(20)).is_some(), "the carrier's caller did not finish");
    std::thread::sleep(Duration::from_millis(500));
    for (caller, callee) in [("phone-caller", "carrier-callee"), ("carrier-caller", "phone-callee")] {
        let (calls, answered) = (report(caller), report(callee));
        assert_eq!(calls.len(), 2, "{caller}: {calls:?}\n{}", t.sbc_log_tail());
        for c in &calls {
            assert_eq!(c["answered"], true, "{caller}: {c}");
            // Odd calls are hung up by the callee: its BYE crosses back.
            let ended = c["ended"].as_str().unwrap_or("");
            assert!(
                ended == "bye-received" || (ended == "bye-sent" && c["bye_code"] == 200),
                "{caller}: the call did not end cleanly: {c}"
            );
            assert!(c["rtp_received"].as_u64().unwrap_or(0) > 20, "{caller} got no RTP through the sbc: {c}");
            let theirs = answered.iter().find(|a| a["call_id"] == c["call_id"]);
            let got = theirs.and_then(|a| a["rtp_received"].as_u64()).unwrap_or(0);
            assert!(got > 20, "{callee} got {got} RTP packets of {}: {theirs:?}", c["call_id"]);
        }
        eprintln!("{caller} -> {callee}: {} calls, RTP both ways", calls.len());
    }
}

/// A call put on hold and resumed by its caller with two re-INVITEs: from
/// the phone to the carrier, or (`inward`) from the carrier to the phone
/// registered inside. Checks that each offer crossed, that the relay kept
/// its ports on both sides, and returns the captures' problems.
fn hold_and_resume(t: &Test, inward: bool) -> Vec<String> {
    let uac = Template::scenario("realm_uac_hold.xml").write(&t.dir, "uac_hold.xml");
    let (label, callee_side, caller_side) =
        if inward { ("hold-in", Host::Inside, Host::Outside) } else { ("hold-out", Host::Outside, Host::Inside) };
    let mut uas = if inward {
        t.register("alice");
        t.uas(&format!("{label}-uas"), Host::Inside, realms::PHONE, PHONE_PORT, "uas_reinvite.xml")
    } else {
        t.uas(&format!("{label}-uas"), Host::Outside, t.carrier(), SIP_PORT, "uas_reinvite.xml")
    };
    let uac_name = format!("{label}-uac");
    let (ok, inside, outside) = t.captured(label, || {
        if inward {
            t.uac(&uac_name, Host::Outside, t.carrier(), sa(t.sbc_outside(), SIP_PORT), "alice", &uac)
        } else {
            t.uac(&uac_name, Host::Inside, realms::PHONE, sa(realms::SBC_INSIDE, SIP_PORT), "1000", &uac)
        }
    });
    assert!(ok, "{label}: hold and resume failed\n{}", t.sbc_log_tail());
    assert!(uas.wait_timeout(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", uas.log_tail(30));
    let grab = |file: &str, tag: &str| -> Vec<String> {
        t.dir.read(file).lines().filter_map(|l| l.split_once(tag).map(|(_, p)| p.trim().to_owned())).collect()
    };
    let offers = grab(&format!("{label}-uas_log.txt"), "OFFERPORT");
    let answers = grab(&format!("{uac_name}_log.txt"), "ANSWERPORT");
    let answer_addrs = grab(&format!("{uac_name}_log.txt"), "ANSWERADDR");
    eprintln!("{label}: relay ports seen by the callee: {offers:?}, by the caller: {answers:?} at {answer_addrs:?}");
    assert_eq!(offers.len(), 3, "{label}: the INVITE and both re-INVITEs crossed to the callee");
    assert!(offers.iter().all(|o| *o == offers[0]), "{label}: the callee-facing relay port never changed");
    assert!(answers.iter().all(|a| *a == answers[0]), "{label}: the caller-facing relay port never changed");
    assert_eq!(
        answer_addrs,
        vec![t.own(caller_side); 3],
        "{label}: every answer names the sbc's address on the caller's side"
    );
    let callee_wire = if inward { &inside } else { &outside };
    let own = ip(t.own(callee_side));
    let invites: Vec<Packet> =
        callee_wire.sip().into_iter().filter(|p| p.start_line().starts_with("INVITE ") && p.src == own).collect();
    assert_eq!(invites.len(), 3, "{label}: three INVITEs on the callee's wire");
    assert!(
        invites[1].body().contains("a=sendonly"),
        "{label}: the hold offer on the callee's wire: {}",
        invites[1].text()
    );
    let mut problems = Vec::new();
    for (side, cap) in [(Host::Inside, &inside), (Host::Outside, &outside)] {
        let (summary, found) = t.check_side(side, cap);
        eprintln!("{label}: {summary}");
        problems.extend(found);
    }
    problems
}

#[test]
fn hold_and_resume_across_the_border() {
    let Some(t) = Test::start("rhold", Outside::V4) else { return };
    let mut problems = hold_and_resume(&t, false);
    problems.extend(hold_and_resume(&t, true));
    assert_none(&problems);
}

#[test]
fn the_outside_realm_behind_nat_advertises_its_public_address() {
    let Some(t) = Test::start("rnat", Outside::Nat) else { return };
    let (inside, outside) = t.call_out("out");
    let mut problems = t.check_call(&inside, &outside, &Test::call_id(&inside));
    let (inside, outside) = t.call_in("in");
    problems.extend(t.check_call(&inside, &outside, &Test::call_id(&outside)));
    assert_none(&problems);
}

#[test]
fn an_ipv6_outside_realm_with_an_ipv4_inside_realm() {
    let Some(t) = Test::start("rv6", Outside::V6) else { return };
    let (inside, outside) = t.call_out("out");
    let mut problems = t.check_call(&inside, &outside, &Test::call_id(&inside));
    assert!(outside.packets().iter().all(|p| p.src.is_ipv6()), "only IPv6 on the outside wire");
    let (inside, outside) = t.call_in("in");
    problems.extend(t.check_call(&inside, &outside, &Test::call_id(&outside)));
    assert!(outside.packets().iter().all(|p| p.src.is_ipv6()), "only IPv6 on the outside wire");
    assert_none(&problems);
}

/// Calls both ways with the relay on the AF_XDP datapath, its program
/// attached natively to both of the sbc's legs.
fn calls_on_af_xdp(tag: &str, outside: Outside) {
    let Some(t) = Test::start_on(tag, outside, true) else { return };
    for dev in [realms::SBC_INSIDE_DEV, realms::SBC_OUTSIDE_DEV] {
        let out = t.lab.sbc.command("ip").args(["-d", "link", "show", "dev", dev]).output().expect("ip runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("prog/xdp"), "no XDP program on {dev}:\n{text}");
    }
    assert_eq!(t.metric("media_relay_xdp_interfaces{mode=\"native\"}"), 2.0, "both legs natively");
    let (inside, outside) = t.call_out("out");
    let mut problems = t.check_call(&inside, &outside, &Test::call_id(&inside));
    let (inside, outside) = t.call_in("in");
    problems.extend(t.check_call(&inside, &outside, &Test::call_id(&outside)));
    let (relayed, kernel, handoff) = (
        t.metric("media_relay_packets_relayed_total"),
        t.metric("media_relay_xdp_kernel_path_total"),
        t.metric("media_relay_sip_handoff_total"),
    );
    eprintln!(
        "AF_XDP across the realms ({:?} outside): {relayed} packets relayed, {kernel} through the kernel, {handoff} SIP handed over",
        t.outside
    );
    // Two calls of 50 packets each way, echoed: 200 relayed.
    assert!(relayed >= 180.0, "media relayed on the AF_XDP datapath: {relayed}");
    assert!(kernel < relayed / 2.0, "most media left from the AF_XDP rings: {kernel} of {relayed} through the kernel");
    assert!(handoff >= 10.0, "SIP to both realms' sockets came through the XDP handoff: {handoff}");
    assert_none(&problems);
    scanner_dies_in_xdp(&t);
}

/// A scanner's OPTIONS (User-Agent friendly-scanner) from the PBX's address
/// gets it banned by the guard; the ban goes into the XDP program, so what
/// that address sends next is dropped in the driver and never reaches the
/// sbc, while the phone beside it is still answered.
fn scanner_dies_in_xdp(t: &Test) {
    let (xdp_before, guard_before) = (
        t.metric("media_relay_xdp_packets_total{verdict=\"dropped_banned\"}"),
        t.metric("sbc_guard_dropped_total{reason=\"banned\"}"),
    );
    let sbc = sa(realms::SBC_INSIDE, SIP_PORT);
    let answered = t.lab.run_in(Host::Inside, move || {
        let s = std::net::UdpSocket::bind(sa(realms::PBX, 0)).expect("bind the scanner");
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let port = s.local_addr().expect("addr").port();
        let mut answered = 0;
        for n in 0..21 {
            let ua = if n == 0 { "User-Agent: friendly-scanner\r\n" } else { "" };
            let m = format!(
                "OPTIONS sip:100@{sbc} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx}:{port};branch=z9hG4bKscan{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:100@{pbx}>;tag=s{n}\r\nTo: <sip:100@{sbc}>\r\n\
                 Call-ID: scan{n}\r\nCSeq: 1 OPTIONS\r\n{ua}Content-Length: 0\r\n\r\n",
                pbx = realms::PBX
            );
            s.send_to(m.as_bytes(), sbc).expect("send");
            let mut buf = [0u8; 2048];
            answered += usize::from(s.recv(&mut buf).is_ok());
        }
        answered
    });
    let xdp = t.metric("media_relay_xdp_packets_total{verdict=\"dropped_banned\"}") - xdp_before;
    let guard = t.metric("sbc_guard_dropped_total{reason=\"banned\"}") - guard_before;
    eprintln!("scanner: {answered} answers, {xdp} packets dropped in XDP, {guard} dropped by the sbc's guard");
    assert_eq!(answered, 0, "the scanner got answers");
    assert_eq!(t.metric("sbc_guard_bans_total{reason=\"scanner\"}"), 1.0, "one scanner ban");
    assert!(xdp >= 20.0, "the banned address's 20 later OPTIONS die in XDP: {xdp}");
    // The scanner's own request is the one the guard dropped (and counts as
    // banned); none of the later ones reached the sbc.
    assert!(guard <= 1.0, "the later OPTIONS reached the sbc: {guard} dropped there");
    let got = t
        .lab
        .run_in(Host::Inside, move || testkit::sip::sip_options_from(ip(realms::PHONE), sbc, Duration::from_secs(2)));
    assert!(got.as_deref().is_some_and(|s| s.starts_with("SIP/2.0 200")), "the phone beside it: {got:?}");
}

#[test]
fn calls_across_the_realms_on_the_af_xdp_datapath() {
    calls_on_af_xdp("rxdp", Outside::V4);
}

#[test]
fn calls_between_ipv4_and_ipv6_realms_on_the_af_xdp_datapath() {
    calls_on_af_xdp("rxdp6", Outside::V6);
}
