//! The `tollgate` binary as an operator runs it: what start-up errors show, and what the logs
//! say about refusals. Each test runs the built binary with a clean environment.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const DEFAULT_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");

fn tollgate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.env_clear()
        .current_dir(dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("tollgate.db").display()),
        )
        .env("TOLLGATE_CONFIG", DEFAULT_CONFIG);
    cmd
}

#[test]
fn a_secret_of_the_wrong_type_is_named_but_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(DEFAULT_CONFIG)
        .unwrap()
        .replace("hs256_secret = \"\"", "hs256_secret = 987654321");
    assert!(config.contains("987654321"));
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    let out = tollgate(dir.path())
        .env("TOLLGATE_CONFIG", &path)
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("hs256_secret"), "{stderr}");
    assert!(stderr.contains("not shown"), "{stderr}");
    assert!(!stderr.contains("987654321"), "{stderr}");
}

#[test]
fn a_numeric_secret_in_the_environment_is_a_valid_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = tollgate(dir.path())
        .env("TOLLGATE_AUTH__HS256_SECRET", "0012345")
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("0012345"), "{stderr}");
}

/// A running `tollgate serve` whose standard output is collected.
struct Served {
    child: Child,
    port: u16,
    output: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Served {
    fn start(cmd: Command) -> Served {
        Served::start_with_log(cmd, "info")
    }

    fn start_with_log(mut cmd: Command, rust_log: &str) -> Served {
        let mut child = cmd
            .env("TOLLGATE_SERVER__HOST", "127.0.0.1")
            .env("TOLLGATE_SERVER__PORT", "0")
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = output.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .contains("Tollgate listening")
                    .then(|| line.split("port=").nth(1))
                    .flatten()
                    .and_then(|p| p.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let port = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("tollgate serve says where it listens");
        Served {
            child,
            port,
            output,
            reader,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (up to 10 s) until what the process logged so far satisfies `done`.
    fn wait_for_lines(&self, done: impl Fn(&[String]) -> bool) {
        for _ in 0..200 {
            if done(&self.output.lock().unwrap()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Everything the process logged, once it has stopped (the reader ends at the end of its
    /// output).
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.reader.join();
        let lines = self.output.lock().unwrap().clone();
        lines
    }
}

/// Posts a `customer.subscription.updated` event `id` about `object`, signed with `secret`, to
/// the served instance; answers the status.
async fn post_event(
    http: &reqwest::Client,
    served: &Served,
    id: &str,
    object: serde_json::Value,
    secret: &str,
) -> u16 {
    let event = serde_json::json!({
        "id": id, "object": "event", "api_version": "2026-09-30.endive",
        "created": chrono::Utc::now().timestamp(), "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": "customer.subscription.updated",
        "data": {"object": object}
    })
    .to_string();
    http.post(served.url("/v1/webhooks/stripe"))
        .header("Stripe-Signature", signed(&event, secret))
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn signed(body: &str, secret: &str) -> String {
    use hmac::{Hmac, Mac};
    let t = chrono::Utc::now().timestamp();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn refusals_and_events_the_sdk_cannot_type_are_not_logged_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tollgate(dir.path());
    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    cmd.env("SAAS", "false")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_cli_test")
        .env("TOLLGATE_AUTH__HS256_SECRET", SECRET);
    let served = Served::start(cmd);
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"iss": "http://localhost:9999/", "sub": "user-1", "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    // Billing is off: an expected refusal, and no token at all.
    let res = http
        .post(served.url("/v1/checkout"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"plan": "pro", "interval": "month"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let res = http
        .post(served.url("/v1/checkout"))
        .json(&serde_json::json!({"plan": "pro", "interval": "month"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http.delete(served.url("/v1/status")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    // A signed event whose object async-stripe's typed struct cannot hold: accepted.
    let object = serde_json::json!({"id": "sub_1", "object": "subscription", "customer": "cus_1"});
    assert_eq!(
        post_event(&http, &served, "evt_cli_1", object, "whsec_cli_test").await,
        200
    );
    let res = http
        .post(served.url("/v1/admin/sync"))
        .json(&serde_json::json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let lines = served.stop();
    let errors: Vec<&String> = lines.iter().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "refusals logged as errors: {errors:#?}");
    for code in ["billing_disabled", "missing_token"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("INFO") && l.contains("request refused") && l.contains(code)),
            "{code} is logged at INFO: {lines:#?}"
        );
    }
}

#[tokio::test]
async fn the_placeholder_issuer_is_named_at_start_up_and_in_the_503() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(tollgate(dir.path()));
    // A token whose key would come from the identity provider: nothing answers at the
    // placeholder issuer, so the keys cannot be fetched.
    let header = base64_url(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let claims = base64_url(br#"{"sub":"user-1"}"#);
    let token = format!("{header}.{claims}.c2ln");
    let res = reqwest::Client::new()
        .get(served.url("/v1/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    // The keys are fetched again after auth.jwks_refetch_min_seconds (30 by default).
    assert_eq!(res.headers()["retry-after"], "30");
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["code"], "identity_provider_unavailable");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("auth.jwks_url"), "{detail}");
    let logs = served.stop();
    let warning = logs
        .iter()
        .find(|l| l.contains("WARN") && l.contains("placeholder"))
        .unwrap_or_else(|| panic!("no start-up warning about the issuer in {logs:#?}"));
    assert!(warning.contains("TOLLGATE_AUTH__ISSUER"), "{warning}");
}

#[tokio::test]
async fn a_configured_issuer_starts_without_the_placeholder_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tollgate(dir.path());
    cmd.env("TOLLGATE_AUTH__ISSUER", "https://idp.example.com/");
    let logs = Served::start(cmd).stop();
    assert!(
        logs.iter().any(|l| l.contains("Tollgate listening")),
        "{logs:#?}"
    );
    assert!(!logs.iter().any(|l| l.contains("placeholder")), "{logs:#?}");
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `tollgate dev-token` in `dir` with `args`: the token it prints, and what it says on stderr.
fn dev_token(dir: &Path, args: &[&str]) -> (String, String) {
    let out = tollgate(dir).arg("dev-token").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "dev-token {args:?} failed: {stderr}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    (token, stderr)
}

async fn get(served: &Served, path: &str, token: &str) -> (u16, serde_json::Value) {
    let res = reqwest::Client::new()
        .get(served.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn dev_tokens_are_accepted_only_by_a_server_started_for_them() {
    let dir = tempfile::tempdir().unwrap();
    // Minted before any server ran: the command makes the key, which the server then reads.
    let (alice, note) = dev_token(dir.path(), &["--sub", "alice", "--tenant", "acme"]);
    assert!(note.contains("TOLLGATE_DEV__TOKENS=true"), "{note}");
    assert!(dir.path().join("data/dev-token.key").exists());
    let (service, _) = dev_token(dir.path(), &["--sub", "checkout-svc", "--service"]);
    let (boss, _) = dev_token(dir.path(), &["--sub", "boss", "--role", "admin"]);

    let mut cmd = tollgate(dir.path());
    cmd.env("TOLLGATE_DEV__TOKENS", "true");
    let served = Served::start(cmd);
    let (status, body) = get(&served, "/v1/status?tenant_id=acme", &alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plan"], "free", "{body}");
    assert_eq!(body["access"], false, "{body}");
    // The tenant claim says which tenants the user may act in.
    let (status, body) = get(&served, "/v1/status?tenant_id=globex", &alice).await;
    assert_eq!(status, 403, "{body}");
    // An exempt role, as the provider's token would carry it.
    let (status, body) = get(&served, "/v1/status", &boss).await;
    assert_eq!(
        (status, &body["access"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    // A service token carries the scopes; a user's does not.
    let path = "/v1/entitlements?user_id=alice&feature=pro";
    let (status, body) = get(&served, path, &service).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], false, "{body}");
    let (status, body) = get(&served, path, &alice).await;
    assert_eq!(
        (status, &body["code"]),
        (403, &serde_json::json!("missing_scope"))
    );
    // A token signed with another key file.
    let elsewhere = tempfile::tempdir().unwrap();
    let (stranger, _) = dev_token(elsewhere.path(), &["--sub", "alice"]);
    let (status, body) = get(&served, "/v1/status", &stranger).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("dev.key_file"),
        "{body}"
    );
    let logs = served.stop();
    assert!(
        logs.iter()
            .any(|l| l.contains("WARN") && l.contains("DEVELOPMENT TOKENS ARE ACCEPTED")),
        "no loud start-up warning in {logs:#?}"
    );
    assert!(!logs.iter().any(|l| l.contains("placeholder")), "{logs:#?}");

    // The same key file, but a server not started for development tokens.
    let served = Served::start(tollgate(dir.path()));
    let (status, body) = get(&served, "/v1/status", &alice).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "invalid_token", "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("dev.tokens"),
        "{body}"
    );
    served.stop();
}

#[test]
fn dev_tokens_are_refused_beside_a_live_stripe_key() {
    let dir = tempfile::tempdir().unwrap();
    let live = |cmd: &mut Command| {
        cmd.env("STRIPE_SECRET_KEY", "sk_live_123")
            .env("STRIPE_WEBHOOK_SECRET", "whsec_123");
    };
    let mut check = tollgate(dir.path());
    live(&mut check);
    let out = check
        .env("TOLLGATE_DEV__TOKENS", "true")
        .arg("check-config")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("dev.tokens"), "{stderr}");
    assert!(!stderr.contains("sk_live_123"), "{stderr}");
    // Nor does the command mint one, whatever the server's setting.
    let mut mint = tollgate(dir.path());
    live(&mut mint);
    let out = mint.args(["dev-token", "--sub", "alice"]).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(!dir.path().join("data/dev-token.key").exists());
}

#[test]
fn outside_the_repository_the_built_in_defaults_and_a_dot_env_serve() {
    let dir = tempfile::tempdir().unwrap();
    let check = || {
        let out = tollgate(dir.path())
            .env_remove("TOLLGATE_CONFIG")
            .env("TOLLGATE_PORT", "tcp://10.0.0.12:8080")
            .arg("check-config")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No config/ here, no TOLLGATE_CONFIG: the defaults compiled into the binary.
    let (ok, stdout, stderr) = check();
    assert!(ok, "{stderr}");
    assert!(stdout.contains("from built-in defaults"), "{stdout}");
    assert!(!stdout.contains(".env"), "{stdout}");
    // Kubernetes' service variable is a notice, not a failure.
    assert!(
        stderr.contains("warning: ignored the environment variable TOLLGATE_PORT"),
        "{stderr}"
    );
    // A .env file in the working directory is read.
    std::fs::write(dir.path().join(".env"), "TOLLGATE_SERVER__PORT=9123\n").unwrap();
    let (ok, stdout, stderr) = check();
    assert!(ok && stdout.contains("and .env"), "{stdout}{stderr}");
    std::fs::write(dir.path().join(".env"), "SAAS=maybe\n").unwrap();
    let (ok, _, stderr) = check();
    assert!(!ok && stderr.contains("\"SAAS\""), "{stderr}");
}

#[test]
fn migrate_needs_only_the_database_settings() {
    let dir = tempfile::tempdir().unwrap();
    // Settings a server would refuse: migrate does not read them.
    let out = tollgate(dir.path())
        .env("STRIPE_SECRET_KEY", "not-a-key")
        .env("TOLLGATE_AUTH__ISSUER", "nonsense")
        .arg("migrate")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("tollgate.db");
    assert!(stdout.contains("migration(s) to sqlite://"), "{stdout}");
    assert!(stdout.contains(&db.display().to_string()), "{stdout}");
    assert!(db.exists());
    // The full configuration is still checked by every other command.
    let out = tollgate(dir.path())
        .env("STRIPE_SECRET_KEY", "not-a-key")
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn healthcheck_exits_by_the_servers_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(tollgate(dir.path()));
    let check = |url: &str| {
        tollgate(dir.path())
            .args(["healthcheck", "--url", url])
            .output()
            .unwrap()
    };
    let out = check(&served.url("/readyz"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An answer that is not 2xx, and nothing listening.
    let out = check(&served.url("/nowhere"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    let url = served.url("/readyz");
    served.stop();
    assert!(!check(&url).status.success());
}

/// A fake Stripe answering the customer list (or refusing the key), and a fake identity
/// provider's key set.
async fn fakes(stripe_status: u16) -> (wiremock::MockServer, wiremock::MockServer) {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stripe = MockServer::start().await;
    let answer = if stripe_status == 200 {
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "object": "list", "data": [], "has_more": false, "url": "/v1/customers"
        }))
    } else {
        ResponseTemplate::new(stripe_status).set_body_json(serde_json::json!({
            "error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****"}
        }))
    };
    Mock::given(method("GET"))
        .and(path("/v1/customers"))
        .respond_with(answer)
        .mount(&stripe)
        .await;
    let idp = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}]
        })))
        .mount(&idp)
        .await;
    (stripe, idp)
}

#[tokio::test]
async fn check_config_connects_to_each_party_and_prints_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let (stripe, idp) = fakes(200).await;
    let run = |extra: &[(&str, String)], args: &[&str]| {
        let mut cmd = tollgate(dir.path());
        cmd.env("STRIPE_SECRET_KEY", "sk_test_Secret1")
            .env("STRIPE_WEBHOOK_SECRET", "whsec_Secret2")
            .env("TOLLGATE_STRIPE__API_BASE", stripe.uri())
            .env("TOLLGATE_AUTH__ISSUER", "https://idp.example.com/")
            .env(
                "TOLLGATE_AUTH__JWKS_URL",
                format!("{}/jwks.json", idp.uri()),
            )
            .env("STRIPE_MONTHLY_PRICE_ID", "price_m")
            .env("STRIPE_YEARLY_PRICE_ID", "price_y")
            .env("STRIPE_LIFETIME_PRICE_ID", "price_l");
        for (name, value) in extra {
            cmd.env(name, value);
        }
        let out = cmd.arg("check-config").args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };

    let (ok, stdout, stderr) = run(&[], &["--connect"]);
    assert!(ok, "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok    database sqlite://")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok    identity provider: 1 signing key(s) from http://")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok    Stripe (test mode)")),
        "{stdout}"
    );
    assert_eq!(stripe.received_requests().await.unwrap().len(), 1);

    // Each party that fails is named, and the command fails.
    let (stripe_refusing, _) = fakes(401).await;
    let (ok, stdout, _) = run(
        &[
            ("TOLLGATE_STRIPE__API_BASE", stripe_refusing.uri()),
            (
                "TOLLGATE_AUTH__JWKS_URL",
                format!("{}/missing.json", idp.uri()),
            ),
            ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none".into()),
            ("TOLLGATE_DATABASE__CONNECT_TIMEOUT_SECONDS", "1".into()),
        ],
        &["--connect"],
    );
    assert!(!ok);
    for party in [
        "database postgres://nobody@127.0.0.1:1/none",
        "identity provider",
        "Stripe (test mode)",
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("FAIL  {party}"))),
            "{party}: {stdout}"
        );
    }
    assert!(stdout.contains("Invalid API Key"), "{stdout}");

    // --print: the configuration in force, as TOML, secrets redacted.
    let (ok, stdout, stderr) = run(&[("TOLLGATE_SERVER__PORT", "9123".into())], &["--print"]);
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("Secret"), "{stdout}");
    let toml_part = stdout.rsplit_once("configuration is valid").unwrap().0;
    let printed: toml::Table = toml::from_str(toml_part).unwrap();
    assert_eq!(printed["server"]["port"].as_integer(), Some(9123));
    assert_eq!(
        printed["stripe"]["secret_key"].as_str(),
        Some("sk_test_... (redacted)")
    );
    assert_eq!(
        printed["stripe"]["api_base"].as_str(),
        Some(stripe.uri().as_str())
    );
}

#[tokio::test]
async fn check_config_reaches_the_github_provisioner_and_never_prints_its_token() {
    use fake_github::{FakeGithub, ORG, TEAM, TOKEN};
    let github = FakeGithub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = licenses_config(dir.path());
    let run = |token: &str, args: &[&str]| {
        let mut cmd = tollgate(dir.path());
        cmd.env("TOLLGATE_CONFIG", &config)
            .env("TOLLGATE_PROVISIONING__GITHUB__API_BASE", github.base_url())
            .env("GITHUB_ORG_NAME", ORG)
            .env("GITHUB_TEAM_SLUG", TEAM)
            .env("TOLLGATE_PROVISIONING__GITHUB__TOKEN", token);
        let out = cmd.arg("check-config").args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), stdout)
    };
    let (_, stdout) = run(TOKEN, &["--connect"]);
    let line = format!("ok    GitHub organization {ORG} team {TEAM}: team id");
    assert!(stdout.lines().any(|l| l.starts_with(&line)), "{stdout}");
    assert!(!github
        .received_on("GET", &format!("/orgs/{ORG}/invitations"))
        .is_empty());

    let (ok, stdout) = run("ghp_revoked", &["--connect"]);
    assert!(!ok, "{stdout}");
    let fail = format!("FAIL  GitHub organization {ORG} team {TEAM}");
    let failed = stdout
        .lines()
        .find(|l| l.starts_with(&fail))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        failed.contains("401") && failed.contains("Bad credentials"),
        "{failed}"
    );

