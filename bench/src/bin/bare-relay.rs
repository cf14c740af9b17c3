//! `bare-relay`: the floor `relay-bench` measures media-relay and rtpengine
//! against (see [`bench::bare`]). It binds one socket per `--dest`, prints
//! their ports on one line in the same order, and forwards until killed.
//! `relay-bench` starts it pinned to core 0 like the other relays.

use std::io::Write;
use std::net::SocketAddrV4;

use bench::bare::BareRelay;
use clap::Parser;

/// A bare `recvmmsg`/`sendmmsg` relay.
#[derive(Parser, Debug)]
struct Args {
    /// Where each socket forwards, one socket per destination.
    #[arg(long, value_delimiter = ',', required = true)]
    dest: Vec<SocketAddrV4>,
}

fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let mut relay = match BareRelay::bind(&a.dest) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bare-relay: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let ports: Vec<String> = relay.ports().iter().map(u16::to_string).collect();
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", ports.join(" ")).and_then(|()| out.flush()).is_err() {
        return std::process::ExitCode::FAILURE;
    }
    drop(out);
    relay.run()
}
