//! High availability against the real API server: two real `quench serve`
//! processes, one Lease. The leader is killed with SIGKILL during a stream
//! of alerts; the standby takes over with every acknowledged alert; the old
//! leader comes back as a standby and catches up; a standby forwards
//! writes to the leader, and answers 503 with `Retry-After` when there is
//! none.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use quench_tests::kube::{Cluster, wait_until};
use quench_tests::{Quench, free_port, http};
use serde_json::{Value, json};

const TOKEN: &str = "peer-token-for-the-ha-test";
/// Short Lease times, so a takeover takes seconds (the defaults: 15/10/2).
const DURATION: u64 = 6;

struct Replica {
    name: &'static str,
    port: u16,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
}

fn replica(dir: &Path, name: &'static str, ns: &str, kubeconfig: &Path) -> Replica {
    let port = free_port();
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "kubernetes: {{kubeconfig: '{}'}}\nha:\n  enabled: true\n  namespace: {ns}\n  lease_name: quench\n  identity: {name}\n  advertise_url: http://127.0.0.1:{port}\n  peer_token: {TOKEN}\n  lease_duration_seconds: {DURATION}\n  renew_deadline_seconds: 4\n  retry_period_seconds: 1\n  replication: sync\n  replication_timeout_ms: 3000\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    Replica {
        name,
        port,
        config,
        data: dir.join(format!("{name}-data")),
    }
}

fn start(r: &Replica, runbooks: &Path) -> Quench {
    Quench::spawn(&r.config, &r.data, runbooks, Some(r.port))
}

