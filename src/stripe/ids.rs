//! Stripe object ids, parsed before Tollgate puts one into a request to Stripe. An id is its
//! object's prefix followed by Stripe's id alphabet (`[A-Za-z0-9_]`), so no id can carry a
//! `/`, `..`, `?`, `%` or `#` into a URL path: whatever a caller or a webhook sends, the request
//! Tollgate makes goes to the object it names and nowhere else.

/// The longest Stripe id accepted (Stripe's own are well under 100 characters).
pub const MAX_STRIPE_ID_BYTES: usize = 255;

/// An id that is not of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{shown}` is not a Stripe {kind} id ({prefixes}... followed by letters, digits and _)")]
pub struct InvalidStripeId {
    pub kind: &'static str,
    prefixes: String,
    /// The refused id, cut short and with control characters escaped (it goes into messages).
    shown: String,
}

fn check(id: &str, kind: &'static str, prefixes: &[&str]) -> Result<(), InvalidStripeId> {
    let valid = id.len() <= MAX_STRIPE_ID_BYTES
        && prefixes.iter().any(|prefix| {
            id.strip_prefix(prefix).is_some_and(|rest| {
                !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        });
    if valid {
        return Ok(());
    }
    let shown: String = id.chars().take(64).flat_map(char::escape_default).collect();
    Err(InvalidStripeId {
        kind,
        prefixes: prefixes.join(", "),
        shown,
    })
}

macro_rules! stripe_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, [$($prefix:literal),+]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub const PREFIXES: &'static [&'static str] = &[$($prefix),+];

            pub fn parse(id: &str) -> Result<Self, InvalidStripeId> {
                check(id, $kind, Self::PREFIXES).map(|()| $name(id.to_owned()))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Type};
                let prefixes = Self::PREFIXES.join("|");
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some(format!("A Stripe {} id ({}...).", $kind, Self::PREFIXES.join(", "))))
                    .max_length(Some(MAX_STRIPE_ID_BYTES))
                    .pattern(Some(format!("^({prefixes})[A-Za-z0-9_]+$")))
                    .examples([format!("{}a1B2c3D4e5F6g7H8", Self::PREFIXES[0])])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        crate::billing::ids::string_id!($name);
    };
}

stripe_id!(
    /// `cus_...`
    CustomerId, "customer", ["cus_"]
);
stripe_id!(
    /// `cs_...` (`cs_test_...`, `cs_live_...`)
    CheckoutSessionId, "Checkout Session", ["cs_"]
);
stripe_id!(
    /// `sub_...`
    SubscriptionId, "subscription", ["sub_"]
);
stripe_id!(
    /// `ch_...`, or `py_...` for payments of other payment-method types.
    ChargeId, "charge", ["ch_", "py_"]
);
stripe_id!(
    /// `pi_...`
    PaymentIntentId, "payment intent", ["pi_"]
);
stripe_id!(
    /// `evt_...`
    EventId, "event", ["evt_"]
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_shaped_ids_are_accepted() {
        assert!(CheckoutSessionId::parse(
            "cs_test_a1b2C3d4E5f6G7h8I9j0KLMNOPqrstuVWxyz0123456789abcdefghij"
        )
        .is_ok());
        assert!(CustomerId::parse("cus_NffrFeUfNV2Hib").is_ok());
        assert!(ChargeId::parse("ch_3MmlLrLkdIwHu7ix0snN0B15").is_ok());
        assert!(ChargeId::parse("py_1Abc").is_ok());
        assert!(SubscriptionId::parse("sub_test_7").is_ok());
        assert!(EventId::parse("evt_1NG8Du2eZvKYlo2CUI79vXWy").is_ok());
    }

    #[test]
    fn anything_that_could_steer_a_url_is_refused() {
        for bad in [
            "cs_x?expand[]=customer",
            "cs_x/../../customers",
            "cs_x%2F..",
            "cs_x#frag",
            "cs_x y",
            "cs_x\0",
            "cs_x-1",
            "cs_",
            "cs",
            "",
            "cus_1",
            "CS_abc",
            "cs_é",
        ] {
            let err = CheckoutSessionId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "Checkout Session", "{bad:?}");
        }
        assert!(CustomerId::parse("../../v1/charges").is_err());
        assert!(CustomerId::parse(&format!("cus_{}", "a".repeat(MAX_STRIPE_ID_BYTES))).is_err());
        assert!(ChargeId::parse("pi_123").is_err());
    }

    #[test]
    fn refusals_show_the_id_escaped_and_short() {
        let err = CustomerId::parse(&format!("x\0\n{}", "y".repeat(500))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("x\\u{0}\\n"), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