    let (ok, stdout) = run(TOKEN, &["--print"]);
    assert!(ok, "{stdout}");
    assert!(!stdout.contains(TOKEN), "{stdout}");
    assert!(stdout.contains("(redacted)"), "{stdout}");
}

/// A fake Stripe that knows webhook endpoints: it lists `existing`, creates new ones (with a
/// secret, as Stripe answers only on creation) and updates them.
async fn fake_stripe_endpoints(existing: Vec<serde_json::Value>) -> wiremock::MockServer {
    use wiremock::matchers::{method, path, path_regex};
    use wiremock::{Mock, MockServer, Request, ResponseTemplate};

    fn form(req: &Request) -> Vec<(String, String)> {
        serde_urlencoded::from_bytes(&req.body).unwrap()
    }
    fn events(form: &[(String, String)]) -> Vec<String> {
        form.iter()
            .filter(|(k, _)| k.starts_with("enabled_events["))
            .map(|(_, v)| v.clone())
            .collect()
    }
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/webhook_endpoints"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "object": "list", "data": existing.clone(), "has_more": false,
            "url": "/v1/webhook_endpoints",
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/webhook_endpoints"))
        .respond_with(|req: &Request| {
            let form = form(req);
            let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let mut endpoint = webhook_endpoint_fixture();
            endpoint["id"] = serde_json::json!("we_created");
            endpoint["url"] = serde_json::json!(field("url"));
            endpoint["api_version"] = serde_json::json!(field("api_version"));
            endpoint["description"] = serde_json::json!(field("description"));
            endpoint["enabled_events"] = serde_json::json!(events(&form));
            endpoint["secret"] = serde_json::json!("whsec_created_secret");
            ResponseTemplate::new(200).set_body_json(endpoint)
        })
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v1/webhook_endpoints/[^/]+$"))
        .respond_with(move |req: &Request| {
            let id = req.url.path().rsplit('/').next().unwrap();
            let Some(mut endpoint) = existing.iter().find(|e| e["id"] == id).cloned() else {
                return ResponseTemplate::new(404).set_body_json(serde_json::json!({
                    "error": {"type": "invalid_request_error", "message": "No such webhook endpoint"}
                }));
            };
            endpoint["enabled_events"] = serde_json::json!(events(&form(req)));
            ResponseTemplate::new(200).set_body_json(endpoint)
        })
        .mount(&server)
        .await;
    server
}

