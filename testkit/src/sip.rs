//! A SIP OPTIONS probe over UDP: is a SIP server at an address up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Sends a SIP OPTIONS to `addr` over UDP and waits for any final `SIP/2.0`
/// response (the status line is returned), retrying until `timeout`.
pub fn sip_options(addr: SocketAddr, timeout: Duration) -> Option<String> {
    sip_options_from(Ipv4Addr::LOCALHOST.into(), addr, timeout)
}

/// [`sip_options`] sent from `local` (an ephemeral port), e.g. a phone's
/// address in a network namespace the calling thread has entered.
pub fn sip_options_from(local: IpAddr, addr: SocketAddr, timeout: Duration) -> Option<String> {
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).ok()?;
    let local = sock.local_addr().ok()?;
    let tag = crate::unique_suffix().replace('-', "");
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{tag};rport\r\n\
         Max-Forwards: 10\r\n\
         From: <sip:probe@{local}>;tag={tag}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: probe-{tag}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let _ = sock.send_to(msg.as_bytes(), addr);
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            let status = text.lines().next().unwrap_or_default().to_string();
            // Skip provisional responses; keep listening.
            if status.starts_with("SIP/2.0 ") && !status.starts_with("SIP/2.0 1") {
                return Some(status);
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

/// Waits until a SIP server at `addr` answers OPTIONS with a 200.
pub fn wait_for_sip(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(sip_options(addr, timeout), Some(s) if s.starts_with("SIP/2.0 200"))
}
