//! The live system's root: the image's tree as a compressed read-only EROFS image on the ISO,
//! mounted by the image's own initramfs under a RAM layer.
//!
//! The kernel and GRUB no longer carry the root filesystem: GRUB loads the image's kernel and
//! its generic initramfs (dracut with systemd, which has the CD, ISO 9660, loop, EROFS and
//! overlayfs drivers), and a small second archive adds the units below. In the initrd,
//! `imgmode-live-root.service` mounts the ISO by its label, the root image from it (a loop
//! device) and a tmpfs, copies the caller's files into the tmpfs's upper directory, and
//! `sysroot.mount` joins them as an overlay at `/sysroot`; systemd then switches root as for
//! an installed system. Reads go to the CD only for the files the live system opens, instead
//! of the firmware reading, and the kernel unpacking, the whole tree on every boot; and the tree
//! takes no RAM. The mounts sit under `/run/imgmode-live/`, which moves into the live system
//! with `/run`.

use anyhow::{bail, Context, Result};
use imgmode_image::cpio::{self, Meta};
use imgmode_support::cmd::Run;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

/// The root image's path on the ISO.
pub(crate) const ROOT_IMAGE: &str = "live/root.erofs";
/// The initramfs's path on the ISO (the image's own `initramfs.img`).
pub(crate) const INITRD: &str = "live/initrd.img";
/// Where the caller's files wait in the initramfs until they are copied into the RAM layer.
pub(crate) const FILES_DIR: &str = "imgmode-live";
/// The live system's mounts: `iso`, `root` (the image, read-only), `rw` (tmpfs: `upper`,
/// `work`).
const MOUNTS: &str = "/run/imgmode-live";
/// Where the initrd mounted the ISO the live system booted from; it stays mounted there while
/// the live system runs.
pub const ISO_DIR: &str = "/run/imgmode-live/iso";
/// The source name of the live root's overlay (`/sysroot`, then `/`).
const OVERLAY_SOURCE: &str = "imgmode-live";
/// The root image's largest compressed physical cluster ([`write_root_image`]).
const PCLUSTER_BYTES: u32 = 64 * 1024;
/// The units' names, in the initramfs's `/etc/systemd/system`.
const ROOT_UNIT: &str = "imgmode-live-root.service";

/// Modules systemd-modules-load loads in the initrd (before udev starts), and again, as no-ops,
/// in the live system: the SATA controller and optical drive the ISO is usually on, its
/// filesystem, and what the root image is mounted with. udev would load most of them too, but
/// only among the hundreds of devices of its coldplug (under emulation the ISO's device
/// appeared 15 s after these modules could have been loaded).
pub(crate) const EARLY_MODULES: &[&str] = &["ahci", "sr_mod", "isofs", "loop", "erofs", "overlay"];

/// Whether `mounts` (source, mount point) are a live system's: `/` is the overlay of its root
/// image and RAM layer.
pub fn is_live_root(mounts: &[(String, String)]) -> bool {
    mounts
        .iter()
        .rev()
        .find(|(_, at)| at == "/")
        .is_some_and(|(src, _)| src == OVERLAY_SOURCE)
}

/// Where a path of the image's tree lands in the live root (`None`: left out).
pub(crate) fn live_name(rel: &str, kver: &str) -> Option<String> {
    let kdir = format!("usr/lib/modules/{kver}/");
    if let Some(f) = rel.strip_prefix(&kdir) {
        if matches!(f, "vmlinuz" | "initramfs.img") {
            return None;
        }
    }
    // an unattended installer shows no documentation and no translations: they stay out of
    // the root image (the licences stay: usr/share/doc/PACKAGE/copyright; the man pages stay,
    // for whoever logs in)
    if rel.starts_with("usr/share/locale/") {
        return None;
    }
    if let Some(d) = rel.strip_prefix("usr/share/doc/") {
        let parts: Vec<&str> = d.split('/').collect();
        let keep = parts.len() == 1 || (parts.len() == 2 && parts[1] == "copyright");
        if !keep {
            return None;
        }
    }
    // the live system is no ostree deployment: /etc is the image's /usr/etc
    if rel == "etc" || rel.starts_with("etc/") {
        return None;
    }
    if rel == "usr/etc" || rel.starts_with("usr/etc/") {
        return Some(rel["usr/".len()..].to_string());
    }
    Some(rel.to_string())
}

