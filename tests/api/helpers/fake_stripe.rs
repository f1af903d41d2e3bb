//! A stateful fake of the Stripe API on a local HTTP server. Its answers start from Stripe's
//! own published example objects (tests/fixtures/stripe, from stripe-mock's fixtures) with the
//! fields a test depends on set, so they carry every field a real answer has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A request the fake received: method, path, form fields and headers of interest.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub form: HashMap<String, String>,
    pub idempotency_key: Option<String>,
    /// When it arrived.
    pub at: std::time::Instant,
}

#[derive(Default)]
struct State {
    next_id: usize,
    customers: HashMap<String, Value>,
    deleted_customers: Vec<String>,
    idempotent: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    subscriptions: Vec<Value>,
    charges: Vec<Value>,
    /// Invoices with a private `_subscription` field, oldest first.
    invoices: Vec<Value>,
    disputes: Vec<Value>,
    /// Subscription schedules, by id.
    schedules: HashMap<String, Value>,
    promotion_codes: HashMap<String, String>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub server: Arc<MockServer>,
    state: Arc<Mutex<State>>,
    /// The next N subscription listings answer 500.
    failing_lists: Arc<AtomicUsize>,
    /// The next N subscription listings answer 429, as Stripe does beyond its rate limit.
    limited_lists: Arc<AtomicUsize>,
    /// How long subscription listings take to answer (none by default).
    list_delay: Arc<Mutex<std::time::Duration>>,
    /// The next N subscription cancellations answer 500 (and say not to retry).
    failing_cancels: Arc<AtomicUsize>,
    /// While set, a session about to be expired is paid in that instant instead (the buyer
    /// paid in another tab just then): Stripe then refuses to expire it.
    paid_before_expiry: Arc<AtomicBool>,
    /// While set, the customer's card is declined: an update that must be paid first
    /// (`payment_behavior=pending_if_incomplete`) is left pending, as Stripe does.
    declining: Arc<AtomicBool>,
    /// Set by [`FakeStripe::start_payable`]: sessions' `url` is this fake's `/pay/{id}`.
    pay_base: Option<String>,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl FakeStripe {
    pub async fn start() -> FakeStripe {
        Self::serve(MockServer::start().await, false).await
    }

    /// A fake on `listener` whose Checkout Sessions can be paid by opening their `url`
    /// (`GET /pay/{id}` completes the session as paying does and redirects to its success URL):
    /// for trying Tollgate by hand (`cargo run --example fake_stripe`; the tests do not use it).
    #[allow(dead_code)]
    pub async fn start_payable(listener: std::net::TcpListener) -> FakeStripe {
        let server = MockServer::builder().listener(listener).start().await;
        Self::serve(server, true).await
    }

    async fn serve(server: MockServer, payable: bool) -> FakeStripe {
        let pay_base = payable.then(|| server.uri());
        let fake = FakeStripe {
            server: Arc::new(server),
            state: Arc::default(),
            failing_lists: Arc::default(),
            limited_lists: Arc::default(),
            list_delay: Arc::default(),
            failing_cancels: Arc::default(),
            declining: Arc::default(),
            paid_before_expiry: Arc::default(),
            pay_base,
        };
        Mock::given(wiremock::matchers::any())
            .respond_with(fake.clone())
            .mount(&fake.server)
            .await;
        fake
    }

    /// `GET /pay/{id}`: pays an open session and sends the browser to its success URL.
    fn pay(&self, session_id: &str) -> ResponseTemplate {
        let open = {
            let st = self.state.lock().unwrap();
            st.sessions.get(session_id).map(|s| s["status"] == "open")
        };
        match open {
            None => return ResponseTemplate::new(404).set_body_string("no such session\n"),
            Some(false) => {
                return ResponseTemplate::new(409).set_body_string("this session is not open\n")
            }
            Some(true) => {}
        }
        self.complete_checkout(session_id);
        let success = self.session(session_id)["success_url"]
            .as_str()
            .unwrap_or_default()
            .replace("{CHECKOUT_SESSION_ID}", session_id);
        ResponseTemplate::new(303)
            .insert_header("Location", success.as_str())
            .set_body_string(format!("paid {session_id}: continue at {success}\n"))
    }

    pub fn base_url(&self) -> String {
        format!("{}/", self.server.uri())
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_on(&self, method: &str, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    pub fn fail_subscription_lists(&self, times: usize) {
        self.failing_lists.store(times, Ordering::SeqCst);
    }

    /// Makes subscription listings answer after `delay` (a slow Stripe).
    pub fn delay_subscription_lists(&self, delay: std::time::Duration) {
        *self.list_delay.lock().unwrap() = delay;
    }

    /// Answers the next `times` subscription listings with 429 (`rate_limit_error`).
    pub fn rate_limit_subscription_lists(&self, times: usize) {
        self.limited_lists.store(times, Ordering::SeqCst);
    }

    /// Makes the next sessions to be expired be paid in that instant instead (`true`).
    pub fn pay_sessions_before_expiry(&self, paid: bool) {
        self.paid_before_expiry.store(paid, Ordering::SeqCst);
    }

    /// Declines the customer's card (`true`) or accepts it again.
    pub fn decline_cards(&self, declined: bool) {
        self.declining.store(declined, Ordering::SeqCst);
    }

    pub fn fail_cancellations(&self, times: usize) {
        self.failing_cancels.store(times, Ordering::SeqCst);
    }

    pub fn add_promotion_code(&self, code: &str, id: &str) {
        self.state
            .lock()
            .unwrap()
            .promotion_codes
            .insert(code.to_owned(), id.to_owned());
    }

    /// A second active subscription of an existing customer to `price`, created now (a
    /// Checkout Session paid in the instant before it was expired): its id.
    pub fn add_subscription(&self, customer: &str, price: &str, interval: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let n = self.next(&mut st);
        let id = format!("sub_test_{n}");
        let mut s = subscription(&id, customer, price, interval, "active");
        s["created"] = json!(now());
        st.subscriptions.push(s);
        id
    }

    /// [`FakeStripe::add_subscription`], paid: its `subscription_create` invoice and the charge
    /// that paid it (`amount`). Returns (subscription id, payment intent).
    pub fn add_paid_subscription(
        &self,
        customer: &str,
        price: &str,
        interval: &str,
        amount: i64,
    ) -> (String, String) {
        let id = self.add_subscription(customer, price, interval);
        let mut st = self.state.lock().unwrap();
        let n = self.next(&mut st);
        let intent = format!("pi_test_{n}");
        st.charges
            .push(charge(&format!("ch_test_{n}"), customer, &intent, amount));
        let invoice = period_invoice(
            &format!("in_{id}"),
            &id,
            customer,
            "subscription_create",
            &intent,
            amount,
        );
        st.invoices.push(invoice);
        (id, intent)
    }

    /// The charge paid through `payment_intent`.
    pub fn charge_of(&self, payment_intent: &str) -> Value {
        self.state
            .lock()
            .unwrap()
            .charges
            .iter()
            .find(|c| c["payment_intent"] == payment_intent)
            .cloned()
            .expect("a charge of that payment intent")
    }

    /// A customer made outside Tollgate's checkout (a second checkout that created its own, or
    /// one made by hand) whose metadata names `subject`, with an active subscription to
    /// `price`: (customer id, subscription id).
    pub fn add_customer_with_subscription(
        &self,
        subject: &str,
        price: &str,
        interval: &str,
    ) -> (String, String) {
        let mut st = self.state.lock().unwrap();
        let n = self.next(&mut st);
        let customer_id = format!("cus_test_{n}");
        let mut c = fixture("customer");
        c["id"] = json!(customer_id);
        c["email"] = Value::Null;
        c["metadata"] = json!({ "tollgate_subject": subject });
        st.customers.insert(customer_id.clone(), c);
        let subscription_id = format!("sub_test_{n}");
        st.subscriptions.push(subscription(
            &subscription_id,
            &customer_id,
            price,
            interval,
            "active",
        ));
        (customer_id, subscription_id)
    }

    pub fn customer_count(&self) -> usize {
        self.state.lock().unwrap().customers.len()
    }

    /// Completes a Checkout Session as Stripe would after payment: the session becomes
    /// complete and paid and, in subscription mode, a subscription is created for its price.
    pub fn complete_checkout(&self, session_id: &str) -> Option<String> {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let n = st.next_id;
        let session = st.sessions.get_mut(session_id).expect("session exists");
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        let mode = session["mode"].as_str().unwrap().to_owned();
        let customer = session["customer"].as_str().unwrap().to_owned();
        let amount = session["amount_total"].as_i64().unwrap_or(0);
        let charge = charge(
            &format!("ch_test_{n}"),
            &customer,
            &format!("pi_test_{n}"),
            amount,
        );
        if mode == "payment" {
            session["payment_intent"] = json!(format!("pi_test_{n}"));
            st.charges.push(charge);
            return None;
        }
        let price = session["_price"].as_str().unwrap().to_owned();
        let interval = if price.contains("yearly") {
            "year"
        } else {
            "month"
        };
        let trial_days = session["_trial_days"].as_u64().unwrap_or(0);
        let quantity = session["_quantity"].as_u64().unwrap_or(1);
        let metadata = session["metadata"].clone();
        let sub_id = format!("sub_test_{n}");
        session["subscription"] = json!(sub_id);
        let mut sub = subscription(
            &sub_id,
            &customer,
            &price,
            interval,
            if trial_days > 0 { "trialing" } else { "active" },
        );
        sub["metadata"] = metadata;
        sub["items"]["data"][0]["quantity"] = json!(quantity);
        if trial_days > 0 {
            let end = now() + trial_days as i64 * 86_400;
            sub["trial_start"] = json!(now());
            sub["trial_end"] = json!(end);
            sub["items"]["data"][0]["current_period_end"] = json!(end);
        }
        st.subscriptions.push(sub);
        st.charges.push(charge);
        let invoice = period_invoice(
            &format!("in_{sub_id}"),
            &sub_id,
            &customer,
            "subscription_create",
            &format!("pi_test_{n}"),
            amount,
        );
        st.invoices.push(invoice);
        Some(sub_id)
    }

    /// Renews a subscription as Stripe does at the end of a period: a new period starts, and a
    /// `subscription_cycle` invoice is paid by a new charge. Returns the paid invoice (for the
    /// `invoice.paid` event).
    pub fn renew(&self, sub_id: &str) -> Value {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let n = st.next_id;
        let sub = st
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == sub_id)
            .expect("subscription exists");
        // A schedule's phase that begins at the period's end takes effect now, as Stripe
        // moves the subscription to it.
        let period_end = sub["items"]["data"][0]["current_period_end"]
            .as_i64()
            .unwrap();
        let schedule_id = sub["schedule"].as_str().map(str::to_owned);
        let phase = schedule_id
            .as_ref()
            .and_then(|id| st.schedules.get(id))
            .and_then(|schedule| {
                schedule["phases"]
                    .as_array()?
                    .iter()
                    .find(|p| p["start_date"].as_i64() == Some(period_end))
                    .cloned()
            });
        if let (Some(id), Some(p)) = (&schedule_id, &phase) {
            let schedule = st.schedules.get_mut(id).expect("schedule exists");
            schedule["current_phase"] =
                json!({"start_date": p["start_date"], "end_date": p["end_date"]});
        }
        let sub = st
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == sub_id)
            .expect("subscription exists");
        if let Some(phase) = &phase {
            let price = phase["items"][0]["price"].as_str().unwrap().to_owned();
            set_price(sub, &price);
            sub["items"]["data"][0]["quantity"] = phase["items"][0]["quantity"].clone();
        }
        let item = &mut sub["items"]["data"][0];
        let start = item["current_period_end"].as_i64().unwrap().min(now());
        let length = if item["price"]["recurring"]["interval"] == "year" {
            365 * 86_400
        } else {
            30 * 86_400
        };
        item["current_period_start"] = json!(start);
        item["current_period_end"] = json!(start + length);
        let invoice_id = format!("in_test_{n}");
        sub["latest_invoice"] = json!(invoice_id);
        sub["status"] = json!("active");
        let customer = sub["customer"].as_str().unwrap().to_owned();
        let payment_intent = format!("pi_test_{n}");
        st.charges.push(charge(
            &format!("ch_test_{n}"),
            &customer,
            &payment_intent,
            900,
        ));
        let invoice = period_invoice(
            &invoice_id,
            sub_id,
            &customer,
            "subscription_cycle",
            &payment_intent,
            900,
        );
        st.invoices.push(invoice.clone());
        public(invoice)
    }

    /// The payment intent that paid the subscription's newest invoice.
    pub fn latest_payment_intent(&self, sub_id: &str) -> String {
        let st = self.state.lock().unwrap();
        let invoice = st
            .invoices
            .iter()
            .rev()
            .find(|i| i["_subscription"] == sub_id)
            .expect("the subscription has an invoice");
        invoice["payments"]["data"][0]["payment"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Refunds the charge paid through `payment_intent` in full; returns the charge.
    pub fn refund(&self, payment_intent: &str) -> Value {
        self.update_charge(payment_intent, |c| {
            c["refunded"] = json!(true);
            c["amount_refunded"] = c["amount"].clone();
        })
    }

    /// Opens a dispute on the charge paid through `payment_intent`, or moves its dispute to
    /// `status` (`needs_response`, `won`, `lost`, ...); returns the dispute (for the event).
    pub fn dispute(&self, payment_intent: &str, status: &str) -> Value {
        let charge = self.update_charge(payment_intent, |c| c["disputed"] = json!(true));
        let mut st = self.state.lock().unwrap();
        if let Some(d) = st.disputes.iter_mut().find(|d| d["charge"] == charge["id"]) {
            d["status"] = json!(status);
            return d.clone();
        }
        st.next_id += 1;
        let mut d = fixture("dispute");
        d["id"] = json!(format!("du_test_{}", st.next_id));
        d["charge"] = charge["id"].clone();
        d["payment_intent"] = json!(payment_intent);
        d["amount"] = charge["amount"].clone();
        d["status"] = json!(status);
        d["reason"] = json!("fraudulent");
        d["created"] = json!(now());
        st.disputes.push(d.clone());
        d
    }

    /// Adds `n` paid charges of `amount` to the customer, newer than any before.
    pub fn add_charges(&self, customer: &str, n: usize, amount: i64) {
        let mut st = self.state.lock().unwrap();
        for _ in 0..n {
            st.next_id += 1;
            let id = st.next_id;
            let c = charge(
                &format!("ch_test_{id}"),
                customer,
                &format!("pi_test_{id}"),
                amount,
            );
            st.charges.push(c);
        }
    }

    /// Adds a failed charge of `amount` to the customer (a declined renewal), newer than any
    /// before; returns it.
    pub fn add_failed_charge(&self, customer: &str, amount: i64) -> Value {
        let mut st = self.state.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        let mut c = charge(
            &format!("ch_test_{id}"),
            customer,
            &format!("pi_test_{id}"),
            amount,
        );
        c["status"] = json!("failed");
        c["paid"] = json!(false);
        c["captured"] = json!(false);
        c["amount_captured"] = json!(0);
        c["failure_code"] = json!("card_declined");
        c["failure_message"] = json!("Your card was declined.");
        st.charges.push(c.clone());
        c
    }

    /// Deletes a customer as Stripe does: its subscriptions are canceled and retrieving it
    /// answers a deleted-customer object.
    pub fn delete_customer(&self, id: &str) -> Value {
        let mut st = self.state.lock().unwrap();
        let customer = st.customers.remove(id).expect("customer exists");
        st.deleted_customers.push(id.to_owned());
        for sub in st.subscriptions.iter_mut().filter(|s| s["customer"] == id) {
            sub["status"] = json!("canceled");
            sub["ended_at"] = json!(now());
            sub["canceled_at"] = json!(now());
        }
        customer
    }

    /// Changes the charge paid through `payment_intent` (Stripe's truth) with `f`.
    pub fn update_charge(&self, payment_intent: &str, f: impl FnOnce(&mut Value)) -> Value {
        let mut st = self.state.lock().unwrap();
        let charge = st
            .charges
            .iter_mut()
            .find(|c| c["payment_intent"] == payment_intent)
            .expect("charge exists");
        f(charge);
        charge.clone()
    }

    /// Changes a stored subscription (Stripe's truth) with `f`.
    pub fn update_subscription(&self, id: &str, f: impl FnOnce(&mut Value)) -> Value {
        let mut st = self.state.lock().unwrap();
        let sub = st
            .subscriptions
            .iter_mut()
            .find(|s| s["id"] == id)
            .expect("subscription exists");
        f(sub);
        sub.clone()
    }

    pub fn subscription(&self, id: &str) -> Value {
        self.update_subscription(id, |_| {})
    }

    pub fn session(&self, id: &str) -> Value {
        self.state.lock().unwrap().sessions[id].clone()
    }

    /// The payment intent that paid a completed one-time Checkout Session.
    pub fn payment_intent_of(&self, session_id: &str) -> String {
        self.session(session_id)["payment_intent"]
            .as_str()
            .expect("a paid one-time session")
            .to_owned()
    }

    fn next(&self, st: &mut State) -> usize {
        st.next_id += 1;
        st.next_id
    }

    fn handle(&self, req: &Request) -> ResponseTemplate {
        let path = req.url.path().to_owned();
        let method = req.method.to_string();
        if let (Some(_), Some(id)) = (&self.pay_base, path.strip_prefix("/pay/")) {
            if method == "GET" {
                return self.pay(id);
            }
        }
        let form: HashMap<String, String> = if method == "GET" {
            req.url.query_pairs().into_owned().collect()
        } else {
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(&req.body)
                .unwrap_or_default()
                .into_iter()
                .collect()
        };
        let idempotency_key = req
            .headers
            .get("Idempotency-Key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut st = self.state.lock().unwrap();
        st.received.push(Received {
            method: method.clone(),
            path: path.clone(),
            form: form.clone(),
            idempotency_key: idempotency_key.clone(),
            at: std::time::Instant::now(),
        });
        if let Some(key) = &idempotency_key {
            if let Some(previous) = st.idempotent.get(key) {
                return ResponseTemplate::new(200).set_body_json(previous.clone());
            }
        }
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let response = match (method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "customers"]) => {
                let n = self.next(&mut st);
                let mut c = fixture("customer");
                let id = format!("cus_test_{n}");
                c["id"] = json!(id);
                c["email"] = form.get("email").map_or(Value::Null, |e| json!(e));
                c["metadata"] = metadata(&form);
                st.customers.insert(id, c.clone());
                Ok(c)
            }
            ("GET", ["v1", "customers", "search"]) => {
                // Only the query Tollgate sends: metadata['tollgate_subject']:'<subject>'.
                let query = form.get("query").cloned().unwrap_or_default();
                let subject = query
                    .strip_prefix("metadata['tollgate_subject']:'")
                    .and_then(|rest| rest.strip_suffix('\''))
                    .unwrap_or_else(|| panic!("unexpected customer search {query:?}"));
                let data: Vec<Value> = newest_first(&st.customers)
                    .into_iter()
                    .filter(|c| c["metadata"]["tollgate_subject"] == subject)
                    .collect();
                Ok(
                    json!({"object": "search_result", "data": data, "has_more": false,
                    "next_page": null, "url": "/v1/customers/search"}),
                )
            }
            ("GET", ["v1", "customers"]) => {
                Ok(page(newest_first(&st.customers), &form, "/v1/customers"))
            }
            ("GET", ["v1", "customers", id]) => match st.customers.get(*id) {
                Some(c) => Ok(c.clone()),
                None if st.deleted_customers.iter().any(|d| d == id) => {
                    Ok(json!({"id": id, "object": "customer", "deleted": true}))
                }
                None => Err(404),
            },
            ("POST", ["v1", "checkout", "sessions"]) => {
                let n = self.next(&mut st);
                let id = format!("cs_test_{n}");
                let mut s = fixture("checkout_session");
                s["id"] = json!(id);
                s["object"] = json!("checkout.session");
                s["url"] = json!(match &self.pay_base {
                    Some(base) => format!("{base}/pay/{id}"),
                    None => format!("https://checkout.stripe.com/c/pay/{id}"),
                });
                s["customer"] = form.get("customer").map_or(Value::Null, |c| json!(c));
                s["client_reference_id"] = form
                    .get("client_reference_id")
                    .map_or(Value::Null, |c| json!(c));
                s["mode"] = json!(form.get("mode").cloned().unwrap_or_default());
                s["metadata"] = metadata(&form);
                s["status"] = json!("open");
                s["payment_status"] = json!("unpaid");
                s["subscription"] = Value::Null;
                s["payment_intent"] = Value::Null;
                s["created"] = json!(now());
                s["success_url"] = form.get("success_url").map_or(Value::Null, |c| json!(c));
                s["cancel_url"] = form.get("cancel_url").map_or(Value::Null, |c| json!(c));
                let price = form
                    .get("line_items[0][price]")
                    .cloned()
                    .unwrap_or_default();
                s["amount_total"] = json!(if price == "price_lifetime" {
                    19900
                } else {
                    900
                });
                s["currency"] = json!("usd");
                let mut stored = s.clone();
                stored["_price"] = json!(price);
                stored["_trial_days"] = json!(form
                    .get("subscription_data[trial_period_days]")
                    .and_then(|d| d.parse::<u64>().ok())
                    .unwrap_or(0));
                stored["_quantity"] = json!(form
                    .get("line_items[0][quantity]")
                    .and_then(|d| d.parse::<u64>().ok())
                    .unwrap_or(1));
                st.sessions.insert(id, stored);
                Ok(s)
            }
            ("GET", ["v1", "checkout", "sessions"]) => {
                let customer = form.get("customer").cloned().unwrap_or_default();
                let status = form.get("status").cloned();
                let data: Vec<Value> = st
                    .sessions
                    .values()
                    .filter(|s| s["customer"] == customer.as_str())
                    .filter(|s| status.as_ref().is_none_or(|st| s["status"] == st.as_str()))
                    .cloned()
                    .map(public)
                    .collect();
                Ok(
                    json!({"object": "list", "data": data, "has_more": false, "url": "/v1/checkout/sessions"}),
                )
            }
            ("POST", ["v1", "checkout", "sessions", id, "expire"]) => {
                if self.paid_before_expiry.load(Ordering::SeqCst) {
                    if let Some(s) = st.sessions.get_mut(*id) {
                        s["status"] = json!("complete");
                        s["payment_status"] = json!("paid");
                    }
                }
                match st.sessions.get_mut(*id) {
                    None => Err(404),
                    Some(s) if s["status"] != "open" => {
                        return error(
                            400,
                            "invalid_request_error",
                            "Only Checkout Sessions with a status of `open` can be expired.",
                        );
                    }
                    Some(s) => {
                        s["status"] = json!("expired");
                        s["url"] = Value::Null;
                        Ok(s.clone())
                    }
                }
            }
            ("GET", ["v1", "checkout", "sessions", id]) => {
                st.sessions.get(*id).cloned().map(public).ok_or(404)
            }
            ("GET", ["v1", "subscriptions"]) => {
                if self.failing_lists.load(Ordering::SeqCst) > 0 {
                    self.failing_lists.fetch_sub(1, Ordering::SeqCst);
                    return error(500, "api_error", "fake outage");
                }
                if self.limited_lists.load(Ordering::SeqCst) > 0 {
                    self.limited_lists.fetch_sub(1, Ordering::SeqCst);
                    return ResponseTemplate::new(429).set_body_json(json!({"error": {
                        "type": "invalid_request_error",
                        "code": "rate_limit",
                        "message": "Too many requests hit the API too quickly."
                    }}));
                }
                let customer = form.get("customer").cloned().unwrap_or_default();
                let expand = form.values().any(|v| v == "data.schedule");
                let data: Vec<Value> = st
                    .subscriptions
                    .iter()
                    .filter(|s| s["customer"] == customer.as_str())
                    .map(|s| {
                        let mut s = s.clone();
                        if let (true, Some(id)) = (expand, s["schedule"].as_str()) {
                            s["schedule"] = st.schedules[id].clone();
                        }
                        s
                    })
                    .collect();
                Ok(
                    json!({"object": "list", "data": data, "has_more": false, "url": "/v1/subscriptions"}),
                )
            }
            ("GET", ["v1", "charges", id]) => st
                .charges
                .iter()
                .find(|c| c["id"] == *id)
                .cloned()
                .ok_or(404),
            ("GET", ["v1", "charges"]) => {
                let customer = form.get("customer").cloned().unwrap_or_default();
                let mut data: Vec<Value> = st
                    .charges
                    .iter()
                    .filter(|c| c["customer"] == customer.as_str())
                    .cloned()
                    .collect();
                data.reverse();
                Ok(page(data, &form, "/v1/charges"))
            }
            ("GET", ["v1", "invoices"]) => {
                let subscription = form.get("subscription").cloned().unwrap_or_default();
                let mut data: Vec<Value> = st
                    .invoices
                    .iter()
                    .filter(|i| i["_subscription"] == subscription.as_str())
                    .cloned()
                    .map(public)
                    .collect();
                data.reverse();
                Ok(page(data, &form, "/v1/invoices"))
            }
            ("GET", ["v1", "disputes"]) => {
                let charge = form.get("charge").cloned().unwrap_or_default();
                let data: Vec<Value> = st
                    .disputes
                    .iter()
                    .filter(|d| d["charge"] == charge.as_str())
                    .cloned()
                    .collect();
                Ok(page(data, &form, "/v1/disputes"))
            }
            ("GET", ["v1", "subscriptions", id]) => st
                .subscriptions
                .iter()
                .find(|s| s["id"] == *id)
                .cloned()
                .ok_or(404),
            ("POST", ["v1", "subscriptions", id]) => {
                match st.subscriptions.iter_mut().find(|s| s["id"] == *id) {
                    None => Err(404),
                    Some(sub) => {
                        let held = |sub: &Value| {
                            let item = &sub["items"]["data"][0];
                            (
                                item["price"]["id"].as_str().unwrap_or_default().to_owned(),
                                item["quantity"].as_u64().unwrap_or(1),
                            )
                        };
                        let before = held(sub);
                        let cancelation = form.contains_key("cancel_at_period_end")
                            || form.contains_key("cancel_at");
                        if let (true, Some(schedule)) = (cancelation, sub["schedule"].as_str()) {
                            // As Stripe answers.
                            return error(
                                400,
                                "invalid_request_error",
                                &format!(
                                    "The subscription is managed by the subscription schedule \
                                     `{schedule}`, and updating any cancelation behavior \
                                     directly is not allowed. Please update the schedule instead."
                                ),
                            );
                        }
                        if let Some(cancel) = form.get("cancel_at_period_end") {
                            sub["cancel_at_period_end"] = json!(cancel == "true");
                            sub["canceled_at"] = if cancel == "true" {
                                json!(now())
                            } else {
                                sub["cancel_at"] = Value::Null;
                                Value::Null
                            };
                        }
                        if let Some(pause) = form.get("pause_collection") {
                            // Only the empty value (lift the pause) is sent by Tollgate.
                            assert_eq!(pause, "", "pause_collection is only ever unset");
                            sub["pause_collection"] = Value::Null;
                        }
                        if let Some(at) = form.get("cancel_at") {
                            // An empty value unsets the field, as Stripe does.
                            sub["cancel_at"] = match at.as_str() {
                                "" => Value::Null,
                                t => json!(t.parse::<i64>().expect("a timestamp")),
                            };
                            if at.is_empty() {
                                sub["canceled_at"] = Value::Null;
                            }
                        }
                        // Paid first: with the card declined, Stripe keeps the change pending
                        // (items unchanged) until the open invoice is paid, for 23 hours.
                        let held_back = form.get("payment_behavior").map(String::as_str)
                            == Some("pending_if_incomplete")
                            && self.declining.load(Ordering::SeqCst);
                        if !held_back && form.contains_key("items[0][price]") {
                            sub["pending_update"] = Value::Null;
                        }
                        if held_back {
                            sub["pending_update"] = json!({
                                "expires_at": now() + 23 * 3600,
                                "billing_cycle_anchor": null,
                                "subscription_items": null,
                                "trial_end": null,
                                "trial_from_plan": null,
                            });
                        }
                        if let Some(price) = form.get("items[0][price]").filter(|_| !held_back) {
                            assert_eq!(
                                form.get("items[0][id]"),
                                sub["items"]["data"][0]["id"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .as_ref()
                            );
                            set_price(sub, price);
                        }
                        if let Some(q) = form.get("items[0][quantity]").filter(|_| !held_back) {
                            sub["items"]["data"][0]["quantity"] =
                                json!(q.parse::<u64>().expect("a quantity"));
                        }
                        let updates: Vec<(String, String)> = form
                            .iter()
                            .filter_map(|(k, v)| {
                                let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                                Some((key.to_owned(), v.clone()))
                            })
                            .collect();
                        for (k, v) in updates {
                            sub["metadata"][k] = json!(v);
                        }
                        let after = held(sub);
                        let updated = sub.clone();
                        // Billed at once: a proration invoice (credit for the unused time of
                        // the old price, charge for the rest of the period at the new one),
                        // paid by a new charge when it costs more.
                        if before != after
                            && form.get("proration_behavior").map(String::as_str)
                                == Some("always_invoice")
                        {
                            let n = self.next(&mut st);
                            let customer = updated["customer"].as_str().unwrap().to_owned();
                            let payment_intent = format!("pi_test_{n}");
                            st.charges.push(charge(
                                &format!("ch_test_{n}"),
                                &customer,
                                &payment_intent,
                                450,
                            ));
                            let mut invoice = period_invoice(
                                &format!("in_test_{n}"),
                                id,
                                &customer,
                                "subscription_update",
                                &payment_intent,
                                450,
                            );
                            let template = invoice["lines"]["data"][0].clone();
                            invoice["lines"]["data"] = json!([
                                proration_line(&template, id, &before, -450),
                                proration_line(&template, id, &after, 900),
                            ]);
                            st.invoices.push(invoice);
                        }
                        Ok(updated)
                    }
                }
            }
            ("POST", ["v1", "subscription_schedules"]) => {
                // Only what Tollgate sends: a schedule made from a subscription, whose one
                // phase is the subscription as it stands until its period ends.
                let sub_id = form.get("from_subscription").cloned().unwrap_or_default();
                let n = self.next(&mut st);
                let id = format!("sub_sched_test_{n}");
                match st
                    .subscriptions
                    .iter_mut()
                    .find(|s| s["id"] == sub_id.as_str())
                {
                    None => Err(404),
                    Some(sub) if sub["schedule"].is_string() => {
                        return error(
                            400,
                            "invalid_request_error",
                            "You cannot migrate a subscription that is already attached to a \
                             schedule.",
                        );
                    }
                    Some(sub) => {
                        sub["schedule"] = json!(id);
                        let item = &sub["items"]["data"][0];
                        let (start, end) = (
                            item["current_period_start"].clone(),
                            item["current_period_end"].clone(),
                        );
                        let mut schedule = fixture("subscription_schedule");
                        schedule["id"] = json!(id);
                        schedule["customer"] = sub["customer"].clone();
                        schedule["subscription"] = json!(sub_id);
                        schedule["status"] = json!("active");
                        schedule["end_behavior"] = json!("release");
                        schedule["canceled_at"] = Value::Null;
                        schedule["completed_at"] = Value::Null;
                        schedule["released_at"] = Value::Null;
                        schedule["created"] = json!(now());
                        schedule["current_phase"] = json!({"start_date": start, "end_date": end});
                        let template = schedule["phases"][0].clone();
                        let mut phase = schedule_phase(
                            &template,
                            item["price"]["id"].as_str().unwrap(),
                            item["quantity"].as_u64().unwrap_or(1),
                            start.as_i64().unwrap(),
                            end.as_i64().unwrap(),
                        );
                        phase["trial_end"] = sub["trial_end"].clone();
                        schedule["phases"] = json!([phase]);
                        st.schedules.insert(id, schedule.clone());
                        Ok(schedule)
                    }
                }
            }
            ("GET", ["v1", "subscription_schedules", id]) => {
                st.schedules.get(*id).cloned().ok_or(404)
            }
            ("POST", ["v1", "subscription_schedules", id, "release"]) => {
                let Some(schedule) = st.schedules.get_mut(*id) else {
                    return error(
                        404,
                        "invalid_request_error",
                        "No such subscription schedule",
                    );
                };
                if schedule["status"] != "active" {
                    return error(
                        400,
                        "invalid_request_error",
                        "You cannot release a subscription schedule that is currently in the \
                         `released` status.",
                    );
                }
                let sub_id = schedule["subscription"].as_str().unwrap().to_owned();
                schedule["status"] = json!("released");
                schedule["released_at"] = json!(now());
                schedule["released_subscription"] = json!(sub_id);
                schedule["subscription"] = Value::Null;
                schedule["current_phase"] = Value::Null;
                let released = schedule.clone();
                if let Some(sub) = st
                    .subscriptions
                    .iter_mut()
                    .find(|s| s["id"] == sub_id.as_str())
                {
                    sub["schedule"] = Value::Null;
                }
                Ok(released)
            }
            ("POST", ["v1", "subscription_schedules", id]) => {
                let Some(schedule) = st.schedules.get_mut(*id) else {
                    return error(
                        404,
                        "invalid_request_error",
                        "No such subscription schedule",
                    );
                };
                if schedule["status"] != "active" {
                    return error(
                        400,
                        "invalid_request_error",
                        "You cannot update a subscription schedule that is currently in the \
                         `released` status. It must be in `not_started`, `active` status to be \
                         updated.",
                    );
                }
                // As Stripe checks: the current phase keeps its start.
                let current_start = schedule["current_phase"]["start_date"].as_i64().unwrap();
                let first_start = form
                    .get("phases[0][start_date]")
                    .and_then(|v| v.parse::<i64>().ok());
                if first_start != Some(current_start) {
                    return error(
                        400,
                        "invalid_request_error",
                        "You can not modify the start date of the current phase.",
                    );
                }
                let template = schedule["phases"][0].clone();
                let mut phases = Vec::new();
                let mut start = current_start;
                for i in 0.. {
                    let Some(price) = form.get(&format!("phases[{i}][items][0][price]")) else {
                        break;
                    };
                    let quantity = form
                        .get(&format!("phases[{i}][items][0][quantity]"))
                        .map_or(1, |q| q.parse::<u64>().unwrap());
                    let end = match form.get(&format!("phases[{i}][end_date]")) {
                        Some(end) => end.parse::<i64>().unwrap(),
                        None => {
                            let interval = &form[&format!("phases[{i}][duration][interval]")];
                            let count: i64 = form
                                .get(&format!("phases[{i}][duration][interval_count]"))
                                .map_or(1, |c| c.parse().unwrap());
                            start
                                + count
                                    * if interval == "year" {
                                        365 * 86_400
                                    } else {
                                        30 * 86_400
                                    }
                        }
                    };
                    let mut phase = schedule_phase(&template, price, quantity, start, end);
                    phase["trial_end"] = form
                        .get(&format!("phases[{i}][trial_end]"))
                        .map_or(Value::Null, |t| json!(t.parse::<i64>().unwrap()));
                    phases.push(phase);
                    start = end;
                }
                schedule["phases"] = json!(phases);
                if let Some(end_behavior) = form.get("end_behavior") {
                    schedule["end_behavior"] = json!(end_behavior);
                }
                schedule["current_phase"]["end_date"] = phases[0]["end_date"].clone();
                Ok(schedule.clone())
            }
            ("POST", ["v1", "refunds"]) => {
                let intent = form.get("payment_intent").cloned().unwrap_or_default();
                let n = self.next(&mut st);
                match st
                    .charges
                    .iter_mut()
                    .find(|c| c["payment_intent"] == intent.as_str())
                {
                    None => Err(404),
                    Some(c) if c["refunded"] == true => {
                        return error(
                            400,
                            "invalid_request_error",
                            "Charge has already been refunded.",
                        )
                        .set_body_json(json!({"error": {
                            "type": "invalid_request_error",
                            "code": "charge_already_refunded",
                            "message": format!("Charge {} has already been refunded.", c["id"]),
                        }}));
                    }
                    Some(c) => {
                        c["refunded"] = json!(true);
                        c["amount_refunded"] = c["amount"].clone();
                        Ok(json!({
                            "id": format!("re_test_{n}"), "object": "refund",
                            "amount": c["amount"], "balance_transaction": null,
                            "charge": c["id"], "created": now(), "currency": "usd",
                            "customer": c["customer"], "customer_account": null,
                            "description": null, "destination_details": null,
                            "failure_balance_transaction": null, "failure_reason": null,
                            "instructions_email": null, "metadata": {}, "next_action": null,
                            "payment_intent": intent, "payment_method": null,
                            "pending_reason": null, "presentment_details": null,
                            "reason": form.get("reason"), "receipt_number": null,
                            "source_transfer_reversal": null, "status": "succeeded",
                            "transfer_reversal": null,
                        }))
                    }
                }
            }
            ("DELETE", ["v1", "subscriptions", id]) => {
                if self.failing_cancels.load(Ordering::SeqCst) > 0 {
                    self.failing_cancels.fetch_sub(1, Ordering::SeqCst);
                    return error(500, "api_error", "fake outage")
                        .insert_header("Stripe-Should-Retry", "false");
                }
                match st.subscriptions.iter_mut().find(|s| s["id"] == *id) {
                    None => Err(404),
                    Some(sub) if sub["status"] == "canceled" => {
                        return error(
                            400,
                            "invalid_request_error",
                            "This subscription has already been canceled.",
                        );
                    }
                    Some(sub) => {
                        sub["status"] = json!("canceled");
                        sub["canceled_at"] = json!(now());
                        sub["ended_at"] = json!(now());
                        sub["cancellation_details"] = json!({
                            "comment": form.get("cancellation_details[comment]"),
                            "feedback": null,
                            "reason": "cancellation_requested",
                        });
                        Ok(sub.clone())
                    }
                }
            }
            ("POST", ["v1", "subscriptions", id, "resume"]) => {
                match st.subscriptions.iter_mut().find(|s| s["id"] == *id) {
                    None => Err(404),
                    Some(sub) => {
                        sub["status"] = json!("active");
                        sub["pause_collection"] = Value::Null;
                        Ok(sub.clone())
                    }
                }
            }
            ("POST", ["v1", "billing_portal", "sessions"]) => {
                let n = self.next(&mut st);
                let mut p = fixture("billing_portal_session");
                p["id"] = json!(format!("bps_test_{n}"));
                p["customer"] = json!(form.get("customer").cloned().unwrap_or_default());
                p["return_url"] = form.get("return_url").map_or(Value::Null, |c| json!(c));
                p["url"] = json!(format!("https://billing.stripe.com/p/session/test_{n}"));
                Ok(p)
            }
            ("GET", ["v1", "promotion_codes"]) => {
                let code = form.get("code").cloned().unwrap_or_default();
                let data: Vec<Value> = st
                    .promotion_codes
                    .get(&code)
                    .map(|id| {
                        let mut p = fixture("promotion_code");
                        p["id"] = json!(id);
                        p["code"] = json!(code);
                        p["active"] = json!(true);
                        vec![p]
                    })
                    .unwrap_or_default();
                Ok(
                    json!({"object": "list", "data": data, "has_more": false, "url": "/v1/promotion_codes"}),
                )
            }
            _ => Err(404),
        };
        match response {
            Ok(body) => {
                if let Some(key) = idempotency_key {
                    st.idempotent.insert(key, body.clone());
                }
                ResponseTemplate::new(200).set_body_json(body)
            }
            Err(status) => error(
                status,
                "invalid_request_error",
                &format!("No such resource: {path}"),
            ),
        }
    }
}

impl Respond for FakeStripe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let response = self.handle(request);
        let delay = *self.list_delay.lock().unwrap();
        if request.method.as_str() == "GET" && request.url.path() == "/v1/subscriptions" {
            response.set_delay(delay)
        } else {
            response
        }
    }
}

fn error(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": {"type": kind, "code": if status == 404 { "resource_missing" } else { "api_error" }, "message": message}
    }))
}

