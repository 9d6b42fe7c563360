//! Reading images for lints: any reference is brought to an OCI layout (the local store and
//! `oci:` are read in place; other transports are copied with skopeo into a temporary layout)
//! and its layers replayed into a [`Tree`].

use crate::lint::{lint, LintReport};
use crate::tree::Tree;
use anyhow::{Context, Result};
use imgmode_image::store::OciImage;
use imgmode_image::Store;

pub use imgmode_image::oci::{open_image as open, OpenedImage};

/// The merged tree of an image: every layer replayed in order.
pub fn tree_of(image: &OciImage) -> Result<Tree> {
    let mut t = Tree::default();
    for (i, l) in image.manifest.layers().iter().enumerate() {
        t.apply_layer(image.open_layer_with_diff_id(i)?)
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
