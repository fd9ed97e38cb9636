//! The principal name of a TLS client certificate: its subject distinguished name in the RFC
//! 2253 form Java's `X500Principal.getName()` gives, which is what Kafka's
//! `DefaultKafkaPrincipalBuilder` uses (with the default `ssl.principal.mapping.rules`) on an
//! SSL listener: `User:CN=client,OU=test`.
//!
//! Contract: a pure function of the certificate's DER bytes; the certificate is decoded by the
//! `x509-cert` crate (RustCrypto, strict DER), and anything it rejects (malformed, truncated,
//! trailing bytes, an OID arc above `u32` or an OID longer than 39 bytes, a duplicate value in a
//! relative name) gives `None` (the caller keeps `ANONYMOUS`), never a panic. The formatting is
//! sluice's, as Java: relative names last-encoded first, separated by `,`; the values of a
//! multi-valued one joined by `+` in DER `SET OF` order (their encoded order in a DER
//! certificate); the keywords CN, C, L, ST, O, OU, STREET, DC and UID, any other attribute as
//! its dotted OID; a string value (UTF8String, PrintableString, TeletexString, IA5String,
//! BMPString: the contents of each read as UTF-8, as Java does, invalid bytes as U+FFFD) with
//! `,=+<>#;"\` escaped by `\`, NUL as `\00`, and every leading and trailing space or carriage
//! return escaped by `\`; any other value, and every value of an OID-named attribute, as `#` and
//! the lowercase hex of its DER encoding. A value of a universal type the DER decoder does not
//! know (GeneralString, UniversalString, GraphicString) makes the certificate unreadable here
//! (`None`), where Java would print it.

use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::{Decode, Encode, Tag, Tagged};
use x509_cert::Certificate;

