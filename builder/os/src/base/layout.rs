//! The ostree layout made from a Debian root filesystem (stage 1 of the base build).

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Where the converted image keeps dpkg's database (`/var/lib/dpkg` links here).
pub const DPKG_DB: &str = "/usr/lib/sysimage/dpkg";

/// Turn a Debian root filesystem into the layout ostree deploys; returns the kernel version.
///
/// - kernel and initramfs move to `/usr/lib/modules/$kver/{vmlinuz,initramfs.img}`, `/boot`
///   is emptied;
/// - `/etc` becomes `/usr/etc` (ostree's defaults, merged 3-way on upgrade);
/// - `/sysroot` is created and `/ostree` links to `sysroot/ostree`;
/// - toplevel state directories become links into `/var` (`/home`, `/root`, `/opt`, `/srv`,
///   `/mnt`, `/usr/local`), with `tmpfiles.d` creating their targets;
/// - `/tmp` and `/run` are emptied, `/var/tmp` removed, `/etc/machine-id` reset for first boot,
///   the SSH host keys removed (every machine makes its own);
/// - dpkg's database moves to [`DPKG_DB`] and `/var/lib/dpkg` links there, so `dpkg -l`
///   on a node lists the packages of the image it booted.
pub fn convert_to_ostree_layout(root: &Path) -> Result<String> {
    let kver = move_kernel(root)?;
    etc_to_usr_etc(root)?;

    // sysroot and the /ostree link
    std::fs::create_dir_all(root.join("sysroot"))?;
    replace_with_symlink(root, "ostree", "sysroot/ostree")?;

    state_dirs_to_var(root)?;
    empty_api_dirs(root)?;
    tidy_var(root)?;
    dpkg_db_to_usr(root)?;
    Ok(kver)
}

