//! Caller identity: JWTs from the product's identity provider, checked against its JWKS
//! (from `jwks_url` or OIDC discovery; cached; re-fetched at a bounded rate on an unknown
//! `kid`), or an optional HS256 secret. Handlers receive a [`Caller`] through the
//! [`EndUser`] and [`Service`] extractors and never look at tokens themselves.

mod extract;

use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

pub use extract::{AdminScope, EndUser, ReadScope, ScopeKind, Service, WriteScope};

use crate::config::{AuthSettings, ExemptionSettings};

/// Who is calling, as the token says.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity provider's user id (or client id, for service tokens).
    pub subject: String,
    pub email: Option<String>,
    pub tenant_ids: Vec<String>,
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
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token is from another issuer")]
    WrongIssuer,
    #[error("the token's key is unknown")]
    UnknownKey,
    #[error("the identity provider's keys could not be fetched")]
    KeysUnavailable(#[source] anyhow::Error),
}

struct CachedKeys {
    set: JwkSet,
    fetched_at: Instant,
}

pub struct IdentityVerifier {
    settings: AuthSettings,
    exemptions: ExemptionSettings,
    http: reqwest::Client,
    keys: RwLock<Option<CachedKeys>>,
    /// One fetch at a time; also remembers when the last one happened (bounded re-fetch).
    fetching: Mutex<Option<Instant>>,
    /// Tokens verified recently (services reuse one token for many calls): the caller and
    /// until when (unix seconds) the answer may be reused. Only successes are kept.
    verified: quick_cache::sync::Cache<String, (Caller, i64)>,
}

/// How many verified tokens are remembered, and for how long at most (a key removed from the
/// JWKS stops being honoured within this time).
const VERIFIED_TOKENS: usize = 10_000;
const VERIFIED_FOR_SECONDS: i64 = 60;

impl IdentityVerifier {
    pub fn new(settings: AuthSettings, exemptions: ExemptionSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(IdentityVerifier {
            settings,
            exemptions,
            http,
            keys: RwLock::new(None),
            fetching: Mutex::new(None),
            verified: quick_cache::sync::Cache::new(VERIFIED_TOKENS),
        })
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
                self.key_for(kid, header.alg).await?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if self.settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.settings.audience);
        }
        if let Some(iss) = &self.settings.issuer {
            validation.set_issuer(&[iss]);
        }
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                _ => AuthError::Invalid(e.to_string()),
            }
        })?;
        let expires = data.claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        Ok((self.caller_from_claims(&data.claims)?, expires))
    }

    fn caller_from_claims(&self, claims: &Value) -> Result<Caller, AuthError> {
        let c = &self.settings.claims;
        let subject = claim(claims, &c.subject)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid(format!("the token has no `{}` claim", c.subject)))?
            .to_owned();
        let email = claim(claims, &c.email)
            .and_then(Value::as_str)
            .map(str::to_owned);
        let tenant_ids = strings(claim(claims, &c.tenant));
        let roles = strings(claim(claims, &c.roles));
        let scopes = strings(claim(claims, &c.scopes));
        let exempt = roles.iter().any(|r| self.exemptions.roles.contains(r))
            || self.exemptions.subjects.contains(&subject);
        Ok(Caller {
            subject,
            email,
            tenant_ids,
            roles,
            scopes,
            exempt,
        })
    }

    async fn key_for(&self, kid: &str, alg: Algorithm) -> Result<DecodingKey, AuthError> {
        let fresh_enough = |cached: &CachedKeys| {
            cached.fetched_at.elapsed() < Duration::from_secs(self.settings.jwks_cache_seconds)
        };
        {
            let keys = self.keys.read().await;
            if let Some(cached) = keys.as_ref().filter(|c| fresh_enough(c)) {
                if let Some(jwk) = cached.set.find(kid) {
                    return decoding_key(jwk, alg);
                }
            }
        }
        // Unknown kid or stale cache: fetch, but not more often than jwks_refetch_min_seconds.
        let mut last_fetch = self.fetching.lock().await;
        let may_fetch = last_fetch.is_none_or(|t| {
            t.elapsed() >= Duration::from_secs(self.settings.jwks_refetch_min_seconds)
        });
        let cache_stale = self
            .keys
            .read()
            .await
            .as_ref()
            .is_none_or(|c| !fresh_enough(c));
        if may_fetch || cache_stale {
            match self.fetch_keys().await {
                Ok(set) => {
                    *self.keys.write().await = Some(CachedKeys {
                        set,
                        fetched_at: Instant::now(),
                    });
                    *last_fetch = Some(Instant::now());
                }
                Err(e) => {
                    *last_fetch = Some(Instant::now());
                    // A stale set still answers for the keys it has.
                    if self.keys.read().await.is_none() {
                        return Err(AuthError::KeysUnavailable(e));
                    }
                    tracing::warn!(error = ?e, "JWKS re-fetch failed; using the cached keys");
                }
            }
        }
        drop(last_fetch);
        let keys = self.keys.read().await;
        let jwk = keys
            .as_ref()
            .and_then(|c| c.set.find(kid))
            .ok_or(AuthError::UnknownKey)?;
        decoding_key(jwk, alg)
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let url = match (&self.settings.jwks_url, &self.settings.issuer) {
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
