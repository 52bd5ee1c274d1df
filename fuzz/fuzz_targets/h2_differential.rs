#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ouli_fuzz_targets::h2_differential(data));
