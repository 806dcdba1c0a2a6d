//! Incidents: lists, one incident with its similar past ones, its
//! timeline, alerts, acknowledgements, annotations and approvals.

use super::*;
use quench_knowledge::{AuditAction, EventKind};

#[derive(Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_incidents(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let mut filter = IncidentFilter {
        open_only: false,
        status: None,
        limit: Some(q.limit.unwrap_or(100).min(MAX_LIST)),
    };
    match q.status.as_deref() {
        None => {}
        Some("unresolved") => filter.open_only = true,
        Some(other) => match IncidentStatus::parse(other) {
            Some(st) => filter.status = Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_query",
                    format!(
                        "unknown status {other:?}: use {}",
                        crate::api::status_names().join(", ")
                    ),
                    Value::Null,
                );
            }
        },
    }
    match s.incidents.query(filter).await {
        Ok(incidents) => axum::Json(crate::api::IncidentList { incidents }).into_response(),
        Err(e) => internal(e),
    }
}

pub(super) async fn show_incident(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match s.incidents.fetch(&id).await {
        Ok(Some(r)) => axum::Json(with_similar(&s, r).await).into_response(),
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

/// `GET /api/v1/incidents/{id}/hypotheses`: likely root causes, from the
/// root causes of the most similar past incidents (docs/KNOWLEDGE.md).
pub(super) async fn hypotheses(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    let r = match s.incidents.fetch(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return missing(format!("incident {id:?}")),
        Err(e) => return internal(e),
    };
    let index = s.search.clone();
    match tokio::task::spawn_blocking(move || index.hypotheses(&r, 3)).await {
        Ok(Ok(h)) => axum::Json(json!({ "incident": id, "hypotheses": h })).into_response(),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(super) struct AlertsQuery {
    limit: Option<usize>,
    fingerprint: Option<String>,
}

pub(super) async fn list_alerts(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return bad_query(e),
    };
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    match s.log.recent(limit, q.fingerprint.as_deref()) {
        Ok(list) => axum::Json(json!({ "alerts": list })).into_response(),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/incidents/{id}/ack`: a human has it (responder). The
/// first acknowledgement counts for MTTA; later ones are recorded only in
/// the audit log.
pub(super) async fn acknowledge(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
) -> Response {
    let actor = caller.name;
    let now = s.clock.now();
    let who = actor.clone();
    let updated = s
        .incidents
        .update(&id, move |r| {
            if r.acknowledged.is_none() {
                r.acknowledged = Some(quench_knowledge::Acknowledgement {
                    at: now,
                    by: who.clone(),
                });
                r.timeline.push(quench_knowledge::TimelineEvent {
                    at: now,
                    kind: EventKind::Acknowledged,
                    detail: format!("acknowledged by {who}"),
                });
            }
            r.acknowledged.clone()
        })
        .await;
    match updated {
        Ok(Some((_, ack))) => {
            audit_incident(
                &s,
                &actor,
                AuditAction::IncidentAck,
                &id,
                "acknowledged".into(),
            )
            .await;
            axum::Json(crate::api::AckAnswer {
                incident: id,
                acknowledged: ack,
            })
            .into_response()
        }
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/incidents/{id}/annotations`: root cause, resolution,
/// commits and tags (responder). Each edit is audited with what changed.
pub(super) async fn annotate(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let req: crate::api::AnnotationRequest = match json_request(
        &headers,
        body,
        256 * 1024,
        "{root_cause, resolution, commits: [SHA or SHA@repo], tags: [..]}",
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let mut commits = Vec::new();
    for c in &req.commits {
        match crate::import::parse_commit(c) {
            Ok(c) => commits.push(c),
            Err(m) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_commit",
                    m.to_string(),
                    json!({"field": "commits"}),
                );
            }
        }
    }
    for t in &req.tags {
        if !crate::import::is_tag(t) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_tag",
                format!("tag {t:?}: 1 to 64 letters, digits, '-', '_', '.', ':' or '/'"),
                json!({"field": "tags"}),
            );
        }
    }
    for (field, text) in [
        ("root_cause", &req.root_cause),
        ("resolution", &req.resolution),
    ] {
        if text.as_ref().is_some_and(|t| t.len() > 10_000) {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_long",
                format!("{field} is longer than 10000 bytes"),
                json!({"field": field}),
            );
        }
    }
    let mut changed = Vec::new();
    if req.root_cause.is_some() {
        changed.push("root_cause");
    }
    if req.resolution.is_some() {
        changed.push("resolution");
    }
    if !commits.is_empty() {
        changed.push("commits");
    }
    if !req.tags.is_empty() {
        changed.push("tags");
    }
    let now = s.clock.now();
    let who = actor.clone();
    let req_root_cause = req.root_cause.clone();
    let req_resolution = req.resolution.clone();
    let req_tags = req.tags.clone();
    let commits_in = commits.clone();
    let updated = s
        .incidents
        .update(&id, move |r| {
            let (req_root_cause, req_resolution, req_tags, commits) =
                (&req_root_cause, &req_resolution, &req_tags, &commits_in);
            if let Some(rc) = req_root_cause {
                r.notes.root_cause = Some(rc.clone());
            }
            if let Some(res) = req_resolution {
                r.notes.resolution = Some(res.clone());
            }
            for c in commits {
                if !r.notes.commits.contains(c) {
                    r.notes.commits.push(c.clone());
                }
            }
            for t in req_tags {
                if !r.notes.tags.contains(t) {
                    r.notes.tags.push(t.clone());
                }
            }
            r.notes.edited_at = Some(now);
            r.notes.edited_by = Some(who.clone());
            r.timeline.push(quench_knowledge::TimelineEvent {
                at: now,
                kind: EventKind::Annotated,
                detail: format!("{} edited by {who}", changed.join(", ")),
            });
            r.notes.clone()
        })
        .await;
    match updated {
        Ok(Some((_, notes))) => {
            audit_incident(
                &s,
                &actor,
                AuditAction::IncidentAnnotate,
                &id,
                serde_json::to_string(&notes).unwrap_or_default(),
            )
            .await;
            axum::Json(crate::api::NotesAnswer {
                incident: id,
                notes,
            })
            .into_response()
        }
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/incidents/{id}/approvals`: answers a waiting approval gate
/// (responder role). The approver's name goes into the audit log.
pub(super) async fn approve(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let req: crate::api::ApprovalRequest = match json_request(
        &headers,
        body,
        64 * 1024,
        r#"{"step", "decision": "approve"|"reject", "reason"}"#,
    )
    .await
    {
        Ok(x) => x,
        Err(r) => return r,
    };
    let verdict = match req.decision.as_str() {
        "approve" => Verdict::Approve { by: actor.clone() },
        "reject" => Verdict::Reject {
            by: actor.clone(),
            reason: req.reason.clone(),
        },
        other => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_shape",
                format!("decision {other:?}: approve or reject"),
                json!({"field": "decision"}),
            );
        }
    };
    if s.executor.approvals.answer(&id, &req.step, verdict) {
        axum::Json(crate::api::ApprovalAnswer {
            status: "ok".into(),
            incident: id,
            step: req.step,
            decision: req.decision,
            by: actor,
        })
        .into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            "not_waiting",
            format!("no approval is waiting for step {:?} of {id}", req.step),
            Value::Null,
        )
    }
}

/// The record, with similar past incidents worked out now when the
/// indexer did not attach them (it skips that during a storm).
pub async fn with_similar(
    s: &AppState,
    mut r: quench_knowledge::IncidentRecord,
) -> quench_knowledge::IncidentRecord {
    if r.similar.is_none() {
        let index = s.search.clone();
        let probe = r.clone();
        if let Ok(Ok(similar)) = tokio::task::spawn_blocking(move || index.similar(&probe, 3)).await
        {
            r.similar = Some(similar);
        }
    }
    r
}

/// `GET /api/v1/incidents/{id}/timeline`: events, steps and evidence
/// capture windows on one UTC axis.
pub(super) async fn incident_timeline(
    State(s): State<AppState>,
    _caller: Caller<Viewer>,
    Path(id): Path<String>,
) -> Response {
    match s.incidents.fetch(&id).await {
        Ok(Some(r)) => axum::Json(json!({"incident": id, "entries": r.aligned()})).into_response(),
        Ok(None) => missing(format!("incident {id:?}")),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/incidents/{id}/rerun` (responder): runs the runbook in
/// force now (after a fix to it, say) again for an open incident, with its
/// latest firing alert. Refused while a run goes on, for a closed incident,
/// and when the runbook is no longer in the set.
pub(super) async fn rerun(
    State(s): State<AppState>,
    caller: Caller<Responder>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = caller.name;
    let reason = match reason_body(&headers, body).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let record = match s.incidents.fetch(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return missing(format!("incident {id:?}")),
        Err(e) => return internal(e),
    };
    let conflict = |m: String| error(StatusCode::CONFLICT, "cannot_rerun", m, Value::Null);
    if record.status.is_closed() {
        return conflict(format!(
            "{id} is {}: there is nothing to run again",
            record.status.as_str()
        ));
    }
    if matches!(
        record.status,
        IncidentStatus::Diagnosing | IncidentStatus::Remediating | IncidentStatus::Verifying
    ) {
        return conflict(format!(
            "a run of {id} is going on ({}); wait for its end",
            record.status.as_str()
        ));
    }
    let Some(name) = record.runbook.as_ref().map(|r| r.name.clone()) else {
        return conflict(format!("no runbook matched {id}"));
    };
    let loaded = s.runbooks.current();
    let Some(runbook) = loaded
        .set
        .runbooks
        .iter()
        .find(|r| r.name() == name)
        .cloned()
    else {
        return conflict(format!("runbook {name} is no longer in the set in force"));
    };
    let Some(alert) = record
        .alerts
        .iter()
        .filter(|a| a.state == quench_knowledge::AlertState::Firing)
        .max_by_key(|a| a.seq)
        .map(crate::executor::alert_of)
    else {
        return conflict(format!("{id} has no firing alert to run for"));
    };
    let (now, who, commit) = (s.clock.now(), actor.clone(), loaded.commit.clone());
    let new_ref = quench_knowledge::RunbookRef {
        name: name.clone(),
        path: runbook.path.clone(),
        commit: commit.clone(),
    };
    let why = reason.reason.clone();
    let updated = s
        .incidents
        .update(&id, move |r| {
            r.runbook = Some(new_ref);
            r.timeline.push(quench_knowledge::TimelineEvent {
                at: now,
                kind: EventKind::Rerun,
                detail: if why.is_empty() {
                    format!("{name} run again by {who}")
                } else {
                    format!("{name} run again by {who}: {why}")
                },
            });
        })
        .await;
    if let Err(e) = updated {
        return internal(e);
    }
    audit_incident(
        &s,
        &actor,
        AuditAction::RunRerun,
        &id,
        format!(
            "{} at {}{}",
            runbook.name(),
            commit.as_deref().unwrap_or("the local directory"),
            if reason.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", reason.reason)
            }
        ),
    )
    .await;
    let runbook_name = runbook.name().to_string();
    s.executor.rerun(id.clone(), runbook, alert).await;
    (
        StatusCode::ACCEPTED,
        axum::Json(crate::api::RerunAnswer {
            incident: id,
            runbook: runbook_name,
            commit,
        }),
    )
        .into_response()
}
