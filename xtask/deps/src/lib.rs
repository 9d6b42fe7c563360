//! `cargo xtask deps` (and `cargo run -p imgmode-deps`, which `.ci/run` runs): install the
//! Debian packages imgmode and its tests use, and the pipeline definitions' linters.
//!
//! Idempotent: packages already installed are skipped, and `apt-get update` runs only when
//! something is missing. On Debian 12 the machine image ships qemu-utils from
//! bookworm-backports, so qemu-system-x86 must come from there too; the backports source is
//! added when missing. The linters come from npm at pinned versions into the cache directory.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages for building (libostree bindings), running (tools imgmode drives) and testing.
pub const PACKAGES: &[&str] = &[
    // build
    "pkg-config",
    "libostree-dev",
    "libglib2.0-dev",
    "libzstd-dev",
    // libz-sys builds its bundled zlib-ng with cmake (flate2's zlib-ng-compat)
    "cmake",
    "libssl-dev",
    // etcd-client compiles etcd's gRPC protocol files
    "protobuf-compiler",
    // tools imgmode runs
    "ostree",
    "skopeo",
    "podman",
    "buildah",
    "mmdebstrap",
    "xorriso",
    "mtools",
    "dosfstools",
    "gdisk",
    "e2fsprogs",
    "xfsprogs",
    "squashfs-tools",
    "erofs-utils",
    "fdisk",
    // the sandbox grub-mkimage runs in (support::cmd::Run::sandboxed)
    "bubblewrap",
    // post-pivot's SSH host keys (tested on the host), vmtest's SSH key pairs
    "openssh-client",
    // recert tests check chains with `openssl verify`; the ibi scenario's registry CA
    "openssl",
    // VM tests
    "qemu-system-x86",
    "qemu-utils",
    "ovmf",
    "etcd-server",
    "docker-registry",
    // bench seed's zstd baseline (the seed scenario's debugfs is in e2fsprogs)
    "zstd",
    // the payload registry unit's port check (ss), run for real by a unit test
    "iproute2",
    // the manual pages' test reads an installed page with man
    "man-db",
    // the hostile-archive corpus script; setpriv for the not-root test
    "python3",
    "util-linux",
    // cargo check of fuzz/ (cargo xtask ci) builds libfuzzer-sys's C++ in its build script
    "g++",
    // the rest of support::cmd::TOOLS that tests run on the host (Debian's base has them;
    // named so a minimal machine gets them too)
    "tar",
    "coreutils",
    "mount",
    "hostname",
];

/// Packages taken from bookworm-backports on Debian 12.
const BACKPORTS: &[&str] = &["qemu-system-x86", "qemu-utils"];
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/imgmode-bookworm-backports.sources";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn codename() -> String {
    std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION_CODENAME=")
                .map(|s| s.trim_matches('"').to_string())
        })
        .unwrap_or_default()
}

fn apt(args: &[&str]) -> Result<()> {
    eprintln!("==> apt-get {}", args.join(" "));
    let st = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(args)
        .status()
        .context("running apt-get (is this Debian?)")?;
    if !st.success() {
        bail!("apt-get {} failed ({st})", args.join(" "));
    }
    Ok(())
}

/// `cargo xtask deps`: the Debian packages, then the pipeline linters (from npm, into the
/// cache directory).
pub fn install() -> Result<()> {
    install_packages()?;
    if !npm_found() {
        ensure_root("npm (Debian's nodejs and npm) for the pipeline linters")?;
        apt(&["update", "-qq"])?;
        apt(&["install", "-y", "-qq", "nodejs", "npm"])?;
    }
    install_linters()
}

/// The pipeline definitions' linters (`cargo xtask lint-pipelines`): (npm package, version,
/// the command it installs).
pub const LINTERS: &[(&str, &str, &str)] = &[
    ("@action-validator/cli", "0.6.0", "action-validator"),
    ("@ibm/tekton-lint", "1.1.0", "tekton-lint"),
];

/// Where the linters live: `$IMGMODE_CACHE_DIR/lint` (default `/var/cache/imgmode/lint`),
/// outside the checkout and safe to delete.
pub fn lint_dir() -> PathBuf {
    std::env::var_os("IMGMODE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/imgmode"))
        .join("lint")
}

/// Whether `npm` runs here (nodesource's nodejs ships it; Debian's is the `npm` package).
fn npm_found() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The version of `package` installed under `dir`, if any.
fn installed_version(dir: &Path, package: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules").join(package).join("package.json"))
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_string)
}

/// Install the linters at their versions; nothing when they are there. Needs `npm`
/// (Debian's `npm` package, which [`install`] installs when it is missing).
fn install_linters() -> Result<()> {
    let dir = lint_dir();
    let missing: Vec<String> = LINTERS
        .iter()
        .filter(|(p, v, _)| installed_version(&dir, p).as_deref() != Some(*v))
        .map(|(p, v, _)| format!("{p}@{v}"))
        .collect();
    if missing.is_empty() {
        eprintln!("==> the pipeline linters are installed ({})", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut npm = Command::new("npm");
    npm.args([
        "install",
        "--no-audit",
        "--no-fund",
        "--save-exact",
        "--prefix",
    ])
    .arg(&dir)
    .args(&missing);
    eprintln!("==> {npm:?}");
    let st = npm
        .status()
        .context("installing the pipeline linters from npm")?;
    if !st.success() {
        bail!("installing the pipeline linters from npm: {npm:?} failed ({st})");
    }
    Ok(())
}

fn ensure_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!("missing {what}; run `cargo xtask deps` as root");
    }
    Ok(())
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        eprintln!("==> all {} Debian packages are installed", PACKAGES.len());
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}; run `cargo xtask deps` as root or apt-get install them",
            missing.join(" ")
        );
    }
    let bookworm = codename() == "bookworm";
    if bookworm && !std::path::Path::new(BACKPORTS_SOURCE).exists() {
        std::fs::write(
            BACKPORTS_SOURCE,
            "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    }
    apt(&["update", "-qq"])?;
    let (bp, rest): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .partition(|p| bookworm && BACKPORTS.contains(p));
    if !bp.is_empty() {
        let mut args = vec!["install", "-y", "-qq", "-t", "bookworm-backports"];
        args.extend(bp.iter().copied());
        // keep qemu-utils and qemu-system from the same release
        if !args.contains(&"qemu-utils") {
            args.push("qemu-utils");
        }
        apt(&args)?;
    }
    if !rest.is_empty() {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(rest.iter().copied());
        apt(&args)?;
    }
    Ok(())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
