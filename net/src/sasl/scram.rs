//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka speaks them.
//!
//! Contract: the server keeps only a [`Credential`] per user and mechanism (salt, iteration
//! count, StoredKey, ServerKey), never the password nor the salted password. An exchange is
//! two steps: [`ServerFirst::start`] parses the client-first message and answers with the
//! server-first message (the client's nonce plus a random one, the salt, the iterations);
//! [`ServerFirst::finish`] parses the client-final message, checks the channel binding, the
//! nonce and the proof (constant time) and answers with the server signature. Channel binding
//! (`p=`) is refused, as Kafka does; extensions in the client-first message are ignored.
//! The client-final nonce must equal the server's exactly (RFC 5802, and Kafka 4.x): librdkafka
//! before 2.6.1 repeats the client's nonce there (librdkafka#4895) and is refused, as by Kafka 4.x.

use super::{secrets_equal, SaslError};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use sluice_core::limits::{MAX_SASL_NAME_BYTES, SCRAM_NONCE_BYTES};

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
        match self {
            Hash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Hi(password, salt, i) of RFC 5802: PBKDF2 with this HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha256 => pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec(),
            Hash::Sha512 => pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec(),
        }
    }

    /// Kafka's ScramMechanism code (AlterUserScramCredentials): 1 for SHA-256, 2 for SHA-512.
    pub fn kafka_code(self) -> i8 {
        match self {
            Hash::Sha256 => 1,
            Hash::Sha512 => 2,
        }
    }

    pub fn from_kafka_code(code: i8) -> Option<Hash> {
        match code {
            1 => Some(Hash::Sha256),
            2 => Some(Hash::Sha512),
            _ => None,
        }
    }

    pub fn mechanism_name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SCRAM-SHA-256",
            Hash::Sha512 => "SCRAM-SHA-512",
        }
    }
}

/// What the server stores for one user and mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl Credential {
    /// The credential of a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(hash: Hash, salt: Vec<u8>, salted_password: &[u8], iterations: u32) -> Credential {
        let client_key = hash.hmac(salted_password, b"Client Key");
        Credential {
            salt,
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(salted_password, b"Server Key"),
        }
    }

    /// The credential of a password (for `sluice user` and tests).
    pub fn from_password(hash: Hash, password: &[u8], salt: Vec<u8>, iterations: u32) -> Credential {
        let salted = hash.salted_password(password, &salt, iterations);
        Credential::from_salted(hash, salt, &salted, iterations)
    }
}

/// A parsed client-first message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header (`n,,` or `n,a=user,`), which the client-final `c=` must repeat.
    pub gs2_header: String,
    pub user: String,
    pub nonce: String,
    /// `n=...,r=...[,ext]`, part of the AuthMessage.
    pub bare: String,
}

