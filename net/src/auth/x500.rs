//! The principal name of a TLS client certificate: its subject distinguished name in the RFC
//! 2253 form Java's `X500Principal.getName()` gives, which is what Kafka's
//! `DefaultKafkaPrincipalBuilder` uses (with the default `ssl.principal.mapping.rules`) on an
//! SSL listener: `User:CN=client,OU=test`.
//!
//! Contract: a pure function of the certificate's DER bytes; anything malformed, truncated or
//! nested deeper than X.509 allows gives `None` (the caller keeps `ANONYMOUS`), never a panic.
//! As Java: relative names last-encoded first, separated by `,` (the values of a multi-valued
//! one by `+`); the keywords CN, C, L, ST, O, OU, STREET, DC and UID, any other attribute as its
//! dotted OID; a string value (UTF8String, PrintableString, TeletexString, IA5String,
//! BMPString) with `,=+<>#;"\` and a leading or trailing space escaped by `\`; any other value,
//! and every value of an OID-named attribute, as `#` and the lowercase hex of its DER encoding.

/// One DER element: its tag, its whole encoding and its contents.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    content: &'a [u8],
}

/// Splits the first element off `input` (definite lengths only, at most 4 length bytes).
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = match first {
        0..=0x7f => (usize::from(first), 2),
        0x81..=0x84 => {
            let n = usize::from(first & 0x7f);
            let bytes = input.get(2..2 + n)?;
            (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), 2 + n)
        }
        _ => return None,
    };
    let end = header.checked_add(len)?;
    let whole = input.get(..end)?;
    Some((Tlv { tag, whole, content: &whole[header..] }, &input[end..]))
}

/// The elements of a constructed element's contents, in order.
fn children(content: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (t, r) = next(rest)?;
        out.push(t);
        rest = r;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject DN of a DER certificate in RFC 2253 form, or `None` when it does not parse.
pub fn subject_name(cert: &[u8]) -> Option<String> {
    let (certificate, _) = next(cert)?;
    let tbs = children(certificate.content)?.into_iter().next().filter(|t| t.tag == SEQUENCE)?;
    let fields = children(tbs.content)?;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    let skip = usize::from(fields.first()?.tag == 0xa0);
    let subject = fields.get(skip + 4).filter(|t| t.tag == SEQUENCE)?;
    let mut rdns = Vec::new();
    for rdn in children(subject.content)? {
        if rdn.tag != SET {
            return None;
        }
        let mut avas = Vec::new();
        for ava in children(rdn.content)? {
            let parts = children(ava.content).filter(|_| ava.tag == SEQUENCE)?;
            let [oid, value] = parts.as_slice() else { return None };
            if oid.tag != OID {
                return None;
            }
            avas.push(attribute(oid.content, value)?);
        }
        rdns.push(avas.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// `KEYWORD=value` of one attribute.
fn attribute(oid: &[u8], value: &Tlv<'_>) -> Option<String> {
    let keyword = match oid {
        [0x55, 0x04, 0x03] => Some("CN"),
        [0x55, 0x04, 0x06] => Some("C"),
        [0x55, 0x04, 0x07] => Some("L"),
        [0x55, 0x04, 0x08] => Some("ST"),
        [0x55, 0x04, 0x0a] => Some("O"),
        [0x55, 0x04, 0x0b] => Some("OU"),
        [0x55, 0x04, 0x09] => Some("STREET"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => Some("UID"),
        _ => None,
    };
    let text = keyword.and_then(|_| string_value(value));
    let name = match keyword {
        Some(k) => k.to_string(),
        None => dotted(oid)?,
    };
    Some(match text {
        Some(t) => format!("{name}={}", escape(&t)),
        None => format!("{name}=#{}", value.whole.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    })
}

/// The text of a string-typed value.
fn string_value(value: &Tlv<'_>) -> Option<String> {
    match value.tag {
        0x0c | 0x13 | 0x16 => std::str::from_utf8(value.content).ok().map(str::to_string),
        // TeletexString: Java reads it as ISO-8859-1.
        0x14 => Some(value.content.iter().map(|b| char::from(*b)).collect()),
        0x1e if value.content.len().is_multiple_of(2) => {
            let units = value.content.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<String, _>>().ok()
        }
        _ => None,
    }
}

/// An OID in dotted form.
fn dotted(oid: &[u8]) -> Option<String> {
    let (first, rest) = oid.split_first()?;
    let mut parts = vec![u64::from(first / 40).min(2), u64::from(*first) - 40 * u64::from(first / 40).min(2)];
    let mut acc: u64 = 0;
    for b in rest {
        acc = acc.checked_mul(128)?.checked_add(u64::from(b & 0x7f))?;
        if b & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    Some(parts.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// RFC 2253 escaping as Java does it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        if ",=+<>#;\"\\".contains(c) || (c == ' ' && (i == 0 || i == last)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(SET, &tlv(SEQUENCE, &[tlv(OID, oid), tlv(tag, value)].concat()))
    }

    /// A certificate whose subject holds `rdns` (issuer empty, other fields placeholders).
    fn cert(rdns: &[Vec<u8>]) -> Vec<u8> {
        let fields = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48])),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &rdns.concat()),
        ];
        tlv(SEQUENCE, &[tlv(SEQUENCE, &fields.concat()), tlv(SEQUENCE, &[]), tlv(0x03, &[0])].concat())
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
    fn garbage_is_none() {
        let c = cert(&[rdn(&[0x55, 4, 3], 0x0c, b"x")]);
        for cut in 0..c.len() {
            assert_eq!(subject_name(&c[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_name(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(subject_name(b""), None);
    }
}
