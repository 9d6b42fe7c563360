//! The default base image: a Debian system built with mmdebstrap, turned into a bootable
//! ostree-ext container image.
//!
//! Inputs live in `containerfiles/base/`: `image.yaml` (suite, variant, mirrors), `packages.txt`
//! and `overlay/` (files laid over the root filesystem, in the ordinary `/etc` layout).
//!
//! The build has two cached stages, both kept as commits in the store's bare ostree repo:
//!
//! 1. **rootfs** (`imgmode/rootfs/<key>`): mmdebstrap output converted to the ostree layout by
//!    [`convert_to_ostree_layout`]. Keyed by the recipe version, `image.yaml`, `packages.txt` and
//!    the dracut configuration (which must be present while the kernel is installed).
//! 2. **final** (`imgmode/base/<name>`): the rootfs commit with the overlay and the `imgmode`
//!    binary layered on top by the equivalent of `ostree commit --tree=ref=.. --tree=dir=..` (no
//!    checkout; libostree through the bindings, see [`crate::ostree::commit`]), then
//!    encapsulated with ostree-ext into the local store. Keyed by every input; the key is
//!    recorded in the image label [`INPUTS_LABEL`], so an unchanged rebuild is a cache hit.

use crate::ostree::{CommitOpts, Tree};
use anyhow::{bail, Context, Result};
use imgmode_image::store::Store;
use imgmode_support::cmd::{require_root, require_tools, Run};
use imgmode_support::progress::Steps;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod layout;

pub use layout::{convert_to_ostree_layout, DPKG_DB};

/// Bump when the build recipe changes in a way that must invalidate cached rootfs commits.
const RECIPE_VERSION: &str = "imgmode-base-recipe-3";
/// Image label holding the hash of every build input.
pub const INPUTS_LABEL: &str = "org.imgmode.base.inputs";
/// Where the `ostree container` CLI looks for its external implementation.
pub const OSTREE_CONTAINER_LINK: &str = "usr/libexec/libostree/ext/ostree-container";

/// `image.yaml`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageYaml {
    pub name: String,
    pub suite: String,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub mirrors: Vec<String>,
    #[serde(default = "default_components")]
    pub components: Vec<String>,
}

fn default_variant() -> String {
    "apt".into()
}
fn default_components() -> Vec<String> {
    vec!["main".into()]
}

/// A loaded base OS definition.
#[derive(Debug, Clone)]
pub struct BaseSpec {
    pub dir: PathBuf,
    pub image: ImageYaml,
    pub packages: Vec<String>,
}

/// Parse `packages.txt`: one package per line, `#` comments, blank lines ignored.
pub fn parse_packages(text: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let valid = line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | ':' | '=' | '~'));
        if !valid || line.contains(char::is_whitespace) {
            bail!("packages.txt line {}: invalid package name {line:?}", i + 1);
        }
        out.push(line.to_string());
    }
    if out.is_empty() {
        bail!("packages.txt lists no packages");
    }
    Ok(out)
}

impl BaseSpec {
    pub fn load(dir: &Path) -> Result<Self> {
        let image_path = dir.join("image.yaml");
        let text = std::fs::read_to_string(&image_path).with_context(|| {
            format!(
                "reading {}; point --definition at a directory like containerfiles/base",
                image_path.display()
            )
        })?;
        let image: ImageYaml = yaml_serde::from_str(&text)
            .with_context(|| format!("parsing {}", image_path.display()))?;
        if !imgmode_image::imgref::is_local_name(&image.name) || image.name.contains(':') {
            bail!(
                "{}: name {:?} must be lowercase letters, digits, '.', '_' or '-'",
                image_path.display(),
                image.name
            );
        }
        let pk = dir.join("packages.txt");
        let packages = parse_packages(
            &std::fs::read_to_string(&pk).with_context(|| format!("reading {}", pk.display()))?,
        )
        .with_context(|| format!("in {}", pk.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            image,
            packages,
        })
    }

    fn overlay(&self) -> PathBuf {
        self.dir.join("overlay")
    }

    fn dracut_conf(&self) -> PathBuf {
        self.overlay().join("etc/dracut.conf.d")
    }

    /// Key of stage 1 (the converted mmdebstrap root filesystem).
    pub fn rootfs_key(&self) -> Result<String> {
        let mut h = Sha256::new();
        h.update(RECIPE_VERSION);
        h.update(std::fs::read(self.dir.join("image.yaml"))?);
        h.update(std::fs::read(self.dir.join("packages.txt"))?);
        hash_tree(&mut h, &self.dracut_conf())?;
        Ok(hex::encode(h.finalize()))
    }

    /// Key of the whole build: stage 1 plus the overlay and the embedded binary.
    pub fn inputs_key(&self, imgmode_binary: &Path) -> Result<String> {
        let mut h = Sha256::new();
        h.update(self.rootfs_key()?);
        hash_tree(&mut h, &self.overlay())?;
        h.update(
            std::fs::read(imgmode_binary)
                .with_context(|| format!("reading {}", imgmode_binary.display()))?,
        );
        Ok(hex::encode(h.finalize()))
    }
}

