//! Building the application: state, routes, middleware, and the bound server.

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::dev::Service as _;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Compress, DefaultHeaders, ErrorHandlers};
use actix_web::HttpMessage as _;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use secrecy::ExposeSecret;
use tracing_actix_web::{RequestId, TracingLogger};
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Settings;
use crate::error;
use crate::state::{build_state, system_clock, AppState, Clock};

/// A bound, not yet running server; `port()` tells where it listens (tests bind port 0).
pub struct Application {
    port: u16,
    server: Server,
    pub state: web::Data<AppState>,
}

impl Application {
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, system_clock())
    }

    pub fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Application> {
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address)
            .with_context(|| format!("could not listen on {address} (server.host/server.port)"))?;
        let port = listener.local_addr()?.port();
        let max_body = settings.server.max_body_bytes;
        let (workers, blocking) = db_threads(settings.database.max_connections);
        let cors_origins = settings.cors_origins();
        let state = web::Data::new(build_state(settings, clock)?);
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            let (app, api) = App::new()
                .into_utoipa_app()
                .openapi(crate::api::base_openapi())
                .app_data(app_state.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(max_body)
                        .error_handler(error::json_error_handler),
                )
                .app_data(web::PayloadConfig::new(max_body))
                .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
                .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
                .configure(crate::api::routes)
                .split_for_parts();
            app.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", api))
                .service(web::redirect("/docs", "/docs/"))
                .default_service(web::to(not_found))
                .wrap(actix_web::middleware::from_fn(refuse_oversized_bodies))
                .wrap(ErrorHandlers::new().default_handler(error::problem_safety_net))
                .wrap(Compress::default())
                .wrap(DefaultHeaders::new().add(("X-Content-Type-Options", "nosniff")))
                .wrap_fn(|req, srv| {
                    // Echo the request id that TracingLogger put on every log line of this request.
                    let request_id = req.extensions().get::<RequestId>().map(|id| id.to_string());
                    let fut = srv.call(req);
                    async move {
                        let mut res = fut.await?;
                        if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok())
                        {
                            res.headers_mut()
                                .insert(HeaderName::from_static("x-request-id"), id);
                        }
                        Ok(res)
                    }
                })
                .wrap(cors(&cors_origins))
                // Inside the request span, outside everything that may answer on its own.
                .wrap_fn(crate::telemetry::observe)
                .wrap(TracingLogger::<crate::telemetry::RequestSpan>::new())
        })
        .workers(workers)
        .worker_max_blocking_threads(blocking)
        .listen(listener)?
        .run();
        if let Some(cache) = state.db.snapshot_cache() {
            tokio::spawn(crate::db::snapshot_cache::listen(
                cache.clone(),
                state.settings.database.url.expose_secret().to_owned(),
            ));
        }
        tokio::spawn(crate::service::events::run_dispatcher(
            state.clone().into_inner(),
        ));
        if state.stripe.is_some() {
            tokio::spawn(crate::service::remedies::run_worker(
                state.clone().into_inner(),
            ));
            tokio::spawn(crate::service::webhooks::run_worker(
                state.clone().into_inner(),
            ));
        }
        if state.licenses.github.is_some() {
            tokio::spawn(crate::service::licenses::run_worker(
                state.clone().into_inner(),
            ));
        }
        let interval = state.settings.reconcile.interval_seconds;
        if interval > 0 && state.settings.saas && state.stripe.is_some() {
            tokio::spawn(crate::service::reconcile::run_schedule(
                state.clone().into_inner(),
                Duration::from_secs(interval),
            ));
        }
        Ok(Application {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// actix-web's worker count (one per core, its default) and each worker's blocking threads,
/// which run the database work: together as many as the pool has connections. More threads
/// than connections only wait inside the pool, where a returned connection goes to whichever
/// thread asks first rather than to the one that waited longest; on a saturated 2-core machine
/// that cost 15 to 20% of the throughput and multiplied the 99th-percentile latency (see
/// docs/BENCHMARKS.md). Extra work queues in the worker's blocking pool, in arrival order.
pub fn db_threads(max_connections: u32) -> (usize, usize) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let connections = usize::try_from(max_connections)
        .unwrap_or(usize::MAX)
        .max(1);
    (workers, connections.div_ceil(workers))
}

/// CORS for browser apps on `origins` (see `Settings::cors_origins`): preflights answered, the
/// caller's token sent as `Authorization` (no cookies), and the headers a client reads exposed.
/// A request from another origin is still served (curl, services), without CORS headers, so a
/// browser refuses to hand its answer to the page.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    let cors = origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        });
    cors.allowed_methods(["GET", "POST", "DELETE"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            header::RETRY_AFTER,
            header::WWW_AUTHENTICATE,
        ])
        .max_age(3600)
}

/// No route matched: 405 with `Allow` for a known path asked with another method, else 404.
async fn not_found(req: actix_web::HttpRequest) -> actix_web::HttpResponse {
    use actix_web::http::StatusCode;
    if let Some(allow) = crate::api::allowed_methods(req.path()) {
        let mut res = error::problem_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} answers {allow}, not {}", req.path(), req.method()),
        );
        if let Ok(value) = HeaderValue::from_str(allow) {
            res.headers_mut()
                .insert(actix_web::http::header::ALLOW, value);
        }
        return res;
    }
    error::problem_response(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no endpoint {} {} (see /docs)", req.method(), req.path()),
    )
}

/// Refuses a body declared larger than `server.max_body_bytes` before anything reads it, on
/// every endpoint (also those that ignore their body). The refusal is a response, not an
/// error, so that it keeps its request (the metrics and the access log name its route).
async fn refuse_oversized_bodies(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<
    actix_web::dev::ServiceResponse<actix_web::body::EitherBody<impl actix_web::body::MessageBody>>,
    actix_web::Error,
> {
    let max = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.settings.server.max_body_bytes);
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(declared)) = (max, declared) {
        if declared > max as u64 {
            let refusal = error::ApiError::new(
                actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body ({declared} bytes) is larger than server.max_body_bytes ({max})"),
            );
            return Ok(req.error_response(refusal).map_into_right_body());
        }
    }
    next.call(req).await.map(|res| res.map_into_left_body())
}
