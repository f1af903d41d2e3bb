//! The Stripe boundary. Everything that speaks to Stripe goes through [`StripeGateway`], which
//! is configured with the API base URL (tests point it at a local fake). Stripe's types stop
//! here: callers get what Stripe holds in plain terms (`billing::mirror::Stripe*`), which the
//! billing rules turn into what Tollgate stores.

pub mod budget;
mod client;
pub mod endpoints;
pub mod ids;
pub mod webhook;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use stripe::StripeError;

use budget::StripeBudget;
use client::StripeHttp;
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::invoice::ListInvoice;
use stripe_billing::subscription::{
    CancelSubscription, CancelSubscriptionCancellationDetails, ListSubscription,
    ListSubscriptionStatus, ResumeSubscription, RetrieveSubscription, UpdateSubscription,
    UpdateSubscriptionItems, UpdateSubscriptionPaymentBehavior,
    UpdateSubscriptionProrationBehavior,
};
use stripe_billing::subscription_schedule::{
    CreateSubscriptionSchedule, ReleaseSubscriptionSchedule, RetrieveSubscriptionSchedule,
    UpdateSubscriptionSchedule, UpdateSubscriptionSchedulePhases,
    UpdateSubscriptionSchedulePhasesDiscounts, UpdateSubscriptionSchedulePhasesDuration,
    UpdateSubscriptionSchedulePhasesDurationInterval, UpdateSubscriptionSchedulePhasesEndDate,
    UpdateSubscriptionSchedulePhasesItems, UpdateSubscriptionSchedulePhasesProrationBehavior,
    UpdateSubscriptionSchedulePhasesStartDate, UpdateSubscriptionSchedulePhasesTrialEnd,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionDiscounts, CreateCheckoutSessionLineItems,
    CreateCheckoutSessionPaymentMethodCollection, CreateCheckoutSessionSubscriptionData,
    CreateCheckoutSessionSubscriptionDataTrialSettings,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior,
    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod,
    ExpireCheckoutSession, ListCheckoutSession, RetrieveCheckoutSession,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::charge::{ListCharge, RetrieveCharge};
use stripe_core::customer::{
    CreateCustomer, ListCustomer, RetrieveCustomer, RetrieveCustomerReturned, SearchCustomer,
};
use stripe_core::dispute::ListDispute;
use stripe_core::refund::{CreateRefund, CreateRefundReason};
use stripe_product::promotion_code::ListPromotionCode;
use stripe_shared::{CheckoutSessionMode, CheckoutSessionPaymentStatus, InvoiceBillingReason};

use crate::billing::change::{ChangeBilling, Proration};
use crate::billing::facts::{CollectionPause, SubscriptionStatus};
use crate::config::StripeSettings;

use crate::billing::catalog::Interval;
use crate::billing::mirror::{
    CheckoutMode, PriceMove, StripeCharge, StripeCheckout, StripePhase, StripeSubscription,
    SubscriptionInvoices, UpgradeInvoice,
};
pub use ids::{
    ChargeId, CheckoutSessionId, CustomerId, InvalidStripeId, PaymentIntentId, SubscriptionId,
};

/// Metadata keys Tollgate writes on Stripe objects.
pub mod metadata {
    pub const SUBJECT: &str = "tollgate_subject";
    pub const PLAN: &str = "tollgate_plan";
    pub const KIND: &str = "tollgate_kind";
    pub const INTERVAL: &str = "tollgate_interval";
    /// The user who started the checkout: the manager of a tenant's subscription (changed by
    /// a hand-over).
    pub const MANAGER: &str = "tollgate_manager";
}

/// A plan change Stripe keeps pending because its invoice was not paid (a declined card, or
/// one that needs the customer's authentication): it applies once the invoice is paid, until
/// `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub expires_at: DateTime<Utc>,
}

/// A Stripe customer as Tollgate needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerLookup {
    /// It exists; `subject` is the one Tollgate wrote on it (none on foreign customers).
    Live { subject: Option<String> },
    /// Deleted, or never existed.
    Gone,
}

/// What a new Checkout Session asks Stripe for.
#[derive(Debug, Clone)]
pub struct NewCheckout {
    pub customer_id: String,
    pub price_id: String,
    pub mode: CheckoutMode,
    pub quantity: u64,
    pub trial_days: u32,
    /// Start the trial without collecting a card (Stripe pauses it at the end without one).
    pub trial_without_card: bool,
    /// A promotion code id (`promo_...`); without one, customers may type a code.
    pub promotion_code_id: Option<String>,
    pub success_url: String,
    pub cancel_url: String,
    pub client_reference_id: String,
    pub metadata: HashMap<String, String>,
    pub idempotency_key: String,
}

#[derive(Clone)]
pub struct StripeGateway {
    client: StripeHttp,
}

/// A failure talking to Stripe, with Stripe's own refusals kept apart from outages.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Stripe refused the request ({status}): {message}")]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<StripeError> for GatewayError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(errors, status)
                if (400..500).contains(&status) && status != 429 =>
            {
                GatewayError::Refused {
                    status,
                    code: errors.code.as_ref().map(|c| c.as_str().to_owned()),
                    message: errors.message.clone().unwrap_or_default(),
                }
            }
            other => {
                GatewayError::Other(anyhow::Error::new(other).context("Stripe request failed"))
            }
        }
    }
}