/// Hash a directory tree: relative paths, types, modes, link targets and contents.
fn hash_tree(h: &mut Sha256, root: &Path) -> Result<()> {
    if !root.exists() {
        h.update(b"absent");
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            }
            entries.push(e.path());
        }
    }
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap();
        let md = std::fs::symlink_metadata(&p)?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update(md.mode().to_le_bytes());
        if md.file_type().is_symlink() {
            h.update(std::fs::read_link(&p)?.to_string_lossy().as_bytes());
        } else if md.is_file() {
            h.update(std::fs::read(&p)?);
        }
        h.update([0]);
    }
    Ok(())
}

/// Options for [`build`].
#[derive(Debug, Clone)]
pub struct BuildOpts {
    pub definition: PathBuf,
    pub store: Store,
    pub cache_dir: PathBuf,
    /// The `imgmode` binary to embed (normally the running executable).
    pub imgmode_binary: PathBuf,
    /// Files the image gets besides the binary, by their path under `/usr` (the binary's
    /// manual pages and shell completions, made from it: its bytes key them).
    pub usr_files: Vec<(PathBuf, Vec<u8>)>,
    /// Rebuild even when the inputs are unchanged (stage 1 included).
    pub force: bool,
    /// Also copy the result into containers-storage as `localhost/<name>:latest`.
    pub to_containers_storage: bool,
    /// gzip layers at the default level instead of the fastest.
    pub max_compression: bool,
    /// An image built elsewhere (a containers-transports reference) to reuse, when its
    /// [`INPUTS_LABEL`] is this build's inputs key, instead of building.
    pub cache_from: Option<String>,
}

/// What [`build`] produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    pub name: String,
    pub reference: String,
    pub digest: String,
    pub commit: String,
    pub version: String,
    pub inputs: String,
    pub cached: bool,
    /// The `--cache-from` reference the image was copied from (its inputs key matched).
    pub reused_from: Option<String>,
    pub containers_storage: Option<String>,
}

/// Build (or reuse) the base image described by `opts.definition`.
pub fn build(opts: &BuildOpts, steps: &Steps) -> Result<BuildOutcome> {
    require_root("building the base image (mmdebstrap, ostree commit with file ownership)")?;
    require_tools(&["mmdebstrap"])?;
    if opts.to_containers_storage {
        require_tools(&["skopeo"])?;
    }
    let spec = BaseSpec::load(&opts.definition)?;
    let name = spec.image.name.clone();
    let inputs = spec.inputs_key(&opts.imgmode_binary)?;
    if let Some(outcome) = reuse_stored(opts, &name, &inputs, steps)? {
        return Ok(outcome);
    }
    if let Some(from) = opts.cache_from.as_ref().filter(|_| !opts.force) {
        if reuse_from(&opts.store, from, &name, &inputs, steps)? {
            let mut outcome = reuse_stored(opts, &name, &inputs, steps)?
                .context("the image copied from --cache-from is not in the store")?;
            outcome.reused_from = Some(from.clone());
            return Ok(outcome);
        }
    }

    let repo = ensure_repo(&opts.store.repo_path())?;
    let rootfs_ref = format!("imgmode/rootfs/{}", spec.rootfs_key()?);
    let work = imgmode_support::fs::WorkDir::new(&opts.cache_dir.join("work"), "base-")?;
    build_rootfs(opts, &spec, &repo, &rootfs_ref, work.path(), steps)?;

    steps.step("layering the overlay and the imgmode binary");
    let layer = work.path().join("layer");
    prepare_layer(&spec.overlay(), &opts.imgmode_binary, &layer)?;
    for (rel, bytes) in &opts.usr_files {
        let path = layer.join("usr").join(rel);
        std::fs::create_dir_all(path.parent().context("a file under /usr")?)?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    let version = format!(
        "{}.{}",
        spec.image.suite,
        imgmode_support::time::compact(std::time::SystemTime::now())
    );
    let final_ref = format!("imgmode/base/{name}");
    let commit = crate::ostree::commit(
        &repo,
        &final_ref,
        &[Tree::Ref(&rootfs_ref), Tree::Dir(&layer)],
        &final_commit_opts(&name, &version),
    )
    .context("committing the base image")?;
    crate::ostree::require_one_kernel(&repo, &commit)?;

    steps.step("encapsulating as a bootable container image");
    let staging = opts.store.staging()?;
    crate::ostree::encapsulate(
        &repo,
        &final_ref,
        image_labels(&name, &version, &inputs),
        staging.path(),
        opts.max_compression,
    )?;
    let dir = opts.store.publish(staging, &name)?;
    let img = opts.store.inspect(&name)?;
    let cs = copy_to_containers_storage(opts, &name, steps)?;
    Ok(BuildOutcome {
        name,
        reference: format!("oci:{}", dir.display()),
        digest: img.digest,
        commit,
        version,
        inputs,
        cached: false,
        reused_from: None,
        containers_storage: cs,
    })
}

/// The stored image, when it was built from the same `inputs` (and no rebuild is forced).
fn reuse_stored(
    opts: &BuildOpts,
    name: &str,
    inputs: &str,
    steps: &Steps,
) -> Result<Option<BuildOutcome>> {
    let cached = !opts.force
        && opts.store.contains(name)?
        && opts
            .store
            .inspect(name)?
            .labels
            .get(INPUTS_LABEL)
            .is_some_and(|k| *k == inputs);
    if !cached {
        return Ok(None);
    }
    steps.step("base image inputs unchanged; reusing the stored image");
    let img = opts.store.inspect(name)?;
    let cs = copy_to_containers_storage(opts, name, steps)?;
    Ok(Some(BuildOutcome {
        name: name.to_string(),
        reference: img.reference,
        digest: img.digest,
        commit: img.labels.get("ostree.commit").cloned().unwrap_or_default(),
        version: img
            .labels
            .get("org.opencontainers.image.version")
            .cloned()
            .unwrap_or_default(),
        inputs: inputs.to_string(),
        cached: true,
        reused_from: None,
        containers_storage: cs,
    }))
}

/// `--cache-from`: when the image at `from` was built from `inputs` (its [`INPUTS_LABEL`]),
/// copy it into the store as `name`, digest unchanged, and return true. An image that is not
/// there, or was built from other inputs, is said so and builds; one that cannot be read
/// (registry unreachable, credentials refused) is an error: the caller asked for it.
pub fn reuse_from(
    store: &Store,
    from: &str,
    name: &str,
    inputs: &str,
    steps: &Steps,
) -> Result<bool> {
    use imgmode_image::skopeo::{self, RegistryAuth};
    let src = imgmode_image::imgref::parse(from)
        .ok()
        .and_then(|r| match r {
            imgmode_image::imgref::UserImageRef::Remote(r) => Some(r.imgref.to_string()),
            imgmode_image::imgref::UserImageRef::Local(_) => None,
        })
        .with_context(|| {
            format!("--cache-from {from:?}: give a containers-transports reference, e.g. docker://registry.example/imgmode-base:latest or oci:/path/to/layout")
        })?;
    steps.step(&format!("looking for an image of these inputs at {src}"));
    let config = match skopeo::inspect_config(&src, &RegistryAuth::default()) {
        Ok(c) => c,
        Err(e) if crate::disk::says_image_missing(&format!("{e:#}")) => {
            steps.step(&format!("{src} does not exist yet; building"));
            return Ok(false);
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("--cache-from {src}: could not read it; check the reference, the registry's credentials (REGISTRY_AUTH_FILE) and trust (/etc/containers/certs.d), or leave --cache-from out to build")
            })
        }
    };
    let config: serde_json::Value = serde_json::from_slice(&config)
        .with_context(|| format!("--cache-from {src}: its config is not JSON"))?;
    let theirs = config["config"]["Labels"][INPUTS_LABEL].as_str();
    if theirs != Some(inputs) {
        steps.step(&format!(
            "{src} was built from other inputs ({} label {}, these inputs {}); building",
            INPUTS_LABEL,
            theirs.map_or("absent".to_string(), |t| short(t).to_string()),
            short(inputs)
        ));
        return Ok(false);
    }
    let staging = store.staging()?;
    skopeo::Copy::new(&src, format!("oci:{}", staging.path().display()))
        .preserve_digests()
        .run()
        .with_context(|| format!("--cache-from {src}: copying it into the store"))?;
    store.publish(staging, name)?;
    let digest = store.inspect(name)?.digest;
    steps.step(&format!(
        "reused {src} ({digest}): built elsewhere from the same inputs ({})",
        short(inputs)
    ));
    Ok(true)
}

