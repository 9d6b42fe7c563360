//! Thin wrappers over libostree and ostree-ext: repositories, commits, refs, checkouts, local
//! pulls, sysroots and deployments through the bindings (each function names the `ostree` CLI
//! command it stands for, and behaves like it), encapsulating a commit as an OCI image, and
//! reading a sysroot's deployments for `imgmode status` ([`status`]).
//!
//! libostree is blocking; the few async ostree-ext entry points run on the process's one
//! runtime (`imgmode_support::runtime::block_on`), so callers stay synchronous.

use anyhow::{bail, Context, Result};
use ostree_ext::container::{self as oc};
use ostree_ext::gio::prelude::*;
use ostree_ext::{gio, glib, ostree};

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use imgmode_support::runtime::block_on;

mod status;
pub use status::{deployment_id, load_sysroot, sysroot_status, DeploymentStatus, SysrootStatus};

pub fn open_repo(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new(&gio::File::for_path(path));
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repo {}", path.display()))?;
    Ok(repo)
}

/// Encapsulate `rev` of the repo at `repo_path` into the OCI layout directory `dest`.
pub fn encapsulate(
    repo_path: &Path,
    rev: &str,
    labels: BTreeMap<String, String>,
    dest: &Path,
    max_compression: bool,
) -> Result<String> {
    let repo = open_repo(repo_path)?;
    let config = oc::Config {
        labels: Some(labels),
        cmd: Some(vec!["/sbin/init".into()]),
    };
    let mut opts = oc::ExportOpts::default();
    // Split content over several layers so that an update re-downloads only what changed.
    opts.max_layers = std::num::NonZeroU32::new(32);
    // gzip level 1 unless asked otherwise: about 4x faster for ~15% larger layers.
    opts.skip_compression = !max_compression;
    let dest_ref = oc::ImageReference {
        transport: oc::Transport::OciDir,
        name: dest.to_string_lossy().into_owned(),
    };
    let digest = block_on(oc::encapsulate(&repo, rev, &config, Some(opts), &dest_ref))?
        .with_context(|| format!("encapsulating {rev} into {}", dest.display()))?;
    Ok(digest.to_string())
}

/// `ostree init --mode=MODE`: create the repository at `repo` (`bare-user` needs no root).
pub fn init_repo(repo: &Path, mode: &str) -> Result<()> {
    let mode = ostree::Repo::mode_from_string(mode)
        .with_context(|| format!("creating the ostree repo {}", repo.display()))?;
    ostree::Repo::new_for_path(repo)
        .create(mode, gio::Cancellable::NONE)
        .with_context(|| format!("creating the ostree repo {}", repo.display()))?;
    Ok(())
}

