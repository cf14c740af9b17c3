//! Authentication: HTTP Digest for SIP, used both to check the sbc's own
//! users and to answer the challenges of carriers.

pub mod digest;
