//! Logs: human-readable by default, JSON lines with `server.json_logs`; `RUST_LOG` filters.

use std::io::IsTerminal;

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// The server's logs, on standard output.
pub fn init(json: bool) {
    install(json, false);
}

/// A command's logs, on standard error: its standard output is its result.
pub fn init_for_command(json: bool) {
    install(json, true);
}

fn install(json: bool, to_stderr: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // async-stripe logs at ERROR every event its typed structs cannot hold; Tollgate reads
    // only the envelope and accepts such events (src/stripe/webhook.rs), so that is no error.
    let no_sdk_parse_errors = filter_fn(|meta| {
        !(*meta.level() == tracing::Level::ERROR && meta.target().starts_with("stripe_webhook"))
    });
    let (writer, terminal) = if to_stderr {
        (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        )
    } else {
        (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        )
    };
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
        .with(layer.with_filter(filter).with_filter(no_sdk_parse_errors))
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
