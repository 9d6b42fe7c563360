//! `imgmode mirror`: images into the distribution (registry v2) filesystem storage layout, so
//! a stock registry (`docker-registry`, `registry`) configured with that directory serves them.
//!
//! ```text
//! DIR/docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data
//! DIR/docker/registry/v2/repositories/<repo>/_manifests/revisions/sha256/<hex>/link
//! DIR/docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link
//! DIR/docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link
//! DIR/docker/registry/v2/repositories/<repo>/_layers/sha256/<hex>/link
//! ```
//!
//! Steps: every source's manifest is read first (skopeo, raw: manifest lists are kept) and the
//! blobs the directory does not hold yet are summed against its free space, before anything
//! is written. Then skopeo copies each image (`--all --preserve-digests`) into a staging OCI
//! layout inside DIR, which skips blobs it already has, so an interrupted run resumes. Every
//! blob is then hashed and its size and digest checked against the manifests that name it,
//! and hard-linked into the blob store (existing blobs are checked too); the repository links
//! are written last, each by temporary name + rename, so a registry never sees a link to a
//! missing or unverified blob. The staging layout is removed when everything is in place.

use crate::digest::sha256_hex;
use crate::skopeo::RegistryAuth;
use anyhow::{bail, ensure, Context, Result};
use imgmode_support::cmd::require_tools;
use imgmode_support::io::hash_file;
use imgmode_support::progress::Steps;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

mod links;
mod verify;
use links::prune_links;
pub use links::{expected_links, write_links_under, write_repository_links};
pub use verify::{verify, Verified};

/// Where the layout starts inside the directory (the registry's `rootdirectory`).
pub const V2: &str = "docker/registry/v2";
const STAGING: &str = ".imgmode-mirror-staging";
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One image to mirror: where from, and the repository (and tag) it gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorImage {
    /// A transport reference (`docker://...`, `oci:...`, ...).
    pub source: String,
    pub repo: String,
    /// No tag: the image is reachable by digest only.
    pub tag: Option<String>,
}

impl MirrorImage {
    /// `REF` (a registry reference: `quay.io/org/img:tag`, `docker://...`, `...@sha256:...`;
    /// the repository is its path without the registry) or `REF=REPO[:TAG]` for any transport.
    pub fn parse(arg: &str) -> Result<Self> {
        ensure!(
            !arg.is_empty()
                && !arg.contains(char::is_whitespace)
                && !arg.contains(char::is_control),
            "{} is not an image reference: it is empty or holds spaces or control characters",
            imgmode_support::validate::shown(arg)
        );
        if let Some(src) = arg.strip_suffix('=') {
            bail!("{arg}: nothing follows '='; write {src}=REPO[:TAG]");
        }
        if let Some((src, name)) = split_target(arg) {
            let src = if src.contains("://") || crate::imgref::parse(src).is_ok() {
                crate::imgref::parse(src)?;
                src.to_string()
            } else {
                // a registry reference without its transport
                let r = format!("docker://{src}");
                crate::imgref::parse(&r).with_context(|| {
                    format!("{src} is neither a transport reference nor a registry reference")
                })?;
                r
            };
            let (repo, tag) = match name.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
                _ => (name.to_string(), None),
            };
            let img = Self {
                source: src,
                repo,
                tag,
            };
            img.check()?;
            return Ok(img);
        }
        let rest = arg.strip_prefix("docker://").unwrap_or(arg);
        if arg.contains(':') && !arg.starts_with("docker://") && !rest.contains('/') {
            bail!("{arg}: only registry references name their repository; write {arg}=REPO[:TAG]");
        }
        if let Some(t) = [
            "oci:",
            "oci-archive:",
            "containers-storage:",
            "dir:",
            "docker-archive:",
        ]
        .iter()
        .find(|t| arg.starts_with(*t))
        {
            bail!("{arg}: a {t} reference names no repository; write {arg}=REPO[:TAG]");
        }
        let (host, path) = rest
            .split_once('/')
            .with_context(|| format!("{arg}: not a registry reference (REGISTRY/REPO[:TAG])"))?;
        ensure!(
            host.contains('.') || host.contains(':') || host == "localhost",
            "{arg}: {host:?} is not a registry host; write the full reference (e.g. quay.io/{rest})"
        );
        let (path, digest) = match path.split_once('@') {
            Some((p, d)) => (p, Some(d)),
            None => (path, None),
        };
        let (repo, tag) = match (path.rsplit_once(':'), digest) {
            (Some((r, t)), _) => (r.to_string(), Some(t.to_string())),
            (None, Some(_)) => (path.to_string(), None),
            (None, None) => (path.to_string(), Some("latest".to_string())),
        };
        if let Some(d) = digest {
            sha256_hex(d)?;
        }
        let img = Self {
            source: format!("docker://{rest}"),
            repo,
            tag,
        };
        img.check()?;
        Ok(img)
    }

    pub(crate) fn check(&self) -> Result<()> {
        let ok_component = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        ensure!(
            self.repo.split('/').all(ok_component),
            "{}: repository name {:?} is not valid (lowercase letters, digits, '.', '_', '-', separated by '/')",
            self.source,
            self.repo
        );
        if let Some(t) = &self.tag {
            ensure!(
                crate::imgref::tag_name(t).is_ok(),
                "{}: tag {t:?} is not valid",
                self.source
            );
        }
        Ok(())
    }

    /// The name under which the staging layout keeps this image.
    fn staging_name(&self) -> String {
        format!(
            "{}:{}",
            self.repo,
            self.tag.as_deref().unwrap_or("untagged")
        )
        .replace('/', "_")
    }
}

