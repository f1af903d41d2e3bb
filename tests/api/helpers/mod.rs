//! `spawn_app()`: Tollgate on port 0 with its own fresh database (SQLite file, or a new
//! PostgreSQL database when `TOLLGATE_TEST_POSTGRES_URL` is set), a fake Stripe and a fake
//! identity provider, both real HTTP servers on localhost.

pub mod fake_github;
pub mod fake_stripe;
pub mod idp;

use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};

use diesel::{Connection, RunQueryDsl};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::Value;
use tollgate::config::Settings;
use tollgate::startup::Application;

pub use fake_stripe::FakeStripe;
pub use idp::Idp;

pub const WEBHOOK_SECRET: &str = "whsec_test_current";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_test_previous";
pub const AUDIENCE: &str = "tollgate-tests";
pub const APP_ORIGIN: &str = "https://app.example.com";

/// The plans every black-box test runs against.
pub const TEST_PLANS: &str = r#"
[[plans]]
id = "free"
name = "Free"
features = ["basic"]
quotas = { credits = { limit = 3, period = "day" }, exports = { limit = 2, period = "month" } }

[[plans]]
id = "pro"
name = "Pro"
rank = 10
aliases = ["professional"]
features = ["basic", "export"]
quotas = { credits = { limit = 100, period = "day" }, generations = { limit = 5, period = "billing_period" }, images = { limit = 2, period = "billing_month" } }
prices = [
  { interval = "month", price_id = "price_pro_monthly", amount = 900, currency = "usd" },
  { interval = "year", price_id = "price_pro_yearly", amount = 9000, currency = "usd" },
]

[[plans]]
id = "maker"
name = "Maker"
rank = 5
trial_days = 3
features = ["basic"]
prices = [{ interval = "month", price_id = "price_maker_monthly", amount = 1299, currency = "usd" }]

[[plans]]
id = "starter"
name = "Starter"
rank = 3
trial_days = 7
trial_requires_card = false
features = ["basic"]
prices = [{ interval = "month", price_id = "price_starter_monthly", amount = 500, currency = "usd" }]

[[plans]]
id = "lifetime"
name = "Lifetime"
rank = 20
kind = "lifetime"
features = ["basic", "export", "lifetime"]
quotas = { credits = { limit = "unlimited", period = "day" } }
prices = [{ interval = "once", price_id = "price_lifetime", amount = 19900, currency = "usd" }]

[[plans]]
id = "credits-10"
name = "10 credits"
kind = "credit_pack"
quotas = { credits = { limit = 10, period = "none" } }
prices = [{ interval = "once", price_id = "price_credits_10", amount = 300, currency = "usd" }]

[[plans]]
id = "legacy"
name = "Legacy"
rank = 1
features = ["basic"]
prices = [{ interval = "month", price_id = "price_legacy_not_allowed", amount = 500, currency = "usd" }]
"#;

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub stripe: FakeStripe,
    pub idp: Idp,
    pub app: actix_web::web::Data<tollgate::state::AppState>,
    settings: Settings,
    database: TestDatabase,
    /// When set, the time every instance of this app sees as now.
    pinned_now: Arc<Mutex<Option<DateTime<Utc>>>>,
}

