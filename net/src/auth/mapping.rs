//! `ssl.principal.mapping.rules`: how a TLS client certificate's subject name (RFC 2253, see
//! `x500.rs`) becomes the principal's name on an SSL listener, as Kafka's `SslPrincipalMapper`.
//!
//! Contract: [`PrincipalMapper::parse`] reads Kafka's syntax — a comma-separated list of
//! `DEFAULT` and `RULE:pattern/replacement/` with an optional `L` (lower case) or `U` (upper
//! case) after the last `/`; a `\` in the pattern or replacement escapes the next character
//! (so `\/` is a `/` that does not end the part, and `,` inside a pattern is part of it);
//! blanks around a rule and empty rules are ignored. Anything else is refused with the text
//! of the offending rule, at start (the caller fails the broker's start), never at a
//! connection. [`PrincipalMapper::map`] tries the rules in order: `DEFAULT` gives the name
//! unchanged; a `RULE` applies when its pattern matches the whole name and gives the name with
//! every match of the pattern replaced (Java's `String.replaceAll`), then cased; `None` when
//! no rule applies (Kafka fails the authentication: the caller closes the connection).
//! Replacements follow Java's `Matcher` syntax: `$n` a group (digits taken while the number
//! stays a group, as Java), `${name}` a named group, `\c` the character c; a `$n` whose first
//! digit is past the pattern's groups is literal text when the pattern has groups (Kafka's
//! `escapeLiteralBackReferences`). Two differences from Kafka, both refused at start: patterns
//! are Rust `regex` syntax (Java's look-around and back-references do not compile), and a
//! replacement Java would only reject when a name matches (a `$` without a group, a missing
//! group) is refused when the rules are read.

use regex::{Captures, Regex};

/// The rules of `ssl.principal.mapping.rules`, in order.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace { full: Regex, pattern: Regex, replacement: Vec<Piece>, case: Case },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// A part of a replacement: text, or a capture group of the match.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

/// Why the rules cannot be read (the start fails with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ssl.principal.mapping.rules: invalid rule `{rule}`: {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

impl Default for PrincipalMapper {
    /// Kafka's default, `DEFAULT`: the subject name unchanged.
    fn default() -> Self {
        PrincipalMapper { rules: vec![Rule::Default] }
    }
}

impl PrincipalMapper {
    /// Reads Kafka's rule syntax (module docs).
    pub fn parse(rules: &str) -> Result<PrincipalMapper, RuleError> {
        let mut out = Vec::new();
        let mut rest = rules.trim();
        while !rest.is_empty() {
            let (rule, after) = split_rule(rest)?;
            if let Some(rule) = rule {
                out.push(rule);
            }
            rest = after.trim_start();
        }
        Ok(PrincipalMapper { rules: out })
    }

    /// The principal name for a certificate subject `dn`, or `None` when no rule applies.
    pub fn map(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|r| r.apply(dn))
    }
}

/// Reads one rule at the start of `s` (no leading blanks) up to and including the `,` that
/// ends it; `None` for an empty rule.
fn split_rule(s: &str) -> Result<(Option<Rule>, &str), RuleError> {
    let invalid = |why: &str| {
        let end = s.find(',').unwrap_or(s.len());
        RuleError { rule: s[..end].trim().to_string(), why: why.to_string() }
    };
    if let Some(after) = s.strip_prefix("DEFAULT") {
        let rest = end_of_rule(after).ok_or_else(|| invalid("unexpected text after DEFAULT"))?;
        return Ok((Some(Rule::Default), rest));
    }
    if let Some(body) = s.strip_prefix("RULE:") {
        let (pattern, after) = part(body).ok_or_else(|| invalid("expected RULE:pattern/replacement/[LU]"))?;
        let (replacement, after) = part(after).ok_or_else(|| invalid("expected RULE:pattern/replacement/[LU]"))?;
        let (case, after) = match after.chars().next() {
            Some('L') => (Case::Lower, &after[1..]),
            Some('U') => (Case::Upper, &after[1..]),
            _ => (Case::Keep, after),
        };
        let rest = end_of_rule(after).ok_or_else(|| invalid("unexpected text after the last /"))?;
        let rule = replace_rule(pattern, replacement, case).map_err(|why| invalid(&why))?;
        return Ok((Some(rule), rest));
    }
    match s.split_once(',') {
        Some((empty, rest)) if empty.trim().is_empty() => Ok((None, rest)),
        _ => Err(invalid("expected DEFAULT or RULE:pattern/replacement/[LU]")),
    }
}

