//! Writing and opening OCI image layouts: canonical JSON (equal content, equal digest), blobs
//! named by their SHA-256 while they are written, and any image argument opened as a layout.

use crate::store::OciImage;
use crate::Store;
use anyhow::{bail, Context, Result};
use ostree_ext::container::Transport;
use serde::Serialize;
use sha2::Digest;
use std::path::{Path, PathBuf};

/// Write `data` as a blob of the layout at `dir`; its digest.
pub fn put_blob(dir: &Path, data: &[u8]) -> Result<String> {
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(dir.join("blobs/sha256").join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}

/// The one way a streamed blob (a layer) goes into an OCI layout: written to a temporary file
/// in `blobs/sha256`, hashed and counted on the way, and renamed to its digest by
/// [`BlobWriter::finish`]; dropped unfinished, it leaves nothing.
pub struct BlobWriter {
    blobs: PathBuf,
    tmp: tempfile::NamedTempFile,
    w: HashingWriter<std::io::BufWriter<std::fs::File>>,
}

impl BlobWriter {
    /// A blob of the layout at `layout` (its `blobs/sha256` must exist).
    pub fn new(layout: &Path) -> Result<Self> {
        let blobs = layout.join("blobs/sha256");
        let tmp = tempfile::Builder::new()
            .prefix(".blob-")
            .tempfile_in(&blobs)
            .with_context(|| format!("creating a blob in {}", blobs.display()))?;
        let w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp.reopen()?));
        Ok(Self { blobs, tmp, w })
    }

    /// The blob in place under its digest: (`sha256:…`, size).
    pub fn finish(self) -> Result<(String, u64)> {
        let (hex, size) = self.w.finish()?;
        // blobs are readable by all, as the other files of a layout (tempfile makes 0600)
        use std::os::unix::fs::PermissionsExt;
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        self.tmp
            .persist(self.blobs.join(&hex))
            .with_context(|| format!("writing blob sha256:{hex}"))?;
        Ok((format!("sha256:{hex}"), size))
    }
}

impl std::io::Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// JSON with every object's keys sorted, so that equal content always has the same digest
/// (oci-spec keeps annotations in a HashMap).
pub fn canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    fn sort(v: serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut entries: Vec<(String, serde_json::Value)> = m.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.into_iter().map(sort).collect())
            }
            other => other,
        }
    }
    Ok(serde_json::to_vec(&sort(serde_json::to_value(v)?))?)
}

/// An image opened as an OCI layout; a temporary copy is removed on drop.
pub struct OpenedImage {
    pub image: OciImage,
    _tmp: Option<tempfile::TempDir>,
}

use crate::skopeo::RegistryAuth;
use imgmode_support::io::HashingWriter;

/// Open any image argument (local name or transport reference) as an OCI layout.
pub fn open_image(store: &Store, arg: &str) -> Result<OpenedImage> {
    open_image_with(
        store,
        arg,
        &RegistryAuth::default(),
        &tempfile::env::temp_dir(),
    )
}

/// [`open_image`] with registry credentials; a copy (any transport but `oci:`) is made in a
/// temporary directory under `tmp_parent`.
pub fn open_image_with(
    store: &Store,
    arg: &str,
    auth: &RegistryAuth,
    tmp_parent: &Path,
) -> Result<OpenedImage> {
    let r = store.resolve(arg)?;
    if let Some(image) = open_layout(arg, &r.imgref)? {
        return Ok(OpenedImage { image, _tmp: None });
    }
    preflight_fetch(&r.imgref, arg, auth, tmp_parent)?;
    let tmp = tempfile::Builder::new()
        .prefix("imgmode-image-")
        .tempdir_in(tmp_parent)
        .with_context(|| format!("creating a temporary directory in {}", tmp_parent.display()))?;
    let dest = tmp.path().join("oci");
    crate::skopeo::Copy::new(r.imgref.to_string(), format!("oci:{}", dest.display()))
        .src_auth(auth)
        .accept_uncompressed_layers()
        .run()
        .with_context(|| format!("fetching {arg}"))?;
    Ok(OpenedImage {
        image: OciImage::open(&dest)?,
        _tmp: Some(tmp),
    })
}

