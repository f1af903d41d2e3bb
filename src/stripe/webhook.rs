//! Webhook signature checking (Stripe's `v1` scheme: HMAC-SHA256 of `{t}.{payload}`, 300 s
//! tolerance, any of several secrets for rotation) and the little Tollgate reads from an event:
//! webhooks are signals, the state itself is re-read from Stripe.
//!
//! The check is Stripe's documented scheme on aws-lc-rs's HMAC and constant-time comparison,
//! not async-stripe-webhook's `construct_event`: that one also parses the whole event into its
//! typed structs after the check, which Tollgate threw away, and that parse was the largest
//! part of a delivery's CPU. The tests hold the two to the same verdicts (`agrees_with_async_stripe`).

use aws_lc_rs::{constant_time, hmac};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::ids::{
    ChargeId, CheckoutSessionId, CustomerId, EventId, InvalidStripeId, PaymentIntentId,
};

/// The event types Tollgate acts on: for each, it re-reads from Stripe the customer the event
/// concerns (`service::webhooks`); any other type is recorded and acknowledged. The one list:
/// `tollgate stripe webhook-endpoint` subscribes the endpoint to exactly these, and
/// docs/STRIPE_SETUP.md lists them (a test keeps it equal).
pub const EVENTS: &[&str] = &[
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
    "subscription_schedule.created",
    "subscription_schedule.updated",
    "subscription_schedule.released",
    "subscription_schedule.canceled",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "customer.deleted",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    #[error("the Stripe-Signature header is missing")]
    MissingSignature,
    #[error("no signature matches any configured webhook secret")]
    BadSignature,
    #[error("the signature timestamp is outside the 300 s tolerance")]
    Stale,
    #[error("the event is not a Stripe event: {0}")]
    Malformed(String),
}

/// A signed event, reduced to what routing needs. Every field is parsed here, at the edge: an
/// event whose ids Tollgate could not store or send back to Stripe is refused as malformed.
#[derive(Debug, Clone)]
pub struct VerifiedEvent {
    pub id: EventId,
    /// `customer.subscription.updated`: lower-case letters, digits, `_` and `.`.
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub livemode: bool,
    /// The Stripe customer the event concerns, if it names one.
    pub customer: Option<CustomerId>,
    /// The Checkout Session of a `checkout.session.*` event.
    pub checkout_session: Option<CheckoutSessionId>,
    /// The charge a `charge.*` event concerns (a dispute names it in `charge`).
    pub charge: Option<ChargeId>,
    /// The payment intent a dispute names.
    pub payment_intent: Option<PaymentIntentId>,
}

/// The earliest and latest `created` accepted (1970 to the end of 9999): what both databases
/// store.
const CREATED_RANGE: std::ops::RangeInclusive<i64> = 0..=253_402_300_799;
const MAX_EVENT_TYPE_BYTES: usize = 100;

/// How far a signature's timestamp may be from now, either way (Stripe's libraries' default).
const TOLERANCE_SECONDS: i64 = 300;

/// Checks the signature against each secret and parses the envelope.
pub fn verify(
    payload: &str,
    signature: Option<&str>,
    secrets: &[SecretString],
) -> Result<VerifiedEvent, WebhookRejection> {
    let signature = signature.ok_or(WebhookRejection::MissingSignature)?;
    check_signature(payload, signature, secrets, Utc::now().timestamp())?;
    parse_envelope(payload)
}

/// Stripe's `Stripe-Signature` check: `t=<unix time>` and one or more `v1=<hex HMAC-SHA256>`
/// (other schemes, `v0`, are ignored), the HMAC keyed with the endpoint secret over
/// `{t}.{payload}`. Accepted when any `v1` matches any secret and `t` is within the tolerance
/// of `now`; a matching signature that is too old (or from the future) is `Stale`.
fn check_signature(
    payload: &str,
    header: &str,
    secrets: &[SecretString],
    now: i64,
) -> Result<(), WebhookRejection> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for pair in header.split(',') {
        let (key, value) = pair.split_once('=').ok_or(WebhookRejection::BadSignature)?;
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| WebhookRejection::BadSignature)?,
                )
            }
            // A candidate that is not 64 hex digits cannot match: skipped, like a wrong one.
            "v1" => candidates.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(WebhookRejection::BadSignature)?;
    let t = timestamp.to_string();
    let signed_by_any = secrets.iter().any(|secret| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose_secret().as_bytes());
        let mut mac = hmac::Context::with_key(&key);
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        let expected = mac.sign();
        candidates
            .iter()
            .any(|c| constant_time::verify_slices_are_equal(expected.as_ref(), c).is_ok())
    });
    if !signed_by_any {
        return Err(WebhookRejection::BadSignature);
    }
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS.unsigned_abs() {
        return Err(WebhookRejection::Stale);
    }
    Ok(())
}