/// `SRC=REPO[:TAG]`, where SRC itself may hold '=' only before its last one.
fn split_target(arg: &str) -> Option<(&str, &str)> {
    let (src, name) = arg.rsplit_once('=')?;
    (!src.is_empty() && !name.is_empty() && !name.contains('@')).then_some((src, name))
}

#[derive(Debug, Clone)]
pub struct MirrorOpts {
    pub images: Vec<MirrorImage>,
    pub dir: PathBuf,
    pub auth: RegistryAuth,
}

/// One mirrored image.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct Mirrored {
    pub source: String,
    pub repo: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub digest: String,
    /// Manifests under it (1, or the list's instances + 1).
    pub manifests: usize,
}

impl Mirrored {
    /// `repo:tag`, or the repository alone when the image has no tag.
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.repo),
            None => self.repo.clone(),
        }
    }
}

/// The record of what a mirror directory holds (`DIR/imgmode-payload.json`): its images,
/// their architectures, and an ID (sha256 of the sorted image list) that names the payload.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub id: String,
    pub images: Vec<Mirrored>,
    pub architectures: Vec<String>,
}

/// The record's file name in a mirror directory.
pub const PAYLOAD_RECORD: &str = "imgmode-payload.json";

impl Payload {
    /// Read `dir`'s record.
    pub fn read(dir: &Path) -> Result<Self> {
        let p = dir.join(PAYLOAD_RECORD);
        let text = std::fs::read(&p).with_context(|| {
            format!(
                "{} is not an imgmode mirror directory (no {PAYLOAD_RECORD}; make one with imgmode mirror)",
                dir.display()
            )
        })?;
        serde_json::from_slice(&text).with_context(|| format!("{} is malformed", p.display()))
    }

    /// Registries and repositories the images came from (docker sources only): (source
    /// repository without tag or digest, repository in the mirror).
    pub fn sources(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .images
            .iter()
            .filter_map(|i| {
                let rest = i.source.strip_prefix("docker://")?;
                let name = rest.split('@').next().unwrap_or(rest);
                let name = match name.rsplit_once(':') {
                    Some((n, t)) if !t.contains('/') => n,
                    _ => name,
                };
                Some((name.to_string(), i.repo.clone()))
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Merge this run's images into the directory's record (an image of the same repository and
/// tag is replaced) and write it.
fn write_payload_record(dir: &Path, v2: &Path, new: &[Mirrored]) -> Result<Payload> {
    let mut images = match Payload::read(dir) {
        Ok(p) => p.images,
        Err(_) if !dir.join(PAYLOAD_RECORD).exists() => vec![],
        Err(e) => return Err(e),
    };
    for n in new {
        images.retain(|i| !(i.repo == n.repo && i.tag == n.tag && n.tag.is_some()));
        images.retain(|i| i != n);
        images.push(n.clone());
    }
    images.sort();
    let mut arch = BTreeSet::new();
    for i in &images {
        for a in architectures(v2, &i.digest)? {
            arch.insert(a);
        }
    }
    let p = Payload {
        id: payload_id(&images)?,
        images,
        architectures: arch.into_iter().collect(),
    };
    write_json(&dir.join(PAYLOAD_RECORD), &p)?;
    Ok(p)
}

/// The architectures of the image `digest` in the blob store (an index: every instance's).
pub(crate) fn architectures(v2: &Path, digest: &str) -> Result<Vec<String>> {
    let raw = std::fs::read(blob_path(v2, digest)?)?;
    let refs = parse_refs(&raw)?;
    let mut out = vec![];
    for m in &refs.manifests {
        out.extend(architectures(v2, &m.digest)?);
    }
    if let Some(config) = refs.blobs.first() {
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blob_path(v2, &config.digest)?)?)
                .with_context(|| format!("the config of {digest} is not JSON"))?;
        if let Some(a) = c["architecture"].as_str() {
            out.push(a.to_string());
        }
    }
    Ok(out)
}

/// A payload's ID: the sha256 of its sorted image list.
pub fn payload_id(images: &[Mirrored]) -> Result<String> {
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(serde_json::to_vec(images)?))
    ))
}

