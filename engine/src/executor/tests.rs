//! The executor's guards, attempts, verification and recovery, against
//! a fake step runner.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use quench_connectors::steps::{Acts, Call, StepError, StepFuture, StepType};
use quench_connectors::{AlertStatus, Source};
use quench_knowledge::{AlertRecord, AlertState, Attach, Opening, RunOutcome};
use serde_json::json;

use super::*;

/// Steps in these tests use `k8s.wait` (read-only) and
/// `k8s.rollout_restart` (destructive); see [`runbook`] for how the
/// fake's own parameters (`key`, `fail`, `sleep`) get past lint.
/// Behaves as its parameters say: `sleep` seconds, then fail the first
/// `fail` attempts (counted per `key`). Records concurrency per target.
#[derive(Default)]
struct Fake {
    attempts: Mutex<HashMap<String, u32>>,
    calls: AtomicUsize,
    dry_runs: AtomicUsize,
    running: Mutex<HashMap<String, usize>>,
    max_running: AtomicUsize,
}

/// What a fake step acts on: `namespace` and `name` (or `deployment`,
/// `pod`, `node`), as the real steps read them.
fn acts_of(with: &Value) -> Acts {
    let name = ["name", "deployment", "pod", "node"]
        .iter()
        .find_map(|k| with[*k].as_str());
    Acts::maybe(with["namespace"].as_str(), name)
}

impl StepRunner for Fake {
    /// Fake steps take fake parameters: the target is `namespace` and
    /// `name` (or `deployment`, `pod`, `node`), as the real ones read.
    fn check(
        &self,
        _step: StepType,
        with: &Value,
    ) -> Result<quench_connectors::steps::Checked, StepError> {
        Ok(quench_connectors::steps::Checked {
            target: acts_of(with),
            urls: ["url", "server"]
                .iter()
                .filter_map(|k| with[*k].as_str().map(str::to_string))
                .collect(),
        })
    }

    fn run<'a>(&'a self, _step: StepType, call: Call<'a>, with: &'a Value) -> StepFuture<'a> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if call.dry_run {
                self.dry_runs.fetch_add(1, Ordering::SeqCst);
            }
            let key = with["key"].as_str().unwrap_or("k").to_string();
            let target = acts_of(with).key();
            {
                let mut r = self.running.lock().unwrap();
                let n = r.entry(target.clone()).or_default();
                *n += 1;
                self.max_running.fetch_max(*n, Ordering::SeqCst);
            }
            if let Some(s) = with["sleep"].as_f64() {
                tokio::time::sleep(Duration::from_secs_f64(s)).await;
            }
            *self.running.lock().unwrap().get_mut(&target).unwrap() -= 1;
            let n = {
                let mut a = self.attempts.lock().unwrap();
                let n = a.entry(key).or_default();
                *n += 1;
                *n
            };
            if u64::from(n) <= with["fail"].as_u64().unwrap_or(0) {
                Err(StepError::Failed(format!("fake failure {n}")))
            } else {
                Ok(json!({"ok": true, "attempt": n}))
            }
        })
    }
}

struct World {
    _dir: tempfile::TempDir,
    exec: Arc<Executor>,
    fake: Arc<Fake>,
    /// The executor's wall clock: it stands still unless a test moves it.
    clock: quench_knowledge::ManualClock,
}

/// Where every test's wall clock starts.
fn t0() -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn world(config: ExecConfig) -> World {
    world_with(config, None)
}

fn world_with(config: ExecConfig, ha: Option<Arc<crate::ha::Ha>>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let fake = Arc::new(Fake::default());
    // Tests here pause tokio's clock: writes run inline (see there).
    let writer = quench_knowledge::Writer::inline(db.clone());
    let mut exec = Executor::new(
        IncidentStore::open(&db, writer.clone()).unwrap(),
        AuditLog::open(&db, writer.clone()).unwrap(),
        Control::open(&db, writer).unwrap(),
        fake.clone(),
        config,
    );
    let clock = quench_knowledge::ManualClock::at(t0());
    exec.clock = Arc::new(clock.clone());
    exec.ha = ha;
    World {
        _dir: dir,
        exec: Arc::new(exec),
        fake,
        clock,
    }
}

