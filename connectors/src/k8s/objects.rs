//! Kubernetes objects as the mutating steps see them: where an object
//! lives in the API (checked names only), how to read and patch it with or
//! without server-side dry-run, and the revert record every mutating step
//! leaves in its output.

use crate::k8s::KubeError;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::{Body, Kube, names};

/// A JSON merge patch.
pub const MERGE: &str = "application/merge-patch+json";
/// A strategic merge patch (built-in kinds only).
pub const STRATEGIC: &str = "application/strategic-merge-patch+json";
/// A JSON patch (RFC 6902).
pub const JSON_PATCH: &str = "application/json-patch+json";

/// How long one API call may take.
pub const CALL: Duration = Duration::from_secs(30);

/// Where an object is: its API group/version, plural resource, namespace
/// (none for cluster-scoped kinds) and name, each checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObjectRef {
    /// `v1`, `apps/v1`, `chaos-mesh.org/v1alpha1`.
    pub api_version: String,
    /// The plural resource: `deployments`, `podchaos`.
    pub resource: String,
    /// The kind, for messages: `Deployment`.
    pub kind: String,
    /// The namespace, or none for nodes and other cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name.
    pub name: String,
}

/// The built-in kinds steps act on: (kind, apiVersion, resource, namespaced).
const BUILTIN: &[(&str, &str, &str, bool)] = &[
    ("Deployment", "apps/v1", "deployments", true),
    ("StatefulSet", "apps/v1", "statefulsets", true),
    ("DaemonSet", "apps/v1", "daemonsets", true),
    ("ReplicaSet", "apps/v1", "replicasets", true),
    ("Pod", "v1", "pods", true),
    ("Service", "v1", "services", true),
    ("ConfigMap", "v1", "configmaps", true),
    ("Node", "v1", "nodes", false),
    ("Namespace", "v1", "namespaces", false),
];

impl ObjectRef {
    /// A built-in kind (`Deployment`, `Pod`, `Node`, ...), or any kind when
    /// `api_version` and the plural `resource` are given (custom resources).
    /// Names, namespace and scope are checked here, before any request.
    pub fn new(
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        api_version: Option<&str>,
        resource: Option<&str>,
        kube: &dyn Kube,
    ) -> Result<ObjectRef, KubeError> {
        let (api_version, resource, namespaced) = match (api_version, resource) {
            (Some(v), Some(r)) => {
                let group_ok = v
                    .split('/')
                    .all(|part| names::subdomain("apiVersion", part).is_ok());
                if v.is_empty() || v.split('/').count() > 2 || !group_ok {
                    return Err(KubeError::Invalid(format!(
                        "api_version {v:?} must look like v1 or group.example.com/v1"
                    )));
                }
                names::label("resource", r)?;
                (v.to_string(), r.to_string(), namespace.is_some())
            }
            (None, None) => {
                let (_, v, r, ns) = BUILTIN
                    .iter()
                    .find(|(k, ..)| k.eq_ignore_ascii_case(kind))
                    .ok_or_else(|| {
                        KubeError::Invalid(format!(
                            "kind {kind:?} is not built in: give api_version and resource (the plural) for it"
                        ))
                    })?;
                (v.to_string(), r.to_string(), *ns)
            }
            _ => {
                return Err(KubeError::Invalid(
                    "give both api_version and resource, or neither".into(),
                ));
            }
        };
        names::subdomain("name", name)?;
        let namespace = if namespaced {
            let ns = namespace.unwrap_or("default");
            names::label("namespace", ns)?;
            kube.scope().check(ns)?;
            Some(ns.to_string())
        } else {
            None
        };
        let kind = BUILTIN
            .iter()
            .find(|(k, ..)| k.eq_ignore_ascii_case(kind))
            .map(|(k, ..)| k.to_string())
            .unwrap_or_else(|| kind.to_string());
        Ok(ObjectRef {
            api_version,
            resource,
            kind,
            namespace,
            name: name.to_string(),
        })
    }

    /// The collection's path: `/apis/apps/v1/namespaces/shop/deployments`.
    pub fn collection(&self) -> String {
        let base = if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        };
        match &self.namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{}", self.resource),
            None => format!("{base}/{}", self.resource),
        }
    }

    /// The object's path, or a subresource's (`scale`).
    pub fn path(&self, subresource: Option<&str>) -> String {
        match subresource {
            Some(s) => format!("{}/{}/{s}", self.collection(), self.name),
            None => format!("{}/{}", self.collection(), self.name),
        }
    }

    /// How it reads in messages and the audit log: `Deployment shop/web`.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// Appends `dryRun=All` to a path when asked.
pub fn with_dry_run(path: &str, dry_run: bool) -> String {
    match (dry_run, path.contains('?')) {
        (false, _) => path.to_string(),
        (true, false) => format!("{path}?dryRun=All"),
        (true, true) => format!("{path}&dryRun=All"),
    }
}

/// GETs a JSON document.
pub async fn get(kube: &dyn Kube, path: &str) -> Result<Value, KubeError> {
    let body = kube.get(path, 16 << 20, CALL).await?;
    serde_json::from_slice(&body).map_err(|e| KubeError::Failed(format!("{path}: not JSON: {e}")))
}

