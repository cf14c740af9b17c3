//! Refusals over a cap of `[limits]` in the call layer: 503 with
//! Retry-After, counted by cap in `sbc_caps_refused_total`, logged at most
//! once per window. The counts themselves live with the state they count
//! (the location service, the transaction layer, the dialog table, the
//! trunk layer; see [`crate::caps`]).

use std::net::SocketAddr;
use std::time::Instant;

use super::core::Core;
use crate::caps::Cap;
use crate::sip::Header;
use crate::txn::{Endpoint, ServerId};

impl Core {
    /// Answers server transaction `key` with 503 and Retry-After: `src`
    /// is over `cap`.
    pub(super) fn refuse_cap(&mut self, txn: &mut Endpoint, key: ServerId, cap: Cap, src: SocketAddr, now: Instant) {
        self.metrics.cap_refused(cap);
        crate::warn_limited!(%src, cap = cap.label(), "request refused: over a cap");
        let retry = Header::new("Retry-After", &self.cfg.caps.retry_after_s.to_string());
        txn.reply(key, 503, "Service Unavailable - Over Capacity", vec![retry], now);
    }
}
