//! Who holds billing state: a user, a tenant, or a membership (one user in one tenant).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User { user_id: String },
    Tenant { tenant_id: String },
    Membership { tenant_id: String, user_id: String },
}

impl Subject {
    pub fn user(user_id: impl Into<String>) -> Subject {
        Subject::User {
            user_id: user_id.into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Subject::User { .. } => "user",
            Subject::Tenant { .. } => "tenant",
            Subject::Membership { .. } => "membership",
        }
    }

    pub fn user_id(&self) -> Option<&str> {
        match self {
            Subject::User { user_id } | Subject::Membership { user_id, .. } => Some(user_id),
            Subject::Tenant { .. } => None,
        }
    }

    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            Subject::Tenant { tenant_id } | Subject::Membership { tenant_id, .. } => {
                Some(tenant_id)
            }
            Subject::User { .. } => None,
        }
    }

    /// The stored key: `user:<id>`, `tenant:<id>`, `membership:<tenant>:<user>`. Ids are
    /// percent-encoded where they contain `:` or `%`, so keys never collide.
    pub fn key(&self) -> String {
        match self {
            Subject::User { user_id } => format!("user:{}", escape_id(user_id)),
            Subject::Tenant { tenant_id } => format!("tenant:{}", escape_id(tenant_id)),
            Subject::Membership { tenant_id, user_id } => {
                format!("membership:{}:{}", escape_id(tenant_id), escape_id(user_id))
            }
        }
    }

    /// The inverse of [`Subject::key`].
    pub fn parse_key(key: &str) -> Option<Subject> {
        let mut parts = key.split(':');
        let subject = match (parts.next()?, parts.next(), parts.next()) {
            ("user", Some(u), None) => Subject::User {
                user_id: unescape(u)?,
            },
            ("tenant", Some(t), None) => Subject::Tenant {
                tenant_id: unescape(t)?,
            },
            ("membership", Some(t), Some(u)) => Subject::Membership {
                tenant_id: unescape(t)?,
                user_id: unescape(u)?,
            },
            _ => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(subject)
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// An id as a key holds it: `%` and `:` percent-encoded, so that the parts of a key never run
/// together.
pub fn escape_id(id: &str) -> String {
    id.replace('%', "%25").replace(':', "%3A")
}

/// An id of a stored key; `None` unless it is one a caller could have named (see
/// [`super::ids`]), so that a key from elsewhere (Stripe metadata) cannot bring in a NUL.
fn unescape(s: &str) -> Option<String> {
    let id = s.replace("%3A", ":").replace("%25", "%");
    super::ids::check_external_id(&id).ok().map(|()| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_never_collide() {
        let subjects = [
            Subject::user("auth0|abc"),
            Subject::user("a:b"),
            Subject::Tenant {
                tenant_id: "a".into(),
            },
            Subject::Membership {
                tenant_id: "a".into(),
                user_id: "b".into(),
            },
            Subject::Membership {
                tenant_id: "a:b".into(),
                user_id: "c".into(),
            },
            Subject::Membership {
                tenant_id: "a".into(),
                user_id: "b:c".into(),
            },
            Subject::user("100%:x"),
        ];
        let keys: std::collections::HashSet<_> = subjects.iter().map(Subject::key).collect();
        assert_eq!(keys.len(), subjects.len());
        for s in &subjects {
            assert_eq!(Subject::parse_key(&s.key()).as_ref(), Some(s));
        }
        assert_eq!(Subject::parse_key("user:"), None);
        assert_eq!(Subject::parse_key("robot:x"), None);
        assert_eq!(Subject::parse_key("user:a:b"), None);
        assert_eq!(Subject::parse_key("user:a\0b"), None);
        assert_eq!(Subject::parse_key("tenant: "), None);
    }
}
