//! The SRTP policy (`media_security = "srtp"` on trunks and routes): which
//! requests it applies to and whether their SDP offer is secure. Where it
//! applies, an offer with a plain RTP stream is refused with 488; the
//! relay passes SRTP through untouched (it never sees the keys).
//!
//! It applies when the matched route says srtp, when the trunk a branch
//! goes to says so (that trunk is skipped, the next one tried), or when
//! the request comes from such a trunk; for a re-offer, when either side
//! of the dialog is such a trunk.

use std::time::Instant;

use crate::config::MediaSecurity;
use crate::sip::{Header, Message};
use crate::txn::{Endpoint, ServerId};

use super::core::Core;
use super::dialog::Peer;
use super::forward::Me;
use super::media::has_sdp;

/// Whether every active stream of an SDP body is SRTP: each `m=` line
/// with a port other than 0 uses `RTP/SAVP` or `RTP/SAVPF` with an
/// `a=crypto` line in its section, or `UDP/TLS/RTP/SAVP(F)` with an
/// `a=fingerprint` line (in its section or at session level). A body with
/// no active stream is not secure.
#[must_use]
pub fn offer_is_secure(sdp: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sdp);
    let mut session_fingerprint = false;
    // (protocol, port, has crypto, has fingerprint) per m= section.
    let mut sections: Vec<(String, u32, bool, bool)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_ascii_whitespace();
            let port = f.nth(1).and_then(|p| p.split('/').next()?.parse().ok()).unwrap_or(0);
            let proto = f.next().unwrap_or_default().to_ascii_uppercase();
            sections.push((proto, port, false, false));
        } else if line.starts_with("a=crypto:") {
            if let Some(s) = sections.last_mut() {
                s.2 = true;
            }
        } else if line.starts_with("a=fingerprint:") {
            match sections.last_mut() {
                Some(s) => s.3 = true,
                None => session_fingerprint = true,
            }
        }
    }
    let active: Vec<_> = sections.iter().filter(|s| s.1 != 0).collect();
    !active.is_empty()
        && active.iter().all(|(proto, _, crypto, fingerprint)| match proto.as_str() {
            "RTP/SAVP" | "RTP/SAVPF" => *crypto,
            "UDP/TLS/RTP/SAVP" | "UDP/TLS/RTP/SAVPF" => *fingerprint || session_fingerprint,
            _ => false,
        })
}

/// Whether `msg` carries an SDP body that is not secure.
pub(super) fn plain_offer(msg: &Message) -> bool {
    has_sdp(msg) && !offer_is_secure(&msg.body)
}

/// Whether the offer of a forward is plain (its offer as it came, before
/// the relay rewrote it); if so the forward notes a trunk was skipped.
pub(super) fn skip_plain(f: &mut super::fork::Forward) -> bool {
    let plain = f.offer().map_or_else(|| plain_offer(&f.request), |b| !offer_is_secure(b));
    f.skipped_srtp |= plain;
    plain
}

/// The Warning of a 488 for a plain offer where SRTP is required.
pub(super) fn warning(me: &Me) -> Header {
    Header::new("Warning", &format!("399 {} \"SRTP required\"", me.hostport()))
}

impl Core {
    /// Whether trunk `i` requires SRTP.
    pub(super) fn trunk_srtp(&self, i: Option<usize>) -> bool {
        i.and_then(|i| self.cfg.trunks.get(i)).is_some_and(|t| t.policy.media_security == MediaSecurity::Srtp)
    }

    /// Whether a request from `from` comes from a trunk that requires SRTP
    /// (the source must match the trunk's `sources`).
    pub(super) fn source_srtp(&self, from: &Peer) -> bool {
        self.trunk_srtp(self.cfg.trunk_at(from.addr.ip(), from.realm))
    }

    /// Answers a plain RTP offer where SRTP is required: 488 with a Warning.
    pub(super) fn refuse_plain_rtp(&self, txn: &mut Endpoint, key: ServerId, realm: usize, now: Instant) {
        tracing::debug!(?key, "offer refused: SRTP is required and the offer has a plain RTP stream");
        txn.reply(key, 488, "Not Acceptable Here", vec![warning(self.me(realm))], now);
    }

    /// Whether the route a request to `ruri` takes requires SRTP (the
    /// request is routed to trunks, not to a registered user).
    pub(super) fn route_srtp(&self, ruri: &crate::sip::Uri, to_trunks: bool) -> bool {
        to_trunks && super::routing::route_of(&self.cfg, ruri).is_some_and(|r| r.media_security == MediaSecurity::Srtp)
    }
}

#[cfg(test)]
mod tests {
    use super::offer_is_secure;

    const SDES: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
        m=audio 6000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";

    #[test]
    fn sdes_and_dtls_are_secure_plain_rtp_is_not() {
        assert!(offer_is_secure(SDES.as_bytes()));
        assert!(offer_is_secure(SDES.replace("RTP/SAVP ", "RTP/SAVPF ").as_bytes()));
        assert!(!offer_is_secure(SDES.replace("a=crypto", "a=x-crypto").as_bytes()), "SAVP without keys");
        assert!(!offer_is_secure(SDES.replace("RTP/SAVP", "RTP/AVP").as_bytes()), "crypto on plain RTP");
        let dtls = "v=0\r\na=fingerprint:sha-256 AB:CD\r\nm=audio 6000 UDP/TLS/RTP/SAVPF 111\r\na=setup:actpass\r\n";
        assert!(offer_is_secure(dtls.as_bytes()), "session-level fingerprint");
        assert!(!offer_is_secure(dtls.replace("a=fingerprint", "a=x").as_bytes()));
        let mixed = format!("{SDES}m=video 6002 RTP/AVP 96\r\n");
        assert!(!offer_is_secure(mixed.as_bytes()), "every active stream must be secure");
        let disabled = format!("{SDES}m=video 0 RTP/AVP 96\r\n");
        assert!(offer_is_secure(disabled.as_bytes()), "a disabled stream does not count");
        assert!(!offer_is_secure(b"v=0\r\n"), "no stream at all");
    }
}
