//! The identity provider's ids for users and tenants, parsed once where a caller hands them in
//! (a query, a path, a body, a token claim), so that nothing inside Tollgate ever holds an id
//! that the database cannot store or a log line cannot show: 1 to 255 characters, not blank,
//! without control characters (NUL among them, which PostgreSQL refuses in text).

/// The longest id accepted, in characters (Unicode scalar values, as JSON Schema counts them).
pub const MAX_ID_CHARS: usize = 255;

/// [`check_external_id`] as a JSON Schema (ECMA-262) pattern, for the OpenAPI document: no
/// control character (Unicode category Cc), and at least one character that is neither a
/// control character nor white space (Rust's `str::trim`). Length is `minLength`/`maxLength`.
pub const EXTERNAL_ID_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000-\u001f\u007f-\u009f]*$";

/// Why a caller's id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty or blank")]
    Blank,
    #[error("is longer than {MAX_ID_CHARS} characters")]
    TooLong,
    #[error("contains a control character")]
    ControlCharacter,
}

/// Checks the rules every external id follows (see the module documentation).
pub fn check_external_id(id: &str) -> Result<(), IdError> {
    if id.trim().is_empty() {
        Err(IdError::Blank)
    } else if id.chars().count() > MAX_ID_CHARS {
        Err(IdError::TooLong)
    } else if id.chars().any(char::is_control) {
        Err(IdError::ControlCharacter)
    } else {
        Ok(())
    }
}

/// What every id newtype over a `String` has: `as_str`, `Display`, `AsRef<str>`, conversion
/// into `String` and comparison with strings (here and in `stripe::ids`).
macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<&$name> for String {
            fn from(id: &$name) -> String {
                id.0.clone()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}
pub(crate) use string_id;

/// The OpenAPI schema of an id that [`check_external_id`] accepts.
fn external_id_schema(
    description: &str,
    example: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(MAX_ID_CHARS))
        .pattern(Some(EXTERNAL_ID_PATTERN))
        .examples([example])
        .into()
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident, $description:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                external_id_schema($description, $example)
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            pub fn parse(id: &str) -> Result<Self, IdError> {
                check_external_id(id).map(|()| $name(id.to_owned()))
            }
        }

        string_id!($name);
    };
}

external_id!(
    /// A user, as the identity provider names them (a token's `sub`, a service's `user_id`).
    UserId,
    "The identity provider's user id: 1 to 255 characters, not blank, no control characters.",
    "user_2NNEqL2nrIRdJ194ndJqAHwEfxC"
);
external_id!(
    /// A tenant (workspace, organization), as the identity provider names it.
    TenantId,
    "The identity provider's tenant id: 1 to 255 characters, not blank, no control characters.",
    "org_29w9IfBrPmcpi0IeBVaKtDJR"
);
external_id!(
    /// A caller's key for one logical consumption of quota (`POST /v1/usage`).
    IdempotencyKey,
    "Unique per logical consumption: 1 to 255 characters, not blank, no control characters.",
    "render-7f3a9c"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_provider_ids_are_accepted_as_they_are() {
        for id in [
            "u1",
            "auth0|64f1c2",
            "google-oauth2|1234567890",
            "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "user@example.com",
            "a:b%c",
            "Zoë",
            " padded ",
        ] {
            assert_eq!(UserId::parse(id).unwrap().as_str(), id);
            assert_eq!(TenantId::parse(id).unwrap().as_str(), id);
        }
        assert!(UserId::parse(&"x".repeat(MAX_ID_CHARS)).is_ok());
        assert!(UserId::parse(&"é".repeat(MAX_ID_CHARS)).is_ok());
    }

    #[test]
    fn blank_long_and_control_characters_are_refused() {
        assert_eq!(UserId::parse(""), Err(IdError::Blank));
        assert_eq!(UserId::parse(" \t "), Err(IdError::Blank));
        assert_eq!(
            UserId::parse(&"x".repeat(MAX_ID_CHARS + 1)),
            Err(IdError::TooLong)
        );
        assert_eq!(
            TenantId::parse(&"é".repeat(MAX_ID_CHARS + 1)),
            Err(IdError::TooLong)
        );
        for bad in [
            "a\0b",
            "\0",
            "a\nb",
            "a\rb",
            "tab\there",
            "\u{7f}",
            "\u{85}x",
            "\u{1b}[31m",
        ] {
            assert_eq!(
                UserId::parse(bad),
                Err(IdError::ControlCharacter),
                "{bad:?}"
            );
        }
    }
}
