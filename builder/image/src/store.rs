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
use anyhow::{anyhow, bail, ensure, Context, Result};
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

/// What [`Store::list`] found.
#[derive(Debug, Default)]
pub struct Listing {
    pub images: Vec<StoredImage>,
    pub unreadable: Vec<Unreadable>,
}

/// A store entry that cannot be read (a damaged or hand-edited layout).
#[derive(Debug)]
pub struct Unreadable {
    pub name: String,
    pub dir: PathBuf,
    pub error: String,
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

    /// Every image in the store, sorted by name; an entry that cannot be read is in
    /// [`Listing::unreadable`] instead, so one corrupt image hides none of the others.
    pub fn list(&self) -> Result<Listing> {
        let mut out = Listing::default();
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
                let name = format!("{rname}:{tname}");
                match self.inspect(&name) {
                    Ok(i) => out.images.push(i),
                    Err(e) => out.unreadable.push(Unreadable {
                        name,
                        dir: tag.path(),
                        error: format!("{e:#}"),
                    }),
                }
            }
        }
        out.images.sort_by(|a, b| a.name.cmp(&b.name));
        out.unreadable.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}
#[derive(Deserialize, Clone)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}
#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// The annotation an OCI layout's index uses for a tag (`oci:DIR:TAG`).
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

impl Descriptor {
    fn tag(&self) -> Option<&str> {
        self.annotations.as_ref()?.get(REF_NAME).map(String::as_str)
    }
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

pub(crate) fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
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
    /// Whether the config holds `history` (optional in the OCI spec, read as empty when absent;
    /// ostree-ext's importer requires it).
    pub has_history: bool,
}

impl OciImage {
    /// Read the only image of the OCI layout at `dir` (see [`OciImage::open_tagged`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_tagged(dir, None)
    }

    /// Read the image tagged `tag` in the OCI layout at `dir` (`oci:DIR:TAG`), or, with no tag,
    /// its only image. A tag the index does not hold, or several images and no tag, is refused
    /// naming the tags there are; a multi-architecture index yields this machine's image.
    pub fn open_tagged(dir: &Path, tag: Option<&str>) -> Result<Self> {
        let desc = select_manifest(dir, tag)?;
        let verified = |digest: &str, size: Option<u64>, what: &str| -> Result<Vec<u8>> {
            let raw = read(blob_path(dir, digest)?)?;
            crate::digest::verify_bytes(what, &raw, digest, size)
                .with_context(|| format!("reading the image in {}", dir.display()))?;
            Ok(raw)
        };
        check_layout_file(dir)?;
        let manifest: oci_spec::image::ImageManifest =
            serde_json::from_slice(&verified(&desc.digest, desc.size, "manifest")?)
                .with_context(|| format!("parsing manifest {}", desc.digest))?;
        ensure!(
            manifest.schema_version() == 2,
            "manifest {} in {} has schemaVersion {}; OCI and Docker v2 manifests have 2",
            desc.digest,
            dir.display(),
            manifest.schema_version()
        );
        let cd = manifest.config();
        let (config, has_history) = parse_config(
            &verified(cd.digest().as_ref(), Some(cd.size()), "image config")?,
            cd.digest().as_ref(),
        )?;
        let (layers, diff_ids) = (manifest.layers().len(), config.rootfs().diff_ids().len());
        ensure!(
            layers == diff_ids,
            "the image in {} has {layers} layer(s) but its config lists {diff_ids} in rootfs.diff_ids; the image is inconsistent: build or copy it again",
            dir.display()
        );
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest_digest: desc.digest.clone(),
            manifest,
            config,
            has_history,
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

    /// The descriptor of layer `i`.
    fn layer(&self, i: usize) -> Result<&oci_spec::image::Descriptor> {
        self.manifest
            .layers()
            .get(i)
            .ok_or_else(|| anyhow!("the image has no layer {i}"))
    }

    /// [`OciImage::open_layer`], and the uncompressed content checked against the config's
    /// `rootfs.diff_ids[i]` as it streams (what `image unpack` and `container lint` read: an
    /// image whose config describes other layers than it has is refused). The seed's layer is
    /// read with `open_layer` alone: its blob digest is pinned by the manifest already, and a
    /// second hash of gigabytes would slow every install.
    pub fn open_layer_with_diff_id(&self, i: usize) -> Result<Box<dyn std::io::Read + Send>> {
        let l = self.layer(i)?;
        let diff_id = self
            .config
            .rootfs()
            .diff_ids()
            .get(i)
            .ok_or_else(|| {
                anyhow!("the image config's rootfs.diff_ids has no entry for layer {i}")
            })?
            .clone();
        if is_uncompressed(l.media_type().as_ref()) {
            // uncompressed: the diff ID is the blob's digest, which open_layer verifies
            ensure!(
                diff_id == l.digest().as_ref(),
                "layer {i} is uncompressed with digest {}, but the image config's rootfs.diff_ids says {diff_id}; the image is inconsistent: build or copy it again",
                l.digest()
            );
            return self.open_layer(i);
        }
        Ok(Box::new(crate::digest::VerifyingReader::diff_id(
            self.open_layer(i)?,
            &diff_id,
        )?))
    }

    /// Open layer `i` decompressed (gzip, zstd or plain tar, by media type); its size and
    /// digest are verified as it streams, so reading it to the end fails if it is corrupt.
    pub fn open_layer(&self, i: usize) -> Result<Box<dyn std::io::Read + Send>> {
        let (raw, mt) = self.open_raw_layer(i)?;
        decompressing(&mt, std::io::BufReader::with_capacity(1 << 20, raw))
    }

    /// Layer `i`'s blob as it is stored (compressed), its size and digest verified as it
    /// streams, and its media type.
    pub fn open_raw_layer(&self, i: usize) -> Result<(Box<dyn std::io::Read + Send>, String)> {
        let l = self.layer(i)?;
        let path = self.blob(l.digest().as_ref())?;
        let raw = crate::digest::VerifyingReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
            l.digest().as_ref(),
            l.size(),
        )?;
        Ok((Box::new(raw), l.media_type().to_string()))
    }
}

