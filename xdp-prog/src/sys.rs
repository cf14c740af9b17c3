//! The crate's only `unsafe`: marking the shared map types as plain old data
//! so aya can copy them to and from the kernel as bytes.
#![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]

use crate::types::{BanKey, BanValue, MediaKey, MediaValue, PortRange};

// SAFETY: `#[repr(C)]`, fields are integers and integer arrays (every bit
// pattern is valid), and there is no padding: 16 + 2 + 2 = 20 bytes at
// align 2, asserted in `types.rs`. So the bytes aya copies are all initialised.
unsafe impl aya::Pod for MediaKey {}
// SAFETY: `#[repr(C)]`, two `u32`, no padding (size 8 asserted in `types.rs`).
unsafe impl aya::Pod for MediaValue {}
// SAFETY: `#[repr(C)]`, `u32` then `[u8; 16]`, no padding (size 20 at align 4
// asserted in `types.rs`).
unsafe impl aya::Pod for BanKey {}
// SAFETY: `#[repr(C)]`, one `u32` (size 4 asserted in `types.rs`).
unsafe impl aya::Pod for BanValue {}
// SAFETY: `#[repr(C)]`, two `u16`, no padding (size 4 asserted in `types.rs`).
unsafe impl aya::Pod for PortRange {}
