//! `GET /api/v1/sync/tables/{tableId}/records/{recordId}/history?before=&limit=`
//! (v1.3, docs/protocol.md 3.3): the same pages of one record's history as
//! `record_history`, for backends holding the API token (which sees every
//! field). Data flow: `api::handle` (token checked) → [`route_of`] →
//! [`get`] → `session::record_history::page`.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::json_io::{error_response, json, Body};
use crate::app::App;
use crate::protocol::messages::RecordHistoryReq;
use crate::protocol::RequestError;
use crate::session::record_history::{page, HistoryPage};

/// `(tableId, recordId)` of a history path, each one path segment
/// percent-decoded once; `None` when the path is not this route.
pub fn route_of(path: &str) -> Option<Result<(String, String), RequestError>> {
    let rest = path.strip_prefix("/api/v1/sync/tables/")?;
    let rest = rest.strip_suffix("/history")?;
    let (table, record) = rest.split_once("/records/")?;
    if table.contains('/') || record.contains('/') {
        return None;
    }
    Some(decode(table).and_then(|t| Ok((t, decode(record)?))))
}

fn decode(segment: &str) -> Result<String, RequestError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| RequestError::bad_request("an id in the path is not UTF-8"))
}

pub async fn get(
    app: &App,
    (table, record): (String, String),
    req: &Request<Incoming>,
) -> Response<Body> {
    match read(app, table, record, req.uri().query().unwrap_or("")).await {
        Ok(page) => json(StatusCode::OK, &json!({"success": true, "data": page})),
        Err(e) => error_response(&e),
    }
}

async fn read(
    app: &App,
    table: String,
    record: String,
    query: &str,
) -> Result<HistoryPage, RequestError> {
    let mut before = None;
    let mut limit = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "before" => before = Some(v.into_owned()),
            "limit" => {
                limit = Some(
                    v.parse::<usize>()
                        .map_err(|_| RequestError::bad_request("limit must be a number"))?,
                );
            }
            _ => {}
        }
    }
    let req = RecordHistoryReq {
        table_id: table,
        record_id: record,
        before,
        limit,
    }
    .validate()?;
    Ok(page(&app.store, &req, app.config.max_page_bytes, None).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_path_names_its_table_and_record_decoded() {
        let got = route_of("/api/v1/sync/tables/t%201/records/r%2F1/history");
        assert_eq!(got.and_then(Result::ok), Some(("t 1".into(), "r/1".into())));
    }

    #[test]
    fn other_paths_are_not_the_history_route() {
        assert!(route_of("/api/v1/sync/tables/t/records").is_none());
        assert!(route_of("/api/v1/sync/tables/t/records/r").is_none());
        assert!(route_of("/api/v1/sync/tables/t/x/records/r/history").is_none());
    }
}
