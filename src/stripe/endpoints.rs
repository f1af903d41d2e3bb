//! Tollgate's webhook endpoint on Stripe (`tollgate stripe webhook-endpoint`): created with
//! exactly the events Tollgate acts on ([`EVENTS`]) and pinned to the API version it speaks, or,
//! when one already listens at the URL, brought up to date.

use secrecy::SecretString;
use stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, ListWebhookEndpoint,
    UpdateWebhookEndpoint, UpdateWebhookEndpointEnabledEvents,
};
use url::Url;

use super::webhook::EVENTS;
use super::{GatewayError, StripeGateway};

/// Where Tollgate receives Stripe's events (`api::webhooks`).
pub const WEBHOOK_PATH: &str = "/v1/webhooks/stripe";

/// The API version Tollgate speaks: the one async-stripe was generated for, which it sends with
/// every request and whose shapes its types hold.
pub fn api_version() -> &'static str {
    static VERSION: stripe_shared::ApiVersion = stripe_shared::version::VERSION;
    VERSION.as_str()
}

/// A webhook endpoint as Stripe holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    /// The version events are rendered in; `None`: the account's default version, which
    /// changes whenever the account is upgraded.
    pub api_version: Option<String>,
    pub enabled_events: Vec<String>,
    /// Stripe delivers nothing to a disabled endpoint.
    pub enabled: bool,
    pub livemode: bool,
}

impl Endpoint {
    /// Events are rendered in the version Tollgate speaks.
    pub fn speaks_our_version(&self) -> bool {
        self.api_version.as_deref() == Some(api_version())
    }
}

/// What [`StripeGateway::ensure_webhook_endpoint`] did.
#[derive(Debug)]
pub enum EndpointChange {
    /// A new endpoint, with its signing secret (Stripe shows it only in this answer).
    Created {
        endpoint: Endpoint,
        secret: Option<SecretString>,
    },
    /// An endpoint at the URL existed: its events are now Tollgate's. Stripe never shows its
    /// secret again, and cannot change its API version.
    Updated {
        endpoint: Endpoint,
        /// The events it had before.
        before: Vec<String>,
        /// Other endpoints at the same URL, left as they are.
        others: Vec<Endpoint>,
    },
}

/// Checks the URL an operator gives for the endpoint: `https`, or `http` to this machine for
/// testing (Stripe delivers live events only over HTTPS).
pub fn endpoint_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim())
        .map_err(|e| format!("`{raw}` is not a URL ({e}): give the full https:// address"))?;
    let local = match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if local => Ok(url),
        "http" => Err(format!(
            "`{raw}` is http://: give an https:// address (Stripe delivers events over HTTPS); \
             http:// is accepted only for localhost or 127.0.0.1, for testing"
        )),
        _ => Err(format!(
            "`{raw}` is not an https:// address of the server Stripe should call"
        )),
    }
}

/// A warning when the URL does not end in Tollgate's webhook path (a proxy may rewrite the
/// path, so it is not refused).
pub fn path_warning(url: &Url) -> Option<String> {
    (!url.path().ends_with(WEBHOOK_PATH)).then(|| {
        format!(
            "{url} does not end in {WEBHOOK_PATH}, where Tollgate receives Stripe's events: \
             unless a proxy forwards it there, every delivery will fail"
        )
    })
}

fn same_url(stored: &str, url: &Url) -> bool {
    Url::parse(stored).is_ok_and(|stored| &stored == url)
}

fn endpoint_read(e: stripe_misc::WebhookEndpoint) -> Endpoint {
    Endpoint {
        id: e.id.as_str().to_owned(),
        url: e.url,
        api_version: e.api_version,
        enabled_events: e.enabled_events,
        enabled: e.status == "enabled",
        livemode: e.livemode,
    }
}

impl StripeGateway {
    /// Every webhook endpoint of the account (of the key's mode).
    pub async fn webhook_endpoints(&self) -> Result<Vec<Endpoint>, GatewayError> {
        let mut out: Vec<Endpoint> = Vec::new();
        loop {
            let mut req = ListWebhookEndpoint::new().limit(100);
            if let Some(last) = out.last() {
                req = req.starting_after(last.id.clone());
            }
            let page = req.send(&self.client).await?;
            let empty = page.data.is_empty();
            out.extend(page.data.into_iter().map(endpoint_read));
            if !page.has_more || empty {
                return Ok(out);
            }
        }
    }

