//! `GET /v1/config`: what a pricing page needs. Never a secret.

use std::collections::BTreeMap;

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::billing::catalog::{PlanKind, Price, Quota};
use crate::billing::scope::Scope;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
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

#[derive(Serialize, ToSchema)]
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
