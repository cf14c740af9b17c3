//! The bare relay, the floor of a userspace relay's CPU per packet: one
//! UDP socket per leg on 127.0.0.1, each forwarding whatever arrives to one
//! fixed destination, `recvmmsg` in and `sendmmsg` out, one thread waiting
//! in epoll. No latching, no statistics, no control protocol: what is left
//! is the kernel's receive and send path and the wakeups.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;

use crate::sys::{Batch, Epoll, EVENTS};

/// Sockets, their destinations and the one batch buffer.
pub struct BareRelay {
    socks: Vec<UdpSocket>,
    dests: Vec<SocketAddrV4>,
    epoll: Epoll,
    batch: Batch,
    tokens: [u64; EVENTS],
}

impl BareRelay {
    /// Binds one socket on 127.0.0.1 (a free port) per destination.
    ///
    /// # Errors
    /// Socket or epoll errors.
    pub fn bind(dests: &[SocketAddrV4]) -> io::Result<Self> {
        let socks = dests
            .iter()
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let epoll = Epoll::new()?;
        for (i, s) in socks.iter().enumerate() {
            epoll.add(s.as_raw_fd(), i as u64)?;
        }
        Ok(Self { socks, dests: dests.to_vec(), epoll, batch: Batch::default(), tokens: [0; EVENTS] })
    }

    /// The port of each socket, in the order of the destinations.
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.socks.iter().map(|s| s.local_addr().map_or(0, |a: SocketAddr| a.port())).collect()
    }

    /// Waits up to `timeout_ms` (-1: for ever) and forwards one batch from
    /// each readable socket; returns the datagrams sent on.
    pub fn poll_once(&mut self, timeout_ms: i32) -> usize {
        let n = self.epoll.wait(&mut self.tokens, timeout_ms);
        let mut sent = 0;
        for &t in &self.tokens[..n] {
            let i = usize::try_from(t).unwrap_or(usize::MAX);
            let (Some(s), Some(&dest)) = (self.socks.get(i), self.dests.get(i)) else { continue };
            let fd = s.as_raw_fd();
            let got = self.batch.recv(fd);
            if got > 0 {
                sent += self.batch.send(fd, got, dest);
            }
        }
        sent
    }

    /// Forwards for ever.
    pub fn run(&mut self) -> ! {
        loop {
            self.poll_once(-1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &UdpSocket) -> SocketAddrV4 {
        match s.local_addr().expect("bound") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
        }
    }

    #[test]
    fn each_socket_forwards_to_its_own_destination_unchanged() {
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").expect("a"), UdpSocket::bind("127.0.0.1:0").expect("b"));
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).expect("timeout");
        }
        // Socket 0 forwards to b, socket 1 to a.
        let mut relay = BareRelay::bind(&[v4(&b), v4(&a)]).expect("bare relay");
        let ports = relay.ports();
        assert_eq!(ports.len(), 2);
        for k in 0..3u8 {
            a.send_to(&[k; 172], ("127.0.0.1", ports[0])).expect("send");
        }
        b.send_to(b"from b", ("127.0.0.1", ports[1])).expect("send");
        let mut forwarded = 0;
        while forwarded < 4 {
            let n = relay.poll_once(2_000);
            assert!(n > 0, "nothing forwarded after {forwarded}");
            forwarded += n;
        }
        let mut buf = [0u8; 2048];
        for k in 0..3u8 {
            let (n, from) = b.recv_from(&mut buf).expect("at b");
            assert_eq!((n, buf[0], from.port()), (172, k, ports[0]));
        }
        let (n, from) = a.recv_from(&mut buf).expect("at a");
        assert_eq!((&buf[..n], from.port()), (&b"from b"[..], ports[1]));
    }
}