/// A file of an OCI layout.
fn read(p: PathBuf) -> Result<Vec<u8>> {
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

/// A layer's blob `f` decompressed as its media type `mt` says (gzip, zstd or plain tar).
pub(crate) fn decompressing(
    mt: &str,
    f: impl std::io::BufRead + Send + 'static,
) -> Result<Box<dyn std::io::Read + Send>> {
    Ok(if mt.ends_with("+gzip") || mt.ends_with(".gzip") {
        Box::new(flate2::bufread::MultiGzDecoder::new(f))
    } else if mt.ends_with("+zstd") {
        Box::new(zstd::stream::read::Decoder::with_buffer(f)?)
    } else if is_uncompressed(mt) {
        Box::new(f)
    } else {
        bail!("a layer has the unsupported media type {mt}")
    })
}

/// A layer media type of a plain tar (OCI `…tar`, Docker `…diff.tar`).
fn is_uncompressed(media_type: &str) -> bool {
    media_type.ends_with(".tar") || media_type.ends_with("diff.tar")
}

/// The layout's `oci-layout` file: present, with an `imageLayoutVersion` of 1.x.
fn check_layout_file(dir: &Path) -> Result<()> {
    let p = dir.join("oci-layout");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).with_context(|| {
        format!(
            "{} has no oci-layout file: not an OCI image layout (write it with skopeo, podman or buildah)",
            dir.display()
        )
    })?)
    .with_context(|| format!("{} is not JSON", p.display()))?;
    let version = v["imageLayoutVersion"].as_str().unwrap_or_default();
    ensure!(
        version.starts_with("1."),
        "{} says imageLayoutVersion {}; imgmode reads layouts of version 1.x",
        p.display(),
        imgmode_support::validate::shown(version)
    );
    Ok(())
}

