//! INTEROP TEST: Kamailio 5.6 (rtpengine module) + sipp driving the relay.
//!
//! ```text
//!   sipp UAC ──SIP──▶ Kamailio ──SIP──▶ sipp UAS (-rtp_echo)
//!      │                 │ ng (offer / answer / delete, via an NgTap)
//!      │                 ▼
//!      └────RTP────▶ relay under test ────RTP────▶ UAS, and the echo back
//! ```
//!
//! What it proves:
//! 1. Kamailio's rtpengine module can drive the relay: for each of the
//!    [`CALLS`] calls it sent `offer`, `answer` and `delete`, and the relay
//!    answered `result: ok` (seen on a transparent ng tap between them);
//!    all SIP calls succeed (sipp exit code 0, N successful calls).
//! 2. The RTP went through the relay in both directions: while the calls
//!    are up, the test polls the relay's own `list` / `query` ng commands,
//!    and for every call both tags (the UAC's from-tag and the UAS's to-tag)
//!    show `stats.packets > 0` on their first media stream (packets received
//!    from that tag's endpoint).
//! 3. Everything is released: afterwards `list` is empty, and (our relay
//!    only) the Prometheus metrics show `media_relay_ports_in_use 0` and
//!    `media_relay_sessions_ended_total{media="both"} CALLS`.
//!
//! Which relay runs:
//! - default: our `media-relay` binary (rtpengine-compatible flags);
//! - `XSBC_INTEROP_RELAY=rtpengine`: the reference rtpengine daemon
//!   (userspace only), to check the test itself and the reply shapes.
//!
//! Missing kamailio / sipp (/ rtpengine when selected): the test prints
//! `SKIPPED: ...` and passes, unless `CI=true`, where it fails.
//!
//! Notes:
//! - The UAC streams RTP with sipp's `rtp_stream` action (plain UDP sockets,
//!   so no root / CAP_NET_RAW needed, unlike `play_pcap_audio`); the UAS runs
//!   with `-rtp_echo` and sends every packet back to the relay.
//! - Only 127.0.0.1 is used. All processes are stopped by their guards.
//! - No timing assertions; the whole test takes roughly 10 s.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-d [XSBC_INTEROP_RELAY=rtpengine]
//! cargo test -p media-relay --test kamailio_interop -- --nocapture`
//! (`XSBC_KEEP_TMP=1` keeps the scratch dir with all logs).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::bencode::{render, Value};
use testkit::metrics::{metric_value, scrape_metrics};
use testkit::ng::wait_for_udp_ng;
use testkit::ports::{free_tcp_port, free_udp_port, free_udp_port_range, udp_port_in_use};
use testkit::sip::wait_for_sip;
use testkit::sipp::{SippStats, Template};
use testkit::{require_binary, wait_until, ChildGuard, NgClient, NgExchange, NgTap, Sipp, TestDir};

/// Number of SIP calls (each with RTP both ways).
const CALLS: u32 = 10;
/// RTP packets per call sent by the UAC (20 ms PCMA: 150 = 3 s).
const RTP_PACKETS: usize = 150;
/// How long each call stays up after streaming starts (audio length + slack).
const CALL_HOLD_MS: u32 = 3_300;
/// Relay port range length (rtpengine leaves gaps between calls' ports).
const RELAY_PORTS: u16 = 400;

const KAMAILIO_CFG: &str = include_str!("fixtures/kamailio.cfg.tmpl");

// ---------------------------------------------------------------------------
// The relay under test (ours, or rtpengine as the reference)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RelayKind {
    /// Our `media-relay` binary.
    MediaRelay,
    /// rtpengine (Debian `rtpengine-daemon`), userspace only.
    Rtpengine,
}

impl RelayKind {
    fn from_env() -> RelayKind {
        match std::env::var("XSBC_INTEROP_RELAY").as_deref() {
            Err(_) | Ok("") | Ok("media-relay") | Ok("ours") => RelayKind::MediaRelay,
            Ok("rtpengine") => RelayKind::Rtpengine,
            Ok(other) => {
                panic!("XSBC_INTEROP_RELAY={other:?}: expected `rtpengine` or `media-relay`")
            }
        }
    }
}

