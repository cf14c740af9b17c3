//! The transaction layer of the proxy (RFC 3261 §17, §18), sans I/O: the
//! [`Endpoint`] owns every server and client transaction, keyed by
//! [`TxnKey`] (branch, sent-by, method) and handed to the layer above as
//! typed handles ([`ServerId`], [`ClientId`]).
//!
//! - Network input ([`Endpoint::handle`]) and timers ([`Endpoint::on_timer`])
//!   take `now`. Parse and request validation errors are answered here;
//!   retransmitted requests, ACKs for non-2xx responses and retransmitted
//!   responses are absorbed here; CANCEL is matched to its INVITE.
//! - What the call layer must act on comes out of
//!   [`Endpoint::poll_event`] as an [`Event`].
//! - The call layer's commands are [`Endpoint::respond`],
//!   [`Endpoint::reply`], [`Endpoint::start_client`],
//!   [`Endpoint::cancel`] and [`Endpoint::send`] (stateless).
//! - Datagrams to send pile up until [`Endpoint::drain_output`]; what the
//!   transport could not deliver comes back through
//!   [`Endpoint::transport_error`] (RFC 3261 §17.1.4, §18.4).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::event::{ClientId, ClientRequest, Event, Failure, ServerId};
use super::wire;
use super::{client_key, ClientAction, ClientState, ClientTxn, Kind, ServerAction, ServerTxn, TimerConfig, TxnKey};
use crate::metrics::SbcMetrics;
use crate::sip::{Header, Message, Method};
use crate::transport::{Outbound, Proto};

/// A server transaction and what answering through it needs.
pub(super) struct Server {
    pub(super) key: TxnKey,
    pub(super) txn: ServerTxn,
    /// Where responses go (RFC 3261 §18.2.2, RFC 3581).
    pub(super) upstream: SocketAddr,
    pub(super) proto: Proto,
    /// The realm the request came in on: responses leave from it.
    pub(super) realm: usize,
    pub(super) request: Message,
    /// Our To-tag for local answers above 100.
    pub(super) to_tag: String,
    /// The call layer forwarded the request (it has a response context).
    pub(super) forwarded: bool,
    /// The address the request came from (what the caps count by).
    pub(super) source: std::net::IpAddr,
}

/// A client transaction and the request its ACK and CANCEL are built from.
pub(super) struct Client {
    pub(super) key: TxnKey,
    pub(super) txn: ClientTxn,
    /// The server transaction it forwards for.
    pub(super) owner: Option<ServerId>,
    pub(super) request: Message,
    pub(super) dest: SocketAddr,
    pub(super) proto: Proto,
    /// The realm it is sent from.
    pub(super) realm: usize,
}

/// Which transaction a timer entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Server(ServerId),
    Client(ClientId),
}

/// The transaction layer: every transaction, its timers and its output.
pub struct Endpoint {
    pub(super) cfg: TimerConfig,
    pub(super) metrics: Arc<SbcMetrics>,
    /// Message limits checked before parsing.
    pub(super) limits: crate::sip::Limits,
    /// Caps on server transactions (`max_transactions*`).
    pub(super) caps: crate::caps::Caps,
    /// Server transactions by source address, in step with `servers`.
    pub(super) by_source: crate::caps::SourceCounts,
    pub(super) servers: HashMap<ServerId, Server>,
    pub(super) server_ids: HashMap<TxnKey, ServerId>,
    pub(super) clients: HashMap<ClientId, Client>,
    pub(super) client_ids: HashMap<TxnKey, ClientId>,
    /// INVITE server transactions ended by a 2xx, kept for 64·T1 so that
    /// retransmitted INVITEs are absorbed (RFC 6026 "Accepted") instead of
    /// starting a second call.
    pub(super) accepted: HashMap<TxnKey, Instant>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    pub(super) events: VecDeque<Event>,
    /// Why each client transaction reported in a queued [`Event::Failed`] failed.
    failures: HashMap<ClientId, Failure>,
    /// The [`Event::Failed`] polled last, with its cause.
    polled_failure: Option<(ClientId, Failure)>,
    out: Vec<Outbound>,
    next_id: u64,
    seed: u64,
    counter: u64,
}

