//! The batch I/O trait under the session table, in the spirit of smoltcp's
//! `phy::Device`: a device hands the table a batch of received frames, and
//! the table gives each one back, to transmit towards a destination or to
//! discard. The socket datapath ([`super::socket`]) and the `AF_XDP`
//! datapath ([`super::afxdp`]) each implement it once; the unit tests of
//! [`super::session`] implement it in memory.
//!
//! The protocol, per batch (see [`super::session::Sessions::poll`]):
//! [`Device::receive`], then for every frame `i` in order
//! [`Device::frame`] and, when that returns a frame, exactly one of
//! [`Device::transmit`], [`Device::discard`] or [`Device::no_session`],
//! then [`Device::flush`].
//! Frame `i` is only asked for after frames `0..i` were given back.

use std::net::{SocketAddr, UdpSocket};

use crate::counters::LocalCounters;

/// Which channel a received frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    /// The device knows the channel (it read from that channel's socket).
    Token(usize),
    /// The frame was addressed to this local UDP port; the table looks it
    /// up in its port index.
    Port(u16),
}

/// A received frame as the session table sees it.
#[derive(Debug)]
pub struct Rx<'a> {
    /// Its channel.
    pub to: To,
    /// Its source address.
    pub src: SocketAddr,
    /// Its UDP payload.
    pub payload: &'a [u8],
}

/// A source and sink of frames in batches, with datapath-specific state
/// per channel ([`Device::Channel`]), kept by the session table beside
/// its own. Every method is called by the worker that owns the device;
/// none may allocate, lock or make a syscall per frame.
pub trait Device {
    /// What the device keeps per channel (its socket, caches, flags).
    type Channel;

    /// A channel was added: channel `token` owns `socket` (bound to
    /// `local`'s port when the table indexes ports, else `None`).
    fn attach(&mut self, token: usize, socket: UdpSocket, local: Option<SocketAddr>) -> Self::Channel;

    /// A channel was removed: drop what it holds (closes its socket).
    fn detach(&mut self, token: usize, channel: Self::Channel);

    /// Receives a batch; returns how many frames it holds (0: none).
    fn receive(&mut self, local: &mut LocalCounters) -> usize;

    /// Frame `i` of the batch, or `None` when the device dealt with it
    /// itself (counted it as dropped, or handed it elsewhere).
    fn frame(&mut self, i: usize, local: &mut LocalCounters) -> Option<Rx<'_>>;

    /// Frame `i`'s port has no session here.
    fn no_session(&mut self, i: usize, local: &mut LocalCounters) {
        local.drop_no_session += 1;
        self.discard(i);
    }

    /// Sends frame `i` out of channel `out` (its state is `channel`) to `dest`.
    fn transmit(
        &mut self,
        i: usize,
        out: usize,
        channel: &mut Self::Channel,
        dest: SocketAddr,
        local: &mut LocalCounters,
    );

    /// Gives frame `i` back unsent (already counted).
    fn discard(&mut self, i: usize);

    /// End of the batch: sends what [`Device::transmit`] staged, or leaves
    /// it staged for the device's own end of round (the `AF_XDP` device
    /// sends every interface's frames once per round).
    fn flush(&mut self, local: &mut LocalCounters);
}