/// Write `value` as JSON at `path` through a temporary name.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    imgmode_support::fs::write_atomic(path, &serde_json::to_vec_pretty(value)?, 0o644)
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorOutcome {
    pub dir: PathBuf,
    /// The directory's record after this run (every image it holds).
    pub payload: Payload,
    pub images: Vec<Mirrored>,
    pub blobs: usize,
    pub bytes: u64,
    /// Blobs (and their bytes) this run added.
    pub new_blobs: usize,
    pub new_bytes: u64,
}

/// A descriptor as manifests carry it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Desc {
    pub digest: String,
    pub size: u64,
}

/// What a manifest or index names.
#[derive(Debug, Default)]
pub struct Refs {
    /// Child manifests of an index.
    pub manifests: Vec<Desc>,
    /// Config and layers of a manifest.
    pub blobs: Vec<Desc>,
}

/// The manifests (of an index) or the config and layers (of a manifest) `raw` names.
pub fn parse_refs(raw: &[u8]) -> Result<Refs> {
    let v: serde_json::Value = serde_json::from_slice(raw).context("a manifest is not JSON")?;
    let media = v["mediaType"].as_str().unwrap_or_default();
    let mut r = Refs::default();
    if v.get("manifests").is_some() || INDEX_TYPES.contains(&media) {
        r.manifests = serde_json::from_value(v["manifests"].clone())
            .context("an index's manifests are malformed")?;
    } else if v.get("layers").is_some() || MANIFEST_TYPES.contains(&media) {
        let config: Desc = serde_json::from_value(v["config"].clone())
            .context("a manifest's config descriptor is malformed")?;
        let layers: Vec<Desc> = serde_json::from_value(v["layers"].clone())
            .context("a manifest's layers are malformed")?;
        r.blobs.push(config);
        r.blobs.extend(layers);
    } else {
        bail!("unsupported manifest type {media:?} (schema 1 manifests cannot be mirrored)");
    }
    for d in r.manifests.iter().chain(&r.blobs) {
        sha256_hex(&d.digest)?;
    }
    Ok(r)
}

/// Where the blob `digest` is in the blob store under `v2`.
pub fn blob_path(v2: &Path, digest: &str) -> Result<PathBuf> {
    let hex = sha256_hex(digest)?;
    Ok(v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])))
}

/// Every manifest of an image (top first) with its raw bytes, read through `get`, which
/// fetches a manifest by digest (`None`: the top one).
fn walk_manifests(
    get: &mut dyn FnMut(Option<&str>) -> Result<Vec<u8>>,
) -> Result<Vec<(String, Vec<u8>, Refs)>> {
    let top = get(None)?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&top)));
    let refs = parse_refs(&top)?;
    let children: Vec<Desc> = refs.manifests.clone();
    let mut out = vec![(digest, top, refs)];
    for c in children {
        let raw = get(Some(&c.digest))?;
        let got = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
        ensure!(
            got == c.digest && raw.len() as u64 == c.size,
            "the index names manifest {} ({} bytes), the source gave {got} ({} bytes)",
            c.digest,
            c.size,
            raw.len()
        );
        let r = parse_refs(&raw)?;
        ensure!(
            r.manifests.is_empty(),
            "manifest {} is an index inside an index; nested lists are not mirrored",
            c.digest
        );
        out.push((c.digest.clone(), raw, r));
    }
    Ok(out)
}

/// An image to mirror and its manifests (top first): digest, raw bytes, what each names.
type Plan<'a> = (&'a MirrorImage, Vec<(String, Vec<u8>, Refs)>);

