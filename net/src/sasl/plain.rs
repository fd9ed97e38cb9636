//! SASL PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the users of the
//! config's `[sasl.plain_users]` (Kafka's JAAS `user_NAME="password"`).
//!
//! Contract: [`authenticate`] returns the user name for a well-formed message whose password
//! matches, compared in constant time; an unknown user costs the same comparison as a known
//! one. An authorization id, when given, must equal the user name (as Kafka requires).

use super::{secrets_equal, SaslError};
use sluice_core::limits::MAX_SASL_NAME_BYTES;
use std::collections::BTreeMap;

/// The parts of a PLAIN message.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage<'a> {
    pub authzid: &'a str,
    pub user: &'a str,
    pub password: &'a str,
}

/// Parses a PLAIN message.
pub fn parse(bytes: &[u8]) -> Result<PlainMessage<'_>, SaslError> {
    let text = std::str::from_utf8(bytes).map_err(|_| SaslError::Malformed("PLAIN"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed("PLAIN"));
    };
    if user.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed("PLAIN"));
    }
    if user.len() > MAX_SASL_NAME_BYTES || password.len() > MAX_SASL_NAME_BYTES || authzid.len() > MAX_SASL_NAME_BYTES {
        return Err(SaslError::TooLong);
    }
    Ok(PlainMessage { authzid, user, password })
}

/// Checks a PLAIN message against `users`; the authenticated user name.
pub fn authenticate(bytes: &[u8], users: &BTreeMap<String, String>) -> Result<String, SaslError> {
    let m = parse(bytes)?;
    if !m.authzid.is_empty() && m.authzid != m.user {
        return Err(SaslError::AuthzidMismatch);
    }
    // An unknown user is compared against a stand-in, so both cases take the same time.
    let (expected, known) = match users.get(m.user) {
        Some(p) => (p.as_bytes(), true),
        None => (m.password.as_bytes(), false),
    };
    let matches = secrets_equal(expected, m.password.as_bytes());
    match (known, matches) {
        (true, true) => Ok(m.user.to_string()),
        (false, _) => Err(SaslError::UnknownUser),
        (true, false) => Err(SaslError::BadCredentials),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_user_password_and_authzid() {
        let users: BTreeMap<String, String> = [("alice".to_string(), "s3cret".to_string())].into();
        assert_eq!(authenticate(b"\0alice\0s3cret", &users), Ok("alice".into()));
        assert_eq!(authenticate(b"alice\0alice\0s3cret", &users), Ok("alice".into()));
        assert_eq!(authenticate(b"\0alice\0wrong", &users), Err(SaslError::BadCredentials));
        assert_eq!(authenticate(b"\0bob\0s3cret", &users), Err(SaslError::UnknownUser));
        assert_eq!(authenticate(b"bob\0alice\0s3cret", &users), Err(SaslError::AuthzidMismatch));
        for bad in [&b""[..], b"\0", b"\0\0", b"a\0b", b"\0a\0b\0c", b"\0\xff\0x", b"\0alice\0"] {
            assert_eq!(authenticate(bad, &users), Err(SaslError::Malformed("PLAIN")), "{bad:?}");
        }
    }
}
