//! The periodic pass over the call table: collect worker events, retry
//! removes that found a full ring, finish delayed deletes and time out
//! calls whose media and signaling both went silent.
//!
//! Runs on its own thread (`mr-housekeeping`) every [`HOUSEKEEPING`], under
//! the relay's lock like every other control path; tests call
//! [`Relay::housekeep`] directly with the time they choose.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{to_nanos, Relay};
use crate::control::QualityEvent;
use crate::sys::monotonic_ns;
use crate::Nanos;

/// How often the housekeeping thread runs.
const HOUSEKEEPING: Duration = Duration::from_millis(200);

impl Relay {
    /// One housekeeping pass: collect worker events, retry queued removes,
    /// finish delayed deletes and time out silent calls. `now` is monotonic ns.
    pub fn housekeep(&self, now: Nanos) {
        let mut st = self.lock();
        st.drain_events();
        st.workers.retry_removes();
        let one_way_after = to_nanos(self.cfg.one_way_after);
        let st = &mut *st;
        let marked = self.answers_marked.load(Ordering::Relaxed);
        for call in st.calls.values_mut() {
            let answered =
                call.delete_at.is_none() && if marked { call.answered.is_some() } else { call.tags[1].is_some() };
            let since = call.last_signal_mono.max(call.answered.unwrap_or(0));
            for (i, m) in call.medias.iter_mut().enumerate() {
                for ow in m.score(now, answered, since, one_way_after) {
                    let silent_tag = call.tags[ow.silent_from].as_deref().unwrap_or_default().to_owned();
                    tracing::warn!(call_id = %call.id, media = i + 1, silent_tag, after_s = self.cfg.one_way_after.as_secs(),
                        "one-way audio: media flows in one direction only");
                    st.totals.one_way_audio += 1;
                    if st.quality_events.len() < super::FLOOD_SOURCES_MAX {
                        st.quality_events.push(QualityEvent::OneWay {
                            call_id: call.id.to_string(),
                            media: i + 1,
                            silent_tag,
                        });
                    }
                }
            }
        }
        let timeout = to_nanos(self.timeout());
        let mut expired: Vec<(Arc<str>, bool)> = Vec::new();
        for call in st.calls.values() {
            if let Some(at) = call.delete_at {
                if now >= at {
                    expired.push((Arc::clone(&call.id), false));
                }
                continue;
            }
            let last_media =
                call.medias.iter().flat_map(|m| m.shared.iter()).map(|s| s.last_packet()).max().unwrap_or(0);
            let last = last_media.max(call.last_signal_mono);
            if now.saturating_sub(last) >= timeout {
                expired.push((Arc::clone(&call.id), true));
            }
        }
        for (id, timed_out) in expired {
            if timed_out {
                tracing::info!(call_id = %id, timeout_s = self.timeout().as_secs(), "no media in either direction: deleting call");
                st.totals.timed_out += 1;
            }
            st.destroy(&id);
        }
        st.workers.wake();
    }
}

impl Relay {
    /// Call-IDs of calls with no RTP in any direction, and no offer or
    /// answer, for at least `idle` ns at `now`.
    pub(super) fn idle_calls_at(&self, now: Nanos, idle: Nanos) -> Vec<String> {
        let st = self.lock();
        st.calls
            .values()
            .filter(|c| c.delete_at.is_none() && !c.medias.is_empty())
            .filter(|c| {
                c.medias.iter().all(|m| {
                    (0..2).all(|from| m.quality_report(from, now, c.last_signal_mono).idle_ms >= idle / 1_000_000)
                })
            })
            .map(|c| c.id.to_string())
            .collect()
    }
}

/// The housekeeping thread: a pass every [`HOUSEKEEPING`] until shutdown
/// or until the relay is dropped.
pub(super) fn run(relay: &Weak<Relay>, shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(HOUSEKEEPING);
        let Some(r) = relay.upgrade() else { return };
        r.housekeep(monotonic_ns());
    }
}