async fn readyz(url: &str) -> Value {
    match http().get(format!("{url}/readyz")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn wait_role(q: &Quench, role: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = readyz(&q.url).await;
        if v["ha"]["role"] == role {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{} never became {role}: {v:#}\nlog:\n{}",
            q.url,
            q.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `first` and waits until it leads, then `second` until it
/// follows.
async fn leader_then_standby(
    first: &Replica,
    second: &Replica,
    runbooks: &Path,
) -> (Quench, Quench) {
    let a = start(first, runbooks);
    wait_role(&a, "leader", Duration::from_secs(20)).await;
    let b = start(second, runbooks);
    wait_role(&b, "standby", Duration::from_secs(20)).await;
    (a, b)
}

/// An Alertmanager delivery of one firing alert `name` for `instance`.
fn alert(name: &str, instance: &str) -> Value {
    json!({"version": "4", "groupKey": "g", "status": "firing", "receiver": "quench",
        "alerts": [{"status": "firing", "labels": {"alertname": name, "instance": instance},
                    "startsAt": "2026-12-01T10:00:00Z", "fingerprint": instance}]})
}

async fn deliver(url: &str, body: &Value) -> reqwest::Result<reqwest::Response> {
    http()
        .post(format!("{url}/hooks/alertmanager"))
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
}

/// One alert of the stream.
async fn post_alert(url: &str, fp: &str) -> reqwest::Result<reqwest::Response> {
    deliver(url, &alert("Storm", fp)).await
}

/// GET a JSON answer.
async fn json_at(url: &str) -> Value {
    http()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn fingerprints(url: &str) -> BTreeSet<String> {
    let v: Value = json_at(&format!("{url}/api/v1/alerts?limit=100000")).await;
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alert"]["fingerprint"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A runbook directory under `dir` whose `storm` runbook opens an incident
/// per `Storm` alert instance and runs a `wait 0s` step.
fn storm_runbook(dir: &Path) -> std::path::PathBuf {
    let rb = dir.join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(
        rb.join("storm.yaml"),
        "version: 1\nname: storm\ngroup_by: [instance]\nmatch:\n  matchers: ['alertname=\"Storm\"']\nsteps:\n  - id: look\n    uses: wait\n    with: {seconds: 0}\n",
    )
    .unwrap();
    rb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_with_every_acknowledged_alert() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("ha").await;
    let dir = tempfile::tempdir().unwrap();
    let rb = storm_runbook(dir.path());
    std::fs::write(
        rb.join("profile.yaml"),
        "version: 1\nname: profile\nmatch:\n  matchers: ['alertname=\"Slow\"']\nsteps:\n  - id: cpu\n    uses: pprof.capture\n    with: {url: '{{alert.annotations.pprof}}', kind: heap}\n",
    )
    .unwrap();
    let svc = quench_tests::GoService::start();
    let (ra, rb_) = (
        replica(dir.path(), "a", &ns, &cluster.kubeconfig),
        replica(dir.path(), "b", &ns, &cluster.kubeconfig),
    );
    let mut a = start(&ra, &rb);
    let leader = wait_role(&a, "leader", Duration::from_secs(20)).await;
    assert_eq!(leader["ha"]["identity"], "a");
    let b = start(&rb_, &rb);
    let standby = wait_role(&b, "standby", Duration::from_secs(20)).await;
    assert_eq!(
        standby["ha"]["leader"],
        format!("http://127.0.0.1:{}", ra.port),
        "{standby:#}"
    );

    // A webhook and an API write sent to the standby reach the leader.
    let r = post_alert(&b.url, "via-standby").await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(
        fingerprints(&a.url).await.contains("via-standby"),
        "forwarded to the leader"
    );
    let r = http()
        .post(format!("{}/api/v1/control/pause", b.url))
        .json(&json!({"reason": "ha test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let paused: Value = json_at(&format!("{}/api/v1/control", a.url)).await;
    assert_eq!(paused["paused"], true, "{paused}");
    // The kill switch comes back to the standby by replication.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: Value = json_at(&format!("{}/api/v1/control", b.url)).await;
        if v["paused"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never copied the pause: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http()
        .post(format!("{}/api/v1/control/resume", b.url))
        .json(&json!({"reason": "ha test done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Sync mode: each answer waited for the standby.
    let v = readyz(&a.url).await;
    assert_eq!(v["ha"]["replication"]["mode"], "sync", "{v:#}");
    assert_eq!(v["ha"]["replication"]["degraded"], false, "{v:#}");

    // Evidence captured on the leader (a heap profile of a real Go
    // service, its flame graph) is copied to the standby.
    let mut slow = alert("Slow", "slow-1");
    slow["alerts"][0]["annotations"] = json!({"pprof": svc.url});
    let r = deliver(&a.url, &slow).await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let flame = loop {
        let v: Value = json_at(&format!("{}/api/v1/incidents?limit=100", a.url)).await;
        let id = v["incidents"].as_array().unwrap().iter().find_map(|i| {
            i["steps"][0]["output"]["artifacts"]["flamegraph"]
                .as_str()
                .map(str::to_string)
        });
        if let Some(id) = id {
            break id;
        }
        assert!(Instant::now() < deadline, "no profile captured: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http()
            .get(format!("{}/api/v1/artifacts/{flame}", b.url))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "image/svg+xml");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flame graph never reached the standby: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The standby stops answering (SIGSTOP): the leader waits for it up
    // to the replication timeout, answers, says it is degraded, answers
    // the next webhook at once, and goes back to sync once the standby
    // has caught up.
    let signal = |sig: &str, q: &Quench| {
        let ok = std::process::Command::new("kill")
            .args([sig, &q.pid().expect("running").to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP", &b);
    let t = Instant::now();
    let r = post_alert(&a.url, "standby-stopped-1").await.unwrap();
    assert_eq!(r.status(), 200);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2900),
        "sync mode did not wait for the standby: {waited:?}"
    );
    let v = readyz(&a.url).await;
    assert_eq!(v["status"], "degraded", "{v:#}");
    assert_eq!(v["ha"]["replication"]["degraded"], true, "{v:#}");
    let metrics = a.get_text("/metrics").await;
    assert!(
        metrics.contains("quench_replication_degraded 1"),
        "{metrics}"
    );
    let t = Instant::now();
    let r = post_alert(&a.url, "standby-stopped-2").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "degraded: no more waiting"
    );
    signal("-CONT", &b);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = readyz(&a.url).await;
        if v["ha"]["replication"]["degraded"] == false && v["status"] == "ready" {
            break;
        }
        assert!(Instant::now() < deadline, "never back to sync: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for fp in ["standby-stopped-1", "standby-stopped-2"] {
        assert!(
            fingerprints(&b.url).await.contains(fp),
            "{fp} reached the standby after it came back"
        );
    }

    // A stream of alerts to the leader; SIGKILL it in the middle; go on
    // sending to the standby (503 until it leads).
    let mut acked: BTreeSet<String> = [
        "slow-1",
        "via-standby",
        "standby-stopped-1",
        "standby-stopped-2",
    ]
    .map(String::from)
    .into();
    let mut sent = 0;
    let mut killed_at = None;
    let mut led_at = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        let target = if killed_at.is_none() { &a.url } else { &b.url };
        let fp = format!("alert-{sent}");
        sent += 1;
        if let Ok(r) = post_alert(target, &fp).await {
            if r.status() == 200 {
                acked.insert(fp);
                if killed_at.is_some() && led_at.is_none() {
                    led_at = Some(Instant::now());
                }
            } else {
                assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
                assert!(r.headers().contains_key("retry-after"));
            }
        }
        if killed_at.is_none() && started.elapsed() > Duration::from_millis(1500) {
            a.kill9();
            killed_at = Some(Instant::now());
        }
        if let Some(t) = led_at
            && t.elapsed() > Duration::from_secs(1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = killed_at.expect("the leader was killed");
    let v = wait_role(&b, "leader", Duration::from_secs(1)).await;
    let takeover = led_at
        .expect("the standby never took an alert")
        .duration_since(killed_at);
    assert!(
        takeover < Duration::from_secs(DURATION + 5),
        "the standby led after {takeover:?}"
    );
    assert!(
        v["ha"]["epoch"].as_u64().unwrap() >= 1,
        "a takeover is a new epoch: {v:#}"
    );
    // Every acknowledged alert is on the new leader.
    let on_b = fingerprints(&b.url).await;
    let lost: Vec<&String> = acked.difference(&on_b).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged alerts lost: {lost:?}\nlog:\n{}",
        lost.len(),
        b.log_text()
    );
    assert!(acked.len() > 20, "a stream: {} acknowledged", acked.len());
    eprintln!(
        "takeover in {takeover:?}; {} alerts acknowledged, {} sent",
        acked.len(),
        sent
    );
    // The new leader's pipeline went on: every alert is in an incident.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = readyz(&b.url).await;
        if v["pipeline_lag_alerts"] == 0 && v["index_lag_changes"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new leader's pipeline is stuck: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The old leader comes back as a standby and catches up: the same
    // alerts, the same incidents in the same states.
    let a = start(&ra, &rb);
    wait_role(&a, "standby", Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (fa, fb) = (fingerprints(&a.url).await, fingerprints(&b.url).await);
        let (ia, ib) = (incident_ids(&a.url).await, incident_ids(&b.url).await);
        let (aa, ab) = (audit_lines(&a.url).await, audit_lines(&b.url).await);
        if fa == fb && ia == ib && !ia.is_empty() && aa == ab {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never converged: alerts {} vs {}, incidents {} vs {}, audit {} vs {}",
            fa.len(),
            fb.len(),
            ia.len(),
            ib.len(),
            aa.len(),
            ab.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(b);
    // The leader is gone and its Lease has not expired: no replica may
    // take the write, so the standby answers 503 with Retry-After.
    let r = post_alert(&a.url, "nobody-leads").await.unwrap();
    assert_eq!(r.status(), 503, "{}", r.text().await.unwrap_or_default());
    let _ = rb_.name;
}

/// The audit log as `seq action detail epoch` lines, and its chain checked.
async fn audit_lines(url: &str) -> Vec<String> {
    let v: Value = json_at(&format!("{url}/api/v1/audit?limit=100000")).await;
    let verify: Value = json_at(&format!("{url}/api/v1/audit/verify")).await;
    assert!(verify["broken"].is_null(), "{url}: {verify}");
    v["audit"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    format!(
                        "{} {} {} {}",
                        e["seq"], e["action"], e["detail"], e["lease_epoch"]
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn incident_ids(url: &str) -> BTreeSet<String> {
    let v: Value = json_at(&format!("{url}/api/v1/incidents?limit=100000")).await;
    v["incidents"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|i| format!("{}:{}", i["id"], i["status"]))
                .collect()
        })
        .unwrap_or_default()
}

/// A receiver that counts the requests it gets and never answers: a
/// destructive step against it is "running" for as long as the test likes.
/// At its first request it SIGKILLs the process `kill` names: the leader
/// dies at the very moment its step acts.
async fn hanging_receiver(
    kill: std::sync::Arc<std::sync::atomic::AtomicU32>,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            if let Ok(n) = conn.read(&mut buf).await
                && buf[..n].starts_with(b"POST /act")
                && c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
            {
                let pid = kill.load(std::sync::atomic::Ordering::SeqCst);
                if pid != 0 {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
            held.push(conn);
        }
    });
    (url, calls)
}

/// SIGKILL of the leader while a destructive step is running: the new
/// leader does not run it again, and the incident says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destructive_step_running_at_the_leaders_death_is_not_run_again() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("ha-act").await;
    let leader_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (receiver, calls) = hanging_receiver(leader_pid.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(
        rb.join("act.yaml"),
        format!(
            "version: 1\nname: act\nmatch:\n  matchers: ['alertname=\"Act\"']\nsteps:\n  - id: act\n    uses: http.request\n    timeout: 10m\n    with: {{method: POST, url: '{receiver}/act', body: {{go: true}}}}\n"
        ),
    )
    .unwrap();
    let (ra, rb_) = (
        replica(dir.path(), "a", &ns, &cluster.kubeconfig),
        replica(dir.path(), "b", &ns, &cluster.kubeconfig),
    );
    let (mut a, b) = leader_then_standby(&ra, &rb_, &rb).await;
    leader_pid.store(a.pid().unwrap(), std::sync::atomic::Ordering::SeqCst);
    let r = deliver(&a.url, &alert("Act", "act-1")).await.unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the step never acted\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The receiver killed the leader as the step acted; the standby had
    // the step's "running" record before that (sync mode).
    a.kill9();
    let v = wait_role(&b, "leader", Duration::from_secs(DURATION + 5)).await;
    assert!(v["ha"]["epoch"].as_u64().unwrap() >= 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    let inc = loop {
        let inc: Value = json_at(&format!("{}/api/v1/incidents/inc-1", b.url)).await;
        if inc["status"] == "interrupted" {
            break inc;
        }
        assert!(
            Instant::now() < deadline,
            "never interrupted: {inc:#}\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let said = inc.to_string();
    assert!(said.contains("may have"), "the reason is given: {inc:#}");
    // Give a second run every chance to happen: it must not.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the destructive step ran twice"
    );
    // The audit log came along: the step's start, by the old leader in its
    // epoch, then the interruption, by the new one in the next.
    let audit: Value = json_at(&format!("{}/api/v1/audit?incident=inc-1", b.url)).await;
    let epoch_of = |action: &str| {
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == action)
            .map(|e| e["lease_epoch"].clone())
            .unwrap_or_else(|| panic!("no {action} entry: {audit:#}"))
    };
    let started = epoch_of("step.start");
    assert_eq!(epoch_of("run.interrupted"), v["ha"]["epoch"], "{audit:#}");
    assert!(
        started.as_u64().unwrap() < v["ha"]["epoch"].as_u64().unwrap(),
        "{audit:#}"
    );
}

/// The leader loses the API server (a TCP proxy in front of it, stopped):
/// it stops acting and exits before its Lease can expire, the standby
/// takes over, and an alert's destructive step then runs once, on the new
/// leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_leads() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("ha-cut").await;
    let proxy = quench_tests::kube::ApiProxy::start("127.0.0.1:6443").await;
    let dir = tempfile::tempdir().unwrap();
    let proxied = proxy.kubeconfig(&cluster.kubeconfig, dir.path());
    let (url, seen) = quench_tests::stub(|_| (200, json!({"ok": true}))).await;
    let rb = dir.path().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(
        rb.join("act.yaml"),
        format!(
            "version: 1\nname: act\nmatch:\n  matchers: ['alertname=\"Act\"']\nsteps:\n  - id: act\n    uses: http.request\n    with: {{method: POST, url: '{url}/act', body: {{go: true}}}}\n"
        ),
    )
    .unwrap();
    let (ra, rb_) = (
        replica(dir.path(), "a", &ns, &proxied),
        replica(dir.path(), "b", &ns, &cluster.kubeconfig),
    );
    let (a, b) = leader_then_standby(&ra, &rb_, &rb).await;
    let mut child_of_a = a;
    proxy.stop();
    let cut = Instant::now();
    // The old leader exits (its renew deadline is 4 s), and only then may
    // the standby lead (the Lease lasts 6 s from its last renewal).
    let deadline = Instant::now() + Duration::from_secs(15);
    let exited = loop {
        if readyz(&child_of_a.url).await.is_null() {
            break cut.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the cut-off leader never stopped\n{}",
            child_of_a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        child_of_a.log_text().contains("lease lost"),
        "it says why it stopped:\n{}",
        child_of_a.log_text()
    );
    let standby_state = readyz(&b.url).await;
    assert_eq!(
        standby_state["ha"]["role"], "standby",
        "nobody may lead before the old leader has stopped: {standby_state:#}"
    );
    wait_role(&b, "leader", Duration::from_secs(DURATION + 5)).await;
    let led = cut.elapsed();
    assert!(
        exited < led,
        "stopped after {exited:?}, the standby led after {led:?}"
    );
    child_of_a.kill9();
    let r = deliver(&b.url, &alert("Act", "act-after-cut"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the new leader never acted\n{}",
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.lock().unwrap().len(), 1, "one alert, one action");
    eprintln!("cut off: the leader stopped after {exited:?}, the standby led after {led:?}");
}

/// A standby that joins a leader with a history (a replaced node, a new
/// volume) copies every record page by page, then follows the change feed
/// from where the copy began: the replicas converge, and later changes
/// arrive by the feed. The same copy serves a standby the feed no longer
/// reaches back to (more than a million changes behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_standby_copies_every_record_then_follows_the_feed() {
    let cluster = Cluster::get().await;
    let ns = cluster.namespace("ha-join").await;
    let dir = tempfile::tempdir().unwrap();
    let rb = storm_runbook(dir.path());
    let (ra, rb_) = (
        replica(dir.path(), "a", &ns, &cluster.kubeconfig),
        replica(dir.path(), "b", &ns, &cluster.kubeconfig),
    );
    let a = start(&ra, &rb);
    wait_role(&a, "leader", Duration::from_secs(20)).await;
    // Alone, sync mode waits for no one after its first timeout.
    for i in 0..40 {
        let r = post_alert(&a.url, &format!("before-{i}")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    wait_until(
        Duration::from_secs(60),
        "40 incidents on the leader",
        || async { incident_ids(&a.url).await.len() == 40 },
    )
    .await;
    let b = start(&rb_, &rb);
    wait_role(&b, "standby", Duration::from_secs(20)).await;
    let (a_url, b_url) = (a.url.as_str(), b.url.as_str());
    let converged = |more: usize| {
        wait_until(
            Duration::from_secs(60),
            "the same incidents on the standby as on the leader",
            move || async move {
                let (ia, ib) = (incident_ids(a_url).await, incident_ids(b_url).await);
                ia.len() == 40 + more && ia == ib
            },
        )
    };
    converged(0).await;
    let log = b.log_text();
    assert!(log.contains("copying every record"), "{log}");
    assert!(log.contains("full copy of the records done"), "{log}");
    // After the copy, the feed: new incidents and their steps arrive.
    for i in 0..5 {
        let r = post_alert(&a.url, &format!("after-{i}")).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    converged(5).await;
    assert_eq!(fingerprints(&a.url).await, fingerprints(&b.url).await);
    assert_eq!(
        b.log_text().matches("copying every record").count(),
        1,
        "one copy, then the feed"
    );
}