/// One `--tree=` argument of `ostree commit`: the trees of a commit are laid over each other in
/// order.
#[derive(Debug, Clone, Copy)]
pub enum Tree<'a> {
    /// `--tree=dir=PATH`: a directory on disk.
    Dir(&'a Path),
    /// `--tree=ref=REV`: the root of a commit already in the repository.
    Ref(&'a str),
}

/// The options of [`commit`], named after the `ostree commit` flags they stand for. Ref and
/// collection bindings are never added (`--no-bindings`).
#[derive(Debug, Clone, Default)]
pub struct CommitOpts {
    /// `--subject` (none: empty).
    pub subject: Option<String>,
    /// `--body` (none: empty).
    pub body: Option<String>,
    /// `--add-metadata-string=KEY=VALUE`, in order.
    pub metadata: Vec<(String, String)>,
    /// `--bootable`: add `ostree.bootable` and `ostree.linux` (the one kernel under
    /// `/usr/lib/modules`) to the metadata.
    pub bootable: bool,
    /// `--consume`: delete the committed files of `Tree::Dir` trees as they are written.
    pub consume: bool,
    /// `--timestamp`: the commit's time in seconds since the epoch; none: now (or
    /// `SOURCE_DATE_EPOCH`, which libostree honours).
    pub timestamp: Option<u64>,
}

/// `ostree commit --no-bindings --branch=BRANCH --tree=...`: commit `trees` (laid over each
/// other in order) to `branch`, whose current commit (if any) becomes the parent, in one
/// transaction. Returns the commit.
pub fn commit(repo: &Path, branch: &str, trees: &[Tree], opts: &CommitOpts) -> Result<String> {
    commit_in(&open_repo(repo)?, branch, trees, opts)
}

/// [`commit`] into an open repository.
fn commit_in(
    repo: &ostree::Repo,
    branch: &str,
    trees: &[Tree],
    opts: &CommitOpts,
) -> Result<String> {
    let c = gio::Cancellable::NONE;
    let parent = repo
        .resolve_rev(branch, true)
        .with_context(|| format!("resolving the branch {branch}"))?;
    let modifier = opts
        .consume
        .then(|| ostree::RepoCommitModifier::new(ostree::RepoCommitModifierFlags::CONSUME, None));
    let tx = repo
        .auto_transaction(c)
        .context("preparing an ostree transaction")?;
    let mtree = ostree::MutableTree::new();
    for tree in trees {
        match tree {
            Tree::Dir(dir) => {
                let path = dir
                    .to_str()
                    .with_context(|| format!("{} is not valid UTF-8", dir.display()))?;
                repo.write_dfd_to_mtree(ostree::AT_FDCWD, path, &mtree, modifier.as_ref(), c)
                    .with_context(|| format!("writing {} to the repository", dir.display()))?;
            }
            Tree::Ref(rev) => {
                let (root, _) = repo
                    .read_commit(rev, c)
                    .with_context(|| format!("reading the commit {rev}"))?;
                repo.write_directory_to_mtree(&root, &mtree, modifier.as_ref(), c)
                    .with_context(|| format!("adding the tree of {rev}"))?;
            }
        }
    }
    let root = repo.write_mtree(&mtree, c).context("writing the tree")?;
    let root = root
        .downcast_ref::<ostree::RepoFile>()
        .context("the written tree is not a repository file")?;
    let metadata = commit_metadata(root, opts)?;
    let (subject, body) = (opts.subject.as_deref(), opts.body.as_deref());
    let commit = match opts.timestamp {
        Some(t) => repo.write_commit_with_time(
            parent.as_deref(),
            subject,
            body,
            metadata.as_ref(),
            root,
            t,
            c,
        ),
        None => repo.write_commit(parent.as_deref(), subject, body, metadata.as_ref(), root, c),
    }
    .with_context(|| format!("writing the commit of {branch}"))?;
    repo.transaction_set_ref(None, branch, Some(commit.as_str()));
    tx.commit(c).context("committing the ostree transaction")?;
    Ok(commit.to_string())
}

/// The metadata `ostree commit` writes: `--add-metadata-string` pairs in order (an `a{sv}` built
/// like the CLI builds it), then for `--bootable` the same dictionary round-trip and keys as
/// `ostree_commit_metadata_for_bootable` (which the bindings do not expose).
fn commit_metadata(root: &ostree::RepoFile, opts: &CommitOpts) -> Result<Option<glib::Variant>> {
    let strings = (!opts.metadata.is_empty()).then(|| {
        glib::Variant::array_from_iter_with_type(
            glib::VariantTy::new("{sv}").expect("a valid type"),
            opts.metadata.iter().map(|(k, v)| {
                glib::Variant::from_dict_entry(
                    &k.to_variant(),
                    &glib::Variant::from_variant(&v.to_variant()),
                )
            }),
        )
    });
    if !opts.bootable {
        return Ok(strings);
    }
    let dict = glib::VariantDict::new(strings.as_ref());
    let kver = bootable_kernel(root.upcast_ref())?;
    dict.insert_value(*ostree::METADATA_KEY_BOOTABLE, &true.to_variant());
    dict.insert_value(*ostree::METADATA_KEY_LINUX, &kver.to_variant());
    Ok(Some(dict.end()))
}

/// The kernel version of a bootable tree as libostree finds it: the one directory of
/// `/usr/lib/modules` that holds a `vmlinuz`.
fn bootable_kernel(root: &gio::File) -> Result<String> {
    let modules = root.resolve_relative_path("usr/lib/modules");
    let mut found: Option<String> = None;
    for (name, ty) in children(&modules).context("looking for the kernel in /usr/lib/modules")? {
        if ty != gio::FileType::Directory
            || !modules
                .child(&name)
                .child("vmlinuz")
                .query_exists(gio::Cancellable::NONE)
        {
            continue;
        }
        if found.is_some() {
            bail!("Multiple kernels found in /usr/lib/modules");
        }
        found = Some(name);
    }
    found.context("No kernel found in /usr/lib/modules")
}

/// ostree's `OSTREE_GIO_FAST_QUERYINFO`: what libostree asks of every file it walks.
const FAST_QUERYINFO: &str = "standard::name,standard::type,standard::size,standard::is-symlink,\
     standard::symlink-target,unix::device,unix::inode,unix::mode,unix::uid,unix::gid,unix::rdev";

/// The entries of a directory (a repository file or one on disk), in enumeration order.
fn children(dir: &gio::File) -> Result<Vec<(String, gio::FileType)>, glib::Error> {
    Ok(enumerate(dir)?
        .into_iter()
        .map(|i| (i.name().to_string_lossy().into_owned(), i.file_type()))
        .collect())
}

/// The infos of a directory's entries (symlinks not followed), in enumeration order.
fn enumerate(dir: &gio::File) -> Result<Vec<gio::FileInfo>, glib::Error> {
    let en = dir.enumerate_children(
        FAST_QUERYINFO,
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    let mut out = Vec::new();
    while let Some(info) = en.next_file(gio::Cancellable::NONE)? {
        out.push(info);
    }
    Ok(out)
}

/// Commit the directory `tree` to `branch` of `repo`
/// (`ostree commit --branch=B --no-bindings --tree=dir=D`); returns the commit.
pub fn commit_dir(repo: &Path, branch: &str, tree: &Path) -> Result<String> {
    commit(repo, branch, &[Tree::Dir(tree)], &CommitOpts::default())
        .with_context(|| format!("committing {} to {branch}", tree.display()))
}

/// `ostree ls -R REV PATH` names only: `path` and every path below it in the commit, absolute.
pub fn ls_recursive(repo: &ostree::Repo, rev: &str, path: &str) -> Result<Vec<String>> {
    let (root, _) = repo
        .read_commit(rev, gio::Cancellable::NONE)
        .with_context(|| format!("reading the commit {rev}"))?;
    let top = format!("/{}", path.trim_matches('/'));
    let f = match top.trim_start_matches('/') {
        "" => root,
        rel => root.resolve_relative_path(rel),
    };
    let info = f
        .query_info(
            FAST_QUERYINFO,
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("Inspecting path '{top}' of {rev}"))?;
    let mut out = vec![top.clone()];
    if info.file_type() == gio::FileType::Directory {
        ls_into(&f, &top, &mut out).with_context(|| format!("listing {top} of {rev}"))?;
    }
    Ok(out)
}

fn ls_into(dir: &gio::File, path: &str, out: &mut Vec<String>) -> Result<(), glib::Error> {
    let base = path.trim_end_matches('/');
    for (name, ty) in children(dir)? {
        let p = format!("{base}/{name}");
        out.push(p.clone());
        if ty == gio::FileType::Directory {
            ls_into(&dir.child(&name), &p, out)?;
        }
    }
    Ok(())
}

/// Check that a commit holds exactly one kernel (`/usr/lib/modules/*/vmlinuz`) with its
/// initramfs, as `bootc container lint` does.
pub fn require_one_kernel(repo: &Path, commit: &str) -> Result<()> {
    let names = ls_recursive(&open_repo(repo)?, commit, "/usr/lib/modules")?;
    let kernels: Vec<&String> = names.iter().filter(|n| n.ends_with("/vmlinuz")).collect();
    if kernels.len() != 1 {
        bail!("commit {commit} has {} kernels under /usr/lib/modules; a bootable image needs exactly one", kernels.len());
    }
    let initramfs = kernels[0].replace("/vmlinuz", "/initramfs.img");
    if !names.contains(&initramfs) {
        bail!("commit {commit} has no {initramfs}");
    }
    Ok(())
}

/// `ostree refs --list [PREFIX]`: the full names of the refs (under `prefix`), sorted. Remote
/// refs are named `REMOTE:REF`.
pub fn list_refs(repo: &Path, prefix: Option<&str>) -> Result<Vec<String>> {
    refs_in(&open_repo(repo)?, prefix)
        .with_context(|| format!("listing the refs of {}", repo.display()))
}

fn refs_in(repo: &ostree::Repo, prefix: Option<&str>) -> Result<Vec<String>> {
    let mut refs: Vec<String> = repo
        .list_refs_ext(
            prefix,
            ostree::RepoListRefsExtFlags::NONE,
            gio::Cancellable::NONE,
        )?
        .into_keys()
        .collect();
    refs.sort();
    Ok(refs)
}

/// `ostree refs --delete REF` for each of `refs` (exact names), then
/// `ostree prune --refs-only`: drop the refs and every object only they kept.
pub fn delete_refs_and_prune(repo: &Path, refs: &[String]) -> Result<()> {
    let r = open_repo(repo)?;
    for name in refs {
        r.set_ref_immediate(None, name, None, gio::Cancellable::NONE)
            .with_context(|| format!("deleting the ref {name} of {}", repo.display()))?;
    }
    r.prune(
        ostree::RepoPruneFlags::REFS_ONLY,
        -1,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("pruning {}", repo.display()))?;
    Ok(())
}

/// `ostree checkout REV DEST`: the tree of `rev` written to `dest` (which must not exist), as
/// the CLI does by default (hardlinks from a bare repository, nothing overwritten).
pub fn checkout(repo: &ostree::Repo, rev: &str, dest: &Path) -> Result<()> {
    let commit = repo
        .require_rev(rev)
        .with_context(|| format!("resolving {rev}"))?;
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        overwrite_mode: ostree::RepoCheckoutOverwriteMode::None,
        ..Default::default()
    };
    repo.checkout_at(
        Some(&opts),
        ostree::AT_FDCWD,
        dest,
        &commit,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("checking out {rev} to {}", dest.display()))?;
    Ok(())
}

/// `ostree pull-local FROM [REFS_OR_COMMITS...]`: copy refs (as local refs) or commits, with
/// every object they need, from the repository at `from` into the one at `repo`. No refs named:
/// all refs of `from`.
pub fn pull_local(repo: &Path, from: &Path, refs_or_commits: &[String]) -> Result<()> {
    let dest = open_repo(repo)?;
    let src = open_repo(from)?;
    let refs: Vec<String> = if refs_or_commits.is_empty() {
        src.list_refs(None, gio::Cancellable::NONE)
            .with_context(|| format!("listing the refs of {}", from.display()))?
            .into_keys()
            .collect()
    } else {
        refs_or_commits.to_vec()
    };
    let abs = std::path::absolute(from)?;
    let url = format!(
        "file://{}",
        abs.to_str()
            .with_context(|| format!("{} is not valid UTF-8", from.display()))?
    );
    // The options `ostree pull-local` passes: no signature checks on a local pull.
    let opts = glib::VariantDict::new(None);
    opts.insert_value(
        "flags",
        &(ostree::RepoPullFlags::NONE.bits() as i32).to_variant(),
    );
    opts.insert_value("refs", &refs.to_variant());
    opts.insert_value("require-static-deltas", &false.to_variant());
    opts.insert_value("depth", &0i32.to_variant());
    opts.insert_value("disable-sign-verify", &true.to_variant());
    opts.insert_value("disable-sign-verify-summary", &true.to_variant());
    dest.pull_with_options(&url, &opts.end(), None, gio::Cancellable::NONE)
        .with_context(|| {
            format!(
                "pulling {} from {} into {}",
                refs.join(" "),
                from.display(),
                repo.display()
            )
        })?;
    Ok(())
}

/// [`pull_local`]'s result at the cost of one rename, where that is the same thing: `from`'s
/// whole object store becomes `repo`'s, then each of `refs` (ref names of `from`; commit
/// checksums are skipped, their objects come along) is set in `repo` to what it names in
/// `from`. Only when both are in the same mode on one filesystem and `repo` holds no object
/// yet (a new sysroot's); otherwise nothing is touched and it returns false. Like a local
/// pull (trusted, as `ostree pull-local` is by default) it checks no object's checksum; unlike
/// one it also keeps objects no ref reaches (a prune drops them).
pub fn adopt_objects(repo: &Path, from: &Path, refs: &[String]) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let dest = open_repo(repo)?;
    let src = open_repo(from)?;
    let (objects, theirs) = (repo.join("objects"), from.join("objects"));
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    let empty = std::fs::read_dir(&objects)
        .with_context(|| format!("reading {}", objects.display()))?
        .next()
        .is_none();
    if dest.mode() != src.mode()
        || dev(&objects).is_none()
        || dev(&objects) != dev(&theirs)
        || !empty
    {
        return Ok(false);
    }
    // what the refs name, read before anything moves
    let mut targets = Vec::new();
    for r in refs {
        if r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit()) {
            src.require_rev(r)
                .with_context(|| format!("{} has no commit {r}", from.display()))?;
            continue;
        }
        let c = src
            .require_rev(r)
            .with_context(|| format!("resolving the ref {r} of {}", from.display()))?;
        targets.push((r.clone(), c));
    }
    std::fs::remove_dir(&objects).with_context(|| format!("removing {}", objects.display()))?;
    std::fs::rename(&theirs, &objects)
        .with_context(|| format!("moving {} to {}", theirs.display(), objects.display()))?;
    let dest = open_repo(repo)?;
    for (r, c) in &targets {
        dest.set_ref_immediate(None, r, Some(c.as_str()), gio::Cancellable::NONE)
            .with_context(|| format!("setting the ref {r} of {}", repo.display()))?;
    }
    Ok(true)
}

