//! `PUT /api/v1/sync/tables/{tableId}/views/{viewId}` with `{"filter":
//! <filter> | null}` and `GET` of the same path (v1.3, docs/protocol.md
//! 3.5 and 6): a view's filter, for backends holding the API token.
//!
//! Data flow of a PUT: `api::handle` (token checked) → [`route_of`] →
//! [`put`]: the body (bounded by `RTS_MAX_BODY_BYTES`) is parsed by
//! `filter::Filter::parse` (a malformed filter is `bad_request` naming the
//! part), its canonical JSON (at most [`MAX_FILTER_BYTES`]) goes to
//! `store::views::set` (one `FCALL rtsync_view_set`: the key, the view's
//! version and the `view` event), and the write is audited (`api_view`).
//! Every sidecar then applies the event in stream order (`view`).

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use super::json_io::{error_response, json, json_error, read_json, Body};
use crate::app::App;
use crate::audit::AuditAction;
use crate::change::ids::check_id;
use crate::filter::Filter;
use crate::protocol::{ErrorCode, RequestError};

/// Largest filter a view may hold, as its canonical JSON (the `view` event
/// carries it, and the previous one, in one frame).
pub const MAX_FILTER_BYTES: usize = 65_536;

/// `(tableId, viewId)` of a view path, each one path segment
/// percent-decoded once; `None` when the path is not this route.
pub fn route_of(path: &str) -> Option<Result<(String, String), RequestError>> {
    let rest = path.strip_prefix("/api/v1/sync/tables/")?;
    let (table, view) = rest.split_once("/views/")?;
    if table.contains('/') || view.contains('/') {
        return None;
    }
    Some(decode(table).and_then(|t| Ok((t, decode(view)?))))
}

fn decode(segment: &str) -> Result<String, RequestError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| RequestError::bad_request("an id in the path is not UTF-8"))
}

/// Serves the route for `method`.
pub async fn handle(
    app: &App,
    (table, view): (String, String),
    req: Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    match *req.method() {
        Method::GET => match get(app, &table, &view).await {
            Ok(data) => json(StatusCode::OK, &json!({"success": true, "data": data})),
            Err(e) => {
                crate::metrics::view_api_failed();
                tracing::warn!(table, view, code = e.code.as_str(), message = %e.message, "view filter not read");
                error_response(&e)
            }
        },
        Method::PUT => put(app, &table, &view, req, peer).await,
        _ => json_error(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        ),
    }
}

/// `{viewId, filter, version}` as stored (`filter` null: none).
async fn get(app: &App, table: &str, view: &str) -> Result<Value, RequestError> {
    check_id("tableId", table)?;
    check_id("viewId", view)?;
    let stored = crate::store::views::get(&app.store, table, view).await?;
    let filter = stored
        .filter
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .unwrap_or(Value::Null);
    Ok(json!({"viewId": view, "filter": filter, "version": stored.version}))
}

async fn put(
    app: &App,
    table: &str,
    view: &str,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    let result = store_filter(app, table, view, req).await;
    let (outcome, detail) = match &result {
        Ok(data) => ("ok", format!("view {view} version {}", data["version"])),
        Err(e) => {
            crate::metrics::view_api_failed();
            tracing::warn!(table, view, code = e.code.as_str(), message = %e.message, "view filter not stored");
            // The code only: a message may quote the body.
            (e.code.as_str(), String::new())
        }
    };
    let audited = crate::change::ids::is_valid_id(table).then_some(table);
    app.audit
        .api(AuditAction::ApiView, peer, audited, outcome, &detail);
    match result {
        Ok(data) => json(StatusCode::OK, &json!({"success": true, "data": data})),
        Err(e) => error_response(&e),
    }
}

/// Checks the body and stores the filter: `{viewId, eventId, version}`.
async fn store_filter(
    app: &App,
    table: &str,
    view: &str,
    req: Request<Incoming>,
) -> Result<Value, RequestError> {
    check_id("tableId", table)?;
    check_id("viewId", view)?;
    let body = read_json(app, req).await?;
    let filter = parse_body(&body)?;
    let text = filter.as_ref().map(|f| f.to_json().to_string());
    if let Some(t) = &text {
        if t.len() > MAX_FILTER_BYTES {
            return Err(RequestError::new(
                ErrorCode::PayloadTooLarge,
                format!("filter over {MAX_FILTER_BYTES} bytes"),
            ));
        }
    }
    let (id, version) = crate::store::views::set(&app.store, table, view, text.as_deref()).await?;
    tracing::info!(table, view, version, event = %id, "view filter stored");
    Ok(json!({"viewId": view, "eventId": id.to_string(), "version": version}))
}

/// The body's filter: `{"filter": <filter>}`, or `{"filter": null}` (none).
fn parse_body(body: &Value) -> Result<Option<Filter>, RequestError> {
    let shape = "body must be {\"filter\": <filter> | null}";
    let Value::Object(obj) = body else {
        return Err(RequestError::bad_request(shape));
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "filter") {
        let k: String = k.chars().take(64).collect();
        return Err(RequestError::bad_request(format!(
            "{shape}: unknown key {k:?}"
        )));
    }
    match obj.get("filter") {
        None => Err(RequestError::bad_request(shape)),
        Some(Value::Null) => Ok(None),
        Some(v) => Filter::parse(v, "filter")
            .map(Some)
            .map_err(|e| RequestError::bad_request(e.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_path_names_its_table_and_view_decoded() {
        let got = route_of("/api/v1/sync/tables/t%201/views/my%20tasks");
        assert_eq!(
            got.and_then(Result::ok),
            Some(("t 1".into(), "my tasks".into()))
        );
    }

    #[test]
    fn other_paths_are_not_the_view_route() {
        assert!(route_of("/api/v1/sync/tables/t/records").is_none());
        assert!(route_of("/api/v1/sync/tables/t/views/v/x").is_none());
    }

    #[test]
    fn a_malformed_filter_is_refused_naming_the_part() {
        let body =
            serde_json::json!({"filter": {"and": [{"field": "a", "op": "like", "value": 1}]}});
        let e = parse_body(&body).err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("filter.and[0].op")));
    }

    #[test]
    fn a_null_filter_is_no_filter() {
        assert_eq!(
            parse_body(&serde_json::json!({"filter": null})).ok(),
            Some(None)
        );
    }

    #[test]
    fn a_body_without_a_filter_key_is_refused() {
        assert!(parse_body(&serde_json::json!({})).is_err());
        assert!(parse_body(&serde_json::json!({"filter": null, "x": 1})).is_err());
    }
}
