//! RFC 3263 with a real DNS server: dnsmasq in a network namespace serves
//! NAPTR → SRV (two targets, priority 10 and 20) → A for a trunk named
//! `carrier.test`. Two sipp UASes are the targets. Calls go to the
//! priority-10 target; when it dies, the INVITE in flight times out on it
//! and is retried on the priority-20 target within the same call, probes
//! take the dead target DOWN, and later calls go straight to the other.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::time::{Duration, Instant};

use support::{Ports, Sbc};
use testkit::netns::{ip, Netns};
use testkit::sipp::{SippStats, Template};
use testkit::{ChildGuard, Sipp, TestDir};

/// The DNS lab: a namespace reached over a veth pair (`10.33.K.1` here,
/// `10.33.K.2` there, one K per lab), with dnsmasq in it.
struct DnsLab {
    _dnsmasq: ChildGuard,
    _ns: Netns,
    /// Where dnsmasq listens.
    dns: String,
}

impl DnsLab {
    /// dnsmasq serving `records` (its `--naptr-record`, `--srv-host`,
    /// `--host-record` options) on `10.33.K.2:53`.
    fn start(dir: &TestDir, records: &[String]) -> DnsLab {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dns = format!("10.33.{k}.2");
        let ns = Netns::with_lo("dn").expect("netns");
        let host_dev = format!("dn{}x{k}", std::process::id() % 1_000_000);
        ip(&["link", "add", &host_dev, "type", "veth", "peer", "name", "dn0", "netns", ns.name()]).expect("veth");
        ip(&["addr", "add", &format!("10.33.{k}.1/30"), "dev", &host_dev]).expect("host address");
        ip(&["link", "set", &host_dev, "up"]).expect("host link up");
        ns.addr("dn0", &format!("{dns}/30")).expect("ns address");
        ns.up("dn0").expect("ns link up");
        let mut cmd = ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            &format!("--listen-address={dns}"),
            "--pid-file",
            "--log-queries",
            "--log-facility=-",
            "--local-ttl=2",
        ]);
        cmd.args(records);
        let dnsmasq = ChildGuard::spawn("dnsmasq", &mut cmd, dir.path());
        std::thread::sleep(Duration::from_millis(300));
        DnsLab { _dnsmasq: dnsmasq, _ns: ns, dns }
    }
}

/// The end of every test's sbc config: control socket, CDR file and
/// metrics in `dir`, and a relay of `ports` ports on loopback.
fn sbc_tail(dir: &TestDir, p: &Ports, ports: u16) -> String {
    format!(
        "[control]\nsocket = \"{ctl}\"\n[cdr]\nfile = \"{cdr}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {r}\nport_max = {r2}\nworkers = 1\n\
         timeout = 60\nmetrics = \"off\"\n",
        ctl = dir.join("ctl.sock").display(),
        cdr = dir.join("cdr.jsonl").display(),
        m = p.metrics,
        r = p.relay,
        r2 = p.relay + ports - 1,
    )
}

/// INVITEs a sipp UAS received, from its message log.
fn invites(dir: &TestDir, name: &str) -> usize {
    std::fs::read_to_string(dir.join(&format!("{name}-msg.log"))).unwrap_or_default().matches("\nINVITE sip:").count()
}

fn wait(what: &str, secs: u64, f: impl FnMut() -> bool) {
    assert!(testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(100), f), "timed out waiting: {what}");
}

