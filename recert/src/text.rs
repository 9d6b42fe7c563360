//! Finding secrets in text: PEM blocks (with their line numbers), JWTs, and kubeconfig files whose
//! `*-data` fields hold base64 PEM. One walker serves both scanning (the visitor records) and
//! rewriting (the visitor returns replacements), so the two can never disagree on what was found.

use anyhow::Result;
use base64::Engine;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
pub const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub fn b64_encode(b: &[u8]) -> String {
    B64.encode(b)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    B64.decode(s.trim())
}

/// One thing the walker found.
#[derive(Debug)]
pub enum Item<'a> {
    Pem {
        label: &'a str,
        der: Vec<u8>,
        line: usize,
    },
    /// A PEM block that does not decode.
    BadPem {
        line: usize,
        error: String,
    },
    Jwt(&'a str),
}

/// A found item's place inside its container, e.g. `line 12` or
/// `users[admin].client-key-data line 1`.
pub type Place = String;

/// The visitor: returns `Some(replacement text)` to replace the item.
pub type Visitor<'v> = dyn FnMut(&Place, Item) -> Result<Option<String>> + 'v;

/// Walk `text`, calling `visit` for every item; returns the text with replacements applied.
pub fn walk(text: &str, prefix: &str, visit: &mut Visitor) -> Result<String> {
    let text = walk_kubeconfig(text, prefix, visit)?;
    let text = walk_pem(&text, prefix, visit)?;
    walk_jwt(&text, prefix, visit)
}

fn place(prefix: &str, rest: String) -> Place {
    if prefix.is_empty() {
        rest
    } else {
        format!("{prefix} {rest}")
    }
}

fn walk_pem(text: &str, prefix: &str, visit: &mut Visitor) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut consumed = 0usize;
    while let Some(start) = rest.find("-----BEGIN ") {
        let line = text[..consumed + start].matches('\n').count() + 1;
        let after = &rest[start + 11..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = &after[..label_end];
        let end_marker = format!("-----END {label}-----");
        let body_start = start + 11 + label_end + 5;
        let Some(end_rel) = rest[body_start..].find(&end_marker) else {
            out.push_str(&rest[..body_start]);
            visit(
                &place(prefix, format!("line {line}")),
                Item::BadPem {
                    line,
                    error: format!("no \"{end_marker}\" line"),
                },
            )?;
            consumed += body_start;
            rest = &rest[body_start..];
            continue;
        };
        let body = &rest[body_start..body_start + end_rel];
        let block_end = body_start + end_rel + end_marker.len();
        out.push_str(&rest[..start]);
        let p = place(prefix, format!("line {line}"));
        // OpenSSH keys and other foreign blocks are not X.509 material.
        let known = label == "CERTIFICATE"
            || crate::keys::is_private_key_label(label)
            || crate::keys::is_public_key_label(label)
            || label.ends_with("PRIVATE KEY");
        let replacement = if !known || label == "OPENSSH PRIVATE KEY" {
            None
        } else if body.contains(':') {
            visit(
                &p,
                Item::BadPem {
                    line,
                    error: format!(
                        "{label} has PEM headers (an encrypted key?); recert cannot read it"
                    ),
                },
            )?
        } else {
            let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            match B64.decode(&b64) {
                Ok(der) => visit(&p, Item::Pem { label, der, line })?,
                Err(e) => visit(
                    &p,
                    Item::BadPem {
                        line,
                        error: format!("{label} body is not base64: {e}"),
                    },
                )?,
            }
        };
        match replacement {
            Some(r) => out.push_str(&r),
            None => out.push_str(&rest[start..block_end]),
        }
        consumed += block_end;
        rest = &rest[block_end..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Encode a PEM block the way Go and OpenSSL write them (64-column lines).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----"));
    s
}

fn is_jwt_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.'
}

/// A JWS compact token: three base64url parts, the first a JSON header with `alg`.
pub fn looks_like_jwt(tok: &str) -> bool {
    let parts: Vec<&str> = tok.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) || !tok.starts_with("eyJ") {
        return false;
    }
    let Ok(header) = B64URL.decode(parts[0]) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&header)
        .ok()
        .is_some_and(|h| h.get("alg").is_some())
}

