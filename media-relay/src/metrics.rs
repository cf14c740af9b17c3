//! Prometheus `/metrics`: a minimal HTTP/1.1 responder on the admin address
//! (loopback by default) rendering the text exposition format.
//!
//! Per-worker counters are summed only here, when scraped.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::control::MediaControl;
use crate::ng::{NgCounters, COMMANDS};
use crate::relay::Relay;

/// Renders every relay metric in the Prometheus text format.
#[must_use]
pub fn render(relay: &Relay, ng: &NgCounters) -> String {
    let mut out = String::with_capacity(4096);
    let t = relay.totals();
    let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(&mut out, "media_relay_sessions_active", "Calls in the session table.", t.sessions as u64);
    gauge(&mut out, "media_relay_ports_in_use", "Media ports bound (RTP and RTCP).", (t.port_pairs_in_use * 2) as u64);
    gauge(
        &mut out,
        "media_relay_ports_configured",
        "Media ports in the configured range.",
        (t.port_pairs_total * 2) as u64,
    );
    gauge(&mut out, "media_relay_workers", "Worker threads.", relay.worker_counters().len() as u64);
    let dp = relay.datapath();
    let _ = writeln!(
        out,
        "# HELP media_relay_datapath The datapath in use (socket or xdp).\n# TYPE media_relay_datapath gauge\nmedia_relay_datapath{{datapath=\"{}\"}} 1",
        dp.name()
    );
    if let Some((copy, zero_copy)) = dp.xdp_queue_modes() {
        let _ = writeln!(
            out,
            "# HELP media_relay_xdp_queues AF_XDP queues by how frames reach the relay's memory: copied by the kernel, or zero-copy by the driver.\n\
             # TYPE media_relay_xdp_queues gauge\nmedia_relay_xdp_queues{{mode=\"copy\"}} {copy}\nmedia_relay_xdp_queues{{mode=\"zero_copy\"}} {zero_copy}"
        );
    }
    if let Some((native, generic)) = dp.xdp_attach_modes() {
        let _ = writeln!(
            out,
            "# HELP media_relay_xdp_interfaces Interfaces the XDP program is attached to, natively (in the driver) or in the slower generic (skb) mode.\n\
             # TYPE media_relay_xdp_interfaces gauge\nmedia_relay_xdp_interfaces{{mode=\"native\"}} {native}\nmedia_relay_xdp_interfaces{{mode=\"generic\"}} {generic}"
        );
    }
    if let Some((above, below)) = dp.xdp_napi_ranks() {
        let _ = writeln!(
            out,
            "# HELP media_relay_xdp_napi_threads Threaded NAPI threads of the AF_XDP interfaces, by rank against the real-time workers (above: each wakeup preempts a worker).\n\
             # TYPE media_relay_xdp_napi_threads gauge\nmedia_relay_xdp_napi_threads{{rank=\"above_workers\"}} {above}\n\
             media_relay_xdp_napi_threads{{rank=\"below_workers\"}} {below}"
        );
    }
    if let Some(x) = dp.xdp_counters() {
        let _ = writeln!(
            out,
            "# HELP media_relay_xdp_packets_total Packets seen by the XDP program, by verdict (summed over CPUs and interfaces).\n# TYPE media_relay_xdp_packets_total counter"
        );
        for (c, v) in x.iter() {
            let _ = writeln!(out, "media_relay_xdp_packets_total{{verdict=\"{}\"}} {v}", c.name());
        }
    }
    let _ = writeln!(
        out,
        "# HELP media_relay_sessions_created_total Calls created.\n# TYPE media_relay_sessions_created_total counter\nmedia_relay_sessions_created_total {}",
        t.created
    );
    let _ = writeln!(
        out,
        "# HELP media_relay_sessions_deleted_total Calls deleted, by reason.\n# TYPE media_relay_sessions_deleted_total counter\n\
         media_relay_sessions_deleted_total{{reason=\"delete\"}} {}\nmedia_relay_sessions_deleted_total{{reason=\"timeout\"}} {}",
        t.deleted, t.timed_out
    );
    let _ = writeln!(
        out,
        "# HELP media_relay_sessions_ended_total Ended calls by the media they carried (both ways, one way, none).\n\
         # TYPE media_relay_sessions_ended_total counter\n\
         media_relay_sessions_ended_total{{media=\"both\"}} {}\nmedia_relay_sessions_ended_total{{media=\"oneway\"}} {}\n\
         media_relay_sessions_ended_total{{media=\"none\"}} {}",
        t.ended_both, t.ended_oneway, t.ended_none
    );
    let _ = writeln!(
        out,
        "# HELP media_relay_one_way_audio_total Answered media directions silent while the other flowed for relay.one_way_after_s.\n\
         # TYPE media_relay_one_way_audio_total counter\nmedia_relay_one_way_audio_total {}",
        t.one_way_audio
    );

    // Worker counters, grouped by metric name, one series per worker.
    let per_worker: Vec<_> = relay.worker_counters().iter().map(|c| c.rows()).collect();
    let mut seen: Vec<&str> = Vec::new();
    if let Some(first) = per_worker.first() {
        for (name, _, help, _) in first {
            if seen.contains(name) {
                continue;
            }
            seen.push(name);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (w, rows) in per_worker.iter().enumerate() {
                for (n, labels, _, v) in rows.iter().filter(|r| r.0 == *name) {
                    let sep = if labels.is_empty() { "" } else { "," };
                    let _ = writeln!(out, "{n}{{worker=\"{w}\"{sep}{labels}}} {v}");
                }
            }
        }
    }

    let _ = writeln!(
        out,
        "# HELP media_relay_ng_commands_total ng commands executed.\n# TYPE media_relay_ng_commands_total counter"
    );
    for (i, c) in COMMANDS.iter().enumerate() {
        let _ = writeln!(out, "media_relay_ng_commands_total{{command=\"{c}\"}} {}", ng.commands[i].load(Relaxed));
    }
    for (name, help, v) in [
        ("media_relay_ng_errors_total", "ng commands answered with an error.", &ng.errors),
        ("media_relay_ng_cache_hits_total", "Retransmitted ng commands answered from the reply cache.", &ng.cache_hits),
        ("media_relay_ng_dropped_total", "ng datagrams dropped because no cookie could be read.", &ng.dropped),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
    }
    out
}

