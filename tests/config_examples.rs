//! The example configurations in `config/examples/` (one per seed product) are valid, say what
//! their seed needs, and serve `GET /v1/config` without a secret.
//!
//! Only the database, host and port are overridden, and the GitHub provisioner is given the
//! organization, team and token its variables would hold. Nothing here reads or changes the process
//! environment: `price_id_env` ids stay unresolved unless the runner happens to set them, so no
//! assertion depends on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::Value;
use tempfile::TempDir;
use tollgate::billing::catalog::{
    Catalog, Interval, Plan, PlanKind, Quota, QuotaLimit, QuotaPeriod,
};
use tollgate::billing::scope::Scope;
use tollgate::config::Settings;
use tollgate::startup::Application;

const EXAMPLES: [&str; 5] = [
    "000_video_meetings.toml",
    "001_accounts_service.toml",
    "002_tiered_credits.toml",
    "003_multi_tenant.toml",
    "004_ai_generations.toml",
];

fn config_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(relative)
}

fn example_path(name: &str) -> PathBuf {
    config_path("examples").join(name)
}

/// The example's figment with a fresh SQLite file and an ephemeral local port.
fn figment_for(name: &str, dir: &TempDir) -> Figment {
    let db_url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    Figment::new()
        .merge(Toml::file_exact(example_path(name)))
        .merge(("database.url", db_url))
        .merge(("server.host", "127.0.0.1"))
        .merge(("server.port", 0))
        // 002's lifetime license provisions GitHub, whose token comes from GH_PAT (not read
        // here): the three values its variables would give.
        .merge(("provisioning.github.organization", "example-org"))
        .merge(("provisioning.github.team_slug", "example-team"))
        .merge(("provisioning.github.token", "github_pat_example"))
}

struct Loaded {
    settings: Settings,
    catalog: Catalog,
    _dir: TempDir,
}

fn load(name: &str) -> Loaded {
    let dir = TempDir::new().expect("temporary directory");
    let settings = match Settings::extract(figment_for(name, &dir)) {
        Ok(s) => s,
        Err(e) => panic!("{name} is not a valid configuration: {e}"),
    };
    let catalog = Catalog::clone(
        &settings
            .catalog()
            .expect("validated settings hold the catalog"),
    );
    Loaded {
        settings,
        catalog,
        _dir: dir,
    }
}

fn plan<'a>(catalog: &'a Catalog, id: &str) -> &'a Plan {
    catalog
        .plan(id)
        .unwrap_or_else(|| panic!("plan `{id}` is missing"))
}

fn plan_ids(catalog: &Catalog) -> Vec<String> {
    catalog.plans().iter().map(|p| p.id.clone()).collect()
}

fn quota(plan: &Plan, key: &str) -> Quota {
    plan.quotas
        .get(key)
        .unwrap_or_else(|| panic!("plan `{}` has no `{key}` quota", plan.id))
        .clone()
}

fn intervals(plan: &Plan) -> Vec<Interval> {
    plan.prices.iter().map(|p| p.interval).collect()
}

fn amounts(plan: &Plan) -> Vec<(Interval, i64)> {
    plan.prices.iter().map(|p| (p.interval, p.amount)).collect()
}

/// Starts the service on the example's settings and returns `GET /v1/config` (status, raw body).
async fn get_config(settings: Settings) -> (u16, String) {
    let app = Application::build(settings).expect("the application builds");
    let url = format!("http://127.0.0.1:{}/v1/config", app.port());
    let server = tokio::spawn(app.run_until_stopped());
    let res = reqwest::get(&url).await.expect("GET /v1/config");
    let status = res.status().as_u16();
    let body = res.text().await.expect("a body");
    server.abort();
    (status, body)
}

