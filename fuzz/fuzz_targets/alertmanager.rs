//! Alertmanager webhook v4 bodies, as posted to `/hooks/alertmanager`.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quench_connectors::inbound::alertmanager;

fuzz_target!(|body: &[u8]| {
    let cfg = alertmanager::Config::default();
    let _ = alertmanager::parse(&cfg, &http::HeaderMap::new(), body);
});
