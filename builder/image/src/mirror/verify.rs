//! `imgmode payload verify`: a mirror directory checked without trusting anything in it. The
//! record is recomputed from the blobs (its ID from the images, the architectures from their
//! configs, each image's manifest count from its index) and must match; every blob is a regular
//! file inside the directory whose sha256 is its name; every link names a blob that is there.

use super::{
    architectures, blob_path, expected_links, parse_refs, payload_id, MirrorImage, Payload,
    PAYLOAD_RECORD, V2,
};
use crate::digest::sha256_hex;
use anyhow::{bail, ensure, Context, Result};
use imgmode_support::io::hash_file;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;

/// What [`verify`] checked.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub payload: Payload,
    pub blobs: usize,
    pub bytes: u64,
    pub links: usize,
}

/// Check a mirror directory (see the module's doc). Fails on the first problem, naming the
/// file and what to do.
pub fn verify(dir: &Path) -> Result<Verified> {
    let payload = Payload::read(dir)?;
    let v2 = dir.join(V2);
    for d in [dir.join("docker"), dir.join("docker/registry"), v2.clone()] {
        real_dir(&d)?;
    }
    let (blobs, bytes) = verify_blobs(dir, &v2)?;
    verify_record(&payload, &v2)?;
    let links = verify_links(&v2, &payload)?;
    Ok(Verified {
        payload,
        blobs,
        bytes,
        links,
    })
}

/// `path` is a directory itself, not a symlink to one elsewhere.
fn real_dir(path: &Path) -> Result<()> {
    let m = std::fs::symlink_metadata(path)
        .with_context(|| format!("{} is missing; the payload is incomplete", path.display()))?;
    ensure!(
        m.is_dir(),
        "{} is not a directory (a symlink or a file); a payload holds only its own files: copy it again from its source",
        path.display()
    );
    Ok(())
}

/// Every blob: a regular file (no symlink out of the payload) whose sha256 is its name.
fn verify_blobs(dir: &Path, v2: &Path) -> Result<(usize, u64)> {
    let blobs_dir = v2.join("blobs/sha256");
    real_dir(&v2.join("blobs"))?;
    real_dir(&blobs_dir).with_context(|| format!("{} has no blob store", dir.display()))?;
    let (mut blobs, mut bytes) = (0usize, 0u64);
    let mut prefixes: Vec<_> = std::fs::read_dir(&blobs_dir)
        .with_context(|| format!("reading {}", blobs_dir.display()))?
        .collect::<std::io::Result<_>>()?;
    prefixes.sort_by_key(|e| e.file_name());
    for p in prefixes {
        real_dir(&p.path())?;
        for e in std::fs::read_dir(p.path())? {
            let e = e?;
            real_dir(&e.path())?;
            let name = e.file_name().to_string_lossy().into_owned();
            let want = format!("sha256:{name}");
            sha256_hex(&want)
                .with_context(|| format!("{} is not a blob directory", e.path().display()))?;
            let data = e.path().join("data");
            let m = std::fs::symlink_metadata(&data)
                .with_context(|| format!("{} is missing", data.display()))?;
            ensure!(
                m.is_file(),
                "{} is not a regular file (a symlink, a device or a directory); a payload holds only its own files: copy it again from its source",
                data.display()
            );
            let (got, n) = hash_file(&data)?;
            ensure!(
                got == want,
                "{} is corrupted: its sha256 is {got}; the payload cannot be trusted (copy it again from its source)",
                data.display()
            );
            blobs += 1;
            bytes += n;
        }
    }
    Ok((blobs, bytes))
}

/// The repositories hold exactly the links the recorded images need (no other repository,
/// tag, link or file, none missing), each a regular file holding exactly its digest.
fn verify_links(v2: &Path, payload: &Payload) -> Result<usize> {
    let repos = v2.join("repositories");
    real_dir(&repos)?;
    let expected = expected_links(&payload.images, v2)?;
    let mut found = BTreeSet::new();
    let mut stack = vec![repos.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let path = e.path();
            let t = e.file_type()?;
            let rel = path.strip_prefix(&repos)?.to_path_buf();
            if t.is_dir() {
                stack.push(path);
                continue;
            }
            if t.is_symlink() || !t.is_file() {
                bail!(
                    "{} is a symlink or a special file; a payload holds only its own files: copy it again from its source",
                    path.display()
                );
            }
            let Some(want) = expected.get(&rel) else {
                bail!(
                    "{} is not part of any image {PAYLOAD_RECORD} lists (a repository, tag or file added by hand?); make the payload again with imgmode mirror",
                    path.display()
                );
            };
            let got = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            ensure!(
                &got == want,
                "{} holds {}, not {want}; the payload is damaged: copy it again from its source",
                path.display(),
                imgmode_support::validate::shown(&got)
            );
            found.insert(rel);
        }
    }
    if let Some(missing) = expected.keys().find(|k| !found.contains(*k)) {
        bail!(
            "{} is missing (a registry could not serve the image); the payload is incomplete: copy it again from its source",
            repos.join(missing).display()
        );
    }
    Ok(found.len())
}

/// The record against what the blobs say: each image linked under its repository, its manifest
/// count, the architectures and the ID (its tag's links are [`verify_links`]'s to check).
fn verify_record(payload: &Payload, v2: &Path) -> Result<()> {
    let repos = v2.join("repositories");
    let wrong = |what: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{PAYLOAD_RECORD} says {what}; the record was edited or the payload is damaged: copy it again from its source, or make it again with imgmode mirror"
        )
    };
    let mut arch = BTreeSet::new();
    for i in &payload.images {
        MirrorImage {
            source: i.source.clone(),
            repo: i.repo.clone(),
            tag: i.tag.clone(),
        }
        .check()
        .map_err(|e| wrong(format!("{e}")))?;
        let hex = sha256_hex(&i.digest).map_err(|e| wrong(format!("{e}")))?;
        let link = repos.join(format!("{}/_manifests/revisions/sha256/{hex}/link", i.repo));
        if !link.is_file() {
            return Err(wrong(format!(
                "it holds {}@{}, which the repositories do not link",
                i.repo, i.digest
            )));
        }
        let raw = std::fs::read(blob_path(v2, &i.digest)?)?;
        let manifests = 1 + parse_refs(&raw)?.manifests.len();
        if manifests != i.manifests {
            return Err(wrong(format!(
                "{} has {} manifests; it has {manifests}",
                i.name(),
                i.manifests
            )));
        }
        arch.extend(architectures(v2, &i.digest)?);
    }
    let arch: Vec<String> = arch.into_iter().collect();
    if arch != payload.architectures {
        return Err(wrong(format!(
            "the architectures are {:?}; the images' configs say {arch:?}",
            payload.architectures
        )));
    }
    let id = payload_id(&payload.images)?;
    if id != payload.id {
        return Err(wrong(format!(
            "the payload's ID is {}; its images make it {id}",
            payload.id
        )));
    }
    Ok(())
}
