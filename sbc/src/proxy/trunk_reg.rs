//! Registering to carriers (`register = true` on a trunk), from the call
//! layer's timers: a REGISTER for `sip:username@domain` with our Contact in
//! the trunk's realm, sent in a client transaction of the transaction
//! layer; a 401/407 answered once per challenge (CSeq + 1, same Call-ID);
//! a 423 retried with the registrar's Min-Expires; a refresh at half the
//! granted expiry; after a failure, a retry with exponential backoff (30 s
//! doubling to 30 min). The state shows in `sbc ctl trunks` and in the
//! `sbc_trunk_registered` gauge.

use std::time::{Duration, Instant};

use super::core::{Core, Wake};
use super::trunk_auth::{set_branch, Answered};
use crate::config::TrunkTransport;
use crate::sip::{Contact, Message};
use crate::transport::Proto;
use crate::txn::{ClientId, ClientRequest, Endpoint};

/// The first retry after a failure.
pub(super) const BACKOFF_MIN: Duration = Duration::from_secs(30);
/// The longest wait between retries.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RegState {
    /// Not registered yet (or not on this node: an HA standby).
    Unregistered,
    /// The first REGISTER is on its way.
    Registering,
    /// The carrier accepted the last REGISTER.
    Registered,
    /// The last attempt failed; a retry is scheduled.
    Failed,
}

impl RegState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unregistered => "unregistered",
            Self::Registering => "registering",
            Self::Registered => "registered",
            Self::Failed => "failed",
        }
    }
}

/// One trunk's registration, owned by the signaling thread.
#[derive(Debug)]
pub(super) struct Registration {
    /// The trunk's index.
    pub(super) trunk: usize,
    pub(super) state: RegState,
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The Expires asked for (raised by a 423's Min-Expires).
    expires: u32,
    /// When the next REGISTER is due (`None`: at the next tick).
    next_at: Option<Instant>,
    /// When the carrier's binding runs out.
    expires_at: Option<Instant>,
    backoff: Duration,
    /// The last final answer (408 for no answer).
    last_code: Option<u16>,
    pending: Option<ClientId>,
    sent: Option<Message>,
    answered: Answered,
}

impl Registration {
    /// Trunk `trunk`'s registration, asking for `expires` seconds.
    pub(super) fn new(trunk: usize, expires: u32) -> Self {
        Self {
            trunk,
            state: RegState::Unregistered,
            call_id: String::new(),
            from_tag: String::new(),
            cseq: 0,
            expires,
            next_at: None,
            expires_at: None,
            backoff: BACKOFF_MIN,
            last_code: None,
            pending: None,
            sent: None,
            answered: Answered::default(),
        }
    }
}

impl Core {
    /// Sends the REGISTERs that are due.
    pub(super) fn register_trunks(&mut self, txn: &mut Endpoint, now: Instant) {
        for k in 0..self.carrier.regs.len() {
            let r = &self.carrier.regs[k];
            if r.pending.is_none() && r.next_at.is_none_or(|t| t <= now) {
                self.send_register(txn, k, now);
            }
        }
    }

    /// On an HA standby, whose transactions are gone: no registration runs
    /// here (the active node registers); when the node becomes active again
    /// they start over at once.
    pub(super) fn registrations_stand_down(&mut self) {
        self.carrier.reg_txns.clear();
        for r in &mut self.carrier.regs {
            if r.state == RegState::Unregistered && r.pending.is_none() {
                continue;
            }
            r.state = RegState::Unregistered;
            r.pending = None;
            r.next_at = None;
            r.expires_at = None;
            r.backoff = BACKOFF_MIN;
            self.metrics.trunk_registered(r.trunk, Some(false));
        }
    }