/// `metadata[key]=value` form fields as a JSON object.
fn metadata(form: &HashMap<String, String>) -> Value {
    let map: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), json!(v)))
        })
        .collect();
    Value::Object(map)
}

/// One page of a list, newest first, honouring `limit` and `starting_after` as Stripe does.
fn page(data: Vec<Value>, form: &HashMap<String, String>, url: &str) -> Value {
    let limit = form
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10);
    let from = form
        .get("starting_after")
        .and_then(|after| data.iter().position(|v| v["id"] == after.as_str()))
        .map_or(0, |i| i + 1);
    let rest = &data[from.min(data.len())..];
    let shown: Vec<Value> = rest.iter().take(limit).cloned().collect();
    json!({"object": "list", "data": shown, "has_more": rest.len() > limit, "url": url})
}

/// The customers, newest (highest number) first, as Stripe lists them.
fn newest_first(customers: &HashMap<String, Value>) -> Vec<Value> {
    let mut all: Vec<&Value> = customers.values().collect();
    let number = |c: &Value| {
        c["id"]
            .as_str()
            .and_then(|id| id.rsplit('_').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    all.sort_by_key(|c| std::cmp::Reverse(number(c)));
    all.into_iter().cloned().collect()
}

/// Drops the fake's private bookkeeping fields.
fn public(mut v: Value) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.retain(|k, _| !k.starts_with('_'));
    }
    v
}

