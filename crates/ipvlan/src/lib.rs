//! Library part of the `ipvlan` crate: what the binary and the integration tests
//! share. The control protocol is the `ipvlan-proto` crate.

#![forbid(unsafe_code)]

pub mod netcheck;
