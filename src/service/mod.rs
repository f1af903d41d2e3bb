//! Use cases: each combines the pure billing rules with the database and Stripe boundaries.
//! Handlers call these and only map their results to HTTP.

pub mod actors;
pub mod checkout;
pub mod error;
pub mod events;
pub mod gateway;
pub mod grants;
pub mod licenses;
pub mod listing;
pub mod manage;
pub mod plans;
pub mod quotas;
pub mod reconcile;
pub mod remedies;
pub mod status;
pub mod sync;
pub mod tenants;
pub mod webhooks;