/// A subscription shaped like Stripe's example, for one price, with a current period around now.
pub fn subscription(id: &str, customer: &str, price: &str, interval: &str, status: &str) -> Value {
    let mut s = fixture("subscription");
    let start = now() - 3600;
    let end = start
        + if interval == "year" {
            365 * 86_400
        } else {
            30 * 86_400
        };
    s["id"] = json!(id);
    s["customer"] = json!(customer);
    s["status"] = json!(status);
    s["created"] = json!(start);
    s["start_date"] = json!(start);
    s["billing_cycle_anchor"] = json!(start);
    s["cancel_at"] = Value::Null;
    s["cancel_at_period_end"] = json!(false);
    s["canceled_at"] = Value::Null;
    s["ended_at"] = Value::Null;
    s["trial_start"] = Value::Null;
    s["trial_end"] = Value::Null;
    s["pause_collection"] = Value::Null;
    s["pending_update"] = Value::Null;
    s["latest_invoice"] = json!(format!("in_{id}"));
    let item = &mut s["items"]["data"][0];
    item["id"] = json!(format!("si_{id}"));
    item["subscription"] = json!(id);
    item["price"]["id"] = json!(price);
    item["price"]["recurring"]["interval"] = json!(interval);
    item["plan"]["id"] = json!(price);
    item["plan"]["interval"] = json!(interval);
    item["current_period_start"] = json!(start);
    item["current_period_end"] = json!(end);
    s["items"]["url"] = json!(format!("/v1/subscription_items?subscription={id}"));
    s
}

