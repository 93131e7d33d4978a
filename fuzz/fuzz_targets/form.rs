#![no_main]
//! cargo-fuzz target: see `mandate_fuzz::form`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mandate_fuzz::form(data));
