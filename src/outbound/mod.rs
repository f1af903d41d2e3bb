//! The outbound boundary: the only code that POSTs events to the product's endpoints. Each
//! delivery is signed as Standard Webhooks specify (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>`), by the specification's
//! own crate.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;
use standardwebhooks::Webhook;

use crate::config::EventSettings;

/// Where one endpoint's deliveries go and how they are signed.
struct Target {
    url: url::Url,
    signer: Webhook,
}

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered { status: u16 },
    /// Anything else: another status, no answer in time, no connection.
    Failed { status: Option<u16>, error: String },
}

/// Sends deliveries to the configured endpoints.
pub struct Sender {
    http: reqwest::Client,
    targets: HashMap<String, Target>,
}

impl Sender {
    pub fn new(settings: &EventSettings) -> anyhow::Result<Sender> {
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A receiver's redirect is its mistake, never a reason to send billing state
            // elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tollgate/", env!("CARGO_PKG_VERSION"), " (events)"))
            .build()?;
        let mut targets = HashMap::new();
        for endpoint in &settings.endpoints {
            let secret = endpoint.secret().with_context(|| {
                format!("events endpoint {} has no signing secret", endpoint.name)
            })?;
            let signer = Webhook::new(secret.expose_secret()).map_err(|e| {
                anyhow::anyhow!("events endpoint {}: its secret: {e}", endpoint.name)
            })?;
            let url = url::Url::parse(&endpoint.url)
                .with_context(|| format!("events endpoint {}: its url", endpoint.name))?;
            targets.insert(endpoint.name.clone(), Target { url, signer });
        }
        Ok(Sender { http, targets })
    }

    /// The endpoints this replica delivers to.
    pub fn endpoints(&self) -> Vec<String> {
        let mut names: Vec<String> = self.targets.keys().cloned().collect();
        names.sort();
        names
    }

    /// One attempt: POST `payload` to `endpoint`, signed now. (The wall clock, not the
    /// service's: receivers check the timestamp against theirs.)
    pub async fn send(&self, endpoint: &str, event_id: &str, payload: &str) -> Outcome {
        let Some(target) = self.targets.get(endpoint) else {
            return Outcome::Failed {
                status: None,
                error: format!("endpoint `{endpoint}` is not configured on this replica"),
            };
        };
        let timestamp = Utc::now().timestamp();
        let signature = match target.signer.sign(event_id, timestamp, payload.as_bytes()) {
            Ok(signature) => signature,
            Err(e) => {
                return Outcome::Failed {
                    status: None,
                    error: format!("could not sign: {e}"),
                }
            }
        };
        let answer = self
            .http
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload.to_owned())
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => Outcome::Delivered {
                status: response.status().as_u16(),
            },
            Ok(response) => Outcome::Failed {
                status: Some(response.status().as_u16()),
                error: format!("answered {}", response.status()),
            },
            Err(e) if e.is_timeout() => Outcome::Failed {
                status: None,
                error: "no answer in time (events.timeout_seconds)".into(),
            },
            Err(e) => Outcome::Failed {
                status: None,
                error: format!("could not deliver: {}", without_url(&e)),
            },
        }
    }
}

/// reqwest's error without the URL (a receiver's URL may hold a token).
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the endpoint");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
