//! `netlink_wire`: see `harness::netlink_wire` for what it feeds and which invariants it
//! checks beyond "does not panic".
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::netlink_wire(data));
