//! `imgmode build` against `podman build`, and the bytes an upgrade fetches.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{state_dir, stdout_of, timed, Row};

/// `imgmode build` against plain `podman build --isolation chroot` of the same Containerfile
/// (no layer cache, base already in containers-storage, best of 2 alternating runs each), and
/// the bytes `imgmode upgrade --check` says an upgrade fetches after one layer changed,
/// against that layer's size.
pub(super) fn run(root: &Path, imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    build_vs_podman(root, imgmode, rows)?;
    upgrade_bytes(imgmode, rows)
}

/// `imgmode build` against `podman build` of the layered examples.
fn build_vs_podman(root: &Path, imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let def = root.join("containerfiles/base");
    timed(
        Command::new(imgmode)
            .args([
                "base",
                "build",
                "--quiet",
                "--to-containers-storage",
                "--definition",
            ])
            .arg(&def),
    )?;
    for example in ["kargs", "rsyslog"] {
        let ctx = root.join("containerfiles/layered").join(example);
        let (mut best_p, mut best_i) = (f64::MAX, f64::MAX);
        for _ in 0..2 {
            best_p = best_p.min(timed(
                Command::new("podman")
                    .args(["build", "--isolation", "chroot", "--no-cache", "-t"])
                    .arg(format!("localhost/bench-podman-{example}:latest"))
                    .arg(&ctx),
            )?);
            best_i = best_i.min(timed(
                Command::new(imgmode)
                    .args(["build", "-q", "--no-cache", "-t"])
                    .arg(format!("bench-imgmode-{example}"))
                    .arg(&ctx),
            )?);
        }
        rows.push(Row {
            name: format!("imgmode build ({example})"),
            seconds: best_i,
            baseline: Some("podman build".into()),
            baseline_seconds: Some(best_p),
            ratio: Some(best_i / best_p),
            target: Some("<= 1.10".into()),
            note: "best of 2, no layer cache; includes lint and storing".into(),
            ..Row::default()
        });
    }
    Ok(())
}

/// The bytes an upgrade fetches from a local registry after one layer changed, against that
/// layer's size.
fn upgrade_bytes(imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    // One layer changes between v1 and v2; a sysroot deployed from v1 checks for v2.
    let scratch = tempfile::tempdir_in(std::env::temp_dir())?;
    let ctx = scratch.path().join("ctx");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM imgmode-base\nCOPY payload /usr/share/imgmode-bench/payload\n",
    )?;
    let build = |content: &[u8]| -> Result<()> {
        std::fs::write(ctx.join("payload"), content)?;
        timed(
            Command::new(imgmode)
                .args(["build", "-q", "-t", "bench-upgrade"])
                .arg(&ctx),
        )?;
        Ok(())
    };
    // 4 MiB of incompressible-ish bytes so the layer dominates its tar overhead
    let mut data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    build(&data)?;
    // Both versions go through a local registry, so the bytes the upgrade fetches are counted
    // on the wire (the registry's access log), not estimated.
    let registry =
        imgmode_vmtest::harness::registry::Registry::start(&scratch.path().join("registry"))?;
    let reg = registry.host_addr();
    // skopeo's image proxy (ostree-ext) reads the system's registries.conf only: a drop-in
    // for this loopback port alone, removed when the benchmark ends (or fails)
    let _insecure = DropIn::write(
        &format!(
            "/etc/containers/registries.conf.d/50-imgmode-bench-{}.conf",
            registry.port
        ),
        &format!("[[registry]]\nlocation = \"{reg}\"\ninsecure = true\n"),
    )?;
    let push = || -> Result<()> {
        timed(Command::new(imgmode).args([
            "push",
            "bench-upgrade",
            &format!("docker://{reg}/bench-upgrade:latest"),
            "--tls-verify=false",
        ]))?;
        Ok(())
    };
    push()?;
    let sysroot = scratch.path().join("sysroot");
    let state = state_dir();
    init_sysroot(&sysroot)?;
    timed(
        Command::new(imgmode)
            .args([
                "switch",
                &format!("ostree-unverified-registry:{reg}/bench-upgrade:latest"),
                "--sysroot",
            ])
            .arg(&sysroot),
    )?;
    data.reverse();
    build(&data)?;
    push()?;
    let check: serde_json::Value = serde_json::from_slice(&stdout_of(
        Command::new(imgmode)
            .args(["upgrade", "--check", "--format", "json", "--sysroot"])
            .arg(&sysroot),
        "imgmode upgrade --check",
    )?)?;
    let estimate = check["bytes-fetched"]
        .as_u64()
        .context("imgmode upgrade --check printed no bytes-fetched")?;
    let log = scratch.path().join("registry/registry.log");
    let before = std::fs::read_to_string(&log)?.len();
    timed(
        Command::new(imgmode)
            .args(["upgrade", "--sysroot"])
            .arg(&sysroot),
    )?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fetched = blob_bytes_served(&std::fs::read_to_string(&log)?[before..]) as f64;
    drop(registry);
    let last = last_layer_size(&state.join("images/bench-upgrade/latest"))?;
    anyhow::ensure!(
        fetched > 0.0,
        "the upgrade fetched no blob from the registry"
    );
    rows.push(Row {
        name: "upgrade bytes after one layer changed".into(),
        seconds: 0.0,
        baseline: Some("the changed layer's size".into()),
        baseline_seconds: None,
        ratio: Some(fetched / last),
        target: Some("<= 1.2".into()),
        note: format!(
            "{fetched:.0} blob bytes served by the registry during imgmode upgrade (its access log); layer {last:.0} bytes; upgrade --check estimated {estimate} bytes, {} of {} layers",
            check["layers-fetched"], check["layers-total"]
        ),
        compared: Some(format!(
            "wire bytes against the changed layer; the estimate was {estimate}"
        )),
        ..Row::default()
    });
    Ok(())
}

