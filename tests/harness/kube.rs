//! The real Kubernetes control plane that `scripts/k8s-up.sh` starts: a
//! kube-apiserver 1.20 with etcd, controller manager, scheduler and one
//! simulated node, inside a private network namespace. The tests run in
//! that namespace (scripts/test.sh arranges it) and read where it is from
//! the environment.
//!
//! Each test works in a namespace of its own, so tests run in parallel and
//! never see each other's objects.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

/// The running control plane.
pub struct Cluster {
    /// An admin kubeconfig (client certificate in `system:masters`).
    pub kubeconfig: PathBuf,
    /// The address the simulated node gives every pod. It is on the
    /// network namespace's loopback, so a server listening there is what
    /// the API server's pod proxy reaches for any pod.
    pub pod_ip: String,
    /// An admin client.
    pub client: kube::Client,
}

const HOW: &str = "the Kubernetes tests need the real control plane of scripts/k8s-up.sh \
(kube-apiserver, etcd, a simulated node) and must run inside its network namespace. \
Run the tests with scripts/test.sh, which builds the binaries once (scripts/k8s-build.sh), \
starts the control plane and runs every test inside it; or by hand:\n  \
scripts/k8s-up.sh && set -a && . /tmp/quench-k8s/env && set +a && \
ip netns exec \"$QUENCH_TEST_NETNS\" cargo nextest run";

impl Cluster {
    /// Connects to the control plane, or fails loudly saying how to start it.
    pub async fn get() -> Cluster {
        crate::init_tls();
        let kubeconfig = PathBuf::from(
            std::env::var("QUENCH_TEST_KUBECONFIG")
                .unwrap_or_else(|_| panic!("QUENCH_TEST_KUBECONFIG is not set: {HOW}")),
        );
        let pod_ip = std::env::var("QUENCH_TEST_POD_IP")
            .unwrap_or_else(|_| panic!("QUENCH_TEST_POD_IP is not set: {HOW}"));
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .unwrap_or_else(|e| panic!("{}: {e}: {HOW}", kubeconfig.display()));
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
        let client = kube::Client::try_from(config).expect("a kube client");
        if let Err(e) = client.apiserver_version().await {
            panic!("the API server does not answer ({e}): {HOW}");
        }
        Cluster {
            kubeconfig,
            pod_ip,
            client,
        }
    }

    /// quench's steps, reaching this cluster with the admin kubeconfig.
    pub fn steps(&self) -> quench_connectors::steps::Builtin {
        quench_connectors::steps::Builtin::default().with_kube(std::sync::Arc::new(
            quench_connectors::k8s::KubeClient::new(quench_connectors::k8s::KubeSource {
                kubeconfig: Some(self.kubeconfig.clone()),
                ..Default::default()
            }),
        ))
    }

