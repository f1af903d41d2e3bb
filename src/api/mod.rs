//! The HTTP API: thin handlers that extract, parse, call a use case and map the result.
//! Every endpoint carries `#[utoipa::path]`; the document is collected from the routes
//! themselves, so what is served and what is documented cannot drift apart.

mod admin;
mod audit;
mod checkout;
mod config;
mod entitlements;
mod events;
mod grants;
mod licenses;
mod ops;
mod params;
mod payments;
mod responses;
mod status;
mod subscription;
mod subscriptions;
mod tenants;
mod usage;
mod webhooks;

use actix_web::App;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

use crate::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate",
        description = "Headless billing API for SaaS products that sell through Stripe.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "frontend", description = "Called by the product's frontend with the end user's JWT."),
        (name = "services", description = "Called by sibling services with a service JWT carrying scopes."),
        (name = "stripe", description = "Called by Stripe."),
        (name = "operations", description = "Health, readiness and documentation."),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Registers every documented endpoint.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(ops::healthz)
        .service(ops::readyz)
        .service(config::get_config)
        .service(checkout::create_checkout)
        .service(checkout::verify_checkout)
        .service(checkout::create_portal)
        .service(status::get_status)
        .service(payments::list_payments)
        .service(subscriptions::list_subscriptions)
        .service(subscription::cancel_subscription)
        .service(subscription::resume_subscription)
        .service(subscription::change_subscription)
        .service(entitlements::explain_entitlements)
        .service(entitlements::get_entitlements)
        .service(usage::create_usage)
        .service(tenants::delete_tenant)
        .service(tenants::delete_member)
        .service(tenants::put_manager)
        .service(webhooks::stripe_webhook)
        .service(events::list_events)
        .service(events::list_failed)
        .service(events::redeliver)
        .service(grants::create_grant)
        .service(grants::list_grants)
        .service(grants::delete_grant)
        .service(licenses::list_licenses)
        .service(licenses::submit_github)
        .service(licenses::admin_list_licenses)
        .service(audit::list_audit)
        .service(admin::admin_sync)
        .service(admin::admin_sync_job)
        .service(admin::admin_webhooks_stuck)
        .service(ops::metrics);
}

/// The OpenAPI document of the routes above (what `/openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes)
        .split_for_parts();
    api
}

pub fn base_openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The methods a documented path answers (`GET, POST`), for a 405 with `Allow`; `None` for a
/// path no endpoint has. Read from the OpenAPI document, so it cannot drift from the routes.
pub fn allowed_methods(path: &str) -> Option<&'static str> {
    use actix_web::dev::ResourceDef;
    static ROUTES: std::sync::OnceLock<Vec<(ResourceDef, String)>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods: Vec<&str> = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ]
                .into_iter()
                .filter_map(|(name, present)| present.then_some(name))
                .collect();
                (ResourceDef::new(path.as_str()), methods.join(", "))
            })
            .collect()
    });
    routes
        .iter()
        .find(|(def, _)| def.is_match(path))
        .map(|(_, methods)| methods.as_str())
}
