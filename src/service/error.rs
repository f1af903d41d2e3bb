//! What a use case answers when it does not do what was asked: a refusal (the billing rules or
//! the caller's rights said no, with a stable code and a sentence saying why) or a failure (of
//! Stripe, or of our own). No HTTP here: `api/` maps each [`Refusal`] kind to a status.

/// The kind of a refusal, which the API turns into a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request names something invalid (400).
    Invalid,
    /// It needs a payment that did not go through (402).
    PaymentRequired,
    /// The caller may not do this (403).
    Forbidden,
    /// What it names does not exist (404).
    NotFound,
    /// The current state does not allow it (409).
    Conflict,
    /// Well-formed but not possible as asked (422).
    Unprocessable,
    /// Too many such requests just now (429); another may succeed after this many seconds.
    TooMany { retry_after_seconds: u64 },
    /// This deployment cannot do it (billing off, Stripe not configured) (503).
    Unavailable,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{detail}")]
    Refused {
        kind: Refusal,
        /// Stable snake_case code (`subscription_exists`).
        code: &'static str,
        detail: String,
    },
    /// Stripe failed or answered something we cannot use.
    #[error("upstream error: {0:#}")]
    Upstream(anyhow::Error),
    /// Something on our side failed.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    pub fn refused(kind: Refusal, code: &'static str, detail: impl Into<String>) -> Self {
        ServiceError::Refused {
            kind,
            code,
            detail: detail.into(),
        }
    }
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Invalid, code, detail)
    }
    pub fn payment_required(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::PaymentRequired, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Forbidden, code, detail)
    }
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::NotFound, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Conflict, code, detail)
    }
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Unprocessable, code, detail)
    }
    pub fn too_many(
        code: &'static str,
        detail: impl Into<String>,
        retry_after_seconds: u64,
    ) -> Self {
        Self::refused(
            Refusal::TooMany {
                retry_after_seconds,
            },
            code,
            detail,
        )
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::refused(Refusal::Unavailable, code, detail)
    }
    pub fn stripe_not_configured() -> Self {
        Self::unavailable(
            "stripe_not_configured",
            "Stripe is not configured on this server: set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET",
        )
    }
    /// Stripe failed or answered something we cannot use.
    pub fn upstream(err: impl Into<anyhow::Error>) -> Self {
        ServiceError::Upstream(err.into())
    }
}
