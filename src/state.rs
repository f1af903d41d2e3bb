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
use crate::billing::change::ChangeTerms;
use crate::billing::payment::RefundPolicy;
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
    /// How plan changes are billed (`billing.upgrade_proration`, `billing.downgrade_proration`).
    pub changes: ChangeTerms,
    /// When a partial refund takes back what it paid for
    /// (`billing.partial_refund_revokes_over_percent`).
    pub refunds: RefundPolicy,
    /// What is done with a second standing subscription (`billing.second_subscription`).
    pub second_subscription: crate::billing::mirror::SecondSubscription,
    /// Woken when a sync queued a remedy (`db::remedies`) for the worker.
    pub remedy_wake: Arc<tokio::sync::Notify>,
    /// The webhook inbox's workers.
    pub inbox: InboxTerms,
    pub db: Database,
    /// `None` while no Stripe key is configured.
    pub stripe: Option<StripeGateway>,
    pub identity: IdentityVerifier,
    pub checkout_limiter: DefaultKeyedRateLimiter<String>,
    pub metrics: PrometheusHandle,
    /// Outbound events: routes, retries and the sender (`events`).
    pub events: EventTerms,
    /// Licenses and their GitHub provisioner (`provisioning.github`, plans' `provision`).
    pub licenses: LicenseTerms,
    clock: Clock,
}

/// What the licenses use cases need, built once from the settings.
pub struct LicenseTerms {
    /// The plans whose purchase creates a license.
    pub plans: Arc<HashSet<String>>,
    /// `None` while no plan provisions (then no worker runs).
    pub github: Option<Arc<crate::github::GitHub>>,
    pub retry: crate::billing::license::GithubRetry,
    /// How often a pending invitation is checked.
    pub check_every: Duration,
    /// A worker's claim on a license lasts this long: the longest step (four calls) and a
    /// margin.
    pub lease: Duration,
    /// How often the worker looks for due work without being woken.
    pub poll: Duration,
    pub submissions_per_hour: u32,
    /// Usernames one buyer may submit per hour.
    pub limiter: DefaultKeyedRateLimiter<String>,
    /// Woken when work was scheduled, so that this replica does it at once.
    pub wake: Arc<tokio::sync::Notify>,
}