impl Endpoint {
    /// An empty transaction layer. `seed` makes its tags and branches
    /// unique to this process.
    #[must_use]
    pub fn new(cfg: TimerConfig, metrics: Arc<SbcMetrics>, seed: u64) -> Self {
        Self {
            cfg,
            metrics,
            limits: crate::sip::Limits::default(),
            caps: crate::caps::Caps::default(),
            by_source: crate::caps::SourceCounts::default(),
            servers: HashMap::new(),
            server_ids: HashMap::new(),
            clients: HashMap::new(),
            client_ids: HashMap::new(),
            accepted: HashMap::new(),
            timers: BinaryHeap::new(),
            events: VecDeque::new(),
            failures: HashMap::new(),
            polled_failure: None,
            out: Vec::new(),
            next_id: 1,
            seed,
            counter: 0,
        }
    }

    /// Sets the message limits checked on every inbound message.
    pub fn set_limits(&mut self, limits: crate::sip::Limits) {
        self.limits = limits;
    }

    /// Sets the caps on server transactions.
    pub fn set_caps(&mut self, caps: crate::caps::Caps) {
        self.caps = caps;
    }

    /// Live server transactions of requests from `ip`, and in all.
    #[must_use]
    pub fn server_count(&self, ip: std::net::IpAddr) -> (usize, usize) {
        (self.by_source.of(ip), self.by_source.total())
    }

    /// The timer values in use.
    #[must_use]
    pub fn timer_config(&self) -> TimerConfig {
        self.cfg
    }

    /// Live transactions, server and client.
    #[must_use]
    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A token unique to this process (tags, Call-IDs).
    pub fn unique(&mut self) -> String {
        self.counter += 1;
        format!("{:x}{:06x}", self.seed & 0xffff_ffff, self.counter)
    }

    /// A new RFC 3261 branch (magic cookie first).
    pub fn new_branch(&mut self) -> String {
        format!("z9hG4bKxs{}", self.unique())
    }

