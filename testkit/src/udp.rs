//! Receiving datagrams in tests.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Reads up to `n` datagrams from `sock`, each within `wait` of the last
/// (or of the call); returns what arrived, with the senders.
pub fn recv_n(sock: &UdpSocket, n: usize, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    sock.set_read_timeout(Some(wait)).expect("setting a read timeout");
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < n {
        match sock.recv_from(&mut buf) {
            Ok((len, from)) => out.push((buf[..len].to_vec(), from)),
            Err(_) => break,
        }
    }
    out
}