fn short(key: &str) -> &str {
    &key[..key.len().min(12)]
}

/// Stage 1: mmdebstrap, the ostree layout and the commit `rootfs_ref`, unless it is cached;
/// then drop the cached commits of other inputs.
fn build_rootfs(
    opts: &BuildOpts,
    spec: &BaseSpec,
    repo: &Path,
    rootfs_ref: &str,
    work: &Path,
    steps: &Steps,
) -> Result<()> {
    if opts.force || !ref_exists(repo, rootfs_ref)? {
        let rootfs = work.join("rootfs");
        steps.step(&format!(
            "mmdebstrap {} ({} packages)",
            spec.image.suite,
            spec.packages.len()
        ));
        run_mmdebstrap(spec, &opts.cache_dir, &rootfs, work)?;
        ensure_ostree_initramfs(&rootfs)?;
        steps.step("converting the root filesystem to the ostree layout");
        let kver = convert_to_ostree_layout(&rootfs)?;
        steps.step(&format!("committing the root filesystem (kernel {kver})"));
        crate::ostree::commit(
            repo,
            rootfs_ref,
            &[Tree::Dir(&rootfs)],
            &rootfs_commit_opts(&spec.image.suite),
        )
        .context("committing the converted root filesystem")?;
    } else {
        steps.step("root filesystem inputs unchanged; reusing the cached rootfs commit");
    }
    prune_stale_rootfs(repo, rootfs_ref)
}

/// Stage 1's commit (`ostree commit --no-bindings --consume --subject="imgmode rootfs SUITE"`):
/// the converted tree is consumed as it is written.
fn rootfs_commit_opts(suite: &str) -> CommitOpts {
    CommitOpts {
        subject: Some(format!("imgmode rootfs {suite}")),
        consume: true,
        ..Default::default()
    }
}

/// The final commit (`ostree commit --no-bindings --bootable
/// --add-metadata-string=version=VERSION --subject="NAME VERSION"`).
fn final_commit_opts(name: &str, version: &str) -> CommitOpts {
    CommitOpts {
        subject: Some(format!("{name} {version}")),
        metadata: vec![("version".into(), version.into())],
        bootable: true,
        ..Default::default()
    }
}