/// `ostree admin init-fs --modern DIR`: `DIR/boot` and the sysroot's `ostree/repo` (bare) and
/// `ostree/deploy`. `dir` must exist.
pub fn init_fs(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!(
            "initializing the ostree sysroot: {} is not a directory",
            dir.display()
        );
    }
    let boot = dir.join("boot");
    if !boot.is_dir() {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&boot)
            .with_context(|| format!("creating {}", boot.display()))?;
    }
    ostree::Sysroot::new(Some(&gio::File::for_path(dir)))
        .ensure_initialized(gio::Cancellable::NONE)
        .with_context(|| format!("initializing the ostree sysroot {}", dir.display()))?;
    Ok(())
}

/// `ostree --repo=REPO config set SECTION.KEY VALUE`.
pub fn config_set(repo: &Path, key: &str, value: &str) -> Result<()> {
    let (section, name) = key
        .rsplit_once('.')
        .with_context(|| format!("config key {key:?} must be of the form SECTION.KEY"))?;
    let r = open_repo(repo)?;
    let config = r.copy_config();
    config.set_string(section, name, value);
    r.write_config(&config)
        .with_context(|| format!("setting {key} in {}", repo.display()))?;
    Ok(())
}

/// `ostree admin deploy --sysroot=SYSROOT --os=STATEROOT --origin-file=ORIGIN
/// [--karg-append=K...] COMMIT`: deploy `commit` (a checksum or ref of the sysroot's repo) as
/// the new default deployment of `stateroot`, with the origin read from `origin_file`. Kernel
/// arguments given are appended to the merge deployment's (none: the merge deployment's are
/// kept, as ostree does). `boot_entries` is called once the deployment's tree is written,
/// before the boot entries are (ostree flushes every filesystem of the sysroot first).
/// `prune_repo`: the repository loses what no ref and no deployment reaches afterwards, as
/// `ostree admin deploy` does; without it, as `--no-prune` (the deployments' refs are written
/// either way). A prune walks every object of the repository: 2.3 s of a seed's 20,000
/// under emulation.
pub fn admin_deploy(
    sysroot: &Path,
    stateroot: &str,
    origin_file: &Path,
    kargs: &[String],
    commit: &str,
    prune_repo: bool,
    boot_entries: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let s = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    s.lock()
        .with_context(|| format!("locking the ostree sysroot {}", sysroot.display()))?;
    let res = deploy_locked(
        &s,
        stateroot,
        origin_file,
        kargs,
        commit,
        prune_repo,
        boot_entries,
    );
    s.unlock();
    res.with_context(|| format!("deploying {commit} in {}", sysroot.display()))
}

