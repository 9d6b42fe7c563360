//! Handing the run's shared images to other machines: `cargo xtask vmtest --artifacts-to REF`
//! pushes them, and `--artifacts-from REF` makes a run pull them by digest instead of
//! building them (a pipeline's build job and its shards).
//!
//! REF names a repository (`docker://HOST/PATH`) or an OCI layout (`oci:/DIR`). Three tags go
//! there:
//! - `base`: the base image as the store holds it (`--preserve-digests`: its digest stays);
//! - `seed`: the seed image, when the run needs one;
//! - `artifacts`: an OCI artifact (`artifactType` [`ARTIFACT_TYPE`], the empty config) whose
//!   layers are the `imgmode` binary the images were built with (the one a pulling run uses:
//!   its shards compile no product and cannot differ from the build), the disks written from
//!   the base image (`base.qcow2`, and `base.raw` when a scenario boots it) and the seed's
//!   facts (`seed.json`: what the seed VM reported), and whose annotations name the base
//!   image's and the seed's manifest digests.
//!
//! A pull resolves `artifacts` to its manifest digest once (or takes the one REF pins with
//! `@sha256:…`), copies the artifact by that digest (skopeo checks every blob's digest), then
//! takes the base image and the seed by the digests the artifact names. The base image goes
//! through `imgmode base build --cache-from`, which reuses it only when it was built from this
//! run's inputs (the definition and the pulled `imgmode` binary); an image built instead is
//! refused.
//! The seed owner's private key is a secret and is never pushed: a pulling run is given the
//! file (`--seed-owner-key`), and its public half must be the one the facts name.

use crate::harness::artifacts::{base_image, run, Artifacts};
use crate::harness::seed::{layout_digest, store_seed, PhaseReport, SeedBuild, SEED_IMAGE};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The artifact's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.imgmode.vmtest.shared.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const DISK_TYPE: &str = "application/vnd.imgmode.disk";
const BINARY_TYPE: &str = "application/vnd.imgmode.binary";
const FACTS_TYPE: &str = "application/vnd.imgmode.vmtest.seed-facts.v1+json";
const TITLE: &str = "org.opencontainers.image.title";
const BASE_ANNOTATION: &str = "org.imgmode.vmtest.base.digest";
const SEED_ANNOTATION: &str = "org.imgmode.vmtest.seed.digest";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The tag of the artifact.
const ARTIFACTS_TAG: &str = "artifacts";
/// The file, in the run's artifacts directory, a push writes the artifact's digest to.
pub const DIGEST_FILE: &str = "handoff.digest";

/// Where the shared images go or come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A repository on a registry: `HOST[:PORT]/PATH`.
    Registry(String),
    /// An OCI layout directory.
    Layout(PathBuf),
}

/// `--artifacts-to` / `--artifacts-from`: a location, and for a pull perhaps the artifact's
/// manifest digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsRef {
    pub location: Location,
    pub pinned: Option<String>,
}

impl std::str::FromStr for ArtifactsRef {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let usage = "give docker://HOST/REPOSITORY or oci:/DIRECTORY (an OCI layout), optionally followed by @sha256:DIGEST (the artifact's manifest, as a push prints it)";
        let (body, pinned) = match s.rsplit_once('@') {
            Some((b, d)) => {
                let hex = d.strip_prefix("sha256:").unwrap_or_default();
                ensure!(
                    hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
                    "{s:?}: {d:?} is not a sha256 digest; {usage}"
                );
                (b, Some(d.to_string()))
            }
            None => (s, None),
        };
        let location = if let Some(r) = body.strip_prefix("docker://") {
            let last = r.rsplit('/').next().unwrap_or_default();
            ensure!(
                r.contains('/') && !last.is_empty() && !last.contains(':'),
                "{s:?}: name a repository without a tag (the tags base, seed and artifacts go under it); {usage}"
            );
            Location::Registry(r.to_string())
        } else if let Some(p) = body.strip_prefix("oci:") {
            ensure!(
                p.starts_with('/') && !p.contains(':'),
                "{s:?}: an OCI layout is an absolute directory, without a tag; {usage}"
            );
            Location::Layout(PathBuf::from(p))
        } else {
            bail!("{s:?}: {usage}")
        };
        Ok(Self { location, pinned })
    }
}

