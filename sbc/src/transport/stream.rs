//! One stream connection (TCP, or TLS over TCP): its buffers, the TLS
//! session when there is one, reading and framing what arrived, and
//! writing what is queued. The transport owns every connection and polls
//! their sockets (edge-triggered: each read and write goes on until the
//! socket would block).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use super::{Inbound, Proto};

/// Length of the first complete message in a stream buffer: `Ok(None)` when
/// more bytes are needed, `Err` when the framing is broken. Leading CRLFs
/// (keep-alives) are reported as a message of only those bytes.
///
/// # Errors
/// A missing or unreadable Content-Length, or a message over `max`.
pub fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let ws = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    if ws > 0 {
        return Ok(Some(ws));
    }
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return if buf.len() > max { Err("header section too large") } else { Ok(None) };
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "header section is not UTF-8")?;
    let mut cl: Option<usize> = None;
    for line in head.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else { continue };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            cl = Some(value.trim().parse().map_err(|_| "bad Content-Length")?);
        }
    }
    let Some(cl) = cl else { return Err("Content-Length is required on stream transports") };
    let total = head_end.checked_add(cl).ok_or("bad Content-Length")?;
    if total > max {
        return Err("message too large");
    }
    Ok(if buf.len() >= total { Some(total) } else { None })
}

/// Why a connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closing {
    /// The peer closed it, or the socket failed.
    Gone,
    /// A message's framing broke.
    BadFraming,
    /// The TLS handshake (or a later TLS record) failed.
    TlsFailed,
}

/// A stream connection.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) realm: usize,
    /// `Tcp` or `Tls`.
    pub(super) proto: Proto,
    /// The TLS session, for `Tls`.
    pub(super) tls: Option<rustls::Connection>,
    /// Accepted from a peer (its address is the peer's, not a listener's).
    pub(super) accepted: bool,
    /// Received bytes (plaintext) not yet framed.
    pub(super) rbuf: Vec<u8>,
    /// Bytes to write to the socket (TCP: the messages; TLS: records).
    pub(super) wbuf: Vec<u8>,
    /// The TCP connect finished (always true for accepted connections).
    pub(super) connected: bool,
    pub(super) opened: Instant,
    /// When the last complete message (or RFC 5626 keep-alive) arrived,
    /// or one was queued to go out: the idle time counts from here.
    pub(super) last_used: Instant,
    /// When the first byte of the message still incomplete in `rbuf`
    /// arrived (`None`: nothing pending).
    pub(super) msg_started: Option<Instant>,
    /// When output last made progress: written, or queued on an empty
    /// buffer (a connection whose output stalls past the idle time closes).
    pub(super) last_write: Instant,
}

impl Conn {
    /// Whether the TLS handshake is still under way.
    pub(super) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Whether nothing is waiting to be written.
    pub(super) fn idle_output(&self) -> bool {
        self.wbuf.is_empty() && !self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether closing the connection now loses messages of ours: output
    /// not yet written, or (a connection we dialled, which always has
    /// something to send) a connect or TLS handshake that never finished.
    pub(super) fn lost_output(&self) -> bool {
        if self.accepted {
            // Before its handshake is done, only handshake records are ours.
            !self.handshaking() && !self.idle_output()
        } else {
            !self.connected || self.handshaking() || !self.idle_output()
        }
    }

    /// Queues one message, unless the pending output would pass `max`
    /// bytes (TLS: rustls holds at most its buffer limit, set to `max`).
    /// Returns whether it was queued.
    pub(super) fn queue(&mut self, data: &[u8], max: usize, now: Instant) -> bool {
        if self.idle_output() {
            self.last_write = now;
        }
        match &mut self.tls {
            // Buffered by rustls until the handshake is done.
            Some(tls) => tls.writer().write_all(data).is_ok(),
            None => {
                if self.wbuf.len().saturating_add(data.len()) > max {
                    return false;
                }
                self.wbuf.extend_from_slice(data);
                true
            }
        }
    }

    /// Reads everything available and appends each framed message to
    /// `out`. Returns why the connection must close, if it must.
    pub(super) fn read(&mut self, out: &mut Vec<Inbound>, max: usize, now: Instant) -> Option<Closing> {
        let mut closing = None;
        let mut chunk = [0u8; 16384];
        match self.tls.as_mut() {
            None => loop {
                match self.stream.read(&mut chunk) {
                    Ok(0) => {
                        closing = Some(Closing::Gone);
                        break;
                    }
                    Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        closing = Some(Closing::Gone);
                        break;
                    }
                }
            },
            Some(tls) => loop {
                match tls.read_tls(&mut self.stream) {
                    Ok(0) => {
                        closing = Some(Closing::Gone);
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closing = Some(Closing::Gone);
                        break;
                    }
                }
                if let Err(e) = tls.process_new_packets() {
                    crate::info_limited!(peer = %self.peer, error = %e, "TLS failed; closing the connection");
                    // Best effort: the alert rustls queued for the peer.
                    let _ = tls.write_tls(&mut self.stream);
                    return Some(Closing::TlsFailed);
                }
                loop {
                    match tls.reader().read(&mut chunk) {
                        Ok(0) => {
                            closing = Some(Closing::Gone);
                            break;
                        }
                        Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            closing = Some(Closing::Gone);
                            break;
                        }
                    }
                }
                if closing.is_some() {
                    break;
                }
            },
        }
        let mut completed = false;
        loop {
            match frame(&self.rbuf, max) {
                Ok(Some(n)) => {
                    let msg: Vec<u8> = self.rbuf.drain(..n).collect();
                    if msg.iter().all(|&b| b == b'\r' || b == b'\n') {
                        // A keep-alive (CRLFCRLF, RFC 5626) that came whole
                        // counts as use; stray line ends do not.
                        if msg.len() >= 4 {
                            self.last_used = now;
                        }
                        continue;
                    }
                    self.last_used = now;
                    completed = true;
                    out.push(Inbound { data: msg, src: self.peer, proto: self.proto, realm: self.realm });
                }
                Ok(None) => {
                    // What is left is the start of the next message.
                    if self.rbuf.is_empty() {
                        self.msg_started = None;
                    } else if completed || self.msg_started.is_none() {
                        self.msg_started = Some(now);
                    }
                    break;
                }
                Err(why) => {
                    crate::info_limited!(peer = %self.peer, why, "closing stream connection: broken framing");
                    return Some(Closing::BadFraming);
                }
            }
        }
        closing
    }

    /// Writes what is queued until the socket would block. Returns whether
    /// the connection failed.
    pub(super) fn flush(&mut self, now: Instant) -> bool {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return true,
                    Ok(_) => self.last_write = now,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return true,
                }
            }
            return false;
        }
        while !self.wbuf.is_empty() {
            match self.stream.write(&self.wbuf) {
                Ok(0) => return true,
                Ok(n) => {
                    self.wbuf.drain(..n);
                    self.last_write = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_framing() {
        let m = b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcNEXT";
        assert_eq!(frame(m, 65535), Ok(Some(m.len() - 4)));
        assert_eq!(frame(&m[..20], 65535), Ok(None));
        assert_eq!(frame(b"\r\n\r\nINVITE", 65535), Ok(Some(4)));
        assert!(frame(b"X\r\n\r\n", 65535).is_err(), "no Content-Length on a stream");
        assert!(frame(b"X\r\nl: -1\r\n\r\n", 65535).is_err());
        assert!(frame(b"X\r\nl: 99999999\r\n\r\n", 65535).is_err());
        assert_eq!(frame(b"X\r\nl: 2\r\n\r\nab", 65535), Ok(Some(13)));
    }
}
