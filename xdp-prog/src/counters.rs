//! The program's per-CPU verdict counters: indexes, names and help text
//! (listed once, in `counters!` below, mirroring `enum xsbc_counter` in the
//! C source), and the [`Counters`] map wrapper that sums the CPUs.

use std::borrow::Borrow;

use aya::{
    maps::{MapData, PerCpuArray},
    Ebpf,
};

use crate::{maps::take_map, Error, MAP_COUNTERS};

macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $variant:ident = $index:literal, $name:literal;)+) => {
        /// One per-CPU counter of the XDP program; the discriminant is its
        /// index in [`crate::MAP_COUNTERS`] (`XSBC_CNT_*` in the C source).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($(#[doc = $doc])+ $variant = $index,)+
        }

        /// Number of counters, the `max_entries` of [`crate::MAP_COUNTERS`].
        pub const COUNTER_COUNT: usize = [$($index),+].len();

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: [Self; COUNTER_COUNT] = [$(Self::$variant),+];

            /// The `snake_case` name, e.g. `"redirected_media"` (also the
            /// Prometheus label value).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self { $(Self::$variant => $name,)+ }
            }

            /// One line saying what the counter counts.
            #[must_use]
            pub const fn help(self) -> &'static str {
                match self { $(Self::$variant => concat!($($doc),+).trim_ascii(),)+ }
            }
        }
    };
}

counters! {
    /// Passed: not IPv4 or IPv6 (ARP, LLDP, a second VLAN tag, ...).
    PassedNotIp = 0, "passed_not_ip";
    /// Passed: IP but not UDP (TCP, ICMP, IPv6 extension headers).
    PassedNotUdp = 1, "passed_not_udp";
    /// Passed: an IPv4 fragment, first or later, left to the kernel to reassemble.
    PassedFragment = 2, "passed_fragment";
    /// Passed: a header shorter than it must be, or a bad IP version or IHL.
    PassedTruncated = 3, "passed_truncated";
    /// Passed: UDP to no media port and no SIP port.
    PassedNoMatch = 4, "passed_no_match";
    /// Dropped: the source is in the ban map.
    DroppedBanned = 5, "dropped_banned";
    /// Steered to `AF_XDP`: the destination is in the media-port map.
    RedirectedMedia = 6, "redirected_media";
    /// Steered to `AF_XDP`: the destination port is a SIP port.
    RedirectedSip = 7, "redirected_sip";
    /// Of the steered packets, those passed to the kernel because no `AF_XDP` socket is bound on the rx queue.
    RedirectFailed = 8, "redirect_failed";
    /// Dropped: UDP to a port of the relay's media range with no session (no media-port entry).
    DroppedNoSession = 9, "dropped_no_session";
}

impl Counter {
    /// The index in [`crate::MAP_COUNTERS`].
    #[must_use]
    pub const fn index(self) -> u32 {
        self as u32
    }
}

/// The counters summed over CPUs at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot(pub [u64; COUNTER_COUNT]);

impl CounterSnapshot {
    /// The value of one counter.
    #[must_use]
    pub const fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }

    /// `(counter, value)` in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().zip(self.0)
    }

    /// What happened between `earlier` and `self`, per counter.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = [0; COUNTER_COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self.0[i].saturating_sub(earlier.0[i]);
        }
        Self(out)
    }
}

/// Typed wrapper over [`crate::MAP_COUNTERS`].
pub struct Counters<T>(PerCpuArray<T, u64>);

impl Counters<MapData> {
    /// Takes the map out of a loaded object.
    ///
    /// # Errors
    ///
    /// [`Error::MissingMap`] or [`Error::Map`] if it is missing or mistyped.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let map = take_map(ebpf, MAP_COUNTERS)?;
        PerCpuArray::try_from(map).map(Self).map_err(Error::map("open", MAP_COUNTERS))
    }
}

impl<T: Borrow<MapData>> Counters<T> {
    /// Wraps an already opened map.
    pub const fn new(map: PerCpuArray<T, u64>) -> Self {
        Self(map)
    }

    /// Reads every counter, summing the per-CPU slots.
    ///
    /// # Errors
    ///
    /// [`Error::Map`] if the lookup fails.
    pub fn read(&self) -> Result<CounterSnapshot, Error> {
        let mut snapshot = CounterSnapshot::default();
        for counter in Counter::ALL {
            let per_cpu = self.0.get(&counter.index(), 0).map_err(Error::map("read", MAP_COUNTERS))?;
            snapshot.0[counter as usize] = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `enum xsbc_counter` in the C source, as `(name, index)`.
    fn c_counters() -> Vec<(String, u32)> {
        let source = include_str!("xsbc.bpf.c");
        let start = source.find("enum xsbc_counter {").expect("enum xsbc_counter in the C source");
        let body = &source[start..start + source[start..].find("};").expect("end of the enum")];
        body.lines()
            .filter_map(|line| line.trim().strip_prefix("XSBC_CNT_"))
            .map(|rest| {
                let (name, index) = rest.trim_end_matches(',').split_once('=').expect("explicit index");
                (name.trim().to_ascii_lowercase(), index.trim().parse().expect("numeric index"))
            })
            .collect()
    }

    #[test]
    fn table_matches_the_c_enum() {
        let mut rust: Vec<(String, u32)> = Counter::ALL.iter().map(|c| (c.name().to_owned(), c.index())).collect();
        rust.push(("count".to_owned(), u32::try_from(COUNTER_COUNT).unwrap()));
        assert_eq!(c_counters(), rust);
    }

    #[test]
    fn indexes_are_dense_and_help_is_filled() {
        for (i, counter) in Counter::ALL.iter().enumerate() {
            assert_eq!(counter.index() as usize, i);
            assert!(!counter.help().is_empty());
        }
    }

    #[test]
    fn since_subtracts_per_counter() {
        let mut before = CounterSnapshot::default();
        before.0[Counter::RedirectedSip as usize] = 3;
        let mut after = before;
        after.0[Counter::RedirectedSip as usize] = 5;
        assert_eq!(after.since(&before).get(Counter::RedirectedSip), 2);
        assert_eq!(after.since(&before).iter().map(|(_, v)| v).sum::<u64>(), 2);
    }
}