impl std::fmt::Display for ArtifactsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Location::Registry(r) => write!(f, "docker://{r}")?,
            Location::Layout(p) => write!(f, "oci:{}", p.display())?,
        }
        match &self.pinned {
            Some(d) => write!(f, "@{d}"),
            None => Ok(()),
        }
    }
}

impl ArtifactsRef {
    /// The reference of `tag` here.
    fn tagged(&self, tag: &str) -> String {
        match &self.location {
            Location::Registry(r) => format!("docker://{r}:{tag}"),
            Location::Layout(p) => format!("oci:{}:{tag}", p.display()),
        }
    }

    /// The reference of the manifest `digest` (tagged `tag`): by digest on a registry; in a
    /// layout by its tag, the copy's digest checked after.
    fn at(&self, tag: &str, digest: &str) -> String {
        match &self.location {
            Location::Registry(r) => format!("docker://{r}@{digest}"),
            Location::Layout(p) => format!("oci:{}:{tag}", p.display()),
        }
    }

    /// The artifact's manifest digest: the pinned one, or what the tag names now.
    fn resolve(&self) -> Result<String> {
        if let Some(d) = &self.pinned {
            return Ok(d.clone());
        }
        match &self.location {
            Location::Registry(_) => {
                let src = self.tagged(ARTIFACTS_TAG);
                let raw = run(
                    Command::new("skopeo").args(["inspect", "--raw", &src]),
                    &format!("skopeo inspect --raw {src}"),
                )?;
                sha256_of(raw.as_bytes())
            }
            Location::Layout(p) => {
                let index: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(p.join("index.json"))
                        .with_context(|| format!("reading {}/index.json", p.display()))?,
                )?;
                index["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| m["annotations"][REF_NAME] == ARTIFACTS_TAG)
                    .and_then(|m| m["digest"].as_str())
                    .map(str::to_string)
                    .with_context(|| {
                        format!("{}: no manifest is tagged {ARTIFACTS_TAG}", p.display())
                    })
            }
        }
    }
}

/// What the seed VM reported, as the artifact carries it (`seed.json`): everything of a
/// [`SeedBuild`] but its local paths, and the owner's public key in place of the private one.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFacts {
    digest: String,
    facts: BTreeMap<String, String>,
    booted_id: String,
    booted_checksum: String,
    identity: serde_json::Value,
    created: serde_json::Value,
    keys: BTreeMap<String, String>,
    vm_seconds: f64,
    owner_public_key: String,
}

/// `skopeo copy --preserve-digests`.
fn copy(src: &str, dest: &str) -> Result<()> {
    run(
        Command::new("skopeo").args(["copy", "--quiet", "--preserve-digests", src, dest]),
        &format!("skopeo copy {src} {dest}"),
    )
    .map(|_| ())
}

/// `sha256:HEX` of `bytes`.
fn sha256_of(bytes: &[u8]) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum's stdin")?
        .write_all(bytes)?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "sha256sum failed");
    digest_of_output(&out.stdout)
}

/// `sha256:HEX` of the file `path`.
fn sha256_file(path: &Path) -> Result<String> {
    let out = run(
        Command::new("sha256sum").arg(path),
        &format!("sha256sum {}", path.display()),
    )?;
    digest_of_output(out.as_bytes())
}

