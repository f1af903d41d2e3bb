//! The one error type of the API: RFC 9457 problem+json with a stable snake_case `code`.
//! 4xx say what to fix; 5xx are opaque to the caller and logged in full.

use actix_web::http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::error::{Refusal, ServiceError};

/// A problem document (`application/problem+json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(examples(json!({
    "type": "urn:tollgate:problem:unknown_plan",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "there is no plan `platinum` (see GET /v1/config)",
    "code": "unknown_plan"
})))]
pub struct Problem {
    /// A URI naming the problem type (`urn:tollgate:problem:<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// What went wrong and how to fix it.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
        /// Answered as `Retry-After` (429, and 503s that pass by themselves).
        retry_after_seconds: Option<u64>,
    },
    /// Something on our side or Stripe's failed; the cause is logged, never shown.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
    #[error("upstream error: {0:#}")]
    Upstream(anyhow::Error),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Client {
            status,
            code,
            detail: detail.into(),
            retry_after_seconds: None,
        }
    }
    /// Tells the caller when trying again makes sense (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let ApiError::Client {
            retry_after_seconds,
            ..
        } = &mut self
        {
            *retry_after_seconds = Some(seconds);
        }
        self
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    /// `400 invalid_body`: a JSON body that does not fit its type.
    pub fn body_does_not_fit(error: impl std::fmt::Display) -> Self {
        Self::bad_request(
            "invalid_body",
            format!("the JSON body does not fit: {error}"),
        )
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
    pub fn stripe_not_configured() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "stripe_not_configured",
            "Stripe is not configured on this server: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET",
        )
    }
    /// Stripe failed or answered something we cannot use: 502, opaque.
    pub fn upstream(err: impl Into<anyhow::Error>) -> Self {
        ApiError::Upstream(err.into())
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Client { code, .. } => code,
            ApiError::Internal(_) => "internal_error",
            ApiError::Upstream(_) => "upstream_error",
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Refused { kind, code, detail } => {
                let status = match kind {
                    Refusal::Invalid => StatusCode::BAD_REQUEST,
                    Refusal::PaymentRequired => StatusCode::PAYMENT_REQUIRED,
                    Refusal::Forbidden => StatusCode::FORBIDDEN,
                    Refusal::NotFound => StatusCode::NOT_FOUND,
                    Refusal::Conflict => StatusCode::CONFLICT,
                    Refusal::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
                    Refusal::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
                    Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                };
                let error = ApiError::new(status, code, detail);
                match kind {
                    Refusal::TooMany {
                        retry_after_seconds,
                    } => error.retry_after(retry_after_seconds),
                    _ => error,
                }
            }
            ServiceError::Upstream(e) => ApiError::Upstream(e),
            ServiceError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::Internal(anyhow::anyhow!("blocking task failed: {e}"))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Client { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let detail = match self {
            ApiError::Client { detail, code, .. } => {
                // A refusal is the answer working as designed (bad input, no scope, billing
                // off), never an error of Tollgate's.
                tracing::info!(status = status.as_u16(), code, "request refused");
                detail.clone()
            }
            // One line with the whole chain of causes (`{:#}`). Debug would add anyhow's
            // backtrace when RUST_BACKTRACE is set: only at DEBUG, for whoever asks for it.
            ApiError::Internal(e) => {
                tracing::error!(error = format_args!("{e:#}"), "request failed");
                tracing::debug!(error = ?e, "request failed (details)");
                "An internal error occurred; it has been logged.".into()
            }
            ApiError::Upstream(e) => {
                tracing::error!(error = format_args!("{e:#}"), "Stripe request failed");
                "A request to Stripe failed; try again shortly.".into()
            }
        };
        let mut response = problem_response(status, self.code(), detail);
        let headers = response.headers_mut();
        if let Some(challenge) = bearer_challenge(status, self.code()) {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let ApiError::Client {
            retry_after_seconds: Some(seconds),
            ..
        } = self
        {
            headers.insert(RETRY_AFTER, HeaderValue::from(*seconds));
        }
        response
    }
}

/// The `WWW-Authenticate` challenge of RFC 6750 for a refusal about the bearer token: every 401
/// (with `error="invalid_token"` when a token was sent but refused), and a 403 for a missing
/// scope.
fn bearer_challenge(status: StatusCode, code: &str) -> Option<&'static str> {
    match (status, code) {
        (StatusCode::UNAUTHORIZED, "missing_token") => Some(r#"Bearer realm="tollgate""#),
        (StatusCode::UNAUTHORIZED, _) => Some(r#"Bearer realm="tollgate", error="invalid_token""#),
        (StatusCode::FORBIDDEN, "missing_scope") => {
            Some(r#"Bearer realm="tollgate", error="insufficient_scope""#)
        }
        _ => None,
    }
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: String) -> Problem {
        Problem {
            type_: format!("urn:tollgate:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
        }
    }
}

pub fn problem_response(status: StatusCode, code: &str, detail: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/problem+json")
        .json(Problem::new(status, code, detail))
}

/// Turns actix's extractor errors (bad JSON, wrong types, huge bodies, bad query strings)
/// into problem documents instead of plain-text 400s.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let api = match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            err.to_string(),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        E::Deserialize(e) => ApiError::body_does_not_fit(e),
        _ => ApiError::bad_request("invalid_body", err.to_string()),
    };
    api.into()
}

pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request(
        "invalid_query",
        format!("the query string does not fit: {err}"),
    )
    .into()
}

pub fn path_error_handler(
    err: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_path", err.to_string()).into()
}

/// A safety net: any error response that is not already a problem document (actix's own
/// plain-text 413 for an oversized webhook body, 405, ...) is rewritten as one.
pub fn problem_safety_net<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::http::header::CONTENT_TYPE;
    use actix_web::middleware::ErrorHandlerResponse;
    let is_problem = res
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/problem+json");
    if is_problem {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    };
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than server.max_body_bytes".to_owned()
        }
        s if s.is_client_error() => format!(
            "the request was refused: {}",
            s.canonical_reason().unwrap_or("error")
        ),
        _ => "An internal error occurred; it has been logged.".to_owned(),
    };
    let (req, _) = res.into_parts();
    let response = problem_response(status, code, detail);
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, response).map_into_right_body(),
    ))
}
