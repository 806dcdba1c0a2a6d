//! `k8s.exec`. The simulated node has no streaming endpoint, so the
//! protocol is tested against a stand-in API server that speaks it: a
//! WebSocket upgrade on `pods/NAME/exec` with the command as repeated
//! `command=` parameters, subprotocol `v4.channel.k8s.io`, stdout on
//! channel 1, stderr on 2, and the final `metav1.Status` on 3. The real
//! API server is asked too, and its refusal reaches the step.

use std::sync::{Arc, Mutex};

use futures_util::SinkExt;
use quench_connectors::k8s::{KubeClient, KubeSource};
use quench_connectors::steps::{Builtin, Call, StepError, StepRunner, StepType};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// Answers every exec with `stdout`, `stderr` and `status`; keeps the
/// request URIs.
async fn exec_server(
    stdout: &'static str,
    stderr: &'static str,
    status: Value,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let s = s.clone();
            let status = status.clone();
            tokio::spawn(async move {
                // The handshake callback's error type is tungstenite's.
                #[allow(clippy::result_large_err)]
                let callback = |req: &Request, mut resp: Response| {
                    s.lock().unwrap().push(req.uri().to_string());
                    let offered = req
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    assert!(offered.contains("v4.channel.k8s.io"), "{offered}");
                    resp.headers_mut().insert(
                        "sec-websocket-protocol",
                        "v4.channel.k8s.io".parse().unwrap(),
                    );
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(sock, callback).await else {
                    return;
                };
                let frame = |channel: u8, data: &[u8]| {
                    let mut v = vec![channel];
                    v.extend_from_slice(data);
                    Message::Binary(v.into())
                };
                let _ = ws.send(frame(1, stdout.as_bytes())).await;
                let _ = ws.send(frame(2, stderr.as_bytes())).await;
                let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
                let _ = ws.close(None).await;
            });
        }
    });
    (url, seen)
}

fn steps_for(url: &str, dir: &std::path::Path) -> Builtin {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{url}\"}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    Builtin::default().with_kube(Arc::new(KubeClient::new(KubeSource {
        kubeconfig: Some(path),
        ..KubeSource::default()
    })))
}

#[tokio::test]
async fn exec_sends_the_argv_as_arguments_and_collects_output_and_exit_code() {
    quench_tests::init_tls();
    let (url, seen) = exec_server(
        "pool reset: 12 connections closed\n",
        "",
        json!({"metadata": {}, "status": "Success"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let steps = steps_for(&url, dir.path());
    // A label value with shell syntax stays one argument.
    let out = steps
        .run(
            StepType::K8sExec,
            Call::default(),
            &json!({"pod": "web-1", "namespace": "shop", "container": "app",
                    "argv": ["/app/bin/poolctl", "reset", "--pool", "main; rm -rf /"]}),
        )
        .await
        .expect("exec");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["ok"], true);
    assert_eq!(out["stdout"], "pool reset: 12 connections closed\n");
    let uri = seen.lock().unwrap()[0].clone();
    assert!(
        uri.starts_with("/api/v1/namespaces/shop/pods/web-1/exec?"),
        "{uri}"
    );
    let query: Vec<(String, String)> = url_pairs(uri.split_once('?').unwrap().1);
    let commands: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        commands,
        ["/app/bin/poolctl", "reset", "--pool", "main; rm -rf /"]
    );
    for (k, v) in [("container", "app"), ("stdout", "true"), ("stderr", "true")] {
        assert!(query.contains(&(k.into(), v.into())), "{query:?}");
    }
    assert!(!query.iter().any(|(k, v)| k == "stdin" && v == "true"));
}

#[tokio::test]
async fn a_non_zero_exit_fails_the_step_unless_allowed() {
    quench_tests::init_tls();
    let status = json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: exit status 3",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
    let (url, _) = exec_server("", "poolctl: no pool named x\n", status).await;
    let dir = tempfile::tempdir().unwrap();
    let steps = steps_for(&url, dir.path());
    let with = json!({"pod": "web-1", "namespace": "shop", "argv": ["/app/bin/poolctl", "reset", "--pool", "x"]});
    let e = steps
        .run(StepType::K8sExec, Call::default(), &with)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StepError::Failed(m) if m.contains("exited with 3") && m.contains("no pool named x")),
        "{e}"
    );
    let mut allowed = with.clone();
    allowed["allow_failure"] = json!(true);
    let out = steps
        .run(StepType::K8sExec, Call::default(), &allowed)
        .await
        .unwrap();
    assert_eq!(
        (out["ok"].clone(), out["exit_code"].clone()),
        (json!(false), json!(3))
    );
    assert_eq!(out["stderr"], "poolctl: no pool named x\n");
}

#[tokio::test]
async fn the_real_api_server_refuses_exec_on_the_simulated_node_with_its_reason() {
    let cluster = quench_tests::kube::Cluster::get().await;
    let ns = cluster.namespace("exec").await;
    let pods = cluster.deployment(&ns, "web", 1, 8080).await;
    let e = cluster
        .steps()
        .run(
            StepType::K8sExec,
            Call::default(),
            &json!({"pod": pods[0], "namespace": ns, "argv": ["/bin/true"], "timeout_seconds": 10}),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("exec in pod {ns}/{}", pods[0]))
            && e.to_string().contains("no preferred addresses"),
        "{e}"
    );
    // Names never reach the server.
    let e = cluster
        .steps()
        .run(
            StepType::K8sExec,
            Call::default(),
            &json!({"pod": "web-1", "namespace": ns, "container": "app;id", "argv": ["/bin/true"]}),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StepError::Params(_)), "{e}");
}

/// `a=1&b=%2F` into pairs, decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(out).unwrap()
    };
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}
