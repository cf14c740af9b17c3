//! Building the requests the call layer forwards (RFC 3261 §16.6): our
//! identity ([`Me`]) as it appears in Via and Record-Route, and each
//! branch's copy of a request (Request-URI, Max-Forwards, Via,
//! Record-Route). The hop-by-hop ACK and CANCEL are the transaction
//! layer's (`crate::txn::wire`).

use std::net::IpAddr;

use crate::sip::{Header, Message};
use crate::transport::Proto;

/// Our address as it appears in Via and Record-Route.
#[derive(Debug, Clone)]
pub struct Me {
    /// Advertised address.
    pub addr: IpAddr,
    /// SIP port.
    pub port: u16,
    /// The quoted `alternatePath` value to advertise, when enabled.
    pub alternate: Option<String>,
}

impl Me {
    /// `host:port` with IPv6 brackets.
    #[must_use]
    pub fn hostport(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }

    /// Whether a URI host/port names us.
    #[must_use]
    pub fn is(&self, host: &str, port: Option<u16>) -> bool {
        let h = host.trim_start_matches('[').trim_end_matches(']');
        h.parse::<IpAddr>().is_ok_and(|ip| ip == self.addr) && port.unwrap_or(5060) == self.port
    }

    /// Our Record-Route value for a transport.
    #[must_use]
    pub fn record_route(&self, proto: Proto) -> String {
        let uri = match proto {
            Proto::Udp => format!("<sip:{};lr>", self.hostport()),
            Proto::Tcp => format!("<sip:{};transport=tcp;lr>", self.hostport()),
        };
        match &self.alternate {
            Some(a) => format!("{uri};{}={a}", super::alternate::PARAM),
            None => uri,
        }
    }
}

/// Prepares a request for one branch: new Request-URI, Max-Forwards
/// decremented (70 when absent), our Via on top, and Record-Route when
/// `record_route` (double when the two legs use different transports).
pub fn branch_request(
    req: &Message,
    me: &Me,
    branch: &str,
    ruri: Option<&str>,
    in_proto: Proto,
    out_proto: Proto,
    record_route: bool,
) -> Message {
    let mut m = req.clone();
    if let Some(u) = ruri {
        m.set_request_uri(u);
    }
    let mf = m.max_forwards().map_or(70, |v| v.saturating_sub(1));
    m.set_header("max-forwards", &mf.to_string());
    if record_route {
        if in_proto == out_proto {
            m.insert_before_first("record-route", Header::new("Record-Route", &me.record_route(out_proto)));
        } else {
            m.insert_before_first("record-route", Header::new("Record-Route", &me.record_route(in_proto)));
            m.insert_before_first("record-route", Header::new("Record-Route", &me.record_route(out_proto)));
        }
    }
    let mut via = format!("SIP/2.0/{} {};branch={branch};rport", out_proto.via_name(), me.hostport());
    if let Some(a) = &me.alternate {
        via.push_str(&format!(";{}={a}", super::alternate::PARAM));
    }
    m.insert_before_first("via", Header::new("Via", &via));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sip::TEST_INVITE as INVITE;

    #[test]
    fn branch_request_adds_via_rr_and_decrements() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let me = Me { addr: "127.0.0.1".parse().unwrap(), port: 5060, alternate: None };
        let out = branch_request(&m, &me, "z9hG4bKxs1", Some("sip:bob@127.0.0.1:5070"), Proto::Udp, Proto::Tcp, true);
        let text = String::from_utf8(out.to_bytes()).unwrap();
        assert!(text.starts_with("INVITE sip:bob@127.0.0.1:5070 SIP/2.0\r\n"), "{text}");
        let vias = out.vias();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].branch(), Some("z9hG4bKxs1"));
        assert_eq!(vias[0].transport, "TCP");
        assert_eq!(out.max_forwards(), Some(69));
        let rr = out.header_values("record-route");
        assert_eq!(rr, vec!["<sip:127.0.0.1:5060;transport=tcp;lr>", "<sip:127.0.0.1:5060;lr>"]);
        assert!(text.contains("X-Unknown:   keep  me \r\n"), "untouched headers byte for byte");
        // As a primary with AlternatePath on, Via and Record-Route advertise the backups.
        let me = Me { alternate: Some(super::super::alternate::param_value(&["127.0.0.2:5060".into()])), ..me };
        let out = branch_request(&m, &me, "z9hG4bKxs2", None, Proto::Udp, Proto::Udp, true);
        let text = String::from_utf8(out.to_bytes()).unwrap();
        assert!(
            text.contains(
                "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKxs2;rport;alternatePath=\"127.0.0.2:5060\"\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("Record-Route: <sip:127.0.0.1:5060;lr>;alternatePath=\"127.0.0.2:5060\"\r\n"), "{text}");
    }
}