/// Mirror the images into `opts.dir`. A run that fails leaves no staging layout (and no
/// directory, when it created it); one that is killed keeps the staging layout, which the next
/// run resumes from.
pub fn mirror(opts: &MirrorOpts, steps: &Steps) -> Result<MirrorOutcome> {
    let created = !opts.dir.exists();
    let result = mirror_into(opts, steps);
    if result.is_err() {
        let _ = imgmode_support::fs::remove_tree(&opts.dir.join(STAGING));
        if created {
            let _ = imgmode_support::fs::remove_tree(&opts.dir);
        }
    }
    result
}

fn mirror_into(opts: &MirrorOpts, steps: &Steps) -> Result<MirrorOutcome> {
    preflight(opts)?;
    let dir = &opts.dir;
    let v2 = dir.join(V2);

    // ---- every manifest first, then the space check: nothing written before
    let (plans, needed) = read_manifests(opts, steps)?;
    check_space(dir, &v2, &needed)?;

    // ---- fetch into the staging layout (resumable: skopeo keeps the blobs it has)
    let staging = dir.join(STAGING);
    fetch(opts, &staging, &plans, steps)?;

    // ---- verify every blob and link it into the blob store
    steps.step(&format!("verifying and placing {} blobs", needed.len()));
    let (new_blobs, new_bytes, bytes) = place_blobs(&v2, &staging, &plans, &needed)?;

    // ---- repository links, last
    steps.step("writing the repositories' links");
    let out: Vec<Mirrored> = plans
        .iter()
        .map(|(img, manifests)| Mirrored {
            source: img.source.clone(),
            repo: img.repo.clone(),
            tag: img.tag.clone(),
            digest: manifests[0].0.clone(),
            manifests: manifests.len(),
        })
        .collect();
    write_repository_links(&v2, &out)?;
    imgmode_support::fs::remove_tree(&staging)?;
    let payload = write_payload_record(dir, &v2, &out)?;
    prune_links(&v2, &payload)?;
    Ok(MirrorOutcome {
        dir: dir.clone(),
        payload,
        images: out,
        blobs: needed.len(),
        bytes,
        new_blobs,
        new_bytes,
    })
}

/// Checks before anything is read: images to mirror, skopeo, the directory, no image twice.
fn preflight(opts: &MirrorOpts) -> Result<()> {
    ensure!(!opts.images.is_empty(), "no images to mirror");
    require_tools(&["skopeo"])?;
    let dir = &opts.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut seen = BTreeSet::new();
    let mut tags = BTreeMap::new();
    for i in &opts.images {
        ensure!(
            seen.insert((i.repo.clone(), i.tag.clone(), i.source.clone())),
            "{} is given twice",
            i.source
        );
        if let Some(t) = &i.tag {
            if let Some(other) = tags.insert((i.repo.clone(), t.clone()), i.source.clone()) {
                bail!(
                    "{other} and {} are both given as {}:{t}; a tag names one image: give one of them another tag",
                    i.source,
                    i.repo
                );
            }
        }
    }
    // a directory of something else is not a mirror to add to
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries {
            let name = e?.file_name();
            let n = name.to_string_lossy();
            if !["docker", STAGING, PAYLOAD_RECORD].contains(&n.as_ref()) && !n.starts_with(".tmp")
            {
                bail!(
                    "{} holds {} and is not an imgmode mirror directory; give an empty or new directory, or one imgmode mirror wrote",
                    dir.display(),
                    imgmode_support::validate::shown(&n)
                );
            }
        }
    }
    Ok(())
}

/// Every image's manifests, and every blob they name with its size.
fn read_manifests<'a>(
    opts: &'a MirrorOpts,
    steps: &Steps,
) -> Result<(Vec<Plan<'a>>, BTreeMap<String, u64>)> {
    let mut plans = vec![];
    let mut needed: BTreeMap<String, u64> = BTreeMap::new();
    for img in &opts.images {
        steps.step(&format!("reading {}", img.source));
        let mut get = |digest: Option<&str>| -> Result<Vec<u8>> {
            let src = match digest {
                None => img.source.clone(),
                Some(d) => match by_digest(&img.source, d)? {
                    Instance::Ref(r) => r,
                    Instance::File(f) => {
                        return std::fs::read(&f)
                            .with_context(|| format!("{}: reading {}", img.source, f.display()))
                    }
                },
            };
            crate::skopeo::inspect_raw(&src, &opts.auth)
                .with_context(|| format!("{}: the image cannot be read", img.source))
        };
        let manifests = walk_manifests(&mut get)?;
        for (d, raw, refs) in &manifests {
            needed.insert(d.clone(), raw.len() as u64);
            for b in &refs.blobs {
                needed.insert(b.digest.clone(), b.size);
            }
        }
        plans.push((img, manifests));
    }
    Ok((plans, needed))
}