/// Parses a runbook whose steps may carry the fake's script (`key`,
/// `fail`, `sleep`) in `with`. Lint would refuse those names for real
/// step types, so they are taken out before parsing and put back into
/// the parsed steps, where only the fake reads them.
fn runbook(yaml: &str) -> Runbook {
    const SCRIPT: [&str; 3] = ["key", "fail", "sleep"];
    let mut doc: Value = serde_saphyr::from_str(yaml).unwrap();
    let mut scripts: HashMap<String, serde_json::Map<String, Value>> = HashMap::new();
    let mut added: HashMap<String, Vec<&str>> = HashMap::new();
    let mut take = |slot: String, with: &mut Value| {
        if let Some(w) = with.as_object_mut() {
            let script: serde_json::Map<String, Value> = SCRIPT
                .iter()
                .filter_map(|k| w.remove(*k).map(|v| (k.to_string(), v)))
                .collect();
            scripts.insert(slot, script);
        }
    };
    // `get_mut`, not indexing: indexing would add the missing keys.
    for section in ["steps", "on_failure"] {
        let steps = doc.get_mut(section).and_then(Value::as_array_mut);
        for step in steps.into_iter().flatten() {
            let id = step["id"].as_str().unwrap_or("").to_string();
            let slot = format!("{section}/{id}");
            give_wait(step, &slot, &mut added);
            if let Some(with) = step.get_mut("with") {
                take(slot, with);
            }
        }
    }
    if let Some(v) = doc.get_mut("verify") {
        give_wait(v, "verify", &mut added);
    }
    if let Some(with) = doc.get_mut("verify").and_then(|v| v.get_mut("with")) {
        take("verify".into(), with);
    }
    let text = serde_saphyr::to_string(&doc).unwrap();
    let mut rb = quench_runbooks::parse_runbook(Path::new("t.yaml"), "t.yaml", &text)
        .unwrap_or_else(|e| panic!("{e:#?}"));
    let put = |slot: String, with: &mut serde_json::Map<String, Value>| {
        if let Some(script) = scripts.get(&slot) {
            with.extend(script.clone());
        }
        for k in added.get(&slot).into_iter().flatten() {
            with.remove(*k);
        }
    };
    for s in &mut rb.steps {
        put(format!("steps/{}", s.id), &mut s.with);
    }
    for s in &mut rb.on_failure {
        put(format!("on_failure/{}", s.id), &mut s.with);
    }
    if let Some(v) = rb.verify.as_mut() {
        put("verify".into(), &mut v.with);
    }
    rb
}

/// What `k8s.wait` requires, given for lint's sake where a test leaves it
/// out, and noted so [`runbook`] takes it back out (the fake reads none
/// of it).
fn give_wait(step: &mut Value, slot: &str, added: &mut HashMap<String, Vec<&'static str>>) {
    const WAIT: [(&str, &str); 3] = [
        ("kind", "Deployment"),
        ("name", "fake"),
        ("for", "available"),
    ];
    if step["uses"] != "k8s.wait" {
        return;
    }
    let with = step
        .as_object_mut()
        .unwrap()
        .entry("with")
        .or_insert_with(|| json!({}));
    for (k, v) in WAIT {
        let named = k == "name" && (with.get("deployment").is_some() || with.get("pod").is_some());
        if with.get(k).is_none() && !named {
            with[k] = json!(v);
            added.entry(slot.to_string()).or_default().push(k);
        }
    }
}

fn alert(service: &str) -> Alert {
    Alert {
        source: Source::Alertmanager,
        fingerprint: format!("fp-{service}"),
        status: AlertStatus::Firing,
        labels: BTreeMap::from([
            ("alertname".to_string(), "X".to_string()),
            ("service".to_string(), service.to_string()),
            ("namespace".to_string(), "shop".to_string()),
        ]),
        annotations: BTreeMap::new(),
        starts_at: None,
        ends_at: None,
        meta: BTreeMap::new(),
        idempotency_key: String::new(),
        raw_ref: String::new(),
    }
}

fn open_incident(w: &World, a: &Alert, seq: u64) -> String {
    let rec = AlertRecord {
        seq,
        source: "alertmanager".into(),
        fingerprint: a.fingerprint.clone(),
        state: AlertState::Firing,
        labels: a.labels.clone(),
        annotations: BTreeMap::new(),
        starts_at: None,
        ends_at: None,
        first_received_at: Utc::now(),
        notifications: 1,
    };
    match w
        .exec
        .incidents
        .attach_blocking(
            &a.fingerprint,
            &Opening {
                title: "t".into(),
                ..Default::default()
            },
            rec,
            Utc::now(),
        )
        .unwrap()
    {
        Attach::Opened(r) => r.id,
        other => panic!("{other:?}"),
    }
}

fn steps(w: &World, id: &str) -> Vec<StepRecord> {
    w.exec.incidents.get(id).unwrap().unwrap().steps
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: flaky\n    uses: k8s.wait\n    retries: {attempts: 3, backoff: 2s}\n    with: {fail: 2}\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    let t = Instant::now();
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    let s = &steps(&w, &id)[0];
    assert_eq!((s.state, s.attempts), (StepState::Succeeded, 3));
    // 2 s then 4 s, each plus at most a quarter of jitter.
    let e = t.elapsed();
    assert!(
        e >= Duration::from_secs(6) && e <= Duration::from_millis(7500),
        "{e:?}"
    );
    // No verify: the run is over, and the incident waits for its alerts.
    let r = w.exec.incidents.get(&id).unwrap().unwrap();
    assert_eq!(r.status, IncidentStatus::Open);
    assert_eq!(r.run.unwrap().outcome, RunOutcome::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_fails_the_step_and_runs_on_failure() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: slow\n    uses: k8s.wait\n    timeout: 5s\n    with: {sleep: 60}\n  - id: never\n    uses: k8s.wait\non_failure:\n  - id: page\n    uses: k8s.wait\n    with: {key: page}\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    let t = Instant::now();
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Escalated);
    assert_eq!(t.elapsed(), Duration::from_secs(5));
    let s = steps(&w, &id);
    assert_eq!(s[0].state, StepState::Failed);
    assert!(
        s[0].reason.contains("timed out after 5s"),
        "{}",
        s[0].reason
    );
    assert_eq!(s[1].state, StepState::Skipped);
    assert_eq!(s[2].state, StepState::Succeeded, "on_failure ran");
    assert_eq!(
        w.exec.incidents.get(&id).unwrap().unwrap().status,
        IncidentStatus::Escalated
    );
}

