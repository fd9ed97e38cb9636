//! Who a connection is: its listener's security settings and its SASL session.
//!
//! Contract: a [`Listener`] is built once per shard per listener (its TLS reloader is that
//! shard's own); a [`Session`] belongs to one connection and is changed only by the
//! SaslHandshake and SaslAuthenticate handlers, synchronously in their first phase, so the
//! connection's next frame sees the new state. On a PLAINTEXT or SSL listener a connection is
//! authenticated from the start (principal ANONYMOUS). On a SASL listener it is not until a
//! SaslAuthenticate succeeds; until then only ApiVersions, SaslHandshake and SaslAuthenticate
//! are served (others close the connection, as Kafka does), and a failed authentication is
//! answered and then closes the connection. A new SaslHandshake after authentication starts a
//! re-authentication (KIP-368), which must keep the same user. With `connections_max_reauth_ms`
//! set, a session expires that long after each authentication: past it, any request but
//! SaslHandshake/SaslAuthenticate closes the connection (as Kafka).
//! State machine: Start --Handshake(m)--> Chosen(m) --Authenticate(PLAIN ok)--> Authenticated
//! Chosen(SCRAM) --Authenticate(client-first)--> ScramFirstSent --Authenticate(final ok)-->
//! Authenticated; any failure --> Failed (closing). Authenticated --Handshake--> Chosen.

pub mod mapping;
pub mod store;
pub mod user_cmd;
pub mod x500;

use crate::sasl::scram::{ClientFirst, ServerFirst};
use crate::sasl::{plain, Mechanism, SaslError};
use sluice_core::listeners::SecurityProtocol;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The SASL settings shared by every SASL listener (built once, from the config).
pub struct SaslSettings {
    pub mechanisms: Vec<Mechanism>,
    pub plain_users: BTreeMap<String, String>,
    pub scram: Arc<store::ScramStore>,
}

/// One listener as a shard serves it.
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub tls: Option<crate::tls::TlsReloader>,
    pub sasl: Arc<SaslSettings>,
    /// How an SSL listener's client certificate subject becomes the principal's name.
    pub principal_mapper: Arc<mapping::PrincipalMapper>,
    /// Host and port advertised to clients that came in on this listener.
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// Where a connection's SASL exchange is.
#[derive(Debug, Default)]
pub enum SaslState {
    /// Nothing yet (or a non-SASL listener).
    #[default]
    Start,
    /// SaslHandshake chose a mechanism.
    Chosen(Mechanism),
    /// The server-first SCRAM message was sent.
    ScramFirstSent(Box<ServerFirst>),
    /// Authenticated (the principal is in the session).
    Done,
    /// An exchange failed: the connection closes once the answer is written.
    Failed,
}

/// One connection's authentication.
#[derive(Debug, Default)]
pub struct Session {
    /// The authenticated user (`None` before authentication on a SASL listener).
    pub principal: Option<String>,
    pub state: SaslState,
    /// When the SASL session ends unless the client re-authenticates (KIP-368).
    pub expires: Option<std::time::Instant>,
}

/// Why a SASL request was refused: Kafka's error, its message, and whether to close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslRefusal {
    /// UNSUPPORTED_SASL_MECHANISM (33).
    Unsupported,
    /// ILLEGAL_SASL_STATE (34): a request out of order.
    IllegalState(&'static str),
    /// SASL_AUTHENTICATION_FAILED (58).
    Failed(SaslError),
}

impl Session {
    /// A session on a listener of `protocol`: authenticated at once unless it is SASL.
    pub fn new(protocol: SecurityProtocol) -> Session {
        let principal = (!protocol.sasl()).then(|| "ANONYMOUS".to_string());
        Session { principal, state: SaslState::Start, expires: None }
    }

    pub fn authenticated(&self) -> bool {
        self.principal.is_some() && !matches!(self.state, SaslState::Failed)
    }