/// Moves the subscription's item to `price` (the fake's yearly prices say so in their id).
fn set_price(sub: &mut Value, price: &str) {
    let interval = if price.contains("yearly") {
        "year"
    } else {
        "month"
    };
    let item = &mut sub["items"]["data"][0];
    item["price"]["id"] = json!(price);
    item["price"]["recurring"]["interval"] = json!(interval);
    item["plan"]["id"] = json!(price);
    item["plan"]["interval"] = json!(interval);
}

/// A proration line of `subscription`'s item, for `(price, quantity)`, shaped like `template`
/// (Stripe's example line): a credit for unused time when `amount` is negative.
fn proration_line(
    template: &Value,
    subscription: &str,
    held: &(String, u64),
    amount: i64,
) -> Value {
    let mut line = template.clone();
    line["amount"] = json!(amount);
    line["subtotal"] = json!(amount);
    line["quantity"] = json!(held.1);
    line["subscription"] = json!(subscription);
    line["parent"] = json!({
        "type": "subscription_item_details",
        "invoice_item_details": null,
        "subscription_item_details": {
            "invoice_item": null,
            "proration": true,
            "proration_details": {"credited_items": null},
            "subscription": subscription,
            "subscription_item": format!("si_{subscription}"),
        },
    });
    line["pricing"] = json!({
        "type": "price_details",
        "price_details": {"price": held.0, "product": "prod_test"},
        "unit_amount_decimal": null,
    });
    line
}

