//! The payloads a host holds: one registry root (the distribution layout) serving the union
//! of every payload added to it, with one record per payload in `imgmode-payloads/` and the
//! union's record in `imgmode-payload.json` (what [`imgmode_image::mirror::verify`] checks).
//!
//! - [`add`]: a payload (a mirror directory, e.g. on a newly attached ISO) is verified, then
//!   its missing blobs are copied in (each checked against its digest and synced before it is
//!   renamed into place; a blob already held is hashed again before it is trusted), its
//!   repository links written, and its record last. `add` and `remove` hold the store's lock.
//! - [`status`]: the payloads held, and which of their images something on the host uses
//!   ([`Users`]: the container storage, and every deployment of the ostree sysroot: booted,
//!   staged, rollback or other).
//! - [`remove`]: refused while any image of the payload is in use; otherwise the record goes,
//!   the repository links are rewritten for the payloads that remain, and blobs nothing
//!   references any more are deleted.

use crate::payload::release::{self, InternalReleaseImage, Phase};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::mirror::{self, Mirrored, Payload, PAYLOAD_RECORD, V2};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The directory of per-payload records in a store.
pub const RECORDS: &str = "imgmode-payloads";

/// A payload held, with its images something on the host uses.
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    pub payload: Payload,
    pub in_use: Vec<InUse>,
    /// Its entry in the store's InternalReleaseImage record (conditions), if it has one.
    pub release: Option<release::ReleaseStatus>,
}

impl Held {
    /// Its images in use and by what, `; `-separated (empty when none is).
    pub fn uses(&self) -> String {
        self.in_use
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One manifest of a payload (an image, or one platform's image of a list) in use, and by what.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InUse {
    pub digest: String,
    pub by: Vec<String>,
}

impl std::fmt::Display for InUse {
    /// `sha256:… by the booted deployment default-….0 and the container storage`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}", self.digest, self.by.join(" and "))
    }
}

/// What uses images on a host: manifest digests, each with its users in words ("the container
/// storage", "the booted deployment default-<commit>.0").
#[derive(Debug, Clone, Default)]
pub struct Users(BTreeMap<String, BTreeSet<String>>);

impl Users {
    /// The images of the container storage at `storage` and the deployments of the ostree
    /// sysroot at `sysroot` (none when it has no `ostree/`: not an ostree system).
    pub fn of_host(storage: &Path, sysroot: &Path) -> Result<Self> {
        let mut users = Users::default();
        for d in images_in_storage(storage)? {
            users.add(&d, "the container storage");
        }
        if sysroot.join("ostree").is_dir() {
            let st = imgmode_os::ostree::sysroot_status(sysroot)?;
            for d in &st.deployments {
                let Some(digest) = &d.container_image_reference_digest else {
                    continue;
                };
                let role = if d.booted {
                    "booted "
                } else if d.staged {
                    "staged "
                } else if st.rollback.as_ref() == Some(&d.id) {
                    "rollback "
                } else {
                    ""
                };
                users.add(digest, format!("the {role}deployment {}", d.id));
            }
        }
        Ok(users)
    }

    /// The cluster's current release (its ClusterVersion's `status.desired.image`, read from
    /// the cluster's etcd at `endpoint`, with client TLS `tls` for an `https://` one) uses its
    /// manifest digest: a payload that holds the release the cluster runs stays until the
    /// cluster has moved on.
    pub fn add_cluster_release(
        &mut self,
        endpoint: &str,
        tls: Option<&imgmode_recert::etcd::ClientTls>,
    ) -> Result<()> {
        let key = imgmode_seed::site::CLUSTER_VERSION;
        let cv = imgmode_support::runtime::block_on(async {
            let mut e = imgmode_recert::etcd::Etcd::connect_with(endpoint, tls).await?;
            e.get(key).await
        })??
        .with_context(|| {
            format!("etcd at {endpoint} holds no ClusterVersion ({key}); give the cluster's etcd, or leave out --etcd-endpoint on a host that runs no cluster")
        })?;
        let image = cv.value["status"]["desired"]["image"]
            .as_str()
            .with_context(|| {
                format!("the ClusterVersion in etcd at {endpoint} has no status.desired.image")
            })?;
        let Some((_, digest)) = image.rsplit_once('@') else {
            bail!("the cluster's current release {image} is named by tag, not by digest; which payload holds it cannot be told: set the ClusterVersion's release by digest");
        };
        self.add(
            digest,
            format!("the cluster's current release {image} (ClusterVersion version)"),
        );
        Ok(())
    }

    /// `by` uses the manifest `digest`.
    pub fn add(&mut self, digest: &str, by: impl Into<String>) {
        self.0
            .entry(digest.to_string())
            .or_default()
            .insert(by.into());
    }

