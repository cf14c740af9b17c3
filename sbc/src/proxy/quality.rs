//! Call quality in the call layer: one-way audio flags from the relay
//! (logged, counted by trunk), calls ended for dead media
//! (`sip.media_timeout_s`), MOS into the per-trunk histogram when a call
//! ends, and the `sbc ctl calls` / `sbc ctl call CALLID` views.
//!
//! The relay scores quality itself (see `media_relay::quality`); this
//! module only reads its reports and events, once a second from the sweep
//! and on an operator's command.

use std::fmt::Write as _;
use std::time::Instant;

use media_relay::control::{CallReport, MediaReport, QualityEvent};

use super::core::Core;
use super::dialog::{Dialog, DialogState, EndReason};
use crate::txn::Endpoint;

/// The quality of one direction in a ctl row: `MOS LOSS% JITTER PKTS`.
fn dir_cells(m: Option<&MediaReport>) -> String {
    let Some(m) = m else { return format!("{:>4} {:>6} {:>7} {:>7}", "-", "-", "-", "-") };
    let q = &m.quality;
    let mos = if q.intervals == 0 { "-".to_owned() } else { format!("{:.2}", q.mos) };
    format!("{mos:>4} {:>6.2} {:>7.1} {:>7}", q.loss_pct, q.jitter_ms, m.streams[0].stats.stats.packets)
}

/// The first media of the leg whose tag is (`caller`) or is not the caller's.
fn leg_media<'a>(r: &'a CallReport, caller_tag: &str, caller: bool) -> Option<&'a MediaReport> {
    r.legs.iter().find(|l| (l.tag == caller_tag) == caller).and_then(|l| l.medias.first())
}

impl Core {
    /// MOS of each scored direction of an ended call on trunk `i`.
    pub(super) fn record_call_mos(&self, i: usize, report: &CallReport) {
        for m in report.legs.iter().flat_map(|l| &l.medias) {
            if m.quality.intervals > 0 {
                self.metrics.health.mos(i, m.quality.mos_mean);
            }
        }
    }

    /// Once a second: the relay's one-way audio flags, and calls with dead
    /// media past `sip.media_timeout_s`.
    pub(super) fn quality_tick(&mut self, txn: &mut Endpoint, now: Instant) {
        for ev in self.media.take_quality_events() {
            let QualityEvent::OneWay { call_id, media, silent_tag } = ev;
            let Some(d) = self.dialogs.get(&call_id) else { continue };
            let silent = if d.from_caller(&silent_tag) { "caller" } else { "callee" };
            tracing::warn!(call_id, trunk = d.target, media, silent, "one-way audio: the {silent} sends no media");
            if let Some(i) = d.trunk {
                self.metrics.health.one_way(i);
            }
        }
        let timeout = self.cfg.media_timeout;
        if timeout.is_zero() || !self.active {
            return;
        }
        for call_id in self.media.idle_calls(timeout) {
            let dead = self.dialogs.get(&call_id).is_some_and(|d| d.state == DialogState::Confirmed && d.media);
            if dead {
                self.end_media_timeout(txn, &call_id, now);
            }
        }
    }

    /// Ends an answered call whose media stopped: BYE to both sides as the
    /// no-ACK teardown sends them, CDR reason `media-timeout`.
    fn end_media_timeout(&mut self, txn: &mut Endpoint, call_id: &str, now: Instant) {
        let Some(d) = self.dialogs.get(call_id).cloned() else { return };
        tracing::info!(
            call_id,
            trunk = d.target,
            timeout_s = self.cfg.media_timeout.as_secs(),
            "no media either way: ending the call with BYE both ways"
        );
        let shift = self.carrier.offsets_of(call_id, std::iter::once(d.caller_tag.as_str())).first().map_or(0, |o| o.1);
        let reason = "SIP;cause=408;text=\"Media timeout\"";
        self.send_bye(txn, &d, true, d.invite_cseq.wrapping_add(shift).wrapping_add(1), reason, now);
        self.send_bye(txn, &d, false, 1, reason, now);
        if let Some(i) = d.trunk {
            self.metrics.health.media_timeout(i);
        }
        self.end_call(call_id, EndReason::MediaTimeout, 0, now);
    }

