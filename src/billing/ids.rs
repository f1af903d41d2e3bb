//! The identity provider's ids for users and tenants, parsed once where a caller hands them in
//! (a query, a path, a body, a token claim), so that nothing inside Tollgate ever holds an id
//! that the database cannot store or a log line cannot show: 1 to 255 bytes of UTF-8, not
//! blank, without control characters (NUL among them, which PostgreSQL refuses in text).

use std::fmt;

/// The longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// Why a caller's id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty or blank")]
    Blank,
    #[error("is longer than {MAX_ID_BYTES} bytes")]
    TooLong,
    #[error("contains a control character")]
    ControlCharacter,
}

/// Checks the rules every external id follows (see the module documentation).
pub fn check_external_id(id: &str) -> Result<(), IdError> {
    if id.trim().is_empty() {
        Err(IdError::Blank)
    } else if id.len() > MAX_ID_BYTES {
        Err(IdError::TooLong)
    } else if id.chars().any(char::is_control) {
        Err(IdError::ControlCharacter)
    } else {
        Ok(())
    }
}

macro_rules! external_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn parse(id: &str) -> Result<Self, IdError> {
                check_external_id(id).map(|()| $name(id.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

external_id!(
    /// A user, as the identity provider names them (a token's `sub`, a service's `user_id`).
    UserId
);
external_id!(
    /// A tenant (workspace, organization), as the identity provider names it.
    TenantId
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
        assert!(UserId::parse(&"x".repeat(MAX_ID_BYTES)).is_ok());
    }

    #[test]
    fn blank_long_and_control_characters_are_refused() {
        assert_eq!(UserId::parse(""), Err(IdError::Blank));
        assert_eq!(UserId::parse(" \t "), Err(IdError::Blank));
        assert_eq!(
            UserId::parse(&"x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong)
        );
        // Multi-byte characters count in bytes, as the database stores them.
        assert_eq!(TenantId::parse(&"é".repeat(128)), Err(IdError::TooLong));
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
