//! Fuzz target `session_state`: see `transmamba_fuzz::session_state` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::session_state(data));