/// The live root of `tree` (kernel `kver`) as an LZ4HC-compressed EROFS image at `out`, by way
/// of a hard-linked copy of the tree in its live layout at `stage` (removed after). Owners,
/// modes and extended attributes are kept; every timestamp is 0, as ostree has them. Returns the
/// bytes of the files in it.
///
/// Its physical clusters are up to [`PCLUSTER_BYTES`]: the image is read from an optical drive
/// (or a BMC's virtual media), where each request costs far more than its bytes, so a page
/// that is missed reads its neighbours in the same request (LZ4 decompresses them in no time).
pub(crate) fn write_root_image(tree: &Path, kver: &str, stage: &Path, out: &Path) -> Result<u64> {
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(stage)
        .with_context(|| format!("creating {}", stage.display()))?;
    let bytes = stage_tree(tree, "", stage, &|r| live_name(r, kver))?;
    Run::new("mkfs.erofs")
        .args(["--quiet", "-zlz4hc", "-T0"])
        .arg(format!("-C{PCLUSTER_BYTES}"))
        .arg(out)
        .arg(stage)
        .output()
        .context("mkfs.erofs could not write the live root image")?;
    imgmode_support::fs::remove_tree(stage)?;
    Ok(bytes)
}

/// Hard-link what `rename` keeps of `dir` (at `rel` in the tree) into `stage` under its live
/// name; directories are made with the tree's owner and mode. Returns the regular files' bytes.
fn stage_tree(
    dir: &Path,
    rel: &str,
    stage: &Path,
    rename: &dyn Fn(&str) -> Option<String>,
) -> Result<u64> {
    let mut bytes = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let fname = e.file_name();
        let Some(fname) = fname.to_str() else {
            bail!(
                "{} has a name that is not UTF-8; the live root takes UTF-8 names only",
                e.path().display()
            );
        };
        let r = if rel.is_empty() {
            fname.to_string()
        } else {
            format!("{rel}/{fname}")
        };
        let Some(name) = rename(&r) else { continue };
        let (from, to) = (e.path(), stage.join(&name));
        let md = std::fs::symlink_metadata(&from)?;
        if md.is_dir() {
            std::fs::DirBuilder::new()
                .mode(md.mode() & 0o7777)
                .create(&to)
                .with_context(|| format!("creating {}", to.display()))?;
            std::os::unix::fs::chown(&to, Some(md.uid()), Some(md.gid()))?;
            std::fs::set_permissions(&to, md.permissions())?;
            bytes += stage_tree(&from, &r, stage, rename)?;
        } else {
            // symlinks too: link(2) links the symlink itself
            std::fs::hard_link(&from, &to)
                .with_context(|| format!("linking {} at {}", from.display(), to.display()))?;
            if md.is_file() {
                bytes += md.len();
            }
        }
    }
    Ok(bytes)
}