    /// The next event for the layer above.
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        self.polled_failure = match &ev {
            Event::Failed { id, .. } => self.failures.remove(id).map(|f| (*id, f)),
            _ => None,
        };
        Some(ev)
    }

    /// Why client transaction `id` failed, while its [`Event::Failed`] is
    /// the latest event polled (`None` once another event was polled).
    #[must_use]
    pub fn failure(&self, id: ClientId) -> Option<Failure> {
        self.polled_failure.filter(|(i, _)| *i == id).map(|(_, f)| f)
    }

    /// Takes the messages to send.
    pub fn drain_output(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.out)
    }

    /// The earliest time [`on_timer`](Self::on_timer) has work (possibly a
    /// timer that has since been cancelled: then it does nothing).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, a 2xx
    /// retransmission, a response forwarded statelessly), from `realm`.
    pub fn send(&mut self, data: Vec<u8>, dest: SocketAddr, proto: Proto, realm: usize) {
        self.out.push(Outbound { data, dest, proto, realm });
    }

    /// Forgets every transaction and pending output (the node stands down).
    pub fn clear(&mut self) {
        self.servers.clear();
        self.by_source.clear();
        self.server_ids.clear();
        self.clients.clear();
        self.client_ids.clear();
        self.accepted.clear();
        self.events.clear();
        self.failures.clear();
        self.polled_failure = None;
        self.out.clear();
    }

    /// Drops the "Accepted" records whose 64·T1 has passed. Call it now and
    /// then (the proxy does once a second).
    pub fn sweep(&mut self, now: Instant) {
        self.accepted.retain(|_, until| *until > now);
    }

    /// Fires every transaction timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            match timer {
                Timer::Server(id) => {
                    let Some(s) = self.servers.get_mut(&id) else { continue };
                    if s.txn.next_deadline().is_none_or(|d| d > now) {
                        continue;
                    }
                    let actions = s.txn.on_timer(now);
                    self.run_server(id, actions);
                }
                Timer::Client(id) => {
                    let Some(c) = self.clients.get_mut(&id) else { continue };
                    if c.txn.next_deadline().is_none_or(|d| d > now) {
                        continue;
                    }
                    let actions = c.txn.on_timer(now);
                    self.run_client(id, actions, None);
                }
            }
        }
    }

    /// The transport could not deliver to `dest` over `proto` from `realm`
    /// (RFC 3261 §18.4): the connection was refused or reset, its TLS
    /// handshake failed or timed out, it closed before the messages went
    /// out, or it is a peer's closed flow, never dialled.
    ///
    /// - Every client transaction to that destination still waiting for
    ///   a final response ends at once with [`Event::Failed`] and
    ///   [`Failure::Transport`] (§17.1.4), so the call layer fails over
    ///   now rather than at the timeout.
    /// - Every server transaction whose responses go there just ends: they
    ///   cannot be delivered (§17.2.4).
    ///
    /// Returns how many transactions ended.
    pub fn transport_error(&mut self, dest: SocketAddr, proto: Proto, realm: usize, now: Instant) -> usize {
        let at = |d: SocketAddr, p: Proto, r: usize| d == dest && p == proto && r == realm;
        let waiting =
            |s: ClientState| matches!(s, ClientState::Calling | ClientState::Trying | ClientState::Proceeding);
        let mut clients: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| at(c.dest, c.proto, c.realm) && waiting(c.txn.state()))
            .map(|(id, _)| *id)
            .collect();
        let mut servers: Vec<ServerId> =
            self.servers.iter().filter(|(_, s)| at(s.upstream, s.proto, s.realm)).map(|(id, _)| *id).collect();
        // Oldest first, so the events come in a stable order.
        clients.sort_unstable();
        servers.sort_unstable();
        for &id in &clients {
            if let Some(c) = self.clients.get_mut(&id) {
                let actions = c.txn.on_transport_error(now);
                self.run_client(id, actions, None);
            }
        }
        for &id in &servers {
            if let Some(s) = self.servers.get_mut(&id) {
                let actions = s.txn.on_transport_error(now);
                self.run_server(id, actions);
            }
        }
        clients.len() + servers.len()
    }

    /// Marks server transaction `id` as forwarded (it has a response
    /// context, RFC 3261 §16.10): a CANCEL for it is then answered 200 and
    /// reported with [`Event::Cancel`]'s `invite`.
    pub fn set_forwarded(&mut self, id: ServerId) {
        if let Some(s) = self.servers.get_mut(&id) {
            s.forwarded = true;
        }
    }

    /// Sends `resp` upstream through server transaction `id` (absorbed if
    /// the transaction has already sent its final response or is gone).
    pub fn respond(&mut self, id: ServerId, resp: &Message, now: Instant) {
        let Some(code) = resp.code() else { return };
        let Some(s) = self.servers.get_mut(&id) else { return };
        if (200..300).contains(&code) && s.request.method() == Some(&Method::Invite) {
            self.accepted.insert(s.key.clone(), now + self.cfg.t1x64());
        }
        let actions = s.txn.send_response(code, resp.to_bytes(), now);
        self.metrics.response(code);
        self.run_server(id, actions);
    }

    /// Answers the request of server transaction `id` locally: `code`
    /// `reason`, our To-tag above 100, and `extra` headers.
    pub fn reply(&mut self, id: ServerId, code: u16, reason: &str, extra: Vec<Header>, now: Instant) {
        let Some(s) = self.servers.get(&id) else { return };
        let mut resp = s.request.response_to(code, reason);
        if code > 100 && resp.to_tag().is_none() {
            let to = resp.header("to").unwrap_or_default().to_owned();
            resp.set_header("to", &format!("{to};tag={}", s.to_tag));
        }
        for h in extra {
            resp.insert_before_first("content-length", h);
        }
        self.respond(id, &resp, now);
    }

    /// Starts a client transaction and sends its request. `None` when the
    /// request has no top Via or method to key it by.
    pub fn start_client(&mut self, c: ClientRequest, now: Instant) -> Option<ClientId> {
        let branch = c.request.top_via()?.branch().unwrap_or("").to_owned();
        let method = c.request.method()?.clone();
        let key = client_key(&branch, method.as_str());
        let kind = Kind::for_method(method.as_str());
        let (mut txn, actions) = ClientTxn::new(kind, c.request.to_bytes(), c.proto.reliable(), self.cfg, now);
        if let Some(t) = c.timeout {
            txn.set_timeout_override(t);
        }
        let id = ClientId(self.next_id());
        if let Some(old) = self.client_ids.insert(key.clone(), id) {
            self.clients.remove(&old);
        }
        let client =
            Client { key, txn, owner: c.owner, request: c.request, dest: c.dest, proto: c.proto, realm: c.realm };
        self.clients.insert(id, client);
        self.run_client(id, actions, None);
        Some(id)
    }

    /// Cancels the INVITE of client transaction `id` (RFC 3261 §9.1): a
    /// CANCEL goes out in a client transaction of its own. The INVITE's
    /// transaction runs on and reports its final response (a 487, or a
    /// 2xx that crossed the CANCEL).
    pub fn cancel(&mut self, id: ClientId, now: Instant) {
        let Some(c) = self.clients.get(&id) else { return };
        let Some(bytes) = wire::cancel_for(&c.request) else { return };
        let (dest, proto, realm) = (c.dest, c.proto, c.realm);
        let Ok(request) = Message::parse(&bytes) else { return };
        self.start_client(ClientRequest { request, dest, proto, realm, owner: None, timeout: None }, now);
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn arm(&mut self, deadline: Option<Instant>, timer: Timer) {
        if let Some(d) = deadline {
            self.timers.push(Reverse((d, timer)));
        }
    }

    pub(super) fn run_server(&mut self, id: ServerId, actions: Vec<ServerAction>) {
        let mut terminated = false;
        for a in actions {
            match a {
                ServerAction::Send(bytes) => {
                    if let Some(s) = self.servers.get(&id) {
                        let (dest, proto, realm) = (s.upstream, s.proto, s.realm);
                        self.send(bytes, dest, proto, realm);
                    }
                }
                ServerAction::Timeout => tracing::debug!(?id, "server transaction timed out waiting for ACK"),
                ServerAction::TransportError => crate::info_limited!(?id, "could not send a response upstream"),
                ServerAction::Terminated => terminated = true,
            }
        }
        if terminated {
            if let Some(s) = self.servers.remove(&id) {
                self.server_ids.remove(&s.key);
                self.by_source.remove(s.source);
            }
        } else if let Some(s) = self.servers.get(&id) {
            let d = s.txn.next_deadline();
            self.arm(d, Timer::Server(id));
        }
    }

    /// Carries out client transaction actions; `response` is the message
    /// that caused them, when one did.
    pub(super) fn run_client(&mut self, id: ClientId, actions: Vec<ClientAction>, response: Option<Message>) {
        let mut terminated = false;
        for a in actions {
            let Some(c) = self.clients.get(&id) else { break };
            let (dest, proto, realm, owner) = (c.dest, c.proto, c.realm, c.owner);
            match a {
                ClientAction::Send(bytes) => self.send(bytes, dest, proto, realm),
                ClientAction::SendAck => {
                    if let Some(ack) = response.as_ref().and_then(|r| wire::ack_for(&c.request, r)) {
                        self.send(ack, dest, proto, realm);
                    }
                }
                ClientAction::Deliver(code) => {
                    if let Some(msg) = &response {
                        self.events.push_back(Event::Response { id, owner, code, msg: msg.clone() });
                    }
                }
                ClientAction::Timeout | ClientAction::TransportError => {
                    let failure = if a == ClientAction::Timeout {
                        tracing::debug!(?id, %dest, "no final response from next hop in time");
                        Failure::Timeout
                    } else {
                        crate::info_limited!(?id, %dest, proto = proto.via_name(), "transport error toward next hop");
                        Failure::Transport
                    };
                    self.failures.insert(id, failure);
                    self.events.push_back(Event::Failed { id, owner });
                    terminated = true;
                }
                ClientAction::Terminated => terminated = true,
            }
        }
        if terminated {
            if let Some(c) = self.clients.remove(&id) {
                if self.client_ids.get(&c.key) == Some(&id) {
                    self.client_ids.remove(&c.key);
                }
            }
        } else if let Some(c) = self.clients.get(&id) {
            let d = c.txn.next_deadline();
            self.arm(d, Timer::Client(id));
        }
    }
}
