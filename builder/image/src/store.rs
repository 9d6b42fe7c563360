//! imgmode's local image store.
//!
//! Layout under the state directory (default `/var/lib/imgmode`, or `$IMGMODE_STATE_DIR`):
//!
//! ```text
//! images/<name>/<tag>/      one OCI image layout per name and tag (oci-layout, index.json, blobs/)
//! images/.staging-XXXX/     an image being written; renamed into place when complete
//! repo/                     a bare ostree repo used as a build and import cache
//! ```
//!
//! A local name `NAME[:TAG]` resolves to `oci:<state>/images/NAME/TAG` (TAG defaults to
//! `latest`), so every tool that speaks containers-transports(5) can read the store directly.
//! Writes go to a staging directory and are renamed into place, so a failed or interrupted
//! build never leaves a half-written image under a name.
//!
//! The cache directory (default `/var/cache/imgmode`, or `$IMGMODE_CACHE_DIR`) holds downloads
//! (apt archives) only; deleting it, or the state directory's `repo/`, is always safe.

use crate::imgref::{self, UserImageRef};
use anyhow::{anyhow, bail, Context, Result};
use ostree_ext::container::{ImageReference, OstreeImageReference, SignatureSource, Transport};
use ostree_ext::oci_spec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/imgmode";
/// Default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/imgmode";

/// The local image store.
#[derive(Debug, Clone)]
pub struct Store {
    state: PathBuf,
}

/// One image in the store, as `imgmode images` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredImage {
    pub name: String,
    pub reference: String,
    pub digest: String,
    pub labels: BTreeMap<String, String>,
}

