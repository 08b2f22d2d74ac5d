//! Arbitrary WebSocket messages through the channel decoder of every Kubernetes stream protocol
//! (`vk_kubelet_api::ws::fuzz_decode`: binary, base64, v5 stream close): no input may
//! panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vk_kubelet_api::ws::fuzz_decode(data);
});