/// The image an `oci:PATH[:TAG]` reference names, read in place (exactly the image tagged TAG,
/// or the layout's only image); `None` for any other transport.
pub fn open_layout(
    arg: &str,
    imgref: &ostree_ext::container::ImageReference,
) -> Result<Option<OciImage>> {
    if imgref.transport != Transport::OciDir {
        return Ok(None);
    }
    let (dir, tag) = crate::imgref::oci_dir_and_tag(&imgref.name);
    if !dir.exists() {
        bail!("{arg}: {} not found", dir.display());
    }
    if !dir.join("index.json").is_file() {
        bail!(
            "{arg}: {} is not an OCI image layout (no index.json); give the directory skopeo or podman wrote with oci:DIR",
            dir.display()
        );
    }
    Ok(Some(OciImage::open_tagged(&dir, tag)?))
}

/// For an `oci:` reference to an existing layout: it names exactly one image (its tag's, or
/// the layout's only one), so a copy never takes another; other references pass unchecked.
pub fn check_oci_ref(r: &ostree_ext::container::ImageReference) -> Result<()> {
    if r.transport == Transport::OciDir {
        let (dir, tag) = crate::imgref::oci_dir_and_tag(&r.name);
        if dir.join("index.json").is_file() {
            OciImage::open_tagged(&dir, tag)?;
        }
    }
    Ok(())
}

/// Bytes an image's manifest says a copy of it takes: config and layers (compressed, as
/// they are fetched); a manifest list's instance for this machine's architecture.
pub fn manifest_bytes(raw: &[u8]) -> Result<ManifestSize> {
    let v: serde_json::Value =
        serde_json::from_slice(raw).context("the image's manifest is not JSON")?;
    let size = |d: &serde_json::Value| -> Result<u64> {
        d["size"].as_u64().with_context(|| {
            format!("the image's manifest has a descriptor without a valid size: {d}")
        })
    };
    if let Some(list) = v["manifests"].as_array() {
        let arch = imgmode_support::host::host_arch();
        let d = list
            .iter()
            .find(|d| d["platform"]["architecture"] == arch && d["platform"]["os"] == "linux")
            .with_context(|| format!("the manifest list has no linux/{arch} image"))?;
        let digest = d["digest"]
            .as_str()
            .context("a manifest list entry without a digest")?;
        crate::digest::hex_of(digest)?;
        return Ok(ManifestSize::List(digest.to_string()));
    }
    let mut total = size(&v["config"])?;
    for l in v["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        total = total
            .checked_add(size(l)?)
            .context("the image's layer sizes add up to more than 2^64 bytes")?;
    }
    Ok(ManifestSize::Bytes(total))
}

#[derive(Debug)]
pub enum ManifestSize {
    Bytes(u64),
    /// A manifest list: the instance to read next.
    List(String),
}

/// Before fetching from a registry: the manifest's sizes against the free space where the
/// copy goes, so an image too big (or a manifest claiming absurd layer sizes) fails before a
/// byte is fetched.
fn preflight_fetch(
    imgref: &ostree_ext::container::ImageReference,
    arg: &str,
    auth: &RegistryAuth,
    tmp_parent: &Path,
) -> Result<()> {
    if imgref.transport != Transport::Registry {
        return Ok(());
    }
    let inspect = |r: &str| -> Result<Vec<u8>> {
        crate::skopeo::inspect_raw(r, auth)
            .with_context(|| format!("{arg}: the image cannot be read"))
    };
    let mut raw = inspect(&imgref.to_string())?;
    if let ManifestSize::List(d) = manifest_bytes(&raw)? {
        let name = &imgref.name;
        let repo = match name.rsplit_once('@') {
            Some((r, _)) => r,
            None => match name.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => r,
                _ => name,
            },
        };
        raw = inspect(&format!("docker://{repo}@{d}"))?;
    }
    let ManifestSize::Bytes(need) = manifest_bytes(&raw)? else {
        bail!("{arg}: a manifest list inside a manifest list");
    };
    fits(
        arg,
        need,
        tmp_parent,
        imgmode_support::fs::free_bytes(tmp_parent)?,
    )
}