    /// Whether the session's lifetime is over (the client did not re-authenticate in time).
    pub fn expired(&self, now: std::time::Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Whether an exchange just completed (the last step succeeded and ended it).
    pub fn completed(&self) -> bool {
        matches!(self.state, SaslState::Done) && self.principal.is_some()
    }

    /// Whether the connection must close after its pending answers.
    pub fn closing(&self) -> bool {
        matches!(self.state, SaslState::Failed)
    }

    /// Ends the exchange with `why` (ILLEGAL_SASL_STATE): the connection closes.
    pub fn refuse(&mut self, why: &'static str) -> SaslRefusal {
        self.state = SaslState::Failed;
        SaslRefusal::IllegalState(why)
    }

    /// SaslHandshake: chooses `mechanism` if the listener offers it.
    pub fn handshake(
        &mut self,
        sasl: &SaslSettings,
        protocol: SecurityProtocol,
        name: &str,
    ) -> Result<(), SaslRefusal> {
        if !protocol.sasl() {
            return Err(SaslRefusal::IllegalState("SASL is not enabled on this listener"));
        }
        if !matches!(self.state, SaslState::Start | SaslState::Done) {
            self.state = SaslState::Failed;
            return Err(SaslRefusal::IllegalState("unexpected SaslHandshake"));
        }
        match Mechanism::parse(name).filter(|m| sasl.mechanisms.contains(m)) {
            Some(m) => {
                self.state = SaslState::Chosen(m);
                Ok(())
            }
            None => {
                self.state = SaslState::Failed;
                Err(SaslRefusal::Unsupported)
            }
        }
    }

    /// SaslAuthenticate: one step of the chosen mechanism; the bytes to answer with.
    pub fn authenticate(&mut self, sasl: &SaslSettings, bytes: &[u8]) -> Result<Vec<u8>, SaslRefusal> {
        let step = match std::mem::take(&mut self.state) {
            SaslState::Chosen(Mechanism::Plain) => {
                plain::authenticate(bytes, &sasl.plain_users).map(|u| (u, Vec::new()))
            }
            SaslState::Chosen(m) => return self.scram_first(sasl, m, bytes),
            SaslState::ScramFirstSent(state) => state.finish(bytes),
            SaslState::Start | SaslState::Done | SaslState::Failed => {
                self.state = SaslState::Failed;
                return Err(SaslRefusal::IllegalState("SaslAuthenticate before SaslHandshake"));
            }
        };
        self.complete(step)
    }

    fn scram_first(&mut self, sasl: &SaslSettings, m: Mechanism, bytes: &[u8]) -> Result<Vec<u8>, SaslRefusal> {
        let Some(hash) = m.scram() else {
            self.state = SaslState::Failed;
            return Err(SaslRefusal::IllegalState("not a SCRAM mechanism"));
        };
        let started = ClientFirst::parse(bytes).and_then(|first| {
            let credential = sasl.scram.get(&first.user, hash);
            ServerFirst::start(hash, first, credential)
        });
        match started {
            Ok((state, answer)) => {
                self.state = SaslState::ScramFirstSent(Box::new(state));
                Ok(answer)
            }
            Err(e) => {
                self.state = SaslState::Failed;
                Err(SaslRefusal::Failed(e))
            }
        }
    }

    /// Ends an exchange: the user is the principal (the same one on re-authentication).
    fn complete(&mut self, step: Result<(String, Vec<u8>), SaslError>) -> Result<Vec<u8>, SaslRefusal> {
        match step {
            Ok((user, answer)) if self.principal.as_ref().is_none_or(|p| *p == user) => {
                self.principal = Some(user);
                self.state = SaslState::Done;
                Ok(answer)
            }
            Ok(_) => {
                self.state = SaslState::Failed;
                Err(SaslRefusal::IllegalState("re-authentication may not change the user"))
            }
            Err(e) => {
                self.state = SaslState::Failed;
                Err(SaslRefusal::Failed(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::scram::{Credential, Hash};

    fn settings(dir: &std::path::Path) -> SaslSettings {
        let scram = Arc::new(store::ScramStore::open(dir).unwrap());
        let c = Credential::from_password(Hash::Sha512, b"pw", vec![1; 16], 4096);
        scram.apply(vec![store::Change::Upsert { user: "bob".into(), hash: Hash::Sha512, credential: c }]).unwrap();
        SaslSettings {
            mechanisms: vec![Mechanism::Plain, Mechanism::ScramSha512],
            plain_users: [("alice".to_string(), "pw".to_string())].into(),
            scram,
        }
    }

    #[test]
    fn the_state_machine_orders_handshake_and_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let p = SecurityProtocol::SaslPlaintext;
        assert!(Session::new(SecurityProtocol::Ssl).authenticated());
        let mut a = Session::new(p);
        assert!(!a.authenticated());
        assert!(matches!(a.authenticate(&s, b"\0alice\0pw"), Err(SaslRefusal::IllegalState(_))));
        assert!(a.closing());
        let mut a = Session::new(p);
        assert_eq!(a.handshake(&s, p, "SCRAM-SHA-256"), Err(SaslRefusal::Unsupported));
        let mut a = Session::new(p);
        a.handshake(&s, p, "PLAIN").unwrap();
        a.authenticate(&s, b"\0alice\0pw").unwrap();
        assert!(a.authenticated() && a.principal.as_deref() == Some("alice"));
        // Re-authentication keeps the user.
        a.handshake(&s, p, "PLAIN").unwrap();
        assert!(matches!(a.authenticate(&s, b"\0bob\0x"), Err(SaslRefusal::Failed(_))));
        assert!(a.closing() && !a.authenticated());
        let mut b = Session::new(p);
        b.handshake(&s, p, "SCRAM-SHA-512").unwrap();
        assert!(matches!(b.authenticate(&s, b"n,,n=nobody,r=abc"), Err(SaslRefusal::Failed(SaslError::UnknownUser))));
        let mut b = Session::new(p);
        b.handshake(&s, p, "SCRAM-SHA-512").unwrap();
        let first = b.authenticate(&s, b"n,,n=bob,r=abc").unwrap();
        assert!(first.starts_with(b"r=abc"));
        assert!(matches!(b.authenticate(&s, b"c=biws,r=abc,p=AAAA"), Err(SaslRefusal::Failed(_))));
        assert!(b.closing());
    }
}
