//! Fuzz target `tokenizer_json`: see `transmamba_fuzz::tokenizer_json` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::tokenizer_json(data));