/// Sends a JSON document and returns the answer.
pub async fn send(
    kube: &dyn Kube,
    method: http::Method,
    path: &str,
    body: Value,
    content_type: &'static str,
) -> Result<Value, KubeError> {
    let answer = kube
        .request(
            method,
            path,
            Some(Body {
                json: body,
                content_type,
            }),
            16 << 20,
            CALL,
        )
        .await?;
    if answer.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&answer).map_err(|e| KubeError::Failed(format!("{path}: not JSON: {e}")))
}

/// Fields of an object that say nothing about what it should be.
const VOLATILE: &[&str] = &[
    "resourceVersion",
    "generation",
    "managedFields",
    "uid",
    "creationTimestamp",
    "selfLink",
];

/// The merge patch that turns `after` back into `before`: every field that
/// changed gets its old value, every field that appeared gets `null`.
/// Status and bookkeeping fields are left out.
pub fn inverse_merge_patch(before: &Value, after: &Value) -> Value {
    fn walk(before: &Value, after: &Value, depth: usize) -> Option<Value> {
        match (before, after) {
            (Value::Object(b), Value::Object(a)) => {
                let mut out = Map::new();
                for (k, av) in a {
                    if depth == 0 && k == "status" {
                        continue;
                    }
                    if depth == 1 && VOLATILE.contains(&k.as_str()) {
                        continue;
                    }
                    match b.get(k) {
                        None => {
                            out.insert(k.clone(), Value::Null);
                        }
                        Some(bv) => {
                            if let Some(p) = walk(bv, av, depth + 1) {
                                out.insert(k.clone(), p);
                            }
                        }
                    }
                }
                for (k, bv) in b {
                    let skipped = (depth == 0 && k == "status")
                        || (depth == 1 && VOLATILE.contains(&k.as_str()));
                    if !skipped && !a.contains_key(k) {
                        out.insert(k.clone(), bv.clone());
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            (b, a) if b == a => None,
            (b, _) => Some(b.clone()),
        }
    }
    walk(before, after, 0).unwrap_or_else(|| json!({}))
}

/// The revert record of a mutating step: which object, and the merge patch
/// that restores what it was. `k8s.revert` applies it.
pub fn revert_record(obj: &ObjectRef, subresource: Option<&str>, patch: Value) -> Value {
    json!({
        "object": obj,
        "subresource": subresource,
        "patch": patch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoKube(super::super::Scope);
    impl Kube for NoKube {
        fn request<'a>(
            &'a self,
            _: http::Method,
            _: &'a str,
            _: Option<Body>,
            _: usize,
            _: Duration,
        ) -> super::super::KubeFuture<'a, Vec<u8>> {
            Box::pin(async { Err(KubeError::Failed("no requests in this test".into())) })
        }
        fn scope(&self) -> &super::super::Scope {
            &self.0
        }
    }

    #[test]
    fn paths_for_builtin_and_custom_kinds() {
        let k = NoKube(Default::default());
        let d = ObjectRef::new("deployment", Some("shop"), "web", None, None, &k).unwrap();
        assert_eq!(
            d.path(Some("scale")),
            "/apis/apps/v1/namespaces/shop/deployments/web/scale"
        );
        assert_eq!(d.label(), "Deployment shop/web");
        let n = ObjectRef::new("Node", Some("shop"), "node-1", None, None, &k).unwrap();
        assert_eq!(n.path(None), "/api/v1/nodes/node-1");
        let c = ObjectRef::new(
            "PodChaos",
            Some("shop"),
            "kill-web",
            Some("chaos-mesh.org/v1alpha1"),
            Some("podchaos"),
            &k,
        )
        .unwrap();
        assert_eq!(
            c.path(None),
            "/apis/chaos-mesh.org/v1alpha1/namespaces/shop/podchaos/kill-web"
        );
        assert_eq!(with_dry_run("/x", true), "/x?dryRun=All");
        assert_eq!(with_dry_run("/x?a=b", true), "/x?a=b&dryRun=All");
    }

    #[test]
    fn bad_names_kinds_and_namespaces_never_become_paths() {
        let k = NoKube(Default::default());
        for (ns, name) in [
            ("shop", "web; rm -rf /"),
            ("../x", "web"),
            ("shop", "../../nodes"),
        ] {
            let e = ObjectRef::new("Deployment", Some(ns), name, None, None, &k).unwrap_err();
            assert!(e.to_string().contains("not a valid Kubernetes name"), "{e}");
        }
        let e = ObjectRef::new("Deployment", Some("kube-system"), "coredns", None, None, &k)
            .unwrap_err();
        assert!(matches!(e, KubeError::Refused(_)));
        assert!(ObjectRef::new("Secret", Some("shop"), "x", None, None, &k).is_err());
        assert!(ObjectRef::new("X", Some("shop"), "x", Some("a/b/c"), Some("xs"), &k).is_err());
    }

    #[test]
    fn the_inverse_patch_restores_changed_and_removes_added_fields() {
        let before = json!({"metadata": {"name": "web", "resourceVersion": "1",
                "annotations": {"a": "1"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}},
            "status": {"replicas": 3}});
        let after = json!({"metadata": {"name": "web", "resourceVersion": "2",
                "annotations": {"a": "1", "b": "2"}},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}},
            "status": {"replicas": 5}});
        assert_eq!(
            inverse_merge_patch(&before, &after),
            json!({"metadata": {"annotations": {"b": null}},
                   "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "app", "image": "web:1"}]}}}})
        );
        assert_eq!(inverse_merge_patch(&before, &before), json!({}));
    }
}