/// The blobs `dir` does not hold yet must fit its free space (with a margin).
fn check_space(dir: &Path, v2: &Path, needed: &BTreeMap<String, u64>) -> Result<()> {
    let mut missing = 0u64;
    for (d, size) in needed {
        if !blob_path(v2, d)?.is_file() {
            missing += size;
        }
    }
    let free = imgmode_support::fs::free_bytes(dir)?;
    ensure!(
        missing + missing / 50 + (16 << 20) <= free,
        "{} has {} free; mirroring needs {} more (the blobs it does not hold yet)",
        dir.display(),
        imgmode_support::size::human_size(free),
        imgmode_support::size::human_size(missing)
    );
    Ok(())
}

/// Copy every image into the staging layout (skopeo skips the blobs it already has there).
fn fetch(opts: &MirrorOpts, staging: &Path, plans: &[Plan], steps: &Steps) -> Result<()> {
    for (img, _) in plans {
        steps.step(&format!("copying {}", img.source));
        crate::skopeo::Copy::new(
            &img.source,
            format!("oci:{}:{}", staging.display(), img.staging_name()),
        )
        .src_auth(&opts.auth)
        .all()
        .preserve_digests()
        .run()
        .with_context(|| format!("copying {}", img.source))?;
    }
    Ok(())
}

/// Check every needed blob and link it into the blob store: (blobs added, their bytes, bytes
/// of all needed blobs).
fn place_blobs(
    v2: &Path,
    staging: &Path,
    plans: &[Plan],
    needed: &BTreeMap<String, u64>,
) -> Result<(usize, u64, u64)> {
    let mut raws: BTreeMap<String, &[u8]> = BTreeMap::new();
    for (_, manifests) in plans {
        for (d, raw, _) in manifests {
            raws.insert(d.clone(), raw);
        }
    }
    let (mut new_blobs, mut new_bytes, mut bytes) = (0usize, 0u64, 0u64);
    for (digest, size) in needed {
        bytes += size;
        if place_blob(v2, staging, &raws, digest, *size)? {
            new_blobs += 1;
            new_bytes += size;
        }
    }
    Ok((new_blobs, new_bytes, bytes))
}

/// Check the blob `digest` (already in the store, or in the staging layout, or one of the
/// manifests read in `raws`) and put it in place; whether it was added.
fn place_blob(
    v2: &Path,
    staging: &Path,
    raws: &BTreeMap<String, &[u8]>,
    digest: &str,
    size: u64,
) -> Result<bool> {
    let dest = blob_path(v2, digest)?;
    if dest.is_file() {
        let (got, n) = hash_file(&dest)?;
        ensure!(
            got == digest && n == size,
            "{} holds a corrupted blob {digest} (sha256 {got}, {n} bytes); remove it and run again",
            dest.display()
        );
        return Ok(false);
    }
    std::fs::create_dir_all(dest.parent().unwrap())?;
    let tmp = dest.with_file_name("data.imgmode-tmp");
    if let Some(raw) = raws.get(digest) {
        // manifests: the bytes read and hashed above
        std::fs::write(&tmp, raw)?;
    } else {
        let src = staging.join(format!("blobs/sha256/{}", sha256_hex(digest)?));
        let (got, n) = hash_file(&src).with_context(|| {
            format!("the staging layout lacks blob {digest}; run the mirror again")
        })?;
        if got != digest || n != size {
            let _ = std::fs::remove_file(&src);
            bail!(
                "blob {digest} does not match its digest (sha256 {got}, {n} of {size} bytes); it was removed, run the mirror again"
            );
        }
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&src, &tmp).is_err() {
            std::fs::copy(&src, &tmp)?;
        }
    }
    std::fs::rename(&tmp, &dest)?;
    Ok(true)
}

/// Where a list's instance `digest` is read from.
enum Instance {
    Ref(String),
    /// An OCI layout's blob file (skopeo reads a layout's instances only through its list).
    File(PathBuf),
}