/// Knobs a test may turn before the app starts.
pub struct Options {
    pub stripe_configured: bool,
    pub saas: bool,
    /// Extra TOML merged last (e.g. `[exemptions]`).
    pub extra_toml: String,
    /// Leave `auth.jwks_url` unset: keys are found through OIDC discovery from the issuer.
    pub oidc_discovery: bool,
    /// Start from this configuration file with its own plans, instead of config/default.toml
    /// with [`TEST_PLANS`]; no price allowlist.
    pub config_file: Option<std::path::PathBuf>,
    /// Provision GitHub licenses for the `lifetime` plan through this fake GitHub's base URL
    /// (`fake_github::ORG`, `TEAM`, `TOKEN`; invitations checked every second).
    pub github: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stripe_configured: true,
            saas: true,
            extra_toml: String::new(),
            oidc_discovery: false,
            config_file: None,
            github: None,
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    init_logs();
    let stripe = FakeStripe::start().await;
    let idp = Idp::start().await;
    let db = TestDatabase::create();
    let base = Toml::file_exact(
        options
            .config_file
            .clone()
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml").into()),
    );
    let mut figment = Figment::new()
        .merge(base)
        .merge(("saas", options.saas))
        .merge(("server.host", "127.0.0.1"))
        .merge(("server.port", 0))
        .merge(("database.url", db.url.clone()))
        .merge(("database.max_connections", 6))
        .merge(("stripe.api_base", stripe.base_url()))
        .merge(("stripe.publishable_key", "pk_test_tollgate"))
        .merge((
            "stripe.allowed_price_ids",
            vec![
                "price_pro_monthly",
                "price_pro_yearly",
                "price_maker_monthly",
                "price_starter_monthly",
                "price_lifetime",
                "price_credits_10",
            ],
        ))
        .merge(("checkout.allowed_redirect_origins", vec![APP_ORIGIN]))
        .merge((
            "checkout.default_success_url",
            format!("{APP_ORIGIN}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"),
        ))
        .merge((
            "checkout.default_cancel_url",
            format!("{APP_ORIGIN}/pricing"),
        ))
        .merge((
            "checkout.default_portal_return_url",
            format!("{APP_ORIGIN}/account"),
        ))
        .merge(("checkout.rate_limit_per_minute", 5))
        // A failed webhook attempt is retried soon, and other replicas' events are seen soon;
        // a stored event is due at once (tests of `webhooks.coalesce_ms` set it).
        .merge(Toml::string(
            "[webhooks]\nretry_initial_ms = 50\nretry_max_seconds = 1\npoll_interval_ms = 50\n\
             coalesce_ms = 0\n",
        ))
        .merge(("auth.issuer", idp.issuer()))
        .merge(("auth.audience", vec![AUDIENCE]))
        // In the default profile (not a global value), so that `extra_toml` can override it.
        .merge(Toml::string("[auth]\njwks_refetch_min_seconds = 0\n"));
    if options.config_file.is_some() {
        figment = figment.merge(("stripe.allowed_price_ids", Vec::<String>::new()));
    } else if options.github.is_some() {
        let plans = TEST_PLANS.replace(
            "id = \"lifetime\"\n",
            "id = \"lifetime\"\nprovision = [\"github\"]\n",
        );
        figment = figment.merge(Toml::string(&plans));
    } else {
        figment = figment.merge(Toml::string(TEST_PLANS));
    }
    if let Some(github) = &options.github {
        figment = figment
            .merge(("provisioning.github.api_base", github.clone()))
            .merge(("provisioning.github.organization", fake_github::ORG))
            .merge(("provisioning.github.team_slug", fake_github::TEAM))
            .merge(("provisioning.github.token", fake_github::TOKEN))
            .merge(("provisioning.github.check_interval_seconds", 1))
            .merge(("provisioning.github.retry_first_seconds", 1))
            .merge(("provisioning.github.retry_max_seconds", 2))
            .merge(("provisioning.github.timeout_seconds", 5));
    }
    figment = figment.merge(Toml::string(&options.extra_toml));
    if !options.oidc_discovery {
        figment = figment.merge(("auth.jwks_url", idp.jwks_url()));
    }
    if options.stripe_configured {
        figment = figment
            .merge(("stripe.secret_key", "sk_test_tollgate"))
            .merge((
                "stripe.webhook_secrets",
                vec![OLD_WEBHOOK_SECRET, WEBHOOK_SECRET],
            ));
    }
    let settings = Settings::extract(figment).expect("test configuration is valid");
    let pinned_now: Arc<Mutex<Option<DateTime<Utc>>>> = Arc::default();
    let app =
        Application::build_with_clock(settings.clone(), clock(&pinned_now)).expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let state = app.state.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        http: reqwest::Client::new(),
        stripe,
        idp,
        app: state,
        settings,
        database: db,
        pinned_now,
    }
}

