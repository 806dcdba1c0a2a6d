//! `quench import` files (YAML or JSON).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = quench_engine::import::parse("fuzz.yaml", text);
});