/// An image config as the OCI image spec allows it: `history` is optional there (oci-spec's
/// type requires it, so an absent one reads as empty); `rootfs` is required and refused by name.
/// The config, and whether it held `history`.
fn parse_config(raw: &[u8], digest: &str) -> Result<(oci_spec::image::ImageConfiguration, bool)> {
    let mut v: serde_json::Value = serde_json::from_slice(raw)
        .with_context(|| format!("image config {digest} is not JSON"))?;
    let obj = v
        .as_object_mut()
        .with_context(|| format!("image config {digest} is not a JSON object"))?;
    if !obj.contains_key("rootfs") {
        bail!("image config {digest} has no \"rootfs\", which the OCI image spec requires; rebuild the image with a standard tool (podman, buildah, skopeo)");
    }
    let has_history = !obj.get("history").is_none_or(serde_json::Value::is_null);
    if !has_history {
        obj.insert("history".into(), serde_json::Value::Array(Vec::new()));
    }
    let config =
        serde_json::from_value(v).with_context(|| format!("parsing image config {digest}"))?;
    Ok((config, has_history))
}

/// The image of an OCI layout that `tag` names (its `org.opencontainers.image.ref.name`), or the
/// only one when no tag is given; an image index entry resolves to this machine's architecture.
fn select_manifest(dir: &Path, tag: Option<&str>) -> Result<Descriptor> {
    let index: Index = serde_json::from_slice(&read(dir.join("index.json"))?)
        .with_context(|| format!("parsing {}/index.json", dir.display()))?;
    let tags = || {
        let t: Vec<&str> = index.manifests.iter().filter_map(Descriptor::tag).collect();
        if t.is_empty() {
            "it has no tagged images".to_string()
        } else {
            format!("its tags: {}", t.join(", "))
        }
    };
    let shown = imgmode_support::validate::shown;
    let mut chosen: Vec<&Descriptor> = match tag {
        Some(t) => index
            .manifests
            .iter()
            .filter(|d| d.tag() == Some(t))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    chosen.dedup_by(|a, b| a.digest == b.digest);
    let desc = match (chosen.as_slice(), tag) {
        ([one], _) => (*one).clone(),
        ([], None) => bail!("{} holds no image", dir.display()),
        ([], Some(t)) => bail!(
            "{} has no image tagged {}; {}",
            dir.display(),
            shown(t),
            tags()
        ),
        (_, Some(t)) => bail!(
            "{} has {} different images tagged {}; keep one of them",
            dir.display(),
            chosen.len(),
            shown(t)
        ),
        (_, None) => bail!(
            "{} holds {} images and no tag was given; name one as oci:{}:TAG ({})",
            dir.display(),
            chosen.len(),
            dir.display(),
            tags()
        ),
    };
    if desc.media_type.as_deref() != Some(INDEX_MEDIA_TYPE) {
        return Ok(desc);
    }
    // a multi-architecture image: this machine's entry of the nested index
    let nested: Index = serde_json::from_slice(&read(blob_path(dir, &desc.digest)?)?)
        .with_context(|| format!("parsing image index {}", desc.digest))?;
    let arch = imgmode_support::host::host_arch();
    let found: Vec<String> = nested
        .manifests
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    nested
        .manifests
        .into_iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .with_context(|| {
            format!(
                "the image index {} in {} has no linux/{arch} image (it has: {})",
                desc.digest,
                dir.display(),
                found.join(", ")
            )
        })
}

/// The manifest digest and config labels of the single image in an OCI layout directory.
///
/// Parsed leniently on purpose (only the index, the config digest and the labels), so that
/// `imgmode images` lists layouts whose config oci-spec's strict types refuse (for example one
/// without `history`); [`OciImage::open`] is the full parse.
pub fn read_oci_layout(dir: &Path) -> Result<(String, BTreeMap<String, String>)> {
    let desc = select_manifest(dir, None)?;
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
        let list = store.list().unwrap().images;
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

    /// A layout with one image per (tag, config JSON); an empty tag is an untagged entry.
    fn layout_of(dir: &Path, images: &[(&str, &str)]) -> Vec<String> {
        use sha2::Digest;
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |data: &[u8]| {
            let d = hex::encode(sha2::Sha256::digest(data));
            std::fs::write(blobs.join(&d), data).unwrap();
            (format!("sha256:{d}"), data.len())
        };
        let mut entries = Vec::new();
        let mut digests = Vec::new();
        for (tag, config) in images {
            let (c, cn) = put(config.as_bytes());
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{cn}}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{c}","size":{cn}}},"annotations":{{"a":"b"}}}}"#
            );
            let (m, mn) = put(m.as_bytes());
            let ann = if tag.is_empty() {
                String::new()
            } else {
                format!(r#","annotations":{{"{REF_NAME}":"{tag}"}}"#)
            };
            entries.push(format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{m}","size":{mn}{ann}}}"#
            ));
            digests.push(m);
        }
        std::fs::write(
            dir.join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
                entries.join(",")
            ),
        )
        .unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        digests
    }

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Labels":{"v":"TAG"}},"rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn a_tag_selects_exactly_its_image_or_fails() {
        let td = tempfile::tempdir().unwrap();
        let one = CONFIG.replace("TAG", "one");
        let two = CONFIG.replace("TAG", "two");
        let d = layout_of(td.path(), &[("one", &one), ("two", &two)]);
        let img = OciImage::open_tagged(td.path(), Some("two")).unwrap();
        assert_eq!(img.manifest_digest, d[1]);
        assert_eq!(img.labels()["v"], "two");
        let err = OciImage::open_tagged(td.path(), Some("three"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has no image tagged \"three\"; its tags: one, two"),
            "{err}"
        );
        let err = format!("{:#}", OciImage::open(td.path()).unwrap_err());
        assert!(
            err.contains("holds 2 images and no tag was given; name one as oci:"),
            "{err}"
        );
        assert!(read_oci_layout(td.path()).is_err());
    }

    #[test]
    fn configs_without_history_read_and_without_rootfs_are_named() {
        let td = tempfile::tempdir().unwrap();
        // no history, empty layers, a subject and annotations in the manifest: all allowed
        layout_of(td.path(), &[("", CONFIG)]);
        let img = OciImage::open(td.path()).unwrap();
        assert!(img.config.history().is_empty());
        assert!(!img.has_history);
        assert!(img.manifest.layers().is_empty());

        let td = tempfile::tempdir().unwrap();
        layout_of(
            td.path(),
            &[("", r#"{"architecture":"amd64","os":"linux"}"#)],
        );
        let err = format!("{:#}", OciImage::open(td.path()).unwrap_err());
        assert!(err.contains("has no \"rootfs\""), "{err}");
    }

    #[test]
    fn an_image_index_yields_this_machines_image() {
        use sha2::Digest;
        let td = tempfile::tempdir().unwrap();
        let arch = imgmode_support::host::host_arch();
        let d = layout_of(td.path(), &[("", CONFIG), ("", CONFIG)]);
        let nested = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"s390x"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"{arch}"}}}}]}}"#,
            d[0], d[1]
        );
        let hex = hex::encode(sha2::Sha256::digest(nested.as_bytes()));
        std::fs::write(td.path().join("blobs/sha256").join(&hex), &nested).unwrap();
        std::fs::write(
            td.path().join("index.json"),
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{INDEX_MEDIA_TYPE}","digest":"sha256:{hex}","size":{},"annotations":{{"{REF_NAME}":"multi"}}}}]}}"#,
                nested.len()
            ),
        )
        .unwrap();
        let desc = select_manifest(td.path(), Some("multi")).unwrap();
        assert_eq!(desc.digest, d[1]);
    }
}
