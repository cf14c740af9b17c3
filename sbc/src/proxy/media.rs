//! Media anchoring in the call layer: SDP offers and answers rewritten
//! through [`MediaControl`](media_relay::control::MediaControl), and the
//! end of a call (media deleted, CDR written).

use std::time::{Instant, SystemTime};

use media_relay::control::{RelayError, SdpOptions, SdpRequest};

use super::core::Core;
use super::dialog::EndReason;
use crate::sip::Message;

/// Why the proxy could not anchor a call's media.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The relay refused an SDP offer.
    #[error("offer: {0}")]
    Offer(#[source] RelayError),
    /// The relay refused an SDP answer.
    #[error("answer: {0}")]
    Answer(#[source] RelayError),
}

/// Whether a message carries an SDP body.
pub(super) fn has_sdp(m: &Message) -> bool {
    !m.body.is_empty()
        && m.header("content-type").is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("application/sdp"))
}

impl Core {
    /// Anchors an SDP body: `offer` from the side with tag `owner` (in realm
    /// `realms.0`) to `other` (in realm `realms.1`). Each leg is anchored
    /// on its own realm's media interface. A message without SDP is left
    /// alone.
    pub(super) fn anchor(
        &self,
        msg: &mut Message,
        offer: bool,
        owner: &str,
        other: Option<&str>,
        realms: (usize, usize),
    ) -> Result<(), MediaError> {
        if !has_sdp(msg) {
            return Ok(());
        }
        let Some(call_id) = msg.call_id().map(str::to_owned) else { return Ok(()) };
        // The relay places a call's legs when it first sees it: offerer first.
        let direction = if offer { self.direction(realms.0, realms.1) } else { self.direction(realms.1, realms.0) };
        let opts = SdpOptions { replace_origin: true, direction, ..SdpOptions::default() };
        let sdp = if offer {
            let req = SdpRequest { call_id: &call_id, from_tag: owner, to_tag: other, sdp: &msg.body, opts };
            self.media.offer(&req).map_err(MediaError::Offer)?
        } else {
            let from_tag = other.unwrap_or_default();
            let req = SdpRequest { call_id: &call_id, from_tag, to_tag: Some(owner), sdp: &msg.body, opts };
            self.media.answer(&req).map_err(MediaError::Answer)?
        };
        msg.set_body(sdp);
        Ok(())
    }

    /// A BYE ended the call; which side sent it decides the CDR reason.
    pub(super) fn end_bye(&mut self, call_id: &str, from_tag: &str, now: Instant) {
        let reason = match self.dialogs.get(call_id) {
            Some(d) if d.from_caller(from_tag) => EndReason::CallerBye,
            Some(_) => EndReason::CalleeBye,
            None => return,
        };
        self.end_call(call_id, reason, 0, now);
    }

    /// Ends a call: deletes its media session and writes its CDR.
    pub(super) fn end_call(&mut self, call_id: &str, reason: EndReason, code: u16, now: Instant) {
        let Some(mut d) = self.dialogs.remove(call_id) else { return };
        if code != 0 {
            d.final_code = code;
        }
        let trunk = d.trunk;
        let trunk_name = trunk.and_then(|i| self.cfg.trunks.get(i)).map(|t| t.name.clone());
        if let Some(i) = d.trunk.take() {
            self.trunk_release(i);
        }
        let (relay, codecs) = match self.media.delete(call_id, Some(&d.caller_tag)) {
            Ok(report) => {
                if let Some(i) = trunk {
                    self.record_call_mos(i, &report);
                }
                let mut codecs: Vec<String> = Vec::new();
                for c in report.legs.iter().flat_map(|l| l.medias.iter().flat_map(|m| m.codecs.iter())) {
                    if !codecs.contains(c) {
                        codecs.push(c.clone());
                    }
                }
                (crate::cdr::relay_stats(&report), codecs)
            }
            Err(_) => (serde_json::Value::Null, Vec::new()),
        };
        if let (Some(i), Some(a)) = (trunk, d.answered) {
            self.metrics.health.answered_call_ended(i, now.saturating_duration_since(a).as_secs_f64());
        }
        tracing::debug!(call_id, reason = reason.as_str(), code = d.final_code, "call ended");
        let mut rec = d.cdr(reason, SystemTime::now(), now, relay, &codecs);
        rec["trunk"] = trunk_name.into();
        self.cdr.write(&rec);
    }
}