impl Store {
    pub fn new(state: impl Into<PathBuf>) -> Self {
        Self {
            state: state.into(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn images(&self) -> PathBuf {
        self.state.join("images")
    }

    /// The ostree repository used as a build and import cache (created on demand).
    pub fn repo_path(&self) -> PathBuf {
        self.state.join("repo")
    }

    /// Split `NAME[:TAG]`.
    pub fn split_name(name: &str) -> Result<(&str, &str)> {
        if !imgref::is_local_name(name) {
            bail!("invalid local image name {name:?}: use lowercase letters, digits, '.', '_' and '-', optionally with :TAG");
        }
        Ok(name.split_once(':').unwrap_or((name, "latest")))
    }

    /// The OCI layout directory of a local name.
    pub fn image_dir(&self, name: &str) -> Result<PathBuf> {
        let (repo, tag) = Self::split_name(name)?;
        Ok(self.images().join(repo).join(tag))
    }

    /// The `oci:` reference of a local name (whether or not it exists).
    pub fn oci_ref(&self, name: &str) -> Result<ImageReference> {
        let dir = self.image_dir(name)?;
        Ok(ImageReference {
            transport: Transport::OciDir,
            name: dir.to_string_lossy().into_owned(),
        })
    }

    pub fn contains(&self, name: &str) -> Result<bool> {
        Ok(self.image_dir(name)?.join("index.json").is_file())
    }

    /// Resolve a user image argument into a transport reference; local names must exist.
    pub fn resolve(&self, arg: &str) -> Result<OstreeImageReference> {
        match imgref::parse(arg)? {
            UserImageRef::Remote(r) => Ok(r),
            UserImageRef::Local(name) => {
                if !self.contains(&name)? {
                    bail!(
                        "image {name:?} not found in the local store {}; build it first (imgmode base build) or name a transport such as docker://{name}",
                        self.images().display()
                    );
                }
                Ok(OstreeImageReference {
                    sigverify: SignatureSource::ContainerPolicyAllowInsecure,
                    imgref: self.oci_ref(&name)?,
                })
            }
        }
    }

    /// A fresh staging directory on the store's filesystem; [`Store::publish`] moves it in.
    pub fn staging(&self) -> Result<tempfile::TempDir> {
        let images = self.images();
        std::fs::create_dir_all(&images)
            .with_context(|| format!("creating {}", images.display()))?;
        tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&images)
            .with_context(|| format!("creating a staging directory in {}", images.display()))
    }

    /// Atomically make the complete OCI layout in `staged` the image `name`, replacing an older
    /// image of that name.
    pub fn publish(&self, staged: tempfile::TempDir, name: &str) -> Result<PathBuf> {
        let dest = self.image_dir(name)?;
        let parent = dest.parent().expect("image dir has a parent");
        std::fs::create_dir_all(parent)?;
        let staged = staged.keep();
        let old = parent.join(format!(
            ".old-{}-{}",
            dest.file_name().unwrap().to_string_lossy(),
            std::process::id()
        ));
        let had_old = dest.exists();
        if had_old {
            std::fs::rename(&dest, &old)
                .with_context(|| format!("moving aside {}", dest.display()))?;
        }
        if let Err(e) = std::fs::rename(&staged, &dest) {
            if had_old {
                let _ = std::fs::rename(&old, &dest);
            }
            let _ = std::fs::remove_dir_all(&staged);
            return Err(e).with_context(|| format!("publishing {}", dest.display()));
        }
        if had_old {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("removing the replaced image {}", old.display()))?;
        }
        Ok(dest)
    }

    /// Read one stored image's digest and labels.
    pub fn inspect(&self, name: &str) -> Result<StoredImage> {
        let dir = self.image_dir(name)?;
        let (digest, labels) = read_oci_layout(&dir)?;
        Ok(StoredImage {
            name: name.to_string(),
            reference: format!("oci:{}", dir.display()),
            digest,
            labels,
        })
    }

    /// Every image in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<StoredImage>> {
        let mut out = Vec::new();
        let images = self.images();
        let Ok(repos) = std::fs::read_dir(&images) else {
            return Ok(out);
        };
        for repo in repos {
            let repo = repo?;
            let rname = repo.file_name().to_string_lossy().into_owned();
            if rname.starts_with('.') || !repo.file_type()?.is_dir() {
                continue;
            }
            for tag in std::fs::read_dir(repo.path())? {
                let tag = tag?;
                let tname = tag.file_name().to_string_lossy().into_owned();
                if tname.starts_with('.') || !tag.path().join("index.json").is_file() {
                    continue;
                }
                out.push(self.inspect(&format!("{rname}:{tname}"))?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: Option<u64>,
}
#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}
#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
}
#[derive(Deserialize, Default)]
struct ConfigInner {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}
#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ConfigInner>,
}

fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = crate::digest::hex_of(digest)?;
    let algo = &digest[..digest.len() - hex.len() - 1];
    Ok(dir.join("blobs").join(algo).join(hex))
}

/// One image of an OCI layout directory, fully parsed.
#[derive(Debug, Clone)]
pub struct OciImage {
    pub dir: PathBuf,
    pub manifest_digest: String,
    pub manifest: oci_spec::image::ImageManifest,
    pub config: oci_spec::image::ImageConfiguration,
}

impl OciImage {
    /// Read the (first) image of the OCI layout at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let desc = first_manifest(dir)?;
        let verified = |digest: &str, size: Option<u64>, what: &str| -> Result<Vec<u8>> {
            let raw = read(blob_path(dir, digest)?)?;
            crate::digest::verify_bytes(what, &raw, digest, size)
                .with_context(|| format!("reading the image in {}", dir.display()))?;
            Ok(raw)
        };
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&verified(&desc.digest, desc.size, "manifest")?)
                .with_context(|| format!("parsing manifest {}", desc.digest))?;
        let cd = manifest.config();
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&verified(
            cd.digest().as_ref(),
            Some(cd.size()),
            "image config",
        )?)
        .with_context(|| format!("parsing image config {}", cd.digest()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest_digest: desc.digest.clone(),
            manifest,
            config,
        })
    }

    /// The path of a blob of this layout (the digest is validated first).
    pub fn blob(&self, digest: &str) -> Result<PathBuf> {
        blob_path(&self.dir, digest)
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .map(|l| l.into_iter().collect())
            .unwrap_or_default()
    }

    /// Open layer `i` decompressed (gzip, zstd or plain tar, by media type); its size and
    /// digest are verified as it streams, so reading it to the end fails if it is corrupt.
    pub fn open_layer(&self, i: usize) -> Result<Box<dyn std::io::Read + Send>> {
        let l = self
            .manifest
            .layers()
            .get(i)
            .ok_or_else(|| anyhow!("the image has no layer {i}"))?;
        let path = self.blob(l.digest().as_ref())?;
        let f = std::io::BufReader::with_capacity(
            1 << 20,
            crate::digest::VerifyingReader::new(
                std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?,
                l.digest().as_ref(),
                l.size(),
            )?,
        );
        let mt = l.media_type().to_string();
        Ok(if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
            Box::new(flate2::bufread::MultiGzDecoder::new(f))
        } else if mt.ends_with("+zstd") {
            Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
        } else if mt.ends_with(".tar") || mt.ends_with("diff.tar") {
            Box::new(f)
        } else {
            bail!("layer {} has unsupported media type {mt}", l.digest())
        })
    }
}

