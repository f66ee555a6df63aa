//! The IPvlan port as pure logic (spec: `shared/spec/ipvlan-semantics.md`).
#![forbid(unsafe_code)]
