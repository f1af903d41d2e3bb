//! The test suite's fake Stripe (`tests/api/helpers/fake_stripe.rs`) on a fixed port, for trying
//! Tollgate by hand without a Stripe account: customers, Checkout Sessions, subscriptions,
//! charges and the billing portal, kept in memory. A session's `url` pays it: opening it
//! completes the session as paying does and redirects to the success URL. Not part of the
//! service; see the README's walkthrough.
//!
//! ```sh
//! cargo run --example fake_stripe            # listens on 127.0.0.1:12111
//! cargo run --example fake_stripe -- 12345   # another port
//! ```

#[allow(dead_code)]
#[path = "../tests/api/helpers/fake_stripe.rs"]
mod fake_stripe;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().context("usage: fake_stripe [PORT]")?,
        None => 12111,
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("could not listen on 127.0.0.1:{port}"))?;
    let fake = fake_stripe::FakeStripe::start_payable(listener).await;
    println!(
        "fake Stripe listening on {uri}\n\
         start Tollgate against it with:\n\
         \n  export TOLLGATE_STRIPE__API_BASE={uri} STRIPE_SECRET_KEY=sk_test_fake STRIPE_WEBHOOK_SECRET=whsec_fake\n\
         \x20 export STRIPE_MONTHLY_PRICE_ID=price_pro_monthly STRIPE_YEARLY_PRICE_ID=price_pro_yearly STRIPE_LIFETIME_PRICE_ID=price_lifetime\n",
        uri = fake.server.uri()
    );
    std::future::pending::<()>().await;
    Ok(())
}
