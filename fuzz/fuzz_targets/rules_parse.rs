//! `rules_parse`: see `harness::rules_parse` for what it feeds and which invariants it
//! checks beyond "does not panic".
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::rules_parse(data));
