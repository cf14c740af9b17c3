//! The xsbc signaling plane: a stateful SIP proxy and registrar that anchors
//! every call's media in the embedded media relay.

pub mod config;
pub mod location;
