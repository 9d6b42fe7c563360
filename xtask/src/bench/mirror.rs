//! `imgmode mirror` against `skopeo copy`.

use anyhow::Result;
use std::path::Path;
use std::process::Command;

use super::common::{state_dir, timed, Row};

/// `imgmode mirror` of the store's imgmode-base into an empty directory against `skopeo copy`
/// of the same image into an empty `dir:` (best of 2 each; both read the same OCI layout).
pub(super) fn run(root: &Path, imgmode: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let layout = state_dir().join("images/imgmode-base/latest");
    anyhow::ensure!(
        layout.join("index.json").is_file(),
        "no imgmode-base in the store; run cargo xtask build first"
    );
    let src = format!("oci:{}", layout.display());
    let scratch = tempfile::tempdir_in(root.join("target"))?;
    let (mut ours, mut theirs) = (f64::MAX, f64::MAX);
    let mut compared = None;
    for i in 0..2 {
        let m = scratch.path().join(format!("mirror-{i}"));
        ours = ours.min(timed(
            Command::new(imgmode)
                .args(["--quiet", "mirror", "--image"])
                .arg(format!("{src}=imgmode/base:latest"))
                .arg("--dir")
                .arg(&m),
        )?);
        let d = scratch.path().join(format!("dir-{i}"));
        theirs = theirs.min(timed(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--preserve-digests", &src])
                .arg(format!("dir:{}", d.display())),
        )?);
        if i == 0 {
            compared = Some(same_blobs(&m, &d)?);
        }
        std::fs::remove_dir_all(&d)?;
        std::fs::remove_dir_all(&m)?;
    }
    rows.push(Row {
        name: "imgmode mirror (imgmode-base)".into(),
        seconds: ours,
        baseline: Some("skopeo copy to dir:".into()),
        baseline_seconds: Some(theirs),
        ratio: Some(ours / theirs),
        target: None,
        note: "registry v2 layout, every blob hashed; time ratio (lower is faster), best of 2"
            .into(),
        compared,
        ..Row::default()
    });
    Ok(())
}

/// The blobs of a registry layout (`docker/registry/v2/blobs/sha256/xx/HEX/data`) against a
/// skopeo `dir:` copy (blobs named by their hex digest): the same set, the same bytes.
fn same_blobs(registry: &Path, dir: &Path) -> Result<String> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() != 64 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let ours = registry.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{name}/data",
            &name[..2]
        ));
        anyhow::ensure!(
            ours.is_file(),
            "imgmode mirror has no blob sha256:{name}, which skopeo copied"
        );
        anyhow::ensure!(
            std::fs::read(&ours)? == std::fs::read(e.path())?,
            "blob sha256:{name} differs between imgmode mirror and skopeo"
        );
        n += 1;
    }
    anyhow::ensure!(n > 0, "skopeo's dir: copy holds no blob");
    Ok(format!("{n} blobs identical to skopeo's"))
}
