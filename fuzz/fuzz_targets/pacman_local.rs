#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| supermin::fuzzing::pacman_local(data));