/// A retrieval whose object Stripe does not have answers `None`; other failures stay errors.
fn not_found_as_none<T>(e: StripeError) -> Result<Option<T>, GatewayError> {
    match GatewayError::from(e) {
        GatewayError::Refused { status: 404, .. } => Ok(None),
        other => Err(other),
    }
}

/// Runs one gateway operation, timed and counted by `operation` (the method's name) and
/// outcome: `ok` (also a lookup answered "no such object"), `refused` (Stripe answered a 4xx
/// other than 429) or `failed` (network, timeout, 429 or 5xx once the client's retries are
/// spent; each attempt is counted in `tollgate_stripe_attempts_total`). Every method of [`StripeGateway`] goes through here; the time includes retries and,
/// for listings, every page.
async fn observed<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, GatewayError>>,
) -> Result<T, GatewayError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(GatewayError::Refused { .. }) => "refused",
        Err(GatewayError::Other(_)) => "failed",
    };
    metrics::histogram!(
        "tollgate_stripe_request_duration_seconds",
        "operation" => operation,
        "outcome" => outcome,
    )
    .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(
            "tollgate_stripe_errors_total",
            "operation" => operation,
            "outcome" => outcome,
        )
        .increment(1);
    }
    result
}

fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

impl StripeGateway {
    /// `None` when no secret key is configured (endpoints then answer `stripe_not_configured`).
    pub fn from_settings(settings: &StripeSettings) -> anyhow::Result<Option<StripeGateway>> {
        let Some(key) = &settings.secret_key else {
            return Ok(None);
        };
        let mut base = settings.api_base.clone();
        if !base.ends_with('/') {
            base.push('/');
        }
        let budget = StripeBudget::new(
            settings.requests_per_second,
            settings.background_share,
            settings.reconcile_share,
        );
        let client = StripeHttp::new(
            base,
            key.expose_secret(),
            Duration::from_secs(settings.timeout_seconds),
            std::sync::Arc::new(budget),
        )
        .context("building the Stripe client")?;
        Ok(Some(StripeGateway { client }))
    }

    /// Until when Stripe's 429s pause this replica's background work, if they do now.
    pub fn background_paused_until(&self) -> Option<std::time::Instant> {
        self.client.budget().paused_until()
    }

    /// Creates the subject's Stripe customer. The idempotency key is derived from the subject,
    /// so concurrent first checkouts (also on other replicas) get the same customer back.
    /// `generation` distinguishes a customer created after an earlier one was deleted (the same
    /// key would otherwise replay the deleted customer for 24 hours).
    pub async fn create_customer(
        &self,
        subject_key: &str,
        generation: i64,
        email: Option<&str>,
    ) -> Result<String, GatewayError> {
        observed("create_customer", async {
            let mut req = CreateCustomer::new().metadata(HashMap::from([(
                metadata::SUBJECT.to_owned(),
                subject_key.to_owned(),
            )]));
            if let Some(email) = email {
                req = req.email(email);
            }
            let customer = req
                .customize()
                .request_strategy(RequestStrategy::Idempotent(idempotency_key(&format!(
                    "tollgate-customer-{subject_key}-{generation}"
                ))?))
                .send(&self.client)
                .await?;
            Ok(customer.id.as_str().to_owned())
        })
        .await
    }

    /// Proves the key works: lists one customer (what every sync needs to read). Stripe's
    /// refusal (a revoked key, a restricted key without customer access) is the error.
    pub async fn check_access(&self) -> Result<(), GatewayError> {
        ListCustomer::new().limit(1).send(&self.client).await?;
        Ok(())
    }

    /// Whether the customer still exists on Stripe, and the subject recorded on it.
    pub async fn customer(&self, customer_id: &CustomerId) -> Result<CustomerLookup, GatewayError> {
        observed("customer", async {
            match RetrieveCustomer::new(customer_id.as_str())
                .send(&self.client)
                .await
            {
                Ok(RetrieveCustomerReturned::Customer(c)) => Ok(CustomerLookup::Live {
                    subject: c.metadata.and_then(|m| m.get(metadata::SUBJECT).cloned()),
                }),
                Ok(RetrieveCustomerReturned::DeletedCustomer(_)) => Ok(CustomerLookup::Gone),
                Err(e) => not_found_as_none::<()>(e).map(|_| CustomerLookup::Gone),
            }
        })
        .await
    }

    /// Every live customer whose metadata names `subject` (Stripe's customer search). Search
    /// is eventually consistent: a customer created within the last minute may be missing
    /// until a later run.
    pub async fn customers_of_subject(
        &self,
        subject: &str,
    ) -> Result<Vec<CustomerId>, GatewayError> {
        observed("customers_of_subject", async {
            let query = subject_query(subject)?;
            let mut out = Vec::new();
            let mut page: Option<String> = None;
            loop {
                let mut req = SearchCustomer::new(query.clone()).limit(100);
                if let Some(next) = &page {
                    req = req.page(next.clone());
                }
                let found = req.send(&self.client).await?;
                for c in found.data {
                    out.push(CustomerId::parse(c.id.as_str()).context("a searched customer")?);
                }
                match found.next_page {
                    Some(next) if found.has_more => page = Some(next),
                    _ => break,
                }
            }
            Ok(out)
        })
        .await
    }

