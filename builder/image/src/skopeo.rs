//! The one wrapper around `skopeo`: every inspect and copy imgmode makes goes through here, so
//! registry credentials (`--authfile`), trusted CAs (`--cert-dir`) and TLS verification are
//! spelled in one place, for the side of a copy they belong to.

use anyhow::{Context, Result};
use imgmode_support::cmd::Run;
use std::path::{Path, PathBuf};

/// How to reach a registry: credentials and the CA certificates to trust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    pub authfile: Option<PathBuf>,
    /// A directory of `*.crt` CA certificates trusted for the registry.
    pub cert_dir: Option<PathBuf>,
    /// `Some(false)` turns TLS verification off (`--tls-verify=false`); `None` keeps skopeo's
    /// default (verify, except for registries `registries.conf` marks insecure).
    pub tls_verify: Option<bool>,
}

impl RegistryAuth {
    /// Credentials from an auth file only.
    pub fn authfile(path: impl Into<PathBuf>) -> Self {
        RegistryAuth {
            authfile: Some(path.into()),
            ..Default::default()
        }
    }

    /// The flags for one side of a command: `""` (inspect), `"src-"` or `"dest-"` (copy).
    fn flags(&self, side: &str) -> Vec<String> {
        let mut a = vec![];
        if let Some(f) = &self.authfile {
            a.push(format!("--{side}authfile={}", f.display()));
        }
        if let Some(d) = &self.cert_dir {
            a.push(format!("--{side}cert-dir={}", d.display()));
        }
        if let Some(v) = self.tls_verify {
            a.push(format!("--{side}tls-verify={v}"));
        }
        a
    }
}

/// `skopeo inspect --raw`: the image's manifest (or index) bytes, as the registry serves them.
pub fn inspect_raw(reference: &str, auth: &RegistryAuth) -> Result<Vec<u8>> {
    Ok(inspect(reference, auth, &["--raw"])?.stdout)
}

/// `skopeo inspect --config`: the image's config (for the platform of this machine).
pub fn inspect_config(reference: &str, auth: &RegistryAuth) -> Result<Vec<u8>> {
    Ok(inspect(reference, auth, &["--config"])?.stdout)
}

/// The manifest digest of `reference` (`skopeo inspect --format {{.Digest}}`).
pub fn inspect_digest(reference: &str, auth: &RegistryAuth) -> Result<String> {
    let out = inspect(reference, auth, &["--format", "{{.Digest}}"])?;
    Ok(String::from_utf8(out.stdout)
        .context("skopeo printed a digest that is not UTF-8")?
        .trim()
        .to_string())
}

/// `skopeo` with the trust policy settled: the machine's containers-policy.json when it has
/// one (skopeo reads it itself, so a signature requirement there holds for imgmode too);
/// without one, images are accepted unsigned (`--insecure-policy`), said once per run.
pub fn skopeo() -> Run {
    skopeo_under(imgmode_support::host::containers_policy().as_deref())
}

/// [`skopeo`] on a machine whose policy is `policy`.
fn skopeo_under(policy: Option<&Path>) -> Run {
    let r = Run::new("skopeo");
    if policy.is_some() {
        return r;
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "this machine has no containers-policy.json (/etc/containers/policy.json or ~/.config/containers/policy.json): images are accepted without checking signatures; write one to require them"
        )
    });
    r.arg("--insecure-policy")
}

/// `skopeo list-tags`: the tags of the repository `reference` (`docker://HOST/REPO`).
pub fn list_tags(reference: &str, auth: &RegistryAuth) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Tags {
        #[serde(rename = "Tags")]
        tags: Option<Vec<String>>,
    }
    let out = skopeo()
        .arg("list-tags")
        .args(auth.flags(""))
        .arg(reference)
        .output()?;
    let t: Tags = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("skopeo list-tags {reference} printed no tag list"))?;
    Ok(t.tags.unwrap_or_default())
}

fn inspect(reference: &str, auth: &RegistryAuth, what: &[&str]) -> Result<std::process::Output> {
    skopeo()
        .arg("inspect")
        .args(what)
        .args(auth.flags(""))
        .arg(reference)
        .output()
}

