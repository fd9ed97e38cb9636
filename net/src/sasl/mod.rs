//! SASL mechanisms the broker offers (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): message parsing
//! and the server side of each exchange, free of I/O.
//!
//! Contract: every function here takes untrusted bytes and returns a typed error for anything
//! malformed, never panics, and bounds names by `MAX_SASL_NAME_BYTES`. Secrets are compared in
//! constant time ([`subtle`]). The state of one connection's exchange lives in
//! `auth::Session`; these modules only compute.

pub mod plain;
pub mod scram;

/// A SASL mechanism sluice implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        Some(match name {
            "PLAIN" => Mechanism::Plain,
            "SCRAM-SHA-256" => Mechanism::ScramSha256,
            "SCRAM-SHA-512" => Mechanism::ScramSha512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The SCRAM hash of a SCRAM mechanism.
    pub fn scram(self) -> Option<scram::Hash> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some(scram::Hash::Sha256),
            Mechanism::ScramSha512 => Some(scram::Hash::Sha512),
        }
    }
}

/// Why a SASL message was refused. The client is told only "authentication failed" (with
/// Kafka's messages); the variant is logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("name or password longer than the limit")]
    TooLong,
    #[error("unknown user")]
    UnknownUser,
    #[error("wrong password or proof")]
    BadCredentials,
    #[error("the authorization id differs from the user name")]
    AuthzidMismatch,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the nonce does not match the server's")]
    NonceMismatch,
}

/// Constant-time equality of two secrets (lengths are not secret).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
