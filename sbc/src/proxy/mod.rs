//! The stateful proxy core (RFC 3261 §16), sans I/O: messages and the time
//! go in, messages to send come out. The signaling thread owns it.
//!
//! - Requests get a server transaction; each forwarding attempt a client
//!   transaction. A [`Forward`] links them and holds the remaining targets
//!   (sequential forking, the mechanism trunk failover builds on).
//! - Dialogs are tracked from the initial INVITE to the end; their media is
//!   anchored through [`MediaControl`] and deleted when the call ends.

pub mod alternate;
pub mod dialog;
pub mod forward;
pub mod register;
mod replica;
pub mod routing;
mod session;
mod trunks;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use media_relay::control::MediaControl;

use crate::cdr::CdrWriter;
use crate::config::Config;
use crate::location::Location;
use crate::metrics::SbcMetrics;
use crate::sip::{Message, Method};
use crate::transport::{Inbound, Outbound, Proto};
use crate::txn::{ClientTxn, ServerTxn, TimerConfig};

use dialog::Dialogs;
use forward::Me;
use routing::Target;

/// A server transaction and where its responses go.
struct ServerEntry {
    txn: ServerTxn,
    upstream: SocketAddr,
    proto: Proto,
    request: Message,
    to_tag: String,
    fwd: Option<u64>,
}

/// A client transaction of one branch.
struct ClientEntry {
    txn: ClientTxn,
    fwd: Option<u64>,
    request: Message,
    dest: SocketAddr,
    proto: Proto,
}

/// One request being forwarded: its server transaction and its branches.
struct Forward {
    server: String,
    request: Message,
    in_proto: Proto,
    targets: VecDeque<Target>,
    current: Option<String>,
    canceled: bool,
    final_sent: bool,
    is_invite: bool,
    initial: bool,
    record_route: bool,
    /// The request carried an SDP offer (else a 2xx SDP is a late offer).
    offer_in_request: bool,
    last_code: u16,
    /// Trunk of the branch in progress.
    current_trunk: Option<usize>,
    /// Whether any branch was actually sent.
    attempted: bool,
    /// Whether a trunk was passed over for a cap.
    skipped_cap: bool,
    /// Timer C of the INVITE branch in progress (reset by provisionals).
    timer_c: Option<Instant>,
}

/// Which transaction a timer belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(String),
    Client(String),
    C(u64),
}

/// The proxy core.
pub struct Proxy {
    cfg: Arc<Config>,
    me: Me,
    media: Arc<dyn MediaControl>,
    metrics: Arc<SbcMetrics>,
    location: Location,
    dialogs: Dialogs,
    servers: HashMap<String, ServerEntry>,
    clients: HashMap<String, ClientEntry>,
    forwards: HashMap<u64, Forward>,
    next_fwd: u64,
    timers: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: Vec<Outbound>,
    cdr: CdrWriter,
    seed: u64,
    counter: u64,
    last_sweep: Option<Instant>,
    timer_cfg: TimerConfig,
    trunks: Vec<trunks::TrunkRuntime>,
    /// Client transaction key of each outstanding OPTIONS probe → trunk.
    probes: HashMap<String, usize>,
    /// INVITE server transactions ended by a 2xx, kept for 64*T1 so that
    /// retransmitted INVITEs are absorbed (RFC 6026 "Accepted") instead of
    /// starting a second call.
    accepted: HashMap<String, Instant>,
    /// False on an HA standby: no trunk probes.
    active: bool,
}

fn server_key(branch: &str, sent_by: &str, method: &Method) -> String {
    let m = if *method == Method::Ack { "INVITE".to_owned() } else { method.to_string() };
    format!("{branch}|{}|{m}", sent_by.to_ascii_lowercase())
}

fn client_key(branch: &str, method: &Method) -> String {
    let m = if *method == Method::Ack { "INVITE".to_owned() } else { method.to_string() };
    format!("{branch}|{m}")
}

