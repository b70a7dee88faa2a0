//! `GET|POST /query`: classify the statements, pick backend(s), answer as
//! InfluxDB would.
//!
//! When every statement reads measurements of the same backend set and none
//! asks for a timeshift, the whole query goes to one healthy backend of that
//! set and its answer is streamed back as it arrives (JSON or CSV, chunked or
//! not, exactly as the backend wrote it). Otherwise each statement is run on
//! its own (`query::plan`), fanned-out answers are merged (`query::merge`),
//! and the results are numbered and rendered here.
//!
//! A healthy backend is one that is up and has nothing left to replay from
//! its spool, so a reader never sees a gap that a replica is still filling.
//! When no replica of a set can answer, a query sent whole answers 503 with an
//! error naming the backends and their state; in a fanned-out or
//! multi-statement query the statement carries that error (as InfluxDB
//! reports statement errors, in a 200 answer).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use serde_json::Value;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::generation::Generation;
use crate::query::backend::{self, QueryRequest};
use crate::query::influxql::{self, Statement, StatementKind};
use crate::query::merge::{self, error_result};
use crate::query::plan::{plan, Target};
use crate::query::timeshift::{self, Shift};
use crate::route::{BackendId, SetId};
use crate::server::request::{Head, Method};
use crate::server::response::{Body, Response};
use crate::server::worker::Worker;
use crate::urlencoded;

/// The parameters of a query, decoded from the URL and a form body.
#[derive(Debug, Default, Clone)]
struct QueryParams {
    q: String,
    db: Option<String>,
    rp: Option<String>,
    epoch: Option<String>,
    pretty: bool,
    chunked: bool,
    chunk_size: Option<String>,
    authorization: Option<String>,
    csv: bool,
}

impl QueryParams {
    fn parse(head: &Head, buf: &[u8], body: &[u8]) -> Result<QueryParams, Response> {
        let mut params = QueryParams {
            csv: head.accept_csv,
            ..QueryParams::default()
        };
        let (mut user, mut password) = (None, None);
        let body = if head.method == Method::Post && (head.form_body || !body.is_empty()) {
            std::str::from_utf8(body).map_err(|_| bad_request("query body is not UTF-8"))?
        } else {
            ""
        };
        for (key, value) in urlencoded::pairs(head.query(buf)).chain(urlencoded::pairs(body)) {
            let value = urlencoded::decode(value)
                .ok_or_else(|| bad_request(&format!("invalid encoding of parameter {key:?}")))?;
            match key {
                "q" => params.q = value,
                "db" => params.db = Some(value).filter(|v| !v.is_empty()),
                "rp" => params.rp = Some(value).filter(|v| !v.is_empty()),
                "epoch" => params.epoch = Some(value).filter(|v| !v.is_empty()),
                "pretty" => params.pretty = value == "true",
                "chunked" => params.chunked = value == "true",
                "chunk_size" => params.chunk_size = Some(value),
                "u" => user = Some(value),
                "p" => password = Some(value),
                _ => {}
            }
        }
        if params.q.trim().is_empty() {
            return Err(bad_request("missing required parameter \"q\""));
        }
        params.authorization =
            super::backend_authorization(head.authorization(buf), user, password);
        Ok(params)
    }

    /// The backend's `/query` target for `q`, with `epoch` overridden when given.
    fn target(&self, q: &str, epoch: Option<&str>, pass_through: bool) -> String {
        let mut target = String::from("/query?q=");
        urlencoded::encode_into(q, &mut target);
        for (key, value) in [
            ("db", self.db.as_deref()),
            ("rp", self.rp.as_deref()),
            ("epoch", epoch),
        ] {
            if let Some(value) = value {
                target.push('&');
                target.push_str(key);
                target.push('=');
                urlencoded::encode_into(value, &mut target);
            }
        }
        if pass_through {
            if self.pretty {
                target.push_str("&pretty=true");
            }
            if self.chunked {
                target.push_str("&chunked=true");
                if let Some(size) = &self.chunk_size {
                    target.push_str("&chunk_size=");
                    urlencoded::encode_into(size, &mut target);
                }
            }
        }
        target
    }
}