#[test]
fn naptr_srv_targets_fail_over_within_a_call_and_by_health() {
    if !testkit::env::require_root_and("dns", &["dnsmasq", "sipp"]) {
        return;
    }
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("dns-failover");
    let p = Ports::new(testkit::ports::free_udp_port_range(300));
    // NAPTR points at an SRV name that only the NAPTR step can find, so
    // calls reaching the targets prove the whole NAPTR → SRV → A chain.
    let records = [
        "--naptr-record=carrier.test,10,10,S,SIP+D2U,,_sip._udp.srv.carrier.test".to_owned(),
        format!("--srv-host=_sip._udp.srv.carrier.test,a.carrier.test,{},10,1", p.a),
        format!("--srv-host=_sip._udp.srv.carrier.test,b.carrier.test,{},20,1", p.b),
        "--host-record=a.carrier.test,127.0.0.1".to_owned(),
        "--host-record=b.carrier.test,127.0.0.1".to_owned(),
    ];
    let lab = DnsLab::start(&dir, &records);

    let uas = |name: &str, port: u16| {
        let sf = Template::scenario("trunk_uas.xml")
            .set("OPTIONS_CODE", 200)
            .set("INVITE_CODE", 200)
            .set("AFTER_ACK", "call")
            .write(&dir, &format!("{name}.xml"));
        sipp.uas(dir.path(), port)
            .sf(sf)
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(dir.join(&format!("{name}-msg.log")))
            .spawn(name)
    };
    let mut a = uas("target-a", p.a);
    let _b = uas("target-b", p.b);

    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\ninvite_timeout_ms = 1000\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"carrier.test\"\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
         [dns]\nservers = [\"{dns}:53\"]\nmin_ttl_s = 1\nmax_ttl_s = 60\nnegative_ttl_s = 1\n\
         [health]\ninterval_ms = 500\nprobe_timeout_ms = 300\ndown_after = 3\nup_after = 3\nhold_down_s = 30\n\
         {tail}",
        sip = p.sip,
        tail = sbc_tail(&dir, &p, 300),
        dns = lab.dns,
    );
    let s = Sbc::start(&dir, &p, &cfg, Some("info,sbc::proxy=debug,sbc::dns=debug"));
    let target_a = format!("-> 127.0.0.1:{}", p.a);
    let target_b = format!("-> 127.0.0.1:{}", p.b);
    wait("both SRV targets resolved", 10, || {
        let t = s.ctl("trunks");
        t.contains(&target_a) && t.contains(&target_b)
    });
    let table = s.ctl("trunks");
    eprintln!("{table}");
    assert!(table.contains("carrier.test"), "the trunk shows its name: {table}");
    let row = |t: &str, target: &str| t.lines().find(|l| l.contains(target)).unwrap_or_default().to_owned();
    assert!(row(&table, &target_a).contains("prio=10") && row(&table, &target_a).contains("UP"), "{table}");
    assert!(row(&table, &target_b).contains("prio=20"), "{table}");

    let run = std::sync::atomic::AtomicU32::new(0);
    let calls = |n: u32| {
        let k = run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stf = dir.join(&format!("uac-{k}.csv"));
        let uac = sipp.uac(dir.path(), s.sip, "1000", p.uac).sn("uac");
        let _ = uac.calls(n).hold_ms(100).rate(10).timeout_s(30).stats(&stf).finish("uac", Duration::from_secs(40));
        SippStats::read(&stf).map_or(0, |st| st.successful())
    };
    let timeouts = || s.metric("sbc_trunk_attempts_total", &[("trunk", "carrier"), ("outcome", "timeout")]);

    // The priority 10 target takes the calls; the Request-URI keeps the name.
    assert_eq!(calls(3), 3);
    assert_eq!((invites(&dir, "target-a"), invites(&dir, "target-b")), (3, 0), "calls go to the primary target");
    let log = std::fs::read_to_string(dir.join("target-a-msg.log")).unwrap();
    assert!(log.contains("INVITE sip:1000@carrier.test"), "the Request-URI keeps the trunk's name");

    // Kill the primary. The next call's INVITE times out on it and is
    // retried on the secondary within the same call.
    let _ = a.stop(Duration::ZERO);
    let t0 = Instant::now();
    assert_eq!(calls(1), 1, "the call completes on the secondary target");
    eprintln!("the call after the primary died took {:?}", t0.elapsed());
    assert_eq!(invites(&dir, "target-b"), 1);
    assert!(timeouts() >= 1.0, "the INVITE timed out on the primary first");

    // Probes take the dead target DOWN; later calls go straight to the
    // secondary, with no timeout on the way.
    wait("target a DOWN", 5, || row(&s.ctl("trunks"), &target_a).contains("DOWN"));
    assert!(s.log().contains(&format!("trunk carrier target 127.0.0.1:{} DOWN", p.a)), "logged with the target");
    assert!(row(&s.ctl("trunks"), &target_b).contains("UP"));
    let before = timeouts();
    let t1 = Instant::now();
    assert_eq!(calls(2), 2);
    let took = t1.elapsed();
    assert_eq!(invites(&dir, "target-b"), 3);
    assert_eq!(timeouts(), before, "no INVITE was sent to the DOWN target");
    assert!(took < Duration::from_secs(5), "no waiting on the dead target: {took:?}");
    assert!(s.metric("sbc_trunk_up", &[("trunk", "carrier")]) == 1.0, "the trunk itself stays UP");
    support::lab::remove_unless_failing(dir.path());
}