/// Serves the example and checks that `/v1/config` lists exactly its plans and no secret.
async fn serves_its_plans(name: &str) -> Value {
    let loaded = load(name);
    let expected = plan_ids(&loaded.catalog);
    let free = loaded.catalog.free_plan().id.clone();
    let (status, body) = get_config(loaded.settings).await;
    assert_eq!(status, 200, "{name}: {body}");
    for secret in ["sk_", "rk_", "whsec_"] {
        assert!(
            !body.contains(secret),
            "{name}: /v1/config shows `{secret}`: {body}"
        );
    }
    let json: Value = serde_json::from_str(&body).expect("JSON");
    let listed: Vec<String> = json["plans"]
        .as_array()
        .expect("plans")
        .iter()
        .map(|p| p["id"].as_str().expect("plan id").to_owned())
        .collect();
    assert_eq!(listed, expected, "{name}: /v1/config plans");
    assert_eq!(json["free_plan"], free.as_str(), "{name}");
    json
}

/// Every key path of a TOML file, `plans` excluded (each example has its own catalog).
fn key_paths(path: &PathBuf) -> BTreeSet<String> {
    fn walk(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
        if let Value::Object(map) = value {
            for (k, v) in map {
                if prefix.is_empty() && k == "plans" {
                    continue;
                }
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(key.clone());
                // A map keyed by quota names, as `plans` is a list: its keys are not settings.
                if key != "events.quota_thresholds" {
                    walk(&key, v, out);
                }
            }
        }
    }
    let value: Value = Figment::from(Toml::file_exact(path))
        .extract()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BTreeSet::new();
    walk("", &value, &mut out);
    out
}

#[test]
fn every_example_is_a_complete_configuration() {
    // Nothing is merged from default.toml, so each example sets every key it sets.
    let default_keys = key_paths(&config_path("default.toml"));
    for name in EXAMPLES {
        let keys = key_paths(&example_path(name));
        // `[dev]` is for a developer's machine, never a product's configuration.
        let missing: Vec<_> = default_keys
            .difference(&keys)
            .filter(|k| !(k.as_str() == "dev" || k.starts_with("dev.")))
            .collect();
        assert!(
            missing.is_empty(),
            "{name} lacks keys of default.toml: {missing:?}"
        );
        let extra: Vec<_> = keys
            .difference(&default_keys)
            .filter(|k| k.as_str() != "auth.jwks_url")
            .collect();
        assert!(
            extra.is_empty(),
            "{name} has keys default.toml lacks: {extra:?}"
        );
        let settings = load(name).settings;
        assert!(
            settings.stripe.secret_key.is_none(),
            "{name}: the secret key comes from the environment"
        );
        assert!(
            settings.stripe.webhook_secrets.is_empty(),
            "{name}: webhook secrets come from the environment"
        );
        assert!(settings.auth.issuer.is_some(), "{name}: auth.issuer is set");
    }
}

#[tokio::test]
async fn seed_000_video_meetings() {
    let name = "000_video_meetings.toml";
    let Loaded {
        settings,
        catalog,
        _dir,
    } = load(name);
    assert!(
        !settings.saas,
        "SAAS is off unless the operator turns it on"
    );
    assert_eq!(plan_ids(&catalog), ["free", "monthly", "lifetime"]);
    assert_eq!(catalog.free_plan().id, "free");

    let monthly = plan(&catalog, "monthly");
    assert_eq!(monthly.kind, PlanKind::Subscription);
    assert_eq!(amounts(monthly), [(Interval::Month, 900)]);

    let lifetime = plan(&catalog, "lifetime");
    assert_eq!(lifetime.kind, PlanKind::Lifetime);
    assert_eq!(amounts(lifetime), [(Interval::Once, 19900)]);
    assert!(lifetime.rank > monthly.rank);

    let envs: Vec<_> = settings
        .plans
        .iter()
        .flat_map(|p| &p.prices)
        .filter_map(|p| p.price_id_env.as_deref())
        .collect();
    assert_eq!(
        envs,
        ["STRIPE_MONTHLY_PRICE_ID", "STRIPE_LIFETIME_PRICE_ID"]
    );

    assert_eq!(settings.exemptions.roles, ["admin", "demo"]);

    let json = serves_its_plans(name).await;
    assert_eq!(json["saas"], false);
}