    /// One page of every customer of the account (100, newest first, after `starting_after`),
    /// with the subject their metadata names; and whether more follow.
    pub async fn customers_page(
        &self,
        starting_after: Option<&CustomerId>,
    ) -> Result<(Vec<(CustomerId, Option<String>)>, bool), GatewayError> {
        observed("customers_page", async {
            let mut req = ListCustomer::new().limit(100);
            if let Some(after) = starting_after {
                req = req.starting_after(after.as_str());
            }
            let page = req.send(&self.client).await?;
            let mut out = Vec::with_capacity(page.data.len());
            for c in page.data {
                let subject = c.metadata.and_then(|m| m.get(metadata::SUBJECT).cloned());
                let id = CustomerId::parse(c.id.as_str()).context("a listed customer")?;
                out.push((id, subject));
            }
            Ok((out, page.has_more))
        })
        .await
    }

    /// The id of the active promotion code customers type as `code`.
    pub async fn promotion_code_id(&self, code: &str) -> Result<Option<String>, GatewayError> {
        observed("promotion_code_id", async {
            let list = ListPromotionCode::new()
                .code(code)
                .active(true)
                .limit(1)
                .send(&self.client)
                .await?;
            Ok(list
                .data
                .into_iter()
                .next()
                .map(|p| p.id.as_str().to_owned()))
        })
        .await
    }

    pub async fn create_checkout_session(
        &self,
        new: NewCheckout,
    ) -> Result<StripeCheckout, GatewayError> {
        observed("create_checkout_session", async {
            let mut item = CreateCheckoutSessionLineItems::new();
            item.price = Some(new.price_id.clone());
            item.quantity = Some(new.quantity);
            let mut req = CreateCheckoutSession::new()
                .customer(new.customer_id.clone())
                .client_reference_id(new.client_reference_id.clone())
                .metadata(new.metadata.clone())
                .line_items(vec![item])
                .success_url(new.success_url.clone())
                .cancel_url(new.cancel_url.clone());
            req = match new.mode {
                CheckoutMode::Subscription => {
                    let mut data = CreateCheckoutSessionSubscriptionData::new();
                    data.metadata = Some(new.metadata.clone());
                    if new.trial_days > 0 {
                        data.trial_period_days = Some(new.trial_days);
                        if new.trial_without_card {
                            data.trial_settings = Some(CreateCheckoutSessionSubscriptionDataTrialSettings::new(
                                CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehavior::new(
                                    CreateCheckoutSessionSubscriptionDataTrialSettingsEndBehaviorMissingPaymentMethod::Pause,
                                ),
                            ));
                            req = req.payment_method_collection(
                                CreateCheckoutSessionPaymentMethodCollection::IfRequired,
                            );
                        }
                    }
                    req.mode(CheckoutSessionMode::Subscription)
                        .subscription_data(data)
                }
                _ => req.mode(CheckoutSessionMode::Payment),
            };
            req = match &new.promotion_code_id {
                Some(id) => {
                    let mut discount = CreateCheckoutSessionDiscounts::new();
                    discount.promotion_code = Some(id.clone());
                    req.discounts(vec![discount])
                }
                None => req.allow_promotion_codes(true),
            };
            let session = req
                .customize()
                .request_strategy(RequestStrategy::Idempotent(idempotency_key(
                    &new.idempotency_key,
                )?))
                .send(&self.client)
                .await?;
            Ok(checkout_read(session))
        })
        .await
    }

    /// `None` when Stripe has no such session.
    pub async fn checkout_session(
        &self,
        id: &CheckoutSessionId,
    ) -> Result<Option<StripeCheckout>, GatewayError> {
        observed("checkout_session", async {
            match RetrieveCheckoutSession::new(id.as_str())
                .send(&self.client)
                .await
            {
                Ok(session) => Ok(Some(checkout_read(session))),
                Err(e) => not_found_as_none(e),
            }
        })
        .await
    }

    /// Every subscription of the customer, in any status (paginated).
    pub async fn customer_subscriptions(
        &self,
        customer_id: &CustomerId,
    ) -> Result<Vec<StripeSubscription>, GatewayError> {
        observed("customer_subscriptions", async {
            let mut out = Vec::new();
            let mut starting_after: Option<String> = None;
            loop {
                // The schedule, expanded, says what changes at the period end.
                let mut req = ListSubscription::new()
                    .customer(customer_id.as_str())
                    .status(ListSubscriptionStatus::All)
                    .limit(100)
                    .expand(vec!["data.schedule".to_owned()]);
                if let Some(after) = &starting_after {
                    req = req.starting_after(after.clone());
                }
                let page = req.send(&self.client).await?;
                out.extend(page.data.into_iter().map(subscription_read));
                if !page.has_more {
                    break;
                }
                match out.last() {
                    Some(last) => starting_after = Some(last.id.clone()),
                    None => break,
                }
            }
            Ok(out)
        })
        .await
    }

