//! Call quality in the call layer, with the relay's reports and events
//! played by [`FakeRelay`]: one-way audio flags counted by trunk, the
//! media timeout ending a call with BYE both ways (CDR `media-timeout`),
//! the quality fields of the CDR, the per-trunk health series, and the
//! `sbc ctl calls` / `call CALLID` views.

use std::path::PathBuf;
use std::time::Duration;

use media_relay::control::{
    CallReport, DirSnapshot, LegReport, MediaReport, QualityEvent, QualityReport, StreamReport,
};
use media_relay::rtcp::RtcpReport;

use super::sip::{respond, Request};
use super::{only_to, Harness, Sent, CALLER, TRUNK_A};
use crate::cdr::CdrWriter;
use crate::sip::Message;

/// The INVITE for `call_id` answered by trunk `a` and acknowledged:
/// returns the 200 as the caller got it.
fn answered(h: &mut Harness, call_id: &str) -> Message {
    let out = h.send(CALLER, &Request::new("INVITE", call_id).sdp(6000).build());
    let invite = only_to(&out, TRUNK_A).msg.clone();
    let out = h.send(TRUNK_A, &respond(&invite, 200, Some(7000)));
    let ok = only_to(&out, CALLER).msg.clone();
    h.send(CALLER, &Request::new("ACK", call_id).in_dialog(&ok).build());
    ok
}

fn cdr_file(h: &mut Harness, name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("xsbc-quality-{name}-{}.cdr", std::process::id()));
    let _ = std::fs::remove_file(&path);
    h.proxy.core.cdr = CdrWriter::open(Some(&path)).unwrap();
    path
}

fn cdrs(path: &PathBuf) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn byes(out: &[Sent]) -> Vec<&Sent> {
    out.iter().filter(|s| s.method() == "BYE").collect()
}

/// A relay report of call `id`: caller tag `a1` sending with `out`
/// quality, callee tag `b1` with `back`.
fn report(id: &str, out: QualityReport, back: QualityReport) -> CallReport {
    let leg = |tag: &str, q: QualityReport, packets: u64| {
        let mut stats = DirSnapshot::default();
        stats.stats.packets = packets;
        stats.stats.expected = packets;
        stats.rtcp =
            RtcpReport { srs: 3, blocks: 3, fraction_lost: 13, cumulative_lost: 9, jitter: 40, rtt_us: 21_000 };
        let stream = StreamReport { local_port: 40000, endpoint: None, advertised: None, latched: true, stats };
        LegReport {
            tag: tag.to_owned(),
            medias: vec![MediaReport {
                index: 1,
                kind: "audio".into(),
                protocol: "RTP/AVP".into(),
                codecs: vec!["PCMU/8000".into()],
                streams: [stream.clone(), stream],
                quality: q,
            }],
        }
    };
    CallReport {
        call_id: id.to_owned(),
        created: 0,
        last_signal: 0,
        legs: vec![leg("a1", out, 1500), leg("b1", back, 20)],
    }
}

fn q(mos: f64, min: f64, mean: f64, loss: f64, one_way: bool) -> QualityReport {
    QualityReport {
        mos,
        mos_min: min,
        mos_mean: mean,
        intervals: 4,
        loss_pct: loss,
        jitter_ms: 3.25,
        jitter_max_ms: 12.5,
        rtt_ms: Some(42.0),
        one_way,
        held: false,
        idle_ms: 20,
    }
}

#[test]
fn one_way_audio_is_counted_by_trunk() {
    let mut h = Harness::new();
    answered(&mut h, "ow1");
    h.relay.quality_events.lock().unwrap().extend([
        QualityEvent::OneWay { call_id: "ow1".into(), media: 1, silent_tag: "b1".into() },
        // A call the sbc does not know is ignored.
        QualityEvent::OneWay { call_id: "nobody".into(), media: 1, silent_tag: "x".into() },
    ]);
    h.advance(Duration::from_secs(1));
    let m = h.metrics.render();
    assert!(m.contains("sbc_one_way_audio_total{trunk=\"a\"} 1\n"), "{m}");
    assert!(m.contains("sbc_one_way_audio_total{trunk=\"b\"} 0\n"), "{m}");
    assert_eq!(h.metrics.health.one_way_count(0), 1);
    // Taken once: nothing more on the next sweep.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.metrics.health.one_way_count(0), 1);
}