/// One `skopeo copy --quiet SRC DEST`, with the options the callers need.
#[derive(Debug, Clone, Default)]
pub struct Copy {
    src: String,
    dest: String,
    src_auth: RegistryAuth,
    dest_auth: RegistryAuth,
    all: bool,
    preserve_digests: bool,
    accept_uncompressed: bool,
    retry_times: Option<u32>,
    digestfile: Option<PathBuf>,
}

impl Copy {
    pub fn new(src: impl Into<String>, dest: impl Into<String>) -> Self {
        Copy {
            src: src.into(),
            dest: dest.into(),
            ..Default::default()
        }
    }
    /// Credentials and CAs for reading the source.
    pub fn src_auth(mut self, a: &RegistryAuth) -> Self {
        self.src_auth = a.clone();
        self
    }
    /// Credentials, CAs and TLS verification for writing the destination.
    pub fn dest_auth(mut self, a: &RegistryAuth) -> Self {
        self.dest_auth = a.clone();
        self
    }
    /// Copy every image of a list (`--all`).
    pub fn all(mut self) -> Self {
        self.all = true;
        self
    }
    /// Keep blobs byte for byte, so digests stay (`--preserve-digests`).
    pub fn preserve_digests(mut self) -> Self {
        self.preserve_digests = true;
        self
    }
    /// Let an `oci:` destination keep uncompressed layers uncompressed.
    pub fn accept_uncompressed_layers(mut self) -> Self {
        self.accept_uncompressed = true;
        self
    }
    /// Retry a failed transfer `n` times.
    pub fn retry_times(mut self, n: u32) -> Self {
        self.retry_times = Some(n);
        self
    }
    /// Write the destination's manifest digest to `path`.
    pub fn digestfile(mut self, path: &Path) -> Self {
        self.digestfile = Some(path.to_path_buf());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec!["copy".to_string(), "--quiet".to_string()];
        let flags = [
            (self.all, "--all"),
            (self.preserve_digests, "--preserve-digests"),
            (
                self.accept_uncompressed,
                "--dest-oci-accept-uncompressed-layers",
            ),
        ];
        a.extend(flags.iter().filter(|f| f.0).map(|f| f.1.to_string()));
        if let Some(n) = self.retry_times {
            a.push(format!("--retry-times={n}"));
        }
        if let Some(d) = &self.digestfile {
            a.push(format!("--digestfile={}", d.display()));
        }
        a.extend(self.src_auth.flags("src-"));
        a.extend(self.dest_auth.flags("dest-"));
        a.push(self.src.clone());
        a.push(self.dest.clone());
        a
    }

    /// Run the copy; skopeo's last lines of stderr are in the error.
    pub fn run(self) -> Result<()> {
        skopeo().args(self.args()).output()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_go_unchecked_only_where_there_is_no_policy() {
        let (_, with) = skopeo_under(Some(Path::new("/etc/containers/policy.json")))
            .arg("inspect")
            .into_command();
        assert_eq!(with, "skopeo inspect");
        let (_, without) = skopeo_under(None).arg("inspect").into_command();
        assert_eq!(without, "skopeo --insecure-policy inspect");
    }

    #[test]
    fn auth_flags_go_to_their_side() {
        let a = RegistryAuth {
            authfile: Some("/a.json".into()),
            cert_dir: Some("/certs".into()),
            tls_verify: Some(false),
        };
        let c = Copy::new("docker://r/x", "oci:/d")
            .src_auth(&a)
            .dest_auth(&RegistryAuth::authfile("/b.json"))
            .all()
            .preserve_digests()
            .retry_times(3);
        assert_eq!(
            c.args(),
            [
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--retry-times=3",
                "--src-authfile=/a.json",
                "--src-cert-dir=/certs",
                "--src-tls-verify=false",
                "--dest-authfile=/b.json",
                "docker://r/x",
                "oci:/d"
            ]
        );
        assert_eq!(
            RegistryAuth::default().flags(""),
            Vec::<String>::new(),
            "no flags unless asked"
        );
    }
}
