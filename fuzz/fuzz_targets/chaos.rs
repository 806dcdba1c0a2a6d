//! Chaos experiment files (`*.chaos.yaml`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = quench_chaos::parse_experiment(
        Path::new("fuzz.chaos.yaml"),
        "fuzz.chaos.yaml",
        text,
    );
});