/// Everything the relay needs to know to be started.
struct RelayPlan {
    kind: RelayKind,
    binary: PathBuf,
    ng: SocketAddr,
    port_min: u16,
    port_max: u16,
    /// Prometheus listener (ours only).
    metrics: SocketAddr,
}

impl RelayPlan {
    /// The command line. Both relays take rtpengine's option names.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config-file=none")
            .arg("--interface=127.0.0.1")
            .arg(format!("--listen-ng={}", self.ng))
            .arg(format!("--port-min={}", self.port_min))
            .arg(format!("--port-max={}", self.port_max))
            .arg("--delete-delay=0")
            .arg("--foreground")
            .arg("--log-level=6");
        match self.kind {
            RelayKind::MediaRelay => {
                cmd.arg("--timeout=60").arg(format!("--metrics={}", self.metrics)).arg("--num-threads=2");
            }
            RelayKind::Rtpengine => {
                // No kernel forwarding table; log to stderr (captured).
                cmd.arg("--table=-1").arg("--log-stderr");
            }
        }
        cmd
    }
}

// ---------------------------------------------------------------------------
// What the relay reports about each call
// ---------------------------------------------------------------------------

/// Per call-id: tag → the highest `stats.packets` seen on that tag's first
/// media stream (packets the relay received from that tag's endpoint).
type Observed = BTreeMap<String, BTreeMap<String, i64>>;

/// `list`: the call-ids the relay currently has.
fn list_calls(ng: &NgClient) -> Vec<String> {
    let mut cmd = Value::dict();
    cmd.insert("command", "list".into());
    let reply = ng.cmd(cmd);
    assert_eq!(reply.get("result").and_then(Value::as_str), Some("ok"), "ng list failed: {}", render(&reply));
    let calls = reply
        .get("calls")
        .and_then(Value::as_list)
        .unwrap_or_else(|| panic!("ng list reply without a `calls` list: {}", render(&reply)));
    calls.iter().filter_map(|c| c.as_str().map(str::to_string)).collect()
}

/// `query` for one call; `None` if the call is gone (or the query failed).
fn query_call(ng: &NgClient, call_id: &str) -> Option<Value> {
    let mut cmd = Value::dict();
    cmd.insert("command", "query".into()).insert("call-id", call_id.into());
    let reply = ng.try_cmd(&cmd).ok()?;
    (reply.get("result").and_then(Value::as_str) == Some("ok")).then_some(reply)
}

/// `tags.<tag>.medias[0].streams[0].stats.packets` for every tag.
fn first_stream_packets(query_reply: &Value) -> Vec<(String, i64)> {
    let Some(Value::Dict(tags)) = query_reply.get("tags") else {
        return Vec::new();
    };
    tags.iter()
        .filter_map(|(key, tag)| {
            let name = tag
                .get("tag")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(key).into_owned());
            let packets = tag
                .get("medias")?
                .as_list()?
                .first()?
                .get("streams")?
                .as_list()?
                .first()?
                .get("stats")?
                .get("packets")?
                .as_int()?;
            Some((name, packets))
        })
        .collect()
}

/// One round of `list` + `query` per call, folded into `seen`. Returns a
/// query reply in which both tags have packets (kept once for the log).
fn poll_relay(ng: &NgClient, seen: &mut Observed) -> Option<Value> {
    let mut sample = None;
    for call_id in list_calls(ng) {
        let entry = seen.entry(call_id.clone()).or_default();
        let Some(reply) = query_call(ng, &call_id) else {
            continue;
        };
        let per_tag = first_stream_packets(&reply);
        for (tag, packets) in &per_tag {
            let max = entry.entry(tag.clone()).or_insert(0);
            *max = (*max).max(*packets);
        }
        if per_tag.len() >= 2 && per_tag.iter().all(|(_, p)| *p > 0) {
            sample = Some(reply);
        }
    }
    sample
}

