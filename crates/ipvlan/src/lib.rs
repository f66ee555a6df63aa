//! Library part of the `ipvlan` crate: what the binary and the integration tests share.

pub mod netcheck;
