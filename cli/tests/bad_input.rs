//! Bad input through the real `imgmode` binary: a clear message on stderr, exit status 1 (2 for
//! usage errors), and no output file left behind.
//!
//! Tests that reach image reading need root and skopeo (CI has both); as another user they
//! report that they did not run.

use std::path::Path;
use std::process::Output;

mod common;
use common::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert failure with exit 1, a message containing `needle`, and no output file.
fn fails(td: &Path, args: &[&str], needle: &str, out: &Path) {
    let o = imgmode(td, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        err.lines().any(|l| l.starts_with("error: ")) && !last.starts_with("==>"),
        "{args:?}: {err}"
    );
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(!out.exists(), "{args:?} left {} behind", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".imgmode-disk-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary output left behind");
}

#[test]
fn unsupported_transport_and_bad_references() {
    let td = tempfile::tempdir().unwrap();
    let out = td.path().join("disk.qcow2");
    let o = out.to_str().unwrap();
    fails(
        td.path(),
        &["disk", "ftp://host/img", "-o", o],
        "unsupported transport \"ftp\"",
        &out,
    );
    fails(
        td.path(),
        &["disk", "Not A Ref", "-o", o],
        "invalid image reference",
        &out,
    );
    fails(
        td.path(),
        &["disk", "missing-image", "-o", o],
        "image \"missing-image\" not found in the local store",
        &out,
    );
}

#[test]
fn existing_output_is_kept_without_force() {
    let td = tempfile::tempdir().unwrap();
    let out = td.path().join("disk.raw");
    std::fs::write(&out, "user data").unwrap();
    let o = imgmode(
        td.path(),
        &[
            "disk",
            "imgmode-base",
            "--format",
            "raw",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("exists; pass --force"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "user data");
}

#[test]
fn usage_errors_exit_2() {
    let td = tempfile::tempdir().unwrap();
    for args in [
        &["disk", "x", "-o", "y", "--format", "vmdk"][..],
        &["disk", "x", "-o", "y", "--size", "lots"][..],
        &["status", "--format", "xml"][..],
        &["frobnicate"][..],
    ] {
        let o = imgmode(td.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn status_outside_an_ostree_system_says_so() {
    let td = tempfile::tempdir().unwrap();
    let o = imgmode(
        td.path(),
        &["status", "--sysroot", td.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is this an ostree-booted system?"),
        "{}",
        stderr(&o)
    );
}

/// Write an OCI layout holding one small image with the given labels.
fn write_oci(dir: &Path, labels: &str, arch: &str) {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = hex::encode(sha2::Sha256::digest(data));
        std::fs::write(blobs.join(&d), data).unwrap();
        (format!("sha256:{d}"), data.len())
    };
    // an uncompressed tar holding one file
    let mut tar = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar);
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "etc/hello", &b"hello"[..]).unwrap();
        b.finish().unwrap();
    }
    let (layer, layer_size) = put(&tar);
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","config":{{"Labels":{{{labels}}}}},"rootfs":{{"type":"layers","diff_ids":["{layer}"]}},"history":[{{"created_by":"test"}}]}}"#
    );
    let (config, config_size) = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_size}}}]}}"#
    );
    let (manifest, manifest_size) = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest}","size":{manifest_size}}}]}}"#
        ),
    )
    .unwrap();
}

#[test]
fn images_that_cannot_be_deployed_are_refused_before_writing() {
    if !is_root() {
        eprintln!("not run: needs root (imgmode disk refuses to run without it)");
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let out = td.path().join("disk.qcow2");
    let o = out.to_str().unwrap();

    let missing = format!("oci:{}", td.path().join("nowhere").display());
    fails(td.path(), &["disk", &missing, "-o", o], "not found", &out);

    let plain = td.path().join("plain");
    write_oci(&plain, r#""org.example":"x""#, "amd64");
    let plain_ref = format!("oci:{}", plain.display());
    fails(
        td.path(),
        &["disk", &plain_ref, "-o", o],
        "is not bootable",
        &out,
    );

    let arm = td.path().join("arm");
    write_oci(&arm, r#""containers.bootc":"1""#, "arm64");
    let arm_ref = format!("oci:{}", arm.display());
    fails(
        td.path(),
        &["disk", &arm_ref, "-o", o],
        "has architecture arm64; expected amd64",
        &out,
    );
}
