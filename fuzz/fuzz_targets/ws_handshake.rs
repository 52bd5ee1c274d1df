#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ouli_fuzz_targets::ws_handshake(data));
