#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supermin::fuzzing::rpm_header(data));
