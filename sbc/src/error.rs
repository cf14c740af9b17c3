//! The sbc's error type: one enum whose variants name the operation that
//! failed, carrying the underlying `io::Error` as their source.
//!
//! The messages read as the operation and then the cause ("binding SIP on
//! 10.0.0.1:5060: Address already in use"), the way the configuration errors
//! do, so printing an error with `{}` says everything an operator needs.
//! Configuration errors keep their own type ([`ConfigError`]), which names
//! the key and the problem.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::config::ConfigError;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid (names the key and the problem).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The embedded media relay did not start.
    #[error("{0}")]
    Relay(#[from] media_relay::control::RelayError),
    /// Binding the SIP listener.
    #[error("binding SIP on {addr}: {source}")]
    BindSip {
        /// The listen address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Binding the metrics listener.
    #[error("binding metrics listener {addr}: {source}")]
    BindMetrics {
        /// The listen address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Binding the ng control socket.
    #[error("binding ng control socket {addr}: {source}")]
    BindNg {
        /// The listen address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Binding the local control socket.
    #[error("binding control socket {}: {source}", path.display())]
    BindControl {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Talking to a running sbc over its control socket.
    #[error("{}: {source}", path.display())]
    Control {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Binding the HA heartbeat socket (or opening the HA thread's poll and
    /// announcement socket).
    #[error("binding the HA heartbeat socket {addr}: {source}")]
    BindHeartbeat {
        /// The heartbeat address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Opening the CDR file.
    #[error("opening CDR file: {source}")]
    OpenCdr {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the waker of the signaling thread's poll.
    #[error("creating the signaling waker: {source}")]
    Waker {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Starting a thread.
    #[error("starting thread {name}: {source}")]
    Spawn {
        /// The thread's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Looking up the interface that carries the virtual IP.
    #[error("interface {dev}: {source}")]
    Interface {
        /// The interface name.
        dev: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Adding the virtual IP (`RTM_NEWADDR`).
    #[error("adding {addr}/{prefix} to {dev}: {source}")]
    VipAdd {
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// The interface.
        dev: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Removing the virtual IP (`RTM_DELADDR`).
    #[error("removing {addr}/{prefix} from {dev}: {source}")]
    VipRemove {
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
        /// The interface.
        dev: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Binding a test user agent's SIP socket.
    #[error("binding {addr}: {source}")]
    BindUa {
        /// The local address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending a REGISTER.
    #[error("sending REGISTER: {source}")]
    SendRegister {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The registrar refused a REGISTER.
    #[error("REGISTER answered {0}")]
    RegisterRefused(u16),
    /// No final answer to a REGISTER.
    #[error("no answer to REGISTER")]
    RegisterTimeout,
    /// Opening the MESSAGE store's spool (`messages.spool_dir`).
    #[error("messages.spool_dir {}: {source}", path.display())]
    OpenMessages {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: crate::messages::LogError,
    },
}

/// The sbc's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