/// Labels of the base image (ostree-ext adds `ostree.commit`, `ostree.final-diffid` and
/// `ostree.linux` from the commit).
pub fn image_labels(name: &str, version: &str, inputs: &str) -> BTreeMap<String, String> {
    [
        ("containers.bootc", "1"),
        ("ostree.bootable", "true"),
        ("org.opencontainers.image.version", version),
        ("org.opencontainers.image.title", name),
        (INPUTS_LABEL, inputs),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn copy_to_containers_storage(
    opts: &BuildOpts,
    name: &str,
    steps: &Steps,
) -> Result<Option<String>> {
    if !opts.to_containers_storage {
        return Ok(None);
    }
    let dest = format!("containers-storage:localhost/{name}:latest");
    steps.step(&format!("copying to {dest}"));
    imgmode_image::skopeo::Copy::new(
        format!("oci:{}", opts.store.image_dir(name)?.display()),
        &dest,
    )
    .run()?;
    Ok(Some(dest))
}

/// Create the bare repo if needed.
pub fn ensure_repo(path: &Path) -> Result<PathBuf> {
    if !path.join("config").is_file() {
        std::fs::create_dir_all(path)?;
        crate::ostree::init_repo(path, "bare")?;
    }
    Ok(path.to_path_buf())
}

fn ref_exists(repo: &Path, r: &str) -> Result<bool> {
    Ok(crate::ostree::list_refs(repo, None)?.iter().any(|l| l == r))
}

/// Drop cached rootfs commits of other inputs, so the cache repo does not grow with every
/// package list change.
fn prune_stale_rootfs(repo: &Path, keep: &str) -> Result<()> {
    let stale: Vec<String> = crate::ostree::list_refs(repo, Some("imgmode/rootfs"))?
        .into_iter()
        .filter(|r| r != keep)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    crate::ostree::delete_refs_and_prune(repo, &stale).context("pruning stale rootfs commits")
}

/// The arguments of the build's mmdebstrap run (without the program name): suite, variant,
/// components, mirrors and packages from the definition, the dracut configuration and the
/// package cache as hooks. `cargo xtask bench` runs exactly these as the base build's baseline
/// (`imgmode internal mmdebstrap-args`).
pub fn mmdebstrap_args(spec: &BaseSpec, cache_dir: &Path, rootfs: &Path) -> Vec<String> {
    let archives = cache_dir.join("apt-archives");
    let dracut = spec.dracut_conf();
    let mut a = vec![
        "--mode=root".to_string(),
        format!("--variant={}", spec.image.variant),
        format!("--components={}", spec.image.components.join(",")),
        format!("--include={}", spec.packages.join(",")),
        // Keep downloaded .debs so the archive cache fills up; mmdebstrap would delete them.
        "--skip=download/empty".to_string(),
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives \"$1\"/etc/dracut.conf.d".to_string(),
        format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            archives.display()
        ),
    ];
    if dracut.is_dir() {
        a.push(format!(
            "--setup-hook=sync-in {} /etc/dracut.conf.d/",
            dracut.display()
        ));
    }
    a.push(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        archives.display()
    ));
    a.push("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb".to_string());
    a.push(spec.image.suite.clone());
    a.push(rootfs.display().to_string());
    a.extend(spec.image.mirrors.iter().cloned());
    a
}

fn run_mmdebstrap(spec: &BaseSpec, cache_dir: &Path, rootfs: &Path, work: &Path) -> Result<()> {
    std::fs::create_dir_all(cache_dir.join("apt-archives"))?;
    let log = work.join("mmdebstrap.log");
    let logf = std::fs::File::create(&log)?;
    let (mut cmd, _) = Run::new("mmdebstrap")
        .args(mmdebstrap_args(spec, cache_dir, rootfs))
        .into_command();
    cmd.stdin(std::process::Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let status = cmd
        .status()
        .map_err(|e| Run::spawn_error_of("mmdebstrap", e))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        bail!(
            "mmdebstrap failed ({status}); last lines of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(())
}

/// The kernel's install hook ran dracut, but possibly before ostree-boot or the configured
/// compressor was unpacked (apt orders unrelated packages freely). Rebuild the initramfs when
/// it lacks ostree-prepare-root or is not compressed as `/etc/dracut.conf.d` asks.
fn ensure_ostree_initramfs(rootfs: &Path) -> Result<()> {
    let boot = rootfs.join("boot");
    let Some(initrd) = std::fs::read_dir(&boot)?
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("initrd.img-"))
    else {
        return Ok(());
    };
    let name = initrd.file_name().to_string_lossy().into_owned();
    let kver = name.trim_start_matches("initrd.img-").to_string();
    let listing = Run::new("chroot")
        .arg(rootfs)
        .args(["lsinitrd", &format!("/boot/{name}")])
        .read()
        .context("listing the initramfs")?;
    let wanted = configured_compression(&rootfs.join("etc/dracut.conf.d"))?;
    let found = main_archive_magic(&std::fs::read(initrd.path())?);
    let compressed_as_asked = match (wanted.as_deref(), found) {
        (Some("zstd"), Some(m)) => m == ZSTD_MAGIC,
        (Some("gzip"), Some(m)) => m[..2] == GZIP_MAGIC,
        (Some(_) | None, _) => true,
    };
    if listing.contains("ostree-prepare-root") && compressed_as_asked {
        return Ok(());
    }
    tracing::info!(
        "initramfs lacks the ostree module or is not {} as configured; running dracut again",
        wanted.as_deref().unwrap_or("compressed")
    );
    Run::new("chroot")
        .arg(rootfs)
        .args([
            "dracut",
            "--force",
            "--kver",
            &kver,
            &format!("/boot/{name}"),
        ])
        .output()
        .context("rebuilding the initramfs with the ostree module")?;
    Ok(())
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The last `compress=` the dracut configuration files in `dir` set, in dracut's reading order
/// (file name order), unquoted; `None` when none sets it.
fn configured_compression(dir: &Path) -> Result<Option<String>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    files.sort();
    let mut found = None;
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines() {
            if let Some(v) = line.trim().strip_prefix("compress=") {
                found = Some(v.trim().trim_matches(['"', '\'']).to_string());
            }
        }
    }
    Ok(found)
}