    /// The customer's charges (payments, refunds and disputes), newest first: one page of 100,
    /// or every page when `all` (reconciliation). Disputed charges carry their dispute's status.
    pub async fn customer_charges(
        &self,
        customer_id: &CustomerId,
        all: bool,
    ) -> Result<Vec<StripeCharge>, GatewayError> {
        observed("customer_charges", async {
            let mut out: Vec<StripeCharge> = Vec::new();
            loop {
                let mut req = ListCharge::new().customer(customer_id.as_str()).limit(100);
                if let Some(last) = out.last() {
                    req = req.starting_after(last.id.clone());
                }
                let page = req.send(&self.client).await?;
                let empty = page.data.is_empty();
                out.extend(page.data.into_iter().map(charge_read));
                if !all || !page.has_more || empty {
                    break;
                }
            }
            for charge in out.iter_mut().filter(|c| c.disputed) {
                charge.dispute_status = self.dispute_status(&charge.id).await?;
            }
            Ok(out)
        })
        .await
    }

    /// One charge, with its dispute's status (`None` when Stripe has no such charge).
    pub async fn charge(&self, charge_id: &ChargeId) -> Result<Option<StripeCharge>, GatewayError> {
        observed("charge", async {
            let mut charge = match RetrieveCharge::new(charge_id.as_str())
                .send(&self.client)
                .await
            {
                Ok(charge) => charge_read(charge),
                Err(e) => return not_found_as_none(e),
            };
            if charge.disputed {
                charge.dispute_status = self.dispute_status(&charge.id).await?;
            }
            Ok(Some(charge))
        })
        .await
    }

    /// The status of the charge's newest dispute.
    async fn dispute_status(&self, charge_id: &str) -> Result<Option<String>, GatewayError> {
        observed("dispute_status", async {
            let page = ListDispute::new()
                .charge(charge_id)
                .limit(10)
                .send(&self.client)
                .await?;
            // Stripe lists newest first.
            Ok(page
                .data
                .into_iter()
                .next()
                .map(|d| d.status.as_str().to_owned()))
        })
        .await
    }

