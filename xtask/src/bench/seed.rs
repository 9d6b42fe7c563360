//! Seed tarballs: compressing and unpacking the ostree repository, and the last seed made.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{state_dir, timed, Row};

/// The seed's biggest tarball is the ostree repository: the base image's own repo (its layers
/// unpacked: `sysroot/ostree/repo`) stands in for it. Baselines: GNU tar with gzip -6, as
/// lifecycle-agent's `tar czf` writes it, and `tar | zstd -3 -T0`.
pub(super) fn run(root: &Path, imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let state = state_dir();
    let layout = state.join("images/imgmode-base/latest");
    anyhow::ensure!(
        layout.join("index.json").is_file(),
        "no imgmode-base in {}; run cargo xtask build first",
        state.display()
    );
    let scratch = tempfile::tempdir_in(root.join("target"))?;
    let dir = scratch.path();
    let (repo_parent, tree_bytes) = unpack_repo(&layout, dir)?;
    let (lca, lca_size) = baseline_tarballs(&repo_parent, tree_bytes, dir, rows)?;
    imgmode_tarballs(imgmode, &repo_parent, dir, lca, lca_size, rows)?;
    restore(imgmode, dir, rows)?;
    last_seed_made(root, rows)
}

/// The size of a file, 0 when it cannot be read.
fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

/// Unpack the image's layers under `scratch/root`: the directory holding its ostree `repo`,
/// and the repo's size in bytes.
fn unpack_repo(layout: &Path, scratch: &Path) -> Result<(PathBuf, u64)> {
    let tree = scratch.join("root");
    std::fs::create_dir_all(&tree)?;
    for layer in imgmode_vmtest::harness::seed::layout_layers(layout)? {
        crate::sh(
            Command::new("tar")
                .arg("-xzf")
                .arg(layer)
                .arg("-C")
                .arg(&tree),
        )?;
    }
    let repo_parent = tree.join("sysroot/ostree");
    anyhow::ensure!(
        repo_parent.join("repo").is_dir(),
        "the base image has no sysroot/ostree/repo"
    );
    let du = Command::new("du")
        .arg("-sb")
        .arg(repo_parent.join("repo"))
        .output()?;
    let tree_bytes: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((repo_parent, tree_bytes))
}

/// The baselines: `tar czf` as lifecycle-agent runs it, and `tar | zstd`; returns the
/// `tar czf` time and tarball size.
fn baseline_tarballs(
    repo_parent: &Path,
    tree_bytes: u64,
    dir: &Path,
    rows: &mut Vec<Row>,
) -> Result<(f64, u64)> {
    let out = |n: &str| dir.join(n);
    let lca = timed(
        Command::new("tar")
            .arg("-czf")
            .arg(out("lca.tgz"))
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "--selinux",
                "-C",
            ])
            .arg(repo_parent)
            .arg("repo"),
    )?;
    let lca_size = size(&out("lca.tgz"));
    rows.push(Row {
        name: "seed ostree tarball: tar czf (gzip -6, lifecycle-agent)".into(),
        seconds: lca,
        baseline: None,
        baseline_seconds: None,
        ratio: None,
        target: None,
        note: format!(
            "{:.0} MiB of repo -> {:.0} MiB",
            mib(tree_bytes),
            mib(lca_size)
        ),
        ..Row::default()
    });
    let zstd_base = timed(Command::new("sh").arg("-c").arg(format!(
        "tar -cf - --xattrs --xattrs-include='*' --acls --selinux -C {} repo | zstd -q -3 -T0 -o {}",
        repo_parent.display(),
        out("plain.tar.zst").display()
    )))?;
    rows.push(Row {
        name: "seed ostree tarball: tar | zstd -3 -T0".into(),
        seconds: zstd_base,
        baseline: Some("tar czf".into()),
        baseline_seconds: Some(lca),
        ratio: Some(zstd_base / lca),
        target: None,
        note: format!("{:.0} MiB", mib(size(&out("plain.tar.zst")))),
        ..Row::default()
    });
    Ok((lca, lca_size))
}

/// `imgmode internal seed-archive` with gzip -6, gzip -2 (the default) and zstd -3, against `tar czf`
/// (`lca` seconds, `lca_size` bytes).
fn imgmode_tarballs(
    imgmode: &Path,
    repo_parent: &Path,
    dir: &Path,
    lca: f64,
    lca_size: u64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    for (c, target) in [
        (
            "gzip:6",
            Some("<= 1.05 (the same gzip; the pipeline costs nothing)"),
        ),
        (
            "gzip:2",
            Some("< 1 (the default: faster, still read by tar xzf)"),
        ),
        ("zstd:3", None),
    ] {
        let o = dir.join(format!("imgmode-{}", c.replace(':', "")));
        let t = timed(
            Command::new(imgmode)
                .args(["internal", "seed-archive", "--compression", c])
                .arg(&o)
                .arg(repo_parent)
                .arg("repo"),
        )?;
        if c.starts_with("gzip") {
            // readable by the tool lifecycle-agent uses
            crate::sh(
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("tar -tzf {} >/dev/null", o.display())),
            )?;
        }
        rows.push(Row {
            name: format!("seed ostree tarball: imgmode {c}"),
            seconds: t,
            baseline: Some("tar czf".into()),
            baseline_seconds: Some(lca),
            ratio: Some(t / lca),
            target: target.map(str::to_string),
            note: format!(
                "{:.0} MiB ({:.2}x the tar czf size)",
                mib(size(&o)),
                size(&o) as f64 / lca_size.max(1) as f64
            ),
            ..Row::default()
        });
    }
    Ok(())
}