fn digest_of_output(out: &[u8]) -> Result<String> {
    let hex = String::from_utf8_lossy(out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(hex.len() == 64, "sha256sum printed no digest");
    Ok(format!("sha256:{hex}"))
}

/// The blob of `digest` in `layout`.
fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// A descriptor.
fn descriptor(media_type: &str, digest: &str, size: u64) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// Put the file `path` into `layout`'s blobs (a hard link when it can, a copy when not); its
/// descriptor.
fn add_file(layout: &Path, path: &Path, media_type: &str) -> Result<serde_json::Value> {
    let digest = sha256_file(path)?;
    let blob = blob_path(layout, &digest);
    if !blob.exists() && std::fs::hard_link(path, &blob).is_err() {
        std::fs::copy(path, &blob).with_context(|| format!("copying {}", path.display()))?;
    }
    Ok(descriptor(
        media_type,
        &digest,
        std::fs::metadata(path)?.len(),
    ))
}

/// Put `bytes` into `layout`'s blobs; their descriptor.
fn add_bytes(layout: &Path, bytes: &[u8], media_type: &str) -> Result<serde_json::Value> {
    let digest = sha256_of(bytes)?;
    std::fs::write(blob_path(layout, &digest), bytes)?;
    Ok(descriptor(media_type, &digest, bytes.len() as u64))
}

/// Push the run's shared images to `to` (`work`: a scratch directory of the run); the
/// artifact's manifest digest, also written to `work/`[`DIGEST_FILE`].
pub fn push(
    to: &ArtifactsRef,
    a: &Artifacts,
    seed: Option<&SeedBuild>,
    work: &Path,
) -> Result<String> {
    ensure!(
        to.pinned.is_none(),
        "--artifacts-to {to}: a digest is what a pull pins; name where to push without it"
    );
    if let Location::Layout(p) = &to.location {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    // a digest left by an earlier push must not outlive a failed one
    let digest_file = work.join(DIGEST_FILE);
    let _ = std::fs::remove_file(&digest_file);
    eprintln!("==> pushing the shared images to {to}");
    copy(&a.base_reference, &to.tagged("base"))?;
    let mut annotations = serde_json::json!({ BASE_ANNOTATION: a.base_digest });
    let lay = work.join("handoff-layout");
    let _ = std::fs::remove_dir_all(&lay);
    std::fs::create_dir_all(lay.join("blobs/sha256"))?;
    let mut layers = Vec::new();
    let mut layer = |mut d: serde_json::Value, title: &str| {
        d["annotations"] = serde_json::json!({ TITLE: title });
        layers.push(d);
    };
    let mut files = vec![(&a.imgmode, BINARY_TYPE), (&a.base_disk, DISK_TYPE)];
    if !a.base_raw.as_os_str().is_empty() {
        files.push((&a.base_raw, DISK_TYPE));
    }
    for (path, media_type) in files {
        let title = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("a shared file has no name")?;
        layer(add_file(&lay, path, media_type)?, title);
    }
    if let Some(s) = seed {
        let digest = layout_digest(&s.layout)?;
        copy(
            &format!("oci:{}:latest", s.layout.display()),
            &to.tagged("seed"),
        )?;
        annotations[SEED_ANNOTATION] = digest.into();
        let facts = serde_json::to_vec_pretty(&facts_of(s)?)?;
        layer(add_bytes(&lay, &facts, FACTS_TYPE)?, "seed.json");
    }
    let config = add_bytes(&lay, b"{}", EMPTY_TYPE)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": annotations,
    }))?;
    let mut m = add_bytes(&lay, &manifest, MANIFEST_TYPE)?;
    let digest = m["digest"].as_str().unwrap_or_default().to_string();
    m["annotations"] = serde_json::json!({ REF_NAME: ARTIFACTS_TAG });
    std::fs::write(
        lay.join("index.json"),
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": [m] }))?,
    )?;
    std::fs::write(lay.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    copy(
        &format!("oci:{}:{ARTIFACTS_TAG}", lay.display()),
        &to.tagged(ARTIFACTS_TAG),
    )?;
    std::fs::remove_dir_all(&lay)?;
    std::fs::write(&digest_file, &digest)?;
    eprintln!(
        "==> pushed to {to}: base image {}, {} file(s){}; the artifact is {digest} (pull: --artifacts-from {to}@{digest})",
        a.base_digest,
        layers.len(),
        seed.map(|s| format!(", seed {}", s.digest)).unwrap_or_default()
    );
    Ok(digest)
}

fn facts_of(s: &SeedBuild) -> Result<SeedFacts> {
    Ok(SeedFacts {
        digest: s.digest.clone(),
        facts: s.phase.facts.clone(),
        booted_id: s.phase.booted_id.clone(),
        booted_checksum: s.phase.booted_checksum.clone(),
        identity: s.identity.clone(),
        created: s.created.clone(),
        keys: s.keys.clone(),
        vm_seconds: s.vm_seconds,
        owner_public_key: public_key(&s.owner_key)?,
    })
}