    fn of(&self, digest: &str) -> Option<InUse> {
        self.0.get(digest).map(|by| InUse {
            digest: digest.to_string(),
            by: by.iter().cloned().collect(),
        })
    }
}

fn record_path(store: &Path, id: &str) -> Result<PathBuf> {
    let hex = imgmode_image::digest::sha256_hex(id)?;
    Ok(store.join(RECORDS).join(format!("{hex}.json")))
}

/// The payloads `store` holds.
pub fn held(store: &Path) -> Result<Vec<Payload>> {
    let dir = store.join(RECORDS);
    let mut out = vec![];
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if e.path().extension().is_some_and(|x| x == "json") {
            let p: Payload = serde_json::from_slice(&std::fs::read(e.path())?)
                .with_context(|| format!("{} is malformed", e.path().display()))?;
            out.push(p);
        }
    }
    Ok(out)
}

/// Every manifest and blob digest an image references (itself included).
fn references(v2: &Path, digest: &str, out: &mut BTreeSet<String>) -> Result<()> {
    if !out.insert(digest.to_string()) {
        return Ok(());
    }
    let raw = std::fs::read(mirror::blob_path(v2, digest)?)
        .with_context(|| format!("the store lacks manifest {digest}"))?;
    let refs = mirror::parse_refs(&raw)?;
    for m in &refs.manifests {
        references(v2, &m.digest, out)?;
    }
    for b in &refs.blobs {
        out.insert(b.digest.clone());
    }
    Ok(())
}

/// Manifest digests (every level) of a payload's images.
fn manifest_digests(v2: &Path, p: &Payload) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for i in &p.images {
        out.insert(i.digest.clone());
        let raw = std::fs::read(mirror::blob_path(v2, &i.digest)?)?;
        for m in mirror::parse_refs(&raw)?.manifests {
            out.insert(m.digest);
        }
    }
    Ok(out)
}

/// Manifest digests of the images in containers/storage at `storage` (its
/// `overlay-images/images.json`; none when there is no storage yet).
pub fn images_in_storage(storage: &Path) -> Result<BTreeSet<String>> {
    let f = storage.join("overlay-images/images.json");
    let mut out = BTreeSet::new();
    let Ok(bytes) = std::fs::read(&f) else {
        return Ok(out);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is malformed", f.display()))?;
    for img in v.as_array().into_iter().flatten() {
        if let Some(d) = img["digest"].as_str() {
            out.insert(d.to_string());
        }
        for d in img["digests"].as_array().into_iter().flatten() {
            if let Some(d) = d.as_str() {
                out.insert(d.to_string());
            }
        }
    }
    Ok(out)
}

/// The payloads held, each with its images that `users` use.
pub fn status(store: &Path, users: &Users) -> Result<Vec<Held>> {
    let v2 = store.join(V2);
    let releases = if store.is_dir() {
        InternalReleaseImage::read(store)?
    } else {
        Default::default()
    };
    held(store)?
        .into_iter()
        .map(|p| {
            let in_use = manifest_digests(&v2, &p)?
                .into_iter()
                .filter_map(|d| users.of(&d))
                .collect();
            let release = releases.release(&p.id).cloned();
            Ok(Held {
                payload: p,
                in_use,
                release,
            })
        })
        .collect()
}

/// Rewrite the union record from the per-payload records, with each payload's record image
/// ([`crate::payload::record_image`]: what other nodes copy it by) written and linked.
fn write_union(store: &Path) -> Result<Payload> {
    let v2 = store.join(V2);
    let mut images: Vec<Mirrored> = vec![];
    let mut records = vec![];
    let mut arch = BTreeSet::new();
    for p in held(store)? {
        records.push(crate::payload::record_image::record_image(&v2, &p)?);
        for i in p.images {
            if !images.contains(&i) {
                images.push(i);
            }
        }
        arch.extend(p.architectures);
    }
    mirror::write_repository_links(&v2, &records)?;
    images.extend(records);
    images.sort();
    let union = Payload {
        id: mirror::payload_id(&images)?,
        images,
        architectures: arch.into_iter().collect(),
    };
    mirror::write_json(&store.join(PAYLOAD_RECORD), &union)?;
    Ok(union)
}

/// The store's lock, held by `add` and `remove` (one changes the store at a time); waits for a
/// run that holds it.
fn lock(store: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
    let path = store.join(".imgmode-payload.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(f)
}

/// Copy the blob `d` from the source layout into place under `dest` through a temporary name,
/// checked against its digest and synced before the rename. `link`: hard-link it instead
/// where the source is on the same filesystem (a work directory of imgmode's own).
fn copy_blob(src_v2: &Path, d: &str, dest: &Path, src: &Path, link: bool) -> Result<()> {
    std::fs::create_dir_all(dest.parent().expect("a blob has a directory"))?;
    let tmp = dest.with_file_name("data.imgmode-tmp");
    let _ = std::fs::remove_file(&tmp);
    let from = mirror::blob_path(src_v2, d)?;
    if !(link && std::fs::hard_link(&from, &tmp).is_ok()) {
        std::fs::copy(&from, &tmp)?;
    }
    let (got, _) = imgmode_support::io::hash_file(&tmp)?;
    if got != d {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "blob {d} changed while it was copied from {} (sha256 {got})",
            src.display()
        );
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dest)?;
    imgmode_support::fs::sync_dir(dest.parent().expect("a blob has a directory"))
}

/// What [`add`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    #[serde(flatten)]
    pub payload: Payload,
    /// The store held it already (and the release record says it is available): nothing was
    /// read from the source but its record.
    pub already_held: bool,
}