fn bad_request(message: &str) -> Response {
    Response::error(400, message)
}

/// Handles `/query`.
pub async fn query(
    worker: &Worker,
    generation: &Generation,
    head: &Head,
    buf: &[u8],
    body: &[u8],
    identity: Option<&Identity>,
) -> Response {
    let mut params = match QueryParams::parse(head, buf, body) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let statements = match influxql::parse_query(&params.q) {
        Ok(statements) => statements,
        Err(e) => return bad_request(&format!("error parsing query: {e}")),
    };
    // One generation for the whole query: backend ids index its tables.
    if generation.users.is_enabled() {
        // The client's credentials are fluxgate's own, not the backends'.
        params.authorization = None;
    }
    let mut plans = Vec::with_capacity(statements.len());
    for statement in &statements {
        if let Some(identity) = identity {
            if requires_admin(statement) {
                if let Err(refused) = identity.require_admin(statement.text) {
                    return ApiError::Forbidden(refused.to_string()).response();
                }
            }
        }
        let target = plan(
            statement,
            &generation.router,
            generation.config.query.allow_admin,
        );
        match &target {
            // InfluxDB refuses a query it may not run as a whole, with 403.
            Target::Refused(reason) => {
                return Response::error(403, format!("error authorizing query: {reason}"))
            }
            Target::Invalid(reason) => {
                return bad_request(&format!("error parsing query: {reason}"))
            }
            _ => {}
        }
        let shift = match timeshift::requested(statement) {
            Ok(shift) => shift,
            Err(message) => return bad_request(&message),
        };
        plans.push((target, shift));
    }

    // One set, no shift: stream the backend's answer.
    if let Some(Target::One(set)) = plans.first().map(|(target, _)| target.clone()) {
        if plans
            .iter()
            .all(|(target, shift)| *target == Target::One(set) && shift.is_none())
        {
            return pass_through(worker, generation, &params, set).await;
        }
    }

    let mut results = Vec::with_capacity(statements.len());
    for (id, (statement, (target, shift))) in statements.iter().zip(plans).enumerate() {
        let result = match run_statement(
            worker,
            generation,
            &params,
            statement,
            &target,
            shift.as_ref(),
        )
        .await
        {
            Ok(result) => result,
            Err(response) => return response,
        };
        results.push(result);
        set_statement_id(results.last_mut().expect("just pushed"), id);
    }
    render(&params, results)
}

/// Streams the whole query's answer from one healthy backend of `set`.
async fn pass_through(
    worker: &Worker,
    generation: &Generation,
    params: &QueryParams,
    set: SetId,
) -> Response {
    let candidates = healthy_replicas(generation, generation.router.backends(set));
    let mut last_error = no_healthy_message(generation, generation.router.backends(set));
    for backend in candidates {
        let request = QueryRequest {
            authority: authority(generation, backend),
            target: params.target(&params.q, params.epoch.as_deref(), true),
            authorization: backend_authorization(generation, backend, params),
            accept: params.csv.then(|| "application/csv".to_owned()),
        };
        match backend::open(
            &request,
            &worker.query_connections,
            generation.config.query.timeout,
        )
        .await
        {
            Ok(answer) => {
                return Response {
                    status: answer.status,
                    body: Body::Proxied(Box::new(answer)),
                    retry_after: None,
                    close: false,
                }
            }
            Err(e) => {
                last_error = format!(
                    "backend {} failed: {e}",
                    generation.config.backends[backend].name
                );
                tracing::warn!(backend = %generation.config.backends[backend].name, error = %e, "query failed; trying another replica");
            }
        }
    }
    Response::error(503, last_error)
}