    /// `sbc ctl calls`: one row per call, the quality of each direction of
    /// its first media section (`OUT` caller to callee, `IN` back).
    pub(super) fn calls_table(&self, now: Instant) -> String {
        let mut rows: Vec<&Dialog> = self.dialogs.iter().collect();
        rows.sort_by_key(|d| d.started);
        let mut out = format!(
            "{:<36} {:<16} {:<9} {:>6}  {:<27}  {:<27} FLAGS\n",
            "CALL-ID", "TRUNK", "STATE", "AGE", "OUT: MOS  LOSS% JIT(ms)    PKTS", "IN: MOS  LOSS% JIT(ms)    PKTS"
        );
        for d in rows {
            let report = if d.media { self.media.query(&d.call_id).ok() } else { None };
            let out_m = report.as_ref().and_then(|r| leg_media(r, &d.caller_tag, true));
            let in_m = report.as_ref().and_then(|r| leg_media(r, &d.caller_tag, false));
            let mut flags = Vec::new();
            for (m, dir) in [(out_m, "out"), (in_m, "in")] {
                if let Some(q) = m.map(|m| m.quality) {
                    if q.one_way {
                        flags.push(format!("one-way-{dir}"));
                    }
                    if q.held {
                        flags.push(format!("hold-{dir}"));
                    }
                }
            }
            let _ = writeln!(
                out,
                "{:<36} {:<16} {:<9} {:>5}s  {}  {} {}",
                d.call_id,
                d.target,
                state(d),
                now.saturating_duration_since(d.started).as_secs(),
                dir_cells(out_m),
                dir_cells(in_m),
                if flags.is_empty() { "-".to_owned() } else { flags.join(",") }
            );
        }
        out
    }

    /// `sbc ctl call CALLID`: one call in detail, every media section and
    /// both directions, with the endpoints' own RTCP figures.
    pub(super) fn call_detail(&self, call_id: &str, now: Instant) -> String {
        let Some(d) = self.dialogs.get(call_id) else { return format!("error: no call `{call_id}`\n") };
        let mut out = String::new();
        let _ = writeln!(out, "call-id: {}", d.call_id);
        let _ = writeln!(out, "trunk: {}", d.target);
        let _ = writeln!(out, "state: {}", state(d));
        let _ = writeln!(out, "age_s: {}", now.saturating_duration_since(d.started).as_secs());
        if let Some(a) = d.answered {
            let _ = writeln!(out, "answered_s: {}", now.saturating_duration_since(a).as_secs());
        }
        let Some(report) = d.media.then(|| self.media.query(call_id).ok()).flatten() else {
            out.push_str("media: not anchored\n");
            return out;
        };
        for leg in &report.legs {
            let from = if leg.tag == d.caller_tag { "caller -> callee" } else { "callee -> caller" };
            for m in &leg.medias {
                let q = &m.quality;
                let s = &m.streams[0].stats;
                let _ = writeln!(out, "media {} {} {from} (from tag {}):", m.index, m.kind, leg.tag);
                let _ = writeln!(out, "  codecs: {}", m.codecs.join(" "));
                let mos = |v: f64| if q.intervals == 0 { "-".to_owned() } else { format!("{v:.2}") };
                let _ = writeln!(
                    out,
                    "  mos: {} (min {}, mean {}, {} intervals)",
                    mos(q.mos),
                    mos(q.mos_min),
                    mos(q.mos_mean),
                    q.intervals
                );
                let _ = writeln!(
                    out,
                    "  packets: {} lost: {} loss_pct: {:.2} jitter_ms: {:.1} (max {:.1}) rtt_ms: {}",
                    s.stats.packets,
                    s.stats.lost,
                    q.loss_pct,
                    q.jitter_ms,
                    q.jitter_max_ms,
                    q.rtt_ms.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}"))
                );
                let r = &s.rtcp;
                let _ = writeln!(
                    out,
                    "  sender rtcp: sr {} rr-blocks {} fraction_lost {:.1}% cumulative_lost {} jitter {} rtt_to_relay_ms {}",
                    r.srs,
                    r.blocks,
                    f64::from(r.fraction_lost) * 100.0 / 256.0,
                    r.cumulative_lost,
                    r.jitter,
                    if r.rtt_us == 0 { "-".to_owned() } else { format!("{:.1}", f64::from(r.rtt_us) / 1000.0) }
                );
                let _ = writeln!(
                    out,
                    "  one_way: {} hold: {} idle_ms: {} endpoint: {}",
                    q.one_way,
                    q.held,
                    q.idle_ms,
                    m.streams[0].endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string())
                );
            }
        }
        out
    }
}

fn state(d: &Dialog) -> &'static str {
    match d.state {
        DialogState::Early => "early",
        DialogState::Confirmed if d.acked => "confirmed",
        DialogState::Confirmed => "answered",
    }
}
