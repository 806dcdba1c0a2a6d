//! The node-local half of `perf.record`: `perf` against a pod's process,
//! run where the process is, by a short-lived Job on the pod's node.
//!
//! 1. quench reads the pod: its node, and the container's runtime id (a
//!    hex string the API server reports; checked as such).
//! 2. It creates a Job pinned to that node (`nodeName`), with `hostPID`,
//!    privileged, one container running a fixed script. The script finds
//!    the process whose cgroup names the container id, runs `perf record
//!    -g -F HZ -p PID -- sleep N`, then prints `perf script`. Container id,
//!    frequency and duration reach the script as positional arguments
//!    (`sh -c SCRIPT quench-perf ID HZ N`), never inside its text.
//! 3. It waits for the Job's pod to finish, reads `perf script` from the
//!    pod's log, and folds it as for a local process.
//! 4. It deletes the Job (and its pod) whatever happened. The Job also has
//!    `activeDeadlineSeconds` and `ttlSecondsAfterFinished`, so a crash of
//!    quench leaves nothing running for long.
//!
//! The image must have `perf` and a POSIX shell; the step names it
//! (`image:`), as quench ships none. RBAC: `get` pods, `create`/`delete` jobs, `list`
//! pods and `get` pods/log in the Job's namespace.

use crate::k8s::KubeError;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::k8s::{Kube, names};

/// The script the Job runs. Its arguments: container id, Hz, seconds.
pub const SCRIPT: &str = r#"set -eu
cid="$1"; hz="$2"; secs="$3"
pid=""
for d in /proc/[0-9]*; do
  if grep -qs -- "$cid" "$d/cgroup"; then pid="${d#/proc/}"; break; fi
done
if [ -z "$pid" ]; then echo "quench-perf: no process of container $cid on this node" >&2; exit 3; fi
perf record -g -F "$hz" -p "$pid" -o /tmp/perf.data -- sleep "$secs" >/dev/null 2>&1
perf script -i /tmp/perf.data
"#;

/// What the Job needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: String,
    /// The node it runs on.
    pub node: String,
    /// The container's runtime id (hex).
    pub container_id: String,
}

/// The container's runtime id from `containerd://abc...`, checked as hex.
pub fn runtime_id(raw: &str) -> Result<String, KubeError> {
    let id = raw.rsplit("://").next().unwrap_or(raw);
    if (12..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(KubeError::Failed(format!(
            "container id {raw:?} is not a runtime id quench can look for"
        )))
    }
}

/// Finds the pod's node and the container's id.
pub async fn locate(
    kube: &dyn Kube,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<NodeTarget, KubeError> {
    names::label("namespace", namespace)?;
    names::subdomain("pod", pod)?;
    if let Some(c) = container {
        names::label("container", c)?;
    }
    let body = kube
        .get(
            &format!("/api/v1/namespaces/{namespace}/pods/{pod}"),
            4 << 20,
            Duration::from_secs(30),
        )
        .await?;
    let p: Value = serde_json::from_slice(&body)
        .map_err(|e| KubeError::Failed(format!("pod {namespace}/{pod}: not JSON: {e}")))?;
    let node = p["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| KubeError::Failed(format!("pod {namespace}/{pod} is not on a node yet")))?
        .to_string();
    names::subdomain("node", &node)?;
    let statuses = p["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let status = match container {
        Some(c) => statuses.iter().find(|s| s["name"] == c).ok_or_else(|| {
            KubeError::Invalid(format!("pod {namespace}/{pod} has no container {c:?}"))
        })?,
        None if statuses.len() == 1 => &statuses[0],
        None => {
            return Err(KubeError::Invalid(format!(
                "pod {namespace}/{pod} has {} containers: name one with container",
                statuses.len()
            )));
        }
    };
    let raw = status["containerID"].as_str().ok_or_else(|| {
        KubeError::Failed(format!(
            "container {} of {namespace}/{pod} is not running",
            status["name"]
        ))
    })?;
    Ok(NodeTarget {
        namespace: namespace.to_string(),
        pod: pod.to_string(),
        node,
        container_id: runtime_id(raw)?,
    })
}

/// The Job for `t`: pinned to its node, with the host's process table.
pub fn job(t: &NodeTarget, job_namespace: &str, image: &str, hz: u32, seconds: u64) -> Value {
    let labels = json!({
        "app.kubernetes.io/managed-by": "quench",
        "quench.dev/purpose": "perf-record",
    });
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": "quench-perf-",
            "namespace": job_namespace,
            "labels": labels,
            "annotations": {"quench.dev/target": format!("pod/{}/{}", t.namespace, t.pod)},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": seconds + 120,
            "ttlSecondsAfterFinished": 300,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeName": t.node,
                    "hostPID": true,
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "perf",
                        "image": image,
                        "command": ["sh", "-c", SCRIPT, "quench-perf",
                                    t.container_id, hz.to_string(), seconds.to_string()],
                        "securityContext": {"privileged": true},
                        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    }],
                },
            },
        },
    })
}

