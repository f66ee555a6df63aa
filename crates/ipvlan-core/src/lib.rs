//! The IPvlan port as pure logic (spec: `shared/spec/ipvlan-semantics.md`).
//!
//! * [`wire`]: zero-copy views of the headers the port reads;
//! * [`port`]: the control-plane state of one master (mode, flags, slaves, address
//!   table, dev_ids, multicast filters) and the immutable [`PortSnapshot`] the
//!   datapath reads;
//! * [`mod@decide`]: the demux key and the per-frame decision.
//!
//! No system calls, no `unsafe`: everything here runs in tests without privileges.
#![forbid(unsafe_code)]

pub mod compile;
pub mod counters;
pub mod decide;
pub mod fastpath;
#[doc(hidden)]
pub mod fuzzing;
pub mod mac;
pub mod nftprog;
pub mod port;
pub mod wire;

pub use counters::Counters;
pub use decide::*;
pub use mac::{BadMacAddr, MacAddr};
pub use port::*;
