//! `imgmode image unpack` (every layer of an image into a new directory) and the read-ahead
//! decompression thread.

use super::{unpack, Budget, Policy, Unpacked};
use anyhow::{anyhow, bail, Context, Result};
use cap_std::fs::Dir;
use std::path::{Path, PathBuf};

/// What `imgmode image unpack` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageUnpacked {
    pub image: String,
    pub manifest_digest: String,
    pub dir: PathBuf,
    pub layers: usize,
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    pub seconds: f64,
}

/// `imgmode image unpack`: the image's layers, in order, with whiteouts applied, into a
/// staging directory beside `dir` that becomes `dir` only when every layer unpacked and
/// verified (like `umoci unpack`'s rootfs). `dir` must not exist or be empty.
pub fn unpack_image(
    store: &crate::Store,
    image: &str,
    dir: &Path,
    auth: &crate::skopeo::RegistryAuth,
    max_bytes: Option<u64>,
    steps: &imgmode_support::progress::Steps,
) -> Result<ImageUnpacked> {
    let t0 = std::time::Instant::now();
    if let Ok(mut rd) = std::fs::read_dir(dir) {
        if rd.next().is_some() {
            bail!(
                "{} exists and is not empty: imgmode image unpack writes a new directory only \
                 (remove it or choose another)",
                dir.display()
            );
        }
    } else if dir.exists() {
        bail!("{} exists and is not a directory", dir.display());
    }
    let parent = imgmode_support::fs::output_parent(dir)?;
    steps.step(&format!("opening {image}"));
    let opened = crate::oci::open_image_with(store, image, auth, parent)?;
    let img = &opened.image;
    let layers = img.manifest.layers().len();
    let compressed: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
    let mut budget = Budget::free_space(parent, max_bytes)?;
    let staging = tempfile::Builder::new()
        .prefix(".imgmode-unpack-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    let root = Dir::open_ambient_dir(staging.path(), cap_std::ambient_authority())?;
    let policy = Policy::image_layer();
    let mut total = Unpacked::default();
    for i in 0..layers {
        let l = &img.manifest.layers()[i];
        steps.step(&format!(
            "layer {}/{layers} {} ({} bytes compressed of {compressed})",
            i + 1,
            l.digest(),
            l.size()
        ));
        let u = unpack(
            imgmode_support::io::read_ahead(img.open_layer_with_diff_id(i)?),
            &root,
            &policy,
            &mut budget,
        )
        .map_err(|e| {
            // a damaged blob is named as such even where the damage broke the tar stream first
            let blob = img.blob(l.digest().as_ref());
            match blob.and_then(|b| imgmode_support::io::hash_file(&b)) {
                Ok((d, n)) if d != l.digest().to_string() || n != l.size() => anyhow!(
                    "blob {} is corrupted or truncated: {n} bytes hashing to {d} ({e:#})",
                    l.digest()
                ),
                _ => e,
            }
            .context(format!(
                "unpacking layer {} ({}) of {image}",
                i + 1,
                l.digest()
            ))
        })?;
        total.entries += u.entries;
        total.bytes += u.bytes;
        total.whiteouts += u.whiteouts;
    }
    drop(root);
    // the staging directory was made 0700; the root filesystem's top is 0755
    std::fs::set_permissions(
        staging.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    if dir.exists() {
        std::fs::remove_dir(dir)
            .with_context(|| format!("replacing the empty {}", dir.display()))?;
    }
    std::fs::rename(staging.path(), dir)
        .with_context(|| format!("moving the unpacked image to {}", dir.display()))?;
    Ok(ImageUnpacked {
        image: image.to_string(),
        manifest_digest: img.manifest_digest.clone(),
        dir: dir.to_path_buf(),
        layers,
        entries: total.entries,
        bytes: total.bytes,
        whiteouts: total.whiteouts,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
