//! The wall clock, injected: the executor, the pipeline, the HTTP API
//! (KPI windows, search recency) and the chaos scheduler read the time
//! from a [`Clock`], so a test sets it instead of sleeping or depending on
//! the day it runs. Durations (timeouts, retries, cooldowns) use tokio's
//! clock, which tests pause and advance.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where the time comes from.
pub trait Clock: Send + Sync {
    /// Now, UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system's clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that stands still until moved: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn at(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    /// Moves it on by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += by;
    }

    /// Sets it to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let c = ManualClock::at(t0);
        assert_eq!(c.now(), t0);
        c.advance(chrono::Duration::minutes(5));
        assert_eq!(c.now(), t0 + chrono::Duration::minutes(5));
        let shared: Arc<dyn Clock> = Arc::new(c.clone());
        c.set(t0);
        assert_eq!(shared.now(), t0);
        assert!(SystemClock.now() > t0 - chrono::Duration::days(3650));
    }
}