/// Runs the Job and returns `perf script`'s output. The Job is deleted
/// before this returns, whatever the outcome.
pub async fn record(
    kube: &dyn Kube,
    t: &NodeTarget,
    job_namespace: &str,
    image: &str,
    hz: u32,
    seconds: u64,
    timeout: Duration,
) -> Result<(String, String), KubeError> {
    names::label("job namespace", job_namespace)?;
    let created = kube
        .request(
            http::Method::POST,
            &format!("/apis/batch/v1/namespaces/{job_namespace}/jobs"),
            Some(crate::k8s::Body::json(job(
                t,
                job_namespace,
                image,
                hz,
                seconds,
            ))),
            1 << 20,
            Duration::from_secs(30),
        )
        .await?;
    let created: Value = serde_json::from_slice(&created)
        .map_err(|e| KubeError::Failed(format!("job: not JSON: {e}")))?;
    let name = created["metadata"]["name"]
        .as_str()
        .ok_or_else(|| KubeError::Failed("the API server named no job".into()))?
        .to_string();
    let result = wait_and_read(kube, job_namespace, &name, timeout).await;
    // Delete the Job and its pod, whatever happened.
    let _ = kube
        .request(
            http::Method::DELETE,
            &format!("/apis/batch/v1/namespaces/{job_namespace}/jobs/{name}"),
            Some(crate::k8s::Body::json(json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}))),
            1 << 20,
            Duration::from_secs(30),
        )
        .await;
    result.map(|script| (name, script))
}

async fn wait_and_read(
    kube: &dyn Kube,
    ns: &str,
    job: &str,
    timeout: Duration,
) -> Result<String, KubeError> {
    let deadline = Instant::now() + timeout;
    let list = format!("/api/v1/namespaces/{ns}/pods?labelSelector=job-name%3D{job}");
    loop {
        let body = kube.get(&list, 4 << 20, Duration::from_secs(30)).await?;
        let pods: Value = serde_json::from_slice(&body)
            .map_err(|e| KubeError::Failed(format!("pods of job {job}: not JSON: {e}")))?;
        if let Some(pod) = pods["items"].as_array().and_then(|p| p.first()) {
            let phase = pod["status"]["phase"].as_str().unwrap_or("");
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                names::subdomain("pod", pod_name)?;
                let log = kube
                    .get(
                        &format!("/api/v1/namespaces/{ns}/pods/{pod_name}/log?limitBytes=67108864"),
                        (64 << 20) + (64 << 10),
                        Duration::from_secs(60),
                    )
                    .await?;
                let text = String::from_utf8_lossy(&log).into_owned();
                if phase == "Failed" {
                    let last = text.lines().last().unwrap_or("").trim();
                    return Err(KubeError::Failed(format!(
                        "perf job {ns}/{job} failed on its node: {last}"
                    )));
                }
                return Ok(text);
            }
        }
        if Instant::now() >= deadline {
            return Err(KubeError::Failed(format!(
                "perf job {ns}/{job} did not finish within {}s (deleted)",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> NodeTarget {
        NodeTarget {
            namespace: "shop".into(),
            pod: "web-1".into(),
            node: "ip-10-0-0-1.ec2.internal".into(),
            container_id: "0123456789abcdef0123".into(),
        }
    }

    #[test]
    fn runtime_ids_are_hex_and_nothing_else() {
        assert_eq!(
            runtime_id("containerd://0123456789ABCDEF").unwrap(),
            "0123456789abcdef"
        );
        for bad in [
            "containerd://abc",
            "docker://$(reboot)0123456789",
            "x; rm -rf /",
        ] {
            assert!(runtime_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_job_is_pinned_to_the_node_and_passes_values_as_arguments() {
        let j = job(&target(), "quench-debug", "img:1", 99, 10);
        let spec = &j["spec"]["template"]["spec"];
        assert_eq!(spec["nodeName"], "ip-10-0-0-1.ec2.internal");
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["restartPolicy"], "Never");
        let cmd = &spec["containers"][0]["command"];
        assert_eq!(cmd[0], "sh");
        assert_eq!(cmd[2], SCRIPT, "the script text is fixed");
        assert_eq!(cmd[4], "0123456789abcdef0123");
        assert_eq!((cmd[5].as_str(), cmd[6].as_str()), (Some("99"), Some("10")));
        assert_eq!(j["spec"]["activeDeadlineSeconds"], 130);
        assert_eq!(j["metadata"]["namespace"], "quench-debug");
    }
}
