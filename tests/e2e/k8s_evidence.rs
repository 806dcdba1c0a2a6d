//! Evidence from Kubernetes, against the real API server of
//! scripts/k8s-up.sh: Go evidence from a pod through the API server's pod
//! proxy, the events of a pod, and logs (at the protocol level: the
//! simulated node has no log endpoint).

use std::sync::Arc;

use quench_connectors::k8s::{KubeClient, KubeSource};
use quench_connectors::steps::{Builtin, Call, StepError, StepRunner, StepType};
use quench_tests::kube::Cluster;
use quench_tests::{GoService, http};
use serde_json::{Value, json};

fn runner(kubeconfig: &std::path::Path) -> Builtin {
    Builtin::default().with_kube(Arc::new(KubeClient::new(KubeSource {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        ..KubeSource::default()
    })))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn go_evidence_is_read_from_a_pod_through_the_api_server_pod_proxy() {
    let cluster = Cluster::get().await;
    // The simulated node gives its pods this address; the service listens
    // there, so the API server's proxy to the pod reaches it.
    let svc = GoService::start_on(&format!("{}:0", cluster.pod_ip));
    let port = port_of(&svc.url);
    http()
        .get(format!("{}/leak?n=250", svc.url))
        .send()
        .await
        .unwrap();
    let ns = cluster.namespace("evidence").await;
    let pods = cluster.deployment(&ns, "checkout", 1, port).await;
    let pod = &pods[0];
    let steps = runner(&cluster.kubeconfig);
    let target = json!({"pod": pod, "namespace": ns, "port": port});
    let with = |extra: Value| {
        let mut w = target.clone();
        w.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        w
    };

    let out = steps
        .run(StepType::GoroutineDump, Call::default(), &target)
        .await
        .expect("goroutine dump through the pod proxy");
    assert_eq!(
        out["summary"][0],
        "250 goroutines blocked in main.leakyWorker (chan receive)"
    );
    assert_eq!(out["target"], format!("pod/{ns}/{pod}:{port}"));

    let out = steps
        .run(
            StepType::PprofCapture,
            Call::default(),
            &with(json!({"kind": "goroutine"})),
        )
        .await
        .expect("goroutine profile through the pod proxy");
    let top = out["top"].as_array().unwrap();
    assert!(
        top.iter().any(|r| r["function"] == "main.leakyWorker"
            || r["function"].as_str().unwrap().starts_with("runtime.")),
        "{top:?}"
    );
    assert!(out["total"].as_i64().unwrap() >= 250, "{out}");

    let out = steps
        .run(
            StepType::PprofCapture,
            Call::default(),
            &with(json!({"kind": "cpu", "seconds": 1})),
        )
        .await
        .expect("CPU profile through the pod proxy");
    assert_eq!(out["sample_type"], "cpu");
    assert_eq!(out["target"], format!("pod/{ns}/{pod}:{port}"));

    let out = steps
        .run(
            StepType::TraceCapture,
            Call::default(),
            &with(json!({"seconds": 1})),
        )
        .await
        .expect("trace through the pod proxy");
    assert!(
        out["format"].as_str().unwrap().starts_with("go 1."),
        "{out}"
    );

    let out = steps
        .run(StepType::MetricsScrape, Call::default(), &target)
        .await
        .expect("metrics through the pod proxy");
    assert!(
        out["values"]["go_goroutines"].as_f64().unwrap() >= 250.0,
        "{out}"
    );
}

#[tokio::test]
async fn the_api_servers_refusals_reach_the_step_and_bad_names_never_leave_quench() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("refusals").await;
    let steps = runner(&cluster.kubeconfig);

    let e = steps
        .run(
            StepType::GoroutineDump,
            Call::default(),
            &json!({"pod": "nope", "namespace": ns, "port": 6060}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("pods \"nope\" not found")),
        "{e}"
    );

    // A running pod with nothing listening on the port: the proxy's own
    // error, from the API server.
    let free = quench_tests::free_port();
    let pods = cluster.deployment(&ns, "idle", 1, free).await;
    let e = steps
        .run(
            StepType::PprofCapture,
            Call::default(),
            &json!({"pod": pods[0], "namespace": ns, "port": free, "kind": "heap"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Failed(m) if m.contains("HTTP 500") && m.contains("connection refused")),
        "{e}"
    );

    for (pod, namespace) in [("web; rm -rf /", ns.as_str()), ("web-1", "../kube-system")] {
        let e = steps
            .run(
                StepType::PprofCapture,
                Call::default(),
                &json!({"pod": pod, "namespace": namespace, "port": 6060, "kind": "heap"}),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&e, StepError::Params(m) if m.contains("not a valid Kubernetes name")),
            "{e}"
        );
    }
}

