//! The CDR spool and its PostgreSQL forwarder with real sipp calls and a
//! real (private) PostgreSQL cluster: a `kill -9` while the collector is
//! down, a flapping collector, a torn spool tail, a full spool. Every test
//! checks exactly one row per CDR the sbc wrote (its JSON-lines file), no
//! duplicates, in end-time order.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::postgres::Postgres;
use testkit::sipp::SippStats;
use testkit::{ChildGuard, Sipp, TestDir};

struct Lab {
    sipp: Sipp,
    dir: TestDir,
    p: Ports,
    pg: Postgres,
    cfg: String,
    _uas: ChildGuard,
}

/// `extra_cdr`: more `[cdr]` keys. `postgres`: whether to set the collector.
fn lab(label: &str, extra_cdr: &str, postgres: bool) -> Option<(Lab, Sbc)> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let sipp = Sipp::find()?;
    let pg = Postgres::require(label)?;
    let dir = TestDir::new(label);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    let p = Ports::new(30000 + (std::process::id() % 8) as u16 * 3500 + k * 400);
    let collector = if postgres {
        format!(
            "postgres = \"{}\"\nprobe_interval_ms = 100\ndown_after = 2\nup_after = 2\nhold_down_ms = 300\nbatch = 7\n",
            pg.conninfo()
        )
    } else {
        String::new()
    };
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"uas\"\naddress = \"127.0.0.1:{}\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"uas\"]\n\
         [health]\ninterval_ms = 0\n\
         [cdr]\nfile = \"{}\"\nspool_dir = \"{}\"\n{collector}{extra_cdr}\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n[control]\nsocket = \"off\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {}\nport_max = {}\nworkers = 1\ntimeout = 60\nmetrics = \"off\"\n",
        p.sip,
        p.a,
        dir.join("cdr.jsonl").display(),
        dir.join("spool").display(),
        p.metrics,
        p.relay,
        p.relay + 299
    );
    let uas = sipp.uas(dir.path(), p.a).sn("uas").timeout_s(120).trace_err().spawn("uas");
    std::thread::sleep(Duration::from_millis(300));
    let sbc = Sbc::start(&dir, &p, &cfg, Some("info"));
    Some((Lab { sipp, dir, p, pg, cfg, _uas: uas }, sbc))
}

impl Lab {
    fn restart(&self) -> Sbc {
        Sbc::start(&self.dir, &self.p, &self.cfg, Some("info"))
    }

    /// A UAC making `calls` calls at `rate`/s, each held `hold_ms`; a call
    /// whose answer does not come within 3 s fails (the sbc may be down).
    fn uac(&self, calls: u32, rate: u32, hold_ms: u32) -> testkit::sipp::SippCmd {
        let sbc = std::net::SocketAddr::from(([127, 0, 0, 1], self.p.sip));
        self.sipp
            .uac(self.dir.path(), sbc, "1000", self.p.uac)
            .sn("uac")
            .calls(calls)
            .rate(rate)
            .limit(50)
            .hold_ms(hold_ms)
            .arg("-recv_timeout")
            .arg("3000")
            .timeout_s(90)
            .stats(self.dir.join("uac.csv"))
            .arg("-fd")
            .arg("1")
    }

    /// The CDR ids in the JSON-lines file, in file order.
    fn json_ids(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("cdr.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// `(id, end time as epoch float)` of every row, in insertion order.
    fn rows(&self) -> Vec<(String, f64)> {
        match self.pg.query("SELECT id, extract(epoch FROM end_time) FROM cdr ORDER BY received") {
            Ok(lines) => lines
                .iter()
                .map(|l| {
                    let (id, end) = l.split_once('|').unwrap();
                    (id.to_owned(), end.parse().unwrap())
                })
                .collect(),
            Err(_) => Vec::new(), // no table yet
        }
    }

    /// Waits (up to `secs`) until the table holds `n` rows.
    fn wait_rows(&self, n: usize, secs: u64) -> Vec<(String, f64)> {
        testkit::wait_until(Duration::from_secs(secs), Duration::from_millis(200), || self.rows().len() >= n);
        self.rows()
    }

    /// Successful calls of the last UAC run.
    fn uac_successful(&self) -> u64 {
        SippStats::read(&self.dir.join("uac.csv")).map_or(0, |s| s.successful())
    }
}

/// One row per id, every id of `expected` there, rows in end-time order.
fn assert_exactly_once(rows: &[(String, f64)], expected: &[String]) {
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "no duplicate rows");
    let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(want.len(), expected.len(), "the sbc wrote each CDR once");
    let missing: Vec<&&str> = want.difference(&ids).collect();
    assert!(missing.is_empty(), "CDRs missing from PostgreSQL: {missing:?}");
    let extra: Vec<&&str> = ids.difference(&want).collect();
    assert!(extra.is_empty(), "rows with no CDR: {extra:?}");
    for w in rows.windows(2) {
        assert!(w[0].1 <= w[1].1, "rows in end-time order: {w:?}");
    }
}

#[test]
fn kill9_while_the_collector_is_down_loses_and_duplicates_nothing() {
    let Some((mut l, mut sbc)) = lab("cdr-kill9", "", true) else { return };
    // PostgreSQL is not started: every CDR waits in the spool.
    let mut uac = l.uac(50, 10, 200).spawn("uac");
    assert!(
        testkit::wait_until(Duration::from_secs(20), Duration::from_millis(50), || l.json_ids().len() >= 20),
        "20 calls ended"
    );
    sbc.guard.kill9();
    let before = l.json_ids().len();
    std::thread::sleep(Duration::from_millis(500));
    let sbc = l.restart();
    assert!(sbc.log().contains("CDR spool open"), "{}", sbc.log());
    uac.wait_timeout(Duration::from_secs(90));
    let ids = l.json_ids();
    assert!(ids.len() >= 40 && ids.len() > before, "calls went on after the restart: {} CDRs", ids.len());
    assert!(ids.len() as u64 >= l.uac_successful(), "a CDR for every call sipp completed");
    assert!(sbc.metric("sbc_cdr_spool_records", &[]) >= ids.len() as f64 - 1.0, "all in the spool");
    assert_eq!(sbc.metric("sbc_cdr_collector_up", &[]), 0.0);
    assert!(sbc.metric("sbc_cdr_oldest_unsent_age_seconds", &[]) > 0.5);
    assert_eq!(l.rows().len(), 0);
    l.pg.start();
    let rows = l.wait_rows(ids.len(), 30);
    assert_exactly_once(&rows, &ids);
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        sbc.metric("sbc_cdr_spool_records", &[]) == 0.0
    }));
    assert_eq!(sbc.metric("sbc_cdr_collector_up", &[]), 1.0);
    // Forwarded by this process: every CDR (both runs' were in the spool).
    assert_eq!(sbc.metric("sbc_cdr_forwarded_total", &[]), ids.len() as f64);
    assert_eq!(sbc.metric("sbc_cdr_oldest_unsent_age_seconds", &[]), 0.0);
}