/// Runs one statement where its plan says, returning its result object.
/// `Err` carries a response for the whole query (the backend refused the
/// client's credentials).
async fn run_statement(
    worker: &Worker,
    generation: &Generation,
    params: &QueryParams,
    statement: &Statement<'_>,
    target: &Target,
    shift: Option<&Shift>,
) -> Result<Value, Response> {
    let text = match shift {
        Some(shift) => match timeshift::rewrite(statement, shift) {
            Ok(text) => text,
            Err(message) => return Ok(error_result(0, &message)),
        },
        None => statement.text.to_owned(),
    };
    // A shifted answer comes back in ns so its times can be moved exactly.
    let epoch = if shift.is_some() {
        Some("ns")
    } else {
        params.epoch.as_deref()
    };
    let request_target = params.target(&text, epoch, false);
    let mut result = match target {
        Target::One(set) => ask_set(worker, generation, params, *set, &request_target).await?,
        Target::Each(sets) => {
            let asks = sets
                .iter()
                .map(|set| ask_set(worker, generation, params, *set, &request_target));
            let answers = join_all(asks.collect())
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            merge::merge_results(0, answers, statement.kind.is_show())
        }
        Target::Every => {
            let asks = (0..generation.config.backends.len())
                .map(|b| ask_backend(worker, generation, params, b, &request_target));
            let answers = join_all(asks.collect())
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?;
            answers
                .into_iter()
                .find(|answer| answer.get("error").is_some())
                .unwrap_or_else(|| serde_json::json!({ "statement_id": 0 }))
        }
        Target::Refused(reason) | Target::Invalid(reason) => error_result(0, reason),
    };
    if let Some(shift) = shift {
        timeshift::shift_times(&mut result, shift.nanos, params.epoch.as_deref());
    }
    Ok(result)
}

/// Asks one healthy backend of `set`, trying the next replica when one fails.
async fn ask_set(
    worker: &Worker,
    generation: &Generation,
    params: &QueryParams,
    set: SetId,
    target: &str,
) -> Result<Value, Response> {
    let backends = generation.router.backends(set);
    let mut last_error = no_healthy_message(generation, backends);
    for backend in healthy_replicas(generation, backends) {
        match ask_backend(worker, generation, params, backend, target).await {
            Ok(result) if !is_connection_error(&result) => return Ok(result),
            Ok(result) => {
                last_error = result["error"].as_str().unwrap_or_default().to_owned();
            }
            Err(response) => return Err(response),
        }
    }
    Ok(error_result(0, &last_error))
}

/// Marks results built from a failure to reach the backend (not its answer).
const UNREACHABLE: &str = "fluxgate_unreachable";

fn is_connection_error(result: &Value) -> bool {
    result.get(UNREACHABLE).is_some()
}

/// Sends one statement to one backend and returns its (first) result object.
async fn ask_backend(
    worker: &Worker,
    generation: &Generation,
    params: &QueryParams,
    backend: BackendId,
    target: &str,
) -> Result<Value, Response> {
    let name = &generation.config.backends[backend].name;
    let request = QueryRequest {
        authority: authority(generation, backend),
        target: target.to_owned(),
        authorization: backend_authorization(generation, backend, params),
        accept: None,
    };
    let answer = match backend::fetch(
        &request,
        &worker.query_connections,
        generation.config.query.timeout,
        generation.config.query.max_response_bytes.as_usize(),
    )
    .await
    {
        Ok(answer) => answer,
        Err(e) => {
            generation.backends[backend].stats.mark_down(&e.to_string());
            let mut result = error_result(0, &format!("backend {name} failed: {e}"));
            result[UNREACHABLE] = Value::Bool(true);
            return Ok(result);
        }
    };
    if answer.status == 401 || answer.status == 403 {
        let mut response = Response::error(answer.status, String::new());
        response.body = Body::Json(String::from_utf8_lossy(&answer.body).into_owned());
        return Err(response);
    }
    let json: Value = match serde_json::from_slice(&answer.body) {
        Ok(json) => json,
        Err(e) => {
            return Ok(error_result(
                0,
                &format!(
                    "backend {name} answered HTTP {} with no JSON: {e}",
                    answer.status
                ),
            ))
        }
    };
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        return Ok(error_result(0, error));
    }
    Ok(json
        .get("results")
        .and_then(|results| results.get(0))
        .cloned()
        .unwrap_or_else(|| serde_json::json!({ "statement_id": 0 })))
}

