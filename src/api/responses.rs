//! Descriptions of the problem responses many endpoints share, each naming every `code` it can
//! carry (see docs/API.md, Errors), so that the OpenAPI document lists what a client may see.
//! The types below are those responses, for `responses(...)` in the operations' annotations.

use crate::error::Problem;

pub const UNAUTHORIZED: &str = "`missing_token`, `invalid_token`, `token_expired`, \
`token_wrong_issuer`, `token_wrong_audience`, `token_unknown_key`: send a valid token from the \
identity provider";

pub const IDENTITY_UNAVAILABLE: &str = "`identity_provider_unavailable`: no key of the identity \
provider is known yet and its keys could not be fetched (check auth.jwks_url or auth.issuer; \
if they are right, try again shortly)";

pub const STRIPE_UNAVAILABLE: &str = "`billing_disabled` (SAAS=false: nothing is sold), \
`stripe_not_configured` (no STRIPE_SECRET_KEY), or `identity_provider_unavailable`";

pub const UPSTREAM: &str = "`upstream_error`: a request to Stripe failed or was refused; try \
again shortly";

pub const BODY_TOO_LARGE: &str = "`body_too_large`: the body is larger than \
server.max_body_bytes";

pub const NOT_JSON: &str = "`unsupported_media_type`: send the body as application/json";

pub const MISSING_READ_SCOPE: &str = "`missing_scope`: the token lacks the read scope \
(`billing:read`)";

pub const MISSING_ADMIN_SCOPE: &str = "`missing_scope`: the token lacks the admin scope \
(`billing:admin`)";

/// 401: [`UNAUTHORIZED`].
#[derive(utoipa::IntoResponses)]
#[response(
    status = 401,
    description = UNAUTHORIZED,
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tollgate\"`, with `error=\"invalid_token\"` when a token was sent (RFC 6750)"))
)]
pub struct Unauthorized(#[allow(dead_code)] Problem);

/// 503: [`IDENTITY_UNAVAILABLE`].
#[derive(utoipa::IntoResponses)]
#[response(
    status = 503,
    description = IDENTITY_UNAVAILABLE,
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "seconds until the keys are fetched again (`auth.jwks_refetch_min_seconds`)"))
)]
pub struct IdentityUnavailable(#[allow(dead_code)] Problem);

/// 503: [`STRIPE_UNAVAILABLE`].
#[derive(utoipa::IntoResponses)]
#[response(status = 503, description = STRIPE_UNAVAILABLE, content_type = "application/problem+json")]
pub struct StripeUnavailable(#[allow(dead_code)] Problem);

/// 502: [`UPSTREAM`].
#[derive(utoipa::IntoResponses)]
#[response(status = 502, description = UPSTREAM, content_type = "application/problem+json")]
pub struct Upstream(#[allow(dead_code)] Problem);

/// 413: [`BODY_TOO_LARGE`].
#[derive(utoipa::IntoResponses)]
#[response(status = 413, description = BODY_TOO_LARGE, content_type = "application/problem+json")]
pub struct BodyTooLarge(#[allow(dead_code)] Problem);

/// 415: [`NOT_JSON`].
#[derive(utoipa::IntoResponses)]
#[response(status = 415, description = NOT_JSON, content_type = "application/problem+json")]
pub struct NotJson(#[allow(dead_code)] Problem);

/// 403: [`MISSING_READ_SCOPE`].
#[derive(utoipa::IntoResponses)]
#[response(
    status = 403,
    description = MISSING_READ_SCOPE,
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tollgate\", error=\"insufficient_scope\"` (RFC 6750)"))
)]
pub struct MissingReadScope(#[allow(dead_code)] Problem);

/// 403: [`MISSING_ADMIN_SCOPE`].
#[derive(utoipa::IntoResponses)]
#[response(
    status = 403,
    description = MISSING_ADMIN_SCOPE,
    content_type = "application/problem+json",
    headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"tollgate\", error=\"insufficient_scope\"` (RFC 6750)"))
)]
pub struct MissingAdminScope(#[allow(dead_code)] Problem);