/// The one kernel's image and initramfs from `/boot` into `/usr/lib/modules/$kver`; `/boot`
/// emptied. Returns the kernel version.
fn move_kernel(root: &Path) -> Result<String> {
    let modules = root.join("usr/lib/modules");
    let kvers: Vec<String> = std::fs::read_dir(&modules)
        .with_context(|| format!("reading {}", modules.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let kver = match kvers.as_slice() {
        [k] => k.clone(),
        [] => bail!(
            "no kernel installed in {}: add linux-image-amd64 to packages.txt",
            modules.display()
        ),
        many => bail!(
            "several kernels installed ({}); a bootable image needs exactly one",
            many.join(", ")
        ),
    };
    let boot = root.join("boot");
    let kdir = modules.join(&kver);
    let vmlinuz = boot.join(format!("vmlinuz-{kver}"));
    if !kdir.join("vmlinuz").exists() {
        std::fs::rename(&vmlinuz, kdir.join("vmlinuz"))
            .with_context(|| format!("moving {}", vmlinuz.display()))?;
    }
    let initrd = ["initrd.img-", "initramfs-"]
        .iter()
        .map(|p| boot.join(format!("{p}{kver}")))
        .chain([boot.join(format!("initramfs-{kver}.img"))])
        .find(|p| p.exists())
        .ok_or_else(|| {
            anyhow!(
                "no initramfs for kernel {kver} in {}; is dracut in packages.txt?",
                boot.display()
            )
        })?;
    std::fs::rename(&initrd, kdir.join("initramfs.img"))
        .with_context(|| format!("moving {}", initrd.display()))?;
    empty_dir(&boot)?;
    // Debian's kernel links in the root directory point into /boot, which is now empty.
    for link in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let p = root.join(link);
        if p.is_symlink() {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(kver)
}

/// `/etc` -> `/usr/etc`, with the machine ID reset for the first boot and the SSH host keys
/// the package made removed (each machine makes its own: `imgmode-ssh-keygen.service`).
fn etc_to_usr_etc(root: &Path) -> Result<()> {
    let etc = root.join("etc");
    let usretc = root.join("usr/etc");
    std::fs::write(etc.join("machine-id"), "")?;
    if let Ok(entries) = std::fs::read_dir(etc.join("ssh")) {
        for e in entries {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with("ssh_host_") {
                std::fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    if usretc.exists() {
        bail!(
            "{} exists already; the root filesystem is converted twice",
            usretc.display()
        );
    }
    std::fs::rename(&etc, &usretc).context("moving /etc to /usr/etc")?;
    Ok(())
}

/// Toplevel state directories live in /var.
fn state_dirs_to_var(root: &Path) -> Result<()> {
    for (top, target) in [
        ("home", "var/home"),
        ("root", "var/roothome"),
        ("opt", "var/opt"),
        ("srv", "var/srv"),
        ("mnt", "var/mnt"),
        ("media", "run/media"),
        ("usr/local", "../var/usrlocal"),
    ] {
        let p = root.join(top);
        // keep whatever the packages put there under its /var location
        if p.is_dir() && !p.is_symlink() {
            let dest = if let Some(rest) = target.strip_prefix("../") {
                root.join(rest)
            } else {
                root.join(target)
            };
            if dest.starts_with(root.join("var")) {
                std::fs::create_dir_all(dest.parent().unwrap())?;
                if !dest.exists() {
                    std::fs::rename(&p, &dest)?;
                } else {
                    std::fs::remove_dir_all(&p)?;
                }
            } else {
                std::fs::remove_dir_all(&p)?;
            }
        }
        replace_with_symlink(root, top, target)?;
    }
    Ok(())
}

/// API filesystems are mounted at boot; mmdebstrap leaves device nodes in /dev, which
/// ostree cannot commit.
fn empty_api_dirs(root: &Path) -> Result<()> {
    for d in ["tmp", "run", "dev", "proc", "sys"] {
        let p = root.join(d);
        if p.exists() {
            empty_dir(&p)?;
        } else {
            std::fs::create_dir_all(&p)?;
        }
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

/// `/var/tmp` out, `/var/run` and `/var/lock` links into `/run`, logs and apt's caches empty.
fn tidy_var(root: &Path) -> Result<()> {
    // /var/tmp is left out of the commit: ostree-ext's export adds it to every image (a second
    // copy would make a layer with duplicate paths, which containers-storage refuses), and
    // systemd-tmpfiles creates it at boot.
    let vartmp = root.join("var/tmp");
    if vartmp.exists() {
        std::fs::remove_dir_all(&vartmp).context("removing /var/tmp")?;
    }
    // var/run and var/lock must be links into /run (bootc lint var-run)
    replace_with_symlink(root, "var/run", "../run")?;
    replace_with_symlink(root, "var/lock", "../run/lock")?;
    for d in ["var/log", "var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = root.join(d);
        if p.is_dir() {
            empty_dir(&p)?;
        }
    }
    Ok(())
}

/// The package database describes /usr, so it must follow the deployed image rather than
/// stay in /var (seeded once): like rpm-ostree's /usr/lib/sysimage/rpm.
fn dpkg_db_to_usr(root: &Path) -> Result<()> {
    let dpkg = root.join("var/lib/dpkg");
    if dpkg.is_dir() && !dpkg.is_symlink() {
        let dest = root.join(DPKG_DB.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::rename(&dpkg, &dest).context("moving /var/lib/dpkg into /usr")?;
        replace_with_symlink(root, "var/lib/dpkg", "../../usr/lib/sysimage/dpkg")?;
    }
    Ok(())
}

fn empty_dir(p: &Path) -> Result<()> {
    for e in std::fs::read_dir(p).with_context(|| format!("reading {}", p.display()))? {
        let e = e?;
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

fn replace_with_symlink(root: &Path, rel: &str, target: &str) -> Result<()> {
    let p = root.join(rel);
    if let Ok(md) = std::fs::symlink_metadata(&p) {
        if md.file_type().is_symlink() {
            if std::fs::read_link(&p)? == Path::new(target) {
                return Ok(());
            }
            std::fs::remove_file(&p)?;
        } else if md.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    std::os::unix::fs::symlink(target, &p).with_context(|| format!("linking /{rel} -> {target}"))
}
