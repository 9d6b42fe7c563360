//! Image references as users type them.
//!
//! Accepted forms:
//! - containers-transports(5): `docker://REF`, `registry:REF`, `oci:PATH[:TAG]`,
//!   `oci-archive:PATH[:TAG]`, `containers-storage:REF`, `dir:PATH`, `docker-archive:PATH`;
//! - ostree-ext deployment schemes: `ostree-unverified-image:<transport>:<ref>`,
//!   `ostree-unverified-registry:<ref>`, `ostree-image-signed:...`, `ostree-remote-image:...`;
//! - a bare `NAME` (no transport): an image in imgmode's local store (see [`crate::store`]).
//!
//! Parsing is pure (no filesystem access); [`crate::store::Store::resolve`] turns a
//! [`UserImageRef::Local`] into an `oci:` reference.

use anyhow::{anyhow, bail, Result};
use ostree_ext::container::{ImageReference, OstreeImageReference, SignatureSource, Transport};
use std::path::PathBuf;

/// Transports a user may name, for the "unsupported transport" message.
pub const TRANSPORTS: &[&str] = &[
    "docker://",
    "registry:",
    "oci:",
    "oci-archive:",
    "containers-storage:",
    "dir:",
    "docker-archive:",
];

/// A parsed image argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserImageRef {
    /// A transport-qualified reference, possibly with an ostree signature policy.
    Remote(OstreeImageReference),
    /// A name in the local store.
    Local(String),
}

/// Is `name` a valid local store name: lowercase alphanumerics and `._-`, optionally
/// followed by `:tag`, starting with an alphanumeric.
pub fn is_local_name(name: &str) -> bool {
    let (repo, tag) = match name.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (name, None),
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    };
    ok(repo) && tag.is_none_or(ok)
}

/// Parse an image argument.
pub fn parse(s: &str) -> Result<UserImageRef> {
    if s.is_empty() {
        bail!("empty image reference");
    }
    if s.contains(char::is_control) || s.trim() != s {
        bail!(
            "invalid image reference {}: it holds a control character or starts or ends with white space",
            imgmode_support::validate::shown(s)
        );
    }
    if s.starts_with("ostree-") {
        let r = OstreeImageReference::try_from(s).map_err(|e| {
            anyhow!("invalid image reference {s:?}: {e}; expected for example ostree-unverified-image:docker://quay.io/org/image:tag")
        })?;
        validate_name(&r.imgref)?;
        return Ok(UserImageRef::Remote(r));
    }
    if let Some((transport, _)) = split_transport(s) {
        if !TRANSPORTS.iter().any(|t| transport_name(t) == transport) {
            bail!(
                "unsupported transport {transport:?} in image reference {s:?}; supported transports: {}",
                TRANSPORTS.join(", ")
            );
        }
        let imgref = ImageReference::try_from(s)
            .map_err(|e| anyhow!("invalid image reference {s:?}: {e}"))?;
        validate_name(&imgref)?;
        return Ok(UserImageRef::Remote(OstreeImageReference {
            sigverify: SignatureSource::ContainerPolicyAllowInsecure,
            imgref,
        }));
    }
    if is_local_name(s) {
        return Ok(UserImageRef::Local(s.to_string()));
    }
    bail!(
        "invalid image reference {s:?}: give a transport ({}) or the name of an image in the local store",
        TRANSPORTS.join(", ")
    )
}

/// The transport prefix (without `:`) when `s` has one. A bare `name:tag` is not a transport:
/// transports are recognised by a known prefix or by `scheme://`.
fn split_transport(s: &str) -> Option<(&str, &str)> {
    if let Some((scheme, rest)) = s.split_once("://") {
        if !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Some((scheme, rest));
        }
    }
    let (prefix, rest) = s.split_once(':')?;
    let known = TRANSPORTS.iter().any(|t| transport_name(t) == prefix);
    // `name:tag` of a local image is not a transport; an unknown `word:` followed by a path is.
    let looks_like_transport = known || rest.starts_with('/') || rest.starts_with('.');
    looks_like_transport.then_some((prefix, rest))
}

/// `PATH[:TAG]` of an `oci:` reference: containers-transports(5) allows no `:` in PATH, so the
/// last `:` starts the tag (an empty tag is no tag).
pub fn oci_dir_and_tag(name: &str) -> (PathBuf, Option<&str>) {
    match name.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') => {
            (PathBuf::from(dir), Some(tag).filter(|t| !t.is_empty()))
        }
        _ => (PathBuf::from(name), None),
    }
}