fn webhook_endpoint_fixture() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stripe/webhook_endpoint.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `tollgate stripe webhook-endpoint` with `args`, against the fake Stripe at `stripe`.
fn webhook_endpoint_command(dir: &Path, stripe: &str, args: &[&str]) -> std::process::Output {
    tollgate(dir)
        .env("STRIPE_SECRET_KEY", "sk_test_endpoint")
        .env("STRIPE_API_BASE", format!("{stripe}/"))
        .args(["stripe", "webhook-endpoint"])
        .args(args)
        .output()
        .unwrap()
}

/// What the fake Stripe received as `(method, path, form)`.
async fn received(server: &wiremock::MockServer) -> Vec<(String, String, Vec<(String, String)>)> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| {
            let form = serde_urlencoded::from_bytes(&r.body).unwrap_or_default();
            (r.method.to_string(), r.url.path().to_owned(), form)
        })
        .collect()
}

fn form_events(form: &[(String, String)]) -> Vec<&str> {
    form.iter()
        .filter(|(k, _)| k.starts_with("enabled_events["))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn the_webhook_endpoint_is_created_with_tollgates_events_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = fake_stripe_endpoints(Vec::new()).await;
    let url = "https://billing.example.com/v1/webhooks/stripe";
    let out = webhook_endpoint_command(
        dir.path(),
        &stripe.uri(),
        &["--url", url, "--description", "Tollgate production"],
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let requests = received(&stripe).await;
    let creates: Vec<_> = requests
        .iter()
        .filter(|(m, p, _)| m == "POST" && p == "/v1/webhook_endpoints")
        .collect();
    assert_eq!(creates.len(), 1, "{requests:#?}");
    let form = &creates[0].2;
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("url"), Some(url));
    assert_eq!(field("api_version"), Some("2026-09-30.endive"));
    assert_eq!(field("description"), Some("Tollgate production"));
    // Every event Tollgate acts on, each once, and nothing else.
    let events = form_events(form);
    assert_eq!(events, tollgate::stripe::webhook::EVENTS, "{form:#?}");
    for event in [
        "checkout.session.completed",
        "customer.subscription.updated",
        "invoice.payment_failed",
        "charge.dispute.closed",
        "customer.deleted",
    ] {
        assert!(events.contains(&event), "{event} missing: {events:?}");
    }
    // The secret to set, and where.
    assert!(
        stdout.contains("STRIPE_WEBHOOK_SECRET=whsec_created_secret"),
        "{stdout}"
    );
    assert!(stdout.contains("we_created"), "{stdout}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[tokio::test]
async fn an_existing_endpoint_at_the_url_gets_the_events_and_a_version_warning() {
    let dir = tempfile::tempdir().unwrap();
    let url = "https://billing.example.com/v1/webhooks/stripe";
    let mut existing = webhook_endpoint_fixture();
    existing["id"] = serde_json::json!("we_existing");
    existing["url"] = serde_json::json!(url);
    existing["api_version"] = serde_json::json!("2024-06-20");
    existing["enabled_events"] = serde_json::json!(["charge.succeeded", "product.created"]);
    let mut elsewhere = webhook_endpoint_fixture();
    elsewhere["id"] = serde_json::json!("we_elsewhere");
    elsewhere["url"] = serde_json::json!("https://other.example.com/hooks");
    let stripe = fake_stripe_endpoints(vec![elsewhere, existing]).await;
    let out = webhook_endpoint_command(dir.path(), &stripe.uri(), &["--url", url]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let requests = received(&stripe).await;
    let posts: Vec<_> = requests.iter().filter(|(m, _, _)| m == "POST").collect();
    assert_eq!(posts.len(), 1, "one update, no create: {requests:#?}");
    let (_, path, form) = posts[0];
    assert_eq!(path, "/v1/webhook_endpoints/we_existing");
    assert_eq!(form_events(form), tollgate::stripe::webhook::EVENTS);
    // An update cannot change the URL or the version.
    assert!(
        !form.iter().any(|(k, _)| k == "api_version" || k == "url"),
        "{form:#?}"
    );
    assert!(stdout.contains("we_existing"), "{stdout}");
    assert!(stdout.contains("removed: product.created"), "{stdout}");
    assert!(stdout.contains("secret is unchanged"), "{stdout}");
    assert!(stdout.contains("STRIPE_WEBHOOK_SECRET"), "{stdout}");
    assert!(!stdout.contains("whsec_"), "{stdout}");
    assert!(
        stderr.contains("2024-06-20")
            && stderr.contains("2026-09-30.endive")
            && stderr.contains("cannot change"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_url_or_no_stripe_key_is_refused_before_asking_stripe() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = fake_stripe_endpoints(Vec::new()).await;
    for (url, says) in [
        ("http://billing.example.com/v1/webhooks/stripe", "https"),
        ("billing.example.com/v1/webhooks/stripe", "not a URL"),
    ] {
        let out = webhook_endpoint_command(dir.path(), &stripe.uri(), &["--url", url]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    }
    let out = tollgate(dir.path())
        .env("STRIPE_API_BASE", format!("{}/", stripe.uri()))
        .args(["stripe", "webhook-endpoint", "--url"])
        .arg("https://billing.example.com/v1/webhooks/stripe")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("STRIPE_SECRET_KEY"), "{stderr}");
    assert!(received(&stripe).await.is_empty());
    // A path other than the webhook path is a warning, not a refusal.
    let out = webhook_endpoint_command(
        dir.path(),
        &stripe.uri(),
        &["--url", "http://localhost:8080/hooks"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: http://localhost:8080/hooks"));
}

#[tokio::test]
async fn sync_all_without_a_terminal_prints_plain_progress_and_reports_a_failure_once() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let dir = tempfile::tempdir().unwrap();
    // Three customers Tollgate created; Stripe cannot read the last one.
    let db = tollgate::db::Database::connect(
        &format!("sqlite://{}", dir.path().join("tollgate.db").display()),
        1,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    db.migrate().unwrap();
    db.run(|conn| {
        for (user, customer) in [
            ("ann", "cus_cli_a"),
            ("bob", "cus_cli_b"),
            ("cat", "cus_cli_c"),
        ] {
            let subject = tollgate::billing::subject::Subject::user(user);
            tollgate::db::customers::link(conn, &subject, customer, chrono::Utc::now())?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let stripe = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions"))
        .and(query_param("customer", "cus_cli_c"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {"type": "invalid_request_error", "message": "No such customer: 'cus_cli_c'"}
        })))
        .mount(&stripe)
        .await;
    for list in [
        "/v1/subscriptions",
        "/v1/charges",
        "/v1/checkout/sessions",
        "/v1/customers",
    ] {
        Mock::given(method("GET"))
            .and(path(list))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "object": "list", "data": [], "has_more": false, "url": list,
            })))
            .mount(&stripe)
            .await;
    }
    // Standard output and error are pipes here, as in a CI or Kubernetes job.
    let out = tollgate(dir.path())
        .env("STRIPE_SECRET_KEY", "sk_test_sync")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_sync")
        .env("STRIPE_API_BASE", format!("{}/", stripe.uri()))
        .env("STRIPE_MONTHLY_PRICE_ID", "price_m")
        .env("STRIPE_YEARLY_PRICE_ID", "price_y")
        .env("STRIPE_LIFETIME_PRICE_ID", "price_l")
        .args(["sync", "--all"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !out.status.success(),
        "a customer failed: {stdout}\n{stderr}"
    );
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("synced "))
        .collect();
    assert_eq!(
        progress,
        [
            "synced 1/3 customers",
            "synced 2/3 customers",
            "synced 3/3 customers"
        ],
        "{stderr}"
    );
    // No bar drawn into the pipe.
    assert!(
        !stderr.contains('\r') && !stderr.contains("\u{1b}["),
        "{stderr:?}"
    );
    // The summary is the command's output; the log goes to standard error.
    assert_eq!(
        stdout.trim(),
        "re-read 3 customer(s): 0 had drifted (0 record(s) repaired), 1 failed",
        "{stdout}"
    );
    // The failed customer is named in one warning, and the command's error is said once.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("reconciliation of a customer failed"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("cus_cli_c"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    assert!(
        stderr.contains("error: 1 customer(s) could not be re-read"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_database_is_one_line_naming_it_and_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = tollgate(dir.path())
        .env("DATABASE_URL", "postgres://nobody:hunter2@127.0.0.1:1/x")
        .env("TOLLGATE_DATABASE__CONNECT_TIMEOUT_SECONDS", "2")
        .env("RUST_LOG", "info")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let everything = format!("{stdout}{stderr}");
    let lines: Vec<&str> = everything
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let about_the_database: Vec<&&str> = lines
        .iter()
        .filter(|l| l.to_lowercase().contains("database") || l.contains("127.0.0.1"))
        .collect();
    assert_eq!(
        about_the_database.len(),
        1,
        "one line about the database: {lines:#?}"
    );
    let line = about_the_database[0];
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains("postgres://nobody:***@127.0.0.1:1/x"),
        "{line}"
    );
    assert!(line.contains("DATABASE_URL"), "says what to check: {line}");
    assert!(!everything.contains("hunter2"), "{everything}");
    assert!(lines.len() <= 2, "{lines:#?}");
}

#[tokio::test]
async fn every_request_is_one_access_line_that_rust_log_can_silence() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tollgate(dir.path());
    cmd.env(
        "TOLLGATE_AUTH__HS256_SECRET",
        "a-shared-secret-of-at-least-32-bytes!!",
    );
    let served = Served::start(cmd);
    let http = reqwest::Client::new();
    let res = http.get(served.url("/healthz")).send().await.unwrap();
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(res.status(), 200);
    let res = http
        .delete(served.url("/v1/tenants/t-raw-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(served.url("/v1/nowhere")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = http
        .get(served.url("/v1/entitlements?user_id=u1&feature=x"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The log is written by its own thread: wait for the last request's line before the kill.
    served.wait_for_lines(|lines| lines.iter().filter(|l| l.contains(" access ")).count() >= 4);
    let lines = served.stop();
    let access: Vec<&String> = lines.iter().filter(|l| l.contains(" access ")).collect();
    assert_eq!(access.len(), 4, "one line per request: {lines:#?}");
    for (route, status) in [
        ("/healthz", 200),
        ("/v1/tenants/{tenant_id}", 401),
        ("unmatched", 404),
        ("/v1/entitlements", 401),
    ] {
        assert!(
            access.iter().any(|l| l.contains("INFO")
                && l.contains(&format!("route={route} "))
                && l.contains(&format!("status={status} "))
                && l.contains("latency_ms=")),
            "{route} {status}: {access:#?}"
        );
    }
    assert!(
        access
            .iter()
            .any(|l| l.contains(&request_id) && l.contains("method=GET")),
        "the line names the request: {access:#?}"
    );
    // Routine refusals are no warnings (start-up has its own, about Stripe's missing key).
    let loud: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("request{") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");

    let served = Served::start_with_log(tollgate(dir.path()), "info,tollgate::access=off");
    let res = http.get(served.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let lines = served.stop();
    assert!(!lines.iter().any(|l| l.contains(" access ")), "{lines:#?}");
}

/// A receiver of outbound events that holds its first answer back (the delivery is in flight
/// while the test kills Tollgate) and answers the later ones at once.
#[derive(Clone, Default)]
struct SlowFirstReceiver {
    ids: Arc<Mutex<Vec<String>>>,
}

impl wiremock::Respond for SlowFirstReceiver {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let id = request
            .headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut ids = self.ids.lock().unwrap();
        ids.push(id);
        let template = wiremock::ResponseTemplate::new(204);
        if ids.len() == 1 {
            template.set_delay(std::time::Duration::from_millis(2500))
        } else {
            template
        }
    }
}

#[tokio::test]
async fn an_event_in_flight_when_tollgate_is_killed_is_delivered_after_the_restart() {
    let receiver = wiremock::MockServer::start().await;
    let got = SlowFirstReceiver::default();
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(got.clone())
        .mount(&receiver)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("events.toml");
    std::fs::write(
        &config,
        format!(
            "[events]\ntimeout_seconds = 3\npoll_interval_ms = 100\n\n[[events.endpoints]]\n\
             name = \"product\"\nurl = \"{}/hooks\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=\"\n",
            receiver.uri()
        ),
    )
    .unwrap();
    let (admin, _) = dev_token(dir.path(), &["--sub", "support", "--service"]);
    // On PostgreSQL too when the suite runs against it (a database of its own).
    let postgres = PostgresDatabase::create();
    let serve = || {
        let mut cmd = tollgate(dir.path());
        cmd.env("TOLLGATE_CONFIG", &config)
            .env("TOLLGATE_DEV__TOKENS", "true");
        if let Some(db) = &postgres {
            cmd.env("DATABASE_URL", &db.url);
        }
        Served::start(cmd)
    };
    let first = serve();
    let res = reqwest::Client::new()
        .post(first.url("/v1/grants"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"user_id": "zoe", "plan": "pro", "note": "kill -9 test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Acknowledged, hence committed with its event; its delivery is now in flight.
    for _ in 0..100 {
        if !got.ids.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(got.ids.lock().unwrap().len(), 1, "the delivery started");
    first.stop(); // SIGKILL: no shutdown, the claim stays with the dead process.

    let second = serve();
    // The dead process's claim runs out (timeout + 5 s) and the new one sends it again.
    for _ in 0..300 {
        if got.ids.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ids = got.ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 2, "delivered again after the restart: {ids:?}");
    assert_eq!(
        ids[0], ids[1],
        "the same webhook-id, for the receiver to dedupe"
    );
    assert!(ids[0].starts_with("evt_"));
    // And once only: the answered delivery is recorded and not sent again.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(got.ids.lock().unwrap().len(), 2);
    second.stop();
}

#[path = "api/helpers/fake_github.rs"]
mod fake_github;

/// config/default.toml with its lifetime plan provisioning GitHub, written in `dir`.
fn licenses_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("licenses.toml");
    let defaults = std::fs::read_to_string(DEFAULT_CONFIG).unwrap();
    std::fs::write(
        &config,
        defaults.replace(
            "id = \"lifetime\"\n",
            "id = \"lifetime\"\nprovision = [\"github\"]\n",
        ),
    )
    .unwrap();
    config
}

/// Runs `sql` on the test's database (SQLite file or PostgreSQL).
fn execute(database_url: &str, sql: &str) {
    use diesel::{Connection, RunQueryDsl};
    if let Some(path) = database_url.strip_prefix("sqlite://") {
        let mut conn = diesel::SqliteConnection::establish(path).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    } else {
        let mut conn = diesel::PgConnection::establish(database_url).unwrap();
        diesel::sql_query(sql).execute(&mut conn).unwrap();
    }
}

#[tokio::test]
async fn an_invitation_sent_when_tollgate_is_killed_is_not_sent_twice_after_the_restart() {
    use fake_github::{FakeGithub, ORG, TEAM, TOKEN};
    let github = FakeGithub::start().await;
    github.add_user("octocat", 583231);
    let dir = tempfile::tempdir().unwrap();
    let config = licenses_config(dir.path());
    let (buyer, _) = dev_token(dir.path(), &["--sub", "alice"]);
    let postgres = PostgresDatabase::create();
    let database_url = match &postgres {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("tollgate.db").display()),
    };
    let serve = || {
        let mut cmd = tollgate(dir.path());
        cmd.env("TOLLGATE_CONFIG", &config)
            .env("TOLLGATE_DEV__TOKENS", "true")
            .env("DATABASE_URL", &database_url)
            .env("TOLLGATE_PROVISIONING__GITHUB__API_BASE", github.base_url())
            .env("GITHUB_ORG_NAME", ORG)
            .env("GITHUB_TEAM_SLUG", TEAM)
            .env("GH_PAT", TOKEN)
            // A claim lasts five timeouts and 5 s: 10 s here.
            .env("TOLLGATE_PROVISIONING__GITHUB__TIMEOUT_SECONDS", "1");
        Served::start(cmd)
    };
    let first = serve();
    // A paid lifetime purchase and its license (what the Stripe sync writes).
    execute(
        &database_url,
        "INSERT INTO customers (subject, subject_kind, user_id, stripe_customer_id, created_at, updated_at) \
         VALUES ('user:alice', 'user', 'alice', 'cus_kill', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    );
    execute(
        &database_url,
        "INSERT INTO purchases (checkout_session_id, subject, stripe_customer_id, plan_id, kind, \
           payment_intent_id, amount, currency, status, purchased_at, updated_at) \
         VALUES ('cs_test_kill', 'user:alice', 'cus_kill', 'lifetime', 'lifetime', 'pi_kill', 19900, \
           'usd', 'paid', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
    );
    let license = "lic_0123456789abcdef0123456789abcdef";
    execute(
        &database_url,
        &format!(
            "INSERT INTO licenses (license_id, checkout_session_id, subject, user_id, plan_id, \
               provisioner, status, created_at, updated_at) \
             VALUES ('{license}', 'cs_test_kill', 'user:alice', 'alice', 'lifetime', 'github', \
               'pending', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
    );
    // GitHub creates the invitation at once and answers 3 s later: Tollgate dies in between.
    github.hold_next_invitation(std::time::Duration::from_secs(3));
    let http = reqwest::Client::new();
    let res = http
        .post(first.url(&format!("/v1/licenses/{license}/github")))
        .bearer_auth(&buyer)
        .json(&serde_json::json!({"username": "octocat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    for _ in 0..100 {
        if !github.invitations_sent().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        github.invitations_sent(),
        ["octocat"],
        "the invitation went out"
    );
    first.stop(); // SIGKILL: GitHub's answer never recorded, the claim stays with the dead process.

    let second = serve();
    let mut status = serde_json::Value::Null;
    for _ in 0..400 {
        let res = http
            .get(second.url("/v1/licenses"))
            .bearer_auth(&buyer)
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        status = body["data"][0].clone();
        if status["status"] == "invited" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "invited", "{status}");
    assert_eq!(
        github.invitations_sent(),
        ["octocat"],
        "exactly one invitation: the retry's was refused as already there"
    );
    let posts = github.received_on("POST", &format!("/orgs/{ORG}/invitations"));
    assert_eq!(
        posts.len(),
        2,
        "the retry asked again and GitHub refused it"
    );
    assert_eq!(github.membership("octocat"), Some("pending"));
    second.stop();
}

/// A database of its own on the PostgreSQL server at `TOLLGATE_TEST_POSTGRES_URL`, if set;
/// dropped afterwards.
struct PostgresDatabase {
    url: String,
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    fn create() -> Option<PostgresDatabase> {
        use diesel::{Connection, RunQueryDsl};
        let server = std::env::var("TOLLGATE_TEST_POSTGRES_URL")
            .ok()
            .filter(|s| !s.is_empty())?;
        let server = server.trim_end_matches('/');
        let name = format!("tollgate_cli_{}", uuid::Uuid::new_v4().simple());
        let admin_url = format!("{server}/postgres?sslmode=disable");
        let mut conn = diesel::PgConnection::establish(&admin_url).expect("PostgreSQL reachable");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .unwrap();
        Some(PostgresDatabase {
            url: format!("{server}/{name}?sslmode=disable"),
            admin_url,
            name,
        })
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        use diesel::{Connection, RunQueryDsl};
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

#[path = "api/helpers/fake_stripe.rs"]
#[allow(dead_code)]
mod fake_stripe;

/// `tollgate serve` against the fake Stripe, with a webhook secret, dev tokens and short retries
/// and leases, on `postgres` when the suite runs against PostgreSQL (else SQLite in `dir`).
fn serve_with_stripe(
    dir: &Path,
    stripe: &fake_stripe::FakeStripe,
    postgres: Option<&PostgresDatabase>,
) -> Served {
    let mut cmd = tollgate(dir);
    cmd.env("STRIPE_SECRET_KEY", "sk_test_kill")
        .env("TOLLGATE_STRIPE__API_BASE", stripe.base_url())
        .env("STRIPE_WEBHOOK_SECRET", "whsec_kill")
        .env("STRIPE_MONTHLY_PRICE_ID", "price_pro_monthly")
        .env("STRIPE_YEARLY_PRICE_ID", "price_pro_yearly")
        .env("STRIPE_LIFETIME_PRICE_ID", "price_lifetime")
        .env("TOLLGATE_WEBHOOKS__RETRY_INITIAL_MS", "50")
        .env("TOLLGATE_WEBHOOKS__RETRY_MAX_SECONDS", "1")
        .env("TOLLGATE_WEBHOOKS__LEASE_SECONDS", "2")
        .env("TOLLGATE_DEV__TOKENS", "true");
    if let Some(db) = postgres {
        cmd.env("DATABASE_URL", &db.url);
    }
    Served::start(cmd)
}

#[tokio::test]
async fn webhook_events_acknowledged_before_a_kill_are_applied_after_the_restart() {
    let stripe = fake_stripe::FakeStripe::start().await;
    let (_, sub_id) =
        stripe.add_customer_with_subscription("user:alice", "price_pro_monthly", "month");
    // Stripe fails every read: the events are acknowledged and stay pending.
    stripe.fail_subscription_lists(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = dev_token(dir.path(), &["--sub", "ops", "--service"]);
    let postgres = PostgresDatabase::create();
    let first = serve_with_stripe(dir.path(), &stripe, postgres.as_ref());
    let http = reqwest::Client::new();
    for i in 0..3 {
        let id = format!("evt_kill_{i}");
        let object = stripe.subscription(&sub_id);
        assert_eq!(
            post_event(&http, &first, &id, object, "whsec_kill").await,
            200
        );
    }
    // The worker tried, and Stripe failed it.
    let mut backlog = serde_json::Value::Null;
    for _ in 0..200 {
        backlog = get(&first, "/v1/admin/webhooks/stuck", &service).await.1;
        if backlog["stuck"].as_array().is_some_and(|s| !s.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(backlog["pending"], 3, "{backlog}");
    first.stop(); // SIGKILL, perhaps in the middle of an attempt (its lease then runs out).

    stripe.fail_subscription_lists(0);
    let second = serve_with_stripe(dir.path(), &stripe, postgres.as_ref());
    // On PostgreSQL the killed replica may have held the customer's lease: it lapses within
    // 10 s, then the new replica applies the events.
    for _ in 0..600 {
        backlog = get(&second, "/v1/admin/webhooks/stuck", &service).await.1;
        if backlog["pending"] == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(backlog["pending"], 0, "{backlog}");
    // Applied: Alice holds the subscription the events are about.
    let (code, entitled) = get(&second, "/v1/entitlements?user_id=alice", &service).await;
    assert_eq!(code, 200, "{entitled}");
    assert_eq!(
        (entitled["plan"].as_str(), entitled["access"].as_bool()),
        (Some("pro"), Some(true)),
        "{entitled}"
    );
    second.stop();
}
