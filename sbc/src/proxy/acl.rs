//! The source ACL gate in front of the transaction layer: each message's
//! source is checked against its realm's `allow`/`deny` prefixes (a
//! trunk's `sources` count as allowed) before anything is parsed or any
//! state is made, so a denied source costs nothing but a counter. A denied
//! request is answered with a stateless 403 or dropped (`acl_action`); an
//! ACK and a response never get an answer. Denials are logged at debug,
//! and at info at most once per [`INFO_EVERY`] per realm with the count.

use std::time::{Duration, Instant};

use crate::config::{AclAction, Config};
use crate::metrics::SbcMetrics;
use crate::transport::Inbound;
use crate::txn::wire;

/// The shortest interval between two info lines about denials in one realm.
pub const INFO_EVERY: Duration = Duration::from_secs(10);

/// What to do with a message from the network.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// On to the transaction layer.
    Pass,
    /// Denied: nothing is sent back.
    Drop,
    /// Denied: this 403 goes back to the source.
    Reject(Vec<u8>),
}

/// Per-realm state of the info log rate limit.
#[derive(Debug, Default, Clone, Copy)]
struct LogState {
    last_info: Option<Instant>,
    since: u64,
}

/// The ACL gate (owned by the signaling thread, inside the `Proxy`).
#[derive(Debug, Default)]
pub(super) struct Gate {
    log: Vec<LogState>,
}

impl Gate {
    /// The verdict on `inbound` at `now`; a denial is counted and logged.
    pub(super) fn check(&mut self, cfg: &Config, metrics: &SbcMetrics, inbound: &Inbound, now: Instant) -> Verdict {
        let Some(acl) = cfg.acls.get(inbound.realm).filter(|a| !a.is_open()) else { return Verdict::Pass };
        let ip = inbound.src.ip();
        if acl.permits(ip, cfg.trunk_at(ip, inbound.realm).is_some()) {
            return Verdict::Pass;
        }
        metrics.acl_denied(inbound.realm);
        let answerable = is_answerable_request(&inbound.data);
        let verdict = match acl.action {
            AclAction::Reject if answerable => {
                wire::raw_error_response(&inbound.data, 403, "Forbidden").map_or(Verdict::Drop, Verdict::Reject)
            }
            _ => Verdict::Drop,
        };
        let realm = cfg.realms.get(inbound.realm).map_or("?", |r| r.name.as_str());
        tracing::debug!(src = %inbound.src, realm, answered = matches!(verdict, Verdict::Reject(_)), "source denied by ACL");
        if self.log.len() <= inbound.realm {
            self.log.resize(inbound.realm + 1, LogState::default());
        }
        let st = &mut self.log[inbound.realm];
        st.since += 1;
        if st.last_info.is_none_or(|t| now.saturating_duration_since(t) >= INFO_EVERY) {
            tracing::info!(src = %inbound.src, realm, denied = st.since, "messages from sources denied by the ACL");
            st.last_info = Some(now);
            st.since = 0;
        }
        if matches!(verdict, Verdict::Reject(_)) {
            metrics.response(403);
        }
        verdict
    }
}

/// Whether bytes look like a request that may be answered: not a
/// response, not an ACK, not a keepalive.
fn is_answerable_request(data: &[u8]) -> bool {
    let start = data.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &data[i..]);
    !start.is_empty() && !start.starts_with(b"SIP/") && !start.starts_with(b"ACK ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_other_than_ack_are_answerable() {
        assert!(is_answerable_request(b"INVITE sip:x SIP/2.0\r\n"));
        assert!(is_answerable_request(b"OPTIONS sip:x SIP/2.0\r\n"));
        assert!(!is_answerable_request(b"ACK sip:x SIP/2.0\r\n"));
        assert!(!is_answerable_request(b"SIP/2.0 200 OK\r\n"));
        assert!(!is_answerable_request(b"\r\n\r\n"));
    }
}
