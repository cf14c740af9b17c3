//! The worker contract, at its historical path: see [`crate::datapath`].
//! The socket worker itself is [`crate::datapath::socket`].

pub use crate::datapath::backend::{make_poll, settle, Sleep, WorkerContext, WAKER};
pub use crate::datapath::socket::run;
