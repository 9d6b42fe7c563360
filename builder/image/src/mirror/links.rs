//! A mirror directory's repository links: which links the recorded images need, writing
//! them (each by temporary name + rename) and removing the ones no image needs any more.

use super::{blob_path, parse_refs, Mirrored, Payload};
use crate::digest::sha256_hex;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository links of `images` (revisions of every manifest level, `_layers` of every
/// config and layer, the tag) under `v2`'s repositories; the manifests are read from the blob
/// store, so every blob must be in place first.
pub fn write_repository_links(v2: &Path, images: &[Mirrored]) -> Result<()> {
    write_links_under(&v2.join("repositories"), images, v2)
}

/// [`write_repository_links`] into another repositories directory (`repos`).
pub fn write_links_under(repos: &Path, images: &[Mirrored], v2: &Path) -> Result<()> {
    for (path, digest) in expected_links(images, v2)? {
        write_link(&repos.join(path), &digest)?;
    }
    Ok(())
}

/// Every repository link the images need, relative to the repositories directory, with the
/// digest it holds: a revision per manifest level, a `_layers` link per config and layer, and
/// the tag's `index` and `current` links. Manifests are read from the blob store under `v2`.
pub fn expected_links(images: &[Mirrored], v2: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    for img in images {
        let repo = PathBuf::from(&img.repo);
        let mut level = vec![img.digest.clone()];
        while let Some(d) = level.pop() {
            let raw = std::fs::read(blob_path(v2, &d)?)
                .with_context(|| format!("the blob store lacks manifest {d}"))?;
            let refs = parse_refs(&raw)?;
            out.insert(
                repo.join(format!(
                    "_manifests/revisions/sha256/{}/link",
                    sha256_hex(&d)?
                )),
                d.clone(),
            );
            for b in &refs.blobs {
                out.insert(
                    repo.join(format!("_layers/sha256/{}/link", sha256_hex(&b.digest)?)),
                    b.digest.clone(),
                );
            }
            level.extend(refs.manifests.iter().map(|m| m.digest.clone()));
        }
        if let Some(tag) = &img.tag {
            let t = repo.join("_manifests/tags").join(tag);
            out.insert(
                t.join(format!("index/sha256/{}/link", sha256_hex(&img.digest)?)),
                img.digest.clone(),
            );
            out.insert(t.join("current/link"), img.digest.clone());
        }
    }
    Ok(out)
}

/// Remove the repository links no recorded image needs (those of an image this run replaced
/// under its tag), so the directory holds exactly what its record says.
pub(super) fn prune_links(v2: &Path, payload: &Payload) -> Result<()> {
    let repos = v2.join("repositories");
    let expected = expected_links(&payload.images, v2)?;
    let mut dirs = vec![];
    let mut stack = vec![repos.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path.clone());
                dirs.push(path);
            } else if !expected.contains_key(path.strip_prefix(&repos)?) {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing the stale link {}", path.display()))?;
            }
        }
    }
    // deepest first: a directory left empty goes too
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
    Ok(())
}

/// Write `text` at `path` through a temporary name.
fn write_link(path: &Path, text: &str) -> Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    imgmode_support::fs::write_atomic(path, text.as_bytes(), 0o644)
}