/// After a rule: blanks, then a `,` (consumed) or the end.
fn end_of_rule(s: &str) -> Option<&str> {
    let s = s.trim_start();
    match s.strip_prefix(',') {
        Some(rest) => Some(rest),
        None if s.is_empty() => Some(s),
        None => None,
    }
}

/// A pattern or replacement: up to the first `/` not escaped by `\` (escapes kept), and what
/// follows that `/`.
fn part(s: &str) -> Option<(&str, &str)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '/' => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

fn replace_rule(pattern: &str, replacement: &str, case: Case) -> Result<Rule, String> {
    let compile = |p: &str| Regex::new(p).map_err(|e| format!("pattern: {e}"));
    let regex = compile(pattern)?;
    let full = compile(&format!("^(?:{pattern})$"))?;
    let groups = regex.captures_len() - 1;
    let names: Vec<&str> = regex.capture_names().flatten().collect();
    let replacement = pieces(replacement, groups, &names)?;
    Ok(Rule::Replace { full, pattern: regex, replacement, case })
}

/// A Java replacement string as pieces (module docs).
fn pieces(s: &str, groups: usize, names: &[&str]) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let c = chars.get(i + 1).ok_or("replacement: a \\ at the end escapes nothing")?;
                text.push(*c);
                i += 2;
            }
            '$' => {
                let (piece, next) = reference(&chars, i + 1, groups, names)?;
                match piece {
                    Some(p) => {
                        if !text.is_empty() {
                            out.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        out.push(p);
                    }
                    None => text.push('$'),
                }
                i = next;
            }
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// The group a `$` at `at - 1` refers to and where the text resumes; `None` when Kafka makes
/// it literal (a number past the groups of a pattern that has some).
fn reference(chars: &[char], at: usize, groups: usize, names: &[&str]) -> Result<(Option<Piece>, usize), String> {
    match chars.get(at) {
        Some('{') => {
            let close = chars[at..].iter().position(|c| *c == '}').ok_or("replacement: ${ without }")?;
            let name: String = chars[at + 1..at + close].iter().collect();
            if !names.contains(&name.as_str()) {
                return Err(format!("replacement: no group named {name}"));
            }
            Ok((Some(Piece::Named(name)), at + close + 1))
        }
        Some(d) if d.is_ascii_digit() => {
            let digits: Vec<usize> = chars[at..].iter().map_while(|c| c.to_digit(10)).map(|d| d as usize).collect();
            if groups > 0 && digits[0] != 0 && literal_reference(&digits, groups) {
                return Ok((None, at));
            }
            // Java: the first digit, then each further digit while the number stays a group.
            let mut group = digits[0];
            let mut used = 1;
            while let Some(d) = digits.get(used) {
                let longer = group * 10 + d;
                if longer > groups {
                    break;
                }
                group = longer;
                used += 1;
            }
            if group > groups {
                return Err(format!("replacement: no group {group}"));
            }
            Ok((Some(Piece::Group(group)), at + used))
        }
        _ => Err("replacement: a $ must be followed by a group number or {name} (write \\$ for a $)".into()),
    }
}

/// Kafka's `escapeLiteralBackReferences`: the number (shortened a digit at a time while it is
/// past the groups and has two digits or more) is still past the groups.
fn literal_reference(digits: &[usize], groups: usize) -> bool {
    let mut n = digits.iter().take(19).fold(0usize, |n, d| n.saturating_mul(10).saturating_add(*d));
    while n > groups && n >= 10 {
        n /= 10;
    }
    n > groups
}

impl Rule {
    fn apply(&self, dn: &str) -> Option<String> {
        let Rule::Replace { full, pattern, replacement, case } = self else { return Some(dn.to_string()) };
        if !full.is_match(dn) {
            return None;
        }
        let out = pattern.replace_all(dn, |caps: &Captures| expand(replacement, caps)).into_owned();
        Some(match case {
            Case::Keep => out,
            Case::Lower => out.to_lowercase(),
            Case::Upper => out.to_uppercase(),
        })
    }
}

fn expand(pieces: &[Piece], caps: &Captures) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Group(g) => out.push_str(caps.get(*g).map_or("", |m| m.as_str())),
            Piece::Named(n) => out.push_str(caps.name(n).map_or("", |m| m.as_str())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &str, dn: &str) -> Option<String> {
        PrincipalMapper::parse(rules).unwrap_or_else(|e| panic!("{rules}: {e}")).map(dn)
    }

    fn refused(rules: &str) -> RuleError {
        PrincipalMapper::parse(rules).expect_err(rules)
    }

    #[test]
    fn default_keeps_the_name_and_no_rule_is_no_principal() {
        assert_eq!(map("DEFAULT", "CN=a,OU=b").as_deref(), Some("CN=a,OU=b"));
        assert_eq!(PrincipalMapper::default().map("CN=a").as_deref(), Some("CN=a"));
        // Kafka's NoMatchingRule: no principal.
        assert_eq!(map("RULE:^CN=x$/y/", "CN=a"), None);
        assert_eq!(map("", "CN=a"), None);
    }

    #[test]
    fn rules_apply_in_order_with_groups_and_case() {
        let rules =
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\
                     RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U, DEFAULT";
        assert_eq!(map(rules, "CN=kafka-server1,OU=ServiceUsers,O=Org,C=US").as_deref(), Some("kafka-server1"));
        assert_eq!(
            map(rules, "CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US").as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(map(rules, "OU=x,cn=Test.user,O=y").as_deref(), Some("TEST.USER"));
        assert_eq!(map(rules, "OU=no common name").as_deref(), Some("OU=no common name"));
    }

    #[test]
    fn commas_and_escaped_slashes_belong_to_the_rule() {
        assert_eq!(map("RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/", "CN=duke,OU=JavaSoft").as_deref(), Some("duke"));
        // The class excludes D, E, F, A, U, L, T: a name with one of them does not match.
        assert_eq!(map("RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/", "CN=saLes,OU=x"), None);
        // `\/` in the pattern matches a /, in the replacement writes one.
        assert_eq!(map(r"RULE:^CN=(.*)\/(.*)$/$1\/$2@x/", "CN=a/b").as_deref(), Some("a/b@x"));
        assert_eq!(map("  RULE:^CN=(.*)$/$1/ ,  DEFAULT  ", "CN=z").as_deref(), Some("z"));
        // Empty rules are ignored.
        assert_eq!(map(",RULE:^CN=(.*)$/$1/,,", "CN=z").as_deref(), Some("z"));
    }

    #[test]
    fn replacement_references_follow_java_and_kafka() {
        // $12 with two groups: group 1 then the digit 2.
        assert_eq!(map("RULE:^CN=(.)(.)$/$12/", "CN=ab").as_deref(), Some("a2"));
        // $3 with two groups is literal text (Kafka escapes it); $0 is the whole match.
        assert_eq!(map("RULE:^CN=(.)(.)$/$1-$3/", "CN=ab").as_deref(), Some("a-$3"));
        assert_eq!(map("RULE:^CN=(.)$/[$0]/", "CN=a").as_deref(), Some("[CN=a]"));
        assert_eq!(map(r"RULE:^CN=(.)$/\$1/", "CN=a").as_deref(), Some("$1"));
        assert_eq!(map("RULE:^CN=(?P<who>.*)$/${who}!/", "CN=a").as_deref(), Some("a!"));
        // replaceAll: every match of the pattern is replaced (a lazy pattern matches a prefix).
        assert_eq!(map("RULE:CN=(.*?)/$1/", "CN=abc").as_deref(), Some("abc"));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        for bad in [
            "RULE:/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/LU",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/x",
            "DEFAULT, RULE:^CN=(.*?)$/$1/U x",
            "DEFAULTX",
            "KERBEROS, DEFAULT",
            "RULE:^CN=((.*$/$1/",
            "RULE:^CN=(.*)$/$/",
            "RULE:^CN=.*$/$1/",
            r"RULE:^CN=(.*)$/x\/",
        ] {
            let e = refused(bad);
            assert!(e.to_string().starts_with("ssl.principal.mapping.rules: invalid rule `"), "{bad}: {e}");
        }
        assert_eq!(refused("DEFAULT, FOO ,DEFAULT").rule, "FOO");
        assert!(refused("RULE:^(?=x).*$/y/").why.contains("pattern"));
        // Valid: several defaults, blanks.
        assert!(PrincipalMapper::parse("DEFAULT, DEFAULT").is_ok());
        assert!(PrincipalMapper::parse(" ").is_ok());
    }
}
