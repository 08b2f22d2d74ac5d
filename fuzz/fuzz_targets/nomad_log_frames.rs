//! Arbitrary bytes as a Nomad `fs/logs` response body through the incremental frame decoder
//! (`vk_nomad::logs::fuzz_decode`): no input may panic, and decoding it whole, byte by
//! byte or in two pieces must give the same frames.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vk_nomad::logs::fuzz_decode(data);
});
