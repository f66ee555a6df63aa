//! Library part of the `ipvlan` crate: what the binary, the CNI plugin and the
//! integration tests share.

#![forbid(unsafe_code)]

pub mod netcheck;
pub mod proto;
