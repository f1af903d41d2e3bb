//! Caller identity: JWTs from the product's identity provider, checked against its JWKS
//! (from `jwks_url` or OIDC discovery; cached; re-fetched at a bounded rate on an unknown
//! `kid`), or an optional HS256 secret. Handlers receive a [`Caller`] through the
//! [`EndUser`] and [`Service`] extractors and never look at tokens themselves.

pub mod dev;
mod extract;

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::Mutex;

pub use extract::{AdminScope, EndUser, ReadScope, ScopeKind, Service, WriteScope};

use crate::billing::ids::{TenantId, UserId};
use crate::config::{AuthSettings, ExemptionSettings};
use dev::DevKey;

/// Who is calling, as the token says.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity provider's user id (or client id, for service tokens).
    pub subject: UserId,
    pub email: Option<String>,
    pub tenant_ids: Vec<TenantId>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Admin, demo or grandfathered: always has access.
    pub exempt: bool,
}

impl Caller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the request has no bearer token: send `Authorization: Bearer <jwt>`")]
    MissingToken,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another audience, or names none (`aud`)")]
    WrongAudience,
    #[error("the token is from another issuer, or names none (`iss`)")]
    WrongIssuer,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the identity provider's keys could not be fetched")]
    KeysUnavailable(#[source] anyhow::Error),
}

const BAD_SIGNATURE: &str = "the signature does not verify";

/// The longest email claim kept (RFC 5321's limit on a path).
const MAX_EMAIL_BYTES: usize = 320;

pub struct IdentityVerifier {
    settings: AuthSettings,
    exemptions: ExemptionSettings,
    keys: Arc<KeyCache>,
    /// The key of development tokens, when `dev.tokens` is on.
    dev: Option<DevKey>,
    /// Tokens verified recently (services reuse one token for many calls): the caller and
    /// until when (unix seconds) the answer may be reused. Only successes are kept.
    verified: quick_cache::sync::Cache<String, (Caller, i64)>,
}

/// How many verified tokens are remembered, and for how long at most (a key removed from the
/// JWKS stops being honoured within this time).
const VERIFIED_TOKENS: usize = 10_000;
const VERIFIED_FOR_SECONDS: i64 = 60;

impl IdentityVerifier {
    /// `dev`: the key of development tokens, accepted beside the provider's when given.
    pub fn new(
        settings: AuthSettings,
        exemptions: ExemptionSettings,
        dev: Option<DevKey>,
    ) -> anyhow::Result<Self> {
        Ok(IdentityVerifier {
            keys: Arc::new(KeyCache::new(&settings)?),
            dev,
            settings,
            exemptions,
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        })
    }

    /// Fetches the provider's signing keys now (discovery first when only the issuer is
    /// set): where they came from and how many there are. For `check-config --connect`.
    pub async fn check_provider(&self) -> anyhow::Result<(String, usize)> {
        let source = match (&self.keys.jwks_url, &self.keys.issuer) {
            (Some(url), _) => url.clone(),
            (None, Some(issuer)) => format!("{issuer} (OIDC discovery)"),
            (None, None) => anyhow::bail!("neither auth.jwks_url nor auth.issuer is set"),
        };
        let set = tokio::time::timeout(FETCH_TIMEOUT, self.keys.fetch_keys())
            .await
            .map_err(|_| anyhow::anyhow!("{source} did not answer in {FETCH_TIMEOUT:?}"))?
            .map_err(|e| anyhow::anyhow!("{source}: {e:#}"))?;
        if set.keys.is_empty() {
            anyhow::bail!("{source} publishes no keys");
        }
        Ok((source, set.keys.len()))
    }

