//! `k8s.exec`: runs a command in a pod's container through the API
//! server's exec subresource, and keeps stdout, stderr and the exit code.
//!
//! The command is an argv list: each element is rendered on its own and
//! passed as one argument, so a label value can never become a second
//! command. There is no shell unless the list names one.
//!
//! ```yaml
//! - id: reset
//!   uses: k8s.exec
//!   with:
//!     pod: "{{k8s_name alert.labels.pod}}"
//!     namespace: shop
//!     container: app
//!     argv: ["/app/bin/poolctl", "reset", "--pool", "{{alert.labels.pool}}"]
//! ```

use super::{Acts, Step, StepCtx};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::StepError;
use crate::k8s::objects::ObjectRef;
use crate::k8s::{ExecCall, Kube, names};

/// The parameters.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// The pod.
    pub pod: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The container (needed when the pod has several).
    #[serde(default)]
    pub container: Option<String>,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Seconds the command may take (default 30).
    #[serde(default = "thirty", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub timeout_seconds: u64,
    /// The most bytes kept of stdout and of stderr (default 1 MiB).
    #[serde(default = "one_mib", deserialize_with = "super::number")]
    #[schemars(schema_with = "super::number_schema")]
    pub max_output_bytes: usize,
    /// A non-zero exit code is the step's output (`ok: false`) instead of
    /// its failure.
    #[serde(default)]
    pub allow_failure: bool,
}

fn thirty() -> u64 {
    30
}

fn one_mib() -> usize {
    1 << 20
}

/// Checks the argv: not empty, no NUL bytes, bounded.
pub fn check_argv(argv: &[String]) -> Result<(), StepError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(StepError::Params("argv needs at least the command".into()));
    }
    if argv.len() > 256 || argv.iter().any(|a| a.len() > 4096) {
        return Err(StepError::Params(
            "argv is limited to 256 arguments of 4096 bytes".into(),
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(StepError::Params("argv may not contain NUL bytes".into()));
    }
    Ok(())
}

/// Runs the command.
pub async fn run(kube: &dyn Kube, p: Params) -> Result<Value, StepError> {
    check_argv(&p.argv)?;
    let obj = ObjectRef::new("Pod", p.namespace.as_deref(), &p.pod, None, None, kube)?;
    if let Some(c) = &p.container {
        names::label("container", c)?;
    }
    let namespace = obj.namespace.clone().unwrap_or_default();
    let out = kube
        .exec(ExecCall {
            namespace: &namespace,
            pod: &p.pod,
            container: p.container.as_deref(),
            argv: &p.argv,
            max: p.max_output_bytes,
            timeout: Duration::from_secs(p.timeout_seconds),
        })
        .await?;
    let ok = out.exit_code == Some(0);
    if !ok && !p.allow_failure {
        let tail: String = out
            .stderr
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        return Err(StepError::Failed(format!(
            "{:?} in {} exited with {}: {tail}",
            p.argv,
            obj.label(),
            out.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "no exit code".into())
        )));
    }
    Ok(json!({
        "ok": ok,
        "target": format!("pod/{namespace}/{}", p.pod),
        "container": p.container,
        "argv": p.argv,
        "exit_code": out.exit_code,
        "stdout": out.stdout,
        "stderr": out.stderr,
        "truncated": out.truncated,
    }))
}

/// The `k8s.exec` step type.
pub struct K8sExec;

impl Step for K8sExec {
    const NAME: &'static str = "k8s.exec";
    const OUTPUT: &'static str = "`exit_code`, `stdout`, `stderr`, `truncated`, `target` and `ok`.";
    const DESTRUCTIVE: bool = true;
    type Params = Params;

    fn target(p: &Params) -> Acts {
        Acts::new(p.namespace.as_deref(), &p.pod)
    }

    async fn run(ctx: &StepCtx<'_>, p: Params) -> Result<Value, StepError> {
        run(ctx.kube()?, p).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_checked() {
        assert!(check_argv(&["/bin/true".into()]).is_ok());
        assert!(check_argv(&[]).is_err());
        assert!(check_argv(&["".into()]).is_err());
        assert!(check_argv(&["a\0b".into()]).is_err());
        assert!(check_argv(&vec!["x".to_string(); 300]).is_err());
    }

    #[test]
    fn exit_codes_come_from_the_final_status() {
        use crate::k8s::exit_code;
        assert_eq!(exit_code(&json!({"status": "Success"})), Some(0));
        assert_eq!(
            exit_code(&json!({"status": "Failure", "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}})),
            Some(3)
        );
        assert_eq!(exit_code(&json!({"status": "Failure"})), None);
    }
}