/// Runs futures concurrently on the worker's runtime (backends are asked in
/// parallel) and returns their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

fn set_statement_id(result: &mut Value, id: usize) {
    if let Some(object) = result.as_object_mut() {
        object.remove(UNREACHABLE);
        object.insert("statement_id".into(), id.into());
    }
}

fn render(params: &QueryParams, results: Vec<Value>) -> Response {
    if params.csv {
        return Response {
            status: 200,
            body: Body::Csv(merge::render_csv(&results)),
            retry_after: None,
            close: false,
        };
    }
    let document = serde_json::json!({ "results": results });
    let text = if params.pretty {
        serde_json::to_string_pretty(&document)
    } else {
        serde_json::to_string(&document)
    }
    .unwrap_or_default();
    Response {
        status: 200,
        body: Body::Json(text + "\n"),
        retry_after: None,
        close: false,
    }
}

/// InfluxDB asks for an admin for these (its `RequiredPrivileges`): what
/// changes data or access, creating databases, and the `SHOW`s about the
/// server itself. `SHOW QUERIES` needs none.
fn requires_admin(statement: &Statement<'_>) -> bool {
    use StatementKind::*;
    match statement.kind {
        kind if kind.is_admin() => true,
        // The kind comes from the lexer, which skips comments: a test of the
        // text could be fooled by `SHOW/* queries */GRANTS`.
        CreateDatabase
        | CreateRetentionPolicy
        | ShowUsers
        | ShowShards
        | ShowStats
        | ShowDiagnostics
        | ShowOther => true,
        _ => false,
    }
}

/// The backend's own credentials, or else the client's (without proxy users).
fn backend_authorization(
    generation: &Generation,
    backend: BackendId,
    params: &QueryParams,
) -> Option<String> {
    generation.config.backends[backend]
        .authorization()
        .or_else(|| params.authorization.clone())
}

fn authority(generation: &Generation, backend: BackendId) -> String {
    crate::config::BackendUrl::parse(&generation.config.backends[backend].url)
        .map(|url| url.authority)
        .unwrap_or_default()
}

/// The healthy backends among `backends`, starting at a rotating offset so
/// reads spread across replicas.
fn healthy_replicas(generation: &Generation, backends: &[BackendId]) -> Vec<BackendId> {
    thread_local! {
        static NEXT: Cell<usize> = const { Cell::new(0) };
    }
    let start = NEXT.with(|next| {
        let value = next.get();
        next.set(value.wrapping_add(1));
        value
    });
    let healthy: Vec<BackendId> = backends
        .iter()
        .copied()
        .filter(|&b| is_healthy(generation, b))
        .collect();
    let n = healthy.len();
    (0..n).map(|i| healthy[(start + i) % n]).collect()
}

fn is_healthy(generation: &Generation, backend: BackendId) -> bool {
    let stats = &generation.backends[backend].stats;
    !generation.config.backends[backend].write_only
        && stats.up.load(Ordering::Relaxed)
        && stats.spool_records.load(Ordering::Relaxed) == 0
}

/// "no healthy backend: a (down), b (replaying its spool)".
fn no_healthy_message(generation: &Generation, backends: &[BackendId]) -> String {
    let states: Vec<String> = backends
        .iter()
        .map(|&b| {
            let stats = &generation.backends[b].stats;
            let state = if !stats.up.load(Ordering::Relaxed) {
                "down"
            } else if stats.spool_records.load(Ordering::Relaxed) > 0 {
                "replaying its spool"
            } else if generation.config.backends[b].write_only {
                "write-only"
            } else {
                "healthy"
            };
            format!("{} ({state})", stats.name)
        })
        .collect();
    format!("no healthy backend holds this data: {}", states.join(", "))
}