    /// Checks the token and reads the caller from its claims. A token verified in the last
    /// minute is not checked again until it expires.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let now = chrono::Utc::now().timestamp();
        if let Some((caller, until)) = self.verified.get(token) {
            if now < until {
                return Ok(caller);
            }
        }
        let (caller, expires) = self.verify_signature_and_claims(token).await?;
        let until = expires.min(now + VERIFIED_FOR_SECONDS);
        self.verified
            .insert(token.to_owned(), (caller.clone(), until));
        Ok(caller)
    }

    /// The caller and the token's `exp`.
    async fn verify_signature_and_claims(&self, token: &str) -> Result<(Caller, i64), AuthError> {
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no `none`.
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.kid.as_deref() == Some(dev::DEV_KID) {
            let dev = self.dev.as_ref().ok_or_else(|| {
                AuthError::Invalid(
                    "a development token (`tollgate dev-token`) is accepted only by a server \
                     started with dev.tokens = true (TOLLGATE_DEV__TOKENS=true)"
                        .into(),
                )
            })?;
            if header.alg != Algorithm::HS256 {
                return Err(AuthError::Invalid(
                    "a development token is signed with HS256".into(),
                ));
            }
            let validation = DevKey::validation(self.settings.leeway_seconds);
            return self
                .decode(token, &dev.decoding_key(), &validation)
                .map_err(|e| match e {
                    AuthError::Invalid(m) if m == BAD_SIGNATURE => AuthError::Invalid(format!(
                        "the development token was not signed with this server's key ({}): \
                         mint it with the same dev.key_file",
                        dev.path().display()
                    )),
                    other => other,
                });
        }
        let key = match header.alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // Never verify an HMAC token with a public key (algorithm confusion).
                let secret = self
                    .settings
                    .hs256_secret
                    .as_ref()
                    .filter(|_| header.alg == Algorithm::HS256)
                    .ok_or_else(|| {
                        AuthError::Invalid(format!("{:?} tokens are not accepted", header.alg))
                    })?;
                DecodingKey::from_secret(secret.expose_secret().as_bytes())
            }
            _ => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| AuthError::Invalid("the token has no kid".into()))?;
                KeyCache::key_for(&self.keys, kid, header.alg).await?
            }
        };
        self.decode(token, &key, &self.validation(header.alg))
    }

    /// The caller and `exp` of a token whose key is known.
    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<(Caller, i64), AuthError> {
        let data = jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid(BAD_SIGNATURE.into()),
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                _ => AuthError::Invalid(e.to_string()),
            }
        })?;
        let expires = data.claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok((self.caller_from_claims(&data.claims)?, expires))
    }

    /// `exp` always; `iss` whenever an issuer is configured and `aud` whenever an audience is:
    /// a token that leaves either out is refused, not waved through.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if self.settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.audience);
            required.push("aud");
        }
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    fn caller_from_claims(&self, claims: &Value) -> Result<Caller, AuthError> {
        let c = &self.settings.claims;
        let subject = claim(claims, &c.subject)
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError::Invalid(format!("the token has no `{}` claim", c.subject)))?;
        let subject = UserId::parse(subject)
            .map_err(|e| AuthError::Invalid(format!("the token's `{}` claim {e}", c.subject)))?;
        let email = match claim(claims, &c.email).and_then(Value::as_str) {
            Some(email) if email.len() > MAX_EMAIL_BYTES || email.chars().any(char::is_control) => {
                return Err(AuthError::Invalid(format!(
                    "the token's `{}` claim is not an email address",
                    c.email
                )))
            }
            email => email.map(str::to_owned),
        };
        let tenant_ids = strings(claim(claims, &c.tenant))
            .iter()
            .map(|t| TenantId::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                AuthError::Invalid(format!("the token's `{}` claim: a tenant id {e}", c.tenant))
            })?;
        let roles = strings(claim(claims, &c.roles));
        let scopes = strings(claim(claims, &c.scopes));
        let exempt = roles.iter().any(|r| self.exemptions.roles.contains(r))
            || self.exemptions.subjects.iter().any(|s| subject == *s);
        Ok(Caller {
            subject,
            email,
            tenant_ids,
            roles,
            scopes,
            exempt,
        })
    }
}

/// The identity provider's keys. Known keys keep verifying whatever the provider does: a stale
/// set is refreshed in the background, one fetch at a time, no more often than
/// `jwks_refetch_min_seconds` (after a failure too). Only a token whose `kid` is not known waits,
/// and for one bounded fetch at most: concurrent ones share it.
struct KeyCache {
    http: reqwest::Client,
    jwks_url: Option<String>,
    issuer: Option<String>,
    cache_for: Duration,
    refetch_after: Duration,
    keys: std::sync::RwLock<Option<CachedKeys>>,
    /// Held while a fetch runs: the one fetch in flight.
    fetch: Mutex<()>,
    /// When the last fetch started (success or failure) and how many have finished: what a
    /// request that waited for the lock checks before fetching again.
    attempts: std::sync::Mutex<Attempts>,
}

struct CachedKeys {
    set: Arc<JwkSet>,
    fetched_at: Instant,
}

#[derive(Default)]
struct Attempts {
    last_started: Option<Instant>,
    finished: u64,
}