/// Add the payload at `src` (a mirror directory; `source` names where it came from, such as
/// an ISO's device) to `store`, recording the import in the store's [`InternalReleaseImage`]:
/// Importing while it copies, then Available, or Degraded with the error. `skip_held`: a
/// payload the store holds and records as available is left as it is (an attached ISO's
/// import at every boot); otherwise every blob the store holds is hashed again.
pub fn add(store: &Path, src: &Path, source: &str, skip_held: bool) -> Result<Added> {
    add_with(store, src, source, skip_held, false)
}

/// [`add`] from a work directory of imgmode's own on the store's filesystem (a payload copied
/// from another node): its blobs are hard-linked rather than copied, so the payload takes its
/// room once; the directory is the caller's to remove.
pub fn add_staged(store: &Path, src: &Path, source: &str) -> Result<Added> {
    add_with(store, src, source, false, true)
}

fn add_with(store: &Path, src: &Path, source: &str, skip_held: bool, link: bool) -> Result<Added> {
    let claimed = Payload::read(src)?;
    if skip_held && store.join(RECORDS).is_dir() {
        let _lock = lock(store)?;
        if record_path(store, &claimed.id)?.is_file()
            && InternalReleaseImage::read(store)?.is(&claimed.id, release::AVAILABLE)
        {
            return Ok(Added {
                payload: claimed,
                already_held: true,
            });
        }
    }
    let record = |phase: Phase, message: &str| record(store, &claimed, source, phase, message);
    // a store that exists records the import from its start, and its failure; a new one is
    // made only for a payload that passed (bad input leaves nothing behind)
    let existed = store.is_dir();
    if existed {
        record(
            Phase::Importing,
            &format!(
                "verifying and copying {} image(s) from {source}",
                claimed.images.len()
            ),
        )?;
    }
    match copy_in(store, src, link) {
        Ok(p) => {
            record(
                Phase::Available,
                &format!(
                    "{} image(s) copied from {source}, served on {}",
                    p.images.len(),
                    crate::payload::registry::HOST
                ),
            )?;
            Ok(Added {
                payload: p,
                already_held: false,
            })
        }
        Err(e) if !existed => Err(e),
        Err(e) => {
            let first = format!("{e:#}");
            record(Phase::Degraded, first.lines().next().unwrap_or_default())?;
            Err(e)
        }
    }
}

/// Record in `store`'s [`InternalReleaseImage`] (when the store exists) that importing
/// `claimed` from `source` failed before [`add`] began (reading it off its medium): Degraded,
/// with `message`.
pub fn record_failure(store: &Path, claimed: &Payload, source: &str, message: &str) -> Result<()> {
    if !store.is_dir() {
        return Ok(()); // a store is made for a payload that passed only
    }
    record(store, claimed, source, Phase::Degraded, message)
}

/// Record in `store`'s [`InternalReleaseImage`] (when the store exists) that `claimed` is being
/// imported from `source` before [`add`] begins (copied from another node): Importing.
pub fn record_importing(
    store: &Path,
    claimed: &Payload,
    source: &str,
    message: &str,
) -> Result<()> {
    if !store.is_dir() {
        return Ok(());
    }
    record(store, claimed, source, Phase::Importing, message)
}

/// Set `claimed`'s conditions in `store`'s [`InternalReleaseImage`] to `phase` (imported from
/// `source`, with `message`), under the store's lock.
fn record(
    store: &Path,
    claimed: &Payload,
    source: &str,
    phase: Phase,
    message: &str,
) -> Result<()> {
    let _lock = lock(store)?;
    let mut r = InternalReleaseImage::read(store)?;
    let digests: Vec<String> = claimed.images.iter().map(|i| i.digest.clone()).collect();
    r.set(
        &claimed.id,
        source,
        &digests,
        phase,
        message,
        &release::now(),
    );
    r.write(store)
}