/// A clock that answers the pinned time when one is set, else the real time.
fn clock(pinned: &Arc<Mutex<Option<DateTime<Utc>>>>) -> tollgate::state::Clock {
    let pinned = pinned.clone();
    Arc::new(move || pinned.lock().unwrap().unwrap_or_else(Utc::now))
}

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            // The writer lives as long as the test process.
            std::mem::forget(tollgate::telemetry::init(false));
        }
    });
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request sent")
    }

    /// Sends `method path` with a bearer token (and a JSON body) to the instance at `base`: the
    /// status and the body as JSON (`null` when it is not JSON).
    pub async fn send_to(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn user_token(&self, user_id: &str) -> String {
        self.idp.user_token(user_id)
    }

    pub async fn checkout(&self, token: &str, body: Value) -> reqwest::Response {
        self.post_json("/v1/checkout", Some(token), &body).await
    }

    pub async fn status(&self, token: &str) -> Value {
        let res = self.get("/v1/status", Some(token)).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn verify(&self, token: &str, session_id: &str) -> reqwest::Response {
        self.get(
            &format!("/v1/checkout/verify?session_id={session_id}"),
            Some(token),
        )
        .await
    }

    /// Starts a checkout and completes it on the fake Stripe (as paying does), without telling
    /// Tollgate: the user's token, the session id and the new subscription's id.
    pub async fn paid_checkout(
        &self,
        user_id: &str,
        plan: &str,
        interval: &str,
    ) -> (String, String, Option<String>) {
        let token = self.user_token(user_id);
        let res = self
            .checkout(
                &token,
                serde_json::json!({"plan": plan, "interval": interval}),
            )
            .await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        let session: Value = res.json().await.unwrap();
        let session_id = session["session_id"].as_str().unwrap().to_owned();
        let subscription_id = self.stripe.complete_checkout(&session_id);
        (token, session_id, subscription_id)
    }

    /// Subscribes `user_id` (checkout, payment, verify) and returns the subscription's id.
    pub async fn subscribed(&self, user_id: &str, plan: &str, interval: &str) -> String {
        let (_, status) = self.subscribe(user_id, plan, interval).await;
        status["subscription_id"]
            .as_str()
            .expect("a subscription")
            .to_owned()
    }

    /// Sends a correctly signed event and expects it to be acknowledged.
    pub async fn webhook_ok(&self, event: &Value) -> Value {
        let res = self.webhook(event).await;
        assert_eq!(res.status(), 200, "webhook {} refused", event["id"]);
        res.json().await.unwrap()
    }

    /// Checkout, complete it on the fake Stripe and verify: the user is then subscribed.
    pub async fn subscribe(&self, user_id: &str, plan: &str, interval: &str) -> (String, Value) {
        let (token, session_id, _) = self.paid_checkout(user_id, plan, interval).await;
        let res = self.verify(&token, &session_id).await;
        assert_eq!(res.status(), 200);
        (session_id, res.json().await.unwrap())
    }

    /// A second Tollgate on the same database, fake Stripe and identity provider (another
    /// replica); returns its base address.
    pub async fn another_instance(&self) -> String {
        let app = Application::build_with_clock(self.settings.clone(), clock(&self.pinned_now))
            .expect("second instance builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        address
    }

    /// Sends an event signed with `secret` at `timestamp` (now when `None`).
    pub async fn send_webhook(
        &self,
        event: &Value,
        secret: &str,
        timestamp: Option<i64>,
    ) -> reqwest::Response {
        self.send_webhook_to(&self.address, event, secret, timestamp)
            .await
    }

    /// Sends a correctly signed event to the instance at `base`.
    pub async fn webhook_to(&self, base: &str, event: &Value) -> reqwest::Response {
        let res = self
            .send_webhook_to(base, event, WEBHOOK_SECRET, None)
            .await;
        if res.status() == 200 {
            if let Some(id) = event["id"].as_str() {
                self.applied(id).await;
            }
        }
        res
    }

    async fn send_webhook_to(
        &self,
        base: &str,
        event: &Value,
        secret: &str,
        timestamp: Option<i64>,
    ) -> reqwest::Response {
        let body = event.to_string();
        let t = timestamp.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let header = format!("t={t},v1={}", sign(secret, t, &body));
        self.http
            .post(format!("{base}/v1/webhooks/stripe"))
            .header("Stripe-Signature", header)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// The events of `subject` (its key) that `GET /v1/events` lists, once it lists at least
    /// `n` (the sequencer places committed events within `events.poll_interval_ms`).
    pub async fn events_of(&self, subject: &str, n: usize) -> Vec<Value> {
        let token = self.idp.service_token("billing:read");
        let mut listed = Vec::new();
        for _ in 0..200 {
            let res = self
                .get(
                    &format!("/v1/events?{}&limit=100", subject_query(subject)),
                    Some(&token),
                )
                .await;
            assert_eq!(res.status(), 200);
            let page: Value = res.json().await.unwrap();
            listed = page["data"].as_array().unwrap().clone();
            if listed.len() >= n {
                return listed;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} events of {subject} listed: {listed:#?}");
    }

    pub fn database_url(&self) -> String {
        self.database.url.clone()
    }

    /// Pins the time every instance of this app sees (Stripe's fake keeps the real time).
    pub fn set_now(&self, now: DateTime<Utc>) {
        *self.pinned_now.lock().unwrap() = Some(now);
    }

    pub fn uses_postgres(&self) -> bool {
        self.app.db.backend() == tollgate::db::Backend::Postgres
    }

    /// Sends a correctly signed event; once it is stored (`200`), waits until the inbox's
    /// workers applied it or recorded a failed attempt of it, so that a test reads the state
    /// the event leads to.
    pub async fn webhook(&self, event: &Value) -> reqwest::Response {
        let res = self.send_webhook(event, WEBHOOK_SECRET, None).await;
        if res.status() == 200 {
            if let Some(id) = event["id"].as_str() {
                self.applied(id).await;
            }
        }
        res
    }

    /// Waits (up to 20 s) until the stored event `id` was applied or failed at least once.
    /// The worker drops what it wrote from this replica's snapshot cache just after its commit;
    /// reading through [`TestApp::db`] drops the cache too, so that the test's next read never
    /// falls in between.
    pub async fn applied(&self, id: &str) {
        for _ in 0..2000 {
            let id = id.to_owned();
            let status = self
                .db(move |conn| tollgate::db::events::status(conn, &id))
                .await;
            if status.is_some_and(|s| s.processed_at.is_some() || s.attempts > 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("webhook event {id} was not applied within 20 s");
    }

    /// Runs a query against the app's own database. What it writes counts as this replica's
    /// own write: the app's snapshot cache is emptied after it, as after the app's own writes.
    pub async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut tollgate::db::DbConnection) -> anyhow::Result<T> + Send + 'static,
    ) -> T {
        let out = self.app.db.run(f).await.unwrap();
        if let Some(cache) = self.app.db.snapshot_cache() {
            cache.invalidate_all();
        }
        out
    }

    pub async fn count(&self, table: &'static str) -> i64 {
        self.db(move |conn| {
            #[derive(diesel::QueryableByName)]
            struct Count {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let rows: Vec<Count> =
                diesel::sql_query(format!("SELECT COUNT(*) AS n FROM {table}")).load(conn)?;
            Ok(rows[0].n)
        })
        .await
    }
}

/// Stripe's scheme: HMAC-SHA256 over `{t}.{body}`, hex. Computed here independently of the
/// library the service uses.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An event envelope shaped like Stripe's, around `object`.
pub fn event(id: &str, event_type: &str, object: Value) -> Value {
    serde_json::json!({
        "id": id,
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
        "data": {"object": object},
    })
}

/// The `user_id`/`tenant_id` query that names the subject whose key is `key`
/// (`user:alice`, `tenant:acme`, `membership:acme:alice`).
/// A status or entitlement answer without `served_from`, which says where this one answer's
/// facts were read (the replica's cache or the database), for comparing answers.
pub fn without_source(mut answer: Value) -> Value {
    if let Some(object) = answer.as_object_mut() {
        object.remove("served_from");
    }
    answer
}

pub fn subject_query(key: &str) -> String {
    let subject = tollgate::billing::subject::Subject::parse_key(key).expect("a subject key");
    let mut parts = Vec::new();
    if let Some(user) = subject.user_id() {
        parts.push(format!("user_id={user}"));
    }
    if let Some(tenant) = subject.tenant_id() {
        parts.push(format!("tenant_id={tenant}"));
    }
    parts.join("&")
}

/// A fresh database for one test.
pub struct TestDatabase {
    pub url: String,
    admin: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    fn create() -> TestDatabase {
        match std::env::var("TOLLGATE_TEST_POSTGRES_URL") {
            Ok(server) if !server.is_empty() => {
                let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
                // Without TLS: replicas left running when the test binary exits still talk to
                // the database, and OpenSSL's clean-up at exit under a live TLS connection
                // aborts the process ("free(): invalid pointer") after every test passed.
                let server = server.trim_end_matches('/');
                let admin_url = format!("{server}/postgres?sslmode=disable");
                let mut conn = diesel::PgConnection::establish(&admin_url)
                    .expect("PostgreSQL reachable at TOLLGATE_TEST_POSTGRES_URL");
                diesel::sql_query(format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .unwrap();
                TestDatabase {
                    url: format!("{server}/{name}?sslmode=disable"),
                    admin: Some((admin_url, name)),
                    _dir: None,
                }
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
                TestDatabase {
                    url,
                    admin: None,
                    _dir: Some(dir),
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = &self.admin {
            if let Ok(mut conn) = diesel::PgConnection::establish(admin_url) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
    }
}