fn deploy_locked(
    s: &ostree::Sysroot,
    stateroot: &str,
    origin_file: &Path,
    kargs: &[String],
    commit: &str,
    prune_repo: bool,
    boot_entries: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let c = gio::Cancellable::NONE;
    s.load(c).context("loading the sysroot")?;
    let origin = glib::KeyFile::new();
    origin
        .load_from_file(origin_file, glib::KeyFileFlags::NONE)
        .with_context(|| format!("reading {}", origin_file.display()))?;
    let revision = s
        .repo()
        .require_rev(commit)
        .with_context(|| format!("resolving {commit}"))?;
    let merge = s.merge_deployment(Some(stateroot));
    s.prepare_cleanup(c)
        .context("cleaning up before deploying")?;
    let new_kargs: Option<Vec<String>> = (!kargs.is_empty()).then(|| {
        let args = ostree::KernelArgs::new();
        if let Some(options) = merge
            .as_ref()
            .and_then(|m| m.bootconfig())
            .and_then(|b| b.get("options"))
        {
            args.append_argv(&options.split(' ').collect::<Vec<_>>());
        }
        args.append_argv(&kargs.iter().map(String::as_str).collect::<Vec<_>>());
        args.to_strv().into_iter().map(|a| a.to_string()).collect()
    });
    let argv: Option<Vec<&str>> = new_kargs
        .as_ref()
        .map(|v| v.iter().map(String::as_str).collect());
    let opts = ostree::SysrootDeployTreeOpts {
        override_kernel_argv: argv.as_deref(),
        ..Default::default()
    };
    let deployment = s
        .deploy_tree_with_options(
            Some(stateroot),
            &revision,
            Some(&origin),
            merge.as_ref(),
            Some(&opts),
            c,
        )
        .context("writing the deployment")?;
    boot_entries()?;
    s.simple_write_deployment(
        Some(stateroot),
        &deployment,
        merge.as_ref(),
        ostree::SysrootSimpleWriteDeploymentFlags::NO_CLEAN,
        c,
    )
    .context("writing the boot entries")?;
    if prune_repo {
        s.cleanup(c).context("cleaning up the sysroot")?;
    } else {
        s.prepare_cleanup(c).context("cleaning up the sysroot")?;
    }
    Ok(())
}

/// `ostree admin config-diff --sysroot SYSROOT`: how the booted deployment's `/etc` differs
/// from its image's defaults (`/usr/etc`), in the CLI's format: a line `M    PATH` per modified,
/// `D    PATH` per deleted, `A    PATH` per added path, relative to `/etc`, in that order.
pub fn config_diff(sysroot: &Path) -> Result<String> {
    config_diff_os(sysroot, None)
}

/// [`config_diff`] of the merge deployment of stateroot `os` (`--os=OS`), or of the booted
/// deployment.
pub fn config_diff_os(sysroot: &Path, os: Option<&str>) -> Result<String> {
    let s = load_sysroot(sysroot)?;
    let deployment = match os {
        Some(os) => s
            .merge_deployment(Some(os))
            .with_context(|| format!("No deployment for OS '{os}'"))?,
        None => s
            .booted_deployment()
            .context("Not currently booted into an OSTree system and no stateroot (--os) given")?,
    };
    let dir = s.deployment_directory(&deployment);
    etc_diff(
        &dir.resolve_relative_path("usr/etc"),
        &dir.resolve_relative_path("etc"),
    )
    .with_context(|| format!("comparing /etc of {}", deployment_id(&deployment)))
}

/// `ostree_diff_dirs(IGNORE_XATTRS, a, b)` then `ostree_diff_print`, walking the same way
/// (gio enumeration order, modified items before their children, a removed directory named
/// once, an added one with everything below it).
fn etc_diff(a: &gio::File, b: &gio::File) -> Result<String> {
    let mut d = EtcDiff::default();
    for f in [a, b] {
        f.query_info(
            FAST_QUERYINFO,
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("reading {}", f.parse_name()))?;
    }
    d.dirs(a, b, "")?;
    let mut out = String::new();
    for (c, list) in [('M', &d.modified), ('D', &d.removed), ('A', &d.added)] {
        for p in list {
            out.push_str(&format!("{c}    {p}\n"));
        }
    }
    Ok(out)
}

#[derive(Default)]
struct EtcDiff {
    modified: Vec<String>,
    removed: Vec<String>,
    added: Vec<String>,
}

impl EtcDiff {
    fn dirs(&mut self, a: &gio::File, b: &gio::File, rel: &str) -> Result<()> {
        let join = |name: &str| {
            if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            }
        };
        for a_info in enumerate(a)? {
            let name = a_info.name().to_string_lossy().into_owned();
            let (child_a, child_b) = (a.child(&name), b.child(&name));
            let Some(b_info) = query_optional(&child_b)? else {
                self.removed.push(join(&name));
                continue;
            };
            let ty = a_info.file_type();
            if ty != b_info.file_type() {
                self.modified.push(join(&name));
                continue;
            }
            if file_checksum(&child_a, &a_info)? != file_checksum(&child_b, &b_info)? {
                self.modified.push(join(&name));
            }
            if ty == gio::FileType::Directory {
                self.dirs(&child_a, &child_b, &join(&name))?;
            }
        }
        for b_info in enumerate(b)? {
            let name = b_info.name().to_string_lossy().into_owned();
            if query_optional(&a.child(&name))?.is_none() {
                self.added.push(join(&name));
                if b_info.file_type() == gio::FileType::Directory {
                    self.add_recursive(&b.child(&name), &join(&name))?;
                }
            }
        }
        Ok(())
    }

    fn add_recursive(&mut self, dir: &gio::File, rel: &str) -> Result<()> {
        for info in enumerate(dir)? {
            let name = info.name().to_string_lossy().into_owned();
            let p = format!("{rel}/{name}");
            self.added.push(p.clone());
            if info.file_type() == gio::FileType::Directory {
                self.add_recursive(&dir.child(&name), &p)?;
            }
        }
        Ok(())
    }
}