    /// Sends registration `k`'s REGISTER, without credentials.
    fn send_register(&mut self, txn: &mut Endpoint, k: usize, now: Instant) {
        let Some(r) = self.carrier.regs.get(k) else { return };
        let Some(t) = self.cfg.trunks.get(r.trunk) else { return };
        let Some((auth, reg)) = t.auth.as_ref().and_then(|a| Some((a, a.register.as_ref()?))) else { return };
        let proto = if t.transport == TrunkTransport::Tcp { Proto::Tcp } else { Proto::Udp };
        let me = self.me.get(t.realm).unwrap_or(&self.me[0]);
        let (user, domain) = (&auth.username, &reg.domain);
        let contact = me.contact_uri(Some(user), proto);
        let branch = txn.new_branch();
        let r = &mut self.carrier.regs[k];
        if r.call_id.is_empty() {
            r.call_id = format!("reg-{}@{}", txn.unique(), me.hostport());
            r.from_tag = txn.unique();
        }
        r.cseq += 1;
        let uri = if proto == Proto::Tcp { format!("sip:{domain};transport=tcp") } else { format!("sip:{domain}") };
        let text = format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:{user}@{domain}>;tag={}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {}\r\n\
             CSeq: {} REGISTER\r\nContact: <{contact}>\r\nExpires: {}\r\nUser-Agent: xsbc\r\nContent-Length: 0\r\n\r\n",
            proto.via_name(),
            me.hostport(),
            r.from_tag,
            r.call_id,
            r.cseq,
            r.expires,
        );
        let Ok(msg) = Message::parse(text.as_bytes()) else { return };
        r.answered = Answered::default();
        if r.state == RegState::Unregistered {
            r.state = RegState::Registering;
        }
        tracing::debug!(trunk = %t.name, "REGISTER to the carrier");
        self.start_register(txn, k, msg, now);
    }

    /// Starts registration `k`'s REGISTER transaction for `msg`.
    fn start_register(&mut self, txn: &mut Endpoint, k: usize, msg: Message, now: Instant) {
        let Some(r) = self.carrier.regs.get_mut(k) else { return };
        let Some(t) = self.cfg.trunks.get(r.trunk) else { return };
        let proto = if t.transport == TrunkTransport::Tcp { Proto::Tcp } else { Proto::Udp };
        r.sent = Some(msg.clone());
        let c = ClientRequest { request: msg, dest: t.address, proto, realm: t.realm, owner: None, timeout: None };
        r.pending = txn.start_client(c, now);
        if let Some(id) = r.pending {
            self.carrier.reg_txns.insert(id, k);
        } else {
            self.register_failed(k, None, now);
        }
    }

    /// A response or a failure (`None`) of client transaction `id`; false
    /// when it is not a REGISTER to a carrier.
    pub(super) fn on_register_result(
        &mut self,
        txn: &mut Endpoint,
        id: ClientId,
        result: Option<(u16, &Message)>,
        now: Instant,
    ) -> bool {
        let Some(&k) = self.carrier.reg_txns.get(&id) else { return false };
        if result.is_some_and(|(code, _)| code < 200) {
            return true;
        }
        self.carrier.reg_txns.remove(&id);
        let Some(r) = self.carrier.regs.get_mut(k).filter(|r| r.pending == Some(id)) else { return true };
        r.pending = None;
        let Some((code, resp)) = result else {
            self.register_failed(k, None, now);
            return true;
        };
        match code {
            200..=299 => self.registered(k, resp, now),
            401 | 407 => self.register_challenged(txn, k, resp, now),
            423 => {
                let min = resp.header("min-expires").and_then(|v| v.trim().parse::<u32>().ok());
                match min.filter(|m| *m > r.expires && *m <= 86_400) {
                    Some(m) => {
                        tracing::info!(trunk = r.trunk, min_expires = m, "carrier wants a longer registration");
                        r.expires = m;
                        self.send_register(txn, k, now);
                    }
                    None => self.register_failed(k, Some(code), now),
                }
            }
            _ => self.register_failed(k, Some(code), now),
        }
        true
    }