/// A tag as the distribution spec defines it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn tag_name(t: &str) -> std::result::Result<(), String> {
    let ok_first = t
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok_rest = t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok_first || !ok_rest || t.len() > 128 {
        return Err("is not a tag (1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-')".into());
    }
    Ok(())
}

/// `docker://` -> `docker`, `oci:` -> `oci`.
fn transport_name(t: &str) -> &str {
    t.trim_end_matches("//").trim_end_matches(':')
}

fn validate_name(imgref: &ImageReference) -> Result<()> {
    if imgref.name.is_empty() {
        bail!("image reference {imgref} names no image");
    }
    let check_tag = |t: &str| {
        tag_name(t).map_err(|p| {
            anyhow!(
                "image reference {imgref}: the tag {} {p}",
                imgmode_support::validate::shown(t)
            )
        })
    };
    if matches!(imgref.transport, Transport::OciDir | Transport::OciArchive) {
        let (path, tag) = oci_dir_and_tag(&imgref.name);
        if path.to_string_lossy().contains('@') {
            bail!(
                "image reference {imgref}: an {}: reference names a tag (PATH:TAG), not a digest; a layout's images are told apart by tag",
                imgref.transport
            );
        }
        if let Some(t) = tag {
            check_tag(t)?;
        }
    }
    if imgref.transport == Transport::Registry {
        let last = imgref.name.rsplit('/').next().unwrap_or_default();
        let last = last.split('@').next().unwrap_or_default();
        if let Some((_, t)) = last.rsplit_once(':') {
            check_tag(t)?;
        }
        if imgref.name.contains(char::is_whitespace) {
            bail!("image reference {imgref} holds a space");
        }
    }
    if matches!(imgref.transport, Transport::Registry) && imgref.name.contains("://") {
        bail!("invalid registry reference {:?}", imgref.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(s: &str) -> String {
        match parse(s).unwrap() {
            UserImageRef::Remote(r) => r.to_string(),
            UserImageRef::Local(n) => panic!("{s} parsed as local {n}"),
        }
    }

    #[test]
    fn transports() {
        for (input, want) in [
            (
                "docker://quay.io/a/b:1",
                "ostree-unverified-registry:quay.io/a/b:1",
            ),
            (
                "registry:quay.io/a/b:1",
                "ostree-unverified-registry:quay.io/a/b:1",
            ),
            ("oci:/srv/img:v1", "ostree-unverified-image:oci:/srv/img:v1"),
            (
                "oci-archive:/tmp/a.tar",
                "ostree-unverified-image:oci-archive:/tmp/a.tar",
            ),
            (
                "containers-storage:localhost/x",
                "ostree-unverified-image:containers-storage:localhost/x",
            ),
            ("dir:/tmp/d", "ostree-unverified-image:dir:/tmp/d"),
            (
                "ostree-unverified-image:oci:/srv/img",
                "ostree-unverified-image:oci:/srv/img",
            ),
        ] {
            assert_eq!(remote(input), want, "{input}");
        }
    }

    #[test]
    fn local_names() {
        assert_eq!(
            parse("imgmode-base").unwrap(),
            UserImageRef::Local("imgmode-base".into())
        );
        assert_eq!(
            parse("seed-system:v2").unwrap(),
            UserImageRef::Local("seed-system:v2".into())
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (input, needle) in [
            ("ftp://host/x", "unsupported transport \"ftp\""),
            ("s3:/bucket/x", "unsupported transport \"s3\""),
            ("", "empty image reference"),
            ("Bad Name!", "give a transport"),
            ("ostree-bogus:oci:/x", "invalid image reference"),
        ] {
            let err = parse(input).unwrap_err().to_string();
            assert!(err.contains(needle), "{input}: {err}");
        }
    }

    proptest::proptest! {
        /// Whatever a user types, a reference that parses carries no control character, and a
        /// local name never holds a path separator or `..` (it becomes a directory name).
        #[test]
        fn what_parses_is_safe(s in "\\PC*|.*[\\n\\r\\x1b/.:].*") {
            if let Ok(r) = parse(&s) {
                proptest::prop_assert!(!s.chars().any(char::is_control), "{s:?}");
                proptest::prop_assert!(s.trim() == s, "{s:?}");
                if let UserImageRef::Local(n) = r {
                    proptest::prop_assert!(!n.contains('/') && !n.contains(".."), "{n:?}");
                }
            }
        }
    }
}