/// The longest a fetch (discovery and key set together) may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl KeyCache {
    fn new(settings: &AuthSettings) -> anyhow::Result<KeyCache> {
        let http = reqwest::Client::builder()
            .connect_timeout(FETCH_TIMEOUT)
            .timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(KeyCache {
            http,
            jwks_url: settings.jwks_url.clone(),
            issuer: settings.issuer.clone(),
            cache_for: Duration::from_secs(settings.jwks_cache_seconds),
            refetch_after: Duration::from_secs(settings.jwks_refetch_min_seconds),
            keys: std::sync::RwLock::new(None),
            fetch: Mutex::new(()),
            attempts: std::sync::Mutex::new(Attempts::default()),
        })
    }

    fn cached(&self) -> Option<(Arc<JwkSet>, bool)> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.as_ref()
            .map(|c| (c.set.clone(), c.fetched_at.elapsed() >= self.cache_for))
    }

    /// Whether the last fetch started long enough ago for another one.
    fn may_fetch(&self) -> bool {
        let attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        attempts
            .last_started
            .is_none_or(|t| t.elapsed() >= self.refetch_after)
    }

    fn finished(&self) -> u64 {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished
    }

    async fn key_for(
        this: &Arc<KeyCache>,
        kid: &str,
        alg: Algorithm,
    ) -> Result<DecodingKey, AuthError> {
        if let Some((set, stale)) = this.cached() {
            if let Some(jwk) = set.find(kid) {
                if stale && this.may_fetch() {
                    // Refresh behind the request; this one goes on with the key it has.
                    let cache = this.clone();
                    tokio::spawn(async move {
                        if let Ok(_fetching) = cache.fetch.try_lock() {
                            if cache.may_fetch() {
                                cache.refresh().await;
                            }
                        }
                    });
                }
                return decoding_key(jwk, alg);
            }
        }
        // An unknown kid (a rotated key, or no keys yet): wait for the one fetch in flight, or
        // make it, unless one finished while this request waited or ran too recently.
        let seen = this.finished();
        let error = {
            let _fetching = this.fetch.lock().await;
            if this.finished() == seen && this.may_fetch() {
                this.refresh().await
            } else {
                None
            }
        };
        match this.cached() {
            Some((set, _)) => set
                .find(kid)
                .ok_or(AuthError::UnknownKey)
                .and_then(|jwk| decoding_key(jwk, alg)),
            None => Err(AuthError::KeysUnavailable(error.unwrap_or_else(|| {
                anyhow::anyhow!("the last JWKS fetch failed; the next is allowed after auth.jwks_refetch_min_seconds")
            }))),
        }
    }

    /// One fetch; call with `fetch` held. Keeps the cached keys when it fails.
    async fn refresh(&self) -> Option<anyhow::Error> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_started = Some(Instant::now());
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch_keys())
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "the identity provider did not answer in {FETCH_TIMEOUT:?}"
                ))
            });
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished += 1;
        match result {
            Ok(set) => {
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Some(CachedKeys {
                    set: Arc::new(set),
                    fetched_at: Instant::now(),
                });
                None
            }
            Err(e) => {
                tracing::warn!(
                    error = format_args!("{e:#}"),
                    "JWKS fetch failed; known keys keep working"
                );
                metrics::counter!("tollgate_jwks_fetch_failures_total").increment(1);
                Some(e)
            }
        }
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let url = match (&self.jwks_url, &self.issuer) {
            (Some(url), _) => url.clone(),
            (None, Some(issuer)) => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                let doc: Value = self
                    .http
                    .get(&discovery)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                doc.get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("{discovery} has no jwks_uri"))?
                    .to_owned()
            }
            (None, None) => anyhow::bail!("neither auth.jwks_url nor auth.issuer is set"),
        };
        let set: JwkSet = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(set)
    }
}

/// The key, provided the token's algorithm is the one the key is for.
fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk, alg: Algorithm) -> Result<DecodingKey, AuthError> {
    if let Some(key_alg) = jwk.common.key_algorithm {
        if format!("{key_alg:?}") != format!("{alg:?}") {
            return Err(AuthError::Invalid(format!(
                "the token's algorithm {alg:?} does not match its key's ({key_alg:?})"
            )));
        }
    }
    DecodingKey::from_jwk(jwk).map_err(|e| AuthError::Invalid(format!("unusable key: {e}")))
}

/// A claim by name (`sub`) or JSON pointer (`/app_metadata/role`).
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if name.starts_with('/') {
        claims.pointer(name)
    } else {
        claims.get(name)
    }
}

/// A string claim split on spaces (OAuth `scope`), or an array of strings (`scp`, `roles`).
fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_are_found_by_name_or_pointer() {
        let claims = json!({"sub": "u1", "app_metadata": {"role": "admin"}});
        assert_eq!(claim(&claims, "sub"), Some(&json!("u1")));
        assert_eq!(claim(&claims, "/app_metadata/role"), Some(&json!("admin")));
        assert_eq!(claim(&claims, "/missing/x"), None);
    }

    #[test]
    fn string_lists_accept_space_separated_strings_and_arrays() {
        assert_eq!(
            strings(Some(&json!("billing:read billing:write"))),
            vec!["billing:read", "billing:write"]
        );
        assert_eq!(strings(Some(&json!(["a", "b", 3]))), vec!["a", "b"]);
        assert!(strings(Some(&json!(7))).is_empty());
        assert!(strings(None).is_empty());
    }
}
