//! Tollgate's HTTP client for async-stripe's request types: every attempt waits for the
//! replica's Stripe budget ([`StripeBudget`]), and retries follow Stripe's guidance —
//! `Stripe-Should-Retry` when Stripe sends it, else its transient statuses (409, 424, 429,
//! 5xx) and network failures — with the same idempotency key, backing off between attempts.
//! A 429 also pauses the replica's background work. The caller holds no database connection
//! or lock while this runs (see `Database::with_customer_lock`).
//!
//! async-stripe's own client retries inside itself, where neither the budget nor the 429
//! pause could see its attempts; this one sends each attempt with reqwest.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use stripe::StripeError;
use stripe_client_core::{CustomizedStripeRequest, RequestStrategy, StripeClient, StripeMethod};

use super::budget::StripeBudget;

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 3;
/// The wait before the second attempt; it doubles before each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct StripeHttp {
    http: reqwest::Client,
    /// Ends with `/`; requests go to `{base}v1{path}`.
    base: String,
    authorization: reqwest::header::HeaderValue,
    budget: Arc<StripeBudget>,
}

impl StripeHttp {
    pub fn new(
        base: String,
        secret_key: &str,
        timeout: Duration,
        budget: Arc<StripeBudget>,
    ) -> anyhow::Result<Self> {
        let mut authorization = reqwest::header::HeaderValue::from_str(&format!(
            "Bearer {secret_key}"
        ))
        .map_err(|_| anyhow::anyhow!("the Stripe secret key is not a valid header value"))?;
        authorization.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("Tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(StripeHttp {
            http,
            base,
            authorization,
            budget,
        })
    }
}

impl StripeHttp {
    pub(super) fn budget(&self) -> &StripeBudget {
        &self.budget
    }
}

/// What one attempt came to.
enum Attempt {
    Ok(Bytes),
    /// Stripe answered an error status; `retry` is its `Stripe-Should-Retry` header.
    Status {
        error: StripeError,
        status: u16,
        retry: Option<bool>,
    },
    /// No answer (network failure, timeout).
    Failed(StripeError),
}

/// Stripe's transient statuses, when it does not say whether to retry.
fn transient(status: u16) -> bool {
    matches!(status, 409 | 424 | 429 | 500..=504)
}

impl StripeHttp {
    async fn attempt(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Attempt {
        let mut request = self
            .http
            .request(method, url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header("Stripe-Version", stripe_client_core::VERSION.as_str());
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body.to_owned());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => return Attempt::Failed(StripeError::Timeout),
            Err(e) => return Attempt::Failed(StripeError::ClientError(e.to_string())),
        };
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("Stripe-Should-Retry")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return Attempt::Failed(StripeError::ClientError(e.to_string())),
        };
        if (200..300).contains(&status) {
            return Attempt::Ok(bytes);
        }
        let error = serde_json::from_slice::<stripe_shared::Error>(&bytes)
            .map(|e| StripeError::Stripe(e.error, status))
            .unwrap_or_else(|_| {
                StripeError::ClientError(format!("Stripe answered {status} without an error body"))
            });
        Attempt::Status {
            error,
            status,
            retry,
        }
    }
}

fn counted(outcome: &'static str) {
    metrics::counter!("tollgate_stripe_attempts_total", "outcome" => outcome).increment(1);
}

impl StripeClient for StripeHttp {
    type Err = StripeError;