/// A file's info, or none when it does not exist.
fn query_optional(f: &gio::File) -> Result<Option<gio::FileInfo>> {
    match f.query_info(
        FAST_QUERYINFO,
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    ) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", f.parse_name())),
    }
}

/// The ostree content checksum of a file on disk without its xattrs (type, owner, mode,
/// symlink target and contents; for a directory its owner and mode).
fn file_checksum(f: &gio::File, info: &gio::FileInfo) -> Result<String> {
    let input = if info.file_type() == gio::FileType::Regular {
        Some(
            f.read(gio::Cancellable::NONE)
                .with_context(|| format!("reading {}", f.parse_name()))?,
        )
    } else {
        None
    };
    let csum = ostree::checksum_file_from_input(
        info,
        None,
        input.as_ref(),
        ostree::ObjectType::File,
        gio::Cancellable::NONE,
    )
    .map_err(|e| anyhow::anyhow!("checksumming {}: {e}", f.parse_name()))?;
    Ok(csum.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn human_status() {
        let d = |id: &str, booted, staged| DeploymentStatus {
            id: format!("default-{id}.0"),
            osname: "default".into(),
            stateroot: "default".into(),
            serial: 0,
            checksum: id.into(),
            version: Some("trixie.1".into()),
            timestamp: 0,
            booted,
            staged,
            pinned: false,
            container_image_reference: Some("ostree-unverified-registry:quay.io/x/os:1".into()),
            container_image_reference_digest: Some("sha256:0123".into()),
            base_checksum: None,
        };
        let st = SysrootStatus {
            deployments: vec![
                d("c3", false, true),
                d("a1", true, false),
                d("b2", false, false),
            ],
            booted: Some("default-a1.0".into()),
            staged: Some("default-c3.0".into()),
            rollback: Some("default-b2.0".into()),
        };
        insta::assert_snapshot!(st.to_human());
        insta::assert_json_snapshot!(st);
    }

    /// Commit a tree with the given kernels into a fresh bare-user repo (no root needed).
    fn commit_with_kernels(kernels: &[&str]) -> (tempfile::TempDir, String) {
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        std::fs::create_dir_all(tree.join("usr/lib/modules")).unwrap();
        for k in kernels {
            let d = tree.join("usr/lib/modules").join(k);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("vmlinuz"), "k").unwrap();
            std::fs::write(d.join("initramfs.img"), "i").unwrap();
        }
        let commit = commit_dir(&repo, "t", &tree).unwrap();
        (td, commit)
    }

    #[test]
    fn exactly_one_kernel_is_required() {
        let (td, c) = commit_with_kernels(&["6.12.0"]);
        require_one_kernel(&td.path().join("repo"), &c).unwrap();
        let (td, c) = commit_with_kernels(&["6.1.0", "6.12.0"]);
        let err = require_one_kernel(&td.path().join("repo"), &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 2 kernels"), "{err}");
        let (td, c) = commit_with_kernels(&[]);
        let err = require_one_kernel(&td.path().join("repo"), &c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has 0 kernels"), "{err}");
    }

    use super::cli_check::{listing, make_tree, ostree as cli, repo_arg, EPOCH};

    /// Two fresh repositories of `mode`: one made by `ostree init`, one by [`init_repo`].
    fn two_repos(td: &Path, mode: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let (a, b) = (td.join("cli-repo"), td.join("lib-repo"));
        cli(&[&repo_arg(&a), "init", &format!("--mode={mode}")]);
        init_repo(&b, mode).unwrap();
        assert_eq!(
            std::fs::read_to_string(a.join("config")).unwrap(),
            std::fs::read_to_string(b.join("config")).unwrap()
        );
        (a, b)
    }

    /// The same commits through the CLI and the bindings have the same checksum: same tree
    /// (contents, modes, owners, xattrs), metadata, subject, body, parent and time.
    fn commits_match_the_cli(mode: &str) {
        let td = tempfile::tempdir().unwrap();
        let (a, b) = two_repos(td.path(), mode);
        let tree = td.path().join("tree");
        make_tree(&tree);
        let fixed = |o: CommitOpts| CommitOpts {
            timestamp: Some(EPOCH),
            ..o
        };
        // commit_dir's command, twice: the second commit has the first as parent
        for _ in 0..2 {
            let want = cli(&[
                &repo_arg(&a),
                "commit",
                "--branch=plain",
                "--no-bindings",
                &format!("--tree=dir={}", tree.display()),
            ]);
            let got = commit(
                &b,
                "plain",
                &[Tree::Dir(&tree)],
                &fixed(CommitOpts::default()),
            )
            .unwrap();
            assert_eq!(want.trim(), got);
        }
        // subject, body, metadata strings, --bootable, --tree=ref over --tree=dir
        let layer = td.path().join("layer");
        std::fs::create_dir_all(layer.join("usr/etc")).unwrap();
        std::fs::write(layer.join("usr/etc/motd"), "hello").unwrap();
        let want = cli(&[
            &repo_arg(&a),
            "commit",
            "--no-bindings",
            "--bootable",
            "--branch=final",
            "--tree=ref=plain",
            &format!("--tree=dir={}", layer.display()),
            "--add-metadata-string=version=1.2",
            "--add-metadata-string=org.example.k=v",
            "--subject=a subject",
            "--body=a body",
        ]);
        let opts = CommitOpts {
            subject: Some("a subject".into()),
            body: Some("a body".into()),
            metadata: vec![
                ("version".into(), "1.2".into()),
                ("org.example.k".into(), "v".into()),
            ],
            bootable: true,
            ..Default::default()
        };
        let got = commit(
            &b,
            "final",
            &[Tree::Ref("plain"), Tree::Dir(&layer)],
            &fixed(opts),
        )
        .unwrap();
        assert_eq!(want.trim(), got);
        let (c, _) = open_repo(&b).unwrap().load_commit(&got).unwrap();
        let meta = glib::VariantDict::new(Some(&c.child_value(0)));
        assert_eq!(
            meta.lookup::<String>("ostree.linux").unwrap().unwrap(),
            "6.12.0"
        );
        assert_eq!(meta.lookup::<bool>("ostree.bootable").unwrap(), Some(true));
        assert!(!meta.contains("ostree.ref-binding"));
        // --bootable without a kernel fails, as with the CLI
        let err = format!(
            "{:#}",
            commit(
                &b,
                "nok",
                &[Tree::Dir(&layer)],
                &fixed(CommitOpts {
                    bootable: true,
                    ..Default::default()
                })
            )
            .unwrap_err()
        );
        assert!(err.contains("/usr/lib/modules"), "{err}");
        assert!(list_refs(&b, Some("nok")).unwrap().is_empty());
    }

    #[test]
    fn bare_user_commits_match_the_cli() {
        commits_match_the_cli("bare-user");
    }

    #[test]
    fn bare_commits_match_the_cli() {
        imgmode_testkit::require!(imgmode_testkit::Need::Root);
        commits_match_the_cli("bare");
    }

    #[test]
    fn ls_matches_the_cli() {
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        make_tree(&tree);
        let c = commit_dir(&repo, "t", &tree).unwrap();
        let r = open_repo(&repo).unwrap();
        for path in ["/", "/usr", "usr/lib/modules", "/bin", "/usr/bin/su"] {
            let out = cli(&[
                &repo_arg(&repo),
                "ls",
                "-R",
                "--nul-filenames-only",
                &c,
                path,
            ]);
            let want: Vec<&str> = out.split('\0').filter(|s| !s.is_empty()).collect();
            assert_eq!(ls_recursive(&r, &c, path).unwrap(), want, "{path}");
        }
        let err = format!("{:#}", ls_recursive(&r, &c, "/nope").unwrap_err());
        assert!(err.contains("Inspecting path '/nope'"), "{err}");
    }

    #[test]
    fn refs_match_the_cli() {
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        for r in ["a/b/c", "a/b/d", "a/x", "z", "ab"] {
            commit_dir(&repo, r, &tree).unwrap();
        }
        let lines = |s: String| -> Vec<String> {
            let mut v: Vec<String> = s.lines().map(str::to_string).collect();
            v.sort();
            v
        };
        assert_eq!(
            list_refs(&repo, None).unwrap(),
            lines(cli(&[&repo_arg(&repo), "refs", "--list"]))
        );
        assert_eq!(
            list_refs(&repo, None).unwrap(),
            ["a/b/c", "a/b/d", "a/x", "ab", "z"]
        );
        for prefix in ["a", "a/b", "a/b/c", "nope"] {
            assert_eq!(
                list_refs(&repo, Some(prefix)).unwrap(),
                lines(cli(&[&repo_arg(&repo), "refs", "--list", prefix])),
                "{prefix}"
            );
        }
        delete_refs_and_prune(&repo, &["a/b/c".into(), "z".into()]).unwrap();
        assert_eq!(list_refs(&repo, None).unwrap(), ["a/b/d", "a/x", "ab"]);
    }

    /// A bare-user repository `dir/src` whose ref `os/x` has two commits (returned, first
    /// and second) and whose ref `other_ref` names a third.
    fn two_commits(dir: &Path, other_ref: &str) -> (std::path::PathBuf, String, String) {
        let src = dir.join("src");
        init_repo(&src, "bare-user").unwrap();
        let tree = dir.join("tree");
        make_tree(&tree);
        let first = commit_dir(&src, "os/x", &tree).unwrap();
        std::fs::write(tree.join("usr/etc/os-release"), "ID=other\n").unwrap();
        let second = commit_dir(&src, "os/x", &tree).unwrap();
        commit_dir(&src, other_ref, &tree).unwrap();
        (src, first, second)
    }

    /// `rev` checks out of `a` and `b` (into `dir/x` and `dir/y`) as the same tree.
    fn same_checkouts(dir: &Path, a: &Path, b: &Path, rev: &str) {
        let (x, y) = (dir.join("x"), dir.join("y"));
        let opts = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::User,
            ..Default::default()
        };
        for (repo, out) in [(a, &x), (b, &y)] {
            open_repo(repo)
                .unwrap()
                .checkout_at(
                    Some(&opts),
                    ostree::AT_FDCWD,
                    out,
                    rev,
                    gio::Cancellable::NONE,
                )
                .unwrap();
        }
        assert_eq!(listing(&x), listing(&y));
    }

    #[test]
    fn pull_local_copies_refs_and_commits() {
        let td = tempfile::tempdir().unwrap();
        let (src, first, second) = two_commits(td.path(), "other");
        // by ref and by commit (first is only the parent of os/x)
        let (cli_dest, dest) = (td.path().join("cli-dest"), td.path().join("dest"));
        for d in [&cli_dest, &dest] {
            init_repo(d, "bare-user").unwrap();
        }
        let wanted = ["os/x".to_string(), first.clone()];
        cli(&[
            &repo_arg(&cli_dest),
            "pull-local",
            src.to_str().unwrap(),
            &wanted[0],
            &wanted[1],
        ]);
        pull_local(&dest, &src, &wanted).unwrap();
        assert_eq!(list_refs(&dest, None).unwrap(), ["os/x"]);
        assert_eq!(
            list_refs(&dest, None).unwrap(),
            list_refs(&cli_dest, None).unwrap()
        );
        let r = open_repo(&dest).unwrap();
        assert_eq!(r.require_rev("os/x").unwrap(), second);
        for c in [&first, &second] {
            r.load_commit(c).unwrap();
        }
        // the pulled tree is complete: it checks out the same as the source's
        same_checkouts(td.path(), &src, &dest, &first);
        // nothing named: every ref; a relative path works like an absolute one
        let all = td.path().join("all");
        init_repo(&all, "bare-user").unwrap();
        let up = "../".repeat(std::env::current_dir().unwrap().components().count() - 1);
        let rel = Path::new(&up).join(src.strip_prefix("/").unwrap());
        assert!(rel.is_relative());
        pull_local(&all, &rel, &[]).unwrap();
        assert_eq!(list_refs(&all, None).unwrap(), ["os/x", "other"]);
        let err = format!(
            "{:#}",
            pull_local(&all, &src, &["nope".into()]).unwrap_err()
        );
        assert!(err.contains("nope"), "{err}");
    }

    /// Adopting the object store gives what a local pull of the same refs gives (the refs,
    /// complete trees, `ostree fsck` clean); it refuses, touching nothing, a repository that
    /// already holds objects or one in another mode.
    #[test]
    fn adopting_the_objects_is_a_local_pull_in_one_rename() {
        let td = tempfile::tempdir().unwrap();
        let (src, first, second) = two_commits(td.path(), "ostree/container/image/x");
        let (pulled, adopted) = (td.path().join("pulled"), td.path().join("adopted"));
        for d in [&pulled, &adopted] {
            init_repo(d, "bare-user").unwrap();
        }
        let wanted = [
            "os/x".to_string(),
            "ostree/container/image/x".to_string(),
            first.clone(),
        ];
        pull_local(&pulled, &src, &wanted).unwrap();
        // a copy of the source to adopt from (the adoption moves its objects)
        let copy = td.path().join("copy");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(st.success());
        assert!(adopt_objects(&adopted, &copy, &wanted).unwrap());
        assert!(!copy.join("objects").exists());
        assert_eq!(
            list_refs(&adopted, None).unwrap(),
            list_refs(&pulled, None).unwrap()
        );
        let r = open_repo(&adopted).unwrap();
        assert_eq!(r.require_rev("os/x").unwrap(), second);
        cli(&[&repo_arg(&adopted), "fsck", "--quiet"]);
        same_checkouts(td.path(), &pulled, &adopted, &first);
        // not into a repository with objects, not across modes: untouched, false
        assert!(!adopt_objects(&pulled, &src, &wanted).unwrap());
        let archive = td.path().join("archive");
        init_repo(&archive, "archive").unwrap();
        assert!(!adopt_objects(&archive, &src, &wanted).unwrap());
        assert!(src.join("objects").read_dir().unwrap().next().is_some());
        // a ref the source lacks fails before anything moves
        let fresh = td.path().join("fresh");
        init_repo(&fresh, "bare-user").unwrap();
        let e = adopt_objects(&fresh, &src, &["nope".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        assert!(src.join("objects").read_dir().unwrap().next().is_some());
    }

    #[test]
    fn checkout_matches_the_cli() {
        imgmode_testkit::require!(imgmode_testkit::Need::Root);
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        init_repo(&repo, "bare").unwrap();
        let tree = td.path().join("tree");
        make_tree(&tree);
        let c = commit_dir(&repo, "t", &tree).unwrap();
        let (x, y) = (td.path().join("cli"), td.path().join("lib"));
        cli(&[&repo_arg(&repo), "checkout", &c, x.to_str().unwrap()]);
        checkout(&open_repo(&repo).unwrap(), &c, &y).unwrap();
        assert_eq!(listing(&x), listing(&y));
        assert_eq!(listing(&tree), listing(&y));
        // like the CLI, an existing destination is not overwritten
        assert!(checkout(&open_repo(&repo).unwrap(), "t", &y).is_err());
    }

    #[test]
    fn init_fs_and_config_set_match_the_cli() {
        imgmode_testkit::require!(imgmode_testkit::Need::Root);
        let td = tempfile::tempdir().unwrap();
        let (x, y) = (td.path().join("cli"), td.path().join("lib"));
        std::fs::create_dir_all(&x).unwrap();
        std::fs::create_dir_all(&y).unwrap();
        cli(&["admin", "init-fs", "--modern", x.to_str().unwrap()]);
        init_fs(&y).unwrap();
        for (k, v) in [
            ("sysroot.bootloader", "syslinux"),
            ("sysroot.readonly", "false"),
        ] {
            cli(&[&repo_arg(&x.join("ostree/repo")), "config", "set", k, v]);
            config_set(&y.join("ostree/repo"), k, v).unwrap();
        }
        assert_eq!(listing(&x), listing(&y));
        assert!(listing(&y).iter().any(|l| l.starts_with("boot 40755 ")));
        assert!(std::fs::read_to_string(y.join("ostree/repo/config"))
            .unwrap()
            .contains("[sysroot]\nbootloader=syslinux\nreadonly=false\n"));
        assert!(init_fs(&td.path().join("missing")).is_err());
        assert!(config_set(&y.join("ostree/repo"), "nodot", "v").is_err());
    }

    /// A tmpfs for a sysroot: deploying freezes and thaws the filesystem holding `/boot`, which
    /// must not be the machine's root filesystem; tmpfs cannot be frozen (ostree syncs it).
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn new() -> Self {
            let td = tempfile::tempdir().unwrap();
            imgmode_support::cmd::Run::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256m", "tmpfs"])
                .arg(td.path())
                .output()
                .unwrap();
            Self(td)
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = imgmode_support::cmd::Run::new("umount")
                .arg(self.0.path())
                .output();
        }
    }

    #[test]
    fn deploy_and_config_diff_match_the_cli() {
        imgmode_testkit::require!(imgmode_testkit::Need::Root, imgmode_testkit::Need::Tmpfs);
        let fs = Tmpfs::new();
        let t = fs.0.path();
        let (x, y) = (t.join("cli"), t.join("lib"));
        for s in [&x, &y] {
            let sysroot = crate::disk::init_sysroot(s, "default").unwrap();
            sysroot.unlock();
        }
        let tree = t.join("tree");
        make_tree(&tree);
        std::fs::create_dir_all(tree.join("usr/etc/dir/sub")).unwrap();
        for f in [
            "a.conf",
            "b.conf",
            "perm.conf",
            "to-link",
            "dir/x",
            "dir/sub/y",
        ] {
            std::fs::write(tree.join("usr/etc").join(f), f).unwrap();
        }
        let commit = commit_dir(&y.join("ostree/repo"), "os", &tree).unwrap();
        pull_local(
            &x.join("ostree/repo"),
            &y.join("ostree/repo"),
            std::slice::from_ref(&commit),
        )
        .unwrap();
        let origin = t.join("origin");
        std::fs::write(&origin, "[origin]\nrefspec=os\n").unwrap();
        let entries = |s: &Path| {
            let dir = s.join("boot/loader/entries");
            let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    let name = p.file_name().unwrap().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(&p).unwrap())
                })
                .collect();
            v.sort();
            v
        };
        // first deployment with kernel arguments, then one that appends to the merge
        // deployment's, then one that keeps them
        for (serial, kargs) in [
            (0, vec!["console=ttyS0", "quiet"]),
            (1, vec!["x=1"]),
            (2, vec![]),
        ] {
            let mut args = vec![
                "admin".to_string(),
                "deploy".into(),
                format!("--sysroot={}", x.display()),
                "--os=default".into(),
                format!("--origin-file={}", origin.display()),
            ];
            args.extend(kargs.iter().map(|k| format!("--karg-append={k}")));
            args.push(commit.clone());
            cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let kargs: Vec<String> = kargs.iter().map(|k| k.to_string()).collect();
            admin_deploy(
                &y,
                "default",
                &origin,
                &kargs,
                &commit,
                true,
                &mut || Ok(()),
            )
            .unwrap();
            assert_eq!(entries(&x), entries(&y), "deployment {serial}");
            let d = format!("ostree/deploy/default/deploy/{commit}.{serial}");
            assert_eq!(listing(&x.join(&d)), listing(&y.join(&d)));
            let o = format!("{d}.origin");
            assert_eq!(
                std::fs::read_to_string(x.join(&o)).unwrap(),
                std::fs::read_to_string(y.join(&o)).unwrap()
            );
        }
        let options = &entries(&y)[0].1;
        assert!(
            options.contains("options console=ttyS0 quiet ostree="),
            "{options}"
        );
        assert!(options.contains(" x=1\n"), "{options}");
        // config-diff of the merge (newest) deployment after changes to its /etc
        let etc = y.join(format!("ostree/deploy/default/deploy/{commit}.2/etc"));
        assert_eq!(config_diff_os(&y, Some("default")).unwrap(), "");
        std::fs::write(etc.join("a.conf"), "changed").unwrap();
        std::fs::set_permissions(
            etc.join("perm.conf"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::remove_file(etc.join("b.conf")).unwrap();
        std::fs::remove_dir_all(etc.join("dir")).unwrap();
        std::fs::remove_file(etc.join("to-link")).unwrap();
        std::os::unix::fs::symlink("a.conf", etc.join("to-link")).unwrap();
        std::fs::create_dir_all(etc.join("new/deeper")).unwrap();
        std::fs::write(etc.join("new/deeper/f"), "").unwrap();
        std::fs::write(etc.join("new/g"), "").unwrap();
        std::fs::write(etc.join("added.conf"), "").unwrap();
        let want = cli(&[
            "admin",
            "config-diff",
            "--sysroot",
            y.to_str().unwrap(),
            "--os=default",
        ]);
        let got = config_diff_os(&y, Some("default")).unwrap();
        assert_eq!(got, want);
        let (changed, deleted) = (
            got.lines().filter(|l| l.starts_with("M ")).count(),
            got.lines().filter(|l| l.starts_with("D ")).count(),
        );
        assert_eq!((changed, deleted), (3, 2), "{got}");
        assert!(got.contains("A    new/deeper/f\n"), "{got}");
        // not booted, and no stateroot named
        let err = format!("{:#}", config_diff(&y).unwrap_err());
        assert!(err.contains("Not currently booted"), "{err}");
    }

    #[test]
    fn a_deploy_without_prune_keeps_unreachable_objects_and_writes_the_deployment_refs() {
        imgmode_testkit::require!(imgmode_testkit::Need::Root, imgmode_testkit::Need::Tmpfs);
        let fs = Tmpfs::new();
        let t = fs.0.path();
        let y = t.join("sysroot");
        std::fs::create_dir_all(&y).unwrap();
        crate::disk::init_sysroot(&y, "default").unwrap().unlock();
        let repo = y.join("ostree/repo");
        let tree = t.join("tree");
        make_tree(&tree);
        let commit = commit_dir(&repo, "os", &tree).unwrap();
        // a commit no ref reaches any more (as the seed's repository can bring along)
        std::fs::write(tree.join("usr/only-in-other"), "x").unwrap();
        let other = commit_dir(&repo, "other", &tree).unwrap();
        open_repo(&repo)
            .unwrap()
            .set_ref_immediate(None, "other", None, gio::Cancellable::NONE)
            .unwrap();
        let object = |c: &str| repo.join(format!("objects/{}/{}.commit", &c[..2], &c[2..]));
        let origin = t.join("origin");
        std::fs::write(&origin, "[origin]\nrefspec=os\n").unwrap();
        admin_deploy(&y, "default", &origin, &[], &commit, false, &mut || Ok(())).unwrap();
        assert!(
            object(&other).is_file(),
            "a deploy without prune removed an object"
        );
        let refs = list_refs(&repo, Some("ostree")).unwrap();
        assert_eq!(refs.len(), 1, "{refs:?}");
        let deployment_ref = open_repo(&repo).unwrap().require_rev(&refs[0]).unwrap();
        assert_eq!(deployment_ref, commit);
        admin_deploy(&y, "default", &origin, &[], &commit, true, &mut || Ok(())).unwrap();
        assert!(
            !object(&other).exists(),
            "a deploy with prune kept an unreachable commit"
        );
        assert!(object(&commit).is_file());
    }
}

/// Helpers for tests that hold the bindings against the `ostree` CLI they replace.
#[cfg(test)]
pub(crate) mod cli_check {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    /// A fixed commit time: the CLI gets it as `SOURCE_DATE_EPOCH`, the bindings as
    /// [`super::CommitOpts::timestamp`].
    pub const EPOCH: u64 = 1_700_000_000;

    /// Run the `ostree` CLI (the reference) with `SOURCE_DATE_EPOCH` = [`EPOCH`]; its stdout.
    pub fn ostree(args: &[&str]) -> String {
        let out = std::process::Command::new("ostree")
            .args(args)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .output()
            .expect("running ostree");
        assert!(
            out.status.success(),
            "ostree {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `--repo=PATH`.
    pub fn repo_arg(repo: &Path) -> String {
        format!("--repo={}", repo.display())
    }

    /// A tree with what a root filesystem has: modes (setuid, 0600, 0700 directories),
    /// symlinks, an empty file and directory, a kernel with its initramfs and `/usr/etc`. As
    /// root, also other owners and an extended attribute.
    pub fn make_tree(root: &Path) {
        let w = |p: &str, data: &str, mode: u32| {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        w("usr/lib/modules/6.12.0/vmlinuz", "kernel", 0o644);
        w("usr/lib/modules/6.12.0/initramfs.img", "initramfs", 0o600);
        w("usr/bin/tool", "#!/bin/sh\n", 0o755);
        w("usr/bin/su", "suid", 0o4755);
        w("usr/etc/os-release", "ID=debian\n", 0o644);
        w("usr/etc/shadow", "root:*:\n", 0o640);
        w("usr/etc/empty", "", 0o644);
        std::fs::create_dir_all(root.join("usr/share/empty")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/private")).unwrap();
        std::fs::set_permissions(
            root.join("var/lib/private"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::symlink("../nowhere", root.join("usr/etc/dangling")).unwrap();
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::lchown(root.join("usr/etc/shadow"), Some(0), Some(42)).unwrap();
            std::os::unix::fs::lchown(root.join("var/lib/private"), Some(1234), Some(1234))
                .unwrap();
            rustix::fs::lsetxattr(
                root.join("usr/bin/tool"),
                "user.imgmode-test",
                b"value",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        }
    }

    /// Every path below `root`, sorted, with its type, mode, owner, and contents or target
    /// (`<absent>` when `root` does not exist).
    pub fn listing(root: &Path) -> Vec<String> {
        if std::fs::symlink_metadata(root).is_err() {
            return vec!["<absent>".into()];
        }
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let md = std::fs::symlink_metadata(&p).unwrap();
                let what = if md.is_symlink() {
                    format!("-> {}", std::fs::read_link(&p).unwrap().display())
                } else if md.is_dir() {
                    stack.push(p.clone());
                    "dir".to_string()
                } else {
                    format!("{:?}", std::fs::read(&p).unwrap())
                };
                out.push(format!(
                    "{} {:o} {}:{} {what}",
                    p.strip_prefix(root).unwrap().display(),
                    md.mode(),
                    md.uid(),
                    md.gid()
                ));
            }
        }
        out.sort();
        out
    }
}
