//! Fuzz target `model_dir`: see `transmamba_fuzz::model_dir` (fuzz/src/lib.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| transmamba_fuzz::model_dir(data));
