//! The base image build, disk builds and boots.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{bench_dir, state_dir, stdout_of, timed, timed_lines, Row};
use imgmode_vmtest::harness::timeline::{console_lines, Marker, Timeline, BOOT_MARKERS};

/// The base build, full and with only the overlay changed, against mmdebstrap with the same
/// arguments; disk builds; boots (see [`boot_rows`]).
pub(super) fn run(root: &Path, imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let def = root.join("containerfiles/base");

    // Warm the apt cache (and the image) once, untimed.
    timed(
        Command::new(imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(&def),
    )?;

    let scratch = tempfile::tempdir_in(std::env::temp_dir())?;
    let mm = full_build(root, imgmode, &def, scratch.path(), rows)?;
    incremental_build(imgmode, &def, scratch.path(), mm, rows)?;
    let qcow2 = disk_builds(imgmode, scratch.path(), rows)?;
    rows.extend(boot_rows(root, &qcow2, scratch.path())?);
    Ok(())
}

/// The full base build against the build's own mmdebstrap run, both installing the same
/// packages; returns mmdebstrap's best time.
fn full_build(
    root: &Path,
    imgmode: &Path,
    def: &Path,
    scratch: &Path,
    rows: &mut Vec<Row>,
) -> Result<f64> {
    // The baseline is the build's own mmdebstrap run: the same arguments (suite, variant,
    // components, mirrors, packages, the dracut configuration and package cache hooks), asked
    // of imgmode itself. Each side runs twice, alternating; the best of each counts.
    let (mut mm, mut full) = (f64::MAX, f64::MAX);
    let mut phases = None;
    let mut baseline_packages = None;
    for i in 0..2 {
        let mm_root = scratch.join(format!("rootfs-{i}"));
        let args: Vec<String> = serde_json::from_slice(&stdout_of(
            Command::new(imgmode)
                .args(["internal", "mmdebstrap-args", "--definition"])
                .arg(def)
                .arg(&mm_root),
            "imgmode internal mmdebstrap-args",
        )?)?;
        mm = mm.min(timed(
            Command::new("mmdebstrap").arg("--quiet").args(&args),
        )?);
        if baseline_packages.is_none() {
            baseline_packages = Some(dpkg_packages(&std::fs::read_to_string(
                mm_root.join("var/lib/dpkg/status"),
            )?));
        }
        std::fs::remove_dir_all(&mm_root).ok();
        // its progress lines (not --quiet: one line per step, as in a CI log) time its phases
        let (secs, lines) = timed_lines(
            Command::new(imgmode)
                .args(["base", "build", "--force", "--definition"])
                .arg(def),
        )?;
        if secs < full {
            full = secs;
            phases = Some(base_build_phases(&lines, secs, mm)?);
        }
    }
    if let Some(t) = phases {
        t.write(&bench_dir(root).join("base-build-phases"))?;
    }
    let image_status = stdout_of(
        Command::new("ostree")
            .arg(format!("--repo={}", state_dir().join("repo").display()))
            .args([
                "cat",
                "imgmode/base/imgmode-base",
                "/usr/lib/sysimage/dpkg/status",
            ]),
        "reading the image's dpkg status",
    )?;
    let image_packages = dpkg_packages(&String::from_utf8_lossy(&image_status));
    let baseline_packages = baseline_packages.unwrap_or_default();
    anyhow::ensure!(
        image_packages == baseline_packages,
        "the base image's packages differ from mmdebstrap's: only in the image {:?}, only in mmdebstrap's {:?}",
        image_packages.difference(&baseline_packages).collect::<Vec<_>>(),
        baseline_packages.difference(&image_packages).collect::<Vec<_>>()
    );
    rows.push(Row {
        name: "base build (full, apt cache warm)".into(),
        seconds: full,
        baseline: Some("mmdebstrap with the build's own arguments".into()),
        baseline_seconds: Some(mm),
        ratio: Some(full / mm),
        target: Some("<= 1.30".into()),
        note: "mmdebstrap + ostree conversion + commit + ostree-ext encapsulation; best of 2 each"
            .into(),
        compared: Some(format!(
            "{} installed packages, the same versions as mmdebstrap's",
            image_packages.len()
        )),
        ..Row::default()
    });
    Ok(mm)
}

/// The base build's phases from its progress lines (`==> [  Ns] step`), with mmdebstrap's own
/// time `mm` (the baseline) for the note in the title.
fn base_build_phases(lines: &[(f64, String)], secs: f64, mm: f64) -> Result<Timeline> {
    let m = Marker::new;
    Timeline::from_console(
        &format!("base build, full ({secs:.1} s; mmdebstrap alone {mm:.1} s)"),
        lines,
        &[
            m("inputs key", ""),
            m("mmdebstrap", "] mmdebstrap "),
            m("ostree layout", "] converting the root filesystem"),
            m("rootfs commit", "] committing the root filesystem"),
            m("overlay commit", "] layering the overlay"),
            m("encapsulation", "] encapsulating as a bootable"),
            Marker::optional("containers-storage copy", "] copying to "),
        ],
        secs,
    )
}

/// The base build with only the overlay changed against mmdebstrap's time `mm`; the shipped
/// definition's image is built again afterwards.
fn incremental_build(
    imgmode: &Path,
    def: &Path,
    scratch: &Path,
    mm: f64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // Incremental: change only the overlay-level input (a copy of the definition with one
    // more overlay file), so the cached rootfs commit is reused.
    let def2 = scratch.join("def");
    copy_dir(def, &def2)?;
    std::fs::create_dir_all(def2.join("overlay/usr/share/imgmode"))?;
    std::fs::write(
        def2.join("overlay/usr/share/imgmode/bench-stamp"),
        format!("{:?}", std::time::SystemTime::now()),
    )?;
    let incr = timed(
        Command::new(imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(&def2),
    )?;
    rows.push(Row {
        name: "base build (overlay changed)".into(),
        seconds: incr,
        baseline: Some("mmdebstrap alone, same packages".into()),
        baseline_seconds: Some(mm),
        ratio: Some(incr / mm),
        target: None,
        note: "rootfs commit reused from the cache".into(),
        ..Row::default()
    });
    // Put the shipped definition's image back.
    timed(
        Command::new(imgmode)
            .args(["base", "build", "--quiet", "--definition"])
            .arg(def),
    )?;
    Ok(())
}

/// qcow2 and raw disks of imgmode-base: seconds and bytes written; returns the qcow2 disk.
fn disk_builds(imgmode: &Path, scratch: &Path, rows: &mut Vec<Row>) -> Result<PathBuf> {
    let mut qcow2 = None;
    for fmt in ["qcow2", "raw"] {
        let disk = scratch.join(format!("disk.{fmt}"));
        let secs = timed(
            Command::new(imgmode)
                .args(["disk", "imgmode-base", "--quiet", "--format", fmt, "-o"])
                .arg(&disk),
        )?;
        use std::os::unix::fs::MetadataExt;
        let bytes = std::fs::metadata(&disk)?.blocks() * 512;
        rows.push(Row {
            name: format!("disk build ({fmt})"),
            seconds: secs,
            baseline: None,
            baseline_seconds: None,
            ratio: None,
            target: None,
            note: format!("{:.0} MiB written", bytes as f64 / 1048576.0),
            ..Row::default()
        });
        if fmt == "qcow2" {
            qcow2 = Some(disk);
        } else {
            std::fs::remove_file(&disk).ok();
        }
    }
    Ok(qcow2.expect("qcow2 built above"))
}

/// Boot to multi-user.target: the ostree disk through firmware and directly, and the same
/// image's tree as a plain ext4 root (no ostree) directly; one VM at a time.
fn boot_rows(root: &Path, ostree_disk: &Path, scratch: &Path) -> Result<Vec<Row>> {
    use imgmode_vmtest::harness::guest::time_to_ready;
    use imgmode_vmtest::harness::qemu::Boot;
    let state = state_dir();
    // The same tree without ostree: check out the image commit, put /etc back.
    let tree = scratch.join("plain-tree");
    let st = Command::new("ostree")
        .arg(format!("--repo={}", state.join("repo").display()))
        .args(["checkout", "-H", "imgmode/base/imgmode-base"])
        .arg(&tree)
        .status()?;
    anyhow::ensure!(st.success(), "checking out the base image commit");
    std::fs::rename(tree.join("usr/etc"), tree.join("etc"))?;
    let modules = tree.join("usr/lib/modules");
    let kver = std::fs::read_dir(&modules)?
        .next()
        .context("no kernel in the image")??
        .file_name();
    let kdir = modules.join(&kver);
    let kernel = scratch.join("plain-vmlinuz");
    let initrd = scratch.join("plain-initramfs.img");
    std::fs::copy(kdir.join("vmlinuz"), &kernel)?;
    std::fs::copy(kdir.join("initramfs.img"), &initrd)?;
    let plain_raw = scratch.join("plain.raw");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-L", "root", "-d"])
        .arg(&tree)
        .arg(&plain_raw)
        .arg("6G")
        .status()?;
    anyhow::ensure!(st.success(), "mkfs.ext4 of the plain tree");
    std::fs::remove_dir_all(&tree)?;
    let plain = scratch.join("plain.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&plain_raw)
        .arg(&plain)
        .status()?;
    anyhow::ensure!(st.success(), "qemu-img convert");
    std::fs::remove_file(&plain_raw)?;

    let direct =
        imgmode_vmtest::harness::direct::from_disk(ostree_disk, &scratch.join("direct"), "")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let vmdir = scratch.join("vm");
    let plain_boot = Boot::Direct {
        kernel,
        initrd,
        append: "root=LABEL=root rw console=tty0 console=ttyS0,115200n8".into(),
    };
    // TCG boot times vary by a few seconds; take the best of RUNS for each.
    const RUNS: usize = 2;
    // the best run's phases, from its console, go to target/bench/boot-phases-NAME.*
    let best = |disk: &Path, boot: &Boot, name: &str, title: &str| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..RUNS {
            let secs = rt.block_on(time_to_ready(disk, boot.clone(), &vmdir))?;
            if secs < best {
                best = secs;
                Timeline::from_console(
                    &format!("{title}, QEMU start to ready"),
                    &console_lines(&vmdir)?,
                    &BOOT_MARKERS,
                    secs,
                )?
                .write(&bench_dir(root).join(format!("boot-phases-{name}")))?;
            }
        }
        Ok(best)
    };
    let plain_s = best(
        &plain,
        &plain_boot,
        "plain",
        "plain ext4 root, direct kernel",
    )?;
    let direct_s = best(
        ostree_disk,
        &direct,
        "ostree-direct",
        "ostree, direct kernel",
    )?;
    let bios_s = best(
        ostree_disk,
        &Boot::Bios,
        "ostree-bios",
        "ostree, SeaBIOS and GRUB",
    )?;
    let baseline = "same tree, plain ext4 root, direct kernel boot".to_string();
    Ok(vec![
        Row {
            name: "boot to ready (ostree, direct kernel)".into(),
            seconds: direct_s,
            baseline: Some(baseline.clone()),
            baseline_seconds: Some(plain_s),
            ratio: Some(direct_s / plain_s),
            target: Some("<= 1.10".into()),
            note: "QEMU start to multi-user.target marker, TCG, best of 2".into(),
            ..Row::default()
        },
        Row {
            name: "boot to ready (ostree, SeaBIOS+GRUB)".into(),
            seconds: bios_s,
            baseline: Some(baseline),
            baseline_seconds: Some(plain_s),
            ratio: Some(bios_s / plain_s),
            target: None,
            note: "includes firmware and bootloader".into(),
            ..Row::default()
        },
    ])
}

/// `package=version` of every installed package of a dpkg status file.
fn dpkg_packages(status: &str) -> std::collections::BTreeSet<String> {
    status
        .split("\n\n")
        .filter(|p| p.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|p| {
            let field = |k: &str| {
                p.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            Some(format!("{}={}", field("Package:")?, field("Version:")?))
        })
        .collect()
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(src).arg(dest).status()?;
    anyhow::ensure!(st.success(), "copying {}", src.display());
    Ok(())
}
