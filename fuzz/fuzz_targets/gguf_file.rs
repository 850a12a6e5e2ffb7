//! Fuzz target `gguf_file`: see `transmamba_fuzz::gguf_file` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::gguf_file(data));
