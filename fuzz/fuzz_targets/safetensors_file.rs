//! Fuzz target `safetensors_file`: see `transmamba_fuzz::safetensors_file` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::safetensors_file(data));