#[test]
fn an_unresolvable_trunk_name_gets_503_without_blocking() {
    if !testkit::env::require_root_and("dns", &["dnsmasq", "sipp"]) {
        return;
    }
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("dns-nxdomain");
    let p = Ports::new(testkit::ports::free_udp_port_range(100));
    let lab = DnsLab::start(&dir, &["--host-record=other.test,127.0.0.1".to_owned()]);
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\ninvite_timeout_ms = 1000\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"missing.test\"\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
         [dns]\nservers = [\"{dns}:53\"]\nnegative_ttl_s = 2\n\
         {tail}",
        sip = p.sip,
        tail = sbc_tail(&dir, &p, 100),
        dns = lab.dns,
    );
    let s = Sbc::start(&dir, &p, &cfg, Some("info"));
    wait("the name is known not to exist", 10, || s.ctl("trunks").contains("NotFound"));
    let stf = dir.join("uac.csv");
    let t0 = Instant::now();
    let uac = sipp.uac(dir.path(), s.sip, "1000", p.uac).sn("uac").calls(1).timeout_s(10).stats(&stf);
    let _ = uac.finish("uac", Duration::from_secs(20));
    let st = SippStats::read(&stf).unwrap();
    assert_eq!((st.successful(), st.failed()), (0, 1));
    assert!(t0.elapsed() < Duration::from_secs(3), "answered at once, not after a DNS or INVITE timeout");
    let cdr = s.cdrs();
    assert!(cdr.is_empty() || cdr.iter().all(|c| c["code"] != 200), "{cdr:?}");
    assert!(s.log().contains("DNS gave no targets"), "the reason is logged");
    support::lab::remove_unless_failing(dir.path());
}

/// The first line and headers of a SIP message received on `sock`.
fn recv_sip(sock: &std::net::UdpSocket, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn a_request_uri_host_named_by_dns_is_resolved_in_the_background() {
    if !testkit::env::require_root_and("dns", &["dnsmasq"]) {
        return;
    }
    let dir = TestDir::new("dns-ruri");
    let p = Ports::new(testkit::ports::free_udp_port_range(100));
    let lab = DnsLab::start(&dir, &["--host-record=peer.carrier.test,127.0.0.1".to_owned()]);
    // The trunk is an IP: the resolver starts on the first name it needs.
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{sip}\"\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"carrier\"\naddress = \"127.0.0.1:{a}\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"carrier\"]\n\
         [dns]\nservers = [\"{dns}:53\"]\n\
         {tail}",
        sip = p.sip,
        a = p.a,
        tail = sbc_tail(&dir, &p, 100),
        dns = lab.dns,
    );
    let s = Sbc::start(&dir, &p, &cfg, Some("info"));
    let peer = std::net::UdpSocket::bind(("127.0.0.1", p.b)).unwrap();
    let me = std::net::UdpSocket::bind(("127.0.0.1", p.uac)).unwrap();
    // A BYE routed through us that matches no dialog (a backup taking
    // over): it follows its Request-URI, whose host is a name.
    let bye = |n: u32| {
        format!(
            "BYE sip:1000@peer.carrier.test:{b} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{u};branch=z9hG4bKdns{n}\r\n\
             Route: <sip:127.0.0.1:{sip};lr>\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n\
             To: <sip:1000@peer.carrier.test>;tag=2\r\nCall-ID: dns-ruri@test\r\nCSeq: {n} BYE\r\nContent-Length: 0\r\n\r\n",
            b = p.b,
            u = p.uac,
            sip = p.sip
        )
    };
    me.send_to(bye(1).as_bytes(), s.sip).unwrap();
    let first = recv_sip(&me, Duration::from_secs(3)).expect("an answer to the first BYE");
    assert!(first.starts_with("SIP/2.0 503"), "not resolved yet: {first}");
    assert!(first.contains("Retry-After: 1"), "{first}");
    // Asked again after the Retry-After, it goes to the resolved address.
    let mut forwarded = None;
    for n in 2..6 {
        std::thread::sleep(Duration::from_millis(500));
        me.send_to(bye(n).as_bytes(), s.sip).unwrap();
        if let Some(m) = recv_sip(&peer, Duration::from_millis(500)) {
            forwarded = Some(m);
            break;
        }
    }
    let m = forwarded.expect("the BYE reached the host its Request-URI names");
    assert!(m.starts_with(&format!("BYE sip:1000@peer.carrier.test:{}", p.b)), "{m}");
    support::lab::remove_unless_failing(dir.path());
}
