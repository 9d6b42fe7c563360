//! Reading images for lints: any reference is brought to an OCI layout (the local store and
//! `oci:` are read in place; other transports are copied with skopeo into a temporary layout)
//! and its layers replayed into a [`Tree`].

use crate::lint::{lint, LintReport};
use crate::tree::Tree;
use anyhow::{Context, Result};
use imgmode_builder::cmd::Run;
use imgmode_builder::store::OciImage;
use imgmode_builder::Store;
use ostree_ext::container::Transport;
use std::path::PathBuf;

/// An image opened as an OCI layout; a temporary copy is removed on drop.
pub struct OpenedImage {
    pub image: OciImage,
    _tmp: Option<tempfile::TempDir>,
}

/// Open any image argument (local name or transport reference) as an OCI layout.
pub fn open(store: &Store, arg: &str) -> Result<OpenedImage> {
    let r = store.resolve(arg)?;
    if r.imgref.transport == Transport::OciDir {
        // oci:PATH[:TAG] -- a layout directory holding one image
        let path = PathBuf::from(&r.imgref.name);
        let dir = if path.join("index.json").is_file() {
            path
        } else {
            let (p, _) = r
                .imgref
                .name
                .rsplit_once(':')
                .unwrap_or((&r.imgref.name, ""));
            PathBuf::from(p)
        };
        return Ok(OpenedImage {
            image: OciImage::open(&dir)?,
            _tmp: None,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix("imgmode-image-")
        .tempdir_in(std::env::temp_dir())?;
    let dest = tmp.path().join("oci");
    Run::new("skopeo")
        .args(["copy", "--quiet", "--dest-oci-accept-uncompressed-layers"])
        .arg(r.imgref.to_string())
        .arg(format!("oci:{}", dest.display()))
        .output()
        .with_context(|| format!("fetching {arg}"))?;
    Ok(OpenedImage {
        image: OciImage::open(&dest)?,
        _tmp: Some(tmp),
    })
}

/// The merged tree of an image: every layer replayed in order.
pub fn tree_of(image: &OciImage) -> Result<Tree> {
    let mut t = Tree::default();
    for (i, l) in image.manifest.layers().iter().enumerate() {
        t.apply_layer(image.open_layer(i)?)
            .with_context(|| format!("reading layer {} ({})", i, l.digest()))?;
    }
    Ok(t)
}

/// `imgmode container lint IMAGE`.
pub fn lint_image(store: &Store, arg: &str) -> Result<LintReport> {
    let opened = open(store, arg)?;
    let tree = tree_of(&opened.image)?;
    Ok(lint(arg, &tree, &opened.image.labels()))
}
