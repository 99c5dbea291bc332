#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supermin::fuzzing::apk_installed(data));
