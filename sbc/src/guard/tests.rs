use std::net::IpAddr;
use std::sync::Mutex;

use super::*;

const UNIX0: u64 = 1_800_000_000;

fn config(guard: &str) -> Config {
    // The shipped config, its trunk moved to a documentation address.
    let text = crate::config::DEFAULT_TOML.replace("127.0.0.1:5070", "192.0.2.200:5060");
    Config::from_toml(&format!("{text}\n[guard]\n{guard}")).unwrap()
}

fn guard(text: &str, now: Instant) -> (Guard, Arc<SbcMetrics>) {
    let m = Arc::new(SbcMetrics::default());
    (Guard::new(&config(text), Arc::clone(&m), now, UNIX0), m)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const INVITE: &[u8] = b"INVITE sip:1@x SIP/2.0\r\nUser-Agent: Linphone\r\n\r\n";
const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
const SCANNER: &[u8] = b"OPTIONS sip:100@x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nUser-Agent: friendly-scanner\r\n\r\n";

#[derive(Default)]
struct Recorder {
    enforced: Mutex<Vec<String>>,
    lifted: Mutex<Vec<String>>,
    flood: Mutex<Vec<IpAddr>>,
}

impl BanEnforcer for Recorder {
    fn enforce(&self, p: &BanPrefix) -> bool {
        self.enforced.lock().unwrap().push(p.to_string());
        true
    }
    fn lift(&self, p: &BanPrefix) {
        self.lifted.lock().unwrap().push(p.to_string());
    }
    fn flood_sources(&self) -> Vec<IpAddr> {
        std::mem::take(&mut *self.flood.lock().unwrap())
    }
}

#[test]
fn invite_rate_drops_then_bans() {
    let t0 = Instant::now();
    let (mut g, m) = guard("invite_per_s = 2\ninvite_burst = 3\nban_after_rate_drops = 5\nban_time_s = 60", t0);
    let src = ip("203.0.113.5");
    let passed = (0..6).filter(|_| g.check(src, INVITE, t0)).count();
    assert_eq!(passed, 3, "the burst");
    assert_eq!(m.guard.dropped_count(DropReason::InviteRate), 3);
    assert!(g.check(src, OPTIONS, t0), "other requests have their own (larger) limit");
    assert!(g.ban_of(src).is_none());
    for _ in 0..2 {
        g.check(src, INVITE, t0);
    }
    let b = g.ban_of(src).cloned();
    assert_eq!(b.as_ref().map(|b| b.reason), Some(Reason::Rate), "the fifth drop bans");
    assert_eq!(b.map(|b| b.until_unix), Some(UNIX0 + 60));
    assert_eq!(m.guard.bans_count(Reason::Rate), 1);
    assert!(!g.check(src, OPTIONS, t0), "everything from a banned source is dropped");
    assert_eq!(m.guard.dropped_count(DropReason::Banned), 1);
    assert!(g.check(ip("203.0.113.6"), INVITE, t0), "another source is not touched");
    // Responses and keepalives are never limited.
    assert!(g.check(ip("203.0.113.7"), b"SIP/2.0 200 OK\r\n\r\n", t0));
    assert!(g.check(ip("203.0.113.7"), b"\r\n\r\n", t0));
}

#[test]
fn register_rate_is_separate() {
    let t0 = Instant::now();
    let (mut g, m) = guard("register_per_s = 1\nregister_burst = 1\nban_after_rate_drops = 0", t0);
    let reg = b"REGISTER sip:x SIP/2.0\r\n\r\n";
    let src = ip("198.51.100.1");
    assert!(g.check(src, reg, t0));
    assert!(!g.check(src, reg, t0));
    assert!(g.check(src, reg, t0 + Duration::from_millis(1100)), "refilled");
    assert_eq!(m.guard.dropped_count(DropReason::RegisterRate), 1);
    assert!(g.ban_of(src).is_none(), "ban_after_rate_drops = 0 never bans");
}

#[test]
fn scanner_is_banned_on_first_sight() {
    let t0 = Instant::now();
    let (mut g, m) = guard("", t0);
    let src = ip("192.0.2.66");
    assert!(!g.check(src, SCANNER, t0));
    assert_eq!(g.ban_of(src).map(|b| b.reason), Some(Reason::Scanner));
    assert_eq!(m.guard.bans_count(Reason::Scanner), 1);
    assert!(!g.check(src, INVITE, t0));
    assert!(g.shared().is_banned(src), "the transport's copy has it");
    let ua_in_body = b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 30\r\n\r\nUser-Agent: friendly-scanner\r\n";
    assert!(g.check(ip("192.0.2.67"), ua_in_body, t0), "only headers count");
}

#[test]
fn escalation_doubles_up_to_the_maximum() {
    let t0 = Instant::now();
    let (mut g, _) = guard("ban_time_s = 10\nmax_ban_time_s = 35", t0);
    let src = ip("192.0.2.9");
    let mut now = t0;
    let mut times = Vec::new();
    for _ in 0..4 {
        assert!(!g.check(src, SCANNER, now));
        let b = g.ban_of(src).cloned().unwrap();
        times.push((b.until.duration_since(now).as_secs(), b.offences));
        now = b.until;
        g.tick(now);
        assert!(g.ban_of(src).is_none(), "expired at its end");
        assert!(g.check(src, INVITE, now), "traffic passes again");
    }
    assert_eq!(times, vec![(10, 1), (20, 2), (35, 3), (35, 4)]);
}

#[test]
fn never_ban_and_trunks_are_exempt() {
    let t0 = Instant::now();
    let (mut g, m) =
        guard("never_ban = [\"10.9.0.0/16\"]\ninvite_per_s = 1\ninvite_burst = 1\nban_after_rate_drops = 2", t0);
    let trusted = ip("10.9.1.1");
    for _ in 0..100 {
        assert!(g.check(trusted, SCANNER, t0));
        assert!(g.check(trusted, INVITE, t0));
    }
    g.after(trusted, true, 1000, t0);
    assert!(g.ban_of(trusted).is_none());
    let trunk = ip("192.0.2.200");
    assert!((0..100).all(|_| g.check(trunk, INVITE, t0)), "a trunk's source is exempt by default");
    let e = g.ban(net("10.9.0.0/24"), Reason::Manual, None, t0).err().unwrap_or_default();
    assert!(e.contains("never_ban"), "{e}");
    assert!(g.ban(net("10.0.0.0/8"), Reason::Manual, None, t0).is_err(), "a wider prefix covering it too");
    assert!(g.ban(net("10.10.0.0/16"), Reason::Manual, None, t0).is_ok());
    g.tick(t0);
    g.import(&[BanRecord { net: "10.9.1.1/32".into(), reason: "rate".into(), until: UNIX0 + 100, offences: 1 }], t0);
    assert!(g.ban_of(trusted).is_none(), "a replicated ban on a never_ban source is not installed");
    assert_eq!(m.guard.dropped_count(DropReason::Banned), 0);

    let (mut g, _) = guard("exempt_trunks = false\ninvite_per_s = 1\ninvite_burst = 1", t0);
    assert!(g.check(trunk, INVITE, t0));
    assert!(!g.check(trunk, INVITE, t0), "limited when trunks are not exempt");
}

#[test]
fn auth_failures_and_malformed_messages_ban() {
    let t0 = Instant::now();
    let (mut g, m) = guard("auth_failures = 3\nauth_window_s = 60\nmalformed_per_window = 4\nwindow_s = 10", t0);
    let a = ip("198.51.100.10");
    g.after(a, false, 1, t0);
    g.after(a, false, 1, t0 + Duration::from_secs(61));
    g.after(a, false, 1, t0 + Duration::from_secs(62));
    assert!(g.ban_of(a).is_none(), "the first failure fell out of the window");
    g.after(a, false, 1, t0 + Duration::from_secs(63));
    assert_eq!(g.ban_of(a).map(|b| b.reason), Some(Reason::Auth));
    let b = ip("198.51.100.11");
    for _ in 0..3 {
        g.after(b, true, 0, t0);
    }
    assert!(g.ban_of(b).is_none());
    g.after(b, true, 0, t0);
    assert_eq!(g.ban_of(b).map(|b| b.reason), Some(Reason::Malformed));
    assert_eq!((m.guard.bans_count(Reason::Auth), m.guard.bans_count(Reason::Malformed)), (1, 1));
    assert_eq!(m.guard.active.load(Relaxed), 2);
}

#[test]
fn enforcer_sees_bans_lifts_and_floods() {
    let t0 = Instant::now();
    let (mut g, m) = guard("ban_time_s = 5", t0);
    let rec = Arc::new(Recorder::default());
    g.set_enforcer(rec.clone());
    g.check(ip("192.0.2.1"), SCANNER, t0);
    assert_eq!(*rec.enforced.lock().unwrap(), vec!["192.0.2.1/32".to_string()]);
    rec.flood.lock().unwrap().extend([ip("192.0.2.50"), ip("192.0.2.200")]);
    g.tick(t0);
    assert_eq!(g.ban_of(ip("192.0.2.50")).map(|b| b.reason), Some(Reason::MediaFlood));
    assert!(g.ban_of(ip("192.0.2.200")).is_none(), "the trunk is exempt");
    assert_eq!(m.guard.bans_count(Reason::MediaFlood), 1);
    g.tick(t0 + Duration::from_secs(5));
    let mut lifted = rec.lifted.lock().unwrap().clone();
    lifted.sort();
    assert_eq!(lifted, vec!["192.0.2.1/32".to_string(), "192.0.2.50/32".to_string()]);
    assert_eq!(m.guard.active.load(Relaxed), 0);
    assert!(!g.shared().is_banned(ip("192.0.2.1")));
}

#[test]
fn ban_list_is_bounded() {
    let t0 = Instant::now();
    let (mut g, _) = guard("max_bans = 16", t0);
    for i in 0..40u8 {
        let now = t0 + Duration::from_secs(u64::from(i));
        g.check(IpAddr::from([192, 0, 2, i]), SCANNER, now);
        assert!(g.bans().len() <= 16);
    }
    assert!(g.ban_of(IpAddr::from([192, 0, 2, 39])).is_some(), "the newest stays");
    assert!(g.ban_of(IpAddr::from([192, 0, 2, 0])).is_none(), "the one ending soonest went");
}

#[test]
fn disabled_guard_still_enforces_manual_bans() {
    let t0 = Instant::now();
    let (mut g, _) = guard("enabled = false\ninvite_per_s = 1\ninvite_burst = 1", t0);
    let src = ip("192.0.2.5");
    assert!((0..10).all(|_| g.check(src, INVITE, t0)));
    assert!(g.check(src, SCANNER, t0));
    assert!(g.control("ban 192.0.2.5", t0).is_some_and(|r| r.starts_with("ok")));
    assert!(!g.check(src, INVITE, t0));
}

#[test]
fn control_commands() {
    let t0 = Instant::now();
    let (mut g, _) = guard("never_ban = [\"127.0.0.0/8\"]\nban_time_s = 300", t0);
    assert_eq!(g.control("trunks", t0), None, "not a guard command");
    let r = g.control("ban 203.0.113.0/24 --for 2h", t0).unwrap();
    assert_eq!(r, "ok: 203.0.113.0/24 banned for 7200s\n");
    let r = g.control("ban 198.51.100.7", t0).unwrap();
    assert_eq!(r, "ok: 198.51.100.7/32 banned for 300s\n", "default ban_time_s");
    let list = g.control("bans", t0 + Duration::from_secs(100)).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[1].starts_with("198.51.100.7/32") && lines[1].contains("manual") && lines[1].contains(" 200 "));
    assert!(lines[2].starts_with("203.0.113.0/24") && lines[2].contains("7100"));
    assert!(!g.check(ip("203.0.113.77"), OPTIONS, t0));
    assert!(g.control("ban 127.0.0.1", t0).unwrap().contains("never_ban"));
    assert!(g.control("ban 203.0.113.1/24", t0).unwrap().starts_with("error"), "host bits");
    assert!(g.control("ban nope", t0).unwrap().starts_with("error"));
    assert!(g.control("ban 192.0.2.1 --for 3x", t0).unwrap().starts_with("error"));
    assert!(g.control("ban", t0).unwrap().starts_with("error"));
    assert_eq!(g.control("unban 203.0.113.0/24", t0).unwrap(), "ok: 203.0.113.0/24 unbanned\n");
    assert!(g.check(ip("203.0.113.77"), OPTIONS, t0));
    assert!(g.control("unban 203.0.113.0/24", t0).unwrap().contains("not banned"));
}