/// The initrd's units, as (path in the initramfs, content): the service that mounts the ISO
/// labelled `label`, the root image and the RAM layer, and `/sysroot` as their overlay.
pub(crate) fn initrd_units(label: &str) -> Vec<(String, String)> {
    let dev = format!("/dev/disk/by-label/{label}");
    let dev_unit = format!(
        "dev-disk-by\\x2dlabel-{}.device",
        label.replace('-', "\\x2d")
    );
    let root = format!(
        "# Written by imgmode.
[Unit]
Description=imgmode live root: the ISO, its root image and a RAM layer
DefaultDependencies=no
Requires={dev_unit}
After={dev_unit} systemd-modules-load.service
Before=sysroot.mount

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/mkdir -p {ISO_DIR} {MOUNTS}/root {MOUNTS}/rw
ExecStart=/usr/bin/mount -t iso9660 -o ro {dev} {ISO_DIR}
ExecStart=/usr/bin/mount -t erofs -o ro,loop {ISO_DIR}/{ROOT_IMAGE} {MOUNTS}/root
ExecStart=/usr/bin/mount -t tmpfs -o mode=0755 imgmode-live {MOUNTS}/rw
ExecStart=/usr/bin/mkdir {MOUNTS}/rw/upper {MOUNTS}/rw/work
ExecStart=/usr/bin/cp -a /{FILES_DIR}/. {MOUNTS}/rw/upper/
"
    );
    let sysroot = format!(
        "# Written by imgmode.
[Unit]
Description=imgmode live root (overlay of the root image and the RAM layer)
DefaultDependencies=no
Requires={ROOT_UNIT}
After={ROOT_UNIT}
Before=initrd-root-fs.target

[Mount]
What={OVERLAY_SOURCE}
Where=/sysroot
Type=overlay
Options=lowerdir={MOUNTS}/root,upperdir={MOUNTS}/rw/upper,workdir={MOUNTS}/rw/work
"
    );
    vec![
        (format!("etc/systemd/system/{ROOT_UNIT}"), root),
        ("etc/systemd/system/sysroot.mount".into(), sysroot),
    ]
}

