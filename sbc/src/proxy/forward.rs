//! Building the requests the call layer forwards (RFC 3261 §16.6): our
//! identity ([`Me`]) as it appears in Via and Record-Route, and each
//! branch's copy of a request (Request-URI, Max-Forwards, Via,
//! Record-Route). The hop-by-hop ACK and CANCEL are the transaction
//! layer's (`crate::txn::wire`).

use std::net::IpAddr;

use crate::sip::{Contact, Header, Message};
use crate::transport::Proto;

/// Our address in one realm, as it appears in Via, Record-Route and
/// Contact there.
#[derive(Debug, Clone)]
pub struct Me {
    /// Advertised address.
    pub addr: IpAddr,
    /// SIP port.
    pub port: u16,
    /// SIP over TLS port in this realm, when served.
    pub tls_port: Option<u16>,
    /// The quoted `alternatePath` value to advertise, when enabled.
    pub alternate: Option<String>,
    /// Every address and port that names this sbc in any realm (listen and
    /// advertised): a Route or Via naming one of them is ours.
    pub ours: Vec<(IpAddr, u16)>,
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
        let port = port.unwrap_or(5060);
        h.parse::<IpAddr>().is_ok_and(|ip| (ip == self.addr && port == self.port) || self.ours.contains(&(ip, port)))
    }

    /// `host:port` where we are reached over `proto` (TLS has its own
    /// port; 5061 when this realm serves none).
    #[must_use]
    pub fn hostport_for(&self, proto: Proto) -> String {
        match proto {
            Proto::Tls => Me { port: self.tls_port.unwrap_or(5061), ..self.clone() }.hostport(),
            Proto::Udp | Proto::Tcp => self.hostport(),
        }
    }

    /// Our Contact URI in this realm for a user part (a Contact we hide).
    #[must_use]
    pub fn contact_uri(&self, user: Option<&str>, proto: Proto) -> String {
        let user = user.map(|u| format!("{u}@")).unwrap_or_default();
        format!("sip:{user}{}{}", self.hostport_for(proto), proto.uri_param())
    }

    /// Our Record-Route value for a transport.
    #[must_use]
    pub fn record_route(&self, proto: Proto) -> String {
        let uri = format!("<sip:{}{};lr>", self.hostport_for(proto), proto.uri_param());
        match &self.alternate {
            Some(a) => format!("{uri};{}={a}", super::alternate::PARAM),
            None => uri,
        }
    }
}

/// How a branch crosses the sbc: our address on each side, and whether
/// the two sides are different realms (then the other realm's topology is
/// hidden: only our Via goes on, and the Contact names us).
pub struct Crossing<'a> {
    /// Our identity on the side the request came from.
    pub me_in: &'a Me,
    /// Our identity on the side it goes to.
    pub me_out: &'a Me,
    /// The transport it came over.
    pub in_proto: Proto,
    /// The transport it leaves over.
    pub out_proto: Proto,
    /// The request leaves through another realm than it came from.
    pub hide: bool,
}

/// Prepares a request for one branch: new Request-URI, Max-Forwards
/// decremented (70 when absent), our Via on top, and Record-Route when
/// `record_route` (double when the two legs use different transports or
/// realms). Across realms, the Vias below ours are removed (the server
/// transaction keeps them for the responses) and the Contact is ours.
pub fn branch_request(
    req: &Message,
    x: &Crossing<'_>,
    branch: &str,
    ruri: Option<&str>,
    record_route: bool,
) -> Message {
    let mut m = req.clone();
    if let Some(u) = ruri {
        m.set_request_uri(u);
    }
    let mf = m.max_forwards().map_or(70, |v| v.saturating_sub(1));
    m.set_header("max-forwards", &mf.to_string());
    if record_route {
        // Across realms, each realm sees only our entry for it: the
        // responses going back get the other realm's in its place
        // (`own_record_routes`).
        if (x.in_proto == x.out_proto) || x.hide {
            m.insert_before_first("record-route", Header::new("Record-Route", &x.me_out.record_route(x.out_proto)));
        } else {
            m.insert_before_first("record-route", Header::new("Record-Route", &x.me_in.record_route(x.in_proto)));
            m.insert_before_first("record-route", Header::new("Record-Route", &x.me_out.record_route(x.out_proto)));
        }
    }
    if x.hide {
        m.remove_all("via");
        hide_contact(&mut m, x.me_out, x.out_proto);
    }
    let me = x.me_out;
    let mut via = format!("SIP/2.0/{} {};branch={branch};rport", x.out_proto.via_name(), me.hostport_for(x.out_proto));
    if let Some(a) = &me.alternate {
        via.push_str(&format!(";{}={a}", super::alternate::PARAM));
    }
    m.insert_before_first("via", Header::new("Via", &via));
    m
}

/// Makes every Record-Route entry that names us (in any realm) name us
/// as `me` over `proto`: a response going back into another realm than
/// the one its request went to shows that realm only our address there.
pub fn own_record_routes(m: &mut Message, me: &Me, proto: Proto) {
    let rrs = m.record_routes();
    if !rrs.iter().any(|r| me.is(&r.uri.host, r.uri.port)) {
        return;
    }
    let values: Vec<String> = rrs
        .iter()
        .map(|r| if me.is(&r.uri.host, r.uri.port) { me.record_route(proto) } else { r.to_string() })
        .collect();
    m.remove_all("record-route");
    for v in values.iter().rev() {
        m.push_header_front(Header::new("Record-Route", v));
    }
}

/// A response going back into the realm its request came from, when that
/// request crossed realms: the Vias it came with (`vias`, top first) in
/// place of whatever is left, our Record-Route and Contact in that realm
/// (`me`, over `proto`). Without `vias` (a dialog taken over from the HA
/// peer does not have them), the Vias are left as they are. Returns the
/// far side's own Contact URI it hid.
pub fn back_across(resp: &mut Message, vias: &[&str], me: &Me, proto: Proto) -> Option<String> {
    if !vias.is_empty() {
        resp.remove_all("via");
        for v in vias.iter().rev() {
            resp.push_header_front(Header::new("Via", v));
        }
    }
    own_record_routes(resp, me, proto);
    hide_contact(resp, me, proto)
}

/// Replaces the (first) Contact's URI with ours in `me`'s realm, keeping
/// its user part, display name and header parameters. Returns the URI it
/// replaced. `*` and messages without a Contact are left alone.
pub fn hide_contact(m: &mut Message, me: &Me, proto: Proto) -> Option<String> {
    let Some(Contact::Addr(mut na)) = m.contacts().into_iter().next() else { return None };
    let original = na.uri.to_string();
    let ours = me.contact_uri(na.uri.user.as_deref(), proto);
    na.uri = crate::sip::Uri::parse(&ours).ok()?;
    m.set_header("contact", &na.to_string());
    Some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sip::TEST_INVITE as INVITE;

    #[test]
    fn branch_request_adds_via_rr_and_decrements() {
        let m = Message::parse(INVITE.as_bytes()).unwrap();
        let me =
            Me { addr: "127.0.0.1".parse().unwrap(), port: 5060, tls_port: None, alternate: None, ours: Vec::new() };
        let x = Crossing { me_in: &me, me_out: &me, in_proto: Proto::Udp, out_proto: Proto::Tcp, hide: false };
        let out = branch_request(&m, &x, "z9hG4bKxs1", Some("sip:bob@127.0.0.1:5070"), true);
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
        let x = Crossing { me_in: &me, me_out: &me, in_proto: Proto::Udp, out_proto: Proto::Udp, hide: false };
        let out = branch_request(&m, &x, "z9hG4bKxs2", None, true);
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
