//! The XDP program and the map types it shares with userspace.
//!
//! Nothing lives here yet: the XDP datapath is the subject of its own issue.
//! Until then `media_relay` runs on the plain-socket datapath only, and this
//! crate exports nothing.
