use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::idp::SigningKey;
use crate::helpers::{spawn_app, spawn_app_with, Options};

async fn refusal(app: &crate::helpers::TestApp, token: Option<&str>) -> (u16, String) {
    let res = app.get("/v1/status", token).await;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let app = spawn_app().await;
    let token = app.user_token("user-1");
    assert_eq!(app.get("/v1/status", Some(&token)).await.status(), 200);
}

#[tokio::test]
async fn missing_malformed_and_tampered_tokens_are_401() {
    let app = spawn_app().await;
    assert_eq!(refusal(&app, None).await, (401, "missing_token".into()));
    assert_eq!(
        refusal(&app, Some("not-a-jwt")).await,
        (401, "invalid_token".into())
    );
    let token = app.user_token("user-1");
    let (head, rest) = token.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged_claims = URL_SAFE_NO_PAD.encode(app.idp.claims("someone-else").to_string());
    assert_eq!(
        refusal(&app, Some(&format!("{head}.{forged_claims}.{sig}"))).await,
        (401, "invalid_token".into())
    );
    let res = app
        .http
        .get(app.url("/v1/status"))
        .header("Authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn expired_not_yet_valid_foreign_audience_and_issuer_are_401() {
    let app = spawn_app().await;
    let now = chrono::Utc::now().timestamp();
    let mut expired = app.idp.claims("user-1");
    expired["exp"] = json!(now - 3600);
    assert_eq!(
        refusal(&app, Some(&app.idp.token(&expired))).await,
        (401, "token_expired".into())
    );

    let mut early = app.idp.claims("user-1");
    early["nbf"] = json!(now + 3600);
    assert_eq!(refusal(&app, Some(&app.idp.token(&early))).await.0, 401);

    let mut foreign = app.idp.claims("user-1");
    foreign["aud"] = json!("another-app");
    assert_eq!(
        refusal(&app, Some(&app.idp.token(&foreign))).await,
        (401, "token_wrong_audience".into())
    );

    let mut issuer = app.idp.claims("user-1");
    issuer["iss"] = json!("https://evil.example.net/");
    assert_eq!(
        refusal(&app, Some(&app.idp.token(&issuer))).await,
        (401, "token_wrong_issuer".into())
    );

    let mut no_sub = app.idp.claims("user-1");
    no_sub.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        refusal(&app, Some(&app.idp.token(&no_sub))).await,
        (401, "invalid_token".into())
    );
}

#[tokio::test]
async fn alg_none_and_hmac_tokens_are_refused() {
    let app = spawn_app().await;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(app.idp.claims("user-1").to_string());
    assert_eq!(
        refusal(&app, Some(&format!("{header}.{claims}."))).await,
        (401, "invalid_token".into())
    );

    // HS256 signed with the public JWK as secret (algorithm confusion) and no HS256 configured.
    let key = jsonwebtoken::EncodingKey::from_secret(b"whatever");
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = Some(app.idp.key.kid.clone());
    let token = jsonwebtoken::encode(&h, &app.idp.claims("user-1"), &key).unwrap();
    assert_eq!(
        refusal(&app, Some(&token)).await,
        (401, "invalid_token".into())
    );
}

