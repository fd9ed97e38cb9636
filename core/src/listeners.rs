//! Listeners and their security settings, as Kafka names them: `listeners`,
//! `advertised.listeners`, `listener.security.protocol.map`, the `ssl.*` files and the SASL
//! mechanisms and PLAIN users (Kafka's JAAS `user_NAME="password"` entries).
//!
//! Contract: [`listener_specs`] turns the configured strings into a validated list of
//! listeners (names unique, each with a protocol from the map, an address, and the host and
//! port advertised to clients that come in on it); with `listeners` empty it is the one
//! PLAINTEXT listener on `listen` (advertised as `advertised_listen`), as before. A TLS
//! listener needs `tls.cert_file` and `tls.key_file`; a SASL listener needs a mechanism.
//! Every error names the key, the value and what was expected.

use crate::config::ConfigError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// How a listener protects and authenticates its connections (Kafka's `SecurityProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One listener, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    /// Host and port given to clients in Metadata; `None`: the bound address.
    pub advertised: Option<(String, u16)>,
}

/// Whether and how TLS clients must present a certificate (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Requested,
    Required,
}

/// The `[tls]` table: files in PEM (Kafka's `ssl.keystore.*`, `ssl.truststore.*`,
/// `ssl.client.auth`). The files are re-read when their modification time changes.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates client certificates are checked against (needed for client_auth).
    pub ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// Kafka's `ssl.principal.mapping.rules`: how a client certificate's subject name becomes
    /// the principal on an SSL listener (`DEFAULT`, `RULE:pattern/replacement/[LU]`, comma
    /// separated; unset is `DEFAULT`). Checked when the broker starts.
    pub principal_mapping_rules: Option<String>,
}

/// The `[sasl]` table (Kafka's `sasl.enabled.mechanisms` and the JAAS PLAIN users).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// Mechanisms offered on SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    pub enabled_mechanisms: Vec<String>,
    /// PLAIN users and their passwords (Kafka's `user_NAME="password"` in the JAAS file). The
    /// file holds them in clear text, as Kafka's JAAS file does: protect it.
    pub plain_users: BTreeMap<String, String>,
}

impl Default for SaslConfig {
    fn default() -> Self {
        SaslConfig {
            enabled_mechanisms: vec!["PLAIN".into(), "SCRAM-SHA-256".into(), "SCRAM-SHA-512".into()],
            plain_users: BTreeMap::new(),
        }
    }
}

/// The mechanisms sluice implements.
pub const KNOWN_MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The inputs of [`listener_specs`], borrowed from the broker config.
pub struct ListenerKeys<'a> {
    pub listen: &'a str,
    pub advertised_listen: Option<(String, u16)>,
    pub listeners: &'a str,
    pub advertised_listeners: &'a str,
    pub listener_security_protocol_map: &'a str,
    pub tls: &'a TlsConfig,
    pub sasl: &'a SaslConfig,
}

fn invalid(key: &'static str, value: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, value: value.to_string(), expected: expected.into() }
}

/// Splits `NAME://host:port` (host may be `[v6]`).
fn split_url<'s>(key: &'static str, item: &'s str) -> Result<(&'s str, &'s str, u16), ConfigError> {
    let bad = || invalid(key, item, "NAME://host:port, such as SASL_SSL://127.0.0.1:9093");
    let (name, rest) = item.split_once("://").ok_or_else(bad)?;
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().map_err(|_| bad())?;
    if name.is_empty() || host.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(bad());
    }
    Ok((name, host, port))
}

fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// The protocol map: Kafka's default (each protocol's name maps to itself) plus the entries.
fn protocol_map(map: &str) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let mut out: BTreeMap<String, SecurityProtocol> = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
        .iter()
        .filter_map(|n| SecurityProtocol::parse(n).map(|p| (n.to_string(), p)))
        .collect();
    for item in items(map) {
        let bad = || {
            invalid(
                "listener_security_protocol_map",
                item,
                "NAME:PROTOCOL with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
            )
        };
        let (name, proto) = item.split_once(':').ok_or_else(bad)?;
        out.insert(name.trim().to_string(), SecurityProtocol::parse(proto.trim()).ok_or_else(bad)?);
    }
    Ok(out)
}