#[test]
fn dead_media_ends_the_call_with_bye_both_ways_when_configured() {
    // Off by default: the relay's idle list is not acted on.
    let mut h = Harness::new();
    answered(&mut h, "mt0");
    *h.relay.idle.lock().unwrap() = vec!["mt0".into()];
    let out = h.advance(Duration::from_secs(2));
    assert!(byes(&out).is_empty(), "{out:#?}");
    assert!(h.relay.deleted.lock().unwrap().is_empty());

    let cfg = Harness::config().replacen("[sip]\n", "[sip]\nmedia_timeout_s = 20\n", 1);
    let mut h = Harness::with_config(&cfg);
    let cdr = cdr_file(&mut h, "mt");
    answered(&mut h, "mt1");
    let out = h.advance(Duration::from_secs(2));
    assert!(byes(&out).is_empty(), "media still flowing: {out:#?}");
    *h.relay.idle.lock().unwrap() = vec!["mt1".into(), "unknown".into()];
    let out = h.advance(Duration::from_secs(1));
    let b = byes(&out);
    assert_eq!(b.len(), 2, "one BYE to each side: {out:#?}");
    assert!(b.iter().any(|s| s.dest == super::addr(TRUNK_A)) && b.iter().any(|s| s.dest == super::addr(CALLER)));
    for s in &b {
        assert_eq!(s.msg.call_id(), Some("mt1"));
        assert!(s.msg.header("reason").is_some_and(|r| r.contains("Media timeout")), "{:?}", s.msg.header("reason"));
    }
    assert_eq!(*h.relay.deleted.lock().unwrap(), vec!["mt1".to_owned()]);
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["end_reason"], "media-timeout");
    assert!(h.metrics.render().contains("sbc_media_timeout_total{trunk=\"a\"} 1\n"));
}

#[test]
fn cdr_metrics_and_ctl_show_the_quality_of_each_direction() {
    let mut h = Harness::new();
    let cdr = cdr_file(&mut h, "cdr");
    let ok = answered(&mut h, "qc1");
    *h.relay.report.lock().unwrap() = Some(report("qc1", q(4.1, 3.5, 4.0, 1.25, false), q(1.0, 1.0, 1.0, 100.0, true)));

    let table = h.proxy.control("calls");
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("CALL-ID"), "{table}");
    let row = lines.next().expect("one call");
    for want in ["qc1", " a ", "confirmed", "4.10", "1.25", "3.2", "1500", "1.00", "100.00", "one-way-in"] {
        assert!(row.contains(want), "`{want}` not in `{row}`");
    }
    assert!(lines.next().is_none(), "{table}");

    let detail = h.proxy.control("call qc1");
    for want in [
        "call-id: qc1",
        "trunk: a",
        "caller -> callee (from tag a1)",
        "mos: 4.10 (min 3.50, mean 4.00, 4 intervals)",
        "loss_pct: 1.25 jitter_ms: 3.2 (max 12.5) rtt_ms: 42.0",
        "fraction_lost 5.1% cumulative_lost 9 jitter 40 rtt_to_relay_ms 21.0",
        "one_way: true",
    ] {
        assert!(detail.contains(want), "`{want}` not in\n{detail}");
    }
    assert!(h.proxy.control("call nope").starts_with("error:"));

    h.advance(Duration::from_secs(90));
    let out = h.send(CALLER, &Request::new("BYE", "qc1").cseq(2).in_dialog(&ok).build());
    assert_eq!(only_to(&out, TRUNK_A).method(), "BYE");
    let lines = cdrs(&cdr);
    assert_eq!(lines.len(), 1);
    let media = &lines[0]["relay"];
    let (out_m, back_m) = (&media[0]["media"][0], &media[1]["media"][0]);
    assert_eq!(out_m["mos_min"], 3.5);
    assert_eq!(out_m["mos_mean"], 4.0);
    assert_eq!(out_m["loss_pct"], 1.25);
    assert_eq!(out_m["jitter_max_ms"], 12.5);
    assert_eq!(out_m["rtt_ms"], 42.0);
    assert_eq!(out_m["one_way_audio"], false);
    assert_eq!(out_m["rtcp_fraction_lost"], 13);
    assert_eq!(back_m["one_way_audio"], true);
    assert_eq!(back_m["mos_min"], 1.0);

    let m = h.metrics.render();
    for want in [
        "sbc_trunk_call_attempts_total{trunk=\"a\"} 1",
        "sbc_trunk_answers_total{trunk=\"a\"} 1",
        "sbc_trunk_asr{trunk=\"a\"} 1",
        "sbc_trunk_ner{trunk=\"a\"} 1",
        "sbc_trunk_mos_count{trunk=\"a\"} 2",
        "sbc_trunk_mos_bucket{trunk=\"a\",le=\"1\"} 1",
        "sbc_trunk_mos_bucket{trunk=\"a\",le=\"4.1\"} 2",
        "sbc_trunk_post_dial_delay_seconds_count{trunk=\"a\"} 1",
        "sbc_trunk_acd_seconds{trunk=\"a\"} 90",
    ] {
        assert!(m.lines().any(|l| l == want), "`{want}` not in metrics:\n{m}");
    }
}
