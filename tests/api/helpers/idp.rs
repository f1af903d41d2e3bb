//! A fake identity provider: a JWKS served over HTTP, with ES256 keys generated per test.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::AUDIENCE;

pub struct SigningKey {
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    pub fn generate(kid: &str) -> SigningKey {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        SigningKey {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

pub struct Idp {
    pub server: MockServer,
    pub key: SigningKey,
}

impl Idp {
    pub async fn start() -> Idp {
        let server = MockServer::start().await;
        let key = SigningKey::generate("key-1");
        let idp = Idp { server, key };
        idp.publish(&[&idp.key]).await;
        idp
    }

    /// Replaces the published key set.
    pub async fn publish(&self, keys: &[&SigningKey]) {
        self.server.reset().await;
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        Mock::given(method("GET"))
            .and(path("/.well-known/openid-configuration"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": self.issuer(),
                "jwks_uri": self.jwks_url(),
                "id_token_signing_alg_values_supported": ["ES256"],
            })))
            .mount(&self.server)
            .await;
        Mock::given(method("GET"))
            .and(path("/.well-known/jwks.json"))
            .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
            .mount(&self.server)
            .await;
    }

    pub fn issuer(&self) -> String {
        format!("{}/", self.server.uri())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.server.uri())
    }

    /// Claims valid for an hour, for this issuer and audience.
    pub fn claims(&self, sub: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": self.issuer(), "aud": AUDIENCE, "sub": sub, "iat": now, "nbf": now, "exp": now + 3600, "email": format!("{sub}@example.com")})
    }

    pub fn token(&self, claims: &Value) -> String {
        self.key.sign(claims)
    }

    pub fn user_token(&self, sub: &str) -> String {
        self.token(&self.claims(sub))
    }

    pub fn service_token(&self, scope: &str) -> String {
        let mut claims = self.claims("sibling-service");
        claims["scope"] = json!(scope);
        self.token(&claims)
    }
}