/// A phase of a subscription schedule, shaped like `template` (Stripe's example phase).
fn schedule_phase(template: &Value, price: &str, quantity: u64, start: i64, end: i64) -> Value {
    let mut phase = template.clone();
    phase["start_date"] = json!(start);
    phase["end_date"] = json!(end);
    phase["items"][0]["price"] = json!(price);
    phase["items"][0]["plan"] = json!(price);
    phase["items"][0]["quantity"] = json!(quantity);
    phase["proration_behavior"] = json!("none");
    phase
}

/// An invoice shaped like Stripe's example, for a subscription's customer.
pub fn invoice(id: &str, customer: &str, status: &str) -> Value {
    let mut i = fixture("invoice");
    i["id"] = json!(id);
    i["object"] = json!("invoice");
    i["customer"] = json!(customer);
    i["status"] = json!(status);
    i["created"] = json!(now());
    i
}

/// A paid invoice that opened a subscription period, with its payment (API 2025+ links
/// payments to invoices through `payments`, which the fake always includes).
fn period_invoice(
    id: &str,
    subscription: &str,
    customer: &str,
    billing_reason: &str,
    payment_intent: &str,
    amount: i64,
) -> Value {
    let mut i = invoice(id, customer, "paid");
    i["billing_reason"] = json!(billing_reason);
    i["amount_paid"] = json!(amount);
    i["parent"] = json!({
        "type": "subscription_details",
        "quote_details": null,
        "subscription_details": {"metadata": {}, "subscription": subscription},
    });
    let mut payment = fixture("invoice_payment");
    payment["id"] = json!(format!("inpay_{id}"));
    payment["invoice"] = json!(id);
    payment["currency"] = json!("usd");
    payment["amount_paid"] = json!(amount);
    payment["amount_requested"] = json!(amount);
    payment["status"] = json!("paid");
    payment["payment"] = json!({"type": "payment_intent", "payment_intent": payment_intent});
    payment["status_transitions"]["paid_at"] = json!(now());
    i["payments"] = json!({
        "object": "list", "data": [payment], "has_more": false,
        "url": format!("/v1/invoice_payments?invoice={id}"),
    });
    i["_subscription"] = json!(subscription);
    i
}

/// A succeeded charge shaped like Stripe's example.
pub fn charge(id: &str, customer: &str, payment_intent: &str, amount: i64) -> Value {
    let mut c = fixture("charge");
    c["id"] = json!(id);
    c["object"] = json!("charge");
    c["customer"] = json!(customer);
    c["payment_intent"] = json!(payment_intent);
    c["amount"] = json!(amount);
    c["amount_captured"] = json!(amount);
    c["amount_refunded"] = json!(0);
    c["currency"] = json!("usd");
    c["status"] = json!("succeeded");
    c["paid"] = json!(true);
    c["captured"] = json!(true);
    c["refunded"] = json!(false);
    c["disputed"] = json!(false);
    c["created"] = json!(now());
    c["description"] = json!("Tollgate test charge");
    c
}
