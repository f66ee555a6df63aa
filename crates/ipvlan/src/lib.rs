//! Library part of the `ipvlan` crate: what the binary and the integration tests
//! share. The control protocol is the `ipvlan-proto` crate.

pub mod netcheck;
