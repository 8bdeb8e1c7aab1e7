//! `proc_cmdline`: see `harness::proc_cmdline` for what it feeds and which invariants it
//! checks beyond "does not panic".
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::proc_cmdline(data));
