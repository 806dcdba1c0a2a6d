//! Search queries, as `quench search` and `GET /api/v1/search` take them,
//! against a small index of real records.
#![no_main]
use libfuzzer_sys::fuzz_target;
use quench_knowledge::search::SearchIndex;
use std::sync::OnceLock;

fn index() -> &'static SearchIndex {
    static INDEX: OnceLock<SearchIndex> = OnceLock::new();
    INDEX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("quench-fuzz-search-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (index, _) = SearchIndex::open(&dir).expect("the index opens");
        let records = quench_engine::import::parse(
            "seed.yaml",
            "version: 1\nincidents:\n  - id: PD-1\n    title: Redis failover on cart\n    service: cart\n    status: resolved\n    first_alert_at: 2025-03-02T10:00:00Z\n    opened_at: 2025-03-02T10:01:00Z\n    resolved_at: 2025-03-02T10:40:00Z\n    root_cause: sentinel failover took 40s\n    resolution: raised the failover timeout\n    commits: [a7f3b9c@shop/infra]\n    tags: [redis, failover]\n",
        )
        .expect("the seed record reads");
        index.upsert(&records).expect("the seed record is indexed");
        index
    })
}

thread_local! {
    /// Inside `search`, which turns a panic of the search library into the
    /// query's error (see `knowledge/src/search/query.rs`).
    static SEARCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// libFuzzer's hook aborts at any panic, before `search` can catch it.
/// Panics inside `search` are left to `search`; any other still aborts.
fn hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !SEARCHING.with(|s| s.get()) {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    hook();
    let Ok(q) = std::str::from_utf8(data) else { return };
    let now = chrono::DateTime::from_timestamp(1_750_000_000, 0).expect("a valid time");
    let index = index();
    SEARCHING.with(|s| s.set(true));
    let answer =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| index.search(q, 10, now)));
    SEARCHING.with(|s| s.set(false));
    // `search` itself must not let a panic out.
    assert!(answer.is_ok(), "search let a panic out for {q:?}");
});
