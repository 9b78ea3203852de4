//! Any bytes through the whole parse-and-relocate path (see harness.rs).
//! Malformed input must be an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::object(data);
});
