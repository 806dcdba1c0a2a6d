//! Label matchers (`name="value"`, `=~`, `!=`, `!~`), as runbooks and
//! silences write them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = quench_runbooks::Matcher::parse(text) {
        let labels = [("alertname".to_string(), text.to_string())].into_iter().collect();
        let _ = m.matches(&labels);
    }
});