/// An event Tollgate stored after verifying it (the inbox): read again as it was verified.
pub fn parse_stored(payload: &str) -> Result<VerifiedEvent, WebhookRejection> {
    parse_envelope(payload)
}

/// The parts of an event Tollgate reads; every other field is skipped unparsed. The event and
/// its `data` and `data.object` must be JSON objects ([`object_only`]).
#[derive(Deserialize)]
struct Envelope {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    created: Option<serde_json::Value>,
    livemode: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "object_only")]
    data: Option<EnvelopeData>,
}

#[derive(Deserialize)]
struct EnvelopeData {
    #[serde(default, deserialize_with = "object_only")]
    object: Option<EventObject>,
}

/// serde's derived structs also read a JSON array, field by position: the parts of an event
/// Tollgate reads are objects only.
struct ObjectOnly<T>(std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

fn object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer
        .deserialize_map(ObjectOnly(std::marker::PhantomData))
        .map(Some)
}

/// `data.object`: its kind and the references routing needs (each an id, an expanded object,
/// or `null`).
#[derive(Deserialize)]
struct EventObject {
    object: Option<String>,
    id: Option<serde_json::Value>,
    customer: Option<serde_json::Value>,
    charge: Option<serde_json::Value>,
    payment_intent: Option<serde_json::Value>,
}

fn parse_envelope(payload: &str) -> Result<VerifiedEvent, WebhookRejection> {
    let malformed = |what: String| WebhookRejection::Malformed(what);
    let envelope: Envelope = {
        let mut json = serde_json::Deserializer::from_str(payload);
        let envelope = object_only(&mut json).and_then(|envelope| json.end().map(|()| envelope));
        envelope
            .map_err(|e| malformed(e.to_string()))?
            .ok_or_else(|| malformed("not an object".into()))?
    };
    let id = envelope.id.ok_or_else(|| malformed("no id".into()))?;
    let id = EventId::parse(&id).map_err(|e| malformed(e.to_string()))?;
    let event_type = envelope
        .event_type
        .filter(|t| is_event_type(t))
        .ok_or_else(|| malformed("no type, or not an event type like `invoice.paid`".into()))?;
    let created = envelope
        .created
        .as_ref()
        .and_then(serde_json::Value::as_i64)
        .filter(|t| CREATED_RANGE.contains(t))
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| malformed("no created, or not a time between 1970 and 9999".into()))?;
    let livemode = envelope
        .livemode
        .as_ref()
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let object = envelope
        .data
        .and_then(|d| d.object)
        .ok_or_else(|| malformed("no data.object".into()))?;
    let kind = object.object.as_deref();
    let customer = if kind == Some("customer") {
        object.id.as_ref()
    } else {
        object.customer.as_ref()
    };
    let (charge, payment_intent) = if event_type.starts_with("charge.dispute.") {
        (object.charge.as_ref(), object.payment_intent.as_ref())
    } else if event_type.starts_with("charge.") && kind == Some("charge") {
        (object.id.as_ref(), None)
    } else {
        (None, None)
    };
    let checkout_session = event_type
        .starts_with("checkout.session.")
        .then_some(object.id.as_ref())
        .flatten();
    Ok(VerifiedEvent {
        id,
        created,
        livemode,
        customer: reference(customer, "customer", CustomerId::parse)?,
        checkout_session: reference(checkout_session, "id", CheckoutSessionId::parse)?,
        charge: reference(charge, "charge", ChargeId::parse)?,
        payment_intent: reference(payment_intent, "payment_intent", PaymentIntentId::parse)?,
        event_type,
    })
}

fn is_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_EVENT_TYPE_BYTES
        && t.starts_with(|c: char| c.is_ascii_lowercase())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