/// Restore: the installer's unpacking against the plain tools on the same bytes (target:
/// at least 0.8 of their throughput, i.e. at most 1.25 times their time).
fn restore(imgmode: &Path, dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let out = |n: &str| dir.join(n);
    for (file, label) in [
        ("imgmode-gzip2", "tar -xzf"),
        ("imgmode-zstd3", "zstd -d | tar -x"),
    ] {
        let tarball = out(file);
        let d1 = out(&format!("{file}-plain"));
        let d2 = out(&format!("{file}-imgmode"));
        std::fs::create_dir_all(&d1)?;
        let (src, dest) = (tarball.display(), d1.display());
        let cmd = if file.ends_with("gzip2") {
            format!("tar -xzf {src} -C {dest}")
        } else {
            format!("zstd -q -d -c {src} | tar -xf - -C {dest}")
        };
        let base = timed(Command::new("sh").arg("-c").arg(cmd))?;
        let t = timed(
            Command::new(imgmode)
                .args(["internal", "seed-unpack"])
                .arg(&tarball)
                .arg(&d2),
        )?;
        let compared = same_tree(&d1, &d2)
            .with_context(|| format!("imgmode's unpack of {file} differs from {label}'s"))?;
        let _ = std::fs::remove_dir_all(&d1);
        let _ = std::fs::remove_dir_all(&d2);
        rows.push(Row {
            name: format!("seed restore: imgmode unpack of {file}"),
            seconds: t,
            baseline: Some(label.into()),
            baseline_seconds: Some(base),
            ratio: Some(t / base),
            target: Some("<= 1.25 (throughput >= 0.8)".into()),
            note: format!(
                "{:.0} MiB/s of tarball vs {:.0} MiB/s",
                mib(size(&tarball)) / t,
                mib(size(&tarball)) / base
            ),
            compared: Some(compared),
            ..Row::default()
        });
    }
    Ok(())
}

/// The last seed made (build-seed or vmtest seed): its size against the installed tree, and
/// how long each step took.
fn last_seed_made(root: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let newest = [
        "target/seed/created.json",
        "target/vmtest/seed/created.json",
    ]
    .iter()
    .map(|p| root.join(p))
    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
    .max();
    if let Some(text) = newest.and_then(|(_, p)| std::fs::read_to_string(p).ok()) {
        let c: serde_json::Value = serde_json::from_str(&text)?;
        let tars = c["tarballs"].as_array().cloned().unwrap_or_default();
        let tar_bytes: u64 = tars.iter().filter_map(|t| t["tar_bytes"].as_u64()).sum();
        let bytes: u64 = tars.iter().filter_map(|t| t["bytes"].as_u64()).sum();
        let total: f64 = c["timings"]
            .as_object()
            .map_or(0.0, |m| m.values().filter_map(|v| v.as_f64()).sum());
        rows.push(Row {
            name: "seed create in the seed VM (TCG), last seed made".into(),
            seconds: total,
            baseline: None,
            baseline_seconds: None,
            ratio: None,
            target: None,
            note: format!(
                "tarballs {:.0} MiB from {:.0} MiB of tree ({:.2}); steps {}",
                mib(bytes),
                mib(tar_bytes),
                bytes as f64 / tar_bytes.max(1) as f64,
                c["timings"]
            ),
            ..Row::default()
        });
    } else {
        rows.push(Row {
            name: "seed create in the seed VM (TCG), last seed made".into(),
            note: "not measured: no seed made on this machine yet (cargo xtask build-seed or vmtest seed)".into(),
            ..Row::default()
        });
    }
    Ok(())
}

/// Two unpacked trees hold the same entries, entry for entry: type, mode, owner, size, link
/// target and content (directory mtimes are left out).
fn same_tree(plain: &Path, ours: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            out.push(p.strip_prefix(root)?.to_path_buf());
            if std::fs::symlink_metadata(&p)?.is_dir() {
                walk(root, &p, out)?;
            }
        }
        Ok(())
    }
    let (mut a, mut b) = (vec![], vec![]);
    walk(plain, plain, &mut a)?;
    walk(ours, ours, &mut b)?;
    a.sort();
    b.sort();
    if a != b {
        let only_a: Vec<_> = a.iter().filter(|p| !b.contains(p)).take(5).collect();
        let only_b: Vec<_> = b.iter().filter(|p| !a.contains(p)).take(5).collect();
        anyhow::bail!("entries only in tar's tree {only_a:?}, only in imgmode's {only_b:?}");
    }
    for rel in &a {
        let (pa, pb) = (plain.join(rel), ours.join(rel));
        let (ma, mb) = (
            std::fs::symlink_metadata(&pa)?,
            std::fs::symlink_metadata(&pb)?,
        );
        let key = |m: &std::fs::Metadata| (m.mode(), m.uid(), m.gid(), m.nlink());
        anyhow::ensure!(
            key(&ma) == key(&mb),
            "{}: (mode, uid, gid, links) {:?} by tar, {:?} by imgmode",
            rel.display(),
            key(&ma),
            key(&mb)
        );
        if ma.file_type().is_symlink() {
            anyhow::ensure!(
                std::fs::read_link(&pa)? == std::fs::read_link(&pb)?,
                "{}: the link targets differ",
                rel.display()
            );
        } else if ma.is_file() {
            anyhow::ensure!(
                ma.size() == mb.size() && std::fs::read(&pa)? == std::fs::read(&pb)?,
                "{}: the contents differ",
                rel.display()
            );
        }
    }
    Ok(format!(
        "{} entries equal to tar's (type, mode, owner, links, content)",
        a.len()
    ))
}
