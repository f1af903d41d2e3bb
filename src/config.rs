//! Typed configuration: `config/default.toml`, then the seeds' plain environment names
//! (`STRIPE_SECRET_KEY`, `SAAS`, `DATABASE_URL`, ...), then `TOLLGATE_*` variables
//! (`TOLLGATE_SERVER__PORT=9000`). Validated once at start-up; secrets are wrapped so that
//! they cannot be printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use std::sync::Arc;

use crate::billing::catalog::{
    Catalog, Interval, Plan, PlanKind, Price, Quota, QuotaLimit, Unlimited,
};

/// The environment names the seed products already use, and the key each one sets.
const PLAIN_ENV_NAMES: &[(&str, &str)] = &[
    ("SAAS", "saas"),
    ("DATABASE_URL", "database.url"),
    ("STRIPE_SECRET_KEY", "stripe.secret_key"),
    ("STRIPE_PUBLISHABLE_KEY", "stripe.publishable_key"),
    ("STRIPE_WEBHOOK_SECRET", "stripe.webhook_secrets"),
    ("STRIPE_ALLOWED_PRICE_IDS", "stripe.allowed_price_ids"),
    ("STRIPE_API_BASE", "stripe.api_base"),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Master switch: `false` means every access check allows and nothing asks Stripe.
    pub saas: bool,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub stripe: StripeSettings,
    pub checkout: CheckoutSettings,
    pub billing: BillingSettings,
    pub reconcile: ReconcileSettings,
    /// The webhook inbox (its workers and their retries).
    pub webhooks: WebhookSettings,
    pub events: EventSettings,
    /// What a purchase provisions outside Tollgate (docs/LICENSES.md).
    pub provisioning: ProvisioningSettings,
    pub auth: AuthSettings,
    #[serde(default)]
    pub exemptions: ExemptionSettings,
    pub plans: Vec<PlanSettings>,
    /// Local development aids; never on in production.
    #[serde(default)]
    pub dev: DevSettings,
    /// Built from `plans` by validation (never read from the files).
    #[serde(skip)]
    catalog: Option<Arc<Catalog>>,
    /// Where the settings came from (for the start-up line).
    #[serde(skip)]
    pub source: ConfigSource,
    /// What loading left out or noticed, for the log once it is set up.
    #[serde(skip)]
    pub notices: Vec<String>,
    /// Every key with the value in force (defaults, file and environment merged), for
    /// `check-config --print`; secrets are redacted when it is printed ([`Settings::effective_toml`]).
    #[serde(skip)]
    effective: Option<Effective>,
}

/// The merged configuration tree, secrets and all: never shown by `Debug`.
#[derive(Clone)]
struct Effective(figment::value::Value);

impl std::fmt::Debug for Effective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Effective(not shown: it holds secrets; see Settings::effective_toml)")
    }
}

/// The configuration compiled into the binary (`config/default.toml`): every key documented;
/// a file names only what it changes.
pub const BUILTIN_DEFAULTS: &str = include_str!("../config/default.toml");

/// Read when no file is named (`--config`, `TOLLGATE_CONFIG`) and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/tollgate/tollgate.toml";

/// Top-level keys that are not sections (`TOLLGATE_SAAS`).
const TOP_LEVEL_KEYS: &[&str] = &["saas"];

/// Where a configuration came from, besides the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// The built-in defaults (and the environment) only.
    #[default]
    BuiltIn,
    /// A file merged over the built-in defaults.
    File(std::path::PathBuf),
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::BuiltIn => f.write_str("built-in defaults"),
            ConfigSource::File(path) => write!(f, "{} over the built-in defaults", path.display()),
        }
    }
}

/// Local development: tokens minted by `tollgate dev-token`, so that the API can be called
/// without an identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSettings {
    /// Accept tokens minted by `tollgate dev-token` (beside the identity provider's). Refused
    /// together with a live Stripe key.
    #[serde(default)]
    pub tokens: bool,
    /// The key that signs and verifies them: created (random, readable by its owner only) by
    /// whichever of the server and `tollgate dev-token` needs it first.
    #[serde(default = "DevSettings::default_key_file")]
    pub key_file: std::path::PathBuf,
}

impl DevSettings {
    fn default_key_file() -> std::path::PathBuf {
        "data/dev-token.key".into()
    }
}