    /// Creates Tollgate's endpoint at `url` with [`EVENTS`] and [`api_version`], or sets the
    /// events of the endpoint already there (of several, one in Tollgate's version).
    pub async fn ensure_webhook_endpoint(
        &self,
        url: &Url,
        description: Option<&str>,
    ) -> Result<EndpointChange, GatewayError> {
        let mut same: Vec<Endpoint> = self
            .webhook_endpoints()
            .await?
            .into_iter()
            .filter(|e| same_url(&e.url, url))
            .collect();
        if same.is_empty() {
            let events: Vec<CreateWebhookEndpointEnabledEvents> = EVENTS
                .iter()
                .map(|e| e.parse().expect("infallible"))
                .collect();
            let mut req = CreateWebhookEndpoint::new(events, url.as_str())
                .api_version(stripe_shared::version::VERSION);
            if let Some(description) = description {
                req = req.description(description);
            }
            let created = req.send(&self.client).await?;
            let secret = created.secret.clone().map(SecretString::from);
            return Ok(EndpointChange::Created {
                endpoint: endpoint_read(created),
                secret,
            });
        }
        let current = same
            .iter()
            .position(Endpoint::speaks_our_version)
            .unwrap_or(0);
        let current = same.remove(current);
        let events: Vec<UpdateWebhookEndpointEnabledEvents> = EVENTS
            .iter()
            .map(|e| e.parse().expect("infallible"))
            .collect();
        let mut req = UpdateWebhookEndpoint::new(current.id.as_str()).enabled_events(events);
        if let Some(description) = description {
            req = req.description(description);
        }
        let updated = req.send(&self.client).await?;
        Ok(EndpointChange::Updated {
            endpoint: endpoint_read(updated),
            before: current.enabled_events,
            others: same,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_one_stripe_knows() {
        for event in EVENTS {
            let create: CreateWebhookEndpointEnabledEvents = event.parse().unwrap();
            let update: UpdateWebhookEndpointEnabledEvents = event.parse().unwrap();
            assert!(
                !matches!(create, CreateWebhookEndpointEnabledEvents::Unknown(_))
                    && !matches!(update, UpdateWebhookEndpointEnabledEvents::Unknown(_)),
                "{event} is not an event type of API version {}",
                api_version()
            );
        }
        let mut unique = EVENTS.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), EVENTS.len(), "an event is listed twice");
    }

    #[test]
    fn the_version_is_the_one_the_library_sends() {
        assert_eq!(api_version(), "2026-09-30.endive");
    }

    #[test]
    fn urls_are_https_except_on_this_machine() {
        for ok in [
            "https://billing.example.com/v1/webhooks/stripe",
            "https://billing.example.com:8443/tollgate/v1/webhooks/stripe",
            "http://localhost:8080/v1/webhooks/stripe",
            "http://127.0.0.1:8080/v1/webhooks/stripe",
            "http://[::1]/v1/webhooks/stripe",
        ] {
            assert!(endpoint_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://billing.example.com/v1/webhooks/stripe",
            "billing.example.com/v1/webhooks/stripe",
            "ftp://billing.example.com/v1/webhooks/stripe",
            "https://",
            "",
        ] {
            assert!(endpoint_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_path_other_than_the_webhook_path_is_a_warning() {
        let url = |s: &str| endpoint_url(s).unwrap();
        assert_eq!(
            path_warning(&url("https://b.example.com/v1/webhooks/stripe")),
            None
        );
        assert_eq!(
            path_warning(&url("https://b.example.com/billing/v1/webhooks/stripe")),
            None
        );
        for warned in [
            "https://b.example.com/",
            "https://b.example.com/v1/webhooks/stripe/",
            "https://b.example.com/webhooks",
        ] {
            assert!(path_warning(&url(warned)).is_some(), "{warned}");
        }
    }

    #[test]
    fn the_same_url_is_found_however_it_was_written() {
        let url = endpoint_url("https://B.example.com:443/v1/webhooks/stripe").unwrap();
        assert!(same_url("https://b.example.com/v1/webhooks/stripe", &url));
        assert!(!same_url("https://b.example.com/v1/webhooks/stripe/", &url));
        assert!(!same_url("https://c.example.com/v1/webhooks/stripe", &url));
    }
}
