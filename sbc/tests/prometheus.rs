//! The shipped Prometheus and Grafana setup (`deploy/prometheus/`,
//! `deploy/grafana/xsbc.json`) against the real programs:
//! - `promtool` accepts the scrape config and the alert rules, and the
//!   rules' unit tests (synthetic series for each alert) pass;
//! - `promtool check metrics` accepts the `/metrics` output of the sbc and
//!   of a stand-alone media-relay, and every metric the rules and the
//!   dashboard use is one those programs expose;
//! - a real Prometheus scrapes the sbc and a media-relay during sipp calls
//!   with RTP, loads the shipped rules without errors, and its HTTP API shows
//!   the quality and health series with sane values; every dashboard query
//!   evaluates.
//!
//! Needs `promtool` and `prometheus` (Debian `prometheus`), and sipp for the
//! calls; skipped without them unless `CI=true`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test harness")]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Ports, Sbc};
use testkit::metrics::http_get;
use testkit::sipp::Template;
use testkit::{ports, ChildGuard, Sipp, TestDir};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

/// `promtool`, or `None` (skipped; a failure under CI).
fn promtool() -> Option<PathBuf> {
    testkit::env::require_binary("promtool")
}

/// Runs `promtool args...` (stdin from `input` if given) and asserts it
/// succeeds; returns its output.
fn promtool_ok(promtool: &Path, args: &[&str], input: Option<&str>) -> String {
    use std::io::Write as _;
    let mut cmd = Command::new(promtool);
    cmd.args(args).current_dir(deploy("prometheus"));
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("promtool runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or_default().as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `media-relay` binary next to `sbc`, or `None` (skipped; a failure
/// under CI) when it was not built.
fn media_relay_bin() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_sbc")).with_file_name("media-relay");
    if p.exists() {
        return Some(p);
    }
    testkit::env::skip(&format!("{} is not built (cargo build -p media-relay)", p.display()));
    None
}

/// An sbc with one trunk, `uas` at `p.a`, a CDR spool with a collector
/// that is never reachable (so the `sbc_cdr_*` series are all there), and
/// its embedded relay on `relay_min..+299`.
fn start_sbc(dir: &TestDir, p: &Ports, relay_min: u16) -> Sbc {
    let cfg = format!(
        "[sip]\nlisten = \"127.0.0.1:{}\"\ndomains = [\"127.0.0.1\"]\n\
         [[trunk]]\nname = \"uas\"\naddress = \"127.0.0.1:{}\"\nprobe = false\n\
         [[route]]\nprefix = \"\"\ntrunks = [\"uas\"]\n\
         [health]\ninterval_ms = 0\n\
         [cdr]\nfile = \"{}\"\nspool_dir = \"{}\"\npostgres = \"host=127.0.0.1 port=1 user=x dbname=x connect_timeout=1\"\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n[control]\nsocket = \"off\"\n\
         [relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"off\"\nport_min = {relay_min}\nport_max = {}\nworkers = 2\n\
         timeout = 60\nmetrics = \"off\"\n",
        p.sip,
        p.a,
        dir.join("cdr.jsonl").display(),
        dir.join("spool").display(),
        p.metrics,
        relay_min + 299
    );
    Sbc::start(dir, p, &cfg, None)
}

/// A stand-alone media-relay with its metrics on a free port; returns it
/// and its metrics address once `/metrics` answers.
fn start_media_relay(dir: &TestDir, bin: &Path) -> (ChildGuard, SocketAddr) {
    let metrics = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_port()));
    let ng = ports::free_udp_port();
    let media = ports::free_udp_port_range(200);
    let cfg = dir.write(
        "media-relay.toml",
        format!(
            "[relay]\ninterfaces = [\"127.0.0.1\"]\nlisten_ng = \"127.0.0.1:{ng}\"\nport_min = {media}\nport_max = {}\n\
             workers = 1\ntimeout = 60\nmetrics = \"{metrics}\"\n",
            media + 199
        ),
    );
    let guard = ChildGuard::spawn("media-relay", Command::new(bin).arg("--config").arg(cfg), dir.path());
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(100), || http_get(metrics, "/metrics")
            .is_ok()),
        "media-relay did not serve /metrics on {metrics}"
    );
    (guard, metrics)
}