impl LicenseTerms {
    fn of(settings: &Settings) -> anyhow::Result<LicenseTerms> {
        let github = &settings.provisioning.github;
        let plans: HashSet<String> = settings.github_plans().into_iter().collect();
        let client = if plans.is_empty() {
            None
        } else {
            crate::github::GitHub::from_settings(github)?.map(Arc::new)
        };
        let per_hour = NonZeroU32::new(github.submissions_per_hour)
            .context("provisioning.github.submissions_per_hour must be at least 1")?;
        let timeout = Duration::from_secs(github.timeout_seconds);
        Ok(LicenseTerms {
            plans: Arc::new(plans),
            github: client,
            retry: crate::billing::license::GithubRetry {
                first: Duration::from_secs(github.retry_first_seconds),
                max: Duration::from_secs(github.retry_max_seconds),
            },
            check_every: Duration::from_secs(github.check_interval_seconds),
            lease: timeout * 5 + Duration::from_secs(5),
            poll: Duration::from_secs(1),
            submissions_per_hour: github.submissions_per_hour,
            limiter: RateLimiter::keyed(Quota::per_hour(per_hour)),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }
}

/// What the webhook inbox's workers need, built once from `webhooks` settings.
#[derive(Debug, Clone)]
pub struct InboxTerms {
    /// Customers one replica syncs at a time.
    pub concurrency: usize,
    /// The earliest due pending events a worker looks among for the next customers to sync.
    pub claim_batch: i64,
    /// The wait after a failed attempt (doubling) and its ceiling.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often an idle worker looks for events other replicas stored.
    pub poll: Duration,
    /// How long a worker's claim on events lasts.
    pub lease: Duration,
    /// How long a stored event waits before it is due (`webhooks.coalesce_ms`).
    pub coalesce: Duration,
    /// Woken when a webhook event was stored, so that this replica's worker takes it at once.
    pub wake: Arc<tokio::sync::Notify>,
    /// Stores received events, those arriving together in one transaction.
    pub recorder: Arc<crate::db::events::Recorder>,
}

/// What the events use cases need, built once from `events` settings.
pub struct EventTerms {
    /// Which endpoint wants which type (deliveries are queued for these).
    pub routes: Arc<Vec<crate::billing::events::Route>>,
    pub retry: crate::billing::events::RetryPolicy,
    /// How often the dispatcher looks for work without being woken.
    pub poll: Duration,
    /// How long an endpoint may take (a claim lasts longer than this).
    pub timeout: Duration,
    /// `None` without endpoints.
    pub sender: Option<Arc<crate::outbound::Sender>>,
    /// Per quota key, the percents of the allowance whose crossing is told.
    pub quota_thresholds: Arc<std::collections::HashMap<String, Vec<i32>>>,
    /// Woken after a commit that appended events, so that this replica delivers at once.
    pub wake: Arc<tokio::sync::Notify>,
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
    )
    .with_context(|| format!("database {}", settings.database.display_url()))?
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
        access_while_collection_paused: settings.billing.access_while_collection_paused,
    };
    let exempt_subjects = settings.exemptions.subjects.iter().cloned().collect();
    let checkout = CheckoutTerms::of(&settings.checkout, &settings.stripe.allowed_price_ids);
    let changes = ChangeTerms {
        upgrade: settings.billing.upgrade_proration,
        downgrade: settings.billing.downgrade_proration,
        downgrade_at: settings.billing.downgrade_at,
    };
    let refunds = RefundPolicy {
        partial_revokes_over_percent: settings.billing.partial_refund_revokes_over_percent,
    };
    let events = EventTerms {
        routes: Arc::new(settings.events.routes()),
        retry: settings.events.retry_policy(),
        poll: Duration::from_millis(settings.events.poll_interval_ms),
        timeout: Duration::from_secs(settings.events.timeout_seconds),
        sender: if settings.events.endpoints.is_empty() {
            None
        } else {
            Some(Arc::new(crate::outbound::Sender::new(&settings.events)?))
        },
        quota_thresholds: Arc::new(settings.events.thresholds()),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let licenses = LicenseTerms::of(&settings)?;
    Ok(AppState {
        second_subscription: settings.billing.second_subscription,
        remedy_wake: Arc::new(tokio::sync::Notify::new()),
        inbox: InboxTerms {
            concurrency: settings.webhooks.concurrency,
            claim_batch: settings.webhooks.claim_batch,
            retry_initial: Duration::from_millis(settings.webhooks.retry_initial_ms),
            retry_max: Duration::from_secs(settings.webhooks.retry_max_seconds),
            poll: Duration::from_millis(settings.webhooks.poll_interval_ms),
            lease: Duration::from_secs(settings.webhooks.lease_seconds),
            coalesce: Duration::from_millis(settings.webhooks.coalesce_ms),
            wake: Arc::new(tokio::sync::Notify::new()),
            recorder: Arc::default(),
        },
        events,
        licenses,
        settings,
        changes,
        refunds,
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
/// process share it), with the help text of every metric and `tollgate_build_info`.
fn metrics_handle() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = recorder_builder().ok()?.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe_metrics();
            metrics::gauge!("tollgate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Histograms keep their samples until upkeep folds them into the buckets: without
            // it a replica nobody scrapes would grow without bound.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the metrics recorder could not be installed (was one installed elsewhere?)"
            )
        })
}

/// Request latencies: from a cached feature check (well under a millisecond) to a request
/// that waited on Stripe.
pub const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Stripe calls: tens of milliseconds to the client's timeout, retries included.
pub const STRIPE_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// License invitations: a minute to the week GitHub keeps an invitation.
pub const ACCEPTANCE_BUCKETS: &[f64] = &[
    60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0, 259_200.0, 604_800.0,
];

/// Histograms with buckets (rendered as Prometheus histograms, which aggregate across
/// replicas), not the exporter's default summaries.
fn recorder_builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    use metrics_exporter_prometheus::Matcher;
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tollgate_http_request_duration_seconds".into()),
            HTTP_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tollgate_stripe_request_duration_seconds".into()),
            STRIPE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tollgate_license_acceptance_seconds".into()),
            ACCEPTANCE_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tollgate_webhook_lag_seconds".into()),
            WEBHOOK_LAG_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full("tollgate_stripe_budget_wait_seconds".into()),
            BUDGET_WAIT_BUCKETS,
        )
}

