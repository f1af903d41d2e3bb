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
    let event = serde_json::json!({
        "id": "evt_cli_1", "object": "event", "api_version": "2026-09-30.endive",
        "created": chrono::Utc::now().timestamp(), "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": "customer.subscription.updated",
        "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1"}}
    })
    .to_string();
    let res = http
        .post(served.url("/v1/webhooks/stripe"))
        .header("Stripe-Signature", signed(&event, "whsec_cli_test"))
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
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
