//! Every relay counter, listed once.
//!
//! One `macro_rules!` table generates the per-worker counter block, its
//! worker-local accumulator, and the Prometheus names and help text. Workers
//! count into a plain local struct and publish it with relaxed stores once
//! per batch; readers sum the per-worker blocks when they are scraped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

macro_rules! worker_counters {
    ($( $field:ident => $metric:literal, $labels:literal, $help:literal; )*) => {
        /// Per-worker counters, written only by their worker (relaxed stores),
        /// read by the metrics exporter.
        #[derive(Debug, Default)]
        pub struct WorkerCounters {
            $(
                #[doc = $help]
                pub $field: AtomicU64,
            )*
        }

        /// The worker's private running totals, published once per batch.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct LocalCounters {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
        }

        impl LocalCounters {
            /// Copies the running totals into the shared block.
            pub fn publish(&self, to: &WorkerCounters) {
                $( to.$field.store(self.$field, Relaxed); )*
            }
        }

        impl WorkerCounters {
            /// `(metric name, extra labels, help, value)` for every counter.
            #[must_use]
            pub fn rows(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![ $( ($metric, $labels, $help, self.$field.load(Relaxed)), )* ]
            }
        }
    };
}

worker_counters! {
    received => "media_relay_packets_received_total", "", "Datagrams read from media sockets.";
    relayed => "media_relay_packets_relayed_total", "", "Datagrams forwarded to the other leg.";
    relayed_bytes => "media_relay_bytes_relayed_total", "", "UDP payload bytes forwarded to the other leg.";
    drop_foreign => "media_relay_drops_total", "reason=\"foreign_source\"", "Datagrams dropped, by reason.";
    drop_no_destination => "media_relay_drops_total", "reason=\"no_destination\"", "Datagrams dropped, by reason.";
    drop_send => "media_relay_drops_total", "reason=\"send_buffer_full\"", "Datagrams dropped, by reason.";
    drop_unreachable => "media_relay_drops_total", "reason=\"unreachable\"", "Datagrams dropped, by reason.";
    drop_oversize => "media_relay_drops_total", "reason=\"oversize\"", "Datagrams dropped, by reason.";
    drop_rx_overflow => "media_relay_drops_total", "reason=\"rx_queue_overflow\"", "Datagrams dropped, by reason.";
    drop_no_session => "media_relay_drops_total", "reason=\"no_session\"", "Datagrams dropped, by reason.";
    drop_malformed => "media_relay_drops_total", "reason=\"malformed\"", "Datagrams dropped, by reason.";
    kernel_path => "media_relay_xdp_kernel_path_total", "", "AF_XDP datapath: datagrams sent through the kernel because the next hop's MAC was unknown (or the headers could not be rewritten in place).";
    xsk_rx_dropped => "media_relay_xsk_kernel_drops_total", "reason=\"rx_dropped\"", "AF_XDP datapath: packets the kernel dropped at the worker's sockets, by reason (XDP_STATISTICS).";
    xsk_rx_ring_full => "media_relay_xsk_kernel_drops_total", "reason=\"rx_ring_full\"", "AF_XDP datapath: packets the kernel dropped at the worker's sockets, by reason (XDP_STATISTICS).";
    xsk_fill_ring_empty => "media_relay_xsk_kernel_drops_total", "reason=\"fill_ring_empty\"", "AF_XDP datapath: packets the kernel dropped at the worker's sockets, by reason (XDP_STATISTICS).";
    xsk_tx_invalid => "media_relay_xsk_kernel_drops_total", "reason=\"tx_invalid\"", "AF_XDP datapath: packets the kernel dropped at the worker's sockets, by reason (XDP_STATISTICS).";
    queue_handoff => "media_relay_xdp_queue_handoff_total", "", "AF_XDP datapath: datagrams that arrived on a queue whose worker does not own their session, handed to the owning worker.";
    drop_handoff => "media_relay_drops_total", "reason=\"queue_handoff_full\"", "Datagrams dropped, by reason.";
    sip_handoff => "media_relay_sip_handoff_total", "", "AF_XDP datapath: SIP datagrams steered to a worker and handed to the signaling plane.";
    drop_sip => "media_relay_drops_total", "reason=\"sip_ring_full\"", "Datagrams dropped, by reason.";
    batches => "media_relay_worker_batches_total", "", "recvmmsg batches processed.";
    flood_sources => "media_relay_flood_sources_total", "", "Sources reported for flooding a latched media port with packets not from its peer (past relay.flood_ban_pps; one report per source, port and second).";
    events_lost => "media_relay_worker_events_lost_total", "", "Worker-to-control notifications lost to a full ring (latch reports only).";
}

impl LocalCounters {
    /// Counts `n` datagrams that could not be sent: `unreachable` when the
    /// kernel said the destination cannot be reached now (see
    /// [`crate::sys::unreachable`]), otherwise a full send buffer.
    pub fn send_failed(&mut self, n: u64, unreachable: bool) {
        if unreachable {
            self.drop_unreachable += n;
        } else {
            self.drop_send += n;
        }
    }
}

/// A cache-line padded counter block, one per worker, so workers never share
/// a line.
pub type PaddedCounters = CachePadded<WorkerCounters>;
