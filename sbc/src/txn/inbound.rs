//! Messages from the network into the transaction layer (RFC 3261
//! §17.1.3, §17.2.3, §18): parse and validation errors answered, Via
//! stamped, requests and responses matched to transactions by key, and
//! what matches nothing reported as an [`Event`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::endpoint::Server;
use super::{client_key, server_key, wire, Endpoint, Event, Kind, ServerId, ServerTxn};
use crate::caps::Cap;
use crate::sip::{Breach, Header, Message, Method};
use crate::transport::Inbound;

impl Endpoint {
    /// Handles one message from the network.
    ///
    /// Call [`admit`](Self::admit) first: the message limits are not
    /// checked again here.
    pub fn handle(&mut self, inbound: Inbound, now: Instant) {
        match Message::parse(&inbound.data) {
            Ok(msg) if msg.is_request() => self.on_request(msg, &inbound, now),
            Ok(msg) => self.on_response(msg, inbound.src, inbound.realm, now),
            Err(e) => {
                self.metrics.parse_errors.fetch_add(1, Relaxed);
                let reply =
                    e.response_code().and_then(|code| wire::raw_error_response(&inbound.data, code, &e.to_string()));
                match reply {
                    Some(r) => {
                        tracing::debug!(src = %inbound.src, error = %e, "unparseable request answered");
                        self.metrics.response(400);
                        self.send(r, inbound.src, inbound.proto, inbound.realm);
                    }
                    None => {
                        tracing::debug!(src = %inbound.src, error = %e, "unparseable message dropped");
                        self.metrics.dropped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }

    /// Checks a message from the network against the message limits
    /// before anything else sees it: `false` when it broke one, and was
    /// answered or dropped (and counted).
    pub fn admit(&mut self, inbound: &Inbound) -> bool {
        match self.limits.check(&inbound.data) {
            Ok(()) => true,
            Err(b) => {
                self.refuse(b, inbound);
                false
            }
        }
    }

    /// Answers a request that broke a limit (never an ACK or a response,
    /// nor one too broken to answer: those are dropped), and counts it.
    fn refuse(&mut self, b: Breach, inb: &Inbound) {
        self.metrics.limit_refused(b);
        let is_ack = inb.data.get(..4).is_some_and(|m| m.eq_ignore_ascii_case(b"ACK "));
        let (code, reason) = b.answer();
        let reply = (!is_ack).then(|| wire::raw_error_response(&inb.data, code, reason)).flatten();
        match reply {
            Some(r) => {
                tracing::debug!(src = %inb.src, limit = b.label(), "request over a limit refused");
                self.metrics.response(code);
                self.send(r, inb.src, inb.proto, inb.realm);
            }
            None => {
                tracing::debug!(src = %inb.src, limit = b.label(), "message over a limit dropped");
                self.metrics.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    fn on_request(&mut self, mut msg: Message, inb: &Inbound, now: Instant) {
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        self.metrics.request(method.as_str());
        if let Err(e) = crate::sip::validate_request(&msg) {
            match e.response_code() {
                Some(code) if method != Method::Ack => {
                    if let Some(r) = wire::raw_error_response(&inb.data, code, &e.to_string()) {
                        self.metrics.response(code);
                        self.send(r, inb.src, inb.proto, inb.realm);
                        return;
                    }
                    self.metrics.dropped.fetch_add(1, Relaxed);
                }
                _ => {
                    self.metrics.dropped.fetch_add(1, Relaxed);
                }
            }
            tracing::debug!(src = %inb.src, error = %e, "invalid request");
            return;
        }
        let Some(upstream) = wire::stamp_top_via(&mut msg, inb.src, inb.proto) else {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        let Some(via) = msg.top_via() else { return };
        let branch = via.branch().unwrap_or("");
        let sent_by = wire::sent_by(&via);
        let key = server_key(branch, &sent_by, method.as_str());
        tracing::debug!(%method, call_id = ?msg.call_id(), ?key, src = %inb.src, "request");

        let existing = self.server_ids.get(&key).copied();
        if method == Method::Ack {
            match existing.and_then(|id| Some((id, self.servers.get_mut(&id)?))) {
                Some((id, s)) => {
                    let actions = s.txn.on_ack(now);
                    self.run_server(id, actions);
                }
                None => self.events.push_back(Event::Ack { msg, src: inb.src, proto: inb.proto, realm: inb.realm }),
            }
            return;
        }
        if let Some((id, s)) = existing.and_then(|id| Some((id, self.servers.get_mut(&id)?))) {
            let actions = s.txn.on_request_retransmission(now);
            self.run_server(id, actions);
            return;
        }
        if self.accepted.get(&key).is_some_and(|until| *until > now) {
            // A retransmitted INVITE after its 2xx went up: the 2xx itself is
            // retransmitted end to end, so there is nothing to do.
            return;
        }
        let invite_key = (method == Method::Cancel).then(|| server_key(branch, &sent_by, "INVITE"));
        // A CANCEL of a transaction we hold frees state: never capped.
        let frees = invite_key.as_ref().is_some_and(|k| self.server_ids.contains_key(k));
        if !frees {
            if let Err(cap) = self.admit_server(inb.src.ip()) {
                self.refuse_cap(cap, inb, &msg);
                return;
            }
        }
        let txn = ServerTxn::new(Kind::for_method(method.as_str()), inb.proto.reliable(), self.cfg, now);
        let id = ServerId(self.next_id());
        let to_tag = self.unique();
        self.server_ids.insert(key.clone(), id);
        let request = msg.clone();
        let source = inb.src.ip();
        let server = Server {
            key,
            txn,
            upstream,
            proto: inb.proto,
            realm: inb.realm,
            request,
            to_tag,
            forwarded: false,
            source,
        };
        self.servers.insert(id, server);
        self.by_source.add(source);
        if method == Method::Invite {
            self.reply(id, 100, "Trying", Vec::new(), now);
        }
        if let Some(k) = invite_key {
            let invite = self.server_ids.get(&k).copied().filter(|i| self.servers.get(i).is_some_and(|s| s.forwarded));
            self.events.push_back(Event::Cancel { id, invite });
            return;
        }
        self.events.push_back(Event::Request { id, msg, src: inb.src, proto: inb.proto, realm: inb.realm });
    }

    /// Whether one more server transaction for a request from `ip` fits
    /// under `max_transactions_per_source` and `max_transactions`.
    fn admit_server(&self, ip: std::net::IpAddr) -> Result<(), Cap> {
        let limits = (self.caps.max_transactions, self.caps.max_transactions_per_source);
        self.by_source.admit(ip, 1, limits, (Cap::Transactions, Cap::TransactionsPerSource))
    }

    /// Answers a request over a transaction cap with 503 and Retry-After,
    /// statelessly (no transaction is made for it), and counts it.
    fn refuse_cap(&mut self, cap: Cap, inb: &Inbound, msg: &Message) {
        self.metrics.cap_refused(cap);
        crate::warn_limited!(src = %inb.src, cap = cap.label(), "request refused: over a transaction cap");
        let mut resp = msg.response_to(503, "Service Unavailable - Over Capacity");
        resp.insert_before_first("content-length", Header::new("Retry-After", &self.caps.retry_after_s.to_string()));
        self.metrics.response(503);
        self.send(resp.to_bytes(), inb.src, inb.proto, inb.realm);
    }

    fn on_response(&mut self, msg: Message, src: SocketAddr, realm: usize, now: Instant) {
        let parts = msg.validate().ok().and_then(|()| Some((msg.top_via()?, msg.cseq()?, msg.code()?)));
        let Some((via, (_, method), code)) = parts else {
            tracing::debug!(%src, "malformed response dropped");
            self.metrics.parse_errors.fetch_add(1, Relaxed);
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        let key = client_key(via.branch().unwrap_or(""), method.as_str());
        let found = self.client_ids.get(&key).copied();
        match found.and_then(|id| Some((id, self.clients.get_mut(&id)?))) {
            Some((id, c)) => {
                let actions = c.txn.on_response(code, now);
                self.run_client(id, actions, Some(msg));
            }
            None => self.events.push_back(Event::Stray { msg, realm }),
        }
    }
}