/// The attribute types Java names by keyword in RFC 2253 form.
const KEYWORDS: [(ObjectIdentifier, &str); 9] = [
    (ObjectIdentifier::new_unwrap("2.5.4.3"), "CN"),
    (ObjectIdentifier::new_unwrap("2.5.4.6"), "C"),
    (ObjectIdentifier::new_unwrap("2.5.4.7"), "L"),
    (ObjectIdentifier::new_unwrap("2.5.4.8"), "ST"),
    (ObjectIdentifier::new_unwrap("2.5.4.10"), "O"),
    (ObjectIdentifier::new_unwrap("2.5.4.11"), "OU"),
    (ObjectIdentifier::new_unwrap("2.5.4.9"), "STREET"),
    (ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25"), "DC"),
    (ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.1"), "UID"),
];

/// The subject DN of a DER certificate in RFC 2253 form, or `None` when it does not parse.
pub fn subject_name(cert: &[u8]) -> Option<String> {
    let cert = Certificate::from_der(cert).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.tbs_certificate.subject.0.iter().rev() {
        let avas = rdn.0.iter().map(attribute).collect::<Option<Vec<_>>>()?;
        rdns.push(avas.join("+"));
    }
    Some(rdns.join(","))
}

/// `KEYWORD=value` of one attribute.
fn attribute(ava: &AttributeTypeAndValue) -> Option<String> {
    let keyword = KEYWORDS.iter().find(|(oid, _)| *oid == ava.oid).map(|(_, k)| *k);
    let text = keyword.and_then(|_| string_value(ava.value.tag(), ava.value.value()));
    let name = keyword.map_or_else(|| ava.oid.to_string(), str::to_string);
    Some(match text {
        Some(t) => format!("{name}={}", escape(&t)),
        None => {
            let der = ava.value.to_der().ok()?;
            format!("{name}=#{}", der.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    })
}

/// The text of a string-typed value: Java reads the contents of each of these types as UTF-8
/// (invalid sequences become U+FFFD), a BMPString's and a TeletexString's too.
fn string_value(tag: Tag, content: &[u8]) -> Option<String> {
    match tag {
        Tag::Utf8String | Tag::PrintableString | Tag::TeletexString | Tag::Ia5String | Tag::BmpString => {
            Some(String::from_utf8_lossy(content).into_owned())
        }
        _ => None,
    }
}

/// RFC 2253 escaping as Java's `AVA.toRFC2253String` does it: `\` before each of `,=+<>#;"\`,
/// `\00` for NUL, and `\` before every leading and trailing space or carriage return.
fn escape(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let blank = |c: &&char| **c == ' ' || **c == '\r';
    let lead = chars.iter().take_while(blank).count();
    let trail = chars.len() - chars.iter().rev().take_while(blank).count();
    let mut out = String::with_capacity(value.len());
    for (i, c) in chars.into_iter().enumerate() {
        if ",=+<>#;\"\\".contains(c) || i < lead || i >= trail {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;

    /// DER of one element.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match u8::try_from(content.len()) {
            Ok(n) if n <= 0x7f => out.push(n),
            _ => {
                out.push(0x82);
                out.extend_from_slice(&u16::try_from(content.len()).expect("test element").to_be_bytes());
            }
        }
        out.extend_from_slice(content);
        out
    }

    fn ava(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat())
    }

    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SET, &ava(oid, tag, value))
    }

    /// A well-formed v3 certificate whose subject holds `rdns` (issuer empty, placeholder key
    /// and signature).
    fn cert(rdns: &[Vec<u8>]) -> Vec<u8> {
        let algorithm = tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]));
        let validity = tlv(SEQUENCE, &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")].concat());
        let key = tlv(SEQUENCE, &[tlv(SEQUENCE, &tlv(OID, &[0x2b, 0x65, 0x70])), tlv(0x03, &[0, 1, 2])].concat());
        let fields = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            algorithm.clone(),
            tlv(SEQUENCE, &[]),
            validity,
            tlv(SEQUENCE, &rdns.concat()),
            key,
        ];
        tlv(SEQUENCE, &[tlv(SEQUENCE, &fields.concat()), algorithm, tlv(0x03, &[0])].concat())
    }

    /// Made by `openssl req -x509 -newkey ec -subj "/DC=example/OU=test/CN=client+UID=u1/emailAddress=a@b"`.
    const OPENSSL_CERT: [&str; 12] = [
        "MIICEzCCAbmgAwIBAgIUE5QQIAKopHLBeBfEeWes5edIIc8wCgYIKoZIzj0EAwIw",
        "XzEXMBUGCgmSJomT8ixkARkWB2V4YW1wbGUxDTALBgNVBAsMBHRlc3QxITANBgNV",
        "BAMMBmNsaWVudDAQBgoJkiaJk/IsZAEBDAJ1MTESMBAGCSqGSIb3DQEJARYDYUBi",
        "MB4XDTI2MTIwNjAwMzc1N1oXDTM2MTIwMzAwMzc1N1owXzEXMBUGCgmSJomT8ixk",
        "ARkWB2V4YW1wbGUxDTALBgNVBAsMBHRlc3QxITANBgNVBAMMBmNsaWVudDAQBgoJ",
        "kiaJk/IsZAEBDAJ1MTESMBAGCSqGSIb3DQEJARYDYUBiMFkwEwYHKoZIzj0CAQYI",
        "KoZIzj0DAQcDQgAElN7hkOG/f7ji0dlhtlUW0Gi82IMcoobM2LKGsM7Hn8HooNS+",
        "5lg+62WemfZ0R4EeqzGp73qPPc5CLouafWRbZ6NTMFEwHQYDVR0OBBYEFFz7NeU/",
        "NGlM5Od0d5TpdVtAt74dMB8GA1UdIwQYMBaAFFz7NeU/NGlM5Od0d5TpdVtAt74d",
        "MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgIUdJ6ymr3OcIMG4P",
        "8GQdvQIg2jcG3qc0IoxB48c100ICIQCIhMpbkOxx5t70MPP7ImQ/5ZkDskHGIb+R",
        "FsGQ1NsP6w==",
    ];

    #[test]
    fn an_openssl_certificate_reads_as_java() {
        let der = base64::engine::general_purpose::STANDARD.decode(OPENSSL_CERT.concat()).expect("base64");
        // What `X509Certificate.getSubjectX500Principal().getName()` printed for it (JDK 17+).
        assert_eq!(
            subject_name(&der).as_deref(),
            Some("1.2.840.113549.1.9.1=#1603614062,CN=client+UID=u1,OU=test,DC=example")
        );
    }

    #[test]
    fn names_read_last_first_as_java() {
        let c = cert(&[rdn(&[0x55, 4, 11], 0x0c, b"test"), rdn(&[0x55, 4, 3], 0x13, b"client")]);
        assert_eq!(subject_name(&c).as_deref(), Some("CN=client,OU=test"));
    }

    #[test]
    fn specials_are_escaped_and_unknown_oids_are_hex() {
        let email = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
        let c = cert(&[rdn(&email, 0x16, b"a@b"), rdn(&[0x55, 4, 3], 0x0c, b" a,b=c#")]);
        assert_eq!(subject_name(&c).as_deref(), Some("CN=\\ a\\,b\\=c\\#,1.2.840.113549.1.9.1=#1603614062"));
    }

    #[test]
    fn multi_valued_bmp_teletex_and_non_string_values() {
        // JDK 17 printed `CN=\^M\ x,CN=\ \ a^Ab\ \ ` (^M: CR, ^A: U+0001): every leading and
        // trailing blank escaped.
        let blanks = cert(&[rdn(&[0x55, 4, 3], 0x0c, b"  a\x01b  "), rdn(&[0x55, 4, 3], 0x0c, b"\r x")]);
        assert_eq!(subject_name(&blanks).as_deref(), Some("CN=\\\r\\ x,CN=\\ \\ a\u{1}b\\ \\ "));
        // A multi-valued name's values in DER order (the shorter encoding first).
        let multi =
            tlv(SET, &[ava(&[0x55, 4, 11], 0x14, &[0xe9]), ava(&[0x55, 4, 3], 0x1e, &[0, b'a', 0, b'+'])].concat());
        let c = cert(&[multi, rdn(&[0x55, 4, 10], 0x02, &[0x05])]);
        // What `new X500Principal(name).getName()` printed for this Name (JDK 17).
        assert_eq!(subject_name(&c).as_deref(), Some("O=#020105,OU=\u{fffd}+CN=\\00a\\00\\+"));
        assert_eq!(subject_name(&cert(&[])).as_deref(), Some(""));
    }

    #[test]
    fn garbage_is_none() {
        let c = cert(&[rdn(&[0x55, 4, 3], 0x0c, b"x")]);
        assert_eq!(subject_name(&c).as_deref(), Some("CN=x"));
        for cut in 0..c.len() {
            assert_eq!(subject_name(&c[..cut]), None, "cut at {cut}");
        }
        // A subject that is not a SEQUENCE of SETs, and a relative name's values out of DER order
        // with a duplicate.
        let not_set = tlv(SEQUENCE, &ava(&[0x55, 4, 3], 0x0c, b"x"));
        assert_eq!(subject_name(&cert(&[not_set])), None);
        let dup = tlv(SET, &[ava(&[0x55, 4, 3], 0x0c, b"x"), ava(&[0x55, 4, 3], 0x0c, b"x")].concat());
        assert_eq!(subject_name(&cert(&[dup])), None);
        assert_eq!(subject_name(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(subject_name(b""), None);
    }
}