/// A URL built from an alert label names a host outside the allowlist:
/// the step fails before it runs, saying why.
#[tokio::test(start_paused = true)]
async fn a_host_outside_allowed_hosts_is_never_contacted() {
    let w = world(ExecConfig {
        allowed_hosts: Some(
            quench_connectors::hosts::HostAllowlist::parse(&["127.0.0.1".to_string()]).unwrap(),
        ),
        ..ExecConfig::default()
    });
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: scrape\n    uses: metrics.scrape\n    with: {url: 'http://{{alert.labels.instance}}/metrics'}\n",
    );
    let mut a = alert("a");
    a.labels.insert("instance".into(), "169.254.169.254".into());
    let id = open_incident(&w, &a, 1);
    assert_ne!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    let s = &steps(&w, &id)[0];
    assert_eq!(s.state, StepState::Failed);
    assert!(
        s.reason
            .contains("host 169.254.169.254 is not in executor.allowed_hosts"),
        "{}",
        s.reason
    );
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);

    let mut a = alert("b");
    a.labels.insert("instance".into(), "127.0.0.1:6060".into());
    let id = open_incident(&w, &a, 2);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
}

const DESTRUCTIVE: &str = "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: evidence\n    uses: k8s.wait\n    with: {key: ev}\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: '{{alert.labels.service}}', key: '{{alert.labels.service}}'}\n";

#[tokio::test(start_paused = true)]
async fn the_kill_switch_blocks_destructive_steps_only() {
    let w = world(ExecConfig::default());
    w.exec
        .control
        .set_blocking(true, "alice", "freeze")
        .unwrap();
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    assert_eq!(
        w.exec.run(&id, &rb, &a).await,
        RunEnd::Failed,
        "no on_failure to escalate to"
    );
    let s = steps(&w, &id);
    assert_eq!(
        s[0].state,
        StepState::Succeeded,
        "evidence is still gathered"
    );
    assert_eq!(s[1].state, StepState::Blocked);
    assert!(s[1].reason.contains("kill switch"));
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
    let audit = w.exec.audit.list(10, Some(&id)).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == AuditAction::StepBlocked
                && e.target.as_deref() == Some("shop/cart"))
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_reports_and_changes_nothing() {
    let w = world(ExecConfig {
        dry_run: true,
        ..Default::default()
    });
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    let s = steps(&w, &id);
    assert_eq!(s[1].state, StepState::DryRun);
    assert_eq!(s[1].rendered["name"], "cart");
    // A Kubernetes step is asked to dry-run itself on the server
    // (`Call::dry_run`); it answers, and nothing is marked as done.
    assert_eq!(
        w.fake.calls.load(Ordering::SeqCst),
        2,
        "the evidence step, and the restart's dry-run"
    );
    assert_eq!(
        w.fake.dry_runs.load(Ordering::SeqCst),
        1,
        "only the restart"
    );
    assert!(
        s[1].reason.contains("API server checked it"),
        "{}",
        s[1].reason
    );
    assert_eq!(s[1].output["ok"], true);
}

#[tokio::test(start_paused = true)]
async fn a_resolved_alert_cancels_the_pending_destructive_step() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: evidence\n    uses: k8s.wait\n    with: {sleep: 30, key: ev}\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
    );
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let exec = w.exec.clone();
    let (id2, a2) = (id.clone(), a.clone());
    let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The alert resolves while evidence is being gathered.
    w.exec
        .incidents
        .update_blocking(&id, |r| r.alerts[0].state = AlertState::Resolved)
        .unwrap();
    assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
    let s = steps(&w, &id);
    assert_eq!(s[1].state, StepState::Blocked);
    assert!(s[1].reason.contains("resolved"));
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn approvals_approve_reject_and_time_out() {
    let gate = |on_timeout: &str| {
        format!(
            "version: 1\nname: r\nmatch: {{}}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {{required: true, timeout: 15m, on_timeout: {on_timeout}}}\n    with: {{namespace: shop, name: cart}}\n"
        )
    };
    // approve
    let w = world(ExecConfig::default());
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let rb = runbook(&gate("fail"));
    let (exec, id2, a2) = (w.exec.clone(), id.clone(), a.clone());
    let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(steps(&w, &id)[0].state, StepState::AwaitingApproval);
    assert_eq!(
        w.exec.approvals.pending(),
        [(id.clone(), "restart".to_string())]
    );
    assert!(
        w.exec
            .approvals
            .answer(&id, "restart", Verdict::Approve { by: "alice".into() })
    );
    assert_eq!(run.await.unwrap(), RunEnd::Completed);
    assert_eq!(steps(&w, &id)[0].state, StepState::Succeeded);
    let audit = w.exec.audit.list(20, Some(&id)).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == AuditAction::ApprovalApproved && e.actor == "alice")
    );

    // reject
    let w = world(ExecConfig::default());
    let id = open_incident(&w, &a, 1);
    let rb = runbook(&gate("fail"));
    let (exec, id2, a2) = (w.exec.clone(), id.clone(), a.clone());
    let run = tokio::spawn(async move { exec.run(&id2, &rb, &a2).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.exec.approvals.answer(
        &id,
        "restart",
        Verdict::Reject {
            by: "bob".into(),
            reason: "not now".into(),
        },
    );
    assert_eq!(run.await.unwrap(), RunEnd::Cancelled);
    assert!(
        steps(&w, &id)[0]
            .reason
            .contains("rejected by bob: not now")
    );
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);

    // time out: fail, skip, proceed
    for (policy, state, end) in [
        ("fail", StepState::Failed, RunEnd::Failed),
        ("skip", StepState::Skipped, RunEnd::Completed),
        ("proceed", StepState::Succeeded, RunEnd::Completed),
    ] {
        let w = world(ExecConfig::default());
        let id = open_incident(&w, &a, 1);
        let t = Instant::now();
        assert_eq!(
            w.exec.run(&id, &runbook(&gate(policy)), &a).await,
            end,
            "{policy}"
        );
        assert!(t.elapsed() >= Duration::from_secs(900), "{policy}");
        assert_eq!(steps(&w, &id)[0].state, state, "{policy}");
    }
}