    /// GETs an object as JSON, through the admin client.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let req = http::Request::get(path).body(Vec::new()).expect("request");
        self.client
            .request::<serde_json::Value>(req)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Sends a JSON body (`content_type` for patches) through the admin
    /// client; returns the answer, or the API server's error.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: serde_json::Value,
        content_type: &str,
    ) -> Result<serde_json::Value, kube::Error> {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(serde_json::to_vec(&body).expect("JSON"))
            .expect("request");
        self.client.request::<serde_json::Value>(req).await
    }

    /// Installs a Chaos Mesh-style `PodChaos` CRD (once; later calls find
    /// it there) and waits until its objects can be created.
    pub async fn install_podchaos_crd(&self) {
        self.install_chaos_mesh_crd("PodChaos", "podchaos").await;
    }

    /// Installs a Chaos Mesh-style CRD for `kind` (plural `plural`), with
    /// no controller: enough for the objects' lifecycle.
    pub async fn install_chaos_mesh_crd(&self, kind: &str, plural: &str) {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.chaos-mesh.org")},
            "spec": {
                "group": "chaos-mesh.org", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": plural, "listKind": format!("{kind}List")},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        });
        match self
            .send(
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                crd,
                "application/json",
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("install the {kind} CRD: {e}"),
        }
        let path = format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plural}.chaos-mesh.org"
        );
        wait_until(Duration::from_secs(30), "the CRD established", || async {
            let req = http::Request::get(path.as_str())
                .body(Vec::new())
                .expect("request");
            self.client
                .request::<serde_json::Value>(req)
                .await
                .ok()
                .and_then(|crd| {
                    crd["status"]["conditions"].as_array().map(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    })
                })
                .unwrap_or(false)
        })
        .await;
    }

    /// A fresh namespace named `prefix-N-PID`, ready for pods (its default
    /// service account exists).
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            N.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "the default service account",
            || async { sas.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        name
    }

    /// The tainted second node that drain tests may cordon and drain.
    pub fn drain_node(&self) -> String {
        std::env::var("QUENCH_TEST_DRAIN_NODE")
            .unwrap_or_else(|_| panic!("QUENCH_TEST_DRAIN_NODE is not set: {HOW}"))
    }

    /// Creates a Deployment of `replicas` pods whose one container declares
    /// `port`, and waits until they all run. Returns the pod names.
    pub async fn deployment(&self, ns: &str, name: &str, replicas: i32, port: u16) -> Vec<String> {
        self.deployment_with(ns, name, replicas, port, json!({}))
            .await
    }

    /// Empties the drain node for a test that counts what a drain evicts:
    /// uncordons it (a failed run may have left it cordoned), deletes the
    /// namespace of every pod on it (earlier runs' pods, even a budget) and
    /// waits until none is left. The tests that use the node run one at a
    /// time (the `drain-node` group of .config/nextest.toml).
    pub async fn clear_drain_node(&self) {
        let node = self.drain_node();
        self.send(
            "PATCH",
            &format!("/api/v1/nodes/{node}"),
            json!({"spec": {"unschedulable": null}}),
            "application/merge-patch+json",
        )
        .await
        .unwrap_or_else(|e| panic!("uncordon {node}: {e}"));
        let on_node = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{node}");
        let pods = self.get_json(&on_node).await;
        let mut namespaces: Vec<&str> = pods["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| p["metadata"]["namespace"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        namespaces.sort_unstable();
        namespaces.dedup();
        for ns in namespaces {
            assert!(
                !ns.starts_with("kube-") && ns != "default",
                "{ns} has a pod on the drain node: only tests put pods there"
            );
            let _ = self
                .send(
                    "DELETE",
                    &format!("/api/v1/namespaces/{ns}"),
                    json!({}),
                    "application/json",
                )
                .await;
        }
        wait_until(Duration::from_secs(60), "the drain node empty", || async {
            let pods = self.get_json(&on_node).await;
            pods["items"]
                .as_array()
                .is_some_and(|items| items.is_empty())
        })
        .await;
    }

    /// A Deployment (as [`Cluster::deployment`]) whose pods run on the drain
    /// node only.
    pub async fn deployment_on_drain_node(
        &self,
        ns: &str,
        name: &str,
        replicas: i32,
    ) -> Vec<String> {
        let pod_spec = json!({
            "nodeSelector": {"kubernetes.io/hostname": self.drain_node()},
            "tolerations": [{"key": "quench.dev/drain-test", "operator": "Exists", "effect": "NoSchedule"}]
        });
        self.deployment_with(ns, name, replicas, 8080, pod_spec)
            .await
    }

    async fn deployment_with(
        &self,
        ns: &str,
        name: &str,
        replicas: i32,
        port: u16,
        pod_spec: serde_json::Value,
    ) -> Vec<String> {
        let mut spec = json!({"containers": [{
            "name": "app",
            "image": "quench-testsvc:1",
            "ports": [{"containerPort": port}]
        }]});
        spec.as_object_mut()
            .expect("object")
            .extend(pod_spec.as_object().expect("object").clone());
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": spec
                }
            }
        }))
        .expect("deployment");
        Api::<Deployment>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &d)
            .await
            .unwrap_or_else(|e| panic!("create deployment {ns}/{name}: {e}"));
        self.running_pods(ns, name, replicas as usize).await
    }

    /// Waits until exactly `n` pods labelled `app=name` run with an IP.
    pub async fn running_pods(&self, ns: &str, app: &str, n: usize) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("app={app}"));
        let mut names = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(list) = pods.list(&lp).await {
                names = list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        let status = p.status.as_ref();
                        status.and_then(|s| s.phase.as_deref()) == Some("Running")
                            && status.and_then(|s| s.pod_ip.as_deref()).is_some()
                    })
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                if names.len() == n {
                    names.sort();
                    return names;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{app}: {} of {n} pods running after 60s: {names:?}",
                names.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `check` every 200 ms until it holds, or fails after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not there after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP proxy in front of the API server, so a test can take "the API
/// server" away mid-runbook without stopping the one every test shares:
/// `stop` closes the listening socket and every open connection.
pub struct ApiProxy {
    /// Where it listens (127.0.0.1).
    pub port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ApiProxy {
    /// Proxies 127.0.0.1:PORT to `target` (`127.0.0.1:6443`).
    pub async fn start(target: &str) -> ApiProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = tasks.clone();
        let target = target.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                t.lock().expect("tasks").push(conn);
            }
        });
        tasks.lock().expect("tasks").push(accept);
        ApiProxy { port, tasks }
    }

    /// The API server is gone, as far as anyone behind the proxy can tell.
    pub fn stop(&self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }

    /// A copy of `kubeconfig` whose server is this proxy.
    pub fn kubeconfig(&self, admin: &std::path::Path, dir: &std::path::Path) -> PathBuf {
        let text = std::fs::read_to_string(admin).expect("kubeconfig");
        let text = text
            .lines()
            .map(|l| match l.trim().strip_prefix("server: ") {
                Some(_) => format!("    server: https://127.0.0.1:{}", self.port),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.join("proxied.kubeconfig");
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