/// An empty ostree sysroot with the `default` stateroot and no bootloader.
fn init_sysroot(sysroot: &Path) -> Result<()> {
    std::fs::create_dir_all(sysroot)?;
    let st = Command::new("ostree")
        .args(["admin", "init-fs", "--modern"])
        .arg(sysroot)
        .status()?;
    anyhow::ensure!(st.success(), "ostree admin init-fs");
    let st = Command::new("ostree")
        .args(["admin", "os-init", "default"])
        .arg(format!("--sysroot={}", sysroot.display()))
        .status()?;
    anyhow::ensure!(st.success(), "ostree admin os-init");
    let st = Command::new("ostree")
        .args(["config", "set", "sysroot.bootloader", "none"])
        .arg(format!("--repo={}", sysroot.join("ostree/repo").display()))
        .status()?;
    anyhow::ensure!(st.success(), "ostree config set");
    Ok(())
}

/// The size of the last layer of the image in the OCI layout `layout`.
fn last_layer_size(layout: &Path) -> Result<f64> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    // (parsed by hand: xtask must build before `cargo xtask deps` installs libostree-dev, so
    // it cannot use the builder crate's OCI reader)
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .context("bench-upgrade's index.json names no manifest")?;
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(
        layout
            .join("blobs/sha256")
            .join(mdigest.trim_start_matches("sha256:")),
    )?)?;
    Ok(manifest["layers"]
        .as_array()
        .and_then(|l| l.last())
        .and_then(|l| l["size"].as_u64())
        .context("bench-upgrade's manifest has no layer size")? as f64)
}

/// A file that exists while this value lives.
struct DropIn(PathBuf);

impl DropIn {
    fn write(path: &str, text: &str) -> Result<Self> {
        let p = PathBuf::from(path);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {path}"))?;
        Ok(Self(p))
    }
}

impl Drop for DropIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The bytes of blob bodies a registry served (`GET /v2/.../blobs/...` answered 200 or 206),
/// from its combined-format access log.
fn blob_bytes_served(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .filter_map(|l| {
            let after = l.split("HTTP/1.1\" ").nth(1)?;
            let mut w = after.split_whitespace();
            let status = w.next()?;
            let bytes: u64 = w.next()?.parse().ok()?;
            matches!(status, "200" | "206").then_some(bytes)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_bytes_are_read_from_the_access_log() {
        let log = "127.0.0.1 - - [x] \"GET /v2/ HTTP/1.1\" 200 2 \"\" \"skopeo\"\n\
                   127.0.0.1 - - [x] \"GET /v2/b/blobs/sha256:ab HTTP/1.1\" 200 1000 \"\" \"skopeo\"\n\
                   127.0.0.1 - - [x] \"HEAD /v2/b/blobs/sha256:cd HTTP/1.1\" 200 0 \"\" \"skopeo\"\n\
                   127.0.0.1 - - [x] \"GET /v2/b/blobs/sha256:ef HTTP/1.1\" 404 157 \"\" \"skopeo\"\n\
                   127.0.0.1 - - [x] \"GET /v2/b/manifests/latest HTTP/1.1\" 200 500 \"\" \"skopeo\"\n";
        assert_eq!(blob_bytes_served(log), 1000);
    }
}