#[tokio::test(start_paused = true)]
async fn two_incidents_on_one_deployment_are_serialised() {
    let w = world(ExecConfig::default());
    let rb = Arc::new(runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart, sleep: 10, key: '{{alert.labels.service}}'}\n",
    ));
    let mut runs = Vec::new();
    for svc in ["one", "two"] {
        let a = alert(svc);
        let id = open_incident(&w, &a, 1);
        let (exec, rb) = (w.exec.clone(), rb.clone());
        runs.push(tokio::spawn(async move { exec.run(&id, &rb, &a).await }));
    }
    let t = Instant::now();
    for r in runs {
        assert_eq!(r.await.unwrap(), RunEnd::Completed);
    }
    assert_eq!(
        w.fake.max_running.load(Ordering::SeqCst),
        1,
        "never two at once on shop/cart"
    );
    assert_eq!(t.elapsed(), Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_the_next_destructive_action_and_escalates() {
    let w = world(ExecConfig {
        budget_per_namespace_per_hour: 2,
        ..Default::default()
    });
    let rb = runbook(&format!(
        "{DESTRUCTIVE}on_failure:\n  - id: page\n    uses: k8s.wait\n    with: {{key: page}}\n"
    ));
    let mut ends = Vec::new();
    for (i, svc) in ["a", "b", "c"].iter().enumerate() {
        let a = alert(svc);
        let id = open_incident(&w, &a, i as u64 + 1);
        ends.push((id.clone(), w.exec.run(&id, &rb, &a).await));
    }
    assert_eq!(ends[0].1, RunEnd::Completed);
    assert_eq!(ends[1].1, RunEnd::Completed);
    assert_eq!(ends[2].1, RunEnd::Escalated);
    let s = steps(&w, &ends[2].0);
    assert!(
        s[1].reason.contains("blast-radius budget"),
        "{}",
        s[1].reason
    );
    // An hour later the budget is back.
    tokio::time::sleep(Duration::from_secs(3601)).await;
    let a = alert("d");
    let id = open_incident(&w, &a, 9);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
}

#[tokio::test(start_paused = true)]
async fn when_and_strict_rendering() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: first\n    uses: k8s.wait\n    with: {key: first}\n  - id: only_if_failed\n    uses: k8s.wait\n    when: '{{not steps.first.output.ok}}'\n  - id: missing\n    uses: k8s.wait\n    with: {pod: '{{alert.labels.pod}}'}\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Failed);
    let s = steps(&w, &id);
    assert_eq!(s[0].state, StepState::Succeeded);
    assert_eq!(
        (s[1].state, s[1].reason.as_str()),
        (StepState::Skipped, "when is false")
    );
    assert_eq!(s[2].state, StepState::Failed);
    assert!(
        s[2].reason.contains("alert.labels.pod is not defined"),
        "{}",
        s[2].reason
    );
}

