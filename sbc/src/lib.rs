//! The xsbc signaling plane.
//!
//! Not built yet: SIP transports, transactions, the proxy core and the
//! registrar are the subject of the signaling issue. This crate exists so the
//! workspace has its fixed layout, and it does nothing.