#[test]
fn changes_are_tracked_and_imported() {
    let t0 = Instant::now();
    let (mut g, _) = guard("ban_time_s = 30", t0);
    g.check(ip("192.0.2.1"), SCANNER, t0);
    assert!(g.take_changes().is_empty(), "not tracked without [ha]");
    g.track_changes();
    g.check(ip("192.0.2.2"), SCANNER, t0);
    g.control("unban 192.0.2.1", t0);
    let c = g.take_changes();
    assert_eq!(
        c,
        vec![
            BanChange::Put(BanRecord {
                net: "192.0.2.2/32".into(),
                reason: "scanner".into(),
                until: UNIX0 + 30,
                offences: 1
            }),
            BanChange::Del("192.0.2.1/32".into()),
        ]
    );
    g.tick(t0 + Duration::from_secs(30));
    assert_eq!(g.take_changes(), vec![BanChange::Del("192.0.2.2/32".into())], "expiry is replicated");
    // Another node's records, 10 s later on the wall clock.
    let t1 = t0 + Duration::from_secs(40);
    let (mut h, m) = guard("", t0);
    h.track_changes();
    let recs = vec![
        BanRecord { net: "192.0.2.3/32".into(), reason: "auth".into(), until: UNIX0 + 100, offences: 2 },
        BanRecord { net: "192.0.2.4/32".into(), reason: "rate".into(), until: UNIX0 + 20, offences: 1 },
        BanRecord { net: "garbage".into(), reason: "rate".into(), until: UNIX0 + 100, offences: 1 },
    ];
    assert_eq!(h.import(&recs, t1), 1, "ended and unreadable records are skipped");
    let b = h.ban_of(ip("192.0.2.3")).cloned().unwrap();
    assert_eq!((b.reason, b.offences, b.until.duration_since(t1).as_secs()), (Reason::Auth, 2, 60));
    assert_eq!(m.guard.active.load(Relaxed), 1);
    assert!(!h.check(ip("192.0.2.3"), OPTIONS, t1));
    // A later list without it (lifted on the other node) lifts it here.
    let rec = Arc::new(Recorder::default());
    h.set_enforcer(rec.clone());
    let t2 = t1 + Duration::from_secs(1);
    h.load_asked(t2);
    assert!(!h.check(ip("192.0.2.5"), SCANNER, t2 + Duration::from_millis(5)), "banned while the list loads");
    assert_eq!(h.import(&recs[1..], t2 + Duration::from_millis(10)), 0);
    assert!(h.ban_of(ip("192.0.2.5")).is_some(), "a ban placed after the list was asked for stays");
    assert!(h.ban_of(ip("192.0.2.3")).is_none() && h.check(ip("192.0.2.3"), OPTIONS, t1));
    assert_eq!(*rec.lifted.lock().unwrap(), vec!["192.0.2.3/32".to_string()]);
    assert_eq!(m.guard.active.load(Relaxed), 1);
    let changes = h.take_changes();
    assert!(
        changes.len() == 1 && matches!(&changes[0], BanChange::Put(r) if r.net == "192.0.2.5/32"),
        "only the new ban is written, nothing for the imported or lifted ones: {changes:?}"
    );
}