/// The public half of the OpenSSH private key at `key` (`ssh-keygen -y`), without comment.
fn public_key(key: &Path) -> Result<String> {
    let out = run(
        Command::new("ssh-keygen").arg("-y").arg("-f").arg(key),
        &format!("ssh-keygen -y -f {}", key.display()),
    )?;
    Ok(out.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

/// What a pull needs besides the reference.
pub struct PullOpts<'a> {
    /// The base image's definition (`containerfiles/base`): `base build --cache-from` checks
    /// the pulled image was built from it.
    pub definition: &'a Path,
    /// Where the disks and the seed go (the run's artifacts directory).
    pub dir: &'a Path,
    /// A chosen scenario boots the raw disk.
    pub raw: bool,
    /// A chosen scenario needs the seed: the seed owner's private key.
    pub seed_owner_key: Option<&'a Path>,
    pub need_seed: bool,
}

/// Pull the shared images from `from` by digest: the run's [`Artifacts`] (whose `imgmode` is
/// the pulled binary), and the seed when one is needed.
pub fn pull(from: &ArtifactsRef, o: &PullOpts) -> Result<(Artifacts, Option<SeedBuild>)> {
    let digest = from.resolve()?;
    eprintln!("==> pulling the shared images by digest: the artifact {digest} from {from}");
    std::fs::create_dir_all(o.dir)?;
    let lay = o.dir.join("handoff-layout");
    let _ = std::fs::remove_dir_all(&lay);
    copy(
        &from.at(ARTIFACTS_TAG, &digest),
        &format!("oci:{}:{ARTIFACTS_TAG}", lay.display()),
    )?;
    let got = layout_digest(&lay)?;
    ensure!(
        got == digest,
        "{from}: the artifact copied is {got}, not {digest}; its tag moved during the pull, or the layout was changed"
    );
    let blob = |d: &str| blob_path(&lay, d);
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(&digest))?)?;
    ensure!(
        manifest["artifactType"] == ARTIFACT_TYPE,
        "{from}@{digest} is not imgmode's shared-images artifact (artifactType {}, want {ARTIFACT_TYPE})",
        manifest["artifactType"]
    );
    let mut files = BTreeMap::new();
    for l in manifest["layers"].as_array().into_iter().flatten() {
        let title = l["annotations"][TITLE]
            .as_str()
            .filter(|t| !t.is_empty() && !t.contains('/') && !t.starts_with('.'))
            .context("a layer of the artifact has no plain file name")?;
        let d = l["digest"].as_str().context("a layer has no digest")?;
        let dest = o.dir.join(title);
        let _ = std::fs::remove_file(&dest);
        std::fs::rename(blob(d), &dest)?;
        eprintln!("==> pulled {title} by digest ({d})");
        files.insert(title.to_string(), dest);
    }
    std::fs::remove_dir_all(&lay)?;
    let ann = &manifest["annotations"];
    let base_digest = ann[BASE_ANNOTATION]
        .as_str()
        .context("the artifact names no base image")?;
    let file = |name: &str| {
        files.get(name).cloned().with_context(|| {
            format!("the artifact carries no {name}: the build step's scenarios did not need it; push with the scenarios of every shard")
        })
    };
    let imgmode = file("imgmode")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&imgmode, std::fs::Permissions::from_mode(0o755))?;
    }
    let mut a = base_image(&imgmode, o.definition, Some(&from.at("base", base_digest)))?;
    ensure!(
        a.base_digest == base_digest,
        "the base image in the store is {}, not the pulled {base_digest}: `imgmode base build --cache-from` built it instead, because this checkout's base definition (containerfiles/base) is not the build step's. Run the shards on the build step's commit",
        a.base_digest
    );
    eprintln!("==> pulled the base image by digest ({base_digest}); nothing was built");
    a.base_disk = file("base.qcow2")?;
    if o.raw {
        a.base_raw = file("base.raw")?;
    }
    let seed = if o.need_seed {
        Some(pull_seed(from, o, &a, ann, &file("seed.json")?)?)
    } else {
        if let Some(k) = o.seed_owner_key {
            eprintln!(
                "==> --seed-owner-key {}: not used, no chosen scenario uses the seed",
                k.display()
            );
        }
        None
    };
    Ok((a, seed))
}

