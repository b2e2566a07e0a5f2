//! The table-state routes for backends (docs/protocol.md section 6, v1.1):
//! `GET /api/v1/sync/tables/{tableId}/records?after=&limit=` (or
//! `?recordId=a&recordId=b`) reads the same pages as `load_records` (v1.3:
//! `&viewId=v` only the view's records, `$user` bound to `&userId=`);
//! `POST` of `{"records": [{recordId, version, fields, deleted?}]}` seeds
//! record states from the app's database (written only when newer, no
//! event appended).

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::json_io::{error_response, json, read_json, Body};
use crate::app::App;
use crate::change::ids::check_id;
use crate::protocol::{ErrorCode, RequestError};
use crate::session::records::filtered_page;
use crate::store::bases::{self, Bind};
use crate::store::records::{self, Load, SeedRecord};

/// `tableId` of `/api/v1/sync/tables/{tableId}/records`: one path segment,
/// percent-decoded once (a `+` stays a `+`, and `&` or `=` are part of the
/// id); a segment that does not decode to UTF-8 is `bad_request`. `None`
/// when the path is not this route.
pub fn table_of(path: &str) -> Option<Result<String, RequestError>> {
    let rest = path.strip_prefix("/api/v1/sync/tables/")?;
    let encoded = rest.strip_suffix("/records")?;
    if encoded.contains('/') {
        return None;
    }
    Some(
        percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| RequestError::bad_request("tableId in the path is not UTF-8")),
    )
}

pub async fn get(app: &App, table: &str, req: &Request<Incoming>) -> Response<Body> {
    match load(app, table, req.uri().query().unwrap_or("")).await {
        Ok(page) => json(StatusCode::OK, &json!({"success": true, "data": page})),
        Err(e) => error_response(&e),
    }
}

async fn load(app: &App, table: &str, query: &str) -> Result<records::RecordPage, RequestError> {
    check_id("tableId", table)?;
    let mut ids = Vec::new();
    let mut after = None;
    let mut limit = None;
    let (mut view, mut user) = (None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "recordId" => ids.push(v.into_owned()),
            "viewId" => view = Some(v.into_owned()),
            "userId" => user = Some(v.into_owned()),
            "after" => after = Some(v.into_owned()).filter(|a| !a.is_empty()),
            "limit" => {
                limit = Some(
                    v.parse::<usize>()
                        .map_err(|_| RequestError::bad_request("limit must be a number"))?,
                );
            }
            _ => {}
        }
    }
    let what = Load::new((!ids.is_empty()).then_some(ids), after, limit)?;
    if let Some(filter) = view_filter(app, table, view.as_deref(), user.as_deref()).await? {
        let max = app.config.max_page_bytes;
        let user = user.unwrap_or_default();
        let page = filtered_page(&app.store, max, table, what, &[filter], &user).await?;
        return Ok(page);
    }
    Ok(records::load(&app.store, table, &what, app.config.max_page_bytes, None).await?)
}

/// v1.3 (3.5): the filter of `?viewId=` (none: the whole table), with
/// `?userId=` as the `$user` it is evaluated for.
async fn view_filter(
    app: &App,
    table: &str,
    view: Option<&str>,
    user: Option<&str>,
) -> Result<Option<std::sync::Arc<crate::filter::Filter>>, RequestError> {
    if let Some(u) = user {
        check_id("userId", u)?;
    }
    let Some(view) = view else {
        return Ok(None);
    };
    check_id("viewId", view)?;
    Ok(app.views.load(&app.store, table, view).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct SeedBody {
    records: Vec<SeedRecord>,
    /// The table's base (docs/protocol.md 3.2): the seed binds it.
    #[serde(default)]
    base_id: Option<String>,
}

pub async fn seed(
    app: &App,
    table: &str,
    req: Request<Incoming>,
    peer: std::net::IpAddr,
) -> Response<Body> {
    let result = seed_records(app, table, req).await;
    let (outcome, detail) = match &result {
        Ok(r) => (
            "ok",
            format!("written {}, skipped {}", r.written, r.skipped),
        ),
        // The code only: a message may quote the body.
        Err(e) => (e.code.as_str(), String::new()),
    };
    let table = crate::change::ids::is_valid_id(table).then_some(table);
    app.audit.api(
        crate::audit::AuditAction::ApiSeed,
        peer,
        table,
        outcome,
        &detail,
    );
    match result {
        Ok(r) => json(StatusCode::OK, &json!({"success": true, "data": r})),
        Err(e) => error_response(&e),
    }
}

async fn seed_records(
    app: &App,
    table: &str,
    req: Request<Incoming>,
) -> Result<records::SeedResult, RequestError> {
    check_id("tableId", table)?;
    let body = read_json(app, req).await?;
    let body: SeedBody = serde_json::from_value(body).map_err(|e| {
        RequestError::bad_request(format!(
            "body must be {{\"records\": [{{recordId, version, fields, deleted?}}]}}: {e}"
        ))
    })?;
    if body.records.len() > app.config.max_batch.get() {
        return Err(RequestError::new(
            ErrorCode::PayloadTooLarge,
            format!("at most {} records per seed", app.config.max_batch.get()),
        ));
    }
    records::validate_seed(
        &body.records,
        app.config.max_frame_bytes.get(),
        app.config.max_record_bytes.get(),
    )?;
    if let Some(base) = &body.base_id {
        check_id("baseId", base)?;
        bases::bind(&app.store, table, base, Bind::Replace).await?;
    }
    if body.records.is_empty() {
        return Ok(records::SeedResult {
            written: 0,
            skipped: 0,
        });
    }
    let result = records::seed(&app.store, table, &body.records).await?;
    tracing::info!(
        table,
        written = result.written,
        skipped = result.skipped,
        "seeded records"
    );
    Ok(result)
}
