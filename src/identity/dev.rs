//! Development tokens: `tollgate dev-token` mints them and a server started with `dev.tokens`
//! accepts them, so that the API can be called before an identity provider is set up.
//!
//! They are HS256 JWTs with `kid` [`DEV_KID`] and `iss` [`DEV_ISSUER`], signed with a random key
//! kept in `dev.key_file` (created by whichever side needs it first, readable by its owner
//! only). A server without `dev.tokens` refuses them by their `kid` with a message that says
//! so; a server with another key file refuses their signature. Their claims sit where
//! `auth.claims` says the provider's do, so the rest of Tollgate reads them like any token.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::billing::ids::{TenantId, UserId};
use crate::config::ClaimSettings;

/// The `kid` of every development token.
pub const DEV_KID: &str = "tollgate-dev";
/// The `iss` of every development token.
pub const DEV_ISSUER: &str = "tollgate-dev";

/// Bytes of randomness in a key.
const KEY_BYTES: usize = 32;

/// The key that signs and verifies development tokens.
pub struct DevKey {
    secret: Vec<u8>,
    path: PathBuf,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl DevKey {
    /// Reads the key in `path`, or creates it there (and its directory) when there is none.
    pub fn load_or_create(path: &Path) -> anyhow::Result<DevKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => return Self::parse(text.trim(), path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut secret = [0u8; KEY_BYTES];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(DevKey {
                    secret: secret.to_vec(),
                    path: path.to_owned(),
                })
            }
            // The other side created it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Self::parse(text.trim(), path)
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    fn parse(text: &str, path: &Path) -> anyhow::Result<DevKey> {
        let secret = hex::decode(text).ok().filter(|s| s.len() == KEY_BYTES);
        let secret = secret.with_context(|| {
            format!(
                "{} does not hold a development token key ({KEY_BYTES} bytes in hex): delete it \
                 and a new one is made",
                path.display()
            )
        })?;
        Ok(DevKey {
            secret,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A signed token carrying `claims` (which [`DevClaims::to_json`] builds).
    pub fn mint(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(DEV_KID.to_owned());
        Ok(jsonwebtoken::encode(
            &header,
            claims,
            &EncodingKey::from_secret(&self.secret),
        )?)
    }

    pub(super) fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_secret(&self.secret)
    }

    /// What a development token must satisfy: this issuer, `exp`; no audience.
    pub(super) fn validation(leeway_seconds: u64) -> Validation {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_seconds;
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[DEV_ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation
    }
}

/// Who a development token speaks for.
#[derive(Debug, Clone)]
pub struct DevClaims {
    pub subject: UserId,
    pub email: Option<String>,
    pub tenants: Vec<TenantId>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Seconds from `issued_at` until it expires.
    pub ttl_seconds: i64,
    pub issued_at: i64,
}

impl DevClaims {
    /// The token's claims, each where `auth.claims` says the verifier looks for it.
    pub fn to_json(&self, names: &ClaimSettings) -> anyhow::Result<Value> {
        let mut claims = Value::Object(Map::new());
        set_claim(&mut claims, "iss", Value::from(DEV_ISSUER))?;
        set_claim(&mut claims, "iat", Value::from(self.issued_at))?;
        set_claim(
            &mut claims,
            "exp",
            Value::from(self.issued_at.saturating_add(self.ttl_seconds)),
        )?;
        set_claim(
            &mut claims,
            &names.subject,
            Value::from(self.subject.as_str()),
        )?;
        if let Some(email) = &self.email {
            set_claim(&mut claims, &names.email, Value::from(email.as_str()))?;
        }
        match self.tenants.as_slice() {
            [] => {}
            [one] => set_claim(&mut claims, &names.tenant, Value::from(one.as_str()))?,
            many => set_claim(
                &mut claims,
                &names.tenant,
                many.iter().map(|t| Value::from(t.as_str())).collect(),
            )?,
        }
        if !self.roles.is_empty() {
            set_claim(&mut claims, &names.roles, Value::from(self.roles.clone()))?;
        }
        if !self.scopes.is_empty() {
            // A space-separated string, as OAuth's `scope`; the verifier reads a list too.
            set_claim(
                &mut claims,
                &names.scopes,
                Value::from(self.scopes.join(" ")),
            )?;
        }
        Ok(claims)
    }
}

/// Puts `value` at a claim name or a JSON pointer (`/app_metadata/role`), creating the objects
/// on the way: the inverse of how the verifier finds a claim.
fn set_claim(claims: &mut Value, name: &str, value: Value) -> anyhow::Result<()> {
    let Some(pointer) = name.strip_prefix('/') else {
        claims
            .as_object_mut()
            .context("the claims are not an object")?
            .insert(name.to_owned(), value);
        return Ok(());
    };
    let parts: Vec<String> = pointer
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, path) = parts.split_last().context("an empty claim pointer")?;
    let mut at = claims;
    for part in path {
        let object = at.as_object_mut().with_context(|| {
            format!("claim pointer `{name}` crosses a value that is not an object")
        })?;
        at = object
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    at.as_object_mut()
        .with_context(|| format!("claim pointer `{name}` crosses a value that is not an object"))?
        .insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names() -> ClaimSettings {
        ClaimSettings {
            subject: "sub".into(),
            email: "email".into(),
            tenant: "/app_metadata/org_id".into(),
            roles: "/app_metadata/roles".into(),
            scopes: "scp".into(),
        }
    }

    fn claims() -> DevClaims {
        DevClaims {
            subject: UserId::parse("alice").unwrap(),
            email: Some("alice@example.com".into()),
            tenants: vec![TenantId::parse("acme").unwrap()],
            roles: vec!["admin".into()],
            scopes: vec!["billing:read".into(), "billing:write".into()],
            ttl_seconds: 3600,
            issued_at: 1_700_000_000,
        }
    }

    #[test]
    fn claims_sit_where_the_configuration_points() {
        let json = claims().to_json(&names()).unwrap();
        assert_eq!(
            json,
            json!({
                "iss": "tollgate-dev", "iat": 1_700_000_000, "exp": 1_700_003_600,
                "sub": "alice", "email": "alice@example.com",
                "app_metadata": {"org_id": "acme", "roles": ["admin"]},
                "scp": "billing:read billing:write",
            })
        );
    }

    #[test]
    fn several_tenants_are_a_list_and_nothing_optional_is_invented() {
        let mut c = claims();
        c.tenants.push(TenantId::parse("globex").unwrap());
        c.email = None;
        c.roles.clear();
        c.scopes.clear();
        let json = c.to_json(&names()).unwrap();
        assert_eq!(json["app_metadata"], json!({"org_id": ["acme", "globex"]}));
        assert!(
            json.get("email").is_none() && json.get("scp").is_none(),
            "{json}"
        );
    }

    #[test]
    fn a_pointer_through_a_plain_claim_is_refused() {
        let mut claims = json!({"sub": "alice"});
        assert!(set_claim(&mut claims, "/sub/x", json!(1)).is_err());
        set_claim(&mut claims, "/a~1b/c~0d", json!(2)).unwrap();
        assert_eq!(claims.pointer("/a~1b/c~0d"), Some(&json!(2)));
    }

    #[test]
    fn the_key_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dev.key");
        let made = DevKey::load_or_create(&path).unwrap();
        let read = DevKey::load_or_create(&path).unwrap();
        assert_eq!(made.secret, read.secret);
        assert_eq!(made.secret.len(), KEY_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = DevKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(made.secret, other.secret);
    }

    #[test]
    fn a_file_that_holds_no_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        std::fs::write(&path, "not hex").unwrap();
        let error = DevKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            error.contains("dev.key") && error.contains("delete it"),
            "{error}"
        );
    }

    #[test]
    fn a_token_verifies_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::load_or_create(&dir.path().join("a.key")).unwrap();
        let other = DevKey::load_or_create(&dir.path().join("b.key")).unwrap();
        let mut c = claims();
        c.issued_at = chrono::Utc::now().timestamp();
        let token = key.mint(&c.to_json(&names()).unwrap()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(DEV_KID));
        let validation = DevKey::validation(0);
        let data = jsonwebtoken::decode::<Value>(&token, &key.decoding_key(), &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert!(jsonwebtoken::decode::<Value>(&token, &other.decoding_key(), &validation).is_err());
    }
}