#[test]
fn ban_lines_are_rate_limited_but_every_ban_counts() {
    let t0 = Instant::now();
    let (mut g, m) = guard("", t0);
    for i in 0..200u8 {
        g.check(IpAddr::from([198, 51, 100, i]), SCANNER, t0);
    }
    assert_eq!(m.guard.bans_count(Reason::Scanner), 200);
    assert_eq!(g.log.logged, BAN_LOGS_PER_S);
    assert_eq!(g.log.suppressed, 200 - u64::from(BAN_LOGS_PER_S));
    g.tick(t0 + Duration::from_secs(1));
    assert_eq!(g.log.suppressed, 0, "summed up once the second is over");
    assert!(g.control("ban 203.0.113.1", t0 + Duration::from_secs(1)).is_some());
}

#[test]
fn the_sbcs_own_infrastructure_is_never_banned() {
    // Name servers, remote relays and the PostgreSQL collector: a spoofed
    // flood "from" them must not cut us off.
    let text = crate::config::DEFAULT_TOML.replace("127.0.0.1:5070", "192.0.2.200:5060");
    let cfg = Config::from_toml(&format!(
        "{text}\n[dns]\nservers = [\"192.0.2.53:53\"]\n\
         [[media_relay]]\nng = \"192.0.2.77:22222\"\n"
    ))
    .unwrap();
    let mut cfg = cfg;
    cfg.cdr_spool = Config::from_toml(&format!(
        "{}\n[cdr]\nspool_dir = \"/tmp/never-opened\"\npostgres = \"host=192.0.2.54 user=cdr dbname=cdr\"\n",
        text.replace("[cdr]\nfile = \"sbc-cdr.jsonl\"\n", "")
    ))
    .unwrap()
    .cdr_spool;
    let g = Guard::new(&cfg, Arc::new(SbcMetrics::default()), Instant::now(), UNIX0);
    for own in ["192.0.2.53", "192.0.2.77", "192.0.2.54"] {
        assert!(g.exempt(ip(own)), "{own} is the sbc's own infrastructure");
    }
    assert!(!g.exempt(ip("192.0.2.99")), "anyone else is not");
}
