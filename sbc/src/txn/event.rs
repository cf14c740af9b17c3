//! The interface between the transaction layer and the call layer above
//! it: typed transaction handles, the [`Event`]s the [`Endpoint`](super::Endpoint)
//! reports, and the [`ClientRequest`] command argument.

use std::net::SocketAddr;
use std::time::Duration;

use crate::sip::Message;
use crate::transport::Proto;

/// Handle of a server transaction in an [`Endpoint`](super::Endpoint). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId(pub(super) u64);

/// Handle of a client transaction in an [`Endpoint`](super::Endpoint). Never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(super) u64);

/// What the layer above must act on, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// A new request (not ACK, not CANCEL) with its server transaction. An
    /// INVITE has had its 100 Trying. The top Via carries `received`/`rport`.
    Request {
        /// Its server transaction: answer through it.
        id: ServerId,
        /// The request.
        msg: Message,
        /// Where it came from.
        src: SocketAddr,
        /// Over what.
        proto: Proto,
        /// The realm it came in on.
        realm: usize,
    },
    /// An ACK that matched no server transaction: the ACK for a 2xx, which
    /// is end to end (RFC 3261 §17.2.3).
    Ack {
        /// The ACK.
        msg: Message,
        /// Where it came from.
        src: SocketAddr,
        /// The transport it came over.
        proto: Proto,
        /// The realm it came in on.
        realm: usize,
    },
    /// A CANCEL with its own server transaction `id` (not yet answered).
    /// `invite` is the INVITE server transaction it matches (§9.2) when that
    /// one was forwarded ([`Endpoint::set_forwarded`](super::Endpoint::set_forwarded)).
    Cancel {
        /// The CANCEL's server transaction.
        id: ServerId,
        /// The forwarded INVITE it cancels.
        invite: Option<ServerId>,
    },
    /// A response passed up by client transaction `id` (retransmissions
    /// absorbed; a non-2xx final to an INVITE already ACKed).
    Response {
        /// The client transaction.
        id: ClientId,
        /// The server transaction it forwards for, if any.
        owner: Option<ServerId>,
        /// Status code.
        code: u16,
        /// The response as received.
        msg: Message,
    },
    /// Client transaction `id` got no final response (timer B/F, the
    /// caller's timeout, or a transport error) and is gone. Which of them,
    /// [`Endpoint::failure`](super::Endpoint::failure) says while this is
    /// the latest event polled.
    Failed {
        /// The client transaction.
        id: ClientId,
        /// The server transaction it forwards for, if any.
        owner: Option<ServerId>,
    },
    /// A well-formed response that matched no client transaction (a 2xx
    /// retransmission, a response for another proxy, a stray).
    Stray {
        /// The response.
        msg: Message,
        /// The realm it came in on.
        realm: usize,
    },
}

/// Why a client transaction ended without a final response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No final response in time (timer B or F, or the caller's timeout):
    /// as if a 408 had come (RFC 3261 §17.1.1.2, §17.1.2.2).
    Timeout,
    /// The transport could not deliver the request (RFC 3261 §17.1.4,
    /// §18.4): as if a 503 had come (§16.9).
    Transport,
}

/// A client transaction to start: [`Endpoint::start_client`](super::Endpoint::start_client).
#[derive(Debug)]
pub struct ClientRequest {
    /// The request, with our Via (its branch names the transaction) on top.
    pub request: Message,
    /// Where to send it.
    pub dest: SocketAddr,
    /// Over what.
    pub proto: Proto,
    /// The realm it leaves from.
    pub realm: usize,
    /// The server transaction this one forwards for, reported in its events.
    pub owner: Option<ServerId>,
    /// Give up this long after sending if no response has come (a TU
    /// failover timer; RFC timers still apply when sooner).
    pub timeout: Option<Duration>,
}
