#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| arbor::fuzz::run("keys", data));