#[tokio::test]
async fn tokens_from_unknown_keys_are_refused_and_rotated_keys_are_fetched() {
    let app = spawn_app().await;
    let rogue = SigningKey::generate("rogue");
    assert_eq!(
        refusal(&app, Some(&rogue.sign(&app.idp.claims("user-1")))).await,
        (401, "token_unknown_key".into())
    );

    // The provider rotates to a new key: Tollgate re-fetches its JWKS on the unknown kid.
    assert_eq!(
        app.get("/v1/status", Some(&app.user_token("user-1")))
            .await
            .status(),
        200
    );
    let rotated = SigningKey::generate("key-2");
    app.idp.publish(&[&app.idp.key, &rotated]).await;
    let res = app
        .get("/v1/status", Some(&rotated.sign(&app.idp.claims("user-1"))))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn exempt_roles_get_access_without_paying() {
    let app = spawn_app().await;
    let mut claims = app.idp.claims("admin-1");
    claims["roles"] = json!(["admin"]);
    let status = app.status(&app.idp.token(&claims)).await;
    assert_eq!(
        (
            status["access"].as_bool(),
            status["reason"].as_str(),
            status["plan"].as_str()
        ),
        (Some(true), Some("exempt"), Some("lifetime"))
    );
    let normal = app.status(&app.user_token("user-1")).await;
    assert_eq!(normal["access"], false);
}

#[tokio::test]
async fn exemption_claims_follow_the_configured_json_pointer() {
    let app = spawn_app_with(Options {
        extra_toml: "[auth.claims]\nsubject = \"sub\"\nemail = \"email\"\ntenant = \"tenant_id\"\nroles = \"/app_metadata/role\"\nscopes = \"scope\"\n[exemptions]\nroles = [\"grandfathered\"]\nsubjects = [\"vip-7\"]\n".into(),
        ..Default::default()
    })
    .await;
    let mut claims = app.idp.claims("user-1");
    claims["app_metadata"] = json!({"role": "grandfathered"});
    assert_eq!(
        app.status(&app.idp.token(&claims)).await["reason"],
        "exempt"
    );
    assert_eq!(
        app.status(&app.user_token("vip-7")).await["reason"],
        "exempt"
    );
    assert_eq!(
        app.status(&app.user_token("user-2")).await["reason"],
        "free"
    );
}

#[tokio::test]
async fn with_saas_off_everyone_has_access() {
    let app = spawn_app_with(Options {
        saas: false,
        ..Default::default()
    })
    .await;
    let status = app.status(&app.user_token("user-1")).await;
    assert_eq!(
        (status["access"].as_bool(), status["reason"].as_str()),
        (Some(true), Some("saas_disabled"))
    );
    let service = app.idp.service_token("billing:read");
    let res: Value = app
        .get(
            "/v1/entitlements?user_id=user-1&feature=export",
            Some(&service),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(res["allowed"], true);
}

#[tokio::test]
async fn keys_are_found_through_oidc_discovery_when_no_jwks_url_is_set() {
    let app = spawn_app_with(Options {
        oidc_discovery: true,
        ..Default::default()
    })
    .await;
    assert_eq!(
        app.get("/v1/status", Some(&app.user_token("user-1")))
            .await
            .status(),
        200
    );
    let requests = app.idp.server.received_requests().await.unwrap();
    assert!(requests
        .iter()
        .any(|r| r.url.path() == "/.well-known/openid-configuration"));
}

#[tokio::test]
async fn hs256_tokens_verify_with_the_shared_secret_when_configured() {
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let app = spawn_app_with(Options {
        extra_toml: format!("[auth]\nhs256_secret = \"{secret}\"\n"),
        ..Default::default()
    })
    .await;
    let claims = app.idp.claims("supabase-user");
    let sign = |alg, key: &[u8]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let good = sign(jsonwebtoken::Algorithm::HS256, secret.as_bytes());
    assert_eq!(app.get("/v1/status", Some(&good)).await.status(), 200);
    let wrong_secret = sign(
        jsonwebtoken::Algorithm::HS256,
        b"another-secret-of-at-least-32-bytes!!",
    );
    assert_eq!(
        refusal(&app, Some(&wrong_secret)).await,
        (401, "invalid_token".into())
    );
    let other_alg = sign(jsonwebtoken::Algorithm::HS384, secret.as_bytes());
    assert_eq!(
        refusal(&app, Some(&other_alg)).await,
        (401, "invalid_token".into())
    );
    // The JWKS keys keep working beside it.
    assert_eq!(
        app.get("/v1/status", Some(&app.user_token("user-1")))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn token_refusals_carry_the_bearer_challenge_of_rfc_6750() {
    let app = spawn_app().await;
    let challenge = |res: &reqwest::Response| {
        res.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let res = app.get("/v1/status", None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res).as_deref(),
        Some(r#"Bearer realm="tollgate""#)
    );
    let res = app.get("/v1/status", Some("not-a-jwt")).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        challenge(&res).as_deref(),
        Some(r#"Bearer realm="tollgate", error="invalid_token""#)
    );
    // A valid token without the scope the endpoint needs.
    let user = app.user_token("user-1");
    let res = app
        .get("/v1/entitlements?user_id=user-1", Some(&user))
        .await;
    assert_eq!(res.status(), 403);
    assert_eq!(
        challenge(&res).as_deref(),
        Some(r#"Bearer realm="tollgate", error="insufficient_scope""#)
    );
    // Other refusals are not about the token.
    let res = app
        .checkout(&user, json!({"plan": "platinum", "interval": "month"}))
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(challenge(&res), None);
}
