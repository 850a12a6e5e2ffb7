//! Fuzz target `schedule_and_tokens`: see `transmamba_fuzz::schedule_and_tokens` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::schedule_and_tokens(data));
