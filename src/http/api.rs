//! The REST API under `/api/v1` (docs/protocol.md section 6): bearer-token auth,
//! JSON bodies with a size limit, and errors as
//! `{"success": false, "error": {code, message}}`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::json_io::{error_response, json, json_error, read_json, status_of, Body};
use crate::app::App;
use crate::change::{validate_batch, ChangeRequest, ValidChange};
use crate::config::AuthMode;
use crate::protocol::{ErrorCode, RequestError};
use crate::store::bases::{self, Bind};
use crate::store::commit::commit_batch;

pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    if let Err(e) = check_token(&app, &req) {
        let reason = match e.code {
            ErrorCode::Forbidden => "api_disabled",
            _ => "api_token",
        };
        app.audit.auth_failed(peer, reason);
        return error_response(&e);
    }
    let path = req.uri().path().to_owned();
    if let Some(ids) = super::history::route_of(&path) {
        return match (ids, req.method()) {
            (Err(e), _) => error_response(&e),
            (Ok(ids), &Method::GET) => super::history::get(&app, ids, &req).await,
            (Ok(_), _) => json_error(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            ),
        };
    }
    if let Some(ids) = super::views::route_of(&path) {
        return match ids {
            Err(e) => error_response(&e),
            Ok(ids) => super::views::handle(&app, ids, req, peer).await,
        };
    }
    if let Some(table) = super::records::table_of(&path) {
        let table = match table {
            Ok(t) => t,
            Err(e) => return error_response(&e),
        };
        return match *req.method() {
            Method::GET => super::records::get(&app, &table, &req).await,
            Method::POST => super::records::seed(&app, &table, req, peer).await,
            _ => json_error(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            ),
        };
    }
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/api/v1/sync/stats") => stats(&app).await,
        (Method::POST, "/api/v1/sync/batch-changes") => batch_changes(&app, req, peer).await,
        (Method::POST, "/api/v1/sync/cleanup") => cleanup(&app, peer).await,
        (Method::GET, "/api/v1/audit") => audit_log(&app, &req).await,
        (
            _,
            "/api/v1/sync/stats"
            | "/api/v1/sync/batch-changes"
            | "/api/v1/sync/cleanup"
            | "/api/v1/audit",
        ) => json_error(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
        _ => json_error(ErrorCode::NotFound, "no such route"),
    }
}