/// [`add`]'s copy: the source verified, the missing blobs copied, links and records written.
fn copy_in(store: &Path, src: &Path, link: bool) -> Result<Payload> {
    // the source first: a payload refused leaves nothing of it in the store
    let checked = mirror::verify(src).with_context(|| format!("the payload {}", src.display()))?;
    let _lock = lock(store)?;
    let p = checked.payload;
    let (sv2, dv2) = (src.join(V2), store.join(V2));
    std::fs::create_dir_all(&dv2).with_context(|| format!("creating {}", store.display()))?;
    // space first: the blobs the store does not hold yet (none when they are hard-linked in)
    use std::os::unix::fs::MetadataExt;
    let linked = link && std::fs::metadata(&sv2)?.dev() == std::fs::metadata(&dv2)?.dev();
    let mut missing = 0u64;
    let mut all = BTreeSet::new();
    for i in &p.images {
        references(&sv2, &i.digest, &mut all)?;
    }
    for d in &all {
        if !linked && !mirror::blob_path(&dv2, d)?.is_file() {
            missing += std::fs::metadata(mirror::blob_path(&sv2, d)?)?.len();
        }
    }
    let free = imgmode_support::fs::free_bytes(store)?;
    ensure!(
        missing + (16 << 20) <= free,
        "{} has {} free; the payload {} needs {} more",
        store.display(),
        imgmode_support::size::human_size(free),
        p.id,
        imgmode_support::size::human_size(missing)
    );
    for d in &all {
        let dest = mirror::blob_path(&dv2, d)?;
        // a blob the store holds already is trusted only once it hashes to its name again
        // (a damaged one is replaced from the verified source)
        let present = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file())
            && imgmode_support::io::hash_file(&dest).is_ok_and(|(got, _)| &got == d);
        if present {
            continue;
        }
        // a damaged copy (or a symlink where a blob belongs) goes first
        if std::fs::symlink_metadata(&dest).is_ok() {
            std::fs::remove_file(&dest)
                .with_context(|| format!("removing the damaged blob {}", dest.display()))?;
        }
        copy_blob(&sv2, d, &dest, src, link)?;
    }
    mirror::write_repository_links(&dv2, &p.images)?;
    mirror::write_json(&record_path(store, &p.id)?, &p)?;
    write_union(store)?;
    Ok(p)
}

/// Remove the payload `id` from `store` unless `users` use one of its images.
pub fn remove(store: &Path, id: &str, users: &Users) -> Result<Payload> {
    let record = record_path(store, id)?;
    if !store.is_dir() {
        bail!(
            "{} holds no payload {id} (imgmode payload status lists them)",
            store.display()
        );
    }
    let _lock = lock(store)?;
    let held = status(store, users)?;
    let Some(h) = held.iter().find(|h| h.payload.id == id) else {
        bail!(
            "{} holds no payload {id} (imgmode payload status lists them)",
            store.display()
        );
    };
    ensure!(
        h.in_use.is_empty(),
        "the payload {id} is in use: {}; remove those images or deployments first (imgmode payload status shows what uses it)",
        h.uses()
    );
    let v2 = store.join(V2);
    std::fs::remove_file(&record)?;
    let mut releases = InternalReleaseImage::read(store)?;
    releases.forget(id);
    releases.write(store)?;
    let union = write_union(store)?;
    // repository links for what remains, swapped in whole
    let repos = v2.join("repositories");
    let fresh = v2.join("repositories.imgmode-tmp");
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir_all(&fresh)?;
    mirror::write_links_under(&fresh, &union.images, &v2)?;
    let old = v2.join("repositories.imgmode-old");
    let _ = std::fs::remove_dir_all(&old);
    if repos.exists() {
        std::fs::rename(&repos, &old)?;
    }
    std::fs::rename(&fresh, &repos)?;
    let _ = std::fs::remove_dir_all(&old);
    // blobs nothing references any more
    let mut keep = BTreeSet::new();
    for i in &union.images {
        references(&v2, &i.digest, &mut keep)?;
    }
    let blobs = v2.join("blobs/sha256");
    for prefix in std::fs::read_dir(&blobs)? {
        let prefix = prefix?;
        for b in std::fs::read_dir(prefix.path())? {
            let b = b?;
            let d = format!("sha256:{}", b.file_name().to_string_lossy());
            if !keep.contains(&d) {
                std::fs::remove_dir_all(b.path())?;
            }
        }
    }
    Ok(h.payload.clone())
}
