//! The SIP a transaction layer builds and reads itself (RFC 3261 §17,
//! §18): the `received`/`rport` stamp on an incoming top Via and where its
//! responses go (RFC 3581), the hop-by-hop ACK and the CANCEL of a client
//! INVITE, the sent-by part of a server key, and a best-effort error
//! response for bytes that did not parse.

use std::net::{IpAddr, SocketAddr};

use crate::sip::{Header, Message, Via};
use crate::transport::Proto;

/// The sent-by of a Via as it goes into a server transaction key:
/// `host:port`, the port defaulting to 5060.
#[must_use]
pub fn sent_by(v: &Via) -> String {
    format!("{}:{}", v.host, v.port.unwrap_or(5060))
}

/// Applies `received` and `rport` (RFC 3581) to the top Via of a request
/// that came from `src`, and returns where responses go.
pub fn stamp_top_via(msg: &mut Message, src: SocketAddr, proto: Proto) -> Option<SocketAddr> {
    let mut via = msg.top_via()?;
    let has_rport = via.rport().is_some();
    let sent_by_ip = via.host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    let mut changed = false;
    if sent_by_ip != Some(src.ip()) || has_rport {
        via.set_param("received", Some(&src.ip().to_string()));
        changed = true;
    }
    if has_rport {
        via.set_param("rport", Some(&src.port().to_string()));
        changed = true;
    }
    if changed {
        msg.remove_first_value("via");
        msg.insert_before_first("via", Header::new("Via", &via.to_string()));
    }
    Some(response_dest(&via, src, proto))
}

/// Where a response to a request with this top Via goes.
#[must_use]
pub fn response_dest(via: &Via, src: SocketAddr, proto: Proto) -> SocketAddr {
    if proto.reliable() {
        return src;
    }
    let ip = via
        .received()
        .and_then(|v| v.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok())
        .or_else(|| via.host.trim_start_matches('[').trim_end_matches(']').parse().ok())
        .unwrap_or(src.ip());
    SocketAddr::new(ip, via.rport().flatten().or(via.port).unwrap_or(5060))
}

/// The hop-by-hop ACK for a non-2xx final response to an INVITE we sent
/// (RFC 3261 17.1.1.3): same Request-URI, top Via, Route set, Call-ID, From
/// and CSeq number; the response's To.
#[must_use]
pub fn ack_for(invite: &Message, response: &Message) -> Option<Vec<u8>> {
    hop_request(invite, "ACK", response.header("to")?)
}

/// A CANCEL for an INVITE we sent (RFC 3261 9.1).
#[must_use]
pub fn cancel_for(invite: &Message) -> Option<Vec<u8>> {
    hop_request(invite, "CANCEL", invite.header("to")?)
}

fn hop_request(invite: &Message, method: &str, to: &str) -> Option<Vec<u8>> {
    let ruri = match &invite.start {
        crate::sip::StartLine::Request { uri, .. } => uri.clone(),
        crate::sip::StartLine::Response { .. } => return None,
    };
    let via = invite.top_via()?;
    let (cseq, _) = invite.cseq()?;
    let mut s = format!("{method} {ruri} SIP/2.0\r\nVia: {via}\r\n");
    for r in invite.header_values("route") {
        s.push_str("Route: ");
        s.push_str(r);
        s.push_str("\r\n");
    }
    s.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        invite.header("from")?,
        invite.call_id()?,
    ));
    Some(s.into_bytes())
}

/// Builds a best-effort error response from raw bytes that did not parse,
/// copying Via, From, To, Call-ID and CSeq lines verbatim. `None` when any
/// of them is missing (then the message is dropped and counted).
#[must_use]
pub fn raw_error_response(data: &[u8], code: u16, reason: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    if first.starts_with("SIP/") {
        return None; // never answer a response
    }
    let want = [("via", "v"), ("from", "f"), ("to", "t"), ("call-id", "i"), ("cseq", "")];
    let mut picked: Vec<&str> = Vec::new();
    let mut found = [false; 5];
    for l in lines {
        let Some((name, _)) = l.split_once(':') else { continue };
        let n = name.trim().to_ascii_lowercase();
        for (i, (full, short)) in want.iter().enumerate() {
            if n == *full || (!short.is_empty() && n == *short) {
                if i == 0 || !found[i] {
                    picked.push(l);
                }
                found[i] = true;
            }
        }
    }
    if found.iter().any(|f| !f) {
        return None;
    }
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for l in picked {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    Some(s.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sip::TEST_INVITE as INVITE;

    #[test]
    fn via_stamping_and_response_destination() {
        let mut m = Message::parse(INVITE.as_bytes()).unwrap();
        let src: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let dest = stamp_top_via(&mut m, src, Proto::Udp).unwrap();
        assert_eq!(dest, src, "rport: answer to the source port");
        let v = m.top_via().unwrap();
        assert_eq!(v.received(), Some("192.0.2.7"));
        assert_eq!(v.rport(), Some(Some(40000)));
        assert!(String::from_utf8(m.to_bytes()).unwrap().contains("X-Unknown:   keep  me \r\n"));
    }

    #[test]
    fn ack_and_cancel() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let resp = Message::parse(
            b"SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP 10.0.0.5:5071;branch=z9hG4bK-1\r\nFrom: <sip:alice@x>;tag=a1\r\n\
              To: <sip:bob@127.0.0.1>;tag=b9\r\nCall-ID: c1@x\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let ack = Message::parse(&ack_for(&m, &resp).unwrap()).unwrap();
        assert_eq!(ack.cseq().map(|c| c.0), Some(7));
        assert_eq!(ack.to_tag().as_deref(), Some("b9"));
        assert_eq!(ack.top_via().unwrap().branch(), Some("z9hG4bK-1"));
        let cancel = Message::parse(&cancel_for(&m).unwrap()).unwrap();
        assert_eq!(cancel.to_tag(), None);
        assert!(matches!(cancel.method(), Some(crate::sip::Method::Cancel)));
    }

    #[test]
    fn raw_error_response_copies_the_key_headers() {
        let bad = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a>;tag=1\r\nTo: <sip:b>\r\n\
                    Call-ID: q\r\nCSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\n";
        let r = String::from_utf8(raw_error_response(bad, 400, "Bad Request").unwrap()).unwrap();
        assert!(r.starts_with("SIP/2.0 400 Bad Request\r\n"));
        assert!(r.contains("f: <sip:a>;tag=1\r\n") && r.contains("CSeq: 1 INVITE\r\n"));
        assert!(raw_error_response(b"SIP/2.0 200 OK\r\n\r\n", 400, "x").is_none());
        assert!(raw_error_response(b"INVITE x SIP/2.0\r\nVia: a\r\n\r\n", 400, "x").is_none());
    }
}