/// From no wait at all (the budget had room) to a backlog paused by Stripe's 429s.
const BUDGET_WAIT_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// From a burst drained in well under a second to a backlog of many minutes.
const WEBHOOK_LAG_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Every metric family Tollgate records, with its help text (`# HELP`); docs/OPERATIONS.md
/// lists the same. A unit test checks that every name recorded in src/ is described here.
pub const METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "tollgate_build_info",
        MetricKind::Gauge,
        "Always 1; the label `version` is the running Tollgate version.",
    ),
    (
        "tollgate_http_request_duration_seconds",
        MetricKind::Histogram,
        "HTTP requests by matched route pattern (`unmatched` for unknown paths), method and status: time from the request's arrival to its response headers. `_count` is the request count.",
    ),
    (
        "tollgate_stripe_request_duration_seconds",
        MetricKind::Histogram,
        "Calls to Stripe by operation (gateway method) and outcome (ok, refused: Stripe answered 4xx, failed: network, timeout, 429 or 5xx after retries), retries included.",
    ),
    (
        "tollgate_stripe_errors_total",
        MetricKind::Counter,
        "Calls to Stripe that did not succeed, by operation and outcome (refused or failed).",
    ),
    (
        "tollgate_stripe_attempts_total",
        MetricKind::Counter,
        "HTTP requests sent to Stripe (each page, each retry), by outcome: ok, refused (4xx other than 429), rate_limited (429: background work pauses) or failed (network, timeout, 5xx).",
    ),
    (
        "tollgate_stripe_budget_wait_seconds",
        MetricKind::Histogram,
        "How long a Stripe request waited for the replica's budget (stripe.requests_per_second), by priority: interactive (a user waits), webhooks (the inbox and remedies), reconcile.",
    ),
    (
        "tollgate_webhook_events_total",
        MetricKind::Counter,
        "Signed Stripe webhook events, by event type and outcome: on receipt stored (pending for the inbox's workers), processed (a type Tollgate only records, or billing off), duplicate (stored before) or not_stored (the database failed: Stripe retries); then, by the workers, processed or failed (retried with backoff).",
    ),
    (
        "tollgate_webhook_syncs_total",
        MetricKind::Counter,
        "Customer re-reads the webhook inbox's workers made, by outcome (processed, failed); events per sync = processed events / processed syncs.",
    ),
    (
        "tollgate_webhook_lag_seconds",
        MetricKind::Histogram,
        "From receiving a webhook event to the commit of the sync that applied it.",
    ),
    (
        "tollgate_webhook_inbox_pending",
        MetricKind::Gauge,
        "Webhook events stored and not yet applied (all replicas; read by each replica's worker every few seconds).",
    ),
    (
        "tollgate_webhook_inbox_oldest_seconds",
        MetricKind::Gauge,
        "Age of the oldest webhook event not yet applied (0 when none).",
    ),
    (
        "tollgate_webhook_rejections_total",
        MetricKind::Counter,
        "Webhook deliveries refused with a 400 and not stored, by code (missing_signature, invalid_signature, stale_signature, invalid_payload).",
    ),
    (
        "tollgate_jwks_fetch_failures_total",
        MetricKind::Counter,
        "Failed fetches of the identity provider's signing keys (JWKS).",
    ),
    (
        "tollgate_usage_total",
        MetricKind::Counter,
        "Quota consumptions by outcome (granted, exhausted, forbidden, replayed).",
    ),
    (
        "tollgate_reconcile_runs_total",
        MetricKind::Counter,
        "Finished reconciliations (re-reads of Stripe that repair drift).",
    ),
    (
        "tollgate_reconcile_customers_total",
        MetricKind::Counter,
        "Customers re-read from Stripe by reconciliations.",
    ),
    (
        "tollgate_reconcile_changes_total",
        MetricKind::Counter,
        "Stored records that reconciliations repaired.",
    ),
    (
        "tollgate_reconcile_failures_total",
        MetricKind::Counter,
        "Customers that a reconciliation could not re-read.",
    ),
    (
        "tollgate_reconcile_drifted_customers",
        MetricKind::Gauge,
        "Customers whose stored state differed from Stripe's in the last reconciliation.",
    ),
    (
        "tollgate_events_created_total",
        MetricKind::Counter,
        "Outbound events appended to the outbox, by type (counted once their change committed).",
    ),
    (
        "tollgate_event_deliveries_total",
        MetricKind::Counter,
        "Attempts to deliver outbound events, by endpoint, event type and outcome (delivered; retried: failed, another attempt follows; failed: failed for the whole retry window).",
    ),
    (
        "tollgate_event_deliveries_pending",
        MetricKind::Gauge,
        "Deliveries of outbound events not yet delivered nor given up (all endpoints, all replicas).",
    ),
    (
        "tollgate_event_oldest_pending_seconds",
        MetricKind::Gauge,
        "Age of the oldest pending delivery's event; 0 with none.",
    ),
    (
        "tollgate_event_endpoints_failing",
        MetricKind::Gauge,
        "Endpoints whose last delivery from this replica failed for the whole retry window (until one succeeds).",
    ),
    (
        "tollgate_licenses",
        MetricKind::Gauge,
        "Licenses by `status` (pending, username_submitted, invited, active, revoked), refreshed every 15 s by each replica's license worker.",
    ),
    (
        "tollgate_license_acceptance_seconds",
        MetricKind::Histogram,
        "Time from a license's GitHub invitation to its acceptance, as the worker saw it.",
    ),
    (
        "tollgate_github_calls_total",
        MetricKind::Counter,
        "GitHub API calls by `operation` and `outcome` (ok, not_found, refused, rate_limited, server_error, network); failed ones are retried.",
    ),
    (
        "tollgate_subscription_remedies_total",
        MetricKind::Counter,
        "Attempts to remedy a subscription on Stripe, by `remedy` (second_subscription: cancel and refund a second subscription of one subject; revert_upgrade: take back an upgrade whose invoice was refunded) and `outcome`: done, or retry (Stripe failed; tried again with backoff).",
    ),
    (
        "tollgate_second_subscriptions_total",
        MetricKind::Counter,
        "Subscriptions that started to stand beside an older standing one of the same subject (billed twice).",
    ),
    (
        "tollgate_checkout_sessions_expired_total",
        MetricKind::Counter,
        "Open Checkout Sessions expired because the same subject started a newer one.",
    ),
    (
        "tollgate_reconcile_duplicate_customers",
        MetricKind::Gauge,
        "Stripe customers in the last reconciliation that carry a subject linked to another customer.",
    ),
    (
        "tollgate_reconcile_last_run_timestamp_seconds",
        MetricKind::Gauge,
        "Unix time when the last reconciliation finished.",
    ),
    (
        "tollgate_snapshot_cache_live",
        MetricKind::Gauge,
        "1 while this replica's snapshot cache follows the database (PostgreSQL LISTEN), 0 while checks read the database instead.",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

fn describe_metrics() {
    for &(name, kind, help) in METRICS {
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `metrics::counter!("name"` and the like, everywhere in src/: each name is described.
    #[test]
    fn every_recorded_metric_has_help_text() {
        let mut recorded = std::collections::BTreeSet::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_ in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_) {
                        let rest = text[at + macro_.len()..].trim_start();
                        if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next())
                        {
                            if name.starts_with("tollgate_") {
                                recorded.insert((name.to_owned(), macro_, path.clone()));
                            }
                        }
                    }
                }
            }
        }
        assert!(recorded.len() > 10, "found only {recorded:?}");
        for (name, macro_, path) in recorded {
            let kind = match macro_ {
                "counter!(" => MetricKind::Counter,
                "gauge!(" => MetricKind::Gauge,
                _ => MetricKind::Histogram,
            };
            assert!(
                METRICS.iter().any(|&(n, k, _)| n == name && k == kind),
                "{} records {name} ({kind:?}) but state::METRICS does not describe it",
                path.display()
            );
        }
    }

    #[test]
    fn histograms_have_buckets() {
        assert!(recorder_builder().is_ok());
        for &(name, kind, _) in METRICS {
            if kind == MetricKind::Histogram {
                assert!(
                    [
                        "tollgate_http_request_duration_seconds",
                        "tollgate_stripe_request_duration_seconds",
                        "tollgate_license_acceptance_seconds",
                        "tollgate_webhook_lag_seconds",
                        "tollgate_stripe_budget_wait_seconds"
                    ]
                    .contains(&name),
                    "{name} needs buckets in recorder_builder"
                );
            }
        }
    }
}