    /// What the subscription's last 10 invoices say of its payments: the payments of the
    /// invoice that opened the current period (`subscription_create` / `subscription_cycle`),
    /// and the upgrades billed at once (`subscription_update` invoices, newest first) with the
    /// payments that paid them and the price and seats they moved from and to (their proration
    /// lines). API 2025+ links payments to invoices through the invoice's `payments`, not
    /// `charge.invoice`.
    pub async fn subscription_invoices(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<SubscriptionInvoices, GatewayError> {
        observed("subscription_invoices", async {
            // Stripe lists newest first.
            let invoices = self.invoices(subscription_id).await?;
            let period = invoices
                .iter()
                .find(|i| {
                    matches!(
                        i.billing_reason,
                        Some(
                            InvoiceBillingReason::SubscriptionCreate
                                | InvoiceBillingReason::SubscriptionCycle
                        )
                    )
                })
                .map(paid_by)
                .unwrap_or_default();
            let upgrades = invoices
                .iter()
                .filter(|i| i.billing_reason == Some(InvoiceBillingReason::SubscriptionUpdate))
                .map(|i| UpgradeInvoice {
                    invoice_id: i
                        .id
                        .as_ref()
                        .map(|id| id.as_str().to_owned())
                        .unwrap_or_default(),
                    created: ts(i.created),
                    paid_by: paid_by(i),
                    moved: proration_moves(i, subscription_id.as_str()),
                })
                .collect();
            Ok(SubscriptionInvoices { period, upgrades })
        })
        .await
    }

    /// The subscription's last 10 invoices, newest first, with their payments (API 2025+ links
    /// payments to invoices through the invoice's `payments`, not `charge.invoice`).
    async fn invoices(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<stripe_shared::Invoice>, GatewayError> {
        Ok(ListInvoice::new()
            .subscription(subscription_id.as_str())
            .limit(10)
            .expand(vec!["data.payments".to_owned()])
            .send(&self.client)
            .await?
            .data)
    }

    /// Refunds every paid payment of the subscription's invoices (its last 10), as duplicates:
    /// a second subscription of one subject is undone. Each refund's idempotency key is its
    /// payment intent's, and a payment already refunded counts as done, so repeating this after
    /// a crash refunds nothing twice. Answers the payment intents refunded.
    pub async fn refund_subscription(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<String>, GatewayError> {
        observed("refund_subscription", async {
            let mut refunded = Vec::new();
            for invoice in self.invoices(subscription_id).await? {
                for payment in invoice.payments.map(|l| l.data).unwrap_or_default() {
                    if payment.status != "paid" {
                        continue;
                    }
                    let Some(intent) = payment.payment.payment_intent else {
                        continue;
                    };
                    let intent = intent.id().as_str().to_owned();
                    let sent = CreateRefund::new()
                        .payment_intent(intent.as_str())
                        .reason(CreateRefundReason::Duplicate)
                        .customize()
                        .request_strategy(RequestStrategy::Idempotent(idempotency_key(&format!(
                            "tollgate-undo-{intent}"
                        ))?))
                        .send(&self.client)
                        .await;
                    match sent.map_err(GatewayError::from) {
                        Ok(_) => refunded.push(intent),
                        Err(GatewayError::Refused {
                            code: Some(code), ..
                        }) if code == "charge_already_refunded" => refunded.push(intent),
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(refunded)
        })
        .await
    }

    /// The customer's completed Checkout Sessions (every page): reconciliation records
    /// one-time purchases whose webhook was lost and whose buyer never came back to verify.
    pub async fn customer_completed_sessions(
        &self,
        customer_id: &CustomerId,
    ) -> Result<Vec<StripeCheckout>, GatewayError> {
        observed(
            "customer_completed_sessions",
            self.sessions_in(customer_id, stripe_shared::CheckoutSessionStatus::Complete),
        )
        .await
    }

    /// The customer's Checkout Sessions still open (not paid, not expired), newest first.
    pub async fn open_checkout_sessions(
        &self,
        customer_id: &CustomerId,
    ) -> Result<Vec<StripeCheckout>, GatewayError> {
        observed(
            "open_checkout_sessions",
            self.sessions_in(customer_id, stripe_shared::CheckoutSessionStatus::Open),
        )
        .await
    }

    /// Every page of the customer's Checkout Sessions in `status`, newest first.
    async fn sessions_in(
        &self,
        customer_id: &CustomerId,
        status: stripe_shared::CheckoutSessionStatus,
    ) -> Result<Vec<StripeCheckout>, GatewayError> {
        let mut out: Vec<StripeCheckout> = Vec::new();
        loop {
            let mut req = ListCheckoutSession::new()
                .customer(customer_id.as_str())
                .status(status.clone())
                .limit(100);
            if let Some(last) = out.last() {
                req = req.starting_after(last.id.clone());
            }
            let page = req.send(&self.client).await?;
            out.extend(page.data.into_iter().map(checkout_read));
            if !page.has_more || out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// Expires an open Checkout Session: its page can no longer be paid. Stripe refuses (a
    /// [`GatewayError::Refused`]) a session that is no longer open, e.g. one just paid.
    pub async fn expire_checkout_session(
        &self,
        session_id: &CheckoutSessionId,
    ) -> Result<(), GatewayError> {
        observed("expire_checkout_session", async {
            ExpireCheckoutSession::new(session_id.as_str())
                .send(&self.client)
                .await?;
            Ok(())
        })
        .await
    }

    /// Withdraws a cancellation scheduled for a date (`cancel_at`). Stripe unsets a field sent
    /// empty, which the typed request cannot express.
    pub async fn clear_cancel_at(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<(), GatewayError> {
        observed("clear_cancel_at", async {
            #[derive(serde::Serialize)]
            struct Unset {
                cancel_at: &'static str,
            }
            RequestBuilder::new(
                StripeMethod::Post,
                format!("/subscriptions/{subscription_id}"),
            )
            .form(&Unset { cancel_at: "" })
            .customize::<stripe_shared::Subscription>()
            .send(&self.client)
            .await?;
            Ok(())
        })
        .await
    }

    /// Lifts a "pause payment collection": Stripe collects again from the next invoice.
    pub async fn clear_pause_collection(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<(), GatewayError> {
        observed("clear_pause_collection", async {
            #[derive(serde::Serialize)]
            struct Unset {
                pause_collection: &'static str,
            }
            RequestBuilder::new(
                StripeMethod::Post,
                format!("/subscriptions/{subscription_id}"),
            )
            .form(&Unset {
                pause_collection: "",
            })
            .customize::<stripe_shared::Subscription>()
            .send(&self.client)
            .await?;
            Ok(())
        })
        .await
    }

    /// Cancels the subscription now (its tenant or membership was removed). `why` is recorded
    /// on Stripe as the cancellation comment.
    pub async fn cancel_now(
        &self,
        subscription_id: &SubscriptionId,
        why: &str,
    ) -> Result<(), GatewayError> {
        observed("cancel_now", async {
            let mut details = CancelSubscriptionCancellationDetails::new();
            details.comment = Some(why.to_owned());
            CancelSubscription::new(subscription_id.as_str())
                .cancellation_details(details)
                .send(&self.client)
                .await?;
            Ok(())
        })
        .await
    }

    /// Names the member who manages the subscription (metadata `tollgate_manager`).
    pub async fn set_manager(
        &self,
        subscription_id: &SubscriptionId,
        user_id: &str,
    ) -> Result<(), GatewayError> {
        observed("set_manager", async {
            UpdateSubscription::new(subscription_id.as_str())
                .metadata(HashMap::from([(
                    metadata::MANAGER.to_owned(),
                    user_id.to_owned(),
                )]))
                .send(&self.client)
                .await?;
            Ok(())
        })
        .await
    }

    /// Schedules (`true`) or withdraws (`false`) the subscription's cancellation at period end.
    pub async fn set_cancel_at_period_end(
        &self,
        subscription_id: &SubscriptionId,
        cancel: bool,
    ) -> Result<(), GatewayError> {
        observed("set_cancel_at_period_end", async {
            UpdateSubscription::new(subscription_id.as_str())
                .cancel_at_period_end(cancel)
                .send(&self.client)
                .await?;
            Ok(())
        })
        .await
    }

    /// Resumes a paused subscription (Stripe invoices from now on).
    pub async fn resume_paused(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<(), GatewayError> {
        observed("resume_paused", async {
            ResumeSubscription::new(subscription_id.as_str())
                .send(&self.client)
                .await?;
            Ok(())
        })
        .await
    }

    /// Moves the subscription's item to another price (and seats), billed as `billing` says.
    /// With `only_when_paid`, Stripe applies the change only once its invoice is paid; when the
    /// payment fails the answer is the change left pending, until when.
    pub async fn change_price(
        &self,
        subscription_id: &SubscriptionId,
        price_id: &str,
        quantity: Option<u64>,
        billing: ChangeBilling,
    ) -> Result<Option<PendingChange>, GatewayError> {
        observed("change_price", async {
            let current = RetrieveSubscription::new(subscription_id.as_str())
                .send(&self.client)
                .await?;
            let item_id = current
                .items
                .data
                .first()
                .map(|i| i.id.as_str().to_owned())
                .ok_or_else(|| anyhow::anyhow!("subscription {subscription_id} has no items"))?;
            let mut item = UpdateSubscriptionItems::new();
            item.id = Some(item_id);
            item.price = Some(price_id.to_owned());
            item.quantity = quantity;
            let proration = match billing.proration {
                Proration::AlwaysInvoice => UpdateSubscriptionProrationBehavior::AlwaysInvoice,
                Proration::CreateProrations => {
                    UpdateSubscriptionProrationBehavior::CreateProrations
                }
                Proration::None => UpdateSubscriptionProrationBehavior::None,
            };
            let mut update = UpdateSubscription::new(subscription_id.as_str())
                .items(vec![item])
                .proration_behavior(proration);
            if billing.only_when_paid {
                update =
                    update.payment_behavior(UpdateSubscriptionPaymentBehavior::PendingIfIncomplete);
            }
            let updated = update.send(&self.client).await?;
            Ok(updated.pending_update.map(|p| PendingChange {
                expires_at: ts(p.expires_at),
            }))
        })
        .await
    }

    /// Keeps the subscription as it is until its current period ends, then moves it to
    /// `price_id` (and `quantity`) for good: a subscription schedule whose current phase is the
    /// subscription as it stands and whose next phase, from the period's end, is the new
    /// price, released after it (the subscription then renews on its own). The schedule
    /// already managing the subscription is updated in place (its next phase replaced), else
    /// one is made from the subscription. Nothing is prorated. Answers when the change happens.
    pub async fn schedule_change(
        &self,
        subscription_id: &SubscriptionId,
        schedule_id: Option<&str>,
        price_id: &str,
        quantity: u64,
        interval: Interval,
    ) -> Result<DateTime<Utc>, GatewayError> {
        observed("schedule_change", async {
            let schedule = match schedule_id {
                Some(id) => {
                    RetrieveSubscriptionSchedule::new(id)
                        .send(&self.client)
                        .await?
                }
                None => {
                    CreateSubscriptionSchedule::new()
                        .from_subscription(subscription_id.as_str())
                        .send(&self.client)
                        .await?
                }
            };
            let current = current_phase(&schedule).ok_or_else(|| {
                anyhow::anyhow!(
                    "subscription schedule {} of {subscription_id} has no current phase",
                    schedule.id.as_str()
                )
            })?;
            let items: Vec<UpdateSubscriptionSchedulePhasesItems> = current
                .items
                .iter()
                .map(|i| {
                    let mut item = UpdateSubscriptionSchedulePhasesItems::new();
                    item.price = Some(i.price.id().as_str().to_owned());
                    item.quantity = i.quantity;
                    item
                })
                .collect();
            // The current phase is restated as Stripe holds it: its trial and its discounts
            // (a promotion code from checkout), which an update that omits them would drop.
            let discounts = phase_discounts(current);
            let mut now = UpdateSubscriptionSchedulePhases::new(items);
            now.start_date = Some(UpdateSubscriptionSchedulePhasesStartDate::Timestamp(
                current.start_date,
            ));
            now.end_date = Some(UpdateSubscriptionSchedulePhasesEndDate::Timestamp(
                current.end_date,
            ));
            now.trial_end = current
                .trial_end
                .map(UpdateSubscriptionSchedulePhasesTrialEnd::Timestamp);
            if !discounts.is_empty() {
                now.discounts = Some(discounts.clone());
            }
            let mut item = UpdateSubscriptionSchedulePhasesItems::new();
            item.price = Some(price_id.to_owned());
            item.quantity = Some(quantity);
            let mut next = UpdateSubscriptionSchedulePhases::new(vec![item]);
            next.duration = Some(UpdateSubscriptionSchedulePhasesDuration {
                interval: match interval {
                    Interval::Year => UpdateSubscriptionSchedulePhasesDurationInterval::Year,
                    _ => UpdateSubscriptionSchedulePhasesDurationInterval::Month,
                },
                interval_count: Some(1),
            });
            next.proration_behavior = Some(UpdateSubscriptionSchedulePhasesProrationBehavior::None);
            if !discounts.is_empty() {
                next.discounts = Some(discounts);
            }
            UpdateSubscriptionSchedule::new(schedule.id.as_str())
                .end_behavior(stripe_shared::SubscriptionScheduleEndBehavior::Release)
                .phases(vec![now, next])
                .send(&self.client)
                .await?;
            Ok(ts(current.end_date))
        })
        .await
    }

    /// Releases the subscription schedule: what it would still change is dropped and the
    /// subscription goes on as it is now. One already released, completed or canceled counts
    /// as done.
    pub async fn release_schedule(&self, schedule_id: &str) -> Result<(), GatewayError> {
        observed("release_schedule", async {
            match ReleaseSubscriptionSchedule::new(schedule_id)
                .send(&self.client)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => {
                    let schedule = RetrieveSubscriptionSchedule::new(schedule_id)
                        .send(&self.client)
                        .await?;
                    if schedule_stands(&schedule) {
                        Err(e.into())
                    } else {
                        Ok(())
                    }
                }
            }
        })
        .await
    }

    pub async fn create_portal_session(
        &self,
        customer_id: &CustomerId,
        return_url: &str,
    ) -> Result<String, GatewayError> {
        observed("create_portal_session", async {
            let session = CreateBillingPortalSession::new()
                .customer(customer_id.as_str())
                .return_url(return_url)
                .send(&self.client)
                .await?;
            Ok(session.url)
        })
        .await
    }
}

fn idempotency_key(key: &str) -> Result<IdempotencyKey, GatewayError> {
    IdempotencyKey::new(key)
        .map_err(|e| GatewayError::Other(anyhow::anyhow!("idempotency key: {e:?}")))
}

fn charge_read(c: stripe_shared::Charge) -> StripeCharge {
    StripeCharge {
        id: c.id.as_str().to_owned(),
        amount: c.amount,
        amount_refunded: c.amount_refunded,
        currency: c.currency.to_string(),
        status: c.status.as_str().to_owned(),
        refunded: c.refunded,
        disputed: c.disputed,
        dispute_status: None,
        customer_id: c.customer.map(|x| x.id().as_str().to_owned()),
        payment_intent_id: c.payment_intent.map(|p| p.id().as_str().to_owned()),
        description: c.description,
        created: ts(c.created),
    }
}

fn checkout_read(s: stripe_shared::CheckoutSession) -> StripeCheckout {
    StripeCheckout {
        id: s.id.as_str().to_owned(),
        url: s.url,
        customer_id: s.customer.map(|c| c.id().as_str().to_owned()),
        client_reference_id: s.client_reference_id,
        subject: meta(&s.metadata, metadata::SUBJECT),
        plan: meta(&s.metadata, metadata::PLAN),
        manager: meta(&s.metadata, metadata::MANAGER),
        mode: match s.mode {
            CheckoutSessionMode::Subscription => CheckoutMode::Subscription,
            CheckoutSessionMode::Payment => CheckoutMode::Payment,
            _ => CheckoutMode::Other,
        },
        status: s.status.map(|st| st.as_str().to_owned()),
        paid: matches!(
            s.payment_status,
            CheckoutSessionPaymentStatus::Paid | CheckoutSessionPaymentStatus::NoPaymentRequired
        ),
        subscription_id: s.subscription.map(|x| x.id().as_str().to_owned()),
        payment_intent_id: s.payment_intent.map(|x| x.id().as_str().to_owned()),
        amount_total: s.amount_total,
        currency: s.currency.map(|c| c.to_string()),
        created: ts(s.created),
    }
}

fn subscription_read(s: stripe_shared::Subscription) -> StripeSubscription {
    let item = s.items.data.first();
    StripeSubscription {
        id: s.id.as_str().to_owned(),
        customer_id: s.customer.id().as_str().to_owned(),
        status: SubscriptionStatus::parse(s.status.as_str()),
        price_id: item.map(|i| i.price.id.as_str().to_owned()),
        quantity: item.and_then(|i| i.quantity).unwrap_or(1),
        current_period_start: item.map(|i| ts(i.current_period_start)),
        current_period_end: item.map(|i| ts(i.current_period_end)),
        trial_start: s.trial_start.map(ts),
        trial_end: s.trial_end.map(ts),
        cancel_at_period_end: s.cancel_at_period_end,
        cancel_at: s.cancel_at.map(ts),
        canceled_at: s.canceled_at.map(ts),
        ended_at: s.ended_at.map(ts),
        latest_invoice_id: s
            .latest_invoice
            .and_then(|i| i.id().as_ref().map(|id| id.as_str().to_owned())),
        created: ts(s.created),
        manager: s.metadata.get(metadata::MANAGER).cloned(),
        pause_collection: s.pause_collection.map(|p| CollectionPause {
            behavior: p.behavior.as_str().to_owned(),
            resumes_at: p.resumes_at.map(ts),
        }),
        schedule_id: s.schedule.as_ref().map(|x| x.id().as_str().to_owned()),
        next_phase: s
            .schedule
            .as_ref()
            .and_then(|x| x.as_object())
            .and_then(|schedule| {
                next_phase(schedule, item.map(|i| (i.price.id.as_str(), i.quantity)))
            }),
    }
}

/// Whether the schedule still manages its subscription (it can be updated or released).
fn schedule_stands(schedule: &stripe_shared::SubscriptionSchedule) -> bool {
    use stripe_shared::SubscriptionScheduleStatus as S;
    matches!(schedule.status, S::Active | S::NotStarted)
}

/// A phase's discounts, as an update restates them (each by the discount already applied, else
/// its coupon or promotion code).
fn phase_discounts(
    phase: &stripe_shared::SubscriptionSchedulePhaseConfiguration,
) -> Vec<UpdateSubscriptionSchedulePhasesDiscounts> {
    phase
        .discounts
        .iter()
        .map(|d| {
            let mut out = UpdateSubscriptionSchedulePhasesDiscounts::new();
            if let Some(discount) = &d.discount {
                out.discount = Some(discount.id().as_str().to_owned());
            } else if let Some(coupon) = &d.coupon {
                out.coupon = Some(coupon.id().as_str().to_owned());
            } else if let Some(code) = &d.promotion_code {
                out.promotion_code = Some(code.id().as_str().to_owned());
            }
            out
        })
        .collect()
}

/// The phase the schedule is in.
fn current_phase(
    schedule: &stripe_shared::SubscriptionSchedule,
) -> Option<&stripe_shared::SubscriptionSchedulePhaseConfiguration> {
    let current = schedule.current_phase.as_ref()?;
    schedule
        .phases
        .iter()
        .find(|p| p.start_date == current.start_date)
}

/// The phase that follows the current one, when it changes the subscription's price or
/// seats (`held`: its first item's price and quantity now).
fn next_phase(
    schedule: &stripe_shared::SubscriptionSchedule,
    held: Option<(&str, Option<u64>)>,
) -> Option<StripePhase> {
    if !schedule_stands(schedule) {
        return None;
    }
    let current_end = schedule.current_phase.as_ref()?.end_date;
    let next = schedule
        .phases
        .iter()
        .filter(|p| p.start_date >= current_end)
        .min_by_key(|p| p.start_date)?;
    let item = next.items.first()?;
    let phase = StripePhase {
        price_id: item.price.id().as_str().to_owned(),
        quantity: item.quantity.unwrap_or(1),
        starts_at: ts(next.start_date),
    };
    let unchanged = held.is_some_and(|(price, quantity)| {
        price == phase.price_id && quantity.unwrap_or(1) == phase.quantity
    });
    (!unchanged).then_some(phase)
}

/// The charges and payment intents of the invoice's paid payments.
fn paid_by(invoice: &stripe_shared::Invoice) -> Vec<String> {
    invoice
        .payments
        .iter()
        .flat_map(|l| l.data.iter())
        .filter(|p| p.status == "paid")
        .flat_map(|p| {
            [
                p.payment
                    .charge
                    .as_ref()
                    .map(|c| c.id().as_str().to_owned()),
                p.payment
                    .payment_intent
                    .as_ref()
                    .map(|i| i.id().as_str().to_owned()),
            ]
        })
        .flatten()
        .collect()
}

/// The price and seats a proration invoice moved the subscription from (its credit line: unused
/// time) and to (its charge line: remaining time), from its proration lines for the
/// subscription. `None` when its lines do not say both (more than one page of lines, a price
/// given inline).
fn proration_moves(invoice: &stripe_shared::Invoice, subscription_id: &str) -> Option<PriceMove> {
    let prorations: Vec<(i64, String, u64)> = invoice
        .lines
        .data
        .iter()
        .filter_map(|line| {
            let item = line.parent.as_ref()?.subscription_item_details.as_ref()?;
            if !item.proration || item.subscription.as_deref() != Some(subscription_id) {
                return None;
            }
            let price = line.pricing.as_ref()?.price_details.as_ref()?.price.id();
            Some((
                line.amount,
                price.as_str().to_owned(),
                line.quantity.unwrap_or(1),
            ))
        })
        .collect();
    let from = prorations.iter().find(|(amount, ..)| *amount < 0)?;
    let to = prorations.iter().find(|(amount, ..)| *amount > 0)?;
    Some(PriceMove {
        from: (from.1.clone(), from.2),
        to: (to.1.clone(), to.2),
    })
}

/// The search query for customers whose metadata names `subject`. Subject keys are built from
/// validated ids; one that could break out of the quoted value is refused, never sent.
fn subject_query(subject: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !subject.is_empty()
            && subject
                .chars()
                .all(|c| !c.is_control() && c != '\'' && c != '\\'),
        "subject {subject:?} cannot be searched for"
    );
    Ok(format!("metadata['{}']:'{subject}'", metadata::SUBJECT))
}

fn meta(metadata: &Option<HashMap<String, String>>, key: &str) -> Option<String> {
    metadata.as_ref().and_then(|m| m.get(key)).cloned()
}