    async fn execute(&self, request: CustomizedStripeRequest) -> Result<Bytes, StripeError> {
        let (request, config) = request.into_pieces();
        let method = match request.method {
            StripeMethod::Get => reqwest::Method::GET,
            StripeMethod::Post => reqwest::Method::POST,
            StripeMethod::Delete => reqwest::Method::DELETE,
        };
        let mut url = format!("{}v1{}", self.base, request.path);
        if let Some(query) = &request.query {
            url.push('?');
            url.push_str(query);
        }
        // Every attempt of a write carries the same key, so a retry never writes twice.
        let idempotency_key = match (&config.request_strategy, &method) {
            (Some(RequestStrategy::Idempotent(key)), _) => Some(key.as_str().to_owned()),
            (_, &reqwest::Method::POST) => Some(format!("tollgate-{}", uuid::Uuid::new_v4())),
            _ => None,
        };
        let mut backoff = FIRST_BACKOFF;
        let mut tries = 0;
        loop {
            self.budget.acquire().await;
            tries += 1;
            let last = tries >= ATTEMPTS;
            let wait = match self
                .attempt(
                    method.clone(),
                    &url,
                    request.body.as_deref(),
                    idempotency_key.as_deref(),
                )
                .await
            {
                Attempt::Ok(bytes) => {
                    counted("ok");
                    self.budget.accepted();
                    return Ok(bytes);
                }
                Attempt::Status {
                    error,
                    status,
                    retry,
                } => {
                    let retryable = retry.unwrap_or_else(|| transient(status));
                    if status == 429 {
                        counted("rate_limited");
                        let pause = self.budget.rate_limited();
                        if last || !retryable {
                            return Err(error);
                        }
                        pause.max(backoff)
                    } else {
                        // A 4xx Stripe asks to retry (409, 424) is a failure, not a refusal.
                        counted(if (400..500).contains(&status) && !retryable {
                            "refused"
                        } else {
                            "failed"
                        });
                        if last || !retryable {
                            return Err(error);
                        }
                        backoff
                    }
                }
                Attempt::Failed(error) => {
                    counted("failed");
                    if last {
                        return Err(error);
                    }
                    backoff
                }
            };
            tracing::debug!(path = %request.path, tries, ?wait, "retrying a Stripe request");
            tokio::time::sleep(wait).await;
            backoff *= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stripe_core::customer::RetrieveCustomer;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(server: &MockServer) -> (StripeHttp, Arc<StripeBudget>) {
        let budget = Arc::new(StripeBudget::new(100.0, 0.8, 0.4));
        let http = StripeHttp::new(
            format!("{}/", server.uri()),
            "sk_test_budget",
            Duration::from_secs(5),
            budget.clone(),
        )
        .unwrap();
        (http, budget)
    }

    fn stripe_error(status: u16) -> ResponseTemplate {
        ResponseTemplate::new(status).set_body_json(serde_json::json!({
            "error": {"type": "api_error", "message": "try later"}
        }))
    }

    #[tokio::test]
    async fn stripe_saying_not_to_retry_is_asked_once() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_1"))
            .respond_with(stripe_error(500).insert_header("Stripe-Should-Retry", "false"))
            .expect(1)
            .mount(&server)
            .await;
        let (http, _) = client(&server);
        let result = RetrieveCustomer::new("cus_1").send(&http).await;
        assert!(
            matches!(result, Err(StripeError::Stripe(_, 500))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_with_the_same_idempotency_key() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/customers"))
            .respond_with(stripe_error(500))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/customers"))
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(
                    std::fs::read_to_string("tests/fixtures/stripe/customer.json")
                        .unwrap_or_else(|_| String::from("{}")),
                    "application/json",
                ),
            )
            .mount(&server)
            .await;
        let (http, _) = client(&server);
        let _ = stripe_core::customer::CreateCustomer::new()
            .send(&http)
            .await;
        let received = server.received_requests().await.unwrap();
        assert_eq!(received.len(), 2);
        let keys: Vec<_> = received
            .iter()
            .map(|r| r.headers.get("Idempotency-Key").cloned())
            .collect();
        assert!(keys[0].is_some());
        assert_eq!(keys[0], keys[1]);
        assert_eq!(
            received[0].headers.get("Authorization").unwrap(),
            "Bearer sk_test_budget"
        );
        assert_eq!(
            received[0].headers.get("Stripe-Version").unwrap(),
            stripe_client_core::VERSION.as_str()
        );
    }

    #[tokio::test]
    async fn a_429_pauses_background_work_and_is_retried_after_the_pause() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_1"))
            .respond_with(stripe_error(429))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v1/customers/cus_1"))
            .respond_with(stripe_error(404))
            .mount(&server)
            .await;
        let (http, budget) = client(&server);
        let result = RetrieveCustomer::new("cus_1").send(&http).await;
        // Retried after the 429, then refused for good (a 404 is not retried).
        assert!(
            matches!(result, Err(StripeError::Stripe(_, 404))),
            "{result:?}"
        );
        let received = server.received_requests().await.unwrap();
        assert_eq!(received.len(), 2);
        // The pause ran its course before the retry went out.
        assert!(budget.paused_until().is_none());
    }
}