/// A file of an OCI layout.
fn read(p: PathBuf) -> Result<Vec<u8>> {
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

/// The first manifest an OCI layout's `index.json` names.
fn first_manifest(dir: &Path) -> Result<Descriptor> {
    let index: Index = serde_json::from_slice(&read(dir.join("index.json"))?)
        .with_context(|| format!("parsing {}/index.json", dir.display()))?;
    index
        .manifests
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{} holds no image", dir.display()))
}

/// The manifest digest and config labels of the single image in an OCI layout directory.
///
/// Parsed leniently on purpose (only the index, the config digest and the labels), so that
/// `imgmode images` lists layouts whose config oci-spec's strict types refuse (for example one
/// without `history`); [`OciImage::open`] is the full parse.
pub fn read_oci_layout(dir: &Path) -> Result<(String, BTreeMap<String, String>)> {
    let desc = first_manifest(dir)?;
    let manifest: Manifest = serde_json::from_slice(&read(blob_path(dir, &desc.digest)?)?)
        .with_context(|| format!("parsing manifest {}", desc.digest))?;
    let config: ImageConfig =
        serde_json::from_slice(&read(blob_path(dir, &manifest.config.digest)?)?)
            .with_context(|| format!("parsing image config {}", manifest.config.digest))?;
    let labels = config.config.and_then(|c| c.labels).unwrap_or_default();
    Ok((desc.digest.clone(), labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_resolve_into_the_store() {
        let td = tempfile::tempdir().unwrap();
        let store = Store::new(td.path());
        let err = store.resolve("imgmode-base").unwrap_err().to_string();
        assert!(err.contains("not found in the local store"), "{err}");
        assert_eq!(
            store.image_dir("seed:v1").unwrap(),
            td.path().join("images/seed/v1")
        );
        assert_eq!(
            store.image_dir("seed").unwrap(),
            td.path().join("images/seed/latest")
        );
        assert!(store.image_dir("../etc").is_err());
    }

    #[test]
    fn publish_replaces_atomically_and_lists() {
        let td = tempfile::tempdir().unwrap();
        let store = Store::new(td.path());
        for round in 0..2 {
            let st = store.staging().unwrap();
            write_fake_layout(st.path(), &format!("v{round}"));
            store.publish(st, "demo").unwrap();
        }
        let list = store.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "demo:latest");
        assert_eq!(list[0].labels["version"], "v1");
        // No staging or replaced directories are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(td.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert_eq!(
            store.resolve("demo").unwrap().to_string(),
            format!(
                "ostree-unverified-image:oci:{}",
                td.path().join("images/demo/latest").display()
            )
        );
    }

    fn write_fake_layout(dir: &Path, version: &str) {
        use sha2::Digest;
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = hex::encode(sha2::Sha256::digest(data));
            std::fs::write(blobs.join(&d), data).unwrap();
            format!("sha256:{d}")
        };
        let config =
            put(format!(r#"{{"config":{{"Labels":{{"version":"{version}"}}}}}}"#).as_bytes());
        let manifest = put(format!(r#"{{"config":{{"digest":"{config}"}}}}"#).as_bytes());
        std::fs::write(
            dir.join("index.json"),
            format!(r#"{{"manifests":[{{"digest":"{manifest}"}}]}}"#),
        )
        .unwrap();
    }
}
