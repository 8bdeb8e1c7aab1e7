//! `proc_status`: see `harness::proc_status` for what it feeds and which invariants it
//! checks beyond "does not panic".
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::proc_status(data));