/// The first four bytes of an initramfs's main archive: past the uncompressed `newc` cpio
/// archives dracut puts first (early microcode) and the zero padding after them.
fn main_archive_magic(data: &[u8]) -> Option<[u8; 4]> {
    let mut at = 0usize;
    loop {
        while data.get(at) == Some(&0) {
            at += 1;
        }
        if !data[at.min(data.len())..].starts_with(b"070701") {
            return data
                .get(at..at + 4)
                .map(|m| m.try_into().expect("four bytes"));
        }
        // newc: 110-byte header of hex fields, name and data each padded to 4 bytes
        loop {
            let hex = |field: usize| {
                let f = data.get(at + 6 + 8 * field..at + 14 + 8 * field)?;
                usize::from_str_radix(std::str::from_utf8(f).ok()?, 16).ok()
            };
            let (size, namesize) = (hex(6)?, hex(11)?);
            let name = data.get(at + 110..at + 110 + namesize)?;
            let end_of_name = (at + 110 + namesize).next_multiple_of(4);
            at = (end_of_name + size).next_multiple_of(4);
            if name.starts_with(b"TRAILER!!!") {
                break;
            }
            if !data.get(at..)?.starts_with(b"070701") {
                return None;
            }
        }
    }
}

/// `usr/etc/`), `/usr/bin/imgmode` and the `ostree container` link.
pub fn prepare_layer(overlay: &Path, imgmode_binary: &Path, layer: &Path) -> Result<()> {
    std::fs::create_dir_all(layer.join("usr/bin"))?;
    if overlay.is_dir() {
        for e in std::fs::read_dir(overlay)? {
            let e = e?;
            let name = e.file_name();
            let dest = if name == "etc" {
                layer.join("usr/etc")
            } else {
                layer.join(&name)
            };
            copy_tree(&e.path(), &dest)?;
        }
    }
    let bin = layer.join("usr/bin/imgmode");
    std::fs::copy(imgmode_binary, &bin)
        .with_context(|| format!("copying {}", imgmode_binary.display()))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let link = layer.join(OSTREE_CONTAINER_LINK);
    std::fs::create_dir_all(link.parent().unwrap())?;
    std::os::unix::fs::symlink("../../../bin/imgmode", &link)?;
    // Directories the layer shares with the rootfs must keep the rootfs' metadata.
    for d in walk_dirs(layer)? {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn walk_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let d = out[i].clone();
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                out.push(e.path());
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Copy a tree, keeping symlinks and modes.
fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(src)?;
    if md.file_type().is_symlink() {
        if let Ok(old) = std::fs::symlink_metadata(dest) {
            if !old.is_dir() {
                std::fs::remove_file(dest)?;
            }
        }
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dest)?;
    } else if md.is_dir() {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_tree(&e.path(), &dest.join(e.file_name()))?;
        }
    } else {
        std::fs::copy(src, dest).with_context(|| format!("copying {}", src.display()))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgmode_testkit::{require, Need};

    /// An OCI layout at `dir` of one small image labelled with `inputs`; its manifest digest.
    fn layout_with_inputs(dir: &Path, inputs: &str) -> String {
        use imgmode_image::oci::put_blob;
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_path("etc/hello").unwrap();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append(&h, &b"hello"[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let l = put_blob(dir, &layer).unwrap();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {INPUTS_LABEL: inputs}},
            "rootfs": {"type": "layers", "diff_ids": [l]},
        });
        let config = serde_json::to_vec(&config).unwrap();
        let c = put_blob(dir, &config).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": c, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": l, "size": layer.len()}],
        }))
        .unwrap();
        let m = put_blob(dir, &manifest).unwrap();
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        m
    }

    /// `--cache-from`: an image of other inputs, or none at all, builds; one of the same inputs
    /// lands in the store with its digest unchanged; one that cannot be read is an error.
    #[test]
    fn cache_from_reuses_only_an_image_of_the_same_inputs() {
        require!(Need::Tool("skopeo"));
        let d = tempfile::tempdir().unwrap();
        let store = Store::new(d.path().join("state"));
        let steps = Steps::new(true);
        let other = d.path().join("other");
        layout_with_inputs(&other, "other-inputs");
        let reused = |dir: &Path| {
            reuse_from(
                &store,
                &format!("oci:{}:latest", dir.display()),
                "imgmode-base",
                "k1",
                &steps,
            )
        };
        assert!(!reused(&other).unwrap());
        assert!(!reused(&d.path().join("absent")).unwrap());
        assert!(!store.contains("imgmode-base").unwrap());

        let same = d.path().join("same");
        let digest = layout_with_inputs(&same, "k1");
        assert!(reused(&same).unwrap());
        let img = store.inspect("imgmode-base").unwrap();
        assert_eq!(img.digest, digest, "copied by digest");
        assert_eq!(img.labels[INPUTS_LABEL], "k1");

        // unreadable is not absent: a layout whose index is not JSON
        let broken = d.path().join("broken");
        layout_with_inputs(&broken, "k1");
        std::fs::write(broken.join("index.json"), b"{").unwrap();
        let err = format!("{:#}", reused(&broken).unwrap_err());
        assert!(err.contains("could not read it"), "{err}");
        let err = format!(
            "{:#}",
            reuse_from(&store, "imgmode-base", "imgmode-base", "k1", &steps).unwrap_err()
        );
        assert!(
            err.contains("give a containers-transports reference"),
            "{err}"
        );
    }

    #[test]
    fn package_list_parsing() {
        let p = parse_packages("# c\nsystemd\n\n  dbus # trailing\nlinux-image-amd64\n").unwrap();
        assert_eq!(p, ["systemd", "dbus", "linux-image-amd64"]);
        let err = parse_packages("good\nbad pkg\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(parse_packages("# nothing\n").is_err());
    }

    /// A newc cpio archive of `files` (name, data), as dracut's early microcode archive.
    fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entry = |name: &str, data: &[u8]| {
            let name = format!("{name}\0");
            out.extend_from_slice(b"070701");
            for field in 0..13 {
                let v = match field {
                    1 => 0o100644,
                    6 => data.len(),
                    11 => name.len(),
                    _ => 0,
                };
                out.extend_from_slice(format!("{v:08x}").as_bytes());
            }
            out.extend_from_slice(name.as_bytes());
            out.resize(out.len().next_multiple_of(4), 0);
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(4), 0);
        };
        for (n, d) in files {
            entry(n, d);
        }
        entry("TRAILER!!!", b"");
        out
    }

    /// The check that makes the base build run dracut again when the kernel's hook wrote the
    /// initramfs before the configured compressor was installed (it was silently gzip).
    #[test]
    fn initramfs_compression_is_read_past_the_early_cpio() {
        let zst = [&ZSTD_MAGIC[..], b"rest"].concat();
        assert_eq!(main_archive_magic(&zst), Some(ZSTD_MAGIC));
        let mut early = newc(&[("kernel/x86/microcode/GenuineIntel.bin", b"12345")]);
        early.resize(early.len().next_multiple_of(512), 0);
        let gz = [&early[..], &[0x1f, 0x8b, 8, 0], b"tail"].concat();
        assert_eq!(main_archive_magic(&gz), Some([0x1f, 0x8b, 8, 0]));
        let two = [newc(&[("a", b"1")]), newc(&[("b", b"22")]), zst.clone()].concat();
        assert_eq!(main_archive_magic(&two), Some(ZSTD_MAGIC));
        // a cut-short archive has no main archive to name
        assert_eq!(main_archive_magic(&early[..60]), None);
        assert_eq!(main_archive_magic(&newc(&[("a", b"1")])), None);

        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            configured_compression(&d.path().join("none")).unwrap(),
            None
        );
        std::fs::write(d.path().join("10-a.conf"), "compress=\"gzip\"\n").unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            "hostonly=\"no\"\n compress='zstd'\n",
        )
        .unwrap();
        std::fs::write(d.path().join("30-c.txt"), "compress=xz\n").unwrap();
        assert_eq!(
            configured_compression(d.path()).unwrap().as_deref(),
            Some("zstd")
        );
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../containerfiles/base/overlay/etc/dracut.conf.d");
        assert_eq!(
            configured_compression(&shipped).unwrap().as_deref(),
            Some("zstd")
        );
    }

    #[test]
    fn the_shipped_definition_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../containerfiles/base");
        let spec = BaseSpec::load(&dir).unwrap();
        assert_eq!(spec.image.suite, "trixie");
        for must in [
            "systemd",
            "dbus",
            "libpam-systemd",
            "ostree-boot",
            "dracut",
            "linux-image-amd64",
            "zstd",
        ] {
            assert!(spec.packages.iter().any(|p| p == must), "{must} missing");
        }
    }

    #[test]
    fn keys_track_inputs() {
        let td = tempfile::tempdir().unwrap();
        let d = td.path();
        std::fs::write(d.join("image.yaml"), "name: t\nsuite: trixie\n").unwrap();
        std::fs::write(d.join("packages.txt"), "systemd\n").unwrap();
        std::fs::create_dir_all(d.join("overlay/etc")).unwrap();
        std::fs::write(d.join("overlay/etc/motd"), "hi").unwrap();
        let bin = d.join("bin");
        std::fs::write(&bin, "v1").unwrap();
        let spec = BaseSpec::load(d).unwrap();
        let (r1, k1) = (spec.rootfs_key().unwrap(), spec.inputs_key(&bin).unwrap());
        std::fs::write(d.join("overlay/etc/motd"), "changed").unwrap();
        assert_eq!(
            spec.rootfs_key().unwrap(),
            r1,
            "overlay must not invalidate the rootfs"
        );
        let k2 = spec.inputs_key(&bin).unwrap();
        assert_ne!(k1, k2);
        std::fs::write(&bin, "v2").unwrap();
        assert_ne!(spec.inputs_key(&bin).unwrap(), k2);
        std::fs::write(d.join("packages.txt"), "systemd\ndbus\n").unwrap();
        assert_ne!(spec.rootfs_key().unwrap(), r1);
    }

    #[test]
    fn unknown_field_in_image_yaml_is_an_error() {
        let td = tempfile::tempdir().unwrap();
        std::fs::write(
            td.path().join("image.yaml"),
            "name: t\nsuite: trixie\nsuit: x\n",
        )
        .unwrap();
        std::fs::write(td.path().join("packages.txt"), "systemd\n").unwrap();
        let err = format!("{:#}", BaseSpec::load(td.path()).unwrap_err());
        assert!(err.contains("unknown field `suit`"), "{err}");
    }

    #[test]
    fn conversion_makes_the_ostree_layout() {
        let td = tempfile::tempdir().unwrap();
        let r = td.path();
        for d in [
            "usr/lib/modules/6.12.0-1-amd64",
            "boot",
            "etc",
            "home/u",
            "root",
            "opt",
            "srv",
            "mnt",
            "usr/local/bin",
            "tmp",
            "run",
            "var/tmp/x",
            "var/run",
            "var/log",
            "var/lib/dpkg/info",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("boot/vmlinuz-6.12.0-1-amd64"), "k").unwrap();
        std::fs::write(r.join("boot/initrd.img-6.12.0-1-amd64"), "i").unwrap();
        std::fs::write(r.join("boot/config-6.12.0-1-amd64"), "c").unwrap();
        std::fs::write(r.join("etc/machine-id"), "abc").unwrap();
        std::fs::create_dir_all(r.join("etc/ssh")).unwrap();
        for f in [
            "ssh_host_ed25519_key",
            "ssh_host_ed25519_key.pub",
            "sshd_config",
        ] {
            std::fs::write(r.join("etc/ssh").join(f), "k").unwrap();
        }
        std::fs::write(r.join("root/.bashrc"), "x").unwrap();
        std::fs::create_dir_all(r.join("dev/pts")).unwrap();
        std::os::unix::net::UnixListener::bind(r.join("dev/log")).unwrap();
        let kver = convert_to_ostree_layout(r).unwrap();
        assert_eq!(kver, "6.12.0-1-amd64");
        let k = r.join("usr/lib/modules/6.12.0-1-amd64");
        assert!(k.join("vmlinuz").is_file() && k.join("initramfs.img").is_file());
        assert_eq!(std::fs::read_dir(r.join("boot")).unwrap().count(), 0);
        assert!(!r.join("etc").exists());
        assert_eq!(
            std::fs::read_to_string(r.join("usr/etc/machine-id")).unwrap(),
            ""
        );
        let ssh: Vec<String> = std::fs::read_dir(r.join("usr/etc/ssh"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ssh, ["sshd_config"], "the image ships no SSH host key");
        assert_eq!(
            std::fs::read_link(r.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert_eq!(
            std::fs::read_link(r.join("home")).unwrap(),
            Path::new("var/home")
        );
        assert!(r.join("var/home/u").is_dir());
        assert!(r.join("var/roothome/.bashrc").is_file());
        assert!(r.join("usr/lib/sysimage/dpkg/info").is_dir());
        assert_eq!(
            std::fs::read_link(r.join("var/lib/dpkg")).unwrap(),
            Path::new("../../usr/lib/sysimage/dpkg")
        );
        assert_eq!(
            std::fs::read_link(r.join("usr/local")).unwrap(),
            Path::new("../var/usrlocal")
        );
        assert_eq!(
            std::fs::read_link(r.join("var/run")).unwrap(),
            Path::new("../run")
        );
        assert!(!r.join("var/tmp").exists());
        assert_eq!(std::fs::read_dir(r.join("dev")).unwrap().count(), 0);
        // converting twice is refused rather than corrupting the tree
        assert!(convert_to_ostree_layout(r).is_err());
    }

    #[test]
    fn two_kernels_are_refused() {
        let td = tempfile::tempdir().unwrap();
        for k in ["6.1", "6.12"] {
            std::fs::create_dir_all(td.path().join("usr/lib/modules").join(k)).unwrap();
        }
        let err = convert_to_ostree_layout(td.path()).unwrap_err().to_string();
        assert!(err.contains("several kernels"), "{err}");
    }

    #[test]
    fn layer_maps_etc_and_links_ostree_container() {
        let td = tempfile::tempdir().unwrap();
        let ov = td.path().join("overlay");
        std::fs::create_dir_all(ov.join("etc/dracut.conf.d")).unwrap();
        std::fs::write(ov.join("etc/dracut.conf.d/a.conf"), "x").unwrap();
        let bin = td.path().join("imgmode");
        std::fs::write(&bin, "#!").unwrap();
        let layer = td.path().join("layer");
        prepare_layer(&ov, &bin, &layer).unwrap();
        assert!(layer.join("usr/etc/dracut.conf.d/a.conf").is_file());
        assert!(!layer.join("etc").exists());
        let link = layer.join(OSTREE_CONTAINER_LINK);
        assert_eq!(
            std::fs::canonicalize(link).unwrap(),
            std::fs::canonicalize(layer.join("usr/bin/imgmode")).unwrap()
        );
    }

    #[test]
    fn labels() {
        insta::assert_yaml_snapshot!(image_labels(
            "imgmode-base",
            "trixie.202611230000",
            "abc123"
        ));
    }

    #[test]
    fn stale_rootfs_commits_are_pruned() {
        let td = tempfile::tempdir().unwrap();
        let repo = td.path().join("repo");
        crate::ostree::init_repo(&repo, "bare-user").unwrap();
        let tree = td.path().join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        let mut commits = Vec::new();
        for (i, r) in ["imgmode/rootfs/old", "imgmode/rootfs/new", "imgmode/base/x"]
            .iter()
            .enumerate()
        {
            std::fs::write(tree.join("f"), i.to_string()).unwrap();
            commits.push(crate::ostree::commit_dir(&repo, r, &tree).unwrap());
        }
        prune_stale_rootfs(&repo, "imgmode/rootfs/new").unwrap();
        let refs = crate::ostree::list_refs(&repo, None).unwrap();
        assert_eq!(refs, ["imgmode/base/x", "imgmode/rootfs/new"]);
        // the old rootfs commit went with its ref; the others stay
        let r = crate::ostree::open_repo(&repo).unwrap();
        let has = |c: &str| {
            r.has_object(
                ostree_ext::ostree::ObjectType::Commit,
                c,
                ostree_ext::gio::Cancellable::NONE,
            )
            .unwrap()
        };
        assert!(!has(&commits[0]));
        assert!(has(&commits[1]) && has(&commits[2]));
        // nothing to prune: a no-op
        prune_stale_rootfs(&repo, "imgmode/rootfs/new").unwrap();
        assert_eq!(crate::ostree::list_refs(&repo, None).unwrap(), refs);
    }

    /// The base build's two commits through the bindings have the checksums the `ostree
    /// commit` commands they replace gave (same trees, metadata, subjects, parents; the time
    /// fixed on both sides), so base images stay reproducible. In a bare repository as the
    /// build makes them when root, else bare-user.
    #[test]
    fn base_commits_match_the_cli() {
        use crate::ostree::cli_check::{listing, make_tree, ostree, repo_arg, EPOCH};
        let td = tempfile::tempdir().unwrap();
        let t = td.path();
        let (a, b) = (t.join("cli-repo"), t.join("lib-repo"));
        let mode = if rustix::process::geteuid().is_root() {
            "bare"
        } else {
            "bare-user"
        };
        ostree(&[&repo_arg(&a), "init", &format!("--mode={mode}")]);
        std::fs::create_dir_all(&b).unwrap();
        crate::ostree::init_repo(&b, mode).unwrap();
        let (rootfs_ref, final_ref) = ("imgmode/rootfs/k", "imgmode/base/t");
        let (suite, name, version) = ("trixie", "t", "trixie.202611230000");
        let ov = t.join("overlay");
        std::fs::create_dir_all(ov.join("etc/dracut.conf.d")).unwrap();
        std::fs::write(ov.join("etc/dracut.conf.d/a.conf"), "x").unwrap();
        std::fs::write(ov.join("README"), "r").unwrap();
        let bin = t.join("imgmode");
        std::fs::write(&bin, "#!").unwrap();
        let layer = t.join("layer");
        prepare_layer(&ov, &bin, &layer).unwrap();
        // twice: the second round has the first round's commits as parents
        for round in 0..2 {
            let (ra, rb) = (
                t.join(format!("rootfs-a{round}")),
                t.join(format!("rootfs-b{round}")),
            );
            make_tree(&ra);
            make_tree(&rb);
            std::fs::write(ra.join("round"), round.to_string()).unwrap();
            std::fs::write(rb.join("round"), round.to_string()).unwrap();
            let want = ostree(&[
                &repo_arg(&a),
                "commit",
                "--no-bindings",
                "--consume",
                &format!("--branch={rootfs_ref}"),
                &format!("--tree=dir={}", ra.display()),
                &format!("--subject=imgmode rootfs {suite}"),
            ]);
            let got = crate::ostree::commit(
                &b,
                rootfs_ref,
                &[Tree::Dir(&rb)],
                &CommitOpts {
                    timestamp: Some(EPOCH),
                    ..rootfs_commit_opts(suite)
                },
            )
            .unwrap();
            assert_eq!(want.trim(), got, "rootfs commit, round {round}");
            // --consume: what was committed is gone on both sides alike
            assert_eq!(listing(&ra), listing(&rb));

            let want = ostree(&[
                &repo_arg(&a),
                "commit",
                "--no-bindings",
                "--bootable",
                &format!("--branch={final_ref}"),
                &format!("--tree=ref={rootfs_ref}"),
                &format!("--tree=dir={}", layer.display()),
                &format!("--add-metadata-string=version={version}"),
                &format!("--subject={name} {version}"),
            ]);
            let got = crate::ostree::commit(
                &b,
                final_ref,
                &[Tree::Ref(rootfs_ref), Tree::Dir(&layer)],
                &CommitOpts {
                    timestamp: Some(EPOCH),
                    ..final_commit_opts(name, version)
                },
            )
            .unwrap();
            assert_eq!(want.trim(), got, "final commit, round {round}");
            crate::ostree::require_one_kernel(&b, &got).unwrap();
        }
        assert_eq!(
            crate::ostree::list_refs(&a, None).unwrap(),
            crate::ostree::list_refs(&b, None).unwrap()
        );
    }
}