// ---------------------------------------------------------------------------
// Helpers specific to this test
// ---------------------------------------------------------------------------

fn print_exchange(label: &str, x: &NgExchange) {
    println!(
        "[ng] {label} from {} (cookie {}):\n  command: {}\n  reply:   {}",
        x.client,
        x.cookie,
        x.command
            .as_ref()
            .map(render)
            .unwrap_or_else(|| { format!("<undecodable> {:?}", String::from_utf8_lossy(&x.raw_command)) }),
        x.reply.as_ref().map(render).unwrap_or_else(|| "<none>".to_string()),
    );
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn kamailio_sipp_calls_anchor_rtp_on_relay() {
    // --- 1. Tools -----------------------------------------------------------
    let kind = RelayKind::from_env();
    let Some(kamailio) = require_binary("kamailio") else { return };
    let Some(sipp) = Sipp::find() else { return };
    let relay_binary = match kind {
        RelayKind::MediaRelay => PathBuf::from(env!("CARGO_BIN_EXE_media-relay")),
        RelayKind::Rtpengine => {
            let Some(p) = require_binary("rtpengine") else { return };
            p
        }
    };
    println!("[test] relay under test: {kind:?} ({})", relay_binary.display());

    // --- 2. Ports and scratch dir ------------------------------------------
    let dir = TestDir::new("kamailio-interop");
    let relay_ng = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let sip_port = free_udp_port();
    let uas_port = free_udp_port();
    let uac_port = free_udp_port();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let relay_min = free_udp_port_range(RELAY_PORTS);
    let relay_max = relay_min + RELAY_PORTS - 1;
    // Media ports for both sipps: RTP, RTCP, and sipp's "+2" video pair.
    let media_base = loop {
        let b = free_udp_port_range(8);
        if b + 8 <= relay_min || b > relay_max {
            break b;
        }
    };
    let (uas_media, uac_media) = (media_base, media_base + 4);
    println!(
        "[test] ports: ng {relay_ng}, relay {relay_min}-{relay_max}, kamailio {sip_port}, \
         uas {uas_port} (media {uas_media}), uac {uac_port} (media {uac_media}), metrics {metrics}"
    );

    // --- 3. The relay ------------------------------------------------------
    let plan =
        RelayPlan { kind, binary: relay_binary, ng: relay_ng, port_min: relay_min, port_max: relay_max, metrics };
    let mut relay = ChildGuard::spawn("relay", &mut plan.command(), dir.path());
    let up = wait_for_udp_ng(relay_ng, Duration::from_secs(10));
    relay.assert_running();
    assert!(up, "relay did not answer ng ping on {relay_ng} within 10 s\n{}", relay.log_tail(40));

    // Kamailio talks to the relay through a recording tap.
    let tap = NgTap::start(relay_ng);
    let ng = NgClient::new(relay_ng);
    assert!(list_calls(&ng).is_empty(), "relay starts with calls already present");

    // --- 4. Kamailio ---------------------------------------------------------
    let cfg = Template::new(KAMAILIO_CFG)
        .set("SIP_PORT", sip_port)
        .set("NG_PORT", tap.addr().port())
        .set("UAS_PORT", uas_port)
        .write(&dir, "kamailio.cfg");
    let mut kam_cmd = Command::new(&kamailio);
    kam_cmd
        .arg("-f")
        .arg(&cfg)
        .arg("-P")
        .arg(dir.join("kamailio.pid"))
        .arg("-Y") // runtime dir: keep it out of /run/kamailio
        .arg(dir.path())
        .arg("-w")
        .arg(dir.path())
        .args(["-E", "-DD", "-m", "64", "-M", "8"]);
    // Kamailio forks workers: own process group, signalled as a whole.
    let mut kam = ChildGuard::spawn_group("kamailio", &mut kam_cmd, dir.path());
    let kam_addr = SocketAddr::from(([127, 0, 0, 1], sip_port));
    let up = wait_for_sip(kam_addr, Duration::from_secs(15));
    kam.assert_running();
    assert!(up, "kamailio did not answer OPTIONS on {kam_addr}\n{}", kam.log_tail(40));

    // --- 5. sipp UAS (echoes RTP back to the relay) -----------------------------
    // 3 s of A-law silence: sipp's rtp_stream sends 160 bytes per 20 ms.
    let audio = dir.write("pcma_3s.raw", vec![0xd5u8; RTP_PACKETS * 160]);
    assert!(!audio.display().to_string().contains(','), "rtp_stream takes a comma list");
    let uac_xml = Template::scenario("uac_rtp.xml")
        .set("AUDIO", audio.display())
        .set("PAUSE_MS", CALL_HOLD_MS)
        .write(&dir, "uac_rtp.xml");
    let uas = sipp.uas(dir.path(), uas_port).scenario("uas_echo.xml").media("127.0.0.1", Some(uas_media));
    let uas = uas.arg("-rtp_echo").calls(CALLS).timeout_s(50).timeout_error().trace_err();
    let mut uas = uas.stats("uas_stats.csv").spawn("sipp-uas");
    let up = wait_until(Duration::from_secs(5), Duration::from_millis(20), || udp_port_in_use(uas_port));
    uas.assert_running();
    assert!(up, "sipp UAS did not bind 127.0.0.1:{uas_port}");

    // --- 6. sipp UAC: CALLS calls at 5 cps, RTP for ~3 s each -------------------
    let uac = sipp.cmd(dir.path()).remote(kam_addr).sf(&uac_xml).local("127.0.0.1", uac_port);
    let uac = uac.media("127.0.0.1", Some(uac_media)).calls(CALLS).rate(5).limit(CALLS);
    let mut uac = uac.timeout_s(45).timeout_error().trace_err().stats("uac_stats.csv").spawn("sipp-uac");
    let uac_pid = uac.pid();

    // --- 7. RTP phase: poll the relay's own view of the calls ----------------
    let mut seen: Observed = BTreeMap::new();
    let mut sample_query = None;
    let deadline = Instant::now() + Duration::from_secs(50);
    let uac_status = loop {
        if let Some(status) = uac.try_wait() {
            break status;
        }
        assert!(Instant::now() < deadline, "sipp UAC still running after 50 s\n{}", uac.log_tail(30));
        relay.assert_running();
        kam.assert_running();
        if let Some(q) = poll_relay(&ng, &mut seen) {
            sample_query.get_or_insert(q);
        }
        std::thread::sleep(Duration::from_millis(200));
    };

    // --- 8. SIP outcome ------------------------------------------------------
    let uac_csv = dir.join("uac_stats.csv");
    let uac_stats = SippStats::read(&uac_csv);
    let ok_calls = uac_stats.as_ref().and_then(|s| s.get("SuccessfulCall(C)"));
    let failed_calls = uac_stats.as_ref().and_then(|s| s.get("FailedCall(C)"));
    let errors = fs::read_dir(dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log"))
        .map(|e| fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        uac_status.success(),
        "sipp UAC failed ({uac_status}; successful {ok_calls:?}, failed {failed_calls:?})\n\
         sipp errors:\n{}\n{}",
        errors.chars().take(4000).collect::<String>(),
        uac.log_tail(30)
    );
    assert_eq!(ok_calls, Some(u64::from(CALLS)), "successful calls per sipp UAC stats");
    assert_eq!(failed_calls, Some(0), "failed calls per sipp UAC stats");
    let uas_status = uas.wait_timeout(Duration::from_secs(10));
    assert!(
        uas_status.is_some_and(|s| s.success()),
        "sipp UAS did not finish cleanly: {uas_status:?}\n{}",
        uas.log_tail(30)
    );
    println!("[test] sipp: {CALLS} calls successful (UAC pid {uac_pid})");

    // --- 9. Kamailio drove offer / answer / delete for every call ---------------
    let expected_calls: BTreeSet<String> = (1..=CALLS).map(|n| format!("{n}-{uac_pid}@127.0.0.1")).collect();
    // Give a delete that crossed the BYE's 200 a moment to be answered.
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let x = tap.exchanges();
        expected_calls
            .iter()
            .all(|c| x.iter().any(|e| e.name() == Some("delete") && e.key("call-id") == Some(c) && e.reply.is_some()))
    });
    let exchanges = tap.exchanges();
    for name in ["offer", "answer", "delete"] {
        if let Some(x) = exchanges.iter().find(|x| x.name() == Some(name)) {
            print_exchange(name, x);
        }
    }
    for call_id in &expected_calls {
        for name in ["offer", "answer", "delete"] {
            let found: Vec<&NgExchange> = exchanges
                .iter()
                .filter(|x| x.name() == Some(name) && x.key("call-id") == Some(call_id.as_str()))
                .collect();
            assert!(!found.is_empty(), "Kamailio sent no `{name}` for call {call_id}");
            assert!(
                found.iter().all(|x| x.result() == Some("ok")),
                "relay did not answer `{name}` for {call_id} with result ok: {}",
                found.iter().map(|x| x.reply.as_ref().map(render).unwrap_or_default()).collect::<Vec<_>>().join(" | ")
            );
        }
    }
    let other: BTreeSet<&str> =
        exchanges.iter().filter_map(NgExchange::name).filter(|n| !["offer", "answer", "delete"].contains(n)).collect();
    println!("[ng] {} exchanges via the tap; other commands from Kamailio: {other:?}", exchanges.len());

    // --- 10. RTP went through the relay both ways, for every call -----------------
    if let Some(q) = &sample_query {
        println!("[ng] sample query reply during the RTP phase:\n  {}", render(q));
    }
    for (call_id, tags) in &seen {
        println!("[relay] {call_id}: {tags:?}");
    }
    let seen_ids: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(seen_ids, expected_calls, "call-ids listed by the relay vs. sipp's calls");
    for call_id in &expected_calls {
        let tags = &seen[call_id];
        let call_no: u32 = call_id.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let uac_tag = format!("{uac_pid}xsbcUac{call_no}");
        let uac_packets = tags.get(&uac_tag).copied();
        let uas_packets = tags.iter().filter(|(t, _)| t.contains("xsbcUas")).map(|(_, p)| *p).max();
        assert!(
            uac_packets.is_some_and(|p| p > 0),
            "{call_id}: no RTP received from the UAC (tag {uac_tag}) by the relay: {tags:?}"
        );
        assert!(
            uas_packets.is_some_and(|p| p > 0),
            "{call_id}: no RTP received from the UAS (echo) by the relay: {tags:?}"
        );
    }
    println!("[test] all {CALLS} calls carried RTP both ways through the relay");

    // --- 11. Everything released ------------------------------------------------
    let mut left = Vec::new();
    let empty = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        left = list_calls(&ng);
        left.is_empty()
    });
    assert!(empty, "relay still lists calls after all BYEs: {left:?}");

    if kind == RelayKind::MediaRelay {
        let mut last = Vec::new();
        let mut last_err = String::new();
        let released =
            wait_until(Duration::from_secs(5), Duration::from_millis(100), || match scrape_metrics(metrics) {
                Ok(m) => {
                    last = m;
                    metric_value(&last, "media_relay_ports_in_use", &[]) == Some(0.0)
                }
                Err(e) => {
                    last_err = e;
                    false
                }
            });
        assert!(
            released,
            "media_relay_ports_in_use did not reach 0: {:?} {last_err}",
            metric_value(&last, "media_relay_ports_in_use", &[])
        );
        assert_eq!(
            metric_value(&last, "media_relay_sessions_ended_total", &[("media", "both")]),
            Some(f64::from(CALLS)),
            "media_relay_sessions_ended_total{{media=\"both\"}}"
        );
        println!("[test] metrics: ports_in_use 0, sessions_ended_total{{media=\"both\"}} {CALLS}");
    } else {
        println!("[test] (metrics checks skipped for rtpengine)");
    }

    // Orderly shutdown (the guards would do the same on drop).
    drop(tap);
    kam.stop(Duration::from_secs(5));
    relay.stop(Duration::from_secs(5));
}
