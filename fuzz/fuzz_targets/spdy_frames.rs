//! Arbitrary bytes through the SPDY frame decoder and header-block inflater
//! (`vk_kubelet_api::spdy::fuzz_decode`): no input may panic, and what decodes must
//! round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(bug) = vk_kubelet_api::spdy::fuzz_decode(data) {
        panic!("{bug}");
    }
});