    /// A 401/407 to registration `k`'s REGISTER: answered once per challenge.
    fn register_challenged(&mut self, txn: &mut Endpoint, k: usize, resp: &Message, now: Instant) {
        let code = resp.code().unwrap_or(401);
        let Some(r) = self.carrier.regs.get_mut(k) else { return };
        let Some(t) = self.cfg.trunks.get(r.trunk) else { return };
        let (Some(auth), Some(mut req)) = (t.auth.as_ref(), r.sent.clone()) else { return };
        let cnonce = txn.unique();
        if let Err(why) = r.answered.answer(&mut req, resp, auth, &cnonce) {
            tracing::warn!(trunk = %t.name, code, "registration challenge not answered: {why}");
            self.metrics.trunk_auth_failed(r.trunk);
            self.register_failed(k, Some(code), now);
            return;
        }
        r.cseq = req.cseq().map_or(r.cseq + 1, |c| c.0);
        set_branch(&mut req, &txn.new_branch());
        self.start_register(txn, k, req, now);
    }

    /// A 2xx to registration `k`'s REGISTER.
    fn registered(&mut self, k: usize, resp: &Message, now: Instant) {
        let Some(r) = self.carrier.regs.get_mut(k) else { return };
        let Some(t) = self.cfg.trunks.get(r.trunk) else { return };
        let me = self.me.get(t.realm).unwrap_or(&self.me[0]);
        let user = t.auth.as_ref().map(|a| a.username.as_str());
        // Our binding's expiry, else the response's Expires, else what we asked.
        let ours = resp.contacts().into_iter().find_map(|c| match c {
            Contact::Addr(na) if na.uri.user.as_deref() == user && me.is(&na.uri.host, na.uri.port) => {
                Contact::Addr(na).expires()
            }
            _ => None,
        });
        let header = resp.header("expires").and_then(|v| v.trim().parse::<u32>().ok());
        let granted = ours.or(header).unwrap_or(r.expires);
        if granted == 0 {
            tracing::warn!(trunk = %t.name, "the carrier accepted the REGISTER with no expiry: not registered");
            self.register_failed(k, resp.code(), now);
            return;
        }
        let code = resp.code().unwrap_or(200);
        let first = r.state != RegState::Registered;
        r.state = RegState::Registered;
        r.last_code = Some(code);
        r.expires_at = Some(now + Duration::from_secs(u64::from(granted)));
        let next = now + Duration::from_secs(u64::from(granted / 2).max(1));
        r.next_at = Some(next);
        r.backoff = BACKOFF_MIN;
        if first {
            tracing::info!(trunk = %t.name, expires = granted, "registered to the carrier");
        } else {
            tracing::debug!(trunk = %t.name, expires = granted, "registration refreshed");
        }
        self.metrics.trunk_registered(r.trunk, Some(true));
        self.timers.push(std::cmp::Reverse((next, Wake::Tick)));
    }

    /// Registration `k` failed with `code` (`None`: no answer): retried
    /// after the backoff, which doubles up to [`BACKOFF_MAX`].
    fn register_failed(&mut self, k: usize, code: Option<u16>, now: Instant) {
        let Some(r) = self.carrier.regs.get_mut(k) else { return };
        let name = self.cfg.trunks.get(r.trunk).map_or("?", |t| t.name.as_str());
        r.state = RegState::Failed;
        r.last_code = Some(code.unwrap_or(408));
        let next = now + r.backoff;
        r.next_at = Some(next);
        tracing::warn!(
            trunk = name,
            code = r.last_code,
            retry_s = r.backoff.as_secs(),
            "registration to the carrier failed; retrying later"
        );
        r.backoff = (r.backoff * 2).min(BACKOFF_MAX);
        self.metrics.trunk_registered(r.trunk, Some(false));
        self.metrics.trunk_registration_failed(r.trunk);
        self.timers.push(std::cmp::Reverse((next, Wake::Tick)));
    }

    /// The registration columns of trunk `i` in `sbc ctl trunks`: state,
    /// seconds left of the carrier's binding, last code.
    pub(super) fn registration_columns(&self, i: usize) -> String {
        let Some(r) = self.carrier.regs.iter().find(|r| r.trunk == i) else {
            return format!("{:<12} {:<7} -", "-", "-");
        };
        let left = match (r.expires_at, self.carrier.last_now) {
            (Some(at), Some(now)) if at > now => format!("{}s", at.duration_since(now).as_secs()),
            _ => "-".into(),
        };
        let code = r.last_code.map_or_else(|| "-".to_owned(), |c| c.to_string());
        format!("{:<12} {left:<7} {code}", r.state.as_str())
    }
}
