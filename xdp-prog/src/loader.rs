//! Loading [`crate::XDP_OBJECT`] into the kernel and attaching it.

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};

use crate::{Error, PROGRAM_NAME, XDP_OBJECT};

/// Creates the maps and loads the program (runs the verifier), with the
/// maps sized as in the C source.
///
/// # Errors
///
/// [`Error::Load`] or [`Error::LoadProgram`]; see [`Error::is_permission_denied`]
/// to tell "no privileges" from a real failure.
pub fn load() -> Result<Ebpf, Error> {
    load_with(&mut EbpfLoader::new())
}

/// As [`load`], with a loader the caller has configured, e.g. with
/// `map_max_entries(MAP_XSKS, queues)` or `map_max_entries(MAP_MEDIA_PORTS, n)`.
///
/// # Errors
///
/// As [`load`].
pub fn load_with(loader: &mut EbpfLoader<'_>) -> Result<Ebpf, Error> {
    let mut ebpf = loader.load(XDP_OBJECT).map_err(Error::Load)?;
    program(&mut ebpf)?.load().map_err(|source| Error::LoadProgram { name: PROGRAM_NAME, source })?;
    Ok(ebpf)
}

/// The XDP program of a loaded object.
///
/// # Errors
///
/// [`Error::MissingProgram`] if the object has no such XDP program.
pub fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    ebpf.program_mut(PROGRAM_NAME).and_then(|p| <&mut Xdp>::try_from(p).ok()).ok_or(Error::MissingProgram(PROGRAM_NAME))
}

/// Attaches the loaded program to `interface`. It stays attached until the
/// [`Ebpf`] (or the program) is dropped.
///
/// # Errors
///
/// [`Error::MissingProgram`] or [`Error::Attach`] (unknown interface, mode
/// not supported by the driver, another program already attached, ...).
pub fn attach(ebpf: &mut Ebpf, interface: &str, mode: XdpMode) -> Result<(), Error> {
    program(ebpf)?
        .attach(interface, mode)
        .map(drop)
        .map_err(|source| Error::Attach { interface: interface.to_owned(), source })
}