fn walk_jwt(text: &str, prefix: &str, visit: &mut Visitor) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if is_jwt_char(bytes[i]) && (i == 0 || !is_jwt_char(bytes[i - 1])) {
            let mut j = i;
            while j < bytes.len() && is_jwt_char(bytes[j]) {
                j += 1;
            }
            let tok = &text[i..j];
            if looks_like_jwt(tok) {
                let line = text[..i].matches('\n').count() + 1;
                if let Some(new) = visit(&place(prefix, format!("line {line}")), Item::Jwt(tok))? {
                    out.push_str(&text[last..i]);
                    out.push_str(&new);
                    last = j;
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// The base64 `*-data` fields of a kubeconfig, with a readable place for each.
pub fn kubeconfig_data_fields(text: &str) -> Vec<(String, String)> {
    if !text.contains("-data:") {
        return vec![];
    }
    let Ok(doc) = yaml_serde::from_str::<yaml_serde::Value>(text) else {
        return vec![];
    };
    let mut out = vec![];
    for (list, inner) in [("clusters", "cluster"), ("users", "user")] {
        let Some(items) = doc.get(list).and_then(|v| v.as_sequence()) else {
            continue;
        };
        for item in items {
            let name = item.get("name").and_then(|n| n.as_str()).unwrap_or("?");
            let Some(map) = item.get(inner).and_then(|v| v.as_mapping()) else {
                continue;
            };
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str()) {
                    if k.ends_with("-data") {
                        out.push((format!("{list}[{name}].{k}"), v.to_string()));
                    }
                }
            }
        }
    }
    out
}

/// Whether the text is a kubeconfig (so that its server URLs take part in a cluster rename).
pub fn is_kubeconfig(text: &str) -> bool {
    text.contains("clusters:") && text.contains("server:") && text.contains("kind: Config")
}

fn walk_kubeconfig(text: &str, prefix: &str, visit: &mut Visitor) -> Result<String> {
    let mut out = text.to_string();
    for (field, b64) in kubeconfig_data_fields(text) {
        let Ok(decoded) = B64.decode(b64.trim()) else {
            continue;
        };
        let Ok(inner) = String::from_utf8(decoded) else {
            continue;
        };
        let new_inner = walk(&inner, &place(prefix, field), visit)?;
        if new_inner != inner {
            out = out.replace(&b64, &B64.encode(new_inner.as_bytes()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &str) -> Vec<String> {
        let mut found = vec![];
        walk(text, "f", &mut |p: &Place, item: Item| {
            found.push(match item {
                Item::Pem { label, der, line } => {
                    format!("{p}: {label} {} bytes @{line}", der.len())
                }
                Item::BadPem { line, error } => format!("{p}: bad @{line}: {error}"),
                Item::Jwt(t) => format!("{p}: jwt {}", t.len()),
            });
            Ok(None)
        })
        .unwrap();
        found
    }

    #[test]
    fn finds_blocks_in_bundles_kubeconfigs_and_jwts() {
        let cert = pem_encode("CERTIFICATE", b"abc");
        let key = pem_encode("RSA PRIVATE KEY", b"defg");
        let bundle = format!("# comment\n{cert}\n{key}\n");
        assert_eq!(
            collect(&bundle),
            [
                "f line 2: CERTIFICATE 3 bytes @2",
                "f line 5: RSA PRIVATE KEY 4 bytes @5"
            ]
        );

        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://api.x:6443\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-key-data: {}\n",
            b64_encode(cert.as_bytes()),
            b64_encode(key.as_bytes())
        );
        assert_eq!(
            collect(&kc),
            [
                "f clusters[c].certificate-authority-data line 1: CERTIFICATE 3 bytes @1",
                "f users[admin].client-key-data line 1: RSA PRIVATE KEY 4 bytes @1"
            ]
        );

        let header = B64URL.encode(br#"{"alg":"RS256","kid":"k"}"#);
        let jwt = format!("{header}.eyJzdWIiOiJ4In0.c2ln");
        assert_eq!(collect(&format!("token: {jwt}\n")), ["f line 1: jwt 55"]);
        assert!(collect("eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.c2ln").is_empty());
    }

    #[test]
    fn reports_broken_blocks_with_their_line() {
        let text = "a\nb\n-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAAAA\n";
        let found = collect(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("f line 3: bad @3: CERTIFICATE body is not base64"));
        assert!(found[1].contains("no \"-----END CERTIFICATE-----\" line"));
    }

    #[test]
    fn replacements_keep_the_surrounding_text() {
        let cert = pem_encode("CERTIFICATE", b"abc");
        let text = format!("before\n{cert}\nafter\n");
        let out = walk(&text, "", &mut |_p: &Place, item: Item| {
            Ok(match item {
                Item::Pem { label, .. } => Some(pem_encode(label, b"xyz")),
                _ => None,
            })
        })
        .unwrap();
        assert_eq!(
            out,
            format!("before\n{}\nafter\n", pem_encode("CERTIFICATE", b"xyz"))
        );
    }
}
