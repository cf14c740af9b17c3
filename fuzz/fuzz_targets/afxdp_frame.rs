#![no_main]
include!("../bodies/media.rs");
libfuzzer_sys::fuzz_target!(|data: &[u8]| afxdp_frame(data));