fn check_token(app: &App, req: &Request<Incoming>) -> Result<(), RequestError> {
    let Some(expected) = &app.config.api_token else {
        if app.config.auth == AuthMode::None {
            return Ok(());
        }
        return Err(RequestError::new(
            ErrorCode::Forbidden,
            "the API is disabled: set RTS_API_TOKEN",
        ));
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(RequestError::new(
            ErrorCode::Unauthenticated,
            "missing or wrong API token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn stats(app: &App) -> Response<Body> {
    let redis_up = app.store.ping().await;
    json(
        StatusCode::OK,
        &json!({"success": true, "data": {
            "totalConnections": app.connections.load(Ordering::Relaxed),
            "authenticatedUsers": app.authenticated.load(Ordering::Relaxed),
            "tableSubscriptions": app.hub.subscription_count(),
            "tablesTailed": app.hub.table_count(),
            "redis": if redis_up { "up" } else { "down" },
            "redisPrimary": crate::store::sentinel::redacted(&app.store.primary()),
            "instanceId": app.store.instance_id,
            "uptimeSeconds": app.started.elapsed().as_secs(),
        }}),
    )
}

async fn cleanup(app: &App, peer: IpAddr) -> Response<Body> {
    use crate::audit::AuditAction::ApiCleanup;
    let settings = crate::presence::SweepSettings::from_config(&app.config);
    let mut liveness = crate::store::groups::Liveness::default();
    match crate::presence::sweep(&app.store, settings, &mut liveness).await {
        Ok(removed) => {
            let detail = format!("removed {removed}");
            app.audit.api(ApiCleanup, peer, None, "ok", &detail);
            json(
                StatusCode::OK,
                &json!({"success": true, "message": "Stale presence data cleaned up successfully",
                        "data": {"removed": removed}}),
            )
        }
        Err(e) => {
            let e = RequestError::from(e);
            app.audit
                .api(ApiCleanup, peer, None, e.code.as_str(), "cleanup failed");
            error_response(&e)
        }
    }
}

/// `GET /api/v1/audit?since=&action=&user=&limit=` (docs/protocol.md 12).
async fn audit_log(app: &App, req: &Request<Incoming>) -> Response<Body> {
    let query = crate::audit::read::Query::parse(req.uri().query().unwrap_or(""));
    let page = match query {
        Ok(q) => crate::audit::read::read(&app.store, &q).await,
        Err(e) => Err(e),
    };
    match page {
        Ok(data) => json(StatusCode::OK, &json!({"success": true, "data": data})),
        Err(e) => error_response(&e),
    }
}

/// The audit entry of a batch: how many changes, of how many tables, how
/// many deletes, and where it stopped if it failed (the table when there
/// is one).
fn audit_batch<R>(
    app: &App,
    peer: IpAddr,
    commits: &[ValidChange],
    results: &[R],
    failed_at: Option<usize>,
) {
    let mut tables: Vec<&str> = commits
        .iter()
        .filter_map(|c| c.req.table_id.as_deref())
        .collect();
    tables.sort_unstable();
    tables.dedup();
    let deletes = commits.iter().filter(|c| c.req.kind == "delete").count();
    let mut detail = format!(
        "{} changes ({deletes} deletes) over {} tables, {} committed",
        commits.len(),
        tables.len(),
        results.len()
    );
    let outcome = match failed_at {
        Some(i) => {
            detail.push_str(&format!(", failed at changes[{i}]"));
            "failed"
        }
        None => "ok",
    };
    let table = match tables.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    app.audit.api(
        crate::audit::AuditAction::ApiBatchChanges,
        peer,
        table,
        outcome,
        &detail,
    );
}

/// Binds each table a batch's changes name to the base they name.
async fn bind_bases(app: &App, commits: &[ValidChange]) -> Result<(), RequestError> {
    let mut pairs: Vec<(&str, &str)> = commits
        .iter()
        .filter(|c| c.req.entity_type != "base")
        .filter_map(|c| Some((c.req.table_id.as_deref()?, c.req.base_id.as_deref()?)))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    for (table, base) in pairs {
        bases::bind(&app.store, table, base, Bind::Replace).await?;
    }
    Ok(())
}

async fn batch_changes(app: &App, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let body = match read_json(app, req).await {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let Some(Value::Array(items)) = body.get("changes").cloned() else {
        return error_response(&RequestError::bad_request(
            "body must be {\"changes\": [ChangeEvent]}",
        ));
    };
    let commits = validate_batch(
        items,
        app.config.max_batch,
        app.commit_limits,
        |item, limits| {
            // A ChangeEvent without `id` and `timestamp` (fields it does
            // not use, like those, are ignored).
            let c: ChangeRequest = serde_json::from_value(item)
                .map_err(|e| RequestError::bad_request(e.to_string()))?;
            Ok::<_, RequestError>(c.validate(limits)?)
        },
    );
    let commits = match commits {
        Ok(c) => c,
        Err(e) => return error_response(&e),
    };
    // The API is trusted: the bases its changes name become their tables'
    // bases (docs/protocol.md 3.2), before anything is written.
    if let Err(e) = bind_bases(app, &commits).await {
        return error_response(&e);
    }
    let (results, failed) = commit_batch(&app.store, &commits).await;
    audit_batch(
        app,
        peer,
        &commits,
        &results,
        failed.as_ref().map(|(i, _)| *i),
    );
    if let Some((i, e)) = failed {
        let e = RequestError::from(e);
        e.trace();
        return json(
            status_of(e.code),
            &json!({"success": false,
                "error": {"code": e.code.as_str(), "message": format!("changes[{i}]: {}", e.message)},
                "data": {"results": results}}),
        );
    }
    json(
        StatusCode::OK,
        &json!({"success": true, "data": {"results": results}}),
    )
}