fn sent_by(v: &crate::sip::Via) -> String {
    format!("{}:{}", v.host, v.port.unwrap_or(5060))
}

impl Proxy {
    /// A proxy for `cfg`, anchoring media through `media`.
    #[must_use]
    pub fn new(cfg: Arc<Config>, media: Arc<dyn MediaControl>, metrics: Arc<SbcMetrics>, cdr: CdrWriter) -> Self {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
            );
            h.finish()
        };
        let timer_cfg = TimerConfig { t1: cfg.t1, t2: cfg.t2, t4: cfg.t4 };
        let (cfg_trunks, health) = (cfg.trunks.len(), cfg.health.thresholds);
        Self {
            me: Me {
                addr: cfg.advertise,
                port: cfg.listen.port(),
                alternate: cfg.alternate_path.enabled.then(|| alternate::param_value(&cfg.alternate_path.backups)),
            },
            cfg,
            media,
            metrics,
            location: Location::new(),
            dialogs: Dialogs::new(),
            servers: HashMap::new(),
            clients: HashMap::new(),
            forwards: HashMap::new(),
            next_fwd: 1,
            timers: BinaryHeap::new(),
            out: Vec::new(),
            cdr,
            seed,
            counter: 0,
            last_sweep: None,
            timer_cfg,
            trunks: (0..cfg_trunks).map(|_| trunks::TrunkRuntime::new(health)).collect(),
            probes: HashMap::new(),
            accepted: HashMap::new(),
            active: true,
        }
    }

    /// Takes the messages to send.
    pub fn drain_output(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.out)
    }

    /// The earliest time [`on_timer`](Self::on_timer) has work.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    pub(super) fn unique(&mut self) -> String {
        self.counter += 1;
        format!("{:x}{:06x}", self.seed & 0xffff_ffff, self.counter)
    }

    pub(super) fn new_branch(&mut self) -> String {
        format!("z9hG4bKxs{}", self.unique())
    }

    fn arm(&mut self, deadline: Option<Instant>, r: TimerRef) {
        if let Some(d) = deadline {
            self.timers.push(Reverse((d, r)));
        }
    }

    fn send(&mut self, data: Vec<u8>, dest: SocketAddr, proto: Proto) {
        self.out.push(Outbound { data, dest, proto });
    }

    fn update_gauges(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.transactions.store((self.servers.len() + self.clients.len()) as u64, Relaxed);
        self.metrics.dialogs.store(self.dialogs.len() as u64, Relaxed);
        self.metrics.bindings.store(self.location.len() as u64, Relaxed);
    }

    /// Handles one message from the network.
    pub fn handle(&mut self, inbound: Inbound, now: Instant) {
        match Message::parse(&inbound.data) {
            Ok(msg) if msg.is_request() => self.on_request(msg, &inbound, now),
            Ok(msg) => self.on_response(msg, inbound.src, now),
            Err(e) => {
                use std::sync::atomic::Ordering::Relaxed;
                self.metrics.parse_errors.fetch_add(1, Relaxed);
                let reply =
                    e.response_code().and_then(|code| forward::raw_error_response(&inbound.data, code, &e.to_string()));
                match reply {
                    Some(r) => {
                        tracing::debug!(src = %inbound.src, error = %e, "unparseable request answered");
                        self.metrics.response(400);
                        self.send(r, inbound.src, inbound.proto);
                    }
                    None => {
                        tracing::debug!(src = %inbound.src, error = %e, "unparseable message dropped");
                        self.metrics.dropped.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        self.update_gauges();
    }

    /// Fires every timer due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        while let Some(Reverse((t, _))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, r))) = self.timers.pop() else { break };
            match r {
                TimerRef::Server(k) => self.server_timer(&k, now),
                TimerRef::Client(k) => self.client_timer(&k, now),
                TimerRef::C(id) => self.timer_c(id, now),
            }
        }
        if self.active {
            self.probe_trunks(now);
        }
        let sweep_due = self.last_sweep.is_none_or(|l| now.duration_since(l).as_secs() >= 1);
        if sweep_due {
            self.last_sweep = Some(now);
            self.sweep(now);
            self.timers.push(Reverse((now + std::time::Duration::from_secs(1), TimerRef::Server(String::new()))));
        }
        self.update_gauges();
    }

    fn server_timer(&mut self, key: &str, now: Instant) {
        let Some(e) = self.servers.get_mut(key) else { return };
        if e.txn.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let actions = e.txn.on_timer(now);
        self.run_server_actions(key, actions, now);
    }

    fn client_timer(&mut self, key: &str, now: Instant) {
        let Some(e) = self.clients.get_mut(key) else { return };
        if e.txn.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let actions = e.txn.on_timer(now);
        self.run_client_actions(key, actions, None, now);
    }

    /// Executes server transaction actions.
    fn run_server_actions(&mut self, key: &str, actions: Vec<crate::txn::ServerAction>, now: Instant) {
        use crate::txn::ServerAction;
        let mut terminated = false;
        for a in actions {
            match a {
                ServerAction::Send(bytes) => {
                    if let Some(e) = self.servers.get(key) {
                        let (dest, proto) = (e.upstream, e.proto);
                        self.send(bytes, dest, proto);
                    }
                }
                ServerAction::Timeout => {
                    tracing::debug!(key, "server transaction timed out waiting for ACK");
                }
                ServerAction::TransportError => {
                    tracing::info!(key, "could not send a response upstream");
                }
                ServerAction::Terminated => terminated = true,
            }
        }
        if terminated {
            self.servers.remove(key);
        } else if let Some(e) = self.servers.get(key) {
            let d = e.txn.next_deadline();
            self.arm(d, TimerRef::Server(key.to_owned()));
        }
        let _ = now;
    }

    /// Sends a response upstream through the server transaction `key`.
    fn respond_via(&mut self, key: &str, resp: &Message, now: Instant) {
        let Some(code) = resp.code() else { return };
        let Some(e) = self.servers.get_mut(key) else { return };
        if (200..300).contains(&code) && e.request.method() == Some(&Method::Invite) {
            self.accepted.insert(key.to_owned(), now + self.timer_cfg.t1x64());
        }
        let actions = e.txn.send_response(code, resp.to_bytes(), now);
        self.metrics.response(code);
        self.run_server_actions(key, actions, now);
    }

    /// Answers the request of server transaction `key` locally.
    fn reply(&mut self, key: &str, code: u16, reason: &str, extra: Vec<crate::sip::Header>, now: Instant) {
        let Some(e) = self.servers.get(key) else { return };
        let mut resp = e.request.response_to(code, reason);
        if code > 100 && resp.to_tag().is_none() {
            let to = resp.header("to").unwrap_or_default().to_owned();
            resp.set_header("to", &format!("{to};tag={}", e.to_tag));
        }
        for h in extra {
            resp.insert_before_first("content-length", h);
        }
        self.respond_via(key, &resp, now);
    }

    fn on_request(&mut self, mut msg: Message, inb: &Inbound, now: Instant) {
        let method = msg.method().cloned().unwrap_or(Method::Other(String::new()));
        self.metrics.request(&method.to_string());
        if let Err(e) = crate::sip::validate_request(&msg) {
            use std::sync::atomic::Ordering::Relaxed;
            match e.response_code() {
                Some(code) if method != Method::Ack => {
                    if let Some(r) = forward::raw_error_response(&inb.data, code, &e.to_string()) {
                        self.metrics.response(code);
                        self.send(r, inb.src, inb.proto);
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
        let Some(upstream) = forward::stamp_top_via(&mut msg, inb.src, inb.proto) else {
            self.metrics.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        let Some(via) = msg.top_via() else { return };
        let branch = via.branch().unwrap_or("").to_owned();
        let key = server_key(&branch, &sent_by(&via), &method);
        tracing::debug!(%method, call_id = ?msg.call_id(), %key, src = %inb.src, "request");

        if method == Method::Ack {
            if let Some(e) = self.servers.get_mut(&key) {
                let actions = e.txn.on_ack(now);
                self.run_server_actions(&key, actions, now);
                return;
            }
            self.session_ack(msg, inb, now);
            return;
        }
        if let Some(e) = self.servers.get_mut(&key) {
            let actions = e.txn.on_request_retransmission(now);
            self.run_server_actions(&key, actions, now);
            return;
        }
        if self.accepted.get(&key).is_some_and(|until| *until > now) {
            // A retransmitted INVITE after its 2xx went up: the 2xx itself is
            // retransmitted end to end, so there is nothing to do.
            return;
        }
        let kind = if method == Method::Invite { crate::txn::Kind::Invite } else { crate::txn::Kind::NonInvite };
        let txn = ServerTxn::new(kind, inb.proto.reliable(), self.timer_cfg, now);
        let to_tag = self.unique();
        self.servers.insert(
            key.clone(),
            ServerEntry { txn, upstream, proto: inb.proto, request: msg.clone(), to_tag, fwd: None },
        );
        if method == Method::Invite {
            self.reply(&key, 100, "Trying", Vec::new(), now);
        }
        if method == Method::Cancel {
            self.on_cancel(&key, &branch, &via, now);
            return;
        }
        self.route_request(&key, msg, inb, now);
    }

    fn on_cancel(&mut self, key: &str, branch: &str, via: &crate::sip::Via, now: Instant) {
        let invite_key = server_key(branch, &sent_by(via), &Method::Invite);
        let fwd_id = self.servers.get(&invite_key).and_then(|e| e.fwd);
        let Some(fwd_id) = fwd_id else {
            self.reply(key, 481, "Call/Transaction Does Not Exist", Vec::new(), now);
            return;
        };
        self.reply(key, 200, "OK", Vec::new(), now);
        let current = self.forwards.get_mut(&fwd_id).and_then(|f| {
            f.canceled = true;
            f.targets.clear();
            f.current.clone()
        });
        if let Some(ck) = current {
            self.cancel_branch(&ck, now);
        }
    }

    /// Sends a CANCEL for the INVITE of client transaction `ck`.
    fn cancel_branch(&mut self, ck: &str, now: Instant) {
        let cancel = self.clients.get(ck).and_then(|c| forward::cancel_for(&c.request).map(|b| (b, c.dest, c.proto)));
        if let Some((bytes, dest, proto)) = cancel {
            let Ok(cmsg) = Message::parse(&bytes) else { return };
            let branch = cmsg.top_via().and_then(|v| v.branch().map(str::to_owned)).unwrap_or_default();
            self.start_client(client_key(&branch, &Method::Cancel), cmsg, bytes, dest, proto, None, None, now);
        }
    }

    /// Timer C (RFC 3261 16.6 step 11): a branch that rang for 3 minutes
    /// without a final answer is cancelled and the next target is tried.
    fn timer_c(&mut self, id: u64, now: Instant) {
        tracing::debug!(id, "timer C due");
        let Some(f) = self.forwards.get_mut(&id) else { return };
        if f.final_sent || f.timer_c.is_none_or(|t| t > now) {
            return;
        }
        f.timer_c = None;
        let Some(ck) = f.current.take() else { return };
        if f.last_code == 0 {
            f.last_code = 408;
        }
        tracing::info!(call_id = ?f.request.call_id(), "timer C: no final answer after ringing; cancelling the branch");
        self.cancel_branch(&ck, now);
        self.on_branch_failure_after_cancel(id, now);
    }

    #[expect(clippy::too_many_arguments, reason = "a client transaction is made of these")]
    fn start_client(
        &mut self,
        key: String,
        request: Message,
        bytes: Vec<u8>,
        dest: SocketAddr,
        proto: Proto,
        fwd: Option<u64>,
        timeout: Option<std::time::Duration>,
        now: Instant,
    ) {
        let kind = if request.method() == Some(&Method::Invite) {
            crate::txn::Kind::Invite
        } else {
            crate::txn::Kind::NonInvite
        };
        let (mut txn, actions) = ClientTxn::new(kind, bytes, proto.reliable(), self.timer_cfg, now);
        if let Some(t) = timeout {
            txn.set_timeout_override(t);
        }
        self.clients.insert(key.clone(), ClientEntry { txn, fwd, request, dest, proto });
        self.run_client_actions(&key, actions, None, now);
    }

    /// Executes client transaction actions. `response` is the message that
    /// caused them, when one did.
    fn run_client_actions(
        &mut self,
        key: &str,
        actions: Vec<crate::txn::ClientAction>,
        response: Option<(&Message, SocketAddr)>,
        now: Instant,
    ) {
        use crate::txn::ClientAction;
        let mut terminated = false;
        for a in actions {
            match a {
                ClientAction::Send(bytes) => {
                    let Some(e) = self.clients.get(key) else { continue };
                    let (dest, proto) = (e.dest, e.proto);
                    self.send(bytes, dest, proto);
                }
                ClientAction::SendAck => {
                    let ack = match (self.clients.get(key), response) {
                        (Some(e), Some((r, _))) => forward::ack_for(&e.request, r).map(|b| (b, e.dest, e.proto)),
                        _ => None,
                    };
                    if let Some((b, d, p)) = ack {
                        self.send(b, d, p);
                    }
                }
                ClientAction::Deliver(code) => {
                    if code >= 200 {
                        if let Some(i) = self.probes.remove(key) {
                            self.probe_result(i, Some(code), now);
                        }
                    }
                    let fwd = self.clients.get(key).and_then(|e| e.fwd);
                    if let (Some(fwd), Some((r, _src))) = (fwd, response) {
                        self.on_branch_response(fwd, key, r.clone(), code, now);
                    }
                }
                ClientAction::Timeout | ClientAction::TransportError => {
                    if let Some(i) = self.probes.remove(key) {
                        self.probe_result(i, None, now);
                    }
                    let fwd = self.clients.get(key).and_then(|e| e.fwd);
                    tracing::info!(branch = key, "no answer from next hop (timeout or transport error)");
                    if let Some(fwd) = fwd {
                        self.on_branch_failure(fwd, key, now);
                    }
                    terminated = true;
                }
                ClientAction::Terminated => terminated = true,
            }
        }
        if terminated {
            self.clients.remove(key);
        } else if let Some(e) = self.clients.get(key) {
            let d = e.txn.next_deadline();
            self.arm(d, TimerRef::Client(key.to_owned()));
        }
    }

    fn on_response(&mut self, msg: Message, src: SocketAddr, now: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        let parts = msg.validate().ok().and_then(|()| Some((msg.top_via()?, msg.cseq()?, msg.code()?)));
        let Some((via, (_, method), code)) = parts else {
            tracing::debug!(%src, "malformed response dropped");
            self.metrics.parse_errors.fetch_add(1, Relaxed);
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        };
        let key = client_key(via.branch().unwrap_or(""), &method);
        if let Some(e) = self.clients.get_mut(&key) {
            let actions = e.txn.on_response(code, now);
            self.run_client_actions(&key, actions, Some((&msg, src)), now);
            return;
        }
        // No transaction: a retransmitted 2xx to an INVITE (end to end), a
        // response routed through a primary that lists us as its alternate,
        // or a stray. Forward it statelessly if the top Via is ours.
        if !alternate::via_is_ours(&self.me, &via) {
            self.metrics.dropped.fetch_add(1, Relaxed);
            return;
        }
        if method == Method::Invite && (200..300).contains(&code) {
            self.stateless_2xx(msg, now);
        } else if !self.me.is(&via.host, via.port) {
            self.stateless_response(msg);
        } else {
            self.metrics.dropped.fetch_add(1, Relaxed);
        }
    }
}
