//! The crate's error type.

use std::{error::Error as _, io, net::IpAddr};

use aya::{maps::MapError, programs::ProgramError, EbpfError};

/// Everything that can go wrong loading the program or using its maps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Parsing the object or creating its maps failed.
    #[error("loading the XDP object")]
    Load(#[source] EbpfError),
    /// The object has no program of that name.
    #[error("the XDP object has no program `{0}`")]
    MissingProgram(&'static str),
    /// The kernel refused the program (verifier log in the source).
    #[error("loading XDP program `{name}` into the kernel")]
    LoadProgram {
        /// Program name.
        name: &'static str,
        /// What aya reported.
        #[source]
        source: ProgramError,
    },
    /// Attaching the program to an interface failed.
    #[error("attaching XDP program to `{interface}`")]
    Attach {
        /// Interface name.
        interface: String,
        /// What aya reported.
        #[source]
        source: ProgramError,
    },
    /// The object has no map of that name (or it was already taken).
    #[error("the XDP object has no map `{0}` (or it was taken already)")]
    MissingMap(&'static str),
    /// A map operation failed.
    #[error("{op} on map `{map}`")]
    Map {
        /// What was being done, e.g. `"insert"`.
        op: &'static str,
        /// Map name.
        map: &'static str,
        /// What aya reported.
        #[source]
        source: MapError,
    },
    /// A ban prefix longer than its address.
    #[error("prefix length {prefix_len} is too long for {addr}")]
    InvalidPrefix {
        /// The address given.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
    },
}

impl Error {
    /// Whether the kernel said `EPERM`: no `CAP_BPF`/`CAP_NET_ADMIN` (or root),
    /// so the caller should fall back to the socket datapath. `EACCES` is not
    /// included: the verifier uses it to reject a program.
    #[must_use]
    pub fn is_permission_denied(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = self.source();
        while let Some(err) = next {
            let io = err.downcast_ref::<io::Error>().or_else(|| match err.downcast_ref::<MapError>() {
                Some(MapError::IoError(io)) => Some(io),
                _ => None,
            });
            if io.and_then(io::Error::raw_os_error) == Some(libc::EPERM) {
                return true;
            }
            next = err.source();
        }
        false
    }

    pub(crate) fn map(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> Self {
        move |source| Self::Map { op, map, source }
    }
}

/// Whether a map error is the kernel's "no such key" (`ENOENT`).
pub(crate) fn is_not_found(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        MapError::SyscallError(e) => e.io_error.kind() == io::ErrorKind::NotFound,
        MapError::IoError(e) => e.kind() == io::ErrorKind::NotFound,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_anywhere_in_the_chain_is_permission_denied() {
        let create = MapError::CreateError { name: "bans".into(), io_error: io::Error::from_raw_os_error(libc::EPERM) };
        assert!(Error::Load(EbpfError::MapError(create)).is_permission_denied());
        let verifier =
            MapError::CreateError { name: "bans".into(), io_error: io::Error::from_raw_os_error(libc::EACCES) };
        assert!(!Error::Load(EbpfError::MapError(verifier)).is_permission_denied());
        assert!(!Error::MissingMap("bans").is_permission_denied());
    }
}