#[tokio::test(start_paused = true)]
async fn recovery_resumes_evidence_and_interrupts_a_running_destructive_step() {
    let w = world(ExecConfig::default());
    let rb = runbook(DESTRUCTIVE);
    let set = quench_runbooks::RunbookSet {
        runbooks: vec![rb.clone()],
        ..Default::default()
    };
    let running = |idx: usize| {
        let mut records: Vec<StepRecord> = rb
            .steps
            .iter()
            .map(|s| StepRecord::pending(&s.id, s.kind.name(), s.kind.is_destructive()))
            .collect();
        for r in records.iter_mut().take(idx) {
            r.state = StepState::Succeeded;
            r.output = json!({"ok": true});
        }
        records[idx].state = StepState::Running;
        records[idx].attempts = 1;
        records
    };
    let with_runbook = |w: &World, id: &str, steps: Vec<StepRecord>, commit: Option<&str>| {
        let commit = commit.map(str::to_string);
        w.exec
            .incidents
            .update_blocking(id, move |r| {
                r.steps = steps;
                r.status = IncidentStatus::Remediating;
                r.runbook = Some(quench_knowledge::RunbookRef {
                    name: "r".into(),
                    path: "t.yaml".into(),
                    commit,
                });
            })
            .unwrap();
    };
    // The engine died during the destructive restart.
    let a = alert("cart");
    let destructive = open_incident(&w, &a, 1);
    with_runbook(&w, &destructive, running(1), None);
    // ... and during the evidence step of another incident.
    let b = alert("shelf");
    let evidence = open_incident(&w, &b, 2);
    with_runbook(&w, &evidence, running(0), None);
    // ... and a third ran a runbook from another commit.
    let c = alert("till");
    let moved = open_incident(&w, &c, 3);
    with_runbook(&w, &moved, running(0), Some("abc123"));

    let got = w.exec.recover(&set, None).await;
    assert_eq!(got.len(), 3);
    assert!(
        got.contains(&(evidence.clone(), Recovery::Resumed("evidence".into()))),
        "{got:?}"
    );
    let get = |id: &str| w.exec.incidents.get(id).unwrap().unwrap();
    let d = get(&destructive);
    assert_eq!(d.status, IncidentStatus::Interrupted);
    assert_eq!(d.steps[1].state, StepState::Interrupted);
    assert!(
        d.steps[1].reason.contains("not run again"),
        "{}",
        d.steps[1].reason
    );
    assert!(
        get(&moved)
            .timeline
            .iter()
            .any(|e| e.detail.contains("changed since the run started"))
    );
    // The evidence run resumes and finishes; the destructive step of the
    // first incident never ran.
    for _ in 0..100 {
        if get(&evidence).run.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = get(&evidence);
    assert_eq!(e.status, IncidentStatus::Open, "{:#?}", e.steps);
    assert_eq!(
        e.run.as_ref().map(|r| r.outcome),
        Some(RunOutcome::Succeeded)
    );
    assert_eq!(e.steps[1].state, StepState::Succeeded);
    assert_eq!(
        w.fake.attempts.lock().unwrap().get("cart"),
        None,
        "the interrupted restart did not run again"
    );
    let audit = w.exec.audit.list(50, None).unwrap();
    assert!(
        audit
            .iter()
            .any(|x| x.action == AuditAction::RunInterrupted)
    );
    assert!(audit.iter().any(|x| x.action == AuditAction::RunResumed));
}

#[tokio::test(start_paused = true)]
async fn a_cooldown_keeps_the_runbook_from_running_again_for_the_group() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\ncooldown: 30m\nsteps:\n  - id: s\n    uses: k8s.wait\n    with: {key: s}\n",
    );
    let a = alert("a");
    let first = open_incident(&w, &a, 1);
    w.exec
        .start(first.clone(), rb.clone(), "g".into(), a.clone())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
    // Ten minutes later the same group opens again: no run, a note.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let b = alert("b");
    let second = open_incident(&w, &b, 2);
    w.exec
        .start(second.clone(), rb.clone(), "g".into(), b.clone())
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1);
    let r = w.exec.incidents.get(&second).unwrap().unwrap();
    assert!(
        r.timeline
            .iter()
            .any(|e| e.kind == EventKind::Cooldown && e.detail.contains("s left")),
        "{:#?}",
        r.timeline
    );
    // Another group is not held back.
    let c = alert("c");
    let third = open_incident(&w, &c, 3);
    w.exec.start(third, rb.clone(), "other".into(), c).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 2);
    // After the cooldown, the group runs again.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    let d = alert("d");
    let fourth = open_incident(&w, &d, 4);
    w.exec.start(fourth, rb, "g".into(), d).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn one_target_is_rate_limited_before_the_namespace_budget() {
    let w = world(ExecConfig {
        max_actions_per_target_per_hour: 1,
        ..Default::default()
    });
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
    );
    let a = alert("a");
    let first = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&first, &rb, &a).await, RunEnd::Completed);
    let b = alert("b");
    let second = open_incident(&w, &b, 2);
    assert_eq!(w.exec.run(&second, &rb, &b).await, RunEnd::Failed);
    assert!(
        steps(&w, &second)[0]
            .reason
            .contains("rate limit: 1 actions on shop/cart")
    );
    // The refusal spent nothing: another target in the namespace runs.
    let other = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: till}\n",
    );
    let c = alert("c");
    let third = open_incident(&w, &c, 3);
    assert_eq!(w.exec.run(&third, &other, &c).await, RunEnd::Completed);
}

#[tokio::test(start_paused = true)]
async fn dry_runs_spend_neither_the_budget_nor_the_rate_limit() {
    let w = world(ExecConfig {
        dry_run: true,
        max_actions_per_target_per_hour: 2,
        budget_per_namespace_per_hour: 2,
        ..Default::default()
    });
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    with: {namespace: shop, name: cart}\n",
    );
    for n in 1..=5 {
        let a = alert(&format!("a{n}"));
        let id = open_incident(&w, &a, n);
        assert_eq!(
            w.exec.run(&id, &rb, &a).await,
            RunEnd::Completed,
            "dry run {n}"
        );
        assert_eq!(steps(&w, &id)[0].state, StepState::DryRun, "dry run {n}");
    }
}

