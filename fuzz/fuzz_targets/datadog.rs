//! Datadog webhook bodies, with the shared secret present so the body is
//! read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quench_connectors::inbound::datadog;

fuzz_target!(|body: &[u8]| {
    let cfg = datadog::Config { secret: Some("s3cret".into()), header: None };
    let mut headers = http::HeaderMap::new();
    headers.insert(datadog::DEFAULT_SECRET_HEADER, http::HeaderValue::from_static("s3cret"));
    let _ = datadog::parse(&cfg, &headers, body);
});
