//! Logs: human-readable by default, JSON lines with `server.json_logs`; `RUST_LOG` filters.
//! Every request is measured (`tollgate_http_request_duration_seconds`) and logged once on the
//! target `tollgate::access` ([`observe`]).

use std::future::Future;
use std::io::IsTerminal;
use std::time::Instant;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// The server's logs, on standard output, written by a thread of their own: a request formats
/// its lines and queues them; the thread writes them in batches (one write for many lines),
/// so no request waits on the log's pipe or file. Keep the guard until the process ends: its
/// drop writes what is still queued. (A `kill -9` loses at most the lines of the last batch.)
/// With more than 128,000 lines queued, requests wait for the writer rather than drop lines.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(json: bool) -> tracing_appender::non_blocking::WorkerGuard {
    let terminal = std::io::stdout().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    install(json, BoxMakeWriter::new(writer), terminal);
    guard
}

/// A command's logs, on standard error (written at once, between its progress lines): its
/// standard output is its result.
pub fn init_for_command(json: bool) {
    install(
        json,
        BoxMakeWriter::new(std::io::stderr),
        std::io::stderr().is_terminal(),
    );
}

fn install(json: bool, writer: BoxMakeWriter, terminal: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = if json {
        fmt::layer()
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .boxed()
    } else {
        // Colours only on a terminal: a log file or collector gets plain text.
        fmt::layer()
            .with_target(false)
            .with_ansi(terminal)
            .with_writer(writer)
            .boxed()
    };
    // A second init (tests spawning several apps) is harmless.
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

/// The span every request runs in, so that each log line of a request names it: method, path
/// with query, the request id (echoed as `x-request-id`) and, once a token was verified, the
/// caller; a failed request adds its status and error. Deliberately lean: the subscriber formats a span's fields when it opens, on every
/// request, also when nothing is logged; tracing-actix-web's default span carries sixteen
/// fields (host, scheme, user agent, OpenTelemetry names ...) that cost the hot path about as
/// much as its database read.
pub struct RequestSpan;

impl tracing_actix_web::RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        use actix_web::HttpMessage as _;
        let request_id = request
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .copied();
        let target = request
            .uri()
            .path_and_query()
            .map_or(request.path(), |p| p.as_str());
        tracing::info_span!(
            "request",
            method = %request.method(),
            target = %target,
            request_id = tracing::field::display(request_id.map(|id| id.to_string()).unwrap_or_default()),
            caller = tracing::field::Empty,
            status = tracing::field::Empty,
            error = tracing::field::Empty,
        )
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let (status, error) = match outcome {
            Ok(response) => match response.response().error() {
                Some(error) => (response.status(), error.to_string()),
                None => return,
            },
            Err(error) => (error.as_response_error().status_code(), error.to_string()),
        };
        span.record("status", status.as_u16());
        span.record("error", tracing::field::display(error));
    }
}

/// The tracing target of the access log: `RUST_LOG=info,tollgate::access=off` silences it.
pub const ACCESS_TARGET: &str = "tollgate::access";

/// The `route` label of a request that matched no route (404), so that scanners' paths do not
/// become label values.
pub const UNMATCHED: &str = "unmatched";

/// Measures and logs every request (`.wrap_fn(telemetry::observe)`, inside the request span so
/// that its line names the request id and caller): the latency histogram by route pattern,
/// method and status, and one INFO line on [`ACCESS_TARGET`].
///
/// Per request this costs two clock reads, the matched pattern (actix keeps the matched
/// resource's index, so this is a lookup and one small string), one histogram record (a
/// label set built and looked up in the recorder's map) and, unless silenced, the log line.
pub fn observe<S, B>(
    req: ServiceRequest,
    service: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
{
    let started = Instant::now();
    let method = method_label(req.method());
    let call = service.call(req);
    async move {
        let outcome = call.await;
        let (status, route) = match &outcome {
            Ok(res) => (res.status(), res.request().match_pattern()),
            // An error no middleware turned into a response: nothing was routed.
            Err(e) => (e.as_response_error().status_code(), None),
        };
        let elapsed = started.elapsed();
        tracing::info!(
            target: ACCESS_TARGET,
            route = %route.as_deref().unwrap_or(UNMATCHED),
            status = status.as_u16(),
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "access"
        );
        let route: metrics::SharedString = match route {
            Some(route) => route.into(),
            None => UNMATCHED.into(),
        };
        metrics::histogram!(
            "tollgate_http_request_duration_seconds",
            "route" => route,
            "method" => method,
            "status" => status_label(status),
        )
        .record(elapsed.as_secs_f64());
        outcome
    }
}

/// The method as a static label; methods outside the standard set share one label.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a label, static for the codes Tollgate answers.
fn status_label(status: StatusCode) -> metrics::SharedString {
    let code = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        301 => "301",
        302 => "302",
        304 => "304",
        307 => "307",
        308 => "308",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        413 => "413",
        415 => "415",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return other.to_string().into(),
    };
    code.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded_and_exact() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(
            method_label(&Method::from_bytes(b"PROPFIND").unwrap()),
            "other"
        );
        for code in [200u16, 201, 404, 418, 422, 503, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(&*status_label(status), code.to_string());
        }
    }
}