#[tokio::test(start_paused = true)]
async fn verify_polls_until_the_fix_shows_or_time_runs_out() {
    // Fails twice, then holds: resolved after the third check, 20 s in.
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: fix\n    uses: k8s.wait\n    with: {key: fix}\nverify:\n  uses: k8s.wait\n  every: 10s\n  timeout: 1m\n  with: {key: check, fail: 2}\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    let t = Instant::now();
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    assert_eq!(t.elapsed(), Duration::from_secs(20));
    let r = w.exec.incidents.get(&id).unwrap().unwrap();
    assert_eq!(r.status, IncidentStatus::Resolved);
    let v = r.steps.last().unwrap();
    assert_eq!(
        (v.id.as_str(), v.state, v.attempts),
        ("verify", StepState::Succeeded, 3)
    );

    // Never holds: on_failure after the timeout.
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: fix\n    uses: k8s.wait\n    with: {key: fix}\non_failure:\n  - id: page\n    uses: k8s.wait\n    with: {key: page}\nverify:\n  uses: k8s.wait\n  every: 10s\n  timeout: 1m\n  with: {key: check, fail: 100}\n",
    );
    let id = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Escalated);
    let r = w.exec.incidents.get(&id).unwrap().unwrap();
    let v = r.steps.last().unwrap();
    assert_eq!(v.state, StepState::Failed);
    assert!(v.reason.contains("still failing after 60s"), "{}", v.reason);
    assert_eq!(r.steps[1].state, StepState::Succeeded, "on_failure ran");
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_that_continues_leaves_ok_false_for_later_steps() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: check\n    uses: k8s.wait\n    continue_on_error: true\n    with: {key: check, fail: 9}\n  - id: fallback\n    uses: k8s.wait\n    when: '{{not steps.check.output.ok}}'\n    with: {key: fallback}\n  - id: skipped_when_fine\n    uses: k8s.wait\n    when: '{{not steps.fallback.output.ok}}'\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    let s = steps(&w, &id);
    assert_eq!(s[0].state, StepState::Failed);
    assert_eq!(s[1].state, StepState::Succeeded, "ran because check failed");
    assert_eq!(s[2].state, StepState::Skipped, "fallback.output.ok is true");
    // The fallback made up for the failed check: the run succeeded, and
    // says what failed on the way.
    let run = w.exec.incidents.get(&id).unwrap().unwrap().run.unwrap();
    assert_eq!(run.outcome, RunOutcome::Succeeded);
    assert!(run.detail.contains("check failed"), "{}", run.detail);
}

/// A triage run whose every step failed (each continuing on error) ends
/// failed, not waiting in `verifying`; a run with nothing to escalate to
/// is not an escalation.
#[tokio::test(start_paused = true)]
async fn a_run_whose_every_step_failed_is_failed_not_verifying() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: triage\nmatch: {}\nsteps:\n  - id: a\n    uses: k8s.wait\n    continue_on_error: true\n    with: {key: a, fail: 9}\n  - id: b\n    uses: k8s.wait\n    continue_on_error: true\n    with: {key: b, fail: 9}\n  - id: c\n    uses: k8s.wait\n    continue_on_error: true\n    with: {key: c, fail: 9}\n",
    );
    let a = alert("a");
    let id = open_incident(&w, &a, 1);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Failed);
    let r = w.exec.incidents.get(&id).unwrap().unwrap();
    assert_eq!(r.status, IncidentStatus::Failed);
    let run = r.run.unwrap();
    assert_eq!(run.outcome, RunOutcome::Failed);
    assert!(run.detail.contains("a, b, c failed"), "{}", run.detail);
    assert!(
        !r.timeline.iter().any(|e| e.kind == EventKind::Escalation),
        "nothing was escalated: {:#?}",
        r.timeline
    );

    // The only step fails, no on_failure: failed, not escalated.
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: only\n    uses: k8s.wait\n    with: {key: only, fail: 9}\n",
    );
    let a = alert("b");
    let id = open_incident(&w, &a, 2);
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Failed);
    let r = w.exec.incidents.get(&id).unwrap().unwrap();
    assert_eq!(
        (r.status, r.run.unwrap().outcome),
        (IncidentStatus::Failed, RunOutcome::Failed)
    );
}

/// The guards in their documented order, and the destructive-only ones
/// letting evidence steps through untouched.
#[tokio::test(start_paused = true)]
async fn the_guards_run_in_order_and_only_destructive_steps_meet_the_last_five() {
    use super::guards::{Flow, GUARDS, Guard, Pending};
    assert_eq!(
        GUARDS,
        [
            Guard::When,
            Guard::Render,
            Guard::Preflight,
            Guard::Approval,
            Guard::Budget,
            Guard::DryRun,
            Guard::Lock,
            Guard::Fence
        ]
    );
    // No budget at all, and the kill switch on: an evidence step passes
    // every guard but its own two.
    let w = world(ExecConfig {
        budget_per_namespace_per_hour: 0,
        dry_run: true,
        ..Default::default()
    });
    w.exec.control.set(true, "t", "test").await.unwrap();
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    for g in GUARDS {
        assert!(matches!(w.exec.guard(g, &mut p).await, Flow::Next), "{g:?}");
    }
    assert!(p.lock.is_none(), "evidence takes no lock");
}

/// The fence: a replica that does not hold the Lease (a standby, or a
/// leader past its renew deadline) starts no destructive step, says why,
/// and an evidence step is not concerned.
#[tokio::test(start_paused = true)]
async fn the_fence_refuses_a_replica_that_does_not_lead() {
    use super::guards::{Flow, Guard, Pending};
    let ha = crate::ha::Ha::new(crate::config::HaConfig::default());
    let w = world_with(ExecConfig::default(), Some(ha));
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    assert!(
        matches!(w.exec.guard(Guard::Fence, &mut p).await, Flow::Next),
        "evidence"
    );
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut p).await,
        Flow::Next
    ));
    let Flow::Done(Err(stop)) = w.exec.guard(Guard::Fence, &mut p).await else {
        panic!("the fence let a standby act");
    };
    let super::Stop::Failed(said) = stop else {
        panic!("a fenced step fails, it is not cancelled");
    };
    assert!(
        said.contains("fenced: this replica is not the leader"),
        "{said}"
    );
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0, "nothing ran");
}

