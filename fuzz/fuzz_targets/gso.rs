//! Fuzz target: `ipvlan_core::fuzzing::gso_input` must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ipvlan_core::fuzzing::gso_input(data);
});
