//! DNS per RFC 3263 for trunk hosts and Route / Request-URI hosts: NAPTR,
//! then SRV, then A/AAAA, with SRV priority and weight, cached by TTL.
//!
//! - [`rfc3263`]: which queries, and how answers become ordered targets
//!   (pure; the lookups are a trait).
//! - [`cache`]: answers kept by TTL, with caps and negative caching (time
//!   is an argument).
//! - [`resolver`]: the resolver thread (hickory-resolver) that fills the
//!   cache; the SIP event loop only reads it and never waits on DNS.

pub mod cache;
pub mod resolver;
pub mod rfc3263;

pub use cache::{Cache, CacheConfig};
pub use resolver::{Dns, DnsConfig};
pub use rfc3263::{HostSpec, Resolution};

#[cfg(test)]
mod tests;