/// The budget guard alone: it lets the first action through and refuses
/// the next in the namespace, naming the budget.
#[tokio::test(start_paused = true)]
async fn the_budget_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig {
        budget_per_namespace_per_hour: 1,
        ..Default::default()
    });
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut p).await,
        Flow::Next
    ));
    assert_eq!(
        (p.namespace.as_str(), p.target.as_str()),
        ("shop", "shop/cart")
    );
    assert!(matches!(
        w.exec.guard(Guard::Budget, &mut p).await,
        Flow::Next
    ));
    match w.exec.guard(Guard::Budget, &mut p).await {
        Flow::Done(Err(Stop::Failed(why))) => {
            assert!(why.contains("blast-radius budget spent"), "{why}")
        }
        _ => panic!("the second action must be refused"),
    }
}

/// The `when` guard alone: false ends the step (skipped), true goes on.
#[tokio::test(start_paused = true)]
async fn the_when_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: a\n    uses: k8s.wait\n    when: '{{eq alert.labels.service \"other\"}}'\n    with: {key: a}\n",
    );
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::When, &mut p).await,
        Flow::Done(Ok(()))
    ));
    let b = alert("other");
    let mut p = Pending::new(&w.exec, &id, &rb, &b, 0, &rb.steps[0], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::When, &mut p).await,
        Flow::Next
    ));
}

/// Why a guard stopped the step.
fn stopped(flow: super::guards::Flow) -> String {
    match flow {
        super::guards::Flow::Done(Err(Stop::Failed(why) | Stop::Cancelled(why))) => why,
        _ => panic!("the guard let the step go on"),
    }
}

/// The render guard alone: a template that does not render, and a URL
/// outside `allowed_hosts`, end the step failed before anything runs; a
/// good one fills in what the step acts on.
#[tokio::test(start_paused = true)]
async fn the_render_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig {
        allowed_hosts: Some(
            quench_connectors::hosts::HostAllowlist::parse(&["127.0.0.1".to_string()]).unwrap(),
        ),
        ..ExecConfig::default()
    });
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: a\n    uses: metrics.scrape\n    with: {url: 'http://{{alert.labels.instance}}/metrics'}\n",
    );
    let outputs = serde_json::Map::new();
    let mut a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    // No `instance` label: strict rendering refuses.
    let why = stopped(w.exec.guard(Guard::Render, &mut p).await);
    assert!(why.contains("instance"), "{why}");
    a.labels.insert("instance".into(), "10.0.0.9:6060".into());
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    match w.exec.guard(Guard::Render, &mut p).await {
        Flow::Done(Err(Stop::Failed(why))) => {
            assert!(
                why.contains("10.0.0.9 is not in executor.allowed_hosts"),
                "{why}"
            )
        }
        _ => panic!("a host outside the allowlist must be refused"),
    }
    a.labels.insert("instance".into(), "127.0.0.1:6060".into());
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 0, &rb.steps[0], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut p).await,
        Flow::Next
    ));
    assert_eq!(p.rendered["url"], "http://127.0.0.1:6060/metrics");
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);
}

/// The preflight guard alone: the kill switch blocks a destructive step
/// and the incident waits; switched off, the step goes on.
#[tokio::test(start_paused = true)]
async fn the_preflight_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig::default());
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut p = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut p).await,
        Flow::Next
    ));
    w.exec.control.set(true, "alice", "freeze").await.unwrap();
    let why = stopped(w.exec.guard(Guard::Preflight, &mut p).await);
    assert!(why.contains("paused"), "{why}");
    w.exec.control.set(false, "alice", "thaw").await.unwrap();
    assert!(matches!(
        w.exec.guard(Guard::Preflight, &mut p).await,
        Flow::Next
    ));
}

/// The approval guard alone: no approval configured goes on; one that
/// nobody answers ends the step when it times out.
#[tokio::test(start_paused = true)]
async fn the_approval_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig::default());
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let plain = runbook(DESTRUCTIVE);
    let mut p = Pending::new(&w.exec, &id, &plain, &a, 1, &plain.steps[1], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Approval, &mut p).await,
        Flow::Next
    ));
    let gated = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: restart\n    uses: k8s.rollout_restart\n    approval: {required: true, timeout: 5m}\n    with: {namespace: shop, name: cart}\n",
    );
    let mut p = Pending::new(&w.exec, &id, &gated, &a, 0, &gated.steps[0], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut p).await,
        Flow::Next
    ));
    let why = stopped(w.exec.guard(Guard::Approval, &mut p).await);
    assert_eq!(why, "approval timed out");
}

/// The dry-run guard alone: with `executor.dry_run` a destructive step
/// is reported, asks the (fake) server once, and goes no further.
#[tokio::test(start_paused = true)]
async fn the_dry_run_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let a = alert("cart");
    let outputs = serde_json::Map::new();
    let rb = runbook(DESTRUCTIVE);
    for dry_run in [false, true] {
        let w = world(ExecConfig {
            dry_run,
            ..Default::default()
        });
        let id = open_incident(&w, &a, 1);
        let mut p = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
        assert!(matches!(
            w.exec.guard(Guard::Render, &mut p).await,
            Flow::Next
        ));
        let flow = w.exec.guard(Guard::DryRun, &mut p).await;
        if dry_run {
            assert!(matches!(flow, Flow::Done(Ok(()))));
            assert_eq!(w.fake.dry_runs.load(Ordering::SeqCst), 1);
        } else {
            assert!(matches!(flow, Flow::Next));
            assert_eq!(w.fake.calls.load(Ordering::SeqCst), 0);
        }
    }
}

