//! Runbook files, as the loader reads them from the git repository.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = quench_runbooks::parse_runbook(Path::new("fuzz.yaml"), "fuzz.yaml", text);
});
