//! The `AF_XDP` datapath (being built): [`rewrite`] parses received frames
//! and rewrites their Ethernet, IP and UDP headers in place with checksums;
//! [`neigh`] keeps routes and neighbours current over rtnetlink; [`umem`]
//! owns a worker's UMEM, sockets and frames; [`sys`] holds the unsafe.

pub mod neigh;
pub mod rewrite;
pub mod sys;
pub mod umem;