#[test]
fn a_flapping_collector_gets_every_cdr_once() {
    let Some((mut l, sbc)) = lab("cdr-flap", "", true) else { return };
    l.pg.start();
    let mut uac = l.uac(60, 20, 100).spawn("uac");
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        l.pg.stop();
        std::thread::sleep(Duration::from_millis(700));
        l.pg.start();
    }
    uac.wait_timeout(Duration::from_secs(60));
    assert_eq!(l.uac_successful(), 60, "the calls do not depend on the collector");
    let ids = l.json_ids();
    assert_eq!(ids.len(), 60);
    let rows = l.wait_rows(60, 30);
    assert_exactly_once(&rows, &ids);
    let log = sbc.log();
    let downs = log.lines().filter(|l| l.contains("CDR collector") && l.contains("DOWN")).count();
    let ups = log.lines().filter(|l| l.contains("CDR collector") && l.contains("UP")).count();
    assert!(downs >= 2 && ups >= 2, "the flaps were seen ({downs} DOWN, {ups} UP):\n{log}");
    assert!(testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        sbc.metric("sbc_cdr_collector_up", &[]) == 1.0
    }));
    // A batch whose commit answer was lost is sent again (and inserts nothing).
    assert!(sbc.metric("sbc_cdr_forwarded_total", &[]) >= 60.0);
}

#[test]
fn a_torn_spool_tail_is_cut_and_earlier_cdrs_are_delivered() {
    let Some((mut l, mut sbc)) = lab("cdr-torn", "", true) else { return };
    assert!(l.uac(10, 10, 50).spawn("uac").wait_timeout(Duration::from_secs(30)).is_some());
    let ids = l.json_ids();
    assert_eq!(ids.len(), 10);
    sbc.guard.stop(Duration::from_secs(5));
    // Cut the last record in half: the sbc stopped while writing it.
    let seg = std::fs::read_dir(l.dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .max()
        .unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 100).unwrap();
    l.pg.start();
    let sbc = l.restart();
    let log = sbc.log();
    assert!(log.contains("damaged tail cut off") && log.contains("torn record"), "{log}");
    let rows = l.wait_rows(9, 30);
    std::thread::sleep(Duration::from_millis(500));
    assert_exactly_once(&l.rows(), &ids[..9]);
    assert_eq!(rows.len(), 9);
    assert_eq!(sbc.metric("sbc_cdr_spool_records", &[]), 0.0);
}

#[test]
fn a_full_spool_sends_cdrs_to_json_lines_and_raises_the_alarm() {
    let Some((l, sbc)) = lab("cdr-full", "max_spool_kb = 4\nsegment_kb = 4\n", false) else { return };
    assert!(l.uac(12, 12, 50).spawn("uac").wait_timeout(Duration::from_secs(30)).is_some());
    assert_eq!(l.uac_successful(), 12);
    let ids = l.json_ids();
    assert_eq!(ids.len(), 12, "every CDR is in the JSON-lines file");
    let spooled = sbc.metric("sbc_cdr_spool_records", &[]);
    assert!((1.0..12.0).contains(&spooled), "{spooled} in a 4 KiB spool");
    assert!(sbc.metric("sbc_cdr_spool_bytes", &[]) <= 4096.0);
    assert_eq!(sbc.metric("sbc_cdr_spool_full", &[]), 1.0);
    assert_eq!(sbc.metric("sbc_cdr_spool_refused_total", &[]), 12.0 - spooled);
    assert!(sbc.log().contains("CDR spool full"), "{}", sbc.log());
}

#[test]
fn a_replay_after_losing_the_sent_position_inserts_nothing_twice() {
    let Some((mut l, mut sbc)) = lab("cdr-replay", "", true) else { return };
    l.pg.start();
    assert!(l.uac(10, 10, 50).spawn("uac").wait_timeout(Duration::from_secs(30)).is_some());
    let ids = l.json_ids();
    assert_eq!(ids.len(), 10);
    assert_exactly_once(&l.wait_rows(10, 20), &ids);
    sbc.guard.stop(Duration::from_secs(5));
    // As after a crash between the commit and saving the sent position.
    std::fs::remove_file(l.dir.join("spool").join("sent")).unwrap();
    let sbc = l.restart();
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            sbc.metric("sbc_cdr_forwarded_total", &[]) == 10.0
        }),
        "the spool was sent again"
    );
    assert_eq!(sbc.metric("sbc_cdr_spool_records", &[]), 0.0);
    assert_exactly_once(&l.rows(), &ids);
}
