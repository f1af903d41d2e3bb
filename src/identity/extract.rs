//! Extractors: the authenticated caller is a handler argument, never a lookup inside it.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, FromRequest, HttpRequest};

use super::{AuthError, Caller};
use crate::config::ScopeSettings;
use crate::error::ApiError;
use crate::state::AppState;

/// An end user holding a valid token from the identity provider.
#[derive(Debug, Clone)]
pub struct EndUser(pub Caller);

/// A sibling service holding a valid token with the scope `S` names.
#[derive(Debug, Clone)]
pub struct Service<S: ScopeKind>(pub Caller, PhantomData<S>);

/// Which configured scope a [`Service`] extractor demands.
pub trait ScopeKind: 'static {
    fn scope(settings: &ScopeSettings) -> &str;
}

/// `billing:read` by default.
#[derive(Debug, Clone)]
pub struct ReadScope;
/// `billing:write` by default.
#[derive(Debug, Clone)]
pub struct WriteScope;
/// `billing:admin` by default.
#[derive(Debug, Clone)]
pub struct AdminScope;

impl ScopeKind for ReadScope {
    fn scope(s: &ScopeSettings) -> &str {
        &s.read
    }
}
impl ScopeKind for WriteScope {
    fn scope(s: &ScopeSettings) -> &str {
        &s.write
    }
}
impl ScopeKind for AdminScope {
    fn scope(s: &ScopeSettings) -> &str {
        &s.admin
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let code = match &e {
            AuthError::MissingToken => "missing_token",
            AuthError::Expired => "token_expired",
            AuthError::WrongAudience => "token_wrong_audience",
            AuthError::WrongIssuer => "token_wrong_issuer",
            AuthError::UnknownKey => "token_unknown_key",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::KeysUnavailable(err) => {
                tracing::error!(
                    error = format_args!("{err:#}"),
                    "identity provider keys unavailable"
                );
                return ApiError::new(
                    actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
                    "identity_provider_unavailable",
                    "the identity provider's keys could not be fetched: check that auth.jwks_url (or \
                     auth.issuer's /.well-known/openid-configuration) is right and reachable from \
                     Tollgate; if it is, the provider is down: try again shortly",
                );
            }
        };
        ApiError::unauthorized(code, e.to_string())
    }
}

fn bearer(req: &HttpRequest) -> Result<String, AuthError> {
    let value = req
        .headers()
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = value.to_str().map_err(|_| AuthError::MissingToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token.trim().to_owned())
}

async fn authenticate(req: HttpRequest) -> Result<(Caller, web::Data<AppState>), ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
    let token = bearer(&req)?;
    let caller = state.identity.verify(&token).await.map_err(|e| {
        // The keys are fetched again no sooner than auth.jwks_refetch_min_seconds after a
        // failed fetch: that is when trying again makes sense.
        let retry = matches!(e, AuthError::KeysUnavailable(_))
            .then_some(state.settings.auth.jwks_refetch_min_seconds);
        let error = ApiError::from(e);
        match retry {
            Some(seconds) => error.retry_after(seconds),
            None => error,
        }
    })?;
    Ok((caller, state))
}

impl FromRequest for EndUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (caller, _) = authenticate(req).await?;
            tracing::Span::current().record("caller", caller.subject.as_str());
            Ok(EndUser(caller))
        })
    }
}

impl<S: ScopeKind> FromRequest for Service<S> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let (caller, state) = authenticate(req).await?;
            let scope = S::scope(&state.settings.auth.scopes);
            if !caller.has_scope(scope) {
                return Err(ApiError::forbidden(
                    "missing_scope",
                    format!("this endpoint needs the `{scope}` scope"),
                ));
            }
            Ok(Service(caller, PhantomData))
        })
    }
}
