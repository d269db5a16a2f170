//! Fuzz target `decode`: see `pastry_sim::fuzzing::decode` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pastry_sim::fuzzing::decode(data);
});