/// An object's reference to another: absent or `null`, an id, or the expanded object (`{id}`).
/// One that is there but is not an id of its kind makes the event malformed.
fn reference<T>(
    value: Option<&serde_json::Value>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, InvalidStripeId>,
) -> Result<Option<T>, WebhookRejection> {
    let id = match value {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::String(id)) => Some(id.as_str()),
        Some(serde_json::Value::Object(obj)) => obj.get("id").and_then(|i| i.as_str()),
        Some(_) => None,
    };
    let id = id.ok_or_else(|| {
        WebhookRejection::Malformed(format!(
            "data.object.{field} is neither an id nor an object"
        ))
    })?;
    parse(id)
        .map(Some)
        .map_err(|e| WebhookRejection::Malformed(format!("data.object.{field}: {e}")))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use stripe_webhook::{Webhook, WebhookError};

    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    fn event() -> String {
        serde_json::json!({
            "id": "evt_1", "object": "event", "api_version": "2026-09-30.endive", "created": 1_700_000_000,
            "livemode": false, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null},
            "type": "customer.subscription.updated",
            "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_1"}}
        })
        .to_string()
    }

    #[test]
    fn the_setup_guide_lists_exactly_the_events_tollgate_acts_on() {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/STRIPE_SETUP.md"))
                .unwrap();
        // The Stripe CLI command of section 5, in order.
        let command: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.split("enabled_events[]=").nth(1))
            .map(|rest| rest.trim_end_matches(['"', '\\', ' ']))
            .collect();
        assert_eq!(command, EVENTS, "docs/STRIPE_SETUP.md, section 5");
        // The first column of the table of section 6.
        let section = doc
            .split("## 6.")
            .nth(1)
            .and_then(|s| s.split("## 7.").next())
            .unwrap();
        let mut table: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .flat_map(|row| row.split('|').next().unwrap_or_default().split('`'))
            .filter(|name| name.contains('.'))
            .collect();
        table.sort_unstable();
        let mut events = EVENTS.to_vec();
        events.sort_unstable();
        assert_eq!(table, events, "docs/STRIPE_SETUP.md, section 6");
    }

    #[test]
    fn accepts_a_current_signature_from_any_rotated_secret() {
        let body = event();
        let header = Webhook::generate_test_header(&body, "whsec_new", None);
        let e = verify(&body, Some(&header), &secrets(&["whsec_old", "whsec_new"])).unwrap();
        assert_eq!(
            (e.id.as_str(), e.event_type.as_str()),
            ("evt_1", "customer.subscription.updated")
        );
        assert_eq!(e.customer.as_ref().map(CustomerId::as_str), Some("cus_1"));
    }

    #[test]
    fn a_signed_event_whose_object_the_sdk_cannot_type_is_still_accepted() {
        // `event()` carries a partial subscription object that async-stripe's struct refuses.
        let body = event();
        let header = Webhook::generate_test_header(&body, "whsec_a", None);
        assert!(Webhook::construct_event(&body, &header, "whsec_a").is_err());
        assert_eq!(
            verify(&body, Some(&header), &secrets(&["whsec_a"]))
                .unwrap()
                .id
                .as_str(),
            "evt_1"
        );
    }

    #[test]
    fn refuses_forged_missing_and_stale_signatures() {
        let body = event();
        let header = Webhook::generate_test_header(&body, "whsec_other", None);
        assert_eq!(
            verify(&body, Some(&header), &secrets(&["whsec_a"])).unwrap_err(),
            WebhookRejection::BadSignature
        );
        assert_eq!(
            verify(&body, None, &secrets(&["whsec_a"])).unwrap_err(),
            WebhookRejection::MissingSignature
        );
        assert_eq!(
            verify(&body, Some("garbage"), &secrets(&["whsec_a"])).unwrap_err(),
            WebhookRejection::BadSignature
        );
        let old =
            Webhook::generate_test_header(&body, "whsec_a", Some(Utc::now().timestamp() - 301));
        assert_eq!(
            verify(&body, Some(&old), &secrets(&["whsec_a"])).unwrap_err(),
            WebhookRejection::Stale
        );
    }

    /// One part of a `Stripe-Signature` header, rendered with the header's timestamp.
    #[derive(Debug, Clone)]
    enum Part {
        Timestamp,
        BadTimestamp(String),
        SignedWith(&'static str),
        SignedOtherBody,
        Candidate(String),
        OtherScheme,
        NoEquals(String),
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            3 => Just(Part::Timestamp),
            1 => "[a-z0-9+-]{0,4}".prop_map(Part::BadTimestamp),
            3 => Just(Part::SignedWith("whsec_a")),
            1 => Just(Part::SignedWith("whsec_b")),
            1 => Just(Part::SignedOtherBody),
            1 => "[0-9a-fA-Fxyz]{0,66}".prop_map(Part::Candidate),
            1 => Just(Part::OtherScheme),
            1 => "[a-z0-9 ]{0,4}".prop_map(Part::NoEquals),
        ]
    }

    /// async-stripe-webhook's verdict, in Tollgate's terms: a parse failure after a good
    /// signature is an accepted event for Tollgate (it reads only the envelope).
    fn sdk_verdict(
        payload: &str,
        header: &str,
        secret: &str,
        now: i64,
    ) -> Result<(), WebhookRejection> {
        match Webhook::construct_event_with_timestamp(payload, header, secret, now) {
            Ok(_) | Err(WebhookError::BadParse(_)) => Ok(()),
            Err(WebhookError::BadTimestamp(_)) => Err(WebhookRejection::Stale),
            Err(_) => Err(WebhookRejection::BadSignature),
        }
    }

    proptest! {
        /// The signature check gives async-stripe-webhook's verdict (the Stripe library
        /// Tollgate used before) on headers made of good, forged, foreign, malformed and
        /// duplicated parts, at timestamps around the tolerance's edges.
        #[test]
        fn agrees_with_async_stripe(
            parts in proptest::collection::vec(part(), 0..6),
            age in prop_oneof![-305i64..=-295, -3i64..=3, 295i64..=305, -100_000i64..100_000],
            body in "[ -~]{0,60}",
        ) {
            let now = 1_800_000_000_i64;
            let t = now - age;
            let sign = |secret: &str, payload: &str| {
                let header = Webhook::generate_test_header(payload, secret, Some(t));
                header.split_once(",v1=").unwrap().1.to_owned()
            };
            let header = parts
                .iter()
                .map(|p| match p {
                    Part::Timestamp => format!("t={t}"),
                    Part::BadTimestamp(v) => format!("t={v}"),
                    Part::SignedWith(secret) => format!("v1={}", sign(secret, &body)),
                    Part::SignedOtherBody => format!("v1={}", sign("whsec_a", &format!("{body}x"))),
                    Part::Candidate(v) => format!("v1={v}"),
                    Part::OtherScheme => format!("v0={}", sign("whsec_a", &body)),
                    Part::NoEquals(v) => v.clone(),
                })
                .collect::<Vec<_>>()
                .join(",");
            prop_assert_eq!(
                check_signature(&body, &header, &secrets(&["whsec_a"]), now),
                sdk_verdict(&body, &header, "whsec_a", now),
                "header {}", header
            );
        }
    }

    #[test]
    fn stripes_published_test_vector_matches_its_signature_and_is_stale_now() {
        // From Stripe's own library tests: payload {"id":"evt_1"}, secret whsec_test_secret, t=1700000000.
        let header =
            "t=1700000000,v1=248a374f50f943a28b0f6ab50faf9a7e7e29b710fa26df9fb1618b9bf8ea9c9a";
        assert_eq!(
            verify(
                r#"{"id":"evt_1"}"#,
                Some(header),
                &secrets(&["whsec_test_secret"])
            )
            .unwrap_err(),
            WebhookRejection::Stale
        );
        assert_eq!(
            verify(
                r#"{"id":"evt_2"}"#,
                Some(header),
                &secrets(&["whsec_test_secret"])
            )
            .unwrap_err(),
            WebhookRejection::BadSignature
        );
    }

    fn with(event_type: &str, object: serde_json::Value) -> String {
        serde_json::json!({
            "id": "evt_1", "object": "event", "created": 1_700_000_000, "livemode": false,
            "type": event_type, "data": {"object": object}
        })
        .to_string()
    }

    #[test]
    fn references_come_from_the_object_by_its_kind() {
        let e = parse_envelope(&with(
            "customer.deleted",
            serde_json::json!({"id": "cus_9", "object": "customer"}),
        ))
        .unwrap();
        assert_eq!(e.customer.unwrap().as_str(), "cus_9");
        let e = parse_envelope(&with(
            "invoice.paid",
            serde_json::json!({"id": "in_1", "object": "invoice", "customer": {"id": "cus_8"}}),
        ))
        .unwrap();
        assert_eq!(e.customer.unwrap().as_str(), "cus_8");
        let e = parse_envelope(&with(
            "product.created",
            serde_json::json!({"id": "x", "object": "product"}),
        ))
        .unwrap();
        assert_eq!(e.customer, None);
        let e = parse_envelope(&with("charge.dispute.created", serde_json::json!({"id": "du_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1"}))).unwrap();
        assert_eq!(
            (
                e.charge.unwrap().as_str(),
                e.payment_intent.unwrap().as_str()
            ),
            ("ch_1", "pi_1")
        );
        let e = parse_envelope(&with(
            "charge.refunded",
            serde_json::json!({"id": "ch_2", "object": "charge", "customer": null}),
        ))
        .unwrap();
        assert_eq!((e.charge.unwrap().as_str(), e.customer), ("ch_2", None));
        // A refund's own events name a refund, not a charge.
        let e = parse_envelope(&with(
            "charge.refund.updated",
            serde_json::json!({"id": "re_1", "object": "refund", "charge": "ch_3"}),
        ))
        .unwrap();
        assert_eq!(e.charge, None);
        let e = parse_envelope(&with("checkout.session.completed", serde_json::json!({"id": "cs_test_1", "object": "checkout.session", "customer": "cus_1"}))).unwrap();
        assert_eq!(e.checkout_session.unwrap().as_str(), "cs_test_1");
    }

    #[test]
    fn ids_that_could_not_be_stored_or_sent_to_stripe_make_the_event_malformed() {
        let malformed =
            |body: String| matches!(parse_envelope(&body), Err(WebhookRejection::Malformed(_)));
        assert!(malformed(with(
            "invoice.paid",
            serde_json::json!({"object": "invoice", "customer": "../../v1/charges"})
        )));
        assert!(malformed(with(
            "invoice.paid",
            serde_json::json!({"object": "invoice", "customer": "cus_1\u{0}"})
        )));
        assert!(malformed(with(
            "invoice.paid",
            serde_json::json!({"object": "invoice", "customer": 7})
        )));
        assert!(malformed(with(
            "charge.dispute.created",
            serde_json::json!({"object": "dispute", "charge": "ch_1?expand[]=x"})
        )));
        assert!(malformed(with(
            "checkout.session.completed",
            serde_json::json!({"id": "cs_x/../../customers", "object": "checkout.session"})
        )));
        assert!(malformed(with(
            "Invoice Paid",
            serde_json::json!({"object": "invoice"})
        )));
        assert!(malformed(with(
            "invoice.paid\u{0}",
            serde_json::json!({"object": "invoice"})
        )));
        let mut event: serde_json::Value =
            serde_json::from_str(&with("invoice.paid", serde_json::json!({}))).unwrap();
        for id in ["evt_1\u{0}", "evt_1/..", "", "x"] {
            event["id"] = serde_json::json!(id);
            assert!(malformed(event.to_string()), "{id}");
        }
        event["id"] = serde_json::json!("evt_ok");
        for created in [-1_i64, 253_402_300_800, i64::MAX] {
            event["created"] = serde_json::json!(created);
            assert!(malformed(event.to_string()), "{created}");
        }
        event["created"] = serde_json::json!(1_700_000_000);
        assert!(parse_envelope(&event.to_string()).is_ok());
    }

    #[test]
    fn an_event_and_its_data_are_json_objects_only() {
        let good = with(
            "invoice.paid",
            serde_json::json!({"object": "invoice", "customer": "cus_1"}),
        );
        let event: serde_json::Value = serde_json::from_str(&good).unwrap();
        assert_eq!(
            parse_envelope(&good)
                .unwrap()
                .customer
                .as_ref()
                .map(CustomerId::as_str),
            Some("cus_1")
        );
        // serde reads a struct from an array by position (these are in the structs' field
        // order, so that they would read); none of them is an event.
        let object = serde_json::json!(["invoice", null, "cus_1", null, null]);
        let data = serde_json::json!([{"object": "invoice", "customer": "cus_1"}]);
        let top = serde_json::json!(["evt_1", "invoice.paid", 1_700_000_000, false, event["data"]]);
        let mut data_array = event.clone();
        data_array["data"] = data;
        let mut object_array = event.clone();
        object_array["data"]["object"] = object;
        let mut data_null = event.clone();
        data_null["data"] = serde_json::Value::Null;
        for body in [
            top.to_string(),
            data_array.to_string(),
            object_array.to_string(),
            data_null.to_string(),
            format!("{good} trailing"),
            "null".to_owned(),
        ] {
            assert!(
                matches!(parse_envelope(&body), Err(WebhookRejection::Malformed(_))),
                "{body}"
            );
        }
    }
}