impl Default for DevSettings {
    fn default() -> Self {
        DevSettings {
            tokens: false,
            key_file: Self::default_key_file(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Emit logs as JSON lines (for log shippers) instead of human-readable text.
    #[serde(default)]
    pub json_logs: bool,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Origins whose browser apps may call Tollgate (CORS). Unset: the checkout's allowed
    /// redirect origins (the product's own front ends); `[]`: no cross-origin calls.
    #[serde(default, deserialize_with = "optional_string_list")]
    pub cors_allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    pub url: SecretString,
    pub max_connections: u32,
    pub connect_timeout_seconds: u64,
    /// Parsed subject snapshots each replica keeps (PostgreSQL only; 0 turns the cache off).
    #[serde(default = "default_snapshot_cache_entries")]
    pub snapshot_cache_entries: usize,
}

fn default_snapshot_cache_entries() -> usize {
    100_000
}

impl DatabaseSettings {
    /// The URL without its password, to be logged.
    pub fn display_url(&self) -> String {
        let url = self.url.expose_secret();
        match url::Url::parse(url) {
            Ok(mut parsed) if parsed.password().is_some() => {
                let _ = parsed.set_password(Some("***"));
                parsed.to_string()
            }
            Ok(_) => url.to_owned(),
            Err(_) => "(not a URL)".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeSettings {
    #[serde(default, deserialize_with = "empty_secret_is_none")]
    pub secret_key: Option<SecretString>,
    #[serde(default)]
    pub publishable_key: Option<String>,
    /// Several secrets (comma-separated in `STRIPE_WEBHOOK_SECRET`) allow rotation.
    #[serde(default, deserialize_with = "secret_list")]
    pub webhook_secrets: Vec<SecretString>,
    /// When non-empty, a checkout for any other price is refused.
    #[serde(default, deserialize_with = "string_list")]
    pub allowed_price_ids: Vec<String>,
    /// Base URL of the Stripe API; tests and local runs point it at a fake or stripe-mock.
    pub api_base: String,
    pub timeout_seconds: u64,
    /// Requests per second this replica sends to Stripe at most (each page, each retry).
    pub requests_per_second: f64,
    /// The part of that budget background work (the webhook inbox, remedies, reconciliation)
    /// may use; the rest stays free for what a user waits for.
    pub background_share: f64,
    /// The part of the budget reconciliation may use (within the background share).
    pub reconcile_share: f64,
}

impl StripeSettings {
    pub fn is_configured(&self) -> bool {
        self.secret_key.is_some()
    }

    /// A live-mode key is set (`sk_live_` or `rk_live_`): real money moves.
    pub fn is_live(&self) -> bool {
        self.secret_key.as_ref().is_some_and(|k| {
            let k = k.expose_secret();
            k.starts_with("sk_live_") || k.starts_with("rk_live_")
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutSettings {
    /// Origins (scheme://host[:port]) that success, cancel and return URLs may point to.
    #[serde(deserialize_with = "string_list")]
    pub allowed_redirect_origins: Vec<String>,
    pub default_success_url: String,
    pub default_cancel_url: String,
    pub default_portal_return_url: String,
    /// Checkout sessions one subject may create per minute (429 beyond).
    pub rate_limit_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingSettings {
    /// Id of the plan everyone holds without paying.
    pub free_plan: String,
    /// Access continues this long after the first failed payment of a period.
    pub grace_period_hours: u32,
    /// Trial length for plans that do not set `trial_days`.
    pub default_trial_days: u32,
    /// Who subscriptions are for unless a plan says otherwise: `user`, `tenant` (all members
    /// share one) or `membership` (one user in one tenant).
    #[serde(default)]
    pub scope: crate::billing::scope::Scope,
    /// Whether a subscription keeps its plan while its payment collection is paused on Stripe
    /// ("pause payment collection"; the status stays `active`). Off: no paid access during
    /// the pause, reason `paused`.
    #[serde(default)]
    pub access_while_collection_paused: bool,
    /// How an upgrade through `POST /v1/subscription/change` is billed: `always_invoice`
    /// (charged now; the plan is granted once that invoice is paid), `create_prorations` (on
    /// the next invoice; granted at once) or `none`.
    #[serde(default = "upgrade_proration")]
    pub upgrade_proration: crate::billing::change::Proration,
    /// How a downgrade taking effect at once (`downgrade_at = "now"`) is billed:
    /// `create_prorations` (the unused part credited on the next invoice), `always_invoice`
    /// (credited now) or `none`.
    #[serde(default = "downgrade_proration")]
    pub downgrade_proration: crate::billing::change::Proration,
    /// When a downgrade through `POST /v1/subscription/change` takes effect: `period_end` (the
    /// default: the paid plan stays until the period ends, then Stripe moves the subscription
    /// to the lower one through a subscription schedule, billing nothing in between) or `now`.
    #[serde(default)]
    pub downgrade_at: crate::billing::change::DowngradeAt,
    /// A partial refund of more than this percentage of a payment takes back what it paid for
    /// (a lifetime purchase, a subscription's period), as a full refund always does. 100 (the
    /// default): partial refunds take back nothing; 0: any partial refund does.
    #[serde(default = "partial_refund_revokes_over_percent")]
    pub partial_refund_revokes_over_percent: u8,
    /// A second subscription standing beside an older one of the same subject (two checkouts
    /// paid at once): `flag` it (audit, metric, `subscription.duplicate`), or `cancel_and_refund`
    /// it as well, at once on Stripe.
    #[serde(default)]
    pub second_subscription: crate::billing::mirror::SecondSubscription,
}

fn partial_refund_revokes_over_percent() -> u8 {
    crate::billing::payment::RefundPolicy::default().partial_revokes_over_percent
}

fn upgrade_proration() -> crate::billing::change::Proration {
    crate::billing::change::ChangeTerms::default().upgrade
}

fn downgrade_proration() -> crate::billing::change::Proration {
    crate::billing::change::ChangeTerms::default().downgrade
}

/// The webhook inbox: stored events are applied by workers in every replica.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Customers one replica syncs at a time.
    pub concurrency: usize,
    /// Pending events a worker takes at a time.
    pub claim_batch: i64,
    /// The first retry's delay after a failed attempt; it doubles up to `retry_max_seconds`.
    pub retry_initial_ms: u64,
    pub retry_max_seconds: u64,
    /// How often an idle worker looks for events other replicas stored.
    pub poll_interval_ms: u64,
    /// How long a worker's claim on events lasts (a dead worker's events are taken after it).
    pub lease_seconds: u64,
    /// How long a stored event waits before it is due, so that the events Stripe sends
    /// together (one action makes several) are applied by one sync; 0: due at once.
    pub coalesce_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Every this many seconds one replica re-reads every customer from Stripe; 0: never.
    pub interval_seconds: u64,
}

/// Outbound events (docs/EVENTS.md): where they are delivered and how delivery is retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// A delivery that has not succeeded this many hours after its event was created has failed
    /// (its endpoint is reported failing); the event stays listed in GET /v1/events.
    pub retry_window_hours: u32,
    /// The wait before the first retry, in milliseconds; each further retry doubles it (with
    /// jitter), up to `retry_max_seconds`.
    pub retry_first_ms: u64,
    pub retry_max_seconds: u64,
    /// How long an endpoint may take to answer a delivery.
    pub timeout_seconds: u64,
    /// How often each replica looks for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Per quota key, the percents of its allowance whose crossing is told
    /// (`quota.threshold_reached`, once per window), e.g. `{ generations = [80, 100] }`.
    #[serde(default)]
    pub quota_thresholds: BTreeMap<String, Vec<u8>>,
    #[serde(default)]
    pub endpoints: Vec<EndpointSettings>,
}

/// Provisioners a plan may list in `provision`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisioningSettings {
    pub github: GithubSettings,
}

/// The GitHub provisioner: a license's buyer is invited to `organization` with `team_slug`
/// (the team that has read access to the private repository).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubSettings {
    /// GitHub's REST API (tests point it at a fake).
    pub api_base: String,
    /// The organization's login; empty: read from the variable `organization_env` names.
    pub organization: String,
    pub organization_env: String,
    /// The team's slug; empty: read from the variable `team_slug_env` names.
    pub team_slug: String,
    pub team_slug_env: String,
    /// The environment variable holding the token (a classic PAT with `admin:org`, or a
    /// fine-grained token with the organization's Members read and write permission).
    pub token_env: String,
    /// Or the token itself.
    #[serde(default)]
    pub token: Option<SecretString>,
    /// How long one GitHub call may take.
    pub timeout_seconds: u64,
    /// How often an invitation is checked for acceptance.
    pub check_interval_seconds: u64,
    /// The wait after a failed call; each further failure doubles it up to `retry_max_seconds`
    /// (GitHub's `Retry-After` and rate-limit reset are waited out in any case).
    pub retry_first_seconds: u64,
    pub retry_max_seconds: u64,
    /// GitHub usernames one buyer may submit per hour.
    pub submissions_per_hour: u32,
}

impl GithubSettings {
    fn named(value: &str, env: &str) -> Option<String> {
        let value = value.trim();
        if !value.is_empty() {
            return Some(value.to_owned());
        }
        (!env.is_empty())
            .then(|| std::env::var(env).ok())
            .flatten()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn organization(&self) -> Option<String> {
        Self::named(&self.organization, &self.organization_env)
    }

    pub fn team_slug(&self) -> Option<String> {
        Self::named(&self.team_slug, &self.team_slug_env)
    }

    pub fn token(&self) -> Option<SecretString> {
        match &self.token {
            Some(token) if !token.expose_secret().trim().is_empty() => Some(token.clone()),
            _ => Self::named("", &self.token_env).map(SecretString::from),
        }
    }

    /// What keeps the provisioner from working, for a configuration whose plans list it.
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, text: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                problem: text,
            })
        };
        let login = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        match self.organization() {
            None => problem(
                "provisioning.github.organization",
                format!(
                    "is not set and neither is {}: name the GitHub organization that invites buyers",
                    if self.organization_env.is_empty() { "organization_env" } else { &self.organization_env }
                ),
            ),
            Some(org) if !login(&org) => problem(
                "provisioning.github.organization",
                format!("`{org}` is not an organization login"),
            ),
            Some(_) => {}
        }
        match self.team_slug() {
            None => problem(
                "provisioning.github.team_slug",
                format!(
                    "is not set and neither is {}: name the team (its slug) with read access to the repository",
                    if self.team_slug_env.is_empty() { "team_slug_env" } else { &self.team_slug_env }
                ),
            ),
            Some(slug) if !login(&slug) => problem(
                "provisioning.github.team_slug",
                format!("`{slug}` is not a team slug"),
            ),
            Some(_) => {}
        }
        if self.token().is_none() {
            problem(
                "provisioning.github.token_env",
                if self.token_env.is_empty() {
                    "is empty: name the environment variable holding the GitHub token".into()
                } else {
                    format!(
                        "{} is not set: it must hold a GitHub token with admin:org (docs/LICENSES.md)",
                        self.token_env
                    )
                },
            );
        }
        if url::Url::parse(&self.api_base)
            .map(|u| !matches!(u.scheme(), "https" | "http"))
            .unwrap_or(true)
        {
            problem(
                "provisioning.github.api_base",
                format!("`{}` is not a URL (https://api.github.com)", self.api_base),
            );
        }
        for (key, value) in [
            ("provisioning.github.timeout_seconds", self.timeout_seconds),
            (
                "provisioning.github.check_interval_seconds",
                self.check_interval_seconds,
            ),
            (
                "provisioning.github.retry_first_seconds",
                self.retry_first_seconds,
            ),
            (
                "provisioning.github.retry_max_seconds",
                self.retry_max_seconds,
            ),
            (
                "provisioning.github.submissions_per_hour",
                u64::from(self.submissions_per_hour),
            ),
        ] {
            if value == 0 {
                problem(key, "must be at least 1".into());
            }
        }
        problems
    }
}

/// One receiver of outbound events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// A stable name (letters, digits, `_`, `-`): deliveries are stored under it.
    pub name: String,
    pub url: String,
    /// The signing secret, `whsec_` + base64 of 24 to 64 random bytes.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Or the name of an environment variable holding it.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The event types it wants (`entitlements.changed`, ...); absent or `["*"]`: all.
    #[serde(default)]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

impl EndpointSettings {
    /// The signing secret, from the file or the environment variable it names.
    pub fn secret(&self) -> Option<SecretString> {
        match (&self.secret, &self.secret_env) {
            (Some(secret), _) if !secret.expose_secret().is_empty() => Some(secret.clone()),
            (_, Some(name)) => std::env::var(name)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
            _ => None,
        }
    }

    /// The types it wants; `None`: all.
    pub fn route(&self) -> crate::billing::events::Route {
        use crate::billing::events::EventType;
        let types = self
            .types
            .as_ref()
            .filter(|t| !t.iter().any(|t| t == "*"))
            .map(|t| t.iter().filter_map(|t| EventType::parse(t)).collect());
        crate::billing::events::Route {
            endpoint: self.name.clone(),
            types,
        }
    }
}

impl EventSettings {
    pub fn routes(&self) -> Vec<crate::billing::events::Route> {
        self.endpoints.iter().map(EndpointSettings::route).collect()
    }

    /// The thresholds of each quota, as the usage path passes them to the database.
    pub fn thresholds(&self) -> std::collections::HashMap<String, Vec<i32>> {
        self.quota_thresholds
            .iter()
            .map(|(quota, percents)| {
                let mut p: Vec<i32> = percents.iter().map(|p| i32::from(*p)).collect();
                p.sort_unstable();
                p.dedup();
                (quota.clone(), p)
            })
            .collect()
    }

    pub fn retry_policy(&self) -> crate::billing::events::RetryPolicy {
        crate::billing::events::RetryPolicy {
            first: Duration::from_millis(self.retry_first_ms),
            max: Duration::from_secs(self.retry_max_seconds),
            window: Duration::from_secs(u64::from(self.retry_window_hours) * 3600),
        }
    }

    fn problems(&self) -> Vec<ConfigProblem> {
        use crate::billing::events::EventType;
        let mut problems = Vec::new();
        let mut problem =
            |key: String, text: String| problems.push(ConfigProblem { key, problem: text });
        if self.retry_window_hours == 0 {
            problem(
                "events.retry_window_hours".into(),
                "must be at least 1".into(),
            );
        }
        if self.retry_first_ms == 0 {
            problem("events.retry_first_ms".into(), "must be at least 1".into());
        }
        if self.retry_max_seconds == 0 {
            problem(
                "events.retry_max_seconds".into(),
                "must be at least 1".into(),
            );
        }
        if self.timeout_seconds == 0 {
            problem("events.timeout_seconds".into(), "must be at least 1".into());
        }
        if self.poll_interval_ms == 0 {
            problem(
                "events.poll_interval_ms".into(),
                "must be at least 1".into(),
            );
        }
        for (quota, percents) in &self.quota_thresholds {
            let key = format!("events.quota_thresholds.{quota}");
            if percents.is_empty() || percents.iter().any(|p| !(1..=100).contains(p)) {
                problem(
                    key,
                    "must list percents of the allowance, 1 to 100 (e.g. [80, 100])".into(),
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("events.endpoints[{i}] ({})", e.name);
            let valid_name = !e.name.is_empty()
                && e.name.len() <= 64
                && e.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid_name {
                problem(
                    format!("{key}.name"),
                    "must be 1 to 64 letters, digits, `_` or `-`".into(),
                );
            } else if !names.insert(e.name.clone()) {
                problem(
                    format!("{key}.name"),
                    format!("`{}` names two endpoints", e.name),
                );
            }
            match url::Url::parse(&e.url) {
                Ok(u) if u.scheme() == "https" => {}
                Ok(u) if u.scheme() == "http" && is_loopback(&u) => {}
                Ok(u) if u.scheme() == "http" => problem(
                    format!("{key}.url"),
                    format!("`{}` is plain http: events carry billing state, use https (http only to localhost)", e.url),
                ),
                _ => problem(
                    format!("{key}.url"),
                    format!("`{}` is not an https:// URL", e.url),
                ),
            }
            match (&e.secret, &e.secret_env, e.secret()) {
                (Some(_), Some(_), _) => problem(
                    format!("{key}.secret"),
                    "set secret or secret_env, not both".into(),
                ),
                (_, Some(name), None) => problem(
                    format!("{key}.secret_env"),
                    format!("the environment variable {name} is not set (it holds the endpoint's signing secret, whsec_...)"),
                ),
                (_, None, None) => problem(
                    format!("{key}.secret"),
                    "no signing secret: set secret (whsec_...) or secret_env (the variable that holds it)".into(),
                ),
                (_, _, Some(secret)) => {
                    if let Some(text) = signing_secret_problem(secret.expose_secret()) {
                        problem(format!("{key}.secret"), text);
                    }
                }
            }
            for t in e.types.iter().flatten() {
                if t != "*" && EventType::parse(t).is_none() {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    problem(
                        format!("{key}.types"),
                        format!(
                            "`{t}` is no event type (one of {}, or \"*\")",
                            known.join(", ")
                        ),
                    );
                }
            }
            if e.types.as_ref().is_some_and(Vec::is_empty) {
                problem(
                    format!("{key}.types"),
                    "is empty: list the types it wants, or leave it out for all".into(),
                );
            }
        }
        problems
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// What is wrong with a Standard Webhooks signing secret (never its value).
fn signing_secret_problem(secret: &str) -> Option<String> {
    use base64::Engine;
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Some("(not shown) must start with whsec_ (generate one: echo whsec_$(openssl rand -base64 32))".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if (24..=64).contains(&key.len()) => None,
        Ok(key) => Some(format!(
            "(not shown) holds {} bytes; Standard Webhooks secrets are 24 to 64 random bytes (echo whsec_$(openssl rand -base64 32))",
            key.len()
        )),
        Err(_) => Some("(not shown) is not whsec_ followed by base64".into()),
    }
}

/// The issuer config/default.toml ships with: nothing runs there, so keys fetched from it never
/// come (start-up warns; see [`AuthSettings::issuer_is_placeholder`]).
pub const PLACEHOLDER_ISSUER: &str = "http://localhost:9999/";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Expected `iss`; also the base of OIDC discovery when `jwks_url` is not set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Expected `aud` (any of them).
    #[serde(default, deserialize_with = "string_list")]
    pub audience: Vec<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Optional HS256 shared secret (e.g. older Supabase projects).
    #[serde(default, deserialize_with = "empty_secret_is_none")]
    pub hs256_secret: Option<SecretString>,
    pub leeway_seconds: u64,
    /// A token with an unknown `kid` re-fetches the JWKS at most this often.
    pub jwks_refetch_min_seconds: u64,
    pub jwks_cache_seconds: u64,
    pub claims: ClaimSettings,
    pub scopes: ScopeSettings,
}

impl AuthSettings {
    /// Keys would be fetched from the shipped placeholder issuer: no JWKS URL, no HS256 secret,
    /// and the issuer left at [`PLACEHOLDER_ISSUER`]. Every authenticated call then fails.
    pub fn issuer_is_placeholder(&self) -> bool {
        self.jwks_url.is_none()
            && self.hs256_secret.is_none()
            && self.issuer.as_deref() == Some(PLACEHOLDER_ISSUER)
    }
}

/// Where each fact lives in the token: a claim name or a JSON pointer (`/app_metadata/role`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSettings {
    pub subject: String,
    pub email: String,
    pub tenant: String,
    pub roles: String,
    pub scopes: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSettings {
    pub read: String,
    pub write: String,
    pub admin: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptionSettings {
    /// Callers holding any of these roles or groups always have access.
    #[serde(default, deserialize_with = "string_list")]
    pub roles: Vec<String>,
    /// Subjects (identity-provider user ids) that always have access.
    #[serde(default, deserialize_with = "string_list")]
    pub subjects: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub rank: i32,
    #[serde(default)]
    pub kind: PlanKind,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub quotas: BTreeMap<String, QuotaSettings>,
    /// Overrides `billing.scope` for this plan.
    #[serde(default)]
    pub scope: Option<crate::billing::scope::Scope>,
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// `false`: the trial starts without a card; without one at its end Stripe pauses the
    /// subscription (no access) until the customer adds one.
    #[serde(default = "yes")]
    pub trial_requires_card: bool,
    #[serde(default)]
    pub prices: Vec<PriceSettings>,
    /// What a purchase of the plan provisions outside Tollgate: `["github"]` gives each buyer a
    /// license to a GitHub organization team (a `lifetime` plan bought by a user).
    #[serde(default)]
    pub provision: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// `"unlimited"` or a number.
    pub limit: QuotaLimitSetting,
    pub period: crate::billing::catalog::QuotaPeriod,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QuotaLimitSetting {
    Count(u64),
    Word(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSettings {
    pub interval: Interval,
    /// The Stripe price id (`price_...`).
    #[serde(default)]
    pub price_id: Option<String>,
    /// Name of an environment variable holding the price id (e.g. `STRIPE_MONTHLY_PRICE_ID`);
    /// read when `price_id` is not set, so that seed products keep their variable names.
    #[serde(default)]
    pub price_id_env: Option<String>,
    /// Display amount in the currency's minor unit (cents).
    pub amount: i64,
    pub currency: String,
}

/// A configuration problem, naming the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigProblem {
    pub key: String,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// figment's errors, with any secret's value left out (see [`describe_load_error`]).
    #[error("could not read configuration: {0}")]
    Load(String),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

impl Settings {
    /// The origins CORS admits, as browsers send them: `server.cors_allowed_origins`, or else
    /// the origins of `checkout.allowed_redirect_origins`.
    pub fn cors_origins(&self) -> Vec<String> {
        match &self.server.cors_allowed_origins {
            Some(origins) => origins.clone(),
            None => self
                .checkout
                .allowed_redirect_origins
                .iter()
                .filter_map(|o| crate::billing::redirect::parse_origin(o))
                .collect(),
        }
    }

    /// The configuration in force as TOML (defaults, file and environment merged), with every
    /// secret redacted: a Stripe key keeps its mode prefix (`sk_live_`), the database URL loses
    /// its password, and webhook and HS256 secrets show only that they are set.
    pub fn effective_toml(&self) -> anyhow::Result<String> {
        use figment::value::Value;
        let mut root =
            self.effective.clone().map(|e| e.0).ok_or_else(|| {
                anyhow::anyhow!("these settings were not loaded from configuration")
            })?;
        let redacted = |kept: &str| Value::from(format!("{kept}... (redacted)"));
        let mut set = |path: &str, value: Option<Value>| {
            let Value::Dict(_, dict) = &mut root else {
                return;
            };
            let (section, key) = path.split_once('.').unwrap_or(("", path));
            if let Some(Value::Dict(_, section)) = dict.get_mut(section) {
                match value {
                    Some(v) => {
                        section.insert(key.to_owned(), v);
                    }
                    None => {
                        section.remove(key);
                    }
                }
            }
        };
        set(
            "database.url",
            Some(Value::from(self.database.display_url())),
        );
        set(
            "stripe.secret_key",
            self.stripe.secret_key.as_ref().map(|k| {
                let k = k.expose_secret();
                let prefix = ["sk_live_", "sk_test_", "rk_live_", "rk_test_"]
                    .into_iter()
                    .find(|p| k.starts_with(p))
                    .unwrap_or("");
                redacted(prefix)
            }),
        );
        set(
            "stripe.webhook_secrets",
            Some(Value::from(
                self.stripe
                    .webhook_secrets
                    .iter()
                    .map(|_| redacted("whsec_"))
                    .collect::<Vec<_>>(),
            )),
        );
        set(
            "auth.hs256_secret",
            self.auth.hs256_secret.as_ref().map(|_| redacted("")),
        );
        // The GitHub provisioner's token, when the file holds it (not its variable's name).
        if let Value::Dict(_, dict) = &mut root {
            if let Some(Value::Dict(_, provisioning)) = dict.get_mut("provisioning") {
                if let Some(Value::Dict(_, github)) = provisioning.get_mut("github") {
                    if github.contains_key("token") {
                        github.insert("token".into(), redacted(""));
                    }
                }
            }
        }
        // Each events endpoint's signing secret.
        if let Value::Dict(_, dict) = &mut root {
            if let Some(Value::Dict(_, events)) = dict.get_mut("events") {
                if let Some(Value::Array(_, endpoints)) = events.get_mut("endpoints") {
                    for endpoint in endpoints {
                        if let Value::Dict(_, endpoint) = endpoint {
                            if endpoint.contains_key("secret") {
                                endpoint.insert("secret".into(), redacted("whsec_"));
                            }
                        }
                    }
                }
            }
        }
        Ok(toml::to_string_pretty(&root)?)
    }

    /// Loads the built-in defaults ([`BUILTIN_DEFAULTS`]), the file (`path`, or else
    /// [`SYSTEM_CONFIG`] when it exists) merged over them, then the plain environment names,
    /// then `TOLLGATE_*` variables. A file needs only the keys it changes (a list, such as
    /// `plans`, replaces the default's whole list).
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let (figment, source) = Self::files(path)?;
        let mut settings = Self::load_from(figment)?;
        settings.source = source;
        Ok(settings)
    }

    /// One section (`database`, `server`) from the same layers as [`Settings::load`], without
    /// reading or validating the rest: what `migrate` and `healthcheck` need.
    pub fn load_section<T: serde::de::DeserializeOwned>(
        path: Option<&Path>,
        section: &str,
    ) -> Result<T, ConfigError> {
        let (figment, _) = Self::files(path)?;
        let (figment, _) = Self::with_environment(figment);
        figment.extract_inner(section).map_err(describe_load_error)
    }

    /// The built-in defaults with the file merged over them.
    fn files(path: Option<&Path>) -> Result<(Figment, ConfigSource), ConfigError> {
        let system = Path::new(SYSTEM_CONFIG);
        let file = path.or_else(|| system.exists().then_some(system));
        let mut figment = Figment::new().merge(Toml::string(BUILTIN_DEFAULTS));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Load(format!(
                    "the configuration file {} does not exist (--config or TOLLGATE_CONFIG)",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        let source = match file {
            Some(file) => ConfigSource::File(file.to_owned()),
            None => ConfigSource::BuiltIn,
        };
        Ok((figment, source))
    }

    /// Layers the environment over `base` and validates the result.
    pub fn load_from(base: Figment) -> Result<Settings, ConfigError> {
        let (figment, ignored) = Self::with_environment(base);
        let mut settings = Self::extract(figment)?;
        settings.notices.extend(ignored.into_iter().map(|name| {
            format!("ignored the environment variable {name}: it names no setting (settings are TOLLGATE_<SECTION>__<KEY>, e.g. TOLLGATE_SERVER__PORT)")
        }));
        Ok(settings)
    }

    /// `base` with the environment layered over it, and the `TOLLGATE_` names left out.
    fn with_environment(base: Figment) -> (Figment, Vec<String>) {
        let plain = Env::raw()
            .filter(|k| {
                PLAIN_ENV_NAMES
                    .iter()
                    .any(|(name, _)| k.as_str().eq_ignore_ascii_case(name))
            })
            .map(|k| {
                let key = PLAIN_ENV_NAMES
                    .iter()
                    .find(|(name, _)| k.as_str().eq_ignore_ascii_case(name))
                    .map(|(_, key)| *key)
                    .unwrap_or_default();
                key.into()
            });
        // TOLLGATE_CONFIG names the file and TOLLGATE_TEST_* belong to the test suite. A name
        // without a section (`__`) that is no top-level key is not meant for Tollgate:
        // Kubernetes sets TOLLGATE_PORT=tcp://... for a Service named tollgate. It is ignored
        // with a notice rather than refusing to start.
        let reserved = |k: &str| {
            let k = k.to_ascii_lowercase();
            k == "config" || k.starts_with("test_")
        };
        let is_setting = move |k: &str| {
            !reserved(k)
                && (k.contains("__") || TOP_LEVEL_KEYS.contains(&k.to_ascii_lowercase().as_str()))
        };
        let ignored: Vec<String> = Env::prefixed("TOLLGATE_")
            .iter()
            .map(|(k, _)| k.into_string())
            .filter(|k| !reserved(k) && !is_setting(k))
            .map(|k| format!("TOLLGATE_{}", k.to_ascii_uppercase()))
            .collect();
        let prefixed = Env::prefixed("TOLLGATE_")
            .filter(move |k| is_setting(k.as_str()))
            .split("__");
        // Secrets are taken exactly as written: figment would read `007` as the number 7.
        let raw = |env: Env| {
            env.iter()
                .filter_map(|(key, value)| {
                    let secret = SECRET_KEYS
                        .iter()
                        .find(|k| key.as_str().eq_ignore_ascii_case(k))?;
                    Some((*secret, value))
                })
                .fold(Figment::new(), |f, (key, value)| f.merge((key, value)))
        };
        let figment = base
            .merge(plain.clone())
            .merge(raw(plain))
            .merge(prefixed.clone())
            .merge(raw(prefixed));
        (figment, ignored)
    }

    /// Extracts and validates exactly what `figment` holds (no environment layering).
    pub fn extract(figment: Figment) -> Result<Settings, ConfigError> {
        let mut settings: Settings = figment.extract().map_err(describe_load_error)?;
        settings.effective = figment
            .extract::<figment::value::Value>()
            .ok()
            .map(Effective);
        settings.resolve_price_env();
        let (catalog, notices) = settings.validate()?;
        settings.catalog = Some(Arc::new(catalog));
        settings.notices.extend(notices);
        Ok(settings)
    }

    fn resolve_price_env(&mut self) {
        for plan in &mut self.plans {
            for price in &mut plan.prices {
                if price.price_id.as_deref().is_none_or(str::is_empty) {
                    price.price_id = price
                        .price_id_env
                        .as_deref()
                        .and_then(|name| std::env::var(name).ok())
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| v.trim().to_owned());
                }
            }
        }
    }

    /// The catalog, and what is allowed but worth a warning.
    fn validate(&self) -> Result<(Catalog, Vec<String>), ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, text: String| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                problem: text,
            })
        };

        let db_url = self.database.url.expose_secret();
        if !(db_url.starts_with("sqlite:")
            || db_url.starts_with("postgres://")
            || db_url.starts_with("postgresql://"))
        {
            problem(
                "database.url",
                "must start with sqlite://, postgres:// or postgresql:// (set DATABASE_URL)".into(),
            );
        }
        if let Some(problem_text) = database_url_problem(db_url) {
            problem("database.url", problem_text);
        }
        if self.database.max_connections == 0 {
            problem("database.max_connections", "must be at least 1".into());
        }
        for (key, value) in [
            ("webhooks.concurrency", self.webhooks.concurrency as u64),
            (
                "webhooks.claim_batch",
                self.webhooks.claim_batch.max(0) as u64,
            ),
            ("webhooks.retry_initial_ms", self.webhooks.retry_initial_ms),
            (
                "webhooks.retry_max_seconds",
                self.webhooks.retry_max_seconds,
            ),
            ("webhooks.poll_interval_ms", self.webhooks.poll_interval_ms),
            ("webhooks.lease_seconds", self.webhooks.lease_seconds),
        ] {
            if value == 0 {
                problem(key, "must be at least 1".into());
            }
        }
        if self.webhooks.coalesce_ms > 60_000 {
            problem(
                "webhooks.coalesce_ms",
                "must be at most 60000 (events wait this long before they are applied)".into(),
            );
        }
        if self.stripe.requests_per_second.is_nan() || self.stripe.requests_per_second < 1.0 {
            problem(
                "stripe.requests_per_second",
                "must be at least 1 (Stripe's live-mode limit is about 100 per second)".into(),
            );
        }
        for (key, share) in [
            ("stripe.background_share", self.stripe.background_share),
            ("stripe.reconcile_share", self.stripe.reconcile_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                problem(key, format!("must be more than 0 and at most 1 (a part of stripe.requests_per_second), not {share}"));
            }
        }
        if url::Url::parse(&self.stripe.api_base).is_err() {
            problem(
                "stripe.api_base",
                format!(
                    "`{}` is not a URL (e.g. https://api.stripe.com/)",
                    self.stripe.api_base
                ),
            );
        }
        if let Some(key) = &self.stripe.secret_key {
            let key = key.expose_secret();
            if !(key.starts_with("sk_") || key.starts_with("rk_")) {
                problem("stripe.secret_key", "must start with sk_ or rk_ (set STRIPE_SECRET_KEY to the secret key from Developers > API keys)".into());
            }
            if let Some(pk) = self
                .stripe
                .publishable_key
                .as_deref()
                .filter(|pk| !pk.is_empty())
            {
                let live = key.starts_with("sk_live_") || key.starts_with("rk_live_");
                if (live && pk.starts_with("pk_test_")) || (!live && pk.starts_with("pk_live_")) {
                    problem(
                        "stripe.publishable_key",
                        format!(
                            "is a {} key but stripe.secret_key is a {} key: both must come from the same mode (Developers > API keys)",
                            if live { "test" } else { "live" },
                            if live { "live" } else { "test" },
                        ),
                    );
                }
            }
            if self.stripe.webhook_secrets.is_empty() {
                problem(
                    "stripe.webhook_secrets",
                    "is empty while a Stripe secret key is set: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_...)".into(),
                );
            }
        }
        if self.dev.tokens && self.stripe.is_live() {
            problem(
                "dev.tokens",
                "is on while stripe.secret_key is a live key: development tokens let anyone who \
                 can read dev.key_file act as any user; turn dev.tokens off (TOLLGATE_DEV__TOKENS) \
                 or use a test key (sk_test_...)"
                    .into(),
            );
        }
        if self.dev.tokens && self.dev.key_file.as_os_str().is_empty() {
            problem(
                "dev.key_file",
                "is empty: name the file that holds the development token key".into(),
            );
        }
        if let Some(pk) = &self.stripe.publishable_key {
            if !pk.is_empty() && !pk.starts_with("pk_") {
                problem(
                    "stripe.publishable_key",
                    "must start with pk_ (STRIPE_PUBLISHABLE_KEY)".into(),
                );
            }
            if pk.starts_with("sk_") || pk.starts_with("rk_") {
                problem(
                    "stripe.publishable_key",
                    "holds a secret key; it is shown to browsers: use the pk_ key".into(),
                );
            }
        }
        for origin in &self.checkout.allowed_redirect_origins {
            if crate::billing::redirect::parse_origin(origin).is_none() {
                problem(
                    "checkout.allowed_redirect_origins",
                    format!("`{origin}` is not an origin like https://app.example.com"),
                );
            }
        }
        for origin in self.server.cors_allowed_origins.iter().flatten() {
            // Browsers send an origin in exactly this form, which CORS compares byte for byte.
            let exact = crate::billing::redirect::parse_origin(origin);
            if exact.as_deref() != Some(origin.as_str()) {
                let hint = exact.map_or(String::new(), |e| format!(" (write `{e}`)"));
                problem(
                    "server.cors_allowed_origins",
                    format!("`{origin}` is not an origin like https://app.example.com{hint}"),
                );
            }
        }
        for (key, value) in [
            (
                "checkout.default_success_url",
                &self.checkout.default_success_url,
            ),
            (
                "checkout.default_cancel_url",
                &self.checkout.default_cancel_url,
            ),
            (
                "checkout.default_portal_return_url",
                &self.checkout.default_portal_return_url,
            ),
        ] {
            if !crate::billing::redirect::is_allowed(value, &self.checkout.allowed_redirect_origins)
            {
                problem(
                    key,
                    format!("`{value}` is not under one of checkout.allowed_redirect_origins"),
                );
            }
        }
        if self.billing.partial_refund_revokes_over_percent > 100 {
            problem(
                "billing.partial_refund_revokes_over_percent",
                "must be 0 to 100 (100: partial refunds take back nothing)".into(),
            );
        }
        if self.checkout.rate_limit_per_minute == 0 {
            problem(
                "checkout.rate_limit_per_minute",
                "must be at least 1".into(),
            );
        }
        if self.auth.jwks_url.is_none()
            && self.auth.issuer.is_none()
            && self.auth.hs256_secret.is_none()
        {
            problem(
                "auth",
                "no way to check tokens: set auth.jwks_url, auth.issuer (OIDC discovery) or auth.hs256_secret".into(),
            );
        }
        if let Some(issuer) = &self.auth.issuer {
            let scheme = url::Url::parse(issuer).ok().map(|u| u.scheme().to_owned());
            if !matches!(scheme.as_deref(), Some("https" | "http")) {
                problem(
                    "auth.issuer",
                    format!("`{issuer}` is not an https:// URL (the issuer your provider puts in `iss`, e.g. https://example.eu.auth0.com/)"),
                );
            }
        }
        for (i, secret) in self.stripe.webhook_secrets.iter().enumerate() {
            if !secret.expose_secret().starts_with("whsec_") {
                problem(
                    "stripe.webhook_secrets",
                    format!("secret {} (not shown) does not start with whsec_: use the webhook endpoint's signing secret, not an API key", i + 1),
                );
            }
        }
        for id in &self.stripe.allowed_price_ids {
            if let Some(text) = price_id_problem(id) {
                problem("stripe.allowed_price_ids", text);
            }
        }
        if let Some(url) = &self.auth.jwks_url {
            if url::Url::parse(url).is_err() {
                problem("auth.jwks_url", format!("`{url}` is not a URL"));
            }
        }
        for (key, pointer) in [
            ("auth.claims.subject", &self.auth.claims.subject),
            ("auth.claims.email", &self.auth.claims.email),
            ("auth.claims.tenant", &self.auth.claims.tenant),
            ("auth.claims.roles", &self.auth.claims.roles),
            ("auth.claims.scopes", &self.auth.claims.scopes),
        ] {
            if pointer.is_empty() {
                problem(
                    key,
                    "must name a claim (`sub`) or a JSON pointer (`/app_metadata/role`)".into(),
                );
            }
        }
        problems.extend(self.events.problems());
        let catalog = self
            .build_catalog()
            .map_err(|errors| problems.extend(errors));
        if let Ok((catalog, _)) = &catalog {
            for quota in self.events.quota_thresholds.keys() {
                if !catalog.declares_quota(quota) {
                    problems.push(ConfigProblem {
                        key: format!("events.quota_thresholds.{quota}"),
                        problem: format!("no plan declares the quota `{quota}`"),
                    });
                }
            }
        }
        if let Ok((catalog, _)) = &catalog {
            problems.extend(self.provisioning_problems(catalog));
        }
        match catalog {
            Ok(built) if problems.is_empty() => Ok(built),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Plans that provision: only `lifetime` plans bought by a user, only known provisioners,
    /// and the GitHub provisioner complete when a plan lists it.
    fn provisioning_problems(&self, catalog: &Catalog) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut github = false;
        for (i, plan) in self.plans.iter().enumerate() {
            let key = format!("plans[{i}].provision");
            for provisioner in &plan.provision {
                if provisioner == "github" {
                    github = true;
                } else {
                    problems.push(ConfigProblem {
                        key: key.clone(),
                        problem: format!("`{provisioner}` is not a provisioner (known: github)"),
                    });
                }
            }
            if plan.provision.is_empty() {
                continue;
            }
            let Some(built) = catalog.plan(&plan.id) else {
                continue;
            };
            if built.kind != PlanKind::Lifetime {
                problems.push(ConfigProblem {
                    key: key.clone(),
                    problem: format!(
                        "plan `{}` is a {}: only a lifetime plan (a one-time purchase) provisions",
                        plan.id,
                        built.kind.as_str()
                    ),
                });
            }
            if built.scope != crate::billing::scope::Scope::User {
                problems.push(ConfigProblem {
                    key,
                    problem: format!(
                        "plan `{}` is bought for a {:?} scope: a license belongs to one user (scope = \"user\")",
                        plan.id, built.scope
                    ),
                });
            }
        }
        if github {
            problems.extend(self.provisioning.github.problems());
        }
        problems
    }

    /// The plans that provision a GitHub license.
    pub fn github_plans(&self) -> Vec<String> {
        self.plans
            .iter()
            .filter(|p| p.provision.iter().any(|x| x == "github"))
            .map(|p| p.id.clone())
            .collect()
    }

    /// The plan catalog, as validated when the settings were loaded (`load`, `extract`).
    pub fn catalog(&self) -> anyhow::Result<Arc<Catalog>> {
        self.catalog
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the settings were not validated (Settings::extract)"))
    }

    /// The plan catalog these settings define, or every problem with the plans: built once,
    /// when the settings are validated.
    fn build_catalog(&self) -> Result<(Catalog, Vec<String>), Vec<ConfigProblem>> {
        let settings = self;
        let mut omitted = Vec::new();
        let mut problems = Vec::new();
        let mut problem =
            |key: String, text: String| problems.push(ConfigProblem { key, problem: text });
        let mut plans = Vec::new();
        let mut names_seen = std::collections::HashSet::new();
        let mut prices_seen = std::collections::HashSet::new();

        for (i, p) in settings.plans.iter().enumerate() {
            let key = format!("plans[{i}] ({})", p.id);
            if p.id.is_empty()
                || !p
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                problem(
                    key.clone(),
                    "id must be non-empty letters, digits, `_` or `-`".into(),
                );
            }
            for name in std::iter::once(&p.id).chain(&p.aliases) {
                if !names_seen.insert(name.to_ascii_lowercase()) {
                    problem(
                        key.clone(),
                        format!("`{name}` is used by two plans (ids and aliases must be unique)"),
                    );
                }
            }
            let mut quotas = BTreeMap::new();
            for (qkey, q) in &p.quotas {
                let limit = match &q.limit {
                    QuotaLimitSetting::Count(n) => QuotaLimit::Limited(*n),
                    QuotaLimitSetting::Word(w) if w == "unlimited" => {
                        QuotaLimit::Unlimited(Unlimited)
                    }
                    QuotaLimitSetting::Word(w) => {
                        problem(
                            format!("{key}.quotas.{qkey}.limit"),
                            format!("`{w}` is neither a number nor \"unlimited\""),
                        );
                        continue;
                    }
                };
                quotas.insert(
                    qkey.clone(),
                    Quota {
                        limit,
                        period: q.period,
                    },
                );
            }
            let mut prices = Vec::new();
            for price in &p.prices {
                let pkey = format!("{key}.prices.{}", price.interval.as_str());
                if prices.iter().any(|x: &Price| x.interval == price.interval) {
                    problem(pkey.clone(), "two prices with the same interval".into());
                }
                let fits = match p.kind {
                    PlanKind::Subscription => price.interval != Interval::Once,
                    PlanKind::Lifetime | PlanKind::CreditPack => price.interval == Interval::Once,
                };
                if !fits {
                    problem(
                        pkey.clone(),
                        format!(
                            "a {} plan takes {} prices",
                            p.kind.as_str(),
                            if p.kind == PlanKind::Subscription {
                                "month or year"
                            } else {
                                "only once"
                            }
                        ),
                    );
                }
                if price.amount < 0 {
                    problem(pkey.clone(), "amount must not be negative".into());
                }
                if price.currency.len() != 3 {
                    problem(
                        pkey.clone(),
                        format!("currency `{}` is not a 3-letter ISO code", price.currency),
                    );
                }
                match &price.price_id {
                    Some(id) => {
                        if let Some(text) = price_id_problem(id) {
                            problem(pkey.clone(), text);
                        }
                        if !prices_seen.insert(id.clone()) {
                            problem(pkey.clone(), format!("price id `{id}` is used twice"));
                        }
                        if !settings.stripe.allowed_price_ids.is_empty() && !settings.stripe.allowed_price_ids.contains(id) {
                            // Allowed but worth knowing: checkouts for it will be refused.
                            omitted.push(format!("{} ({id})", p.id));
                        }
                    }
                    None if settings.stripe.is_configured() => problem(
                        pkey.clone(),
                        match &price.price_id_env {
                            Some(env) => format!("no Stripe price id: set the environment variable {env} (or price_id)"),
                            None => "no Stripe price id: set price_id (price_...) or price_id_env".into(),
                        },
                    ),
                    None => {}
                }
                prices.push(Price {
                    interval: price.interval,
                    price_id: price.price_id.clone(),
                    amount: price.amount,
                    currency: price.currency.to_ascii_lowercase(),
                });
            }
            plans.push(Plan {
                id: p.id.clone(),
                name: p.name.clone(),
                aliases: p.aliases.clone(),
                rank: p.rank,
                kind: p.kind,
                features: p.features.clone(),
                quotas,
                scope: p.scope.unwrap_or(settings.billing.scope),
                trial_days: if p.kind == PlanKind::Subscription {
                    p.trial_days.unwrap_or(settings.billing.default_trial_days)
                } else {
                    0
                },
                trial_requires_card: p.trial_requires_card,
                prices,
            });
        }

        let free_plan = plans
            .iter()
            .position(|p| p.id == settings.billing.free_plan);
        match free_plan.map(|i| &plans[i]) {
            None => problem(
                "billing.free_plan".into(),
                format!(
                    "names `{}`, which is not a plan id: add a plan without prices or change it",
                    settings.billing.free_plan
                ),
            ),
            Some(plan) if !plan.is_free() || plan.kind != PlanKind::Subscription => problem(
                "billing.free_plan".into(),
                format!(
                    "plan `{}` must be a subscription plan without prices",
                    plan.id
                ),
            ),
            Some(_) => {}
        }
        match (problems.is_empty(), free_plan) {
            (true, Some(_)) => {
                let catalog = Catalog::new(plans, &settings.billing.free_plan).ok_or(problems)?;
                let notices = if omitted.is_empty() {
                    Vec::new()
                } else {
                    vec![format!(
                        "stripe.allowed_price_ids omits prices of the catalog, whose checkouts will be refused: {}",
                        omitted.join(", ")
                    )]
                };
                Ok((catalog, notices))
            }
            _ => Err(problems),
        }
    }
}

/// What is wrong with a database URL that its scheme alone does not show.
fn database_url_problem(url: &str) -> Option<String> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        return path
            .trim()
            .is_empty()
            .then(|| "names no file: write sqlite://path/to/file.db".to_owned());
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None; // the scheme's own problem, reported beside
    }
    match url::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => None,
        Ok(_) => Some("names no host: write postgres://user:password@host:5432/database".into()),
        // The URL is a secret: say what is wrong, never what it holds.
        Err(e) => Some(format!(
            "is not a valid URL ({e}; a password with @, : or / must be percent-encoded)"
        )),
    }
}

/// What is wrong with a Stripe price id.
fn price_id_problem(id: &str) -> Option<String> {
    if id.starts_with("prod_") {
        Some(format!("`{id}` is a product id: use one of its prices' ids (price_...), from the product's page in Stripe"))
    } else if !(id.starts_with("price_") || id.starts_with("plan_")) {
        Some(format!("`{id}` is not a Stripe price id (price_...)"))
    } else {
        None
    }
}

/// Keys whose values are secrets: never echoed, and read from the environment as strings.
const SECRET_KEYS: &[&str] = &[
    "database.url",
    "stripe.secret_key",
    "stripe.webhook_secrets",
    "auth.hs256_secret",
];

/// figment's message for each problem, except that a secret's value is never shown (figment
/// would print `found unsigned int `12345``).
fn describe_load_error(err: figment::Error) -> ConfigError {
    use figment::error::{Actual, Kind};
    let hidden = || Actual::Other("a value (not shown: it is a secret)".into());
    let problems: Vec<String> = err
        .into_iter()
        .map(|mut e| {
            if SECRET_KEYS.contains(&e.path.join(".").as_str()) {
                e.kind = match e.kind {
                    Kind::InvalidType(_, expected) => Kind::InvalidType(hidden(), expected),
                    Kind::InvalidValue(_, expected) => Kind::InvalidValue(hidden(), expected),
                    Kind::Unsupported(_) => Kind::Unsupported(hidden()),
                    Kind::Message(_) => {
                        Kind::Message("invalid value (not shown: it is a secret)".into())
                    }
                    other => other,
                };
            }
            if let Kind::UnknownField(field, expected) = &e.kind {
                return unknown_key(&e, field, expected);
            }
            e.to_string()
        })
        .collect();
    ConfigError::Load(problems.join("\n"))
}

/// An unknown key, named as its author wrote it (the environment variable, or the key and its
/// line in the file), with the closest key there is.
fn unknown_key(e: &figment::Error, field: &str, expected: &[&str]) -> String {
    let mut parent: Vec<&str> = e.path.iter().map(String::as_str).collect();
    if parent.last() == Some(&field) {
        parent.pop();
    }
    let dotted = |name: &str| {
        parent
            .iter()
            .filter(|p| p.parse::<usize>().is_err())
            .copied()
            .chain([name])
            .collect::<Vec<_>>()
            .join(".")
    };
    let closest = expected
        .iter()
        .map(|candidate| (strsim::jaro_winkler(field, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c);
    let metadata = e.metadata.as_ref();
    let from_env = metadata.is_some_and(|m| m.name.contains("environment"));
    let (written, suggestion) = if from_env {
        let var = |name: &str| {
            format!(
                "TOLLGATE_{}",
                dotted(name).replace('.', "__").to_ascii_uppercase()
            )
        };
        (
            format!(
                "the environment variable {} ({})",
                var(field),
                dotted(field)
            ),
            closest.map(var),
        )
    } else {
        let file = metadata.and_then(|m| match &m.source {
            Some(figment::Source::File(path)) => Some(path.clone()),
            _ => None,
        });
        let at = file.as_deref().map_or(String::new(), |path| {
            let line = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| line_of(&text, &parent, field));
            match line {
                Some(n) => format!(" at line {n} of {}", path.display()),
                None => format!(" in {}", path.display()),
            }
        });
        (format!("`{}`{at}", dotted(field)), closest.map(dotted))
    };
    let hint = match suggestion {
        Some(s) => format!("; did you mean {s}?"),
        None if expected.is_empty() => String::new(),
        None => format!(" (known here: {})", expected.join(", ")),
    };
    format!("{written} is not a setting{hint}")
}

/// The line (from 1) where `key` is set under the table `parent` (array indices ignored).
fn line_of(text: &str, parent: &[&str], key: &str) -> Option<usize> {
    let table: Vec<&str> = parent
        .iter()
        .filter(|p| p.parse::<usize>().is_err())
        .copied()
        .collect();
    let table = table.join(".");
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if current == table && name.trim().trim_matches('"') == key {
            return Some(n + 1);
        }
    }
    None
}

fn yes() -> bool {
    true
}

fn empty_secret_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    let value: Option<String> = Option::deserialize(d)?;
    Ok(value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(SecretString::from))
}

/// A scalar as environment variables give it: `12345` arrives as a number, not a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Integer(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// Accepts a TOML list or one comma-separated string (as environment variables give).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<String> = match StringOrList::deserialize(d)? {
        StringOrList::One(s) => s.into_string().split(',').map(str::to_owned).collect(),
        StringOrList::Many(v) => v.into_iter().map(Scalar::into_string).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

fn optional_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    string_list(d).map(Some)
}

fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(string_list(d)?
        .into_iter()
        .map(SecretString::from)
        .collect())
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    const DEFAULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/default.toml");

    fn load() -> Result<Settings, ConfigError> {
        Settings::load(Some(Path::new(DEFAULT)))
    }

    fn problems(result: Result<Settings, ConfigError>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected the configuration to be refused"),
        }
    }

