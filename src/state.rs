//! The application state: what every request and use case shares. Built once per process from
//! the settings; holds nothing a replica could not rebuild from them.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;

use crate::billing::access::AccessPolicy;
use crate::billing::catalog::Catalog;
use crate::config::{CheckoutSettings, Settings};
use crate::db::Database;
use crate::identity::dev::DevKey;
use crate::identity::IdentityVerifier;
use crate::stripe::StripeGateway;

/// The source of "now"; tests may pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Shared by every request; holds nothing a replica could not rebuild from config.
///
/// Use cases (src/service) read what they need from the fields built for them here (`catalog`,
/// `policy`, `exempt_subjects`, `checkout`), never `settings`, which is for the HTTP layer and
/// start-up (tests/architecture.rs checks it).
pub struct AppState {
    pub settings: Settings,
    pub catalog: Arc<Catalog>,
    /// How stored facts become access (`saas`, the grace period).
    pub policy: AccessPolicy,
    /// Identity-provider user ids that always have access (`exemptions.subjects`).
    pub exempt_subjects: HashSet<String>,
    pub checkout: CheckoutTerms,
    pub db: Database,
    /// `None` while no Stripe key is configured.
    pub stripe: Option<StripeGateway>,
    pub identity: IdentityVerifier,
    pub checkout_limiter: DefaultKeyedRateLimiter<String>,
    pub metrics: PrometheusHandle,
    clock: Clock,
}

/// What the checkout and portal use cases need of the settings.
#[derive(Debug, Clone)]
pub struct CheckoutTerms {
    /// Origins that success, cancel and return URLs may point to.
    pub allowed_redirect_origins: Vec<String>,
    pub default_success_url: String,
    pub default_cancel_url: String,
    pub default_portal_return_url: String,
    /// The Stripe prices a checkout may use; empty: any price of the catalog.
    pub allowed_price_ids: HashSet<String>,
    /// Checkout sessions one person may create per minute (`checkout_limiter` enforces it).
    pub rate_limit_per_minute: u32,
}

impl CheckoutTerms {
    fn of(checkout: &CheckoutSettings, allowed_price_ids: &[String]) -> CheckoutTerms {
        CheckoutTerms {
            allowed_redirect_origins: checkout.allowed_redirect_origins.clone(),
            default_success_url: checkout.default_success_url.clone(),
            default_cancel_url: checkout.default_cancel_url.clone(),
            default_portal_return_url: checkout.default_portal_return_url.clone(),
            allowed_price_ids: allowed_price_ids.iter().cloned().collect(),
            rate_limit_per_minute: checkout.rate_limit_per_minute,
        }
    }
}

impl AppState {
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// Opens the database (migrating it) and builds the shared state.
pub fn build_state(settings: Settings, clock: Clock) -> anyhow::Result<AppState> {
    let catalog = settings.catalog()?;
    let db = Database::connect(
        settings.database.url.expose_secret(),
        settings.database.max_connections,
        Duration::from_secs(settings.database.connect_timeout_seconds),
    )?
    .with_snapshot_cache(settings.database.snapshot_cache_entries);
    let applied = db.migrate()?;
    if !applied.is_empty() {
        tracing::info!(?applied, "applied migrations");
    }
    let stripe = StripeGateway::from_settings(&settings.stripe)?;
    if stripe.is_none() {
        tracing::warn!("Stripe is not configured (STRIPE_SECRET_KEY unset): checkout, portal and webhooks answer 503");
    }
    if settings.auth.issuer_is_placeholder() && !settings.dev.tokens {
        tracing::warn!(
            issuer = crate::config::PLACEHOLDER_ISSUER,
            "auth.issuer is still the placeholder of config/default.toml: no identity provider runs there, so every call with a token will answer 503 identity_provider_unavailable; set auth.issuer (TOLLGATE_AUTH__ISSUER) or auth.jwks_url to your provider, or auth.hs256_secret for tokens you sign yourself; on your own machine, TOLLGATE_DEV__TOKENS=true and `tollgate dev-token` give tokens without a provider"
        );
    }
    let dev_key = if settings.dev.tokens {
        let key = DevKey::load_or_create(&settings.dev.key_file)
            .context("dev.tokens is on but its key could not be read or made")?;
        tracing::warn!(
            key_file = %key.path().display(),
            "DEVELOPMENT TOKENS ARE ACCEPTED (dev.tokens = true): anyone who can read the key file \
             can act as any user or service; never run this in production"
        );
        Some(key)
    } else {
        None
    };
    let identity =
        IdentityVerifier::new(settings.auth.clone(), settings.exemptions.clone(), dev_key)?;
    let per_minute = NonZeroU32::new(settings.checkout.rate_limit_per_minute)
        .context("checkout.rate_limit_per_minute must be at least 1")?;
    let checkout_limiter = RateLimiter::keyed(Quota::per_minute(per_minute));
    let policy = AccessPolicy {
        saas_enabled: settings.saas,
        grace_period: chrono::Duration::hours(i64::from(settings.billing.grace_period_hours)),
    };
    let exempt_subjects = settings.exemptions.subjects.iter().cloned().collect();
    let checkout = CheckoutTerms::of(&settings.checkout, &settings.stripe.allowed_price_ids);
    Ok(AppState {
        settings,
        catalog,
        policy,
        exempt_subjects,
        checkout,
        db,
        stripe,
        identity,
        checkout_limiter,
        metrics: metrics_handle()?,
        clock,
    })
}

/// The process's one metrics recorder (installed on first use; several apps in one test
/// process share it).
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a metrics recorder was installed elsewhere"))
}