/// Does a copy of `need` bytes (plus 2 % and 16 MiB) fit in `free` bytes at `dir`?
fn fits(arg: &str, need: u64, dir: &Path, free: u64) -> Result<()> {
    if need.saturating_add(need / 50).saturating_add(16 << 20) > free {
        bail!(
            "fetching {arg} needs {} (its manifest's config and layers) but {} has {} free: free \
             space there, or check the image (a manifest claiming absurd layer sizes is refused \
             here, before anything is fetched)",
            imgmode_support::size::human_size(need),
            dir.display(),
            imgmode_support::size::human_size(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_blob_is_named_by_its_digest_and_an_unfinished_one_leaves_nothing() {
        let td = tempfile::tempdir().unwrap();
        let blobs = td.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let mut w = BlobWriter::new(td.path()).unwrap();
        w.write_all(b"abc").unwrap();
        let (digest, size) = w.finish().unwrap();
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!((digest, size), (format!("sha256:{hex}"), 3));
        let meta = std::fs::metadata(blobs.join(hex)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let mut w = BlobWriter::new(td.path()).unwrap();
        w.write_all(b"partial").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 1);
    }
    use std::collections::HashMap;

    /// A manifest's claimed sizes decide before any fetch: an absurd layer size (or sizes
    /// that overflow) is refused against the free space, a list names this machine's image.
    #[test]
    fn manifest_sizes_are_checked_against_free_space_before_fetching() {
        let m = |layers: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{}","size":100}},"layers":[{layers}]}}"#,
                "a".repeat(64)
            )
        };
        let l = |size: &str| format!(r#"{{"digest":"sha256:{}","size":{size}}}"#, "b".repeat(64));
        let ManifestSize::Bytes(n) =
            manifest_bytes(m(&[l("1000"), l("24")].join(",")).as_bytes()).unwrap()
        else {
            panic!()
        };
        assert_eq!(n, 1124);
        let absurd = m(&l("9223372036854775807"));
        let ManifestSize::Bytes(big) = manifest_bytes(absurd.as_bytes()).unwrap() else {
            panic!()
        };
        let e = fits("quay.io/x/y:1", big, Path::new("/var/tmp"), 50 << 30).unwrap_err();
        assert!(
            e.to_string().contains("fetching quay.io/x/y:1 needs")
                && e.to_string().contains("absurd"),
            "{e}"
        );
        fits("quay.io/x/y:1", n, Path::new("/var/tmp"), 50 << 30).unwrap();
        let overflow = m(&[l("18446744073709551615"), l("2")].join(","));
        assert!(manifest_bytes(overflow.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("more than 2^64"));
        assert!(manifest_bytes(m(&l("-5")).as_bytes())
            .unwrap_err()
            .to_string()
            .contains("without a valid size"));
        let list = format!(
            r#"{{"manifests":[{{"digest":"sha256:{}","platform":{{"architecture":"arm64","os":"linux"}}}},{{"digest":"sha256:{}","platform":{{"architecture":"{}","os":"linux"}}}}]}}"#,
            "c".repeat(64),
            "d".repeat(64),
            imgmode_support::host::host_arch()
        );
        match manifest_bytes(list.as_bytes()).unwrap() {
            ManifestSize::List(d) => assert_eq!(d, format!("sha256:{}", "d".repeat(64))),
            ManifestSize::Bytes(_) => panic!("a list read as an image"),
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let m: HashMap<&str, u32> = (0..20)
            .map(|i| (["a", "b", "c", "d", "e"][i % 5], i as u32))
            .collect();
        let a = canonical_json(&m).unwrap();
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"a":15,"b":16,"c":17,"d":18,"e":19}"#
        );
    }
}