    #[test]
    fn event_endpoints_are_checked_and_their_secrets_never_shown() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "bad.toml",
                r#"
[[events.endpoints]]
name = "crm"
url = "http://crm.example.com/hooks"
secret = "whsec_c2hvcnQ="
types = ["entitlements.changed", "entitlements.chnaged"]

[[events.endpoints]]
name = "crm"
url = "https://mail.example.com/hooks"
secret_env = "MAIL_HOOK_SECRET"
"#,
            )?;
            let text = problems(Settings::load(Some(Path::new("bad.toml"))));
            assert!(
                text.contains(
                    "events.endpoints[0] (crm).url: `http://crm.example.com/hooks` is plain http"
                ),
                "{text}"
            );
            assert!(
                text.contains("events.endpoints[0] (crm).secret: (not shown) holds 5 bytes"),
                "{text}"
            );
            assert!(
                text.contains("`entitlements.chnaged` is no event type"),
                "{text}"
            );
            assert!(
                text.contains("events.endpoints[1] (crm).name: `crm` names two endpoints"),
                "{text}"
            );
            assert!(
                text.contains("the environment variable MAIL_HOOK_SECRET is not set"),
                "{text}"
            );
            assert!(!text.contains("c2hvcnQ"), "{text}");

            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";
            jail.set_env("MAIL_HOOK_SECRET", secret);
            jail.create_file(
                "good.toml",
                &format!(
                    r#"
[[events.endpoints]]
name = "crm"
url = "https://crm.example.com/hooks"
secret = "{secret}"
types = ["entitlements.changed"]

[[events.endpoints]]
name = "mail"
url = "http://127.0.0.1:9000/hooks"
secret_env = "MAIL_HOOK_SECRET"
types = ["*"]
"#
                ),
            )?;
            let s = Settings::load(Some(Path::new("good.toml"))).map_err(|e| e.to_string())?;
            let routes = s.events.routes();
            use crate::billing::events::EventType;
            assert!(routes[0].wants(EventType::EntitlementsChanged));
            assert!(!routes[0].wants(EventType::PurchaseCompleted));
            assert!(routes[1].wants(EventType::PurchaseCompleted));
            assert_eq!(
                s.events.endpoints[1]
                    .secret()
                    .map(|x| x.expose_secret().to_owned())
                    .as_deref(),
                Some(secret)
            );
            let printed = s.effective_toml().map_err(|e| e.to_string())?;
            assert!(!printed.contains("MfKQ9r8"), "{printed}");
            assert!(printed.contains("redacted"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn the_committed_default_loads_without_any_environment() {
        Jail::expect_with(|_| {
            let s = load().map_err(|e| e.to_string())?;
            assert!(s.saas);
            assert_eq!(s.server.port, 8080);
            assert!(s.database.url.expose_secret().starts_with("sqlite://"));
            assert!(!s.stripe.is_configured());
            Ok(())
        });
    }

    #[test]
    fn the_printed_configuration_has_every_key_in_force_and_no_secret() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "TOLLGATE_DATABASE__URL",
                "postgres://app:Secret1@db.internal:5432/billing",
            );
            jail.set_env("STRIPE_SECRET_KEY", "sk_test_Secret2");
            jail.set_env("STRIPE_WEBHOOK_SECRET", "whsec_Secret3,whsec_Secret4");
            jail.set_env("TOLLGATE_AUTH__HS256_SECRET", "Secret5");
            jail.set_env("TOLLGATE_SERVER__PORT", "9100");
            for (name, id) in [
                ("STRIPE_MONTHLY_PRICE_ID", "price_m"),
                ("STRIPE_YEARLY_PRICE_ID", "price_y"),
                ("STRIPE_LIFETIME_PRICE_ID", "price_l"),
            ] {
                jail.set_env(name, id);
            }
            let s = load().map_err(|e| e.to_string())?;
            let printed = s.effective_toml().map_err(|e| e.to_string())?;
            assert!(!printed.contains("Secret"), "{printed}");
            let parsed: toml::Table = toml::from_str(&printed).map_err(|e| e.to_string())?;
            let get = |path: &str| {
                let (section, key) = path.split_once('.').unwrap();
                parsed[section][key].clone()
            };
            // Every secret is there, redacted.
            for key in SECRET_KEYS {
                let shown = get(key).to_string();
                assert!(
                    shown.contains("redacted") || shown.contains("***"),
                    "{key}: {shown}"
                );
            }
            assert_eq!(
                get("stripe.secret_key").as_str(),
                Some("sk_test_... (redacted)")
            );
            assert_eq!(
                get("database.url").as_str(),
                Some("postgres://app:***@db.internal:5432/billing")
            );
            assert_eq!(
                get("stripe.webhook_secrets").as_array().map(Vec::len),
                Some(2)
            );
            // The environment is in force, and the defaults' other keys are all there.
            assert_eq!(get("server.port").as_integer(), Some(9100));
            let defaults: toml::Table = toml::from_str(BUILTIN_DEFAULTS).unwrap();
            for (section, keys) in &defaults {
                if let toml::Value::Table(keys) = keys {
                    for key in keys.keys() {
                        assert!(parsed[section].get(key).is_some(), "{section}.{key}");
                    }
                }
            }
            assert_eq!(
                parsed["plans"].as_array().map(Vec::len),
                Some(s.plans.len())
            );
            Ok(())
        });
    }

    #[test]
    fn a_short_file_is_merged_over_the_built_in_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tollgate.toml",
                r#"
                [server]
                port = 9000

                [[plans]]
                id = "free"
                name = "Free"
                rank = 0
                features = []
                "#,
            )?;
            let s = Settings::load(Some(Path::new("tollgate.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 9000);
            // Everything else is the defaults'; the list of plans is the file's alone.
            assert_eq!(s.server.max_body_bytes, 262_144);
            assert_eq!(s.auth.scopes.read, "billing:read");
            assert_eq!(s.plans.len(), 1);
            assert_eq!(s.source, ConfigSource::File("tollgate.toml".into()));
            let defaults = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(defaults.source, ConfigSource::BuiltIn);
            assert_eq!(
                defaults.plans.len(),
                load().map_err(|e| e.to_string())?.plans.len()
            );
            let missing = problems(Settings::load(Some(Path::new("nowhere.toml"))));
            assert!(
                missing.contains("nowhere.toml") && missing.contains("does not exist"),
                "{missing}"
            );
            Ok(())
        });
    }

    #[test]
    fn stray_tollgate_variables_are_noticed_not_fatal() {
        Jail::expect_with(|jail| {
            // What Kubernetes sets for a Service named tollgate.
            jail.set_env("TOLLGATE_PORT", "tcp://10.0.0.12:8080");
            jail.set_env("TOLLGATE_SERVICE_HOST", "10.0.0.12");
            jail.set_env("TOLLGATE_SAAS", "false");
            let s = load().map_err(|e| e.to_string())?;
            assert!(!s.saas);
            assert_eq!(s.server.port, 8080);
            assert_eq!(s.notices.len(), 2, "{:?}", s.notices);
            assert!(
                s.notices.iter().any(|n| n.contains("TOLLGATE_PORT")),
                "{:?}",
                s.notices
            );
            assert!(s
                .notices
                .iter()
                .any(|n| n.contains("TOLLGATE_SERVICE_HOST")));
            Ok(())
        });
    }

    #[test]
    fn a_refund_share_above_a_hundred_percent_is_refused() {
        Jail::expect_with(|jail| {
            jail.set_env(
                "TOLLGATE_BILLING__PARTIAL_REFUND_REVOKES_OVER_PERCENT",
                "101",
            );
            let text = problems(load());
            assert!(
                text.contains("billing.partial_refund_revokes_over_percent")
                    && text.contains("must be 0 to 100"),
                "{text}"
            );
            jail.set_env(
                "TOLLGATE_BILLING__PARTIAL_REFUND_REVOKES_OVER_PERCENT",
                "50",
            );
            let s = load().map_err(|e| e.to_string())?;
            assert_eq!(s.billing.partial_refund_revokes_over_percent, 50);
            Ok(())
        });
    }

    #[test]
    fn a_misspelt_key_is_named_as_written_with_the_closest_key() {
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_SERVER__PROT", "9000");
            let text = problems(load());
            assert!(
                text.contains("TOLLGATE_SERVER__PROT (server.prot)"),
                "{text}"
            );
            assert!(
                text.contains("did you mean TOLLGATE_SERVER__PORT?"),
                "{text}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file(
                "tollgate.toml",
                "saas = true\n\n[server]\nhost = \"0.0.0.0\"\nprot = 9000\n",
            )?;
            let text = problems(Settings::load(Some(Path::new("tollgate.toml"))));
            assert!(
                text.contains("`server.prot` at line 5 of tollgate.toml"),
                "{text}"
            );
            assert!(text.contains("did you mean server.port?"), "{text}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_AUTH__ZZZ", "1");
            let text = problems(load());
            assert!(text.contains("TOLLGATE_AUTH__ZZZ"), "{text}");
            assert!(
                text.contains("known here:") && text.contains("issuer"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_logged_database_url_hides_its_password() {
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "postgres://app:s3cret@db:5432/tollgate");
            let s = load().map_err(|e| e.to_string())?;
            let shown = s.database.display_url();
            assert_eq!(shown, "postgres://app:***@db:5432/tollgate");
            Ok(())
        });
    }

    #[test]
    fn the_seeds_plain_environment_names_set_their_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("SAAS", "false");
            jail.set_env("DATABASE_URL", "postgres://u:p@db/tollgate");
            jail.set_env("STRIPE_SECRET_KEY", "sk_test_123");
            jail.set_env("STRIPE_PUBLISHABLE_KEY", "pk_test_123");
            jail.set_env("STRIPE_WEBHOOK_SECRET", "whsec_new, whsec_old");
            jail.set_env("STRIPE_ALLOWED_PRICE_IDS", "price_m,price_y,price_l");
            jail.set_env("STRIPE_MONTHLY_PRICE_ID", "price_m");
            jail.set_env("STRIPE_YEARLY_PRICE_ID", "price_y");
            jail.set_env("STRIPE_LIFETIME_PRICE_ID", "price_l");
            let s = load().map_err(|e| e.to_string())?;
            assert!(!s.saas);
            assert_eq!(s.database.url.expose_secret(), "postgres://u:p@db/tollgate");
            assert_eq!(
                s.stripe
                    .secret_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned())
                    .as_deref(),
                Some("sk_test_123")
            );
            assert_eq!(s.stripe.publishable_key.as_deref(), Some("pk_test_123"));
            let secrets: Vec<_> = s
                .stripe
                .webhook_secrets
                .iter()
                .map(|w| w.expose_secret().to_owned())
                .collect();
            assert_eq!(secrets, ["whsec_new", "whsec_old"]);
            assert_eq!(
                s.stripe.allowed_price_ids,
                ["price_m", "price_y", "price_l"]
            );
            let pro = s.plans.iter().find(|p| p.id == "pro").unwrap();
            assert_eq!(pro.prices[0].price_id.as_deref(), Some("price_m"));
            assert_eq!(pro.prices[1].price_id.as_deref(), Some("price_y"));
            Ok(())
        });
    }

    #[test]
    fn tollgate_prefixed_variables_override_nested_keys() {
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_SERVER__PORT", "9000");
            jail.set_env("TOLLGATE_AUTH__AUDIENCE", "api-a,api-b");
            jail.set_env("TOLLGATE_EXEMPTIONS__SUBJECTS", "12345");
            jail.set_env(
                "TOLLGATE_CHECKOUT__ALLOWED_REDIRECT_ORIGINS",
                "http://localhost:3000,https://app.example.com",
            );
            // Not keys: the file's own name and the test suite's settings.
            jail.set_env("TOLLGATE_CONFIG", "/etc/tollgate.toml");
            jail.set_env("TOLLGATE_TEST_POSTGRES_URL", "postgres://x");
            let s = load().map_err(|e| e.to_string())?;
            assert_eq!(s.server.port, 9000);
            assert_eq!(s.auth.audience, ["api-a", "api-b"]);
            assert_eq!(s.exemptions.subjects, ["12345"]);
            assert_eq!(s.checkout.allowed_redirect_origins.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn numeric_secrets_are_taken_as_written_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_AUTH__HS256_SECRET", "0012345");
            let s = load().map_err(|e| e.to_string())?;
            let hs = s
                .auth
                .hs256_secret
                .as_ref()
                .unwrap()
                .expose_secret()
                .to_owned();
            assert_eq!(hs, "0012345");
            Ok(())
        });
        // A webhook secret is a whsec_ signing secret: a number is refused, and not shown.
        Jail::expect_with(|jail| {
            jail.set_env("STRIPE_WEBHOOK_SECRET", "whsec_ok, 0071234");
            let text = problems(load());
            assert!(
                text.contains("secret 2 (not shown) does not start with whsec_"),
                "{text}"
            );
            assert!(!text.contains("0071234"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn check_config_catches_mistakes_of_form() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[("TOLLGATE_AUTH__ISSUER", "example.eu.auth0.com")],
                "auth.issuer",
                "https://",
            ),
            (
                &[("DATABASE_URL", "postgres://user:p@ss@/db")],
                "database.url",
                "percent-encoded",
            ),
            (
                &[("DATABASE_URL", "sqlite://")],
                "database.url",
                "names no file",
            ),
            (
                &[
                    ("STRIPE_SECRET_KEY", "sk_live_abc"),
                    ("STRIPE_PUBLISHABLE_KEY", "pk_test_abc"),
                    ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
                ],
                "stripe.publishable_key",
                "same mode",
            ),
            (
                &[("STRIPE_MONTHLY_PRICE_ID", "prod_NWjs8kKbJWmuuc")],
                "plans[1] (pro)",
                "is a product id",
            ),
            (
                &[("STRIPE_ALLOWED_PRICE_IDS", "price_a,12345")],
                "stripe.allowed_price_ids",
                "not a Stripe price id",
            ),
        ];
        for (env, key, text) in cases {
            Jail::expect_with(|jail| {
                for (name, value) in *env {
                    jail.set_env(name, value);
                }
                let found = problems(load());
                assert!(
                    found.contains(key) && found.contains(text),
                    "{env:?}: {found}"
                );
                assert!(!found.contains("user:p@ss"), "{found}");
                Ok(())
            });
        }
    }

    #[test]
    fn allowed_price_ids_that_omit_a_catalog_price_are_a_notice() {
        Jail::expect_with(|jail| {
            jail.set_env("STRIPE_MONTHLY_PRICE_ID", "price_m");
            jail.set_env("STRIPE_YEARLY_PRICE_ID", "price_y");
            jail.set_env("STRIPE_ALLOWED_PRICE_IDS", "price_m");
            let s = load().map_err(|e| e.to_string())?;
            let notice = s.notices.iter().find(|n| n.contains("omits")).cloned();
            let notice = notice.unwrap_or_else(|| panic!("{:?}", s.notices));
            assert!(
                notice.contains("pro (price_y)") && !notice.contains("price_m"),
                "{notice}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_refused_without_showing_it() {
        Jail::expect_with(|_| {
            let figment = Figment::new()
                .merge(Toml::file_exact(DEFAULT))
                .merge(("auth.hs256_secret", 987_654_321_u64))
                .merge(("database.url", 123_456_789_u64));
            let text = problems(Settings::extract(figment));
            assert!(
                text.contains("hs256_secret") || text.contains("database"),
                "{text}"
            );
            assert!(text.contains("not shown"), "{text}");
            assert!(
                !text.contains("987654321") && !text.contains("123456789"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn cors_origins_default_to_the_redirect_origins_and_must_be_exact() {
        Jail::expect_with(|_| {
            let s = load().unwrap();
            assert_eq!(s.server.cors_allowed_origins, None);
            assert_eq!(s.cors_origins(), vec!["http://localhost:3000".to_owned()]);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(
                "TOLLGATE_SERVER__CORS_ALLOWED_ORIGINS",
                "https://app.example.com,https://admin.example.com",
            );
            let s = load().unwrap();
            assert_eq!(s.cors_origins().len(), 2);
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env(
                "TOLLGATE_SERVER__CORS_ALLOWED_ORIGINS",
                "https://app.example.com/",
            );
            let text = problems(load());
            assert!(
                text.contains("server.cors_allowed_origins")
                    && text.contains("write `https://app.example.com`"),
                "{text}"
            );
            Ok(())
        });
    }

    #[test]
    fn mistakes_are_refused_naming_the_key_and_the_fix() {
        Jail::expect_with(|jail| {
            jail.set_env("STRIPE_SECRET_KEY", "sk_test_123");
            let text = problems(load());
            assert!(
                text.contains("stripe.webhook_secrets") && text.contains("STRIPE_WEBHOOK_SECRET"),
                "{text}"
            );
            assert!(text.contains("STRIPE_MONTHLY_PRICE_ID"), "{text}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("DATABASE_URL", "mysql://db");
            jail.set_env("STRIPE_PUBLISHABLE_KEY", "sk_live_oops");
            jail.set_env("TOLLGATE_BILLING__FREE_PLAN", "gratis");
            jail.set_env(
                "TOLLGATE_CHECKOUT__DEFAULT_SUCCESS_URL",
                "https://evil.example.net/",
            );
            let text = problems(load());
            for needle in [
                "database.url",
                "stripe.publishable_key",
                "billing.free_plan",
                "checkout.default_success_url",
            ] {
                assert!(text.contains(needle), "{needle} missing from: {text}");
            }
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("TOLLGATE_SERVER__PROT", "1");
            let text = problems(load());
            assert!(text.contains("prot"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        Jail::expect_with(|jail| {
            jail.set_env("STRIPE_SECRET_KEY", "sk_test_supersecret");
            jail.set_env("STRIPE_WEBHOOK_SECRET", "whsec_supersecret");
            jail.set_env("STRIPE_MONTHLY_PRICE_ID", "price_m");
            jail.set_env("STRIPE_YEARLY_PRICE_ID", "price_y");
            jail.set_env("STRIPE_LIFETIME_PRICE_ID", "price_l");
            let s = load().map_err(|e| e.to_string())?;
            let printed = format!("{s:?}");
            assert!(!printed.contains("supersecret"), "{printed}");
            Ok(())
        });
    }
}
