//! `wait`: pauses a run, for example to let a restart settle.
//!
//! ```yaml
//! - id: settle
//!   uses: wait
//!   with: {duration: 30s}
//! ```

use super::{Step, StepCtx};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How long, in seconds (fractions allowed).
    #[serde(default)]
    pub seconds: f64,
}

/// Waits, then reports how long.
pub async fn run(p: Params) -> Result<Value, StepError> {
    if !(0.0..=86_400.0).contains(&p.seconds) {
        return Err(StepError::Params(format!(
            "seconds must be between 0 and 86400, got {}",
            p.seconds
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(p.seconds)).await;
    Ok(json!({ "waited_seconds": p.seconds }))
}

/// The `wait` step type.
pub struct Wait;

impl Step for Wait {
    const NAME: &'static str = "wait";
    const OUTPUT: &'static str = "`waited_seconds`.";
    const DESTRUCTIVE: bool = false;
    type Params = Params;

    async fn run(_ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_json(with: &Value) -> Result<Value, StepError> {
        run(crate::steps::params(with)?).await
    }

    #[tokio::test(start_paused = true)]
    async fn waits_in_virtual_time_and_checks_params() {
        let t = tokio::time::Instant::now();
        let out = run_json(&json!({"seconds": 90})).await.unwrap();
        assert_eq!(out["waited_seconds"], 90.0);
        assert_eq!(t.elapsed(), Duration::from_secs(90));
        assert!(matches!(
            run_json(&json!({"seconds": -1})).await,
            Err(StepError::Params(_))
        ));
        assert!(matches!(
            run_json(&json!({"secs": 1})).await,
            Err(StepError::Params(_))
        ));
    }
}
