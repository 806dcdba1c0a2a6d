//! Bad input gets a specific JSON error and the right status; the engine
//! never panics and loses nothing it already accepted.

use quench_tests::{Quench, http, repo_root};
use serde_json::{Value, json};

async fn post(q: &Quench, path: &str, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
    let mut req = http()
        .post(format!("{}{path}", q.url))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text:?}"));
    (status, v)
}

#[tokio::test]
async fn every_kind_of_bad_input_has_its_status_and_message() {
    let q = Quench::start(
        "max_body_bytes: 4096\nhooks:\n  alertmanager:\n    bearer_token: t\n  generic:\n    app:\n      token: g\n      status: /status\n",
        &repo_root().join("runbooks/examples"),
    );
    let good = json!({
        "version": "4", "groupKey": "{}:{alertname=\"HighCPU\"}", "status": "firing", "receiver": "quench",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
        "alerts": [{"status": "firing", "labels": {"alertname": "HighCPU", "service": "a"},
                    "startsAt": "2026-11-27T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "keepme"}]
    });
    let (status, _) = post(
        &q,
        "/hooks/alertmanager",
        good.to_string().into_bytes(),
        Some("t"),
    )
    .await;
    assert_eq!(status, 200);

    // Malformed JSON: 400 with the position.
    let (status, v) = post(
        &q,
        "/hooks/alertmanager",
        b"{\n \"version\": \"4\",\n oops}".to_vec(),
        Some("t"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "malformed_json");
    assert_eq!(v["error"]["line"], 3);
    assert_eq!(v["error"]["column"], 2);

    // Wrong shape: 422 naming the field.
    let mut wrong = good.clone();
    wrong["alerts"][0]["startsAt"] = json!(17);
    let (status, v) = post(
        &q,
        "/hooks/alertmanager",
        wrong.to_string().into_bytes(),
        Some("t"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(v["error"]["field"], "alerts[0].startsAt");
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("alerts");
    let (status, v) = post(
        &q,
        "/hooks/alertmanager",
        missing.to_string().into_bytes(),
        Some("t"),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("alerts"),
        "{v}"
    );

    // Oversized: 413, with and without a Content-Length.
    let big = vec![b' '; 5000];
    let (status, v) = post(&q, "/hooks/alertmanager", big.clone(), Some("t")).await;
    assert_eq!(status, 413);
    assert_eq!(v["error"]["limit"], 4096);
    assert_eq!(
        post_chunked(&q, "/hooks/alertmanager", "t", &big).await,
        413,
        "a chunked body over the limit is refused too"
    );

    // Missing and wrong token: 401.
    let (status, _) = post(
        &q,
        "/hooks/alertmanager",
        good.to_string().into_bytes(),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, v) = post(
        &q,
        "/hooks/alertmanager",
        good.to_string().into_bytes(),
        Some("x"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "unauthorized");

    // Unknown generic hook: the same 401 as a wrong token (hook names
    // cannot be enumerated); a bad status value: 422 naming the pointer.
    let (status, v) = post(&q, "/hooks/generic/nope", b"{}".to_vec(), Some("g")).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "unauthorized");
    let (_, wrong) = post(&q, "/hooks/generic/app", b"{}".to_vec(), Some("wrong")).await;
    assert_eq!(wrong["error"]["code"], v["error"]["code"]);
    let (status, v) = post(
        &q,
        "/hooks/generic/app",
        br#"{"status": "weird"}"#.to_vec(),
        Some("g"),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(v["error"]["field"], "/status");
    // A value with a line break cannot forge a log line of its own.
    let (status, _) = post(
        &q,
        "/hooks/generic/app",
        br#"{"status": "weird\n2026-12-01T00:00:00Z ERROR forged: all good"}"#.to_vec(),
        Some("g"),
    )
    .await;
    assert_eq!(status, 422);
    let log = q.log_text();
    assert!(log.contains("forged"), "the refusal is logged: {log}");
    assert!(
        log.contains("webhook refused source="),
        "fields apart: {log}"
    );
    assert!(
        !log.lines().any(|l| l
            .trim_start()
            .starts_with("2026-12-01T00:00:00Z ERROR forged")),
        "{log}"
    );

    // Not JSON at all, invalid UTF-8, empty: 400.
    for body in [b"\xff\xfe\x00".to_vec(), Vec::new(), b"[]".to_vec()] {
        let (status, _) = post(&q, "/hooks/alertmanager", body.clone(), Some("t")).await;
        assert!(status == 400 || status == 422, "{body:?} got {status}");
    }

    // Unknown endpoints are JSON 404s; unknown incidents too.
    let r = http().get(format!("{}/nope", q.url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http()
        .get(format!("{}/api/v1/incidents/inc-42", q.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Bad query strings on the API: JSON 400s naming the problem.
    for path in [
        "/api/v1/incidents?status=bogus",
        "/api/v1/incidents?limit=abc",
        "/api/v1/alerts?limit=-1",
    ] {
        let r = http().get(format!("{}{path}", q.url)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_query", "{path}: {v}");
    }
    let v = q.get_json("/api/v1/incidents?status=resolved").await;
    assert_eq!(v["incidents"].as_array().unwrap().len(), 0);

    // Still alive, and the accepted alert is still there, exactly once.
    let health = q.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");
    let stored = q.get_json("/api/v1/alerts").await;
    let alerts = stored["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["alert"]["fingerprint"], "keepme");

    // The rejections are counted by reason.
    let text = q.get_text("/metrics").await;
    for reason in [
        "malformed_json",
        "invalid_shape",
        "too_large",
        "unauthorized",
    ] {
        assert!(
            text.contains(&format!(
                "quench_webhook_rejected_total{{source=\"alertmanager\",reason=\"{reason}\"}}"
            )),
            "{reason} missing from\n{text}"
        );
    }
    assert!(
        text.contains(
            "quench_webhook_rejected_total{source=\"generic\",reason=\"unknown_hook\"} 1"
        )
    );
}

/// Sends `body` with `Transfer-Encoding: chunked` (no Content-Length) over
/// a raw connection and returns the status code.
async fn post_chunked(q: &Quench, path: &str, token: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = quench_tests::addr_of(&q.url);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        let _ = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await;
        let _ = s.write_all(chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    let text = String::from_utf8_lossy(&resp);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// A web page the operator visits cannot drive the API: a write without a
/// JSON (or profile, or import) content type, a request from another
/// origin, and, while the API is open, a Host that is not loopback (DNS
/// rebinding) are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_what_a_browser_page_could_send() {
    let rb = tempfile::tempdir().unwrap();
    let q = Quench::start("{}\n", rb.path());
    let c = http();
    let pause = format!("{}/api/v1/control/pause", q.url);
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut r = c.post(&pause).body("reason=x");
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ct:?}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "content_type");
    }
    let r = c
        .post(&pause)
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(format!("{}/api/v1/incidents", q.url))
        .header("host", "evil.example:9797")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "cross_site"
    );
    // Nothing was paused by any of it; the CLI's own requests pass.
    assert_eq!(q.get_json("/api/v1/control").await["paused"], false);
    let r = c
        .post(&pause)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Webhooks keep their own rules (their senders set no Origin).
    let host = q.get_json("/healthz").await;
    assert_eq!(host["status"], "ok");
}