/// The seed named by the artifact's annotations `ann`, with its facts at `facts`.
fn pull_seed(
    from: &ArtifactsRef,
    o: &PullOpts,
    a: &Artifacts,
    ann: &serde_json::Value,
    facts: &Path,
) -> Result<SeedBuild> {
    let digest = ann[SEED_ANNOTATION]
        .as_str()
        .context("the artifact carries no seed, and a chosen scenario needs one: push from a run whose scenarios include one that uses the seed")?;
    let f: SeedFacts = serde_json::from_slice(&std::fs::read(facts)?)
        .context("parsing the artifact's seed.json")?;
    let key = o.seed_owner_key.context(
        "the seed owner's private key is a secret and is not in the artifacts; give the build step's file (its artifacts/seed/seed-owner) with --seed-owner-key",
    )?;
    ensure!(
        public_key(key)? == f.owner_public_key,
        "--seed-owner-key {}: not the key of the seed system the pulled seed was made on",
        key.display()
    );
    let dir = o.dir.join("seed");
    let layout = dir.join("out/seed");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(dir.join("out"))?;
    copy(
        &from.at("seed", digest),
        &format!("oci:{}:latest", layout.display()),
    )?;
    let got = layout_digest(&layout)?;
    ensure!(got == digest, "the seed copied is {got}, not {digest}");
    let archive = dir.join("seed.oci-archive");
    store_seed(a, &layout, &archive)?;
    eprintln!("==> pulled the seed by digest ({digest}) into the store as {SEED_IMAGE}");
    Ok(SeedBuild {
        image: SEED_IMAGE.to_string(),
        digest: f.digest,
        archive,
        layout,
        disk: PathBuf::new(),
        owner_key: key.to_path_buf(),
        phase: PhaseReport {
            facts: f.facts,
            booted_id: f.booted_id,
            booted_checksum: f.booted_checksum,
        },
        identity: f.identity,
        created: f.created,
        keys: f.keys,
        vm_seconds: f.vm_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_bytes_become_the_same_blob_by_their_digest() {
        let d = tempfile::tempdir().unwrap();
        let lay = d.path().join("layout");
        std::fs::create_dir_all(lay.join("blobs/sha256")).unwrap();
        let f = d.path().join("seed.json");
        std::fs::write(&f, b"{}").unwrap();
        let from_file = add_file(&lay, &f, EMPTY_TYPE).unwrap();
        let from_bytes = add_bytes(&lay, b"{}", EMPTY_TYPE).unwrap();
        assert_eq!(from_file, from_bytes);
        // the OCI spec's empty descriptor
        assert_eq!(
            from_bytes["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(from_bytes["size"], 2);
        let blob = blob_path(&lay, from_bytes["digest"].as_str().unwrap());
        assert_eq!(std::fs::read(blob).unwrap(), b"{}");
    }

    #[test]
    fn references_name_a_repository_or_a_layout_and_perhaps_a_digest() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let r: ArtifactsRef = "docker://127.0.0.1:5000/imgmode/vmtest".parse().unwrap();
        assert_eq!(
            r.location,
            Location::Registry("127.0.0.1:5000/imgmode/vmtest".into())
        );
        assert_eq!(
            r.tagged("base"),
            "docker://127.0.0.1:5000/imgmode/vmtest:base"
        );
        assert_eq!(
            r.at("base", &d),
            format!("docker://127.0.0.1:5000/imgmode/vmtest@{d}")
        );
        let p: ArtifactsRef = format!("oci:/srv/shared@{d}").parse().unwrap();
        assert_eq!(p.location, Location::Layout("/srv/shared".into()));
        assert_eq!(p.pinned.as_deref(), Some(d.as_str()));
        assert_eq!(p.to_string(), format!("oci:/srv/shared@{d}"));
        for bad in [
            "docker://reg.example/vmtest:latest",
            "docker://reg.example",
            "oci:relative/dir",
            "oci:/dir:tag",
            "reg.example/vmtest",
            "docker://reg.example/vmtest@sha256:abc",
        ] {
            let e = bad.parse::<ArtifactsRef>().unwrap_err();
            assert!(
                e.to_string().contains("docker://HOST/REPOSITORY"),
                "{bad}: {e}"
            );
        }
    }
}
