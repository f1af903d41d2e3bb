//! The contract check's target (used by `scripts/contract.sh`, not part of the service): a
//! Tollgate on SQLite with the test suite's fake Stripe and fake identity provider (the same
//! code as `tests/api/helpers`, real HTTP servers on localhost), so that schemathesis can call
//! every endpoint with real tokens.
//!
//! ```sh
//! cargo run --example contract_env -- /tmp/contract
//! ```
//!
//! Writes into the directory: `address` (Tollgate's base URL), `user_token` (an end user's JWT)
//! and `service_token` (a service JWT holding the read, write and admin scopes), then serves
//! until it is killed.

#[allow(dead_code)]
#[path = "../tests/api/helpers/mod.rs"]
mod helpers;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: contract_env <directory for the address and tokens>")?;
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let app = helpers::spawn_app().await;
    // The subject a contract run buys for, so that verify, portal and change reach their
    // success paths too.
    let user = app.user_token("contract-user");
    let service = app
        .idp
        .service_token("billing:read billing:write billing:admin");
    std::fs::write(dir.join("user_token"), &user)?;
    std::fs::write(dir.join("service_token"), &service)?;
    // Written last: its presence says the rest is ready.
    std::fs::write(dir.join("address"), &app.address)?;
    println!("contract target at {}", app.address);
    std::future::pending::<()>().await;
    Ok(())
}
