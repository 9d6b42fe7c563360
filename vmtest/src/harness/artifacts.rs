//! Images the scenarios boot, built once per run by running the `imgmode` binary exactly as a
//! user would (`imgmode base build`, `imgmode disk`), and shared by every scenario; and `run`
//! and `imgmode_json`, which run commands (the binary among them) the same way for the
//! scenarios.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel argument the shared disk is written with; scenarios check it on /proc/cmdline.
pub const TEST_KARG: &str = "imgmode.vmtest=1";
/// Public key the shared disk authorizes for root; scenarios check authorized_keys.
pub const TEST_SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT imgmode-vmtest";

/// A new OpenSSH key pair (ed25519, no passphrase) at `path` (private, 0600) and
/// `path.pub`, made by `ssh-keygen`, replacing any earlier pair; returns the public key line.
pub fn ssh_keypair(path: &Path, comment: &str) -> Result<String> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        "ssh-keygen (openssh-client)",
    )?;
    Ok(std::fs::read_to_string(path.with_extension("pub"))?
        .trim()
        .to_string())
}

/// What scenarios get.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub imgmode: PathBuf,
    /// The repository's `containerfiles/` (examples the scenarios build).
    pub containerfiles: PathBuf,
    /// The base image's manifest digest.
    pub base_digest: String,
    /// The base image in the local store, as a containers-transports reference
    /// (`oci:/var/lib/imgmode/images/...`): what `--artifacts-to` copies.
    pub base_reference: String,
    /// The base image's labels (`ostree.commit`, `containers.bootc`, version ...).
    pub base_labels: BTreeMap<String, String>,
    /// A qcow2 disk of the base image, bootable from BIOS and UEFI.
    pub base_disk: PathBuf,
    /// The same image written as a raw disk (empty unless a chosen scenario boots it).
    pub base_raw: PathBuf,
}

#[derive(Deserialize)]
struct StoredImage {
    name: String,
    reference: String,
    digest: String,
    labels: BTreeMap<String, String>,
}

/// Run `cmd` with stderr shown; fail unless it succeeds; return its stdout.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `imgmode internal guide-blocks SCENARIO`: the guest script of the guides' `sh vm=SCENARIO`
/// blocks, or with `check` (the guest's report, saved) the check that each ran and printed
/// what its guide shows: its message, or an error naming the block and what it printed.
pub(crate) fn guide_blocks(imgmode: &Path, scenario: &str, check: Option<&Path>) -> Result<String> {
    let mut cmd = Command::new(imgmode);
    cmd.args(["internal", "guide-blocks", scenario]);
    if let Some(c) = check {
        cmd.arg("--check").arg(c);
    }
    let out = cmd
        .output()
        .context("running imgmode internal guide-blocks")?;
    if !out.status.success() {
        bail!(
            "the guides' vm={scenario} blocks: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Write `text` to a new file `path`, mode 0600 from the start (it holds a password or a key);
/// a file already there is replaced.
pub(crate) fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?
        .write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Run the `imgmode` binary like a user; its stdout.
pub(crate) fn imgmode_json(a: &Artifacts, args: &[&str]) -> Result<String> {
    run(
        Command::new(&a.imgmode).args(args),
        &format!("imgmode {}", args.join(" ")),
    )
}

/// Build (or reuse, when the inputs are unchanged) the base image and write its qcow2 disk, and
/// with `raw` its raw disk, into `dir`.
pub fn build(imgmode: &Path, definition: &Path, dir: &Path, raw: bool) -> Result<Artifacts> {
    std::fs::create_dir_all(dir)?;
    let mut a = base_image(imgmode, definition, None)?;
    let key = dir.join("root.pub");
    std::fs::write(&key, format!("{TEST_SSH_KEY}\n"))?;
    let disk = |format: &str| -> Result<PathBuf> {
        let path = dir.join(format!("base.{format}"));
        run(
            Command::new(imgmode)
                .args(["disk", "imgmode-base", "--force", "--format", format])
                .args(["--karg", TEST_KARG, "--root-ssh-key"])
                .arg(&key)
                .arg("-o")
                .arg(&path),
            &format!("imgmode disk --format {format}"),
        )?;
        Ok(path)
    };
    a.base_disk = disk("qcow2")?;
    if raw {
        a.base_raw = disk("raw")?;
    }
    Ok(a)
}

/// Build (or reuse) the base image only, with `cache_from` reusing the image there when it
/// was built from the same inputs (`imgmode base build --cache-from`); the disk paths are left
/// empty (flows that write their own disks, such as `build-seed`).
pub fn base_image(
    imgmode: &Path,
    definition: &Path,
    cache_from: Option<&str>,
) -> Result<Artifacts> {
    let mut cmd = Command::new(imgmode);
    cmd.args(["base", "build", "--definition"]).arg(definition);
    if let Some(from) = cache_from {
        cmd.args(["--cache-from", from]);
    }
    run(&mut cmd, "imgmode base build")?;
    let list = run(
        Command::new(imgmode).args(["images", "--format", "json"]),
        "imgmode images",
    )?;
    let images: Vec<StoredImage> =
        serde_json::from_str(&list).context("parsing `imgmode images --format json`")?;
    let base = images
        .into_iter()
        .find(|i| i.name == "imgmode-base:latest")
        .context("imgmode base build did not store imgmode-base")?;
    Ok(Artifacts {
        imgmode: imgmode.to_path_buf(),
        containerfiles: definition
            .parent()
            .context("the base definition has no parent directory")?
            .to_path_buf(),
        base_digest: base.digest,
        base_reference: base.reference,
        base_labels: base.labels,
        base_disk: PathBuf::new(),
        base_raw: PathBuf::new(),
    })
}