/// Decodes a saslname (`=2C` is `,`, `=3D` is `=`; any other `=` is malformed).
fn decode_name(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3).ok_or(SaslError::Malformed("SCRAM user name"))?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(SaslError::Malformed("SCRAM user name")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn printable_nonce(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_SASL_NAME_BYTES && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

impl ClientFirst {
    pub fn parse(bytes: &[u8]) -> Result<ClientFirst, SaslError> {
        let bad = SaslError::Malformed("SCRAM client-first");
        let text = std::str::from_utf8(bytes).map_err(|_| bad.clone())?;
        let (cbind, rest) = text.split_once(',').ok_or(bad.clone())?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(SaslError::ChannelBinding),
            _ => return Err(bad),
        }
        let (authzid, bare) = rest.split_once(',').ok_or(bad.clone())?;
        let mut attrs = bare.split(',');
        let user = attrs.next().and_then(|a| a.strip_prefix("n=")).ok_or(bad.clone())?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(bad.clone())?;
        if user.is_empty() || user.len() > MAX_SASL_NAME_BYTES || !printable_nonce(nonce) {
            return Err(bad);
        }
        let user = decode_name(user)?;
        if !authzid.is_empty() {
            let a = authzid.strip_prefix("a=").ok_or(bad)?;
            if decode_name(a)? != user {
                return Err(SaslError::AuthzidMismatch);
            }
        }
        let gs2_header = format!("{cbind},{authzid},");
        Ok(ClientFirst { gs2_header, user, nonce: nonce.to_string(), bare: bare.to_string() })
    }
}

/// The server's state between its first message and the client's final one.
#[derive(Debug)]
pub struct ServerFirst {
    hash: Hash,
    credential: Credential,
    user: String,
    gs2_header: String,
    nonce: String,
    /// `client-first-bare,server-first`: the start of the AuthMessage.
    auth_start: String,
}

/// A random server nonce, in letters and digits only, as Kafka's.
fn server_nonce() -> Result<String, SaslError> {
    let mut raw = [0u8; SCRAM_NONCE_BYTES];
    getrandom::getrandom(&mut raw).map_err(|_| SaslError::Malformed("random source unavailable"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

impl ServerFirst {
    /// Answers a client-first message for a user whose credential is `credential` (`None`:
    /// unknown user, refused).
    pub fn start(
        hash: Hash,
        first: ClientFirst,
        credential: Option<Credential>,
    ) -> Result<(ServerFirst, Vec<u8>), SaslError> {
        let credential = credential.ok_or(SaslError::UnknownUser)?;
        let nonce = format!("{}{}", first.nonce, server_nonce()?);
        let message = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
        let auth_start = format!("{},{message}", first.bare);
        let state = ServerFirst { hash, credential, user: first.user, gs2_header: first.gs2_header, nonce, auth_start };
        Ok((state, message.into_bytes()))
    }

    /// Checks the client-final message; the user name and the server-final message.
    pub fn finish(self, bytes: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
        let bad = || SaslError::Malformed("SCRAM client-final");
        let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(bad)?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or_else(bad)?;
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(bad)?;
        let cbind = B64.decode(cbind).map_err(|_| bad())?;
        if cbind != self.gs2_header.as_bytes() {
            return Err(SaslError::ChannelBinding);
        }
        if !secrets_equal(nonce.as_bytes(), self.nonce.as_bytes()) {
            return Err(SaslError::NonceMismatch);
        }
        let proof = B64.decode(proof).map_err(|_| bad())?;
        let auth_message = format!("{},{without_proof}", self.auth_start);
        let signature = self.hash.hmac(&self.credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(SaslError::BadCredentials);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !secrets_equal(&self.hash.digest(&client_key), &self.credential.stored_key) {
            return Err(SaslError::BadCredentials);
        }
        let server_signature = self.hash.hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok((self.user, format!("v={}", B64.encode(server_signature)).into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side of an exchange, as RFC 5802 section 3 computes it.
    fn client_final(hash: Hash, password: &str, first_bare: &str, server_first: &str) -> (String, Vec<u8>) {
        let mut parts = server_first.split(',');
        let nonce = parts.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64.decode(parts.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = parts.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
        let salted = hash.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        let stored = hash.digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = hash.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = hash.hmac(&salted, b"Server Key");
        let expected_final = format!("v={}", B64.encode(hash.hmac(&server_key, auth.as_bytes()))).into_bytes();
        (format!("{without_proof},p={}", B64.encode(proof)), expected_final)
    }

    #[test]
    fn rfc7677_test_vector_credential() {
        // RFC 7677 section 3: user "user", password "pencil", 4096 iterations.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = Credential::from_password(Hash::Sha256, b"pencil", salt, 4096);
        let first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let auth = format!(
            "{first_bare},r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
             c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        );
        let v = B64.encode(Hash::Sha256.hmac(&c.server_key, auth.as_bytes()));
        assert_eq!(v, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn exchanges_succeed_with_the_password_and_fail_without() {
        for hash in [Hash::Sha256, Hash::Sha512] {
            let cred = Credential::from_password(hash, b"pw", b"saltsaltsaltsalt".to_vec(), 4096);
            for (password, ok) in [("pw", true), ("PW", false)] {
                let first = ClientFirst::parse(b"n,,n=alice,r=abcdef").unwrap();
                let (state, server_first) = ServerFirst::start(hash, first, Some(cred.clone())).unwrap();
                let server_first = String::from_utf8(server_first).unwrap();
                assert!(server_first.starts_with("r=abcdef"));
                let (fin, expected) = client_final(hash, password, "n=alice,r=abcdef", &server_first);
                match state.finish(fin.as_bytes()) {
                    Ok((user, server_final)) => {
                        assert!(ok);
                        assert_eq!(user, "alice");
                        assert_eq!(server_final, expected);
                    }
                    Err(e) => {
                        assert!(!ok);
                        assert_eq!(e, SaslError::BadCredentials);
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"n",
            b"n,,",
            b"x,,n=a,r=b",
            b"n,,r=b,n=a",
            b"n,,n=,r=b",
            b"n,,n=a,r=",
            b"n,,n=a=ZZ,r=b",
            b"n,,n=a,r=b c",
            b"\xff,,n=a,r=b",
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ClientFirst::parse(b"p=tls-unique,,n=a,r=b"), Err(SaslError::ChannelBinding));
        assert_eq!(ClientFirst::parse(b"n,a=b,n=a,r=b"), Err(SaslError::AuthzidMismatch));
        let f = ClientFirst::parse(b"n,a=a=2Cb,n=a=2Cb,r=xyz,tokenauth=true").unwrap();
        assert_eq!(f.user, "a,b");
        let cred = Credential::from_password(Hash::Sha256, b"pw", b"0123456789abcdef".to_vec(), 4096);
        for bad in [&b""[..], b"c=biws", b"c=biws,r=x,p=AAAA", b"c=!!,r=x,p=AAAA", b"r=x,c=biws,p=AAAA"] {
            let (state, _) =
                ServerFirst::start(Hash::Sha256, ClientFirst::parse(b"n,,n=a,r=x").unwrap(), Some(cred.clone()))
                    .unwrap();
            assert!(state.finish(bad).is_err(), "{bad:?}");
        }
    }
}