/// The `k8s.events` output for `pod`, once the scheduler's event is there:
/// events are written asynchronously, within a second or so.
async fn pod_events_once_scheduled(steps: &Builtin, ns: &str, pod: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = steps
            .run(
                StepType::K8sEvents,
                Call::default(),
                &json!({"namespace": ns, "kind": "Pod", "name": pod}),
            )
            .await
            .unwrap();
        let scheduled = out["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "Scheduled");
        if scheduled || std::time::Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn k8s_events_reads_what_the_scheduler_said_about_a_pod() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("events").await;
    let pods = cluster.deployment(&ns, "web", 1, 8080).await;
    let steps = runner(&cluster.kubeconfig);
    let pod = &pods[0];
    let out = pod_events_once_scheduled(&steps, &ns, pod).await;
    let summary: Vec<&str> = out["summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        summary.iter().any(|s| s.starts_with(&format!(
            "Normal Scheduled Pod/{pod}: Successfully assigned {ns}/{pod} to localhost"
        ))),
        "{summary:?}"
    );
    assert!(
        out["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["object"] == format!("Pod/{pod}")),
        "the field selector keeps other objects out: {out}"
    );
    // Reads are held to the namespace rules too: kube-system is denied by
    // default, for events, logs and the pod proxy alike.
    for (t, w) in [
        (StepType::K8sEvents, json!({"namespace": "kube-system"})),
        (
            StepType::K8sLogs,
            json!({"namespace": "kube-system", "pod": "x"}),
        ),
        (
            StepType::PprofCapture,
            json!({"namespace": "kube-system", "pod": "x", "port": 6060, "kind": "heap"}),
        ),
    ] {
        let e = steps.run(t, Call::default(), &w).await.unwrap_err();
        assert!(
            e.to_string().contains("namespace kube-system is denied"),
            "{t}: {e}"
        );
    }
    // The namespace as a whole also has the ReplicaSet's and Deployment's.
    let all = steps
        .run(
            StepType::K8sEvents,
            Call::default(),
            &json!({"namespace": ns}),
        )
        .await
        .unwrap();
    let objects: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["object"].as_str().unwrap())
        .collect();
    assert!(objects.contains(&"Deployment/web"), "{objects:?}");
    let warnings = steps
        .run(
            StepType::K8sEvents,
            Call::default(),
            &json!({"namespace": ns, "warnings_only": true}),
        )
        .await
        .unwrap();
    assert_eq!(warnings["count"], 0, "{warnings}");
}

#[tokio::test]
async fn k8s_logs_on_the_simulated_node_report_the_api_servers_reason() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("logs").await;
    let pods = cluster.deployment(&ns, "web", 1, 8080).await;
    let e = runner(&cluster.kubeconfig)
        .run(
            StepType::K8sLogs,
            Call::default(),
            &json!({"namespace": ns, "pod": pods[0]}),
        )
        .await
        .unwrap_err();
    // The simulated node registers no address, so the API server cannot
    // reach its kubelet; the step carries the server's own words.
    assert!(
        e.to_string().contains("no preferred addresses found"),
        "{e}"
    );
}

/// An API server stand-in for the one thing the simulated node cannot do:
/// serve container logs. It keeps each request as the real API server
/// would receive it and gives the answers in order, as the real one does.
async fn log_server(answers: Vec<(u16, &'static str, String)>) -> (String, quench_tests::SeenLog) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    quench_tests::stub_with(move |_| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match answers.get(n) {
            Some((status, content_type, body)) => {
                quench_tests::Reply::Body(*status, content_type, body.clone().into_bytes())
            }
            None => quench_tests::Reply::Json(500, json!({"message": "no more answers"})),
        }
    })
    .await
}

