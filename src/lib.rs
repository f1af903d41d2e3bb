//! Tollgate: a headless billing API for SaaS products that sell through Stripe.
//!
//! Layout: `billing` holds the pure rules, `service` the use cases, `api` the HTTP handlers;
//! `db`, `stripe` and `identity` are the three boundaries (database backends, Stripe, callers).

pub mod api;
pub mod billing;
pub mod config;
pub mod db;
pub mod error;
pub mod github;
pub mod identity;
pub mod outbound;
pub mod service;
pub mod startup;
pub mod state;
pub mod stripe;
pub mod telemetry;