/// `source`'s instance `digest` (a child manifest of a list).
fn by_digest(source: &str, digest: &str) -> Result<Instance> {
    let hex = sha256_hex(digest)?;
    if let Some(rest) = source.strip_prefix("docker://") {
        let base = rest.split('@').next().unwrap_or(rest);
        let base = match base.rsplit_once(':') {
            Some((b, t)) if !t.contains('/') => b,
            _ => base,
        };
        return Ok(Instance::Ref(format!("docker://{base}@{digest}")));
    }
    if let Some(rest) = source.strip_prefix("oci:") {
        let path = match rest.rsplit_once(':') {
            Some((p, _)) if !Path::new(rest).join("index.json").is_file() => p,
            _ => rest,
        };
        return Ok(Instance::File(
            Path::new(path).join(format!("blobs/sha256/{hex}")),
        ));
    }
    bail!("{source}: manifest lists are mirrored from docker:// and oci: sources only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_arguments_name_their_repository() {
        let i = MirrorImage::parse("quay.io/org/img:4.17").unwrap();
        assert_eq!(
            (i.source.as_str(), i.repo.as_str(), i.tag.as_deref()),
            ("docker://quay.io/org/img:4.17", "org/img", Some("4.17"))
        );
        let i = MirrorImage::parse("docker://localhost:5000/a/b").unwrap();
        assert_eq!((i.repo.as_str(), i.tag.as_deref()), ("a/b", Some("latest")));
        let d = format!("sha256:{}", "ab".repeat(32));
        let i = MirrorImage::parse(&format!("quay.io/org/img@{d}")).unwrap();
        assert_eq!((i.repo.as_str(), i.tag), ("org/img", None));
        let i = MirrorImage::parse("oci:/tmp/x:v1=ocp/release:4.17.0").unwrap();
        assert_eq!(
            (i.source.as_str(), i.repo.as_str(), i.tag.as_deref()),
            ("oci:/tmp/x:v1", "ocp/release", Some("4.17.0"))
        );
        for (bad, want) in [
            ("oci:/tmp/x", "names no repository"),
            ("img:latest", "only registry references"),
            ("quay.io/Org/img:1", "not valid"),
            ("quay.io/org/img@sha256:AB", "64 lowercase hex"),
            ("quay.io/org/img@md5:00", "unsupported algorithm"),
            (
                "oci:/tmp/x=repo:bad tag",
                "holds spaces or control characters",
            ),
            ("oci:/tmp/x=repo:bad!tag", "not valid"),
            ("ftp://h/x=repo", "unsupported transport"),
        ] {
            let e = MirrorImage::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn list_instances_are_read_by_digest() {
        let d = format!("sha256:{}", "cd".repeat(32));
        match by_digest("docker://quay.io/org/img:4.17", &d).unwrap() {
            Instance::Ref(r) => assert_eq!(r, format!("docker://quay.io/org/img@{d}")),
            Instance::File(_) => panic!(),
        }
        match by_digest("oci:/tmp/layout:v1", &d).unwrap() {
            Instance::File(f) => assert_eq!(
                f,
                Path::new(&format!("/tmp/layout/blobs/sha256/{}", "cd".repeat(32)))
            ),
            Instance::Ref(_) => panic!(),
        }
        assert!(by_digest("containers-storage:x", &d).is_err());
    }

    #[test]
    fn manifests_name_their_blobs() {
        let d = |c: &str| format!("sha256:{}", c.repeat(64));
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":20}}]}}"#,
            d("a"),
            d("b")
        );
        let r = parse_refs(m.as_bytes()).unwrap();
        assert_eq!(r.blobs.len(), 2);
        assert_eq!(r.blobs[1].size, 20);
        let bad = m.replace(&d("b"), "sha256:../../etc");
        assert!(parse_refs(bad.as_bytes()).is_err());
        assert!(parse_refs(br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }

    proptest::proptest! {
        /// An image argument that parses has no white space or control character, and its
        /// repository and tag (which become directories of the layout) no `..` or empty part.
        #[test]
        fn what_parses_is_safe(s in "\\PC*|.*[ \\n\\x1b/.:=@].*") {
            if let Ok(i) = MirrorImage::parse(&s) {
                proptest::prop_assert!(!i.source.contains(char::is_whitespace));
                proptest::prop_assert!(!i.source.contains(char::is_control));
                proptest::prop_assert!(i.repo.split('/').all(|c| !c.is_empty() && c != ".." && c != "."), "{i:?}");
                if let Some(t) = &i.tag {
                    proptest::prop_assert!(!t.contains('/') && !t.starts_with('.'), "{i:?}");
                }
            }
        }
    }
}
