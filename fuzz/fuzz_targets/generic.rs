//! Bodies posted to a generic JSON hook, read through a mapping that uses
//! every pointer kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quench_connectors::inbound::generic::{self, Mapping};
use std::sync::OnceLock;

fn mapping() -> &'static Mapping {
    static M: OnceLock<Mapping> = OnceLock::new();
    M.get_or_init(|| {
        serde_json::from_value(serde_json::json!({
            "token": "g",
            "alerts": "/items",
            "fingerprint": "/id",
            "status": "/state",
            "labels": "/labels",
            "label_fields": {"service": "/svc/name"},
            "annotations": "/notes",
            "annotation_fields": {"summary": "/text"},
            "starts_at": "/at"
        }))
        .expect("the mapping reads")
    })
}

fuzz_target!(|body: &[u8]| {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer g"));
    let _ = generic::parse("fuzz", mapping(), &headers, body);
});
