//! `xdp-bench`: the `AF_XDP` and socket datapaths of `media-relay`,
//! rtpengine and an in-kernel XDP forwarder relaying the same RTP in one
//! run, in a namespace lab it builds and removes. See [`bench::xdp`] for the
//! lab, the method and what it needs.

use clap::Parser;

fn main() -> std::process::ExitCode {
    bench::xdp::run(&bench::xdp::Args::parse())
}