/// The listeners, validated (see the module contract).
pub fn listener_specs(k: &ListenerKeys<'_>) -> Result<Vec<ListenerSpec>, ConfigError> {
    if k.listeners.trim().is_empty() {
        let addr = k
            .listen
            .parse()
            .map_err(|_| invalid("listen", k.listen, "an IP:port socket address such as 127.0.0.1:9092"))?;
        let one = ListenerSpec {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            addr,
            advertised: k.advertised_listen.clone(),
        };
        return Ok(vec![one]);
    }
    let map = protocol_map(k.listener_security_protocol_map)?;
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for item in items(k.listeners) {
        let (name, host, port) = split_url("listeners", item)?;
        let addr: SocketAddr = format!("{}:{port}", if host.contains(':') { format!("[{host}]") } else { host.into() })
            .parse()
            .map_err(|_| invalid("listeners", item, "an IP address (not a host name) to bind, such as 0.0.0.0"))?;
        let protocol = *map.get(name).ok_or_else(|| {
            invalid("listener_security_protocol_map", name, "an entry NAME:PROTOCOL for every listener name")
        })?;
        if specs.iter().any(|s| s.name == name) {
            return Err(invalid("listeners", name, "each listener name once"));
        }
        specs.push(ListenerSpec { name: name.to_string(), protocol, addr, advertised: None });
    }
    if specs.is_empty() || specs.len() > crate::limits::MAX_LISTENERS {
        return Err(invalid("listeners", k.listeners, format!("1 to {} listeners", crate::limits::MAX_LISTENERS)));
    }
    for item in items(k.advertised_listeners) {
        let (name, host, port) = split_url("advertised_listeners", item)?;
        let spec = specs
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| invalid("advertised_listeners", item, "a name listed in `listeners`"))?;
        spec.advertised = Some((host.to_string(), port).clone()).filter(|_| port > 0);
    }
    check_security(k, &specs)?;
    Ok(specs)
}

/// A TLS listener needs a certificate and key; a SASL listener needs known mechanisms.
fn check_security(k: &ListenerKeys<'_>, specs: &[ListenerSpec]) -> Result<(), ConfigError> {
    if specs.iter().any(|s| s.protocol.tls()) && (k.tls.cert_file.is_none() || k.tls.key_file.is_none()) {
        return Err(invalid("tls", "cert_file/key_file", "both set for SSL and SASL_SSL listeners"));
    }
    if k.tls.client_auth != ClientAuth::None && k.tls.ca_file.is_none() {
        return Err(invalid("tls.ca_file", "", "a CA file when tls.client_auth is requested or required"));
    }
    for m in &k.sasl.enabled_mechanisms {
        if !KNOWN_MECHANISMS.contains(&m.as_str()) {
            return Err(invalid("sasl.enabled_mechanisms", m, format!("some of {KNOWN_MECHANISMS:?}")));
        }
    }
    if specs.iter().any(|s| s.protocol.sasl()) && k.sasl.enabled_mechanisms.is_empty() {
        return Err(invalid("sasl.enabled_mechanisms", "[]", "at least one mechanism for SASL listeners"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(
        listeners: &'a str,
        adv: &'a str,
        map: &'a str,
        tls: &'a TlsConfig,
        sasl: &'a SaslConfig,
    ) -> ListenerKeys<'a> {
        ListenerKeys {
            listen: "127.0.0.1:9092",
            advertised_listen: None,
            listeners,
            advertised_listeners: adv,
            listener_security_protocol_map: map,
            tls,
            sasl,
        }
    }

    #[test]
    fn empty_listeners_mean_one_plaintext_listener_on_listen() {
        let (tls, sasl) = (TlsConfig::default(), SaslConfig::default());
        let s = listener_specs(&keys("", "", "", &tls, &sasl)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(s[0].addr, "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn named_listeners_take_their_protocol_from_the_map() {
        let tls = TlsConfig { cert_file: Some("c".into()), key_file: Some("k".into()), ..Default::default() };
        let sasl = SaslConfig::default();
        let s = listener_specs(&keys(
            "PLAINTEXT://127.0.0.1:9092, CLIENTS://0.0.0.0:9093,SSL://[::1]:0",
            "CLIENTS://broker1.example.com:19093",
            "CLIENTS:SASL_SSL",
            &tls,
            &sasl,
        ))
        .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s[1].advertised, Some(("broker1.example.com".into(), 19093)));
        assert_eq!(s[2].protocol, SecurityProtocol::Ssl);
        assert_eq!(s[2].addr, "[::1]:0".parse().unwrap());
    }

    #[test]
    fn bad_listeners_are_named() {
        let (tls, sasl) = (TlsConfig::default(), SaslConfig::default());
        for (l, a, m, key) in [
            ("X://127.0.0.1:1", "", "", "listener_security_protocol_map"),
            ("PLAINTEXT://127.0.0.1", "", "", "listeners"),
            ("PLAINTEXT://host.name:1", "", "", "listeners"),
            ("PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2", "", "", "listeners"),
            ("PLAINTEXT://127.0.0.1:1", "OTHER://h:1", "", "advertised_listeners"),
            ("X://127.0.0.1:1", "", "X:TLS", "listener_security_protocol_map"),
            ("SSL://127.0.0.1:1", "", "", "tls"),
        ] {
            let e = listener_specs(&keys(l, a, m, &tls, &sasl)).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{l} {a} {m}: {e}");
        }
        let none = SaslConfig { enabled_mechanisms: vec![], ..Default::default() };
        assert!(listener_specs(&keys("SASL_PLAINTEXT://127.0.0.1:1", "", "", &tls, &none)).is_err());
        let bad = SaslConfig { enabled_mechanisms: vec!["GSSAPI".into()], ..Default::default() };
        assert!(listener_specs(&keys("PLAINTEXT://127.0.0.1:1", "", "", &tls, &bad)).is_err());
    }
}
