//! The xsbc signaling plane: a stateful SIP proxy and registrar that anchors
//! every call's media in the embedded media relay.
//!
//! - [`sip`]: the message model and parser (raw headers kept byte for byte).
//! - [`txn`]: RFC 3261 transactions, sans I/O, time passed in.
//! - [`proxy`]: the stateful proxy core, registrar, routing and dialogs.
//! - [`transport`]: UDP and TCP sockets and stream framing.
//! - [`ha`]: the active/standby pair (Redis lease, replication, virtual IP).
//! - [`auth`]: HTTP Digest (challenges, credentials, hashes).
//! - [`guard`]: per-source rate limits and bans, checked before parsing.
//! - [`location`]: registered bindings. [`config`], [`cdr`], [`metrics`].
//! - [`spool`]: the durable store-and-forward spool (segment files of
//!   checksummed records).
//! - [`error`]: the crate's error type. `sys` (private): every `unsafe`
//!   block of the crate, the kernel interfaces (AF_PACKET, rtnetlink).

pub mod auth;
pub mod call_health;
pub mod caps;
pub mod cdr;
pub mod config;
pub mod control;
pub mod dns;
pub mod error;
pub mod guard;
pub mod ha;
pub mod health;
pub mod location;
pub mod logging;
pub mod messages;
pub mod metrics;
pub mod proxy;
pub mod relays;
pub mod sip;
pub mod spool;
mod sys;
pub mod transport;
pub mod txn;
