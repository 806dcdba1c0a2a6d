//! Live refresh: `GET /events`, a server-sent event stream that says
//! `change` whenever the records (their change number), the approval
//! queue or the kill switch change, and `/console.js`, the few lines of
//! script that reload a live page on it. Each stream looks at three
//! counters once a second: no store is read, however many are open.

use super::*;
use axum::response::sse::{Event, KeepAlive, Sse};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Streams open at once, at most; more get 503 (the page still works).
const MAX_STREAMS: usize = 256;
/// How often a stream looks for a change.
const EVERY: Duration = Duration::from_secs(1);
/// A stream ends after this; the browser opens a new one by itself.
const LIFETIME: Duration = Duration::from_secs(600);

static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Counts a stream while it lives.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a page shows that can change under it.
fn state(s: &AppState) -> (u64, usize, bool) {
    (
        s.incidents.last_change(),
        s.executor.approvals.pending().len(),
        s.executor.control.is_paused(),
    )
}

pub(super) async fn events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = viewer(&s, &headers) {
        return r;
    }
    if OPEN.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        OPEN.fetch_sub(1, Ordering::AcqRel);
        return secure(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "30")],
                "too many live pages open",
            )
                .into_response(),
        );
    }
    let slot = Slot;
    let start = tokio::time::Instant::now();
    let first = state(&s);
    let stream =
        futures_util::stream::unfold((s, first, slot), move |(s, mut last, slot)| async move {
            loop {
                if start.elapsed() > LIFETIME {
                    return None;
                }
                tokio::time::sleep(EVERY).await;
                let now = state(&s);
                if now != last {
                    last = now;
                    let e = Event::default().event("change").data(now.0.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(e), (s, last, slot)));
                }
            }
        });
    secure(
        Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    )
}

pub(super) async fn script() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            include_str!("../../../templates/console/console.js"),
        )
            .into_response(),
    )
}
