//! `GET /v1/config`: what a pricing page needs. Never a secret.

use std::collections::BTreeMap;

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::billing::catalog::{PlanKind, Price, Quota};
use crate::billing::scope::Scope;
use crate::state::AppState;

/// What a pricing page needs: the SaaS switch, the publishable key and the plan catalog.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "saas": true,
    "publishable_key": "pk_test_51NvFq2LkdIwHu7ix",
    "stripe_configured": true,
    "free_plan": "free",
    "plans": [
        {
            "id": "free", "name": "Free", "aliases": [], "rank": 0, "kind": "subscription",
            "scope": "user", "features": [],
            "quotas": {"generations": {"limit": 10, "period": "month"}},
            "trial_days": 0, "prices": []
        },
        {
            "id": "pro", "name": "Pro", "aliases": [], "rank": 10, "kind": "subscription",
            "scope": "user", "features": ["pro"],
            "quotas": {"generations": {"limit": 250, "period": "billing_period"}},
            "trial_days": 0,
            "prices": [
                {"interval": "month", "price_id": "price_1NvFq2LkdIwHu7ixMonthly", "amount": 900, "currency": "usd"},
                {"interval": "year", "price_id": "price_1NvFq2LkdIwHu7ixYearly", "amount": 9000, "currency": "usd"}
            ]
        },
        {
            "id": "lifetime", "name": "Lifetime", "aliases": [], "rank": 20, "kind": "lifetime",
            "scope": "user", "features": ["pro"],
            "quotas": {"generations": {"limit": "unlimited", "period": "month"}},
            "trial_days": 0,
            "prices": [
                {"interval": "once", "price_id": "price_1NvFq3LkdIwHu7ixLifetime", "amount": 19900, "currency": "usd"}
            ]
        }
    ]
})))]
pub struct ConfigOut {
    /// `false`: billing is off and every check allows.
    pub saas: bool,
    /// Stripe publishable key (`pk_...`), for Stripe.js.
    pub publishable_key: Option<String>,
    pub stripe_configured: bool,
    /// Id of the plan everyone holds without paying.
    pub free_plan: String,
    pub plans: Vec<PlanOut>,
}

/// One plan of the catalog, with its prices.
#[derive(Serialize, ToSchema)]
#[schema(examples(json!({
    "id": "pro", "name": "Pro", "aliases": [], "rank": 10, "kind": "subscription",
    "scope": "user", "features": ["pro"],
    "quotas": {"generations": {"limit": 250, "period": "billing_period"}},
    "trial_days": 0,
    "prices": [
        {"interval": "month", "price_id": "price_1NvFq2LkdIwHu7ixMonthly", "amount": 900, "currency": "usd"},
        {"interval": "year", "price_id": "price_1NvFq2LkdIwHu7ixYearly", "amount": 9000, "currency": "usd"}
    ]
})))]
pub struct PlanOut {
    pub id: String,
    pub name: String,
    pub aliases: Vec<String>,
    pub rank: i32,
    pub kind: PlanKind,
    /// Who the plan is bought for: `user`, `tenant` (shared by the members) or `membership`;
    /// tenant and membership checkouts need a tenant (token claim or `tenant_id`).
    pub scope: Scope,
    pub features: Vec<String>,
    pub quotas: BTreeMap<String, Quota>,
    pub trial_days: u32,
    pub prices: Vec<Price>,
}

/// Pricing configuration: plans, prices and the publishable key.
/// The configuration changes only with a deploy: browsers and CDNs may keep it five minutes.
const CONFIG_CACHE_CONTROL: &str = "public, max-age=300";

#[utoipa::path(tag = "frontend", operation_id = "v1.config.get", responses((status = 200, description = "the SaaS switch, the publishable key and the plans with their prices", body = ConfigOut, headers(("Cache-Control" = String, description = "`public, max-age=300`: the configuration changes only with a deploy")))))]
#[get("/v1/config")]
pub async fn get_config(state: web::Data<AppState>) -> HttpResponse {
    let plans = state
        .catalog
        .plans()
        .iter()
        .map(|p| PlanOut {
            id: p.id.clone(),
            name: p.name.clone(),
            aliases: p.aliases.clone(),
            rank: p.rank,
            kind: p.kind,
            scope: p.scope,
            features: p.features.clone(),
            quotas: p.quotas.clone(),
            trial_days: p.trial_days,
            prices: p.prices.clone(),
        })
        .collect();
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, CONFIG_CACHE_CONTROL))
        .json(ConfigOut {
            saas: state.settings.saas,
            publishable_key: state
                .settings
                .stripe
                .publishable_key
                .clone()
                .filter(|k| !k.is_empty()),
            stripe_configured: state.stripe.is_some(),
            free_plan: state.catalog.free_plan().id.clone(),
            plans,
        })
}
