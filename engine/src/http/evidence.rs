//! Evidence: artifacts and profile baselines.

use super::*;
use quench_knowledge::AuditAction;

/// `GET /api/v1/artifacts/{id}`: a profile, trace or flame graph, served
/// with its media type.
pub(super) async fn get_artifact(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (store, aid) = (s.artifacts.clone(), id.clone());
    match blocking(move || store.get(&aid)).await {
        Ok(Some((meta, bytes))) => {
            let ct = HeaderValue::from_str(&meta.media_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Ok(None) => missing(format!("artifact {id:?}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/baselines`: the healthy profile saved for each service
/// and kind, which `pprof.capture` with `baseline_of` diffs against.
pub(super) async fn list_baselines(State(s): State<AppState>, _caller: Caller<Viewer>) -> Response {
    let store = s.artifacts.clone();
    match blocking(move || store.baselines()).await {
        Ok(b) => axum::Json(json!({ "baselines": b })).into_response(),
        Err(e) => internal(e),
    }
}

/// `PUT /api/v1/baselines/{service}/{kind}`: a profile captured while the
/// service was healthy (a scheduled capture: `curl -T cpu.pb.gz`) becomes
/// its baseline for that kind. The body must decode as a profile.
pub(super) async fn put_baseline(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path((service, kind)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    for (what, v) in [("service", &service), ("kind", &kind)] {
        if let Err(m) = quench_knowledge::artifacts::check_baseline_key(what, v) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_name",
                m.to_string(),
                json!({"field": what}),
            );
        }
    }
    let bytes = match read_body(&headers, body, s.config.max_artifact_bytes).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    use quench_connectors::pprof::Family;
    let Some(want) = Family::of_kind(&kind) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_kind",
            format!(
                "unknown profile kind {kind:?}: cpu, heap, allocs, goroutine, mutex, block or threadcreate"
            ),
            json!({"field": "kind"}),
        );
    };
    let profile = match quench_connectors::pprof::decode(&bytes) {
        Ok(p) => p,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_a_profile",
                format!("the body is not a pprof profile: {e}"),
                Value::Null,
            );
        }
    };
    match Family::of(&profile) {
        Some(got) if got == want => {}
        got => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong_kind",
                format!(
                    "the body is {}, not {kind}: a {kind} baseline must be {}",
                    got.map_or("a profile of unknown sample types", Family::describe),
                    want.describe()
                ),
                json!({"field": "kind"}),
            );
        }
    }
    let put = s
        .artifacts
        .store(
            "pprof",
            "application/octet-stream",
            bytes,
            quench_knowledge::artifacts::Origin::default(),
        )
        .await;
    let id = match put {
        Ok(id) => id,
        Err(e @ quench_knowledge::ArtifactError::TooLarge { .. }) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                e.to_string(),
                Value::Null,
            );
        }
        Err(e @ quench_knowledge::ArtifactError::StoreFull { .. }) => {
            return error(
                StatusCode::INSUFFICIENT_STORAGE,
                "store_full",
                e.to_string(),
                Value::Null,
            );
        }
        Err(e) => return internal(e),
    };
    let set = s
        .artifacts
        .save_baseline(
            &service,
            &kind,
            &id,
            quench_knowledge::artifacts::Origin::default(),
        )
        .await;
    match set {
        Ok(b) => {
            audit(
                &s,
                quench_knowledge::AuditEntry {
                    seq: 0,
                    at: b.saved_at,
                    actor: actor.clone(),
                    action: AuditAction::BaselineSet,
                    incident: None,
                    step: None,
                    target: Some(format!("{service}/{kind}")),
                    detail: id.clone(),
                    prev: None,
                    lease_epoch: None,
                },
            )
            .await;
            axum::Json(json!({ "baseline": b })).into_response()
        }
        Err(e @ quench_knowledge::ArtifactError::Invalid(_)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
            e.to_string(),
            Value::Null,
        ),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/artifacts/{id}/meta`: what an artifact is: kind, size,
/// incident and step, capture target and window.
pub(super) async fn get_artifact_meta(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let (store, aid) = (s.artifacts.clone(), id.clone());
    match blocking(move || store.meta(&aid)).await {
        Ok(Some(meta)) => axum::Json(meta).into_response(),
        Ok(None) => missing(format!("artifact {id:?}")),
        Err(e) => internal(e),
    }
}