fn respond(mut s: TcpStream, render_body: &dyn Fn() -> String) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut req = [0u8; 2048];
    let mut len = 0;
    // Read until the end of the request head (or the buffer is full).
    while len < req.len() {
        match s.read(&mut req[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if req[..len].windows(4).any(|w| w == b"\r\n\r\n") || req[..len].windows(2).any(|w| w == b"\n\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&req[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let method_ok = head.starts_with("GET ");
    let (status, ctype, body) = if method_ok && (path == "/metrics" || path.starts_with("/metrics?")) {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_body())
    } else if method_ok {
        ("404 Not Found", "text/plain", "not found; try /metrics\n".to_owned())
    } else {
        ("400 Bad Request", "text/plain", "bad request\n".to_owned())
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves `/metrics` for the relay until `shutdown` is set.
pub fn serve(listener: &TcpListener, relay: &Arc<Relay>, ng: &Arc<NgCounters>, shutdown: &AtomicBool) {
    serve_with(listener, &|| render(relay, ng), shutdown);
}

/// Serves `/metrics` with whatever `render_body` produces, until `shutdown`
/// is set. One request at a time; each connection has 2 s to send its head.
pub fn serve_with(listener: &TcpListener, render_body: &dyn Fn() -> String, shutdown: &AtomicBool) {
    let _ = listener.set_nonblocking(true);
    while !shutdown.load(Relaxed) {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nonblocking(false);
                respond(s, render_body);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
