//! The application state: what every request and use case shares. Built once per process from
//! the settings; holds nothing a replica could not rebuild from them.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use secrecy::ExposeSecret;

use crate::billing::catalog::Catalog;
use crate::config::Settings;
use crate::db::Database;
use crate::identity::IdentityVerifier;
use crate::stripe::StripeGateway;

/// The source of "now"; tests may pin it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Shared by every request; holds nothing a replica could not rebuild from config.
pub struct AppState {
    pub settings: Settings,
    pub catalog: Arc<Catalog>,
    pub db: Database,
    /// `None` while no Stripe key is configured.
    pub stripe: Option<StripeGateway>,
    pub identity: IdentityVerifier,
    pub checkout_limiter: DefaultKeyedRateLimiter<String>,
    pub metrics: PrometheusHandle,
    clock: Clock,
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
    let identity = IdentityVerifier::new(settings.auth.clone(), settings.exemptions.clone())?;
    let per_minute = NonZeroU32::new(settings.checkout.rate_limit_per_minute)
        .context("checkout.rate_limit_per_minute must be at least 1")?;
    let checkout_limiter = RateLimiter::keyed(Quota::per_minute(per_minute));
    Ok(AppState {
        settings,
        catalog,
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
