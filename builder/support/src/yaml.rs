//! Typed YAML (or JSON) input: errors name the file, line and column, and a Kubernetes-style
//! object's `kind` and `apiVersion` are checked against the ones expected.

use anyhow::{anyhow, bail, Result};

/// Parse YAML (or JSON) into `T`; `what` names the input in errors, with the line and column.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    yaml_serde::from_str(text).map_err(|e| match e.location() {
        Some(l) => anyhow!("{what}: line {}, column {}: {e}", l.line(), l.column()),
        None => anyhow!("{what}: {e}"),
    })
}

/// The first key of the mapping `v` that is not one of `allowed` (none when `v` is not a
/// mapping): what a caller refuses by name, in its own words.
pub fn unknown_key<'a>(v: &'a yaml_serde::Value, allowed: &[&str]) -> Option<&'a str> {
    v.as_mapping()?
        .keys()
        .map(|k| k.as_str().unwrap_or("?"))
        .find(|k| !allowed.contains(k))
}

/// The object's `kind` and `apiVersion` are the ones expected.
pub fn check_type(
    what: &str,
    kind: &str,
    api_version: &str,
    want_kind: &str,
    want_api_version: &str,
) -> Result<()> {
    if kind != want_kind {
        bail!("{what}: kind is {kind:?}, expected {want_kind}");
    }
    if api_version != want_api_version {
        bail!("{what}: apiVersion is {api_version:?}, expected {want_api_version}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_input_line_and_kind() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        struct T {
            #[allow(dead_code)]
            a: u32,
        }
        let e = parse::<T>("a: 1\nb: 2\n", "x.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.yaml: line 2, column 1:"), "{e}");
        assert!(e.contains("unknown field `b`"), "{e}");
        let v: yaml_serde::Value = yaml_serde::from_str("a: 1\nb: 2\n").unwrap();
        assert_eq!(unknown_key(&v, &["a", "b"]), None);
        assert_eq!(unknown_key(&v, &["a"]), Some("b"));
        assert_eq!(unknown_key(&yaml_serde::Value::Null, &[]), None);
        let e = check_type("x.yaml", "Pod", "v1", "Node", "v1").unwrap_err();
        assert_eq!(e.to_string(), "x.yaml: kind is \"Pod\", expected Node");
        let e = check_type("x.yaml", "Node", "v2", "Node", "v1").unwrap_err();
        assert_eq!(e.to_string(), "x.yaml: apiVersion is \"v2\", expected v1");
    }
}
