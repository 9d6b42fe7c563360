//! The node side: `imgmode upgrade | switch | rollback` (and, through `imgmode-layering`,
//! `apply-machineconfig | revert`) on a
//! booted ostree system (or on a sysroot that is not booted, for installers and tests).
//!
//! Updates go through ostree-ext's importer (skopeo's image proxy, so every transport works and
//! `/etc/containers/registries.conf` is honoured) and libostree: on a booted system the new
//! deployment is *staged* and finalized by `ostree-finalize-staged.service` at shutdown, so a
//! power cut leaves the old or the new deployment bootable. `/etc` follows ostree's 3-way merge
//! at finalization. Rollback only reorders deployments (and drops a staged one), like bootc.
//!
//! Checks that can fail run before anything is fetched or written: the architecture (from the
//! image config) and the free space for the layers to fetch.

use crate::ostree::{deployment_id, load_sysroot};
use anyhow::{anyhow, bail, Context, Result};
use imgmode_support::runtime::block_on;
use ostree_ext::container::store::{
    ImageImporter, LayeredImageState, PrepareResult, PreparedImport,
};
use ostree_ext::container::OstreeImageReference;
use ostree_ext::prelude::*;
use ostree_ext::{gio, glib, ostree};
use serde::Serialize;
use std::path::{Path, PathBuf};

use ostree_ext::container::deploy::ORIGIN_CONTAINER;
/// Where bootc-style images carry kernel arguments.
pub const KARGS_D: &str = "usr/lib/bootc/kargs.d";

