//! Binding a media pair's sockets: per leg, the RTP socket on an even port
//! and the RTCP socket on the next one, on the leg's interface address.
//! New pairs take the next free ports of the [`PortAllocator`]; a pair taken
//! over from an HA peer claims the ports it had there.
//!
//! Runs on the control path, under the relay's lock. The sockets are handed
//! to a worker right after (see `workers`), which closes them.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

use super::workers::BoundPair;
use crate::control::RelayError;
use crate::ports::PortAllocator;

/// Binds a new pair: for each leg, the next free port pair on `ips[leg]`.
/// Ports another process holds are skipped.
///
/// # Errors
/// [`RelayError::NoPorts`] when the range is exhausted (nothing stays allocated).
pub(super) fn bind_new(
    ports: &mut PortAllocator,
    ips: [IpAddr; 2],
    rcvbuf: usize,
    freebind: bool,
) -> Result<BoundPair, RelayError> {
    let mut socks: Vec<(u16, [UdpSocket; 2])> = Vec::with_capacity(2);
    for ip in ips {
        let mut last_err: Option<std::io::Error> = None;
        let got = ports.allocate(|p| {
            bind_pair(ip, p, rcvbuf, freebind)
                .inspect_err(|e| last_err = Some(std::io::Error::new(e.kind(), e.to_string())))
        });
        match got {
            Some(s) => socks.push(s),
            None => {
                for (p, _) in &socks {
                    ports.free(*p);
                }
                // Either every pair is allocated, or binding failed on the
                // free ones (another process holds them): say which.
                tracing::warn!(
                    in_use = ports.in_use(),
                    capacity = ports.capacity(),
                    last_bind_error = ?last_err.map(|e| e.to_string()),
                    "no media port pair available"
                );
                return Err(RelayError::NoPorts);
            }
        }
    }
    socks.try_into().map_err(|_| RelayError::NoPorts)
}

/// Binds a taken-over pair on the ports it had: `rtp_ports[leg]` on `ips[leg]`.
///
/// # Errors
/// When a port is outside the range or taken, or binding fails; nothing
/// stays allocated then.
pub(super) fn bind_claimed(
    ports: &mut PortAllocator,
    ips: [IpAddr; 2],
    rtp_ports: [u16; 2],
    rcvbuf: usize,
    freebind: bool,
) -> Result<BoundPair, RelayError> {
    let mut socks: Vec<(u16, [UdpSocket; 2])> = Vec::with_capacity(2);
    for leg in 0..2 {
        let port = rtp_ports[leg];
        let bound = if ports.claim(port) {
            bind_pair(ips[leg], port, rcvbuf, freebind).inspect_err(|_| ports.free(port))
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, format!("port {port} is taken or out of range")))
        };
        match bound {
            Ok(s) => socks.push((port, s)),
            Err(source) => {
                if leg == 1 {
                    ports.free(rtp_ports[0]);
                }
                return Err(RelayError::Io { op: "binding a taken-over session's ports", source });
            }
        }
    }
    socks.try_into().map_err(|_| RelayError::NoPorts)
}

/// Binds the RTP socket on `port` and the RTCP socket on `port + 1`.
fn bind_pair(ip: IpAddr, port: u16, rcvbuf: usize, freebind: bool) -> std::io::Result<[UdpSocket; 2]> {
    let one = |p: u16| -> std::io::Result<UdpSocket> {
        // SOCK_NONBLOCK at creation saves a syscall per socket.
        let s =
            Socket::new(Domain::for_address(SocketAddr::new(ip, p)), Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
        if rcvbuf > 0 {
            s.set_recv_buffer_size(rcvbuf)?;
        }
        if freebind {
            if ip.is_ipv4() {
                s.set_freebind(true)?;
            } else {
                s.set_freebind_ipv6(true)?;
            }
        }
        s.bind(&SocketAddr::new(ip, p).into())?;
        Ok(s.into())
    };
    Ok([one(port)?, one(port + 1)?])
}