#[tokio::test]
async fn k8s_logs_sends_the_log_request_and_splits_timestamps() {
    quench_tests::init_tls();
    let (url, seen) = log_server(vec![
        (
            200,
            "text/plain",
            "2026-11-27T17:00:00.123456789Z panic: runtime error: invalid memory address\n2026-11-27T17:00:00.2Z goroutine 1 [running]:\n".into(),
        ),
        (
            404,
            "application/json",
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"gone\" not found","reason":"NotFound","code":404}"#.into(),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{token: quench-test-token}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let steps = runner(&kubeconfig);
    let out = steps
        .run(
            StepType::K8sLogs,
            Call::default(),
            &json!({"namespace": "shop", "pod": "web-1", "container": "app",
                    "tail_lines": 2, "previous": true}),
        )
        .await
        .expect("logs");
    assert_eq!(out["count"], 2);
    assert_eq!(out["lines"][0]["time"], "2026-11-27T17:00:00.123456789Z");
    assert_eq!(
        out["lines"][0]["text"],
        "panic: runtime error: invalid memory address"
    );
    assert_eq!(out["window"]["end"], "2026-11-27T17:00:00.2Z");
    assert_eq!(out["target"], "pod/shop/web-1");

    let e = steps
        .run(
            StepType::K8sLogs,
            Call::default(),
            &json!({"namespace": "shop", "pod": "gone"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Refused(m) if m.contains("HTTP 404") && m.contains("pods \"gone\" not found")),
        "{e}"
    );

    let seen = seen.lock().unwrap();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        (
            "GET",
            "/api/v1/namespaces/shop/pods/web-1/log?timestamps=true&tailLines=2&limitBytes=1048576&container=app&previous=true"
        )
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer quench-test-token")
    );
}

/// The whole path through the binary: an alert naming a pod opens an
/// incident whose runbook reads the pod's heap profile and goroutines
/// through the pod proxy and its events; the artifact records the pod as
/// its target, and the timeline lines the evidence up with the events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runbook_collects_pod_evidence_through_the_binary() {
    use std::time::Duration;

    use quench_tests::Quench;

    let cluster = Cluster::get().await;
    let svc = GoService::start_on(&format!("{}:0", cluster.pod_ip));
    let port = port_of(&svc.url);
    let ns = cluster.namespace("binary").await;
    let pods = cluster.deployment(&ns, "checkout", 1, port).await;
    let pod = &pods[0];
    pod_events_once_scheduled(&runner(&cluster.kubeconfig), &ns, pod).await;
    let rb = tempfile::tempdir().unwrap();
    std::fs::write(
        rb.path().join("pod.yaml"),
        r#"version: 1
name: pod-evidence
match:
  matchers: ['alertname="GoroutineLeak"']
steps:
  - id: heap
    uses: pprof.capture
    with: {pod: '{{k8s_name alert.labels.pod}}', namespace: '{{k8s_name alert.labels.namespace}}', port: '{{alert.annotations.pprof_port}}', kind: heap}
  - id: goroutines
    uses: goroutine.dump
    with: {pod: '{{k8s_name alert.labels.pod}}', namespace: '{{k8s_name alert.labels.namespace}}', port: '{{alert.annotations.pprof_port}}'}
  - id: events
    uses: k8s.events
    with: {namespace: '{{k8s_name alert.labels.namespace}}', kind: Pod, name: '{{k8s_name alert.labels.pod}}'}
"#,
    )
    .unwrap();
    let q = Quench::start(
        &format!(
            "kubernetes: {{kubeconfig: '{}'}}\n",
            cluster.kubeconfig.display()
        ),
        rb.path(),
    );
    let client = http();
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing",
                    "labels": {"alertname": "GoroutineLeak", "namespace": ns, "pod": pod},
                    "annotations": {"pprof_port": port.to_string()},
                    "startsAt": "2026-11-27T10:00:00Z", "fingerprint": "leak"}]});
    let r = client
        .post(format!("{}/hooks/alertmanager", q.url))
        .json(&alert)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inc = q
        .wait_for("/api/v1/incidents/inc-1", Duration::from_secs(60), |d| {
            // No verify: the run ends, and the incident stays open.
            (d["run"]["outcome"] == "succeeded" && d["status"] == "open").then(|| d.clone())
        })
        .await;
    let target = format!("pod/{ns}/{pod}:{port}");
    let heap = &inc["steps"][0];
    assert_eq!(heap["state"], "succeeded", "{inc:#}");
    assert_eq!(heap["output"]["target"], target);
    let id = heap["output"]["artifacts"]["profile"].as_str().unwrap();
    let meta = q.get_json(&format!("/api/v1/artifacts/{id}/meta")).await;
    assert_eq!(meta["target"], target, "{meta}");
    assert_eq!(meta["incident"], "inc-1");
    assert_eq!(meta["step"], "heap");
    assert_eq!(meta["kind"], "pprof");
    assert!(meta["window_start"].is_string(), "{meta}");
    assert_eq!(inc["steps"][1]["state"], "succeeded", "{inc:#}");
    assert_eq!(inc["steps"][1]["output"]["target"], target);
    assert_eq!(inc["steps"][2]["state"], "succeeded", "{inc:#}");

    let timeline = q.get_json("/api/v1/incidents/inc-1/timeline").await;
    let entries = timeline["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["lane"] == "evidence"
            && e["detail"] == format!("pprof.capture of {target}: capture window")),
        "{timeline:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["lane"] == "kubernetes"
                && e["detail"].as_str().unwrap().contains("Scheduled")),
        "{timeline:#}"
    );
    let r = client
        .get(format!("{}/api/v1/artifacts/sha256:nope/meta", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// An API server stand-in that answers by method and path prefix, and keeps
/// every request. For what the simulated node cannot do: run a real
/// container.
async fn api_stub(
    routes: Vec<(&'static str, String, u16, String)>,
) -> (String, quench_tests::SeenLog) {
    quench_tests::stub_with(move |seen| {
        routes
            .iter()
            .find(|(m, p, _, _)| *m == seen.method && seen.path.starts_with(p.as_str()))
            .map(|(_, _, status, body)| {
                quench_tests::Reply::Body(*status, "application/json", body.clone().into_bytes())
            })
            .unwrap_or_else(|| {
                quench_tests::Reply::Json(404, json!({"kind": "Status", "message": "not stubbed"}))
            })
    })
    .await
}

fn token_kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    path
}

/// perf.record of a pod, the whole protocol: read the pod, create the Job
/// on its node, wait for it, read `perf script` from its log, fold it, and
/// delete the Job.
#[tokio::test]
async fn perf_record_of_a_pod_runs_a_job_on_its_node_and_deletes_it() {
    quench_tests::init_tls();
    let cid = "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff";
    let pod = json!({"metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"nodeName": "node-7"},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "app", "containerID": format!("containerd://{cid}")}]}});
    let script = "testsvc 4242 100.000001:   10101010 cpu-clock:pppH: \n\t  4a1b2c main.burnCPU+0x2c (/app/testsvc)\n\t  4a1d00 main.(*Server).handle+0x40 (/app/testsvc)\n\t  46e0a1 runtime.goexit+0x1 (/app/testsvc)\n\ntestsvc 4242 100.010001:   10101010 cpu-clock:pppH: \n\t  4a1b2c main.burnCPU+0x30 (/app/testsvc)\n\t  4a1d00 main.(*Server).handle+0x40 (/app/testsvc)\n\t  46e0a1 runtime.goexit+0x1 (/app/testsvc)\n\ntestsvc 4242 100.020001:   10101010 cpu-clock:pppH: \n\t  ffffffff [unknown] ([unknown])\n\t  4a1d00 main.(*Server).handle+0x40 (/app/testsvc)\n\n";
    let (url, seen) = api_stub(vec![
        ("GET", "/api/v1/namespaces/shop/pods/web-1".into(), 200, pod.to_string()),
        ("POST", "/apis/batch/v1/namespaces/shop/jobs".into(), 201,
            json!({"metadata": {"name": "quench-perf-abc12", "namespace": "shop"}}).to_string()),
        ("GET", "/api/v1/namespaces/shop/pods?labelSelector=job-name%3Dquench-perf-abc12".into(), 200,
            json!({"items": [{"metadata": {"name": "quench-perf-abc12-x7k2p"}, "status": {"phase": "Succeeded"}}]}).to_string()),
        ("GET", "/api/v1/namespaces/shop/pods/quench-perf-abc12-x7k2p/log".into(), 200, script.into()),
        ("DELETE", "/apis/batch/v1/namespaces/shop/jobs/quench-perf-abc12".into(), 200, "{}".into()),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let steps = runner(&token_kubeconfig(dir.path(), &url));
    let out = steps
        .run(
            StepType::PerfRecord,
            Call::default(),
            &json!({"pod": "web-1", "namespace": "shop", "image": "registry.example/perf:6.1",
                    "seconds": 5, "hz": 199}),
        )
        .await
        .expect("perf of a pod");
    assert_eq!(out["samples"], 3, "{out:#}");
    assert_eq!(out["top"][0]["function"], "main.burnCPU", "{out:#}");
    assert_eq!(out["unknown_frames"], 1);
    assert_eq!(out["target"], "pod/shop/web-1");
    assert_eq!(out["job"], "quench-perf-abc12 on node node-7");

    let seen = seen.lock().unwrap();
    let methods: Vec<(&str, &str)> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.path.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        methods.first(),
        Some(&("GET", "/api/v1/namespaces/shop/pods/web-1"))
    );
    assert_eq!(
        methods.last(),
        Some(&(
            "DELETE",
            "/apis/batch/v1/namespaces/shop/jobs/quench-perf-abc12"
        )),
        "{methods:?}"
    );
    let job: Value =
        serde_json::from_slice(&seen.iter().find(|r| r.method == "POST").unwrap().body).unwrap();
    let spec = &job["spec"]["template"]["spec"];
    assert_eq!(spec["nodeName"], "node-7");
    assert_eq!(spec["hostPID"], true);
    let cmd = spec["containers"][0]["command"].as_array().unwrap();
    assert_eq!(
        cmd[4], cid,
        "the container id is an argument, not script text"
    );
    assert!(!cmd[2].as_str().unwrap().contains(cid));
    assert_eq!(spec["containers"][0]["image"], "registry.example/perf:6.1");
}

/// Against the real API server: the Job is created on the pod's node with
/// the host's process table, and deleted when it does not finish in time
/// (the simulated node runs no container, so it never does).
#[tokio::test]
async fn a_perf_job_that_does_not_finish_is_deleted() {
    use quench_connectors::k8s::perf_job as perf_node;

    let cluster = Cluster::get().await;
    let ns = cluster.namespace("perf").await;
    let pods = cluster.deployment(&ns, "web", 1, 8080).await;
    let kube = KubeClient::new(KubeSource {
        kubeconfig: Some(cluster.kubeconfig.clone()),
        ..KubeSource::default()
    });
    // The simulated node's container ids are not a runtime's hex ids.
    let e = perf_node::locate(&kube, &ns, &pods[0], None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a runtime id"), "{e}");
    let target = perf_node::NodeTarget {
        namespace: ns.clone(),
        pod: pods[0].clone(),
        node: "localhost".into(),
        container_id: "00112233445566778899aabbccddeeff".into(),
    };
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(cluster.client.clone(), &ns);
    let watch = {
        let jobs = jobs.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                if let Ok(list) = jobs.list(&Default::default()).await
                    && let Some(j) = list.items.into_iter().next()
                {
                    return Some(j);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            None
        })
    };
    let e = perf_node::record(
        &kube,
        &target,
        &ns,
        "registry.example/perf:6.1",
        99,
        1,
        std::time::Duration::from_secs(4),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("did not finish within 4s (deleted)"),
        "{e}"
    );
    let job = watch.await.unwrap().expect("the Job existed while it ran");
    let spec = job.spec.unwrap().template.spec.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("localhost"));
    assert_eq!(spec.host_pid, Some(true));
    // Deleted (the API server may still be finishing the deletion).
    quench_tests::kube::wait_until(
        std::time::Duration::from_secs(20),
        "the Job deleted",
        || async {
            jobs.list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .all(|j| j.metadata.deletion_timestamp.is_some())
                })
                .unwrap_or(false)
        },
    )
    .await;
}