/// What a switch or upgrade did (or, with `check`, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct UpdateOutcome {
    pub image: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The deployed commit (absent for `--check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// No new image: the booted deployment already runs this digest.
    pub unchanged: bool,
    /// Staged (finalized at shutdown) rather than written directly.
    pub staged: bool,
    pub layers_total: usize,
    pub layers_fetched: usize,
    /// Compressed bytes of the layers fetched (or to fetch).
    pub bytes_fetched: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kargs_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kargs_removed: Vec<String>,
}

impl UpdateOutcome {
    pub fn to_human(&self, check: bool) -> String {
        if self.unchanged {
            return format!("No changes in {} ({})\n", self.image, self.digest);
        }
        let mut s = if check {
            format!(
                "Update available for {}:\n  Digest: {}\n  Layers to fetch: {} of {} ({} bytes)\n",
                self.image, self.digest, self.layers_fetched, self.layers_total, self.bytes_fetched
            )
        } else {
            format!(
                "{} {}\n  Digest: {}\n  Commit: {}\n  Layers fetched: {} of {} ({} bytes)\n",
                if self.staged { "Staged" } else { "Deployed" },
                self.image,
                self.digest,
                self.commit.as_deref().unwrap_or("-"),
                self.layers_fetched,
                self.layers_total,
                self.bytes_fetched
            )
        };
        if let Some(v) = &self.version {
            s.push_str(&format!("  Version: {v}\n"));
        }
        for k in &self.kargs_added {
            s.push_str(&format!("  Kernel argument added: {k}\n"));
        }
        for k in &self.kargs_removed {
            s.push_str(&format!("  Kernel argument removed: {k}\n"));
        }
        if !check && self.staged {
            s.push_str("Reboot to boot it (imgmode upgrade --apply reboots for you).\n");
        }
        s
    }
}

/// The image reference the booted (or default) deployment follows.
pub fn current_imgref(sysroot_path: &Path) -> Result<OstreeImageReference> {
    let sysroot = load_sysroot(sysroot_path)?;
    let d = sysroot
        .booted_deployment()
        .or_else(|| sysroot.deployments().into_iter().find(|d| !d.is_staged()))
        .ok_or_else(|| anyhow!("the sysroot has no deployment"))?;
    let origin = d
        .origin()
        .and_then(|o| o.string("origin", ORIGIN_CONTAINER).ok())
        .ok_or_else(|| {
            anyhow!(
                "the booted deployment follows no container image (its origin has no {ORIGIN_CONTAINER}); use imgmode switch IMAGE"
            )
        })?;
    OstreeImageReference::try_from(origin.as_str()).map_err(|e| {
        anyhow!("the booted deployment's origin {origin:?} is not an image reference: {e}")
    })
}

/// The path a local reference (`oci:`, `oci-archive:`, `docker-archive:`, `dir:`) names, when
/// this machine does not have it: a disk written from a build machine's store follows a path
/// of that machine, so an automatic update on the node has nothing to fetch.
pub fn missing_local_path(target: &OstreeImageReference) -> Option<PathBuf> {
    use ostree_ext::container::Transport;
    let name = &target.imgref.name;
    let path = match target.imgref.transport {
        Transport::OciDir | Transport::OciArchive | Transport::DockerArchive => {
            imgmode_image::imgref::oci_dir_and_tag(name).0
        }
        Transport::Dir => PathBuf::from(name),
        Transport::Registry | Transport::ContainerStorage => return None,
    };
    (!path.exists()).then_some(path)
}

/// Kernel arguments an image's `kargs.d` files ask for (bootc's format: TOML with
/// `kargs = [...]` and optional `match-architectures = [...]`), in file-name order.
pub fn kargs_of_commit(repo: &ostree::Repo, commit: &str) -> Result<Vec<String>> {
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading commit {commit}"))?;
    let dir = root.resolve_relative_path(KARGS_D);
    if !dir.query_exists(gio::Cancellable::NONE) {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    let en = dir.enumerate_children(
        "standard::name",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    while let Some(info) = en.next_file(gio::Cancellable::NONE)? {
        let name = info.name();
        if name.extension().is_some_and(|e| e == "toml") {
            files.push(name);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for name in files {
        let f = dir.child(&name);
        // Read through the repository: a commit's files are content objects.
        let rf = f
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow!("{} is not a file of the repository", name.display()))?;
        rf.ensure_resolved()?;
        let (stream, _, _) = repo.load_file(rf.checksum().as_str(), gio::Cancellable::NONE)?;
        let mut bytes = Vec::new();
        if let Some(stream) = stream {
            std::io::Read::read_to_end(&mut stream.into_read(), &mut bytes)?;
        }
        let text = String::from_utf8(bytes)
            .with_context(|| format!("/{KARGS_D}/{} is not UTF-8", name.display()))?;
        out.extend(parse_kargs_toml(&text).with_context(|| {
            format!("parsing /{KARGS_D}/{} of commit {commit}", name.display())
        })?);
    }
    Ok(out)
}

/// One kargs.d file.
pub fn parse_kargs_toml(text: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct KargsFile {
        kargs: Vec<String>,
        #[serde(default)]
        match_architectures: Option<Vec<String>>,
    }
    let f: KargsFile = toml::from_str(text)?;
    if let Some(archs) = f.match_architectures {
        if !archs
            .iter()
            .any(|a| a == imgmode_support::host::kernel_arch())
        {
            return Ok(Vec::new());
        }
    }
    Ok(f.kargs)
}

/// The kernel arguments of a deployment, without the `ostree=` argument libostree adds itself.
fn deployment_kargs(d: &ostree::Deployment) -> Vec<String> {
    d.bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| {
            o.split_whitespace()
                .filter(|a| !a.starts_with("ostree="))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// New kernel arguments: the current ones minus what the old image's kargs.d added, plus
/// what the new image's kargs.d asks for. `None` when nothing changes.
pub fn merge_kargs(current: &[String], old: &[String], new: &[String]) -> Option<Vec<String>> {
    if old == new {
        return None;
    }
    let mut out: Vec<String> = current
        .iter()
        .filter(|a| !old.contains(a))
        .cloned()
        .collect();
    for a in new {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    Some(out)
}

use imgmode_support::fs::free_bytes;

/// How much room an import of `compressed` layer bytes needs: the uncompressed objects
/// (gzip shrinks a root filesystem about 2.5x) plus a margin for the deployment checkout.
pub fn space_needed(compressed: u64) -> u64 {
    (compressed / 2)
        .saturating_mul(5)
        .saturating_add(64 * 1024 * 1024)
}

/// Options for a switch or upgrade.
#[derive(Debug, Clone, Default)]
pub struct UpdateOpts {
    /// Only fetch the manifest and config, and say whether there is an update.
    pub check: bool,
    /// Skip the free-space check (tests).
    pub skip_space_check: bool,
    /// Deploy the image from the node's own repository when it is still there (revert: the
    /// image the node ran before is not fetched again, and need not be reachable).
    pub prefer_local: bool,
    /// Say each step on stderr (`==> [ Ns] fetching ...`, `==> [ Ns] staging ...`), as the CLI
    /// does unless `--quiet`.
    pub progress: bool,
}

/// Fetch and stage `target` (the deployment's new origin).
pub fn switch(
    sysroot_path: &Path,
    target: &OstreeImageReference,
    opts: &UpdateOpts,
) -> Result<UpdateOutcome> {
    block_on(stage(sysroot_path, target, opts))?
}

/// Fetch and stage the image the booted deployment follows, if it changed.
pub fn upgrade(sysroot_path: &Path, opts: &UpdateOpts) -> Result<UpdateOutcome> {
    let target = current_imgref(sysroot_path)?;
    block_on(stage(sysroot_path, &target, opts))?
}

async fn stage(
    sysroot_path: &Path,
    target: &OstreeImageReference,
    opts: &UpdateOpts,
) -> Result<UpdateOutcome> {
    let sysroot = load_sysroot(sysroot_path)?;
    let sysroot = ostree_ext::sysroot::SysrootLock::new_from_sysroot(&sysroot)
        .await
        .context("locking the sysroot (is another update running?)")?;
    let repo = sysroot.repo();
    let booted = sysroot.booted_deployment();
    let stateroot = booted
        .as_ref()
        .map(|d| d.osname().to_string())
        .or_else(|| {
            sysroot
                .deployments()
                .first()
                .map(|d| d.osname().to_string())
        })
        .unwrap_or_else(|| "default".to_string());
    let merge = sysroot.merge_deployment(Some(&stateroot));
    let steps = imgmode_support::Steps::new(!opts.progress);
    steps.step(&format!("reading {target}"));
    let local = if opts.prefer_local {
        ostree_ext::container::store::query_image(&repo, &target.imgref)?
    } else {
        None
    };
    let (state, fetched) = if let Some(state) = local {
        let n = state.manifest.layers().len();
        (state, (n, 0usize, 0u64))
    } else {
        let staged = sysroot.staged_deployment();
        let current = Current {
            booted: booted.as_ref(),
            merge: merge.as_ref(),
            staged: staged.as_ref(),
        };
        match fetch(&repo, sysroot_path, target, opts, current, &steps).await? {
            Fetched::Done(outcome) => return Ok(outcome),
            Fetched::Image(state, fetched) => (state, fetched),
        }
    };
    let commit = state.merge_commit.clone();

    // kernel arguments from the images' kargs.d
    let kargs = KargsChange::of(&repo, merge.as_ref(), &commit)?;
    let staged = booted.is_some();
    steps.step(&format!(
        "{} the deployment of commit {commit}",
        if staged { "staging" } else { "writing" }
    ));
    deploy(
        &sysroot,
        &stateroot,
        &commit,
        target,
        merge.as_ref(),
        kargs.argv.as_deref(),
        staged,
    )?;
    // Drop image layers no deployment or image ref needs any more.
    if let Err(e) = ostree_ext::container::deploy::remove_undeployed_images(&sysroot) {
        tracing::warn!("pruning unused images: {e:#}");
    }
    let (total, n, bytes) = fetched;
    Ok(UpdateOutcome {
        image: target.to_string(),
        digest: state.manifest_digest.to_string(),
        version: state.version().map(str::to_string),
        commit: Some(commit),
        unchanged: false,
        staged,
        layers_total: total,
        layers_fetched: n,
        bytes_fetched: bytes,
        kargs_added: kargs.added,
        kargs_removed: kargs.removed,
    })
}

/// The deployments an update starts from: the booted one and the merge deployment.
#[derive(Clone, Copy)]
struct Current<'a> {
    booted: Option<&'a ostree::Deployment>,
    merge: Option<&'a ostree::Deployment>,
    /// The deployment staged for the next boot, if any.
    staged: Option<&'a ostree::Deployment>,
}

/// What fetching found: the answer already (nothing changes, or `--check`), or the image in
/// the repository with (layers in all, layers fetched, compressed bytes fetched).
enum Fetched {
    Done(UpdateOutcome),
    Image(Box<LayeredImageState>, (usize, usize, u64)),
}

/// Fetch the manifest of `target` and, unless it is there already or this is a check, its
/// layers.
async fn fetch(
    repo: &ostree::Repo,
    sysroot_path: &Path,
    target: &OstreeImageReference,
    opts: &UpdateOpts,
    current: Current<'_>,
    steps: &imgmode_support::Steps,
) -> Result<Fetched> {
    crate::disk::check_local_layout(target).context("nothing was changed")?;
    let mut imp = ImageImporter::new(repo, target, crate::proxy_config())
        .await
        .with_context(|| format!("opening {target}"))?;
    imp.require_bootable();
    let prepared = imp
        .prepare()
        .await
        .map_err(crate::disk::explain_config_error)
        .with_context(|| format!("fetching the manifest of {target}"))?;
    match prepared {
        PrepareResult::AlreadyPresent(state) => Ok(already_present(state, target, opts, current)),
        PrepareResult::Ready(prep) => import(imp, prep, sysroot_path, target, opts, steps).await,
    }
}

/// The image is in the repository: unchanged when the deployment already runs it and
/// follows `target`, or when it is staged already, following `target` (a second update
/// check before the reboot, such as the update timer's, stages nothing again).
fn already_present(
    state: Box<LayeredImageState>,
    target: &OstreeImageReference,
    opts: &UpdateOpts,
    current: Current<'_>,
) -> Fetched {
    let Current {
        booted,
        merge,
        staged,
    } = current;
    let follows = |d: Option<&ostree::Deployment>| {
        d.and_then(|d| d.origin())
            .and_then(|o| o.string("origin", ORIGIN_CONTAINER).ok())
            .is_some_and(|o| o.as_str() == target.to_string())
    };
    let runs =
        |d: Option<&ostree::Deployment>| d.is_some_and(|d| d.csum() == state.merge_commit.as_str());
    let unchanged = (runs(booted.or(merge)) && follows(merge)) || (runs(staged) && follows(staged));
    let outcome = UpdateOutcome {
        image: target.to_string(),
        digest: state.manifest_digest.to_string(),
        version: state.version().map(str::to_string),
        commit: (!opts.check).then(|| state.merge_commit.clone()),
        unchanged,
        layers_total: state.manifest.layers().len(),
        ..Default::default()
    };
    if unchanged || opts.check {
        return Fetched::Done(outcome);
    }
    Fetched::Image(state, (outcome.layers_total, 0usize, 0u64))
}

/// Check the image's configuration and the free space, then fetch the layers the repository
/// lacks (a check stops before the space check and says what it would fetch).
async fn import(
    imp: ImageImporter,
    prep: Box<PreparedImport>,
    sysroot_path: &Path,
    target: &OstreeImageReference,
    opts: &UpdateOpts,
    steps: &imgmode_support::Steps,
) -> Result<Fetched> {
    crate::disk::check_config(target, &prep.config).context("nothing was changed")?;
    let to_fetch: Vec<u64> = prep
        .all_layers()
        .filter(|l| l.commit.is_none())
        .map(|l| l.layer().size())
        .collect();
    let bytes: u64 = to_fetch.iter().sum();
    let total = prep.all_layers().count();
    if opts.check {
        return Ok(Fetched::Done(UpdateOutcome {
            image: target.to_string(),
            digest: prep.manifest_digest.to_string(),
            version: prep.version().map(str::to_string),
            layers_total: total,
            layers_fetched: to_fetch.len(),
            bytes_fetched: bytes,
            ..Default::default()
        }));
    }
    if !opts.skip_space_check {
        let repo_path = sysroot_path.join("ostree/repo");
        let free = free_bytes(&repo_path)?;
        let need = space_needed(bytes);
        if free < need {
            bail!(
                "not enough free space in {}: the update needs about {} MiB ({} MiB of layers to fetch), {} MiB are available; free space (for example remove the rollback deployment with ostree admin undeploy 1) and retry; nothing was changed",
                repo_path.display(),
                need >> 20,
                bytes >> 20,
                free >> 20
            );
        }
    }
    let n = to_fetch.len();
    steps.step(&format!(
        "fetching {n} of {total} layer(s) ({} MiB) of {target}",
        bytes >> 20
    ));
    let state = imp
        .import(prep)
        .await
        .with_context(|| format!("importing {target}"))?;
    Ok(Fetched::Image(state, (total, n, bytes)))
}

/// How an update changes the kernel arguments (from the old and the new image's kargs.d).
struct KargsChange {
    /// The new kernel command line (`None`: unchanged).
    argv: Option<Vec<String>>,
    added: Vec<String>,
    removed: Vec<String>,
}

impl KargsChange {
    fn of(repo: &ostree::Repo, merge: Option<&ostree::Deployment>, commit: &str) -> Result<Self> {
        let old_kargs = match merge {
            Some(m) => kargs_of_commit(repo, m.csum().as_str())?,
            None => Vec::new(),
        };
        let new_kargs = kargs_of_commit(repo, commit)?;
        let current = merge.map(deployment_kargs).unwrap_or_default();
        let argv = merge_kargs(&current, &old_kargs, &new_kargs);
        let added: Vec<String> = new_kargs
            .iter()
            .filter(|a| !old_kargs.contains(a))
            .cloned()
            .collect();
        let removed: Vec<String> = old_kargs
            .iter()
            .filter(|a| !new_kargs.contains(a))
            .cloned()
            .collect();
        Ok(KargsChange {
            argv,
            added,
            removed,
        })
    }
}

/// Stage (on a booted system) or write the deployment of `commit`, following `target`.
fn deploy(
    sysroot: &ostree::Sysroot,
    stateroot: &str,
    commit: &str,
    target: &OstreeImageReference,
    merge: Option<&ostree::Deployment>,
    kargs: Option<&[String]>,
    staged: bool,
) -> Result<()> {
    let kargs_ref: Option<Vec<&str>> = kargs.map(|k| k.iter().map(String::as_str).collect());
    let origin = glib::KeyFile::new();
    origin.set_string("origin", ORIGIN_CONTAINER, &target.to_string());
    let dopts = ostree::SysrootDeployTreeOpts {
        override_kernel_argv: kargs_ref.as_deref(),
        ..Default::default()
    };
    if staged {
        sysroot
            .stage_tree_with_options(
                Some(stateroot),
                commit,
                Some(&origin),
                merge,
                &dopts,
                gio::Cancellable::NONE,
            )
            .context("staging the new deployment")?;
    } else {
        let d = sysroot.deploy_tree_with_options(
            Some(stateroot),
            commit,
            Some(&origin),
            merge,
            Some(&dopts),
            gio::Cancellable::NONE,
        )?;
        sysroot.simple_write_deployment(
            Some(stateroot),
            &d,
            merge,
            ostree::SysrootSimpleWriteDeploymentFlags::NONE,
            gio::Cancellable::NONE,
        )?;
    }
    Ok(())
}

/// What `rollback` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackOutcome {
    /// The deployment that boots next.
    pub next: String,
    /// The deployment that becomes the rollback target.
    pub previous: String,
    /// A staged deployment that was dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_staged: Option<String>,
}

/// Make the rollback deployment the default; drop a staged deployment. `/etc` changes made
/// since are not carried over (each deployment keeps its own `/etc`).
pub fn rollback(sysroot_path: &Path) -> Result<RollbackOutcome> {
    block_on(async {
        let sysroot = load_sysroot(sysroot_path)?;
        let sysroot = ostree_ext::sysroot::SysrootLock::new_from_sysroot(&sysroot).await?;
        let deployments = sysroot.deployments();
        let staged = sysroot.staged_deployment();
        let current = sysroot
            .booted_deployment()
            .or_else(|| deployments.iter().find(|d| !d.is_staged()).cloned())
            .ok_or_else(|| anyhow!("the sysroot has no deployment"))?;
        let target = deployments
            .iter()
            .find(|d| !d.is_staged() && !d.equal(&current))
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "there is no rollback deployment: only {} is deployed",
                    deployment_id(&current)
                )
            })?;
        let mut order = vec![target.clone(), current.clone()];
        order.extend(
            deployments
                .iter()
                .filter(|d| !d.is_staged() && !d.equal(&current) && !d.equal(&target))
                .cloned(),
        );
        sysroot
            .write_deployments(&order, gio::Cancellable::NONE)
            .context("writing the new deployment order")?;
        Ok(RollbackOutcome {
            next: deployment_id(&target),
            previous: deployment_id(&current),
            dropped_staged: staged.as_ref().map(deployment_id),
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_path_the_node_lacks_is_named() {
        let r = |s: &str| OstreeImageReference::try_from(s).unwrap();
        let td = tempfile::tempdir().unwrap();
        let have = format!("ostree-unverified-image:oci:{}", td.path().display());
        assert_eq!(missing_local_path(&r(&have)), None);
        assert_eq!(
            missing_local_path(&r(
                "ostree-unverified-image:oci:/nonexistent/imgmode-base/latest"
            )),
            Some(PathBuf::from("/nonexistent/imgmode-base/latest"))
        );
        assert_eq!(
            missing_local_path(&r(
                "ostree-unverified-image:oci-archive:/nonexistent/a.tar:1"
            )),
            Some(PathBuf::from("/nonexistent/a.tar"))
        );
        assert_eq!(
            missing_local_path(&r("ostree-unverified-registry:quay.io/org/os:latest")),
            None
        );
    }

    #[test]
    fn kargs_files() {
        assert_eq!(
            parse_kargs_toml("kargs = [\"console=ttyS0\", \"quiet\"]\n").unwrap(),
            vec!["console=ttyS0", "quiet"]
        );
        let other = if imgmode_support::host::kernel_arch() == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        };
        assert!(parse_kargs_toml(&format!(
            "kargs = [\"a\"]\nmatch-architectures = [\"{other}\"]\n"
        ))
        .unwrap()
        .is_empty());
        assert!(parse_kargs_toml("kargs = \"notalist\"").is_err());
        assert!(parse_kargs_toml("karg = [\"x\"]").is_err());
    }

    #[test]
    fn kargs_are_read_from_a_commit() {
        use crate::ostree::{commit_dir, init_repo, open_repo};
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        let d = tree.join(KARGS_D);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("20-b.toml"), "kargs = [\"b=2\"]\n").unwrap();
        std::fs::write(d.join("10-a.toml"), "kargs = [\"a=1\", \"quiet\"]\n").unwrap();
        std::fs::write(d.join("README"), "not toml").unwrap();
        let commit = commit_dir(&repo, "t", &tree).unwrap();
        let r = open_repo(&repo).unwrap();
        assert_eq!(
            kargs_of_commit(&r, &commit).unwrap(),
            vec!["a=1", "quiet", "b=2"]
        );
        // no kargs.d at all
        std::fs::remove_dir_all(tree.join("usr")).unwrap();
        std::fs::write(tree.join("f"), "x").unwrap();
        let commit = commit_dir(&repo, "u", &tree).unwrap();
        assert!(kargs_of_commit(&r, &commit).unwrap().is_empty());
    }

    #[test]
    fn kargs_merge() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(merge_kargs(&s(&["rw", "a"]), &s(&["a"]), &s(&["a"])), None);
        assert_eq!(
            merge_kargs(&s(&["rw", "a", "user=1"]), &s(&["a"]), &s(&["b"])),
            Some(s(&["rw", "user=1", "b"]))
        );
        assert_eq!(
            merge_kargs(&s(&["rw"]), &s(&[]), &s(&["mitigations=off"])),
            Some(s(&["rw", "mitigations=off"]))
        );
    }

    #[test]
    fn space_estimate_covers_uncompressed_content() {
        assert!(space_needed(100 << 20) >= 250 << 20);
        assert_eq!(space_needed(u64::MAX), u64::MAX);
    }
}