/// Write the initrd's units (and their enabling link) into the archive `w`.
pub(crate) fn write_initrd_units<W: Write>(w: &mut cpio::Writer<W>, label: &str) -> Result<()> {
    for d in [
        "etc",
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/initrd-root-fs.target.requires",
    ] {
        w.dir(d, &Meta::root(0o755))?;
    }
    for (path, text) in initrd_units(label) {
        w.bytes(&path, &Meta::root(0o644), text.as_bytes())?;
    }
    w.symlink(
        "etc/systemd/system/initrd-root-fs.target.requires/sysroot.mount",
        "../sysroot.mount",
        &Meta::root(0o777),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_root_is_told_by_its_overlay_on_root() {
        let m = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(is_live_root(&m(&[
            ("rootfs", "/"),
            ("imgmode-live", "/"),
            ("imgmode-live", "/run/imgmode-live/rw"),
        ])));
        // the RAM layer's tmpfs alone, another root, a root mounted over the live one
        assert!(!is_live_root(&m(&[
            ("/dev/vda4", "/"),
            ("imgmode-live", "/run/imgmode-live/rw")
        ])));
        assert!(!is_live_root(&m(&[
            ("imgmode-live", "/"),
            ("/dev/sda2", "/")
        ])));
        assert!(!is_live_root(&[]));
        // the name the initrd's units give the overlay
        assert!(initrd_units("L")[1].1.contains("\nWhat=imgmode-live\n"));
    }

    #[test]
    fn the_live_root_undoes_the_ostree_layout() {
        assert_eq!(
            live_name("usr/etc/passwd", "6.1").as_deref(),
            Some("etc/passwd")
        );
        assert_eq!(live_name("usr/etc", "6.1").as_deref(), Some("etc"));
        assert_eq!(live_name("etc/passwd", "6.1"), None);
        assert_eq!(live_name("usr/lib/modules/6.1/vmlinuz", "6.1"), None);
        assert_eq!(live_name("usr/lib/modules/6.1/initramfs.img", "6.1"), None);
        assert_eq!(
            live_name("usr/lib/modules/6.1/kernel/fs/isofs.ko", "6.1").as_deref(),
            Some("usr/lib/modules/6.1/kernel/fs/isofs.ko")
        );
        assert_eq!(
            live_name("usr/etcetera", "6.1").as_deref(),
            Some("usr/etcetera")
        );
    }

    #[test]
    fn the_live_root_leaves_out_documentation_and_translations_but_not_licences() {
        for (rel, kept) in [
            ("usr/share/doc", true),
            ("usr/share/doc/bash", true),
            ("usr/share/doc/bash/copyright", true),
            ("usr/share/doc/bash/changelog.Debian.gz", false),
            ("usr/share/doc/bash/examples", false),
            ("usr/share/doc/bash/examples/copyright", false),
            ("usr/share/locale", true),
            ("usr/share/locale/de/LC_MESSAGES/bash.mo", false),
            ("usr/share/man/man1/imgmode.1.gz", true),
        ] {
            assert_eq!(live_name(rel, "6.1").is_some(), kept, "{rel}");
        }
    }

    /// The staged tree is the live layout, hard-linked (no copy), with the tree's owners and
    /// modes on its directories.
    #[test]
    fn the_stage_is_the_live_layout_in_hard_links() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        for p in ["usr/etc/ssh", "usr/share/doc/x/examples", "usr/bin", "var"] {
            std::fs::create_dir_all(tree.join(p)).unwrap();
        }
        std::fs::write(tree.join("usr/etc/ssh/sshd_config"), "Port 22\n").unwrap();
        std::fs::write(tree.join("usr/share/doc/x/examples/a"), "a").unwrap();
        std::fs::write(tree.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("usr/bin", tree.join("bin")).unwrap();
        std::fs::set_permissions(
            tree.join("var"),
            std::os::unix::fs::PermissionsExt::from_mode(0o1777),
        )
        .unwrap();
        let stage = d.path().join("stage");
        std::fs::create_dir(&stage).unwrap();
        let n = stage_tree(&tree, "", &stage, &|r| live_name(r, "6.1")).unwrap();
        assert_eq!(n, "Port 22\n".len() as u64 + "#!/bin/sh\n".len() as u64);
        let md = std::fs::metadata(stage.join("etc/ssh/sshd_config")).unwrap();
        assert_eq!(
            md.ino(),
            std::fs::metadata(tree.join("usr/etc/ssh/sshd_config"))
                .unwrap()
                .ino()
        );
        assert_eq!(
            std::fs::read_link(stage.join("bin")).unwrap(),
            Path::new("usr/bin")
        );
        assert!(!stage.join("usr/etc").exists());
        assert!(!stage.join("usr/share/doc/x/examples").exists());
        assert_eq!(
            std::fs::metadata(stage.join("var")).unwrap().mode() & 0o7777,
            0o1777
        );
    }

    /// The initrd waits for the ISO's device, mounts it, the root image and the RAM layer, and
    /// makes `/sysroot` of them, required by the initrd's root target.
    #[test]
    fn the_initrd_mounts_the_isos_root_image_under_a_ram_layer() {
        let units = initrd_units("imgmode-ibi");
        let (_, root) = &units[0];
        assert!(root.contains("Requires=dev-disk-by\\x2dlabel-imgmode\\x2dibi.device\n"));
        assert!(root.contains(
            "mount -t iso9660 -o ro /dev/disk/by-label/imgmode-ibi /run/imgmode-live/iso\n"
        ));
        assert!(root.contains(
            "mount -t erofs -o ro,loop /run/imgmode-live/iso/live/root.erofs /run/imgmode-live/root\n"
        ));
        assert!(root.contains("cp -a /imgmode-live/. /run/imgmode-live/rw/upper/\n"));
        let (path, sysroot) = &units[1];
        assert_eq!(path, "etc/systemd/system/sysroot.mount");
        assert!(sysroot.contains("Where=/sysroot\nType=overlay\n"));
        assert!(sysroot
            .contains("lowerdir=/run/imgmode-live/root,upperdir=/run/imgmode-live/rw/upper,"));
        let mut out = vec![];
        let mut w = cpio::Writer::new(&mut out);
        write_initrd_units(&mut w, "imgmode-ibi").unwrap();
        w.finish().unwrap();
        let entries = cpio::list(&out[..]).unwrap();
        let link = entries
            .iter()
            .find(|e| e.name == "etc/systemd/system/initrd-root-fs.target.requires/sysroot.mount")
            .unwrap();
        assert_eq!(link.data, b"../sysroot.mount");
    }
}
