//! Live packet captures for tests, without tcpdump: [`Capture`] records
//! every frame in and out of one interface of a network namespace on a
//! thread of its own, and [`Packet`] reads the IP and UDP/TCP headers of a
//! captured Ethernet frame, so a test can look at addresses in headers and
//! in SIP and SDP text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pcap::{PcapWriter, Record};
use crate::sys::CaptureSocket;
use crate::Netns;

/// A capture running on one interface; [`Capture::stop`] returns its frames.
pub struct Capture {
    label: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Record>>>,
}

impl Capture {
    /// Starts capturing on `dev` in `ns`; returns once the socket is open,
    /// so no frame sent after this call is missed. `label` names it in
    /// messages.
    pub fn start(ns: &Netns, dev: &str, label: &str) -> Result<Capture, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (path, dev_owned, flag) = (ns.path(), dev.to_owned(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let opened = crate::sys::enter_netns(&path)
                .and_then(|()| CaptureSocket::open(&dev_owned, Duration::from_millis(20)))
                .map_err(|e| format!("capture on {dev_owned} in {path}: {e}"));
            let sock = match opened {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Vec::new();
                }
            };
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let time = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                    frames.push(Record { time, data: buf[..n].to_vec() });
                }
            }
            frames
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(Capture { label: label.to_owned(), stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("capture {label}: the capture thread did not start")),
        }
    }

    /// Stops the capture (after a short settle, for frames in flight) and
    /// returns what it saw.
    pub fn stop(mut self) -> Captured {
        std::thread::sleep(Duration::from_millis(100));
        self.stop.store(true, Ordering::Relaxed);
        let frames = self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        Captured { label: std::mem::take(&mut self.label), frames }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The frames of a finished capture.
pub struct Captured {
    /// The name given at [`Capture::start`].
    pub label: String,
    /// Every frame, in capture order.
    pub frames: Vec<Record>,
}

impl Captured {
    /// The IP packets with a UDP or TCP header, in capture order.
    pub fn packets(&self) -> Vec<Packet> {
        self.frames.iter().filter_map(|f| Packet::parse(&f.data)).collect()
    }

    /// The SIP messages (UDP or TCP payloads that look like SIP).
    pub fn sip(&self) -> Vec<Packet> {
        self.packets().into_iter().filter(Packet::is_sip).collect()
    }

    /// Writes the frames as a pcap file (for a person to open).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut w = PcapWriter::new();
        for f in &self.frames {
            w.push(f.time, &f.data);
        }
        w.save(path)
    }
}

/// IP protocol number of UDP.
pub const UDP: u8 = 17;
/// IP protocol number of TCP.
pub const TCP: u8 = 6;

/// The addresses, ports and payload of one captured UDP or TCP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// [`UDP`] or [`TCP`].
    pub proto: u8,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// What follows the UDP or TCP header.
    pub payload: Vec<u8>,
}

impl Packet {
    /// Reads an Ethernet frame carrying IPv4 or IPv6 (without extension
    /// headers) and UDP or TCP; `None` for anything else (ARP, ICMP, IPv4
    /// fragments after the first).
    pub fn parse(frame: &[u8]) -> Option<Packet> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (src, dst, proto, l4) = match ethertype {
            0x0800 => {
                let ihl = usize::from(ip.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
                let frag_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
                if frag_offset != 0 {
                    return None;
                }
                let a: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let b: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(a)), IpAddr::V4(Ipv4Addr::from(b)), *ip.get(9)?, ip.get(ihl..total)?)
            }
            0x86dd => {
                let len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
                let a: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let b: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)), *ip.get(6)?, ip.get(40..40 + len)?)
            }
            _ => return None,
        };
        let header = match proto {
            UDP => 8,
            TCP => usize::from(l4.get(12)? >> 4) * 4,
            _ => return None,
        };
        Some(Packet {
            src,
            dst,
            proto,
            src_port: u16::from_be_bytes([*l4.first()?, *l4.get(1)?]),
            dst_port: u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
            payload: l4.get(header..)?.to_vec(),
        })
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// Whether the payload starts like a SIP request or response.
    pub fn is_sip(&self) -> bool {
        let first = self.payload.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(first);
        line.starts_with("SIP/2.0 ") || line.trim_end().ends_with(" SIP/2.0")
    }

    /// The SIP start line (empty for a non-SIP payload).
    pub fn start_line(&self) -> String {
        self.text().lines().next().unwrap_or_default().trim_end().to_owned()
    }

    /// The values of SIP header `name` (its compact form too, where it has
    /// one), each line as written, in order; a comma-separated line stays one.
    pub fn headers(&self, name: &str) -> Vec<String> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "via" => Some("v"),
            "contact" => Some("m"),
            "from" => Some("f"),
            "to" => Some("t"),
            "call-id" => Some("i"),
            "content-type" => Some("c"),
            "content-length" => Some("l"),
            _ => None,
        };
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        head.lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                let n = n.trim();
                (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
                    .then(|| v.trim().to_owned())
            })
            .collect()
    }

    /// The SIP body (after the blank line), empty if none.
    pub fn body(&self) -> String {
        self.text().split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::udp4_frame;

    #[test]
    fn a_udp_frame_reads_back_with_its_sip_headers() {
        let sip = b"INVITE sip:1000@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa\r\nv: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb\r\nContact: <sip:a@10.0.0.1>\r\n\r\nv=0\r\nc=IN IP4 10.0.0.1\r\n";
        let frame = udp4_frame("10.0.0.1:5060".parse().unwrap(), "10.0.0.2:5070".parse().unwrap(), 7, sip);
        let p = Packet::parse(&frame).unwrap();
        assert_eq!((p.src.to_string().as_str(), p.dst_port, p.proto), ("10.0.0.1", 5070, UDP));
        assert!(p.is_sip());
        assert_eq!(p.start_line(), "INVITE sip:1000@10.0.0.2 SIP/2.0");
        assert_eq!(p.headers("via").len(), 2);
        assert_eq!(p.headers("contact"), vec!["<sip:a@10.0.0.1>".to_owned()]);
        assert!(p.body().contains("c=IN IP4 10.0.0.1"));
        assert!(Packet::parse(&frame[..20]).is_none());
    }
}
