//! AlternatePath: a primary proxy advertises its backups in the Via and
//! Record-Route it inserts (`;alternatePath="host:port,host:port"`, quoted
//! so commas do not split the header). A sender whose next hop carries the
//! parameter resends to the alternates when that hop fails; a backup that
//! finds itself in a primary's list treats the primary's entries as its own
//! and rewrites them, so the rest of the dialog runs through it. Peers that
//! do not know the parameter ignore it (RFC 3261 unknown parameters).

use std::net::{IpAddr, SocketAddr};

use super::forward::Me;
use crate::sip::{Header, Message, NameAddr, Params, Via};
use crate::transport::Proto;

/// The parameter name.
pub const PARAM: &str = "alternatePath";

/// The `alternatePath` parameter value (quoted) for a list of backups.
#[must_use]
pub fn param_value(backups: &[String]) -> String {
    format!("\"{}\"", backups.join(","))
}

fn list(params: &Params) -> Vec<String> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(PARAM))
        .and_then(|(_, v)| v.as_deref())
        .map(|v| v.trim_matches('"').split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Resolves `host[:port]` entries that are IP literals (no DNS here).
#[must_use]
pub fn addresses(params: &Params) -> Vec<SocketAddr> {
    list(params)
        .iter()
        .filter_map(|e| {
            if let Ok(a) = e.parse::<SocketAddr>() {
                return Some(a);
            }
            match e.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, 5060)),
                Err(_) => {
                    tracing::debug!(entry = %e, "alternatePath entry is not an IP address; skipped");
                    None
                }
            }
        })
        .collect()
}

/// Whether an entry with these params lists us as an alternate.
#[must_use]
pub fn lists_me(me: &Me, params: &Params) -> bool {
    addresses(params).iter().any(|a| a.ip() == me.addr && a.port() == me.port)
}

/// Whether a Via names us, directly or as a primary's alternate.
#[must_use]
pub fn via_is_ours(me: &Me, v: &Via) -> bool {
    me.is(&v.host, v.port) || lists_me(me, &v.params)
}

/// Whether a Route entry names us, directly or as a primary's alternate.
#[must_use]
pub fn route_is_ours(me: &Me, r: &NameAddr) -> bool {
    me.is(&r.uri.host, r.uri.port) || lists_me(me, &r.params) || lists_me(me, &r.uri.params)
}

/// Removes the Route entries at the top that name us. Returns how many.
pub fn strip_own_routes(me: &Me, msg: &mut Message) -> usize {
    let mut n = 0;
    while let Some(r) = msg.routes().first().cloned() {
        if !route_is_ours(me, &r) {
            break;
        }
        msg.remove_first_value("route");
        n += 1;
    }
    n
}

/// As a backup: Record-Route entries that list us as an alternate (the
/// primary's) are replaced by our own, so later requests come to us.
pub fn adopt_record_routes(me: &Me, msg: &mut Message, proto: Proto) {
    let rrs = msg.record_routes();
    if !rrs.iter().any(|r| lists_me(me, &r.params)) {
        return;
    }
    let rewritten: Vec<String> =
        rrs.iter().map(|r| if lists_me(me, &r.params) { me.record_route(proto) } else { r.to_string() }).collect();
    msg.remove_all("record-route");
    // Re-insert in the same order, above the first header that followed them.
    for v in rewritten.iter().rev() {
        msg.insert_before_first("record-route", Header::new("Record-Route", v));
    }
    if msg.header("record-route").is_none() {
        for v in &rewritten {
            msg.push_header(Header::new("Record-Route", v));
        }
    }
}

/// Where a request goes by its headers alone: the first Route, else the
/// Request-URI (IP literals only), with the transport it asks for.
#[must_use]
pub fn next_hop(msg: &Message) -> Option<(SocketAddr, Proto, Vec<SocketAddr>)> {
    let (uri, alts) = match msg.routes().first() {
        Some(r) => (r.uri.clone(), addresses(&r.params)),
        None => (crate::sip::Uri::parse(msg.request_uri()?).ok()?, Vec::new()),
    };
    let ip: IpAddr = uri.host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    let sips = uri.scheme.eq_ignore_ascii_case("sips");
    let proto = match uri.param("transport").flatten().and_then(Proto::from_name) {
        Some(p) => p,
        None if sips => Proto::Tls,
        None => Proto::Udp,
    };
    let default_port = if proto == Proto::Tls { 5061 } else { 5060 };
    Some((SocketAddr::new(ip, uri.port.unwrap_or(default_port)), proto, alts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(ip: &str) -> Me {
        Me { addr: ip.parse().unwrap(), port: 5060, tls_port: None, alternate: None, ours: Vec::new() }
    }

    #[test]
    fn params_and_identity() {
        let v = Via::parse(
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;alternatePath=\"127.0.0.2:5060,backup.example.net\"",
        )
        .unwrap();
        assert_eq!(addresses(&v.params), vec!["127.0.0.2:5060".parse().unwrap()]);
        assert!(via_is_ours(&me("127.0.0.1"), &v), "the primary itself");
        assert!(via_is_ours(&me("127.0.0.2"), &v), "the backup finds itself in the list");
        assert!(!via_is_ours(&me("127.0.0.3"), &v));
        assert_eq!(param_value(&["a:1".into(), "b".into()]), "\"a:1,b\"");
    }

    #[test]
    fn backup_rewrites_record_route_and_strips_routes() {
        let text = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKp;alternatePath=\"127.0.0.2:5060\"\r\n\
            Via: SIP/2.0/UDP 127.0.0.9:5071;branch=z9hG4bKu\r\n\
            Record-Route: <sip:127.0.0.3:5060;lr>\r\n\
            Record-Route: <sip:127.0.0.1:5060;lr>;alternatePath=\"127.0.0.2:5060\"\r\n\
            From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nX-Keep: yes\r\nContent-Length: 0\r\n\r\n";
        let mut m = Message::parse(text.as_bytes()).unwrap();
        let b = me("127.0.0.2");
        adopt_record_routes(&b, &mut m, Proto::Udp);
        assert_eq!(m.header_values("record-route"), vec!["<sip:127.0.0.3:5060;lr>", "<sip:127.0.0.2:5060;lr>"]);
        assert!(String::from_utf8(m.to_bytes()).unwrap().contains("X-Keep: yes\r\n"));
        let req = "BYE sip:a@127.0.0.9:5071 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKs\r\n\
            Route: <sip:127.0.0.1:5060;lr>;alternatePath=\"127.0.0.2:5060\"\r\nMax-Forwards: 70\r\n\
            From: <sip:b@y>;tag=2\r\nTo: <sip:a@x>;tag=1\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let mut r = Message::parse(req.as_bytes()).unwrap();
        assert_eq!(strip_own_routes(&b, &mut r), 1, "the primary's Route entry is the backup's own");
        let (dest, proto, alts) = next_hop(&r).unwrap();
        assert_eq!((dest, proto), ("127.0.0.9:5071".parse().unwrap(), Proto::Udp));
        assert!(alts.is_empty());
    }
}
