#![no_main]
//! cargo-fuzz target: see `mandate_fuzz::claims`.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| mandate_fuzz::claims(data));