/// The lock guard alone: a second step on the same target waits until
/// the first lets go.
#[tokio::test(start_paused = true)]
async fn the_lock_guard_alone() {
    use super::guards::{Flow, Guard, Pending};
    let w = world(ExecConfig::default());
    let rb = runbook(DESTRUCTIVE);
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    let outputs = serde_json::Map::new();
    let mut first = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    let mut second = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    for p in [&mut first, &mut second] {
        assert!(matches!(w.exec.guard(Guard::Render, p).await, Flow::Next));
    }
    assert!(matches!(
        w.exec.guard(Guard::Lock, &mut first).await,
        Flow::Next
    ));
    assert!(first.lock.is_some());
    let waiting = tokio::time::timeout(
        Duration::from_secs(60),
        w.exec.guard(Guard::Lock, &mut second),
    )
    .await;
    assert!(waiting.is_err(), "the second holder must wait");
    drop(first);
    let mut second = Pending::new(&w.exec, &id, &rb, &a, 1, &rb.steps[1], &outputs);
    assert!(matches!(
        w.exec.guard(Guard::Render, &mut second).await,
        Flow::Next
    ));
    assert!(matches!(
        w.exec.guard(Guard::Lock, &mut second).await,
        Flow::Next
    ));
}

/// Every time a run writes comes from the executor's clock: a test sets
/// it, and the record says exactly when each step started and ended.
#[tokio::test(start_paused = true)]
async fn run_timestamps_come_from_the_executors_clock() {
    let w = world(ExecConfig::default());
    let rb = runbook(
        "version: 1\nname: r\nmatch: {}\nsteps:\n  - id: a\n    uses: k8s.wait\n    with: {key: a}\n",
    );
    let a = alert("cart");
    let id = open_incident(&w, &a, 1);
    w.clock.advance(chrono::Duration::minutes(3));
    assert_eq!(w.exec.run(&id, &rb, &a).await, RunEnd::Completed);
    let s = &steps(&w, &id)[0];
    let at = t0() + chrono::Duration::minutes(3);
    assert_eq!((s.started_at, s.ended_at), (Some(at), Some(at)));
    let audit = w.exec.audit.list(10, Some(&id)).unwrap();
    assert!(!audit.is_empty());
    assert!(audit.iter().all(|e| e.at == at), "{audit:?}");
}

/// The per-target maps do not grow with every target an alert names:
/// free locks and spent budgets are forgotten past a bound.
#[tokio::test(start_paused = true)]
async fn per_target_maps_stay_bounded() {
    let w = world(ExecConfig::default());
    for i in 0..3 * PRUNE_ABOVE {
        let _free = w.exec.lock_for(&format!("ns/t{i}"));
    }
    let held = w.exec.lock_for("ns/held");
    for i in 0..3 * PRUNE_ABOVE {
        let _free = w.exec.lock_for(&format!("ns/u{i}"));
    }
    {
        let locks = w.exec.locks.lock().unwrap();
        assert!(locks.len() <= PRUNE_ABOVE, "{}", locks.len());
        assert!(locks.contains_key("ns/held"), "a held lock is kept");
    }
    drop(held);
    for i in 0..3 * PRUNE_ABOVE {
        let key = format!("ns/b{i}");
        w.exec.take_window(true, [(&key, 10), ("ns", 100_000)]);
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    assert!(w.exec.budget.lock().unwrap().len() <= 2 * PRUNE_ABOVE);
}

/// Chaos method steps go through the executor's guards: the kill switch,
/// dry-run, the budget, and a durable audit line before they act.
#[tokio::test(start_paused = true)]
async fn steps_outside_a_runbook_meet_the_same_guards() {
    use quench_connectors::steps::StepRunner;
    let with = json!({"namespace": "shop", "name": "web"});
    let w = world(ExecConfig {
        budget_per_namespace_per_hour: 1,
        ..Default::default()
    });
    let g = Guarded::new(w.exec.clone(), "chaos");
    // Reading is not guarded.
    g.run(StepType::K8sWait, Call::default(), &with)
        .await
        .unwrap();
    w.exec.control.set(true, "alice", "freeze").await.unwrap();
    let e = g
        .run(StepType::K8sRolloutRestart, Call::default(), &with)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("kill switch"), "{e}");
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 1, "nothing ran");
    w.exec.control.set(false, "alice", "thaw").await.unwrap();
    g.run(StepType::K8sRolloutRestart, Call::default(), &with)
        .await
        .unwrap();
    let e = g
        .run(StepType::K8sRolloutRestart, Call::default(), &with)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("budget"), "{e}");
    assert_eq!(w.fake.calls.load(Ordering::SeqCst), 2);
    let audit = w.exec.audit.list(10, None).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "chaos" && a.action == AuditAction::StepStart),
        "{audit:#?}"
    );
    // Under executor.dry_run it only reports.
    let dry = world(ExecConfig {
        dry_run: true,
        ..Default::default()
    });
    let g = Guarded::new(dry.exec.clone(), "chaos");
    let out = g
        .run(StepType::K8sRolloutRestart, Call::default(), &with)
        .await
        .unwrap();
    assert_eq!(out["dry_run"], true);
    assert_eq!(dry.fake.calls.load(Ordering::SeqCst), 0);
}