#[tokio::test]
async fn seed_001_accounts_service() {
    let name = "001_accounts_service.toml";
    let Loaded {
        settings,
        catalog,
        _dir,
    } = load(name);
    assert!(settings.saas);
    let allowed = &settings.stripe.allowed_price_ids;
    assert_eq!(
        allowed,
        &["price_xstream_paygo", "price_xstream_subscription"]
    );

    // Literal price ids: every one is allowlisted, and each allowlisted id sells something.
    let mut configured = Vec::new();
    for plan in catalog.plans() {
        for price in &plan.prices {
            let id = price
                .price_id
                .as_deref()
                .unwrap_or_else(|| panic!("plan `{}` has a literal price id", plan.id));
            assert!(allowed.iter().any(|a| a == id), "`{id}` is not allowlisted");
            configured.push(id.to_owned());
        }
    }
    for id in allowed {
        assert!(
            configured.contains(id),
            "allowlisted `{id}` belongs to no plan"
        );
    }

    let (paygo, price) = catalog
        .by_price_id("price_xstream_paygo")
        .expect("paygo plan");
    assert_eq!(paygo.kind, PlanKind::CreditPack);
    assert_eq!(price.interval, Interval::Once);
    let (sub, price) = catalog
        .by_price_id("price_xstream_subscription")
        .expect("subscription plan");
    assert_eq!(sub.kind, PlanKind::Subscription);
    assert_eq!(price.interval, Interval::Month);

    let json = serves_its_plans(name).await;
    let ids: Vec<_> = json["plans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["prices"].as_array().unwrap().iter())
        .map(|p| p["price_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        allowed.iter().cloned().collect::<BTreeSet<_>>()
    );
}

#[tokio::test]
async fn seed_002_tiered_credits() {
    let name = "002_tiered_credits.toml";
    let Loaded {
        settings,
        catalog,
        _dir,
    } = load(name);
    assert!(settings.saas);
    assert_eq!(catalog.free_plan().id, "free");

    // The lifetime license invites its buyer to the seed's organization and team (GH_PAT,
    // GITHUB_ORG_NAME, GITHUB_TEAM_SLUG).
    assert_eq!(settings.github_plans(), vec!["lifetime".to_owned()]);
    let github = &settings.provisioning.github;
    assert_eq!(
        (
            github.organization_env.as_str(),
            github.team_slug_env.as_str(),
            github.token_env.as_str()
        ),
        ("GITHUB_ORG_NAME", "GITHUB_TEAM_SLUG", "GH_PAT")
    );
    // Without the token (the value this test gave in place of GH_PAT), start-up names it.
    let dir = TempDir::new().expect("temporary directory");
    let figment = figment_for(name, &dir)
        .merge(("provisioning.github.token", ""))
        .merge((
            "provisioning.github.token_env",
            "TOLLGATE_TEST_UNSET_GITHUB_TOKEN",
        ));
    let err = Settings::extract(figment)
        .expect_err("no token: refused")
        .to_string();
    assert!(
        err.contains("provisioning.github.token_env")
            && err.contains("TOLLGATE_TEST_UNSET_GITHUB_TOKEN is not set"),
        "{err}"
    );

    // `unlimited` is how the product stores agency.
    assert_eq!(plan(&catalog, "unlimited").id, "agency");
    assert_eq!(plan(&catalog, "UNLIMITED").id, "agency");

    let daily = |limit| Quota {
        limit: QuotaLimit::Limited(limit),
        period: QuotaPeriod::Day,
    };
    for (tier, credits) in [("free", 10), ("maker", 30), ("pro", 100), ("agency", 500)] {
        let p = plan(&catalog, tier);
        assert_eq!(p.kind, PlanKind::Subscription, "{tier}");
        assert_eq!(quota(p, "credits"), daily(credits), "{tier}");
    }

    // The seed's amounts; yearly is 25% off twelve months.
    let expected: BTreeMap<&str, [(Interval, i64); 2]> = [
        ("maker", [(Interval::Month, 1299), (Interval::Year, 11691)]),
        ("pro", [(Interval::Month, 2499), (Interval::Year, 22491)]),
        ("agency", [(Interval::Month, 3999), (Interval::Year, 35991)]),
    ]
    .into();
    for (tier, prices) in &expected {
        let p = plan(&catalog, tier);
        assert_eq!(amounts(p), prices, "{tier}");
        assert_eq!(p.trial_days, 3, "{tier}: the default 3-day trial");
        assert!(p.rank > catalog.free_plan().rank);
    }
    assert!(plan(&catalog, "maker").rank < plan(&catalog, "pro").rank);
    assert!(plan(&catalog, "pro").rank < plan(&catalog, "agency").rank);
    assert_eq!(settings.billing.default_trial_days, 3);
    let paid_subscriptions: Vec<_> = catalog
        .plans()
        .iter()
        .filter(|p| p.kind == PlanKind::Subscription && !p.is_free())
        .collect();
    assert_eq!(paid_subscriptions.len(), 3);
    for p in &paid_subscriptions {
        assert_eq!(intervals(p), [Interval::Month, Interval::Year], "{}", p.id);
    }

    // The seed's variable names for the tiers and the license.
    let envs: BTreeSet<_> = settings
        .plans
        .iter()
        .flat_map(|p| &p.prices)
        .filter_map(|p| p.price_id_env.as_deref())
        .collect();
    for env in [
        "STRIPE_PRICE_MAKER",
        "STRIPE_PRICE_MAKER_YEARLY",
        "STRIPE_PRICE_PRO",
        "STRIPE_PRICE_PRO_YEARLY",
        "STRIPE_PRICE_AGENCY",
        "STRIPE_PRICE_AGENCY_YEARLY",
        "STRIPE_PRICE_LIFETIME",
    ] {
        assert!(envs.contains(env), "{env} is not used");
    }

    let lifetime = catalog
        .plans()
        .iter()
        .find(|p| p.kind == PlanKind::Lifetime)
        .expect("a lifetime plan");
    assert_eq!(intervals(lifetime), [Interval::Once]);
    assert_eq!(lifetime.trial_days, 0);

    let pack = catalog
        .plans()
        .iter()
        .find(|p| p.kind == PlanKind::CreditPack)
        .expect("a credit pack");
    assert_eq!(intervals(pack), [Interval::Once]);
    assert_eq!(quota(pack, "credits").period, QuotaPeriod::None);
    // Exempt callers get the top tier, never the pack.
    assert_eq!(catalog.top_plan().id, "agency");

    assert!(settings.checkout.rate_limit_per_minute <= 5);
    assert_eq!(settings.exemptions.roles, ["admin"]);
    assert!(settings
        .auth
        .issuer
        .as_deref()
        .unwrap()
        .contains("supabase.co"));
    assert_eq!(settings.auth.audience, ["authenticated"]);

    let json = serves_its_plans(name).await;
    let agency = json["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "agency")
        .expect("agency listed");
    assert_eq!(agency["aliases"], serde_json::json!(["unlimited"]));
    assert_eq!(agency["quotas"]["credits"]["limit"], 500);
    assert_eq!(agency["quotas"]["credits"]["period"], "day");
}

#[tokio::test]
async fn seed_003_multi_tenant() {
    let name = "003_multi_tenant.toml";
    let Loaded {
        settings,
        catalog,
        _dir,
    } = load(name);
    assert!(settings.saas);
    let names: Vec<_> = catalog.plans().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Free", "Basic", "Enterprise"]);
    assert_eq!(catalog.free_plan().id, "free");
    assert!(catalog.free_plan().is_free());
    let (basic, enterprise) = (plan(&catalog, "basic"), plan(&catalog, "enterprise"));
    for p in [basic, enterprise] {
        assert_eq!(p.kind, PlanKind::Subscription, "{}", p.id);
        assert_eq!(intervals(p), [Interval::Month], "{}", p.id);
    }
    assert!(catalog.free_plan().rank < basic.rank && basic.rank < enterprise.rank);
    assert_eq!(settings.auth.claims.tenant, "tenant_id");
    // Workspaces subscribe: every plan, the free one included, is the tenant's.
    for p in catalog.plans() {
        assert_eq!(p.scope, Scope::Tenant, "{}", p.id);
    }

    let json = serves_its_plans(name).await;
    for p in json["plans"].as_array().unwrap() {
        assert_eq!(p["scope"], "tenant", "{}", p["id"]);
    }
}

#[tokio::test]
async fn seed_004_ai_generations() {
    let name = "004_ai_generations.toml";
    let Loaded {
        settings,
        catalog,
        _dir,
    } = load(name);
    assert!(settings.saas);
    let paid: Vec<_> = catalog.plans().iter().filter(|p| !p.is_free()).collect();
    assert_eq!(paid.len(), 1, "one paid plan");
    let pro = paid[0];
    assert_eq!(pro.kind, PlanKind::Subscription);
    assert_eq!(
        quota(pro, "generations"),
        Quota {
            limit: QuotaLimit::Limited(250),
            period: QuotaPeriod::BillingMonth,
        }
    );
    assert_eq!(
        amounts(pro),
        [(Interval::Month, 500), (Interval::Year, 5000)]
    );
    let envs: Vec<_> = settings
        .plans
        .iter()
        .flat_map(|p| &p.prices)
        .filter_map(|p| p.price_id_env.as_deref())
        .collect();
    assert_eq!(envs, ["STRIPE_PRICE_ID_MONTHLY", "STRIPE_PRICE_ID_YEARLY"]);
    assert!(
        catalog.free_plan().quotas.is_empty(),
        "no generations without paying"
    );

    assert_eq!(settings.billing.grace_period_hours, 24);
    assert_eq!(settings.auth.claims.roles, "groups");
    assert_eq!(settings.exemptions.roles, ["kaboot-ai-access"]);
    assert!(settings
        .auth
        .issuer
        .as_deref()
        .unwrap()
        .contains("/application/o/"));

    let json = serves_its_plans(name).await;
    let listed = json["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == pro.id.as_str())
        .expect("paid plan listed");
    assert_eq!(listed["quotas"]["generations"]["limit"], 250);
    assert_eq!(listed["quotas"]["generations"]["period"], "billing_month");
}

/// `NAME=value` pairs of `TOLLGATE_*` variables in `.env.example` (commented out there).
fn env_example() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(config_path("../.env.example")).unwrap();
    text.lines()
        .filter_map(|l| l.trim_start_matches('#').trim().split_once('='))
        .filter(|(name, _)| name.starts_with("TOLLGATE_") && !name.contains(' '))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn every_setting_in_env_example_is_a_key_and_its_example_value_loads() {
    let dir = TempDir::new().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let mut figment = Figment::new()
        .merge(Toml::file_exact(config_path("default.toml")))
        .merge(("database.url", db_url));
    let pairs = env_example();
    assert!(pairs.len() >= 10, "{pairs:?}");
    for (name, value) in &pairs {
        if name == "TOLLGATE_CONFIG" {
            assert!(
                config_path(&format!("../{value}")).exists(),
                "{name}={value}"
            );
            continue;
        }
        if value.is_empty() {
            continue;
        }
        let key = name["TOLLGATE_".len()..]
            .to_ascii_lowercase()
            .replace("__", ".");
        let value: figment::value::Value = value.parse().unwrap();
        figment = figment.merge((key, value));
    }
    // Unknown keys are refused (deny_unknown_fields), so a misspelt name fails here.
    if let Err(e) = Settings::extract(figment) {
        panic!(".env.example's values do not load: {e}");
    }
}

#[test]
fn compose_passes_through_only_documented_settings() {
    let compose = std::fs::read_to_string(config_path("../docker-compose.yml")).unwrap();
    let documented: BTreeSet<String> = env_example().into_iter().map(|(n, _)| n).collect();
    let passed: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|v| v.split('=').next().unwrap_or(v))
        .filter(|v| v.starts_with("TOLLGATE_"))
        .collect();
    assert!(passed.contains(&"TOLLGATE_DEV__TOKENS"), "{passed:?}");
    assert!(passed.contains(&"TOLLGATE_CONFIG"), "{passed:?}");
    for name in passed {
        assert!(
            documented.contains(name),
            "{name} is passed by compose but not in .env.example"
        );
    }
}
