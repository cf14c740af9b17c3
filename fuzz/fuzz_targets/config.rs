#![no_main]
include!("../bodies/sbc.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| config(data));