/// The metric families of an exposition: name and type from its `# TYPE`
/// lines.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, t)| (n.to_owned(), t.trim().to_owned())))
        .collect()
}

/// Whether `name`, as used in a query, is a series of these families: the
/// family itself, or `_bucket`/`_sum`/`_count` of a histogram (`_sum` and
/// `_count` of a summary).
fn is_exposed(name: &str, fams: &[(String, String)]) -> bool {
    if fams.iter().any(|(n, _)| n == name) {
        return true;
    }
    [("_bucket", &["histogram"][..]), ("_sum", &["histogram", "summary"]), ("_count", &["histogram", "summary"])]
        .iter()
        .any(|(suffix, kinds)| {
            name.strip_suffix(suffix)
                .is_some_and(|base| fams.iter().any(|(n, t)| n == base && kinds.contains(&t.as_str())))
        })
}

/// The xsbc metric names (`sbc_*`, `media_relay_*`) in a query or file.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if word(bytes[i]) && (i == 0 || !word(bytes[i - 1])) {
            let end = (i..bytes.len()).find(|&j| !word(bytes[j])).unwrap_or(bytes.len());
            let w = &text[i..end];
            if w.starts_with("sbc_") || w.starts_with("media_relay_") {
                out.insert(w.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Every query of the dashboard: panel targets and template variables.
fn dashboard_queries() -> Vec<String> {
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(deploy("grafana/xsbc.json")).unwrap())
        .expect("dashboard is JSON");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push(t["expr"].as_str().expect("target expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

#[test]
fn shipped_config_and_rules_pass_promtool_and_the_rule_tests() {
    let Some(promtool) = promtool() else { return };
    promtool_ok(&promtool, &["check", "config", "prometheus.yml"], None);
    let out = promtool_ok(&promtool, &["check", "rules", "xsbc-rules.yml"], None);
    assert!(out.contains("SUCCESS: 14 rules found"), "{out}");
    let out = promtool_ok(&promtool, &["test", "rules", "xsbc-rules.test.yml"], None);
    assert!(out.contains("SUCCESS"), "{out}");
    // Each alert has a test case that expects it to fire.
    let rules = std::fs::read_to_string(deploy("prometheus/xsbc-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/xsbc-rules.test.yml")).unwrap();
    for alert in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(
            tests.contains(&format!("alertname: {alert}\n    exp_alerts:\n    - exp_labels")),
            "no firing test for {alert}"
        );
    }
}

#[test]
fn metrics_pass_promtool_and_cover_every_name_the_rules_and_dashboard_use() {
    let (Some(promtool), Some(relay_bin)) = (promtool(), media_relay_bin()) else { return };
    let dir = TestDir::new("prom-names");
    let p = Ports::new(ports::free_udp_port_range(300));
    let sbc = start_sbc(&dir, &p, p.relay);
    let (_relay, relay_metrics) = start_media_relay(&dir, &relay_bin);
    let sbc_text = http_get(sbc.metrics, "/metrics").unwrap();
    let relay_text = http_get(relay_metrics, "/metrics").unwrap();
    promtool_ok(&promtool, &["check", "metrics"], Some(&sbc_text));
    promtool_ok(&promtool, &["check", "metrics"], Some(&relay_text));

    let mut fams = families(&sbc_text);
    fams.extend(families(&relay_text));
    // Series only printed with `[ha]` (a virtual IP, root) or the AF_XDP
    // datapath: taken from the code that prints them.
    let conditional = [
        ("sbc_ha_", root().join("sbc/src/ha/status.rs")),
        ("media_relay_xdp_", root().join("media-relay/src/metrics.rs")),
    ];
    let mut used: Vec<(String, &str)> = Vec::new();
    let rules = std::fs::read_to_string(deploy("prometheus/xsbc-rules.yml")).unwrap();
    used.extend(metric_names(&rules).into_iter().map(|n| (n, "rules")));
    for q in dashboard_queries() {
        used.extend(metric_names(&q).into_iter().map(|n| (n, "dashboard")));
    }
    assert!(used.len() > 30, "names found in rules and dashboard: {used:?}");
    for (name, whence) in &used {
        if is_exposed(name, &fams) {
            continue;
        }
        let (_, src) = conditional
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .unwrap_or_else(|| panic!("{name} ({whence}) is not in the sbc's or the media-relay's /metrics"));
        let code = std::fs::read_to_string(src).unwrap();
        assert!(
            code.contains(&format!("\"{name}\"")) || code.contains(&format!("# TYPE {name} ")),
            "{name} ({whence}) is printed neither by the programs nor by {}",
            src.display()
        );
    }
    // The names the checks rely on are really there.
    for name in ["sbc_trunk_up", "sbc_trunk_mos_bucket", "sbc_cdr_collector_up", "media_relay_drops_total"] {
        assert!(is_exposed(name, &fams), "{name}");
    }
    assert!(!is_exposed("sbc_trunk_up_count", &fams), "a gauge has no _count");
}

/// Percent-encodes a query for a URL.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus and its API.
struct Prom {
    _guard: ChildGuard,
    addr: SocketAddr,
}

impl Prom {
    /// `GET /api/v1/query`: the JSON answer (status checked by the caller).
    fn api(&self, path: &str) -> serde_json::Value {
        let body = http_get(self.addr, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&body).unwrap()
    }

    /// The result vector of an instant query (asserting success).
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let v = self.api(&format!("/api/v1/query?query={}", urlencode(q)));
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The values of an instant query's series.
    fn values(&self, q: &str) -> Vec<f64> {
        self.query(q).iter().map(|r| r["value"][1].as_str().unwrap().parse().unwrap()).collect()
    }

    /// The single value of `q`, waiting up to 20 s for `ok` to hold.
    fn wait_value(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let mut last = Vec::new();
        let good = testkit::wait_until(Duration::from_secs(20), Duration::from_millis(500), || {
            last = self.values(q);
            last.len() == 1 && ok(last[0])
        });
        assert!(good, "{q}: {last:?}");
        last[0]
    }
}

#[test]
fn prometheus_scrapes_quality_and_health_during_calls_with_rtp() {
    let (Some(_), Some(prometheus), Some(relay_bin)) =
        (promtool(), testkit::env::require_binary("prometheus"), media_relay_bin())
    else {
        return;
    };
    let Some(sipp) = Sipp::find() else { return };
    let dir = TestDir::new("prom-scrape");
    let p = Ports::new(ports::free_udp_port_range(300));
    let sbc = start_sbc(&dir, &p, p.relay);
    let (_relay, relay_metrics) = start_media_relay(&dir, &relay_bin);

    // Prometheus on the shipped rules, scraping both every second.
    let web = SocketAddr::from(([127, 0, 0, 1], ports::free_tcp_port()));
    let cfg = dir.write(
        "prometheus.yml",
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n\
             \x20 - job_name: xsbc\n    static_configs:\n      - targets: ['{}']\n\
             \x20 - job_name: media-relay\n    static_configs:\n      - targets: ['{relay_metrics}']\n",
            deploy("prometheus/xsbc-rules.yml").display(),
            sbc.metrics
        ),
    );
    let guard = ChildGuard::spawn(
        "prometheus",
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={web}")),
        dir.path(),
    );
    assert!(
        testkit::wait_until(Duration::from_secs(20), Duration::from_millis(200), || http_get(web, "/-/ready").is_ok()),
        "prometheus did not become ready"
    );
    let prom = Prom { _guard: guard, addr: web };
    prom.wait_value("count(up == 1)", |v| v == 2.0);

    // Four calls of 6 s with RTP both ways (the callee echoes): more than
    // one 5 s MOS interval each.
    let audio = dir.write("pcma.raw", vec![0xd5u8; 350 * 160]);
    let uac =
        Template::scenario("uac_rtp.xml").set("AUDIO", audio.display()).set("PAUSE_MS", 6000).write(&dir, "uac.xml");
    let _uas = sipp
        .uas(dir.path(), p.a)
        .scenario("uas_echo.xml")
        .media("127.0.0.1", Some(p.relay + 350))
        .arg("-rtp_echo")
        .timeout_s(90)
        .trace_err()
        .spawn("uas");
    std::thread::sleep(Duration::from_millis(300));
    let calls =
        sipp.uac(dir.path(), sbc.sip, "1000", p.uac).sf(&uac).media("127.0.0.1", None).calls(4).rate(2).limit(4);
    assert!(calls.timeout_s(60).timeout_error().trace_err().run_ok("sipp-uac", Duration::from_secs(90)));
    sbc.wait_gauge_zero("sbc_dialogs_active");

    // Call health of the trunk, as Prometheus stored it.
    let t = "{job=\"xsbc\",trunk=\"uas\"}";
    prom.wait_value(&format!("sbc_trunk_answers_total{t}"), |v| v == 4.0);
    prom.wait_value(&format!("sbc_trunk_call_attempts_total{t}"), |v| v == 4.0);
    let asr = prom.wait_value(&format!("sbc_trunk_asr{t}"), |v| v > 0.0);
    assert!(asr > 0.0 && asr <= 1.0, "ASR {asr}");
    assert_eq!(prom.values(&format!("sbc_trunk_up{t}")), [1.0]);
    prom.wait_value(&format!("sbc_trunk_post_dial_delay_seconds_count{t}"), |v| v == 4.0);
    // Scraped while the calls were up.
    let peak = prom.values(&format!("max_over_time(sbc_trunk_calls_active{t}[5m])"));
    assert!(peak.first().is_some_and(|&v| v >= 1.0), "calls active seen during the run: {peak:?}");
    // Quality: both directions of every call scored, on loopback near the
    // G.711 maximum.
    let scored = prom.wait_value(&format!("sbc_trunk_mos_count{t}"), |v| v >= 4.0);
    assert!(scored <= 8.0, "at most two directions per call: {scored}");
    let mean = prom.values(&format!("sbc_trunk_mos_sum{t} / sbc_trunk_mos_count{t}"));
    assert!(mean.len() == 1 && (1.0..=4.5).contains(&mean[0]), "mean MOS {mean:?}");
    let median = prom.values("histogram_quantile(0.5, sum by (le) (sbc_trunk_mos_bucket{job=\"xsbc\",trunk=\"uas\"}))");
    assert!(median.len() == 1 && (4.1..=4.5).contains(&median[0]), "median MOS {median:?}");
    assert_eq!(prom.values(&format!("sbc_one_way_audio_total{t}")), [0.0]);
    // The embedded relay carried the RTP; the stand-alone relay is scraped.
    let relayed = prom.values("sum(max_over_time(media_relay_packets_relayed_total{job=\"xsbc\"}[5m]))");
    assert!(relayed.first().is_some_and(|&v| v > 1000.0), "relayed packets {relayed:?}");
    assert_eq!(prom.values("count(media_relay_sessions_active{job=\"media-relay\"})"), [1.0]);
    // The CDR spool: the collector is unreachable, so the CDRs wait.
    prom.wait_value("sbc_cdr_collector_up", |v| v == 0.0);
    prom.wait_value("sbc_cdr_spool_records", |v| v == 4.0);

    // The shipped rules loaded and evaluate without errors on real data.
    let rules = prom.api("/api/v1/rules");
    let groups = rules["data"]["groups"].as_array().unwrap();
    let all: Vec<&serde_json::Value> = groups.iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(all.len(), 14, "{rules}");
    assert!(
        testkit::wait_until(Duration::from_secs(10), Duration::from_millis(500), || {
            let r = prom.api("/api/v1/rules");
            r["data"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|g| g["rules"].as_array().unwrap().clone())
                .all(|r| r["health"] == "ok")
        }),
        "a rule does not evaluate: {}",
        prom.api("/api/v1/rules")
    );
    // Nothing fires on a healthy run (the collector alert waits 5 minutes).
    assert!(prom.query("ALERTS{alertstate=\"firing\"}").is_empty(), "{:?}", prom.query("ALERTS"));

    // Every dashboard query evaluates, and the trunk and call panels show data.
    for q in dashboard_queries() {
        let q = q.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$trunk", ".*");
        if let Some(inner) = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')) {
            let (sel, _) = inner.rsplit_once(',').unwrap();
            assert!(!prom.query(sel).is_empty(), "template variable {q} has no values");
            continue;
        }
        prom.query(&q);
    }
    for q in ["sbc_trunk_up", "sbc_trunk_calls_active", "sbc_guard_bans_active", "sbc_cdr_oldest_unsent_age_seconds"] {
        assert!(!prom.query(q).is_empty(), "{q}");
    }
}
