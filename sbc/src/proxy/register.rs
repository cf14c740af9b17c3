//! The registrar (RFC 3261 §10.3): REGISTER for one of our domains updates
//! the location service and is answered with the current bindings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::caps::Cap;
use crate::config::Config;
use crate::location::{Binding, Location, UpdateError};
use crate::proxy::routing::local_aor;
use crate::sip::{Contact, Header, Message, NameAddr, Uri};
use crate::transport::Proto;

/// The registrar's answer: status, reason, and extra headers for the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// Status code.
    pub code: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// Headers to add (Contact list, Min-Expires, ...).
    pub headers: Vec<Header>,
}

/// A contact's expiry: its own `expires` parameter, else the request's
/// `Expires` header, else the registrar's default.
fn contact_expires(na: &NameAddr, header_expires: Option<u64>, cfg: &Config) -> u64 {
    na.params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("expires"))
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(header_expires)
        .unwrap_or(u64::from(cfg.default_expires))
}

fn refuse(code: u16, reason: &'static str) -> RegisterOutcome {
    RegisterOutcome { code, reason, headers: Vec::new() }
}

/// Handles a REGISTER that came from `src` over `proto`.
pub fn register(
    cfg: &Config,
    location: &mut Location,
    req: &Message,
    src: SocketAddr,
    proto: Proto,
    realm: usize,
    now: Instant,
) -> RegisterOutcome {
    let Some(to) = req.to() else { return refuse(400, "Bad Request - no To") };
    if !cfg.is_local_host(&to.uri.host, None) {
        return refuse(403, "Not Our Domain");
    }
    let aor = local_aor(cfg, to.uri.user.as_deref());
    let (Some(call_id), Some((cseq, _))) = (req.call_id(), req.cseq()) else {
        return refuse(400, "Bad Request");
    };
    let header_expires = match req.header("expires").map(str::trim) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => return refuse(400, "Bad Request - bad Expires"),
        },
    };
    let contacts = req.contacts();
    if contacts.iter().any(|c| matches!(c, Contact::Star)) {
        if contacts.len() != 1 || header_expires != Some(0) {
            return refuse(400, "Bad Request - '*' needs Expires: 0 and no other Contact");
        }
        location.remove_all(&aor, now);
        return RegisterOutcome { code: 200, reason: "OK", headers: Vec::new() };
    }
    for c in &contacts {
        let Contact::Addr(na) = c else { continue };
        let expires = contact_expires(na, header_expires, cfg);
        if expires > 0 && expires < u64::from(cfg.min_expires) {
            return RegisterOutcome {
                code: 423,
                reason: "Interval Too Brief",
                headers: vec![Header::new("Min-Expires", &cfg.min_expires.to_string())],
            };
        }
        let expires = expires.min(u64::from(cfg.max_expires));
        let q = na
            .params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| v.parse::<f32>().ok())
            .map_or(1000, |q| (q.clamp(0.0, 1.0) * 1000.0) as u16);
        let binding = Binding {
            contact: na.uri.to_string(),
            source: src,
            transport: proto.into(),
            call_id: call_id.to_owned(),
            cseq,
            expires_at: now,
            q,
            realm,
        };
        if let Err(UpdateError::OutOfOrder) = location.update(&aor, binding, Duration::from_secs(expires), now) {
            return refuse(500, "Server Internal Error - out-of-order REGISTER");
        }
    }
    let headers = location
        .lookup(&aor, now)
        .iter()
        .map(|b| Header::new("Contact", &format!("<{}>;expires={}", b.contact, b.remaining(now))))
        .collect();
    RegisterOutcome { code: 200, reason: "OK", headers }
}

/// Checks a REGISTER against the registration caps before it is applied:
/// the contacts it would add (not refreshes of bindings already there,
/// nor removals) must fit under `max_contacts_per_aor` for its AOR,
/// `max_registrations_per_source` for `src`'s address and
/// `max_registrations` in all. Anything malformed passes: [`register`]
/// answers it.
///
/// # Errors
/// The cap the REGISTER would break.
pub fn check_caps(cfg: &Config, location: &Location, req: &Message, src: SocketAddr, now: Instant) -> Result<(), Cap> {
    let Some(to) = req.to() else { return Ok(()) };
    let aor = local_aor(cfg, to.uri.user.as_deref());
    let header_expires = req.header("expires").and_then(|v| v.trim().parse::<u64>().ok());
    let adds = req
        .contacts()
        .into_iter()
        .filter_map(|c| match c {
            Contact::Addr(na) => Some(na),
            Contact::Star => None,
        })
        .filter(|na| {
            let expires = contact_expires(na, header_expires, cfg);
            expires > 0 && !location.has_contact(&aor, &na.uri.to_string(), now)
        })
        .count();
    if adds == 0 {
        return Ok(());
    }
    let caps = &cfg.caps;
    if location.lookup(&aor, now).len() + adds > caps.max_contacts_per_aor {
        return Err(Cap::ContactsPerAor);
    }
    if location.from_source(src.ip()) + adds > caps.max_registrations_per_source {
        return Err(Cap::RegistrationsPerSource);
    }
    if location.len() + adds > caps.max_registrations {
        return Err(Cap::Registrations);
    }
    Ok(())
}

/// Whether the authenticated `user` owns the address-of-record of `req`
/// (its To URI's user part; the domain is checked by [`register`]).
#[must_use]
pub fn owns(req: &Message, user: &str) -> bool {
    req.to().is_some_and(|t| t.uri.user.as_deref() == Some(user))
}

/// Parses a Contact URI for display in logs (never panics).
#[must_use]
pub fn contact_host(uri: &str) -> String {
    Uri::parse(uri).map(|u| u.host).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(contact: &str, expires: Option<&str>, cseq: u32) -> Message {
        let exp = expires.map(|e| format!("Expires: {e}\r\n")).unwrap_or_default();
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.1:5062;branch=z9hG4bKr{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=r\r\nTo: <sip:alice@127.0.0.1>\r\n\
             Call-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\n{exp}Content-Length: 0\r\n\r\n"
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn register_refresh_query_and_unregister() {
        let cfg = Config::embedded_default().unwrap();
        let mut loc = Location::new();
        let now = Instant::now();
        let src: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let r = register(&cfg, &mut loc, &reg("<sip:alice@10.1.1.1:5062>", Some("300"), 1), src, Proto::Udp, 0, now);
        assert_eq!(r.code, 200);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].value(), "<sip:alice@10.1.1.1:5062>;expires=300");
        let aor = local_aor(&cfg, Some("alice"));
        assert_eq!(loc.lookup(&aor, now)[0].source, src, "NAT: the source address is recorded");
        // Contact expires param overrides the header; too short gets 423.
        let r = register(&cfg, &mut loc, &reg("<sip:alice@10.1.1.2>;expires=10", None, 2), src, Proto::Udp, 0, now);
        assert_eq!((r.code, r.headers[0].value()), (423, "60"));
        // Over max is clamped.
        let r = register(&cfg, &mut loc, &reg("<sip:alice@10.1.1.1:5062>", Some("999999"), 3), src, Proto::Udp, 0, now);
        assert_eq!(r.headers[0].value(), "<sip:alice@10.1.1.1:5062>;expires=7200");
        // '*' with Expires: 0 removes all; without it is an error.
        assert_eq!(register(&cfg, &mut loc, &reg("*", None, 4), src, Proto::Udp, 0, now).code, 400);
        assert_eq!(register(&cfg, &mut loc, &reg("*", Some("0"), 5), src, Proto::Udp, 0, now).code, 200);
        assert!(loc.lookup(&aor, now).is_empty());
    }
}
