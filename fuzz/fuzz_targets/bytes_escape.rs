//! `bytes_escape`: see `harness::bytes_escape` for what it feeds and which invariants it
//! checks beyond "does not panic".
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::bytes_escape(data));
