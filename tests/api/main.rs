//! Black-box tests over HTTP: each test spawns Tollgate on port 0 with its own database, a
//! fake Stripe and a fake identity provider (see `helpers`).

mod helpers;

mod auth;
mod checkout;
mod cors;
mod entitlements;
mod events;
mod grants;
mod hardening;
mod inbox;
mod licenses;
mod listing;
mod metrics;
mod ops;
mod ordering;
mod payments;
mod quotas;
mod reconcile;
mod snapshot_cache;
mod subscription;
mod tenants;
mod webhooks;
