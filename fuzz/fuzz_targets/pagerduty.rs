//! PagerDuty V3 webhook bodies. Each input is signed with the configured
//! secret, so the fuzzer reaches the body's parser instead of stopping at
//! the signature.
#![no_main]
use hmac::{KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use quench_connectors::inbound::pagerduty;

const SECRET: &str = "fuzz-secret";

fuzz_target!(|body: &[u8]| {
    let cfg = pagerduty::Config { secrets: vec![SECRET.into()], max_event_age_seconds: None };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let sig = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let mut headers = http::HeaderMap::new();
    headers.insert("x-pagerduty-signature", http::HeaderValue::from_str(&sig).unwrap());
    // Both with the age check (a fixed "now") and without it.
    let now = chrono::DateTime::from_timestamp(1_750_000_000, 0);
    let _ = pagerduty::parse_at(&cfg, &headers, body, now);
    let _ = pagerduty::parse_at(&cfg, &headers, body, None);
});
