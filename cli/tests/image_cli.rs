//! `imgmode image unpack`: an image's merged root filesystem, verified and unpacked through
//! the hardened extractor, written beside DIR and renamed into place only when complete.

mod common;
use common::{run, tar_of, write_oci_layers};
use std::path::Path;

fn layout(dir: &Path) -> Vec<String> {
    write_oci_layers(
        dir,
        "",
        "amd64",
        &[
            tar_of(&[
                ("etc/", ""),
                ("etc/hello", "hello"),
                ("etc/gone", "removed by the upper layer"),
                ("usr/bin/", ""),
                ("usr/bin/tool", "#!/bin/sh\n"),
            ]),
            tar_of(&[("etc/.wh.gone", ""), ("etc/new", "new")]),
        ],
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let manifest = m["manifests"][0]["digest"].as_str().unwrap().to_string();
    let blob = |d: &str| {
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let man: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest)).unwrap()).unwrap();
    man["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()).display().to_string())
        .collect()
}

fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".imgmode-unpack-") || n.starts_with("imgmode-image-"))
        .collect()
}

#[test]
fn unpack_merges_layers_and_applies_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("oci");
    layout(&oci);
    let dir = t.path().join("rootfs");
    let image = format!("oci:{}", oci.display());
    let (ok, out, err) = run(
        t.path(),
        &[
            "image",
            "unpack",
            &image,
            dir.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["layers"].as_u64(), v["whiteouts"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/hello")).unwrap(),
        "hello"
    );
    assert_eq!(std::fs::read_to_string(dir.join("etc/new")).unwrap(), "new");
    assert!(!dir.join("etc/gone").exists());
    assert!(!dir.join("etc/.wh.gone").exists());
    assert!(dir.join("usr/bin/tool").is_file());

    // DIR holding something is never written into
    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", &image, dir.to_str().unwrap()],
    );
    assert!(!ok && err.contains("exists and is not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/hello")).unwrap(),
        "hello"
    );
}

/// A corrupted or truncated layer fails the unpack with nothing left behind; the same
/// command with the good blob back succeeds.
#[test]
fn corrupted_and_truncated_layers_leave_nothing_and_a_retry_succeeds() {
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("oci");
    let layers = layout(&oci);
    let good = std::fs::read(&layers[1]).unwrap();
    let image = format!("oci:{}", oci.display());
    let dir = t.path().join("rootfs");
    let mut flipped = good.clone();
    flipped[1024] ^= 1; // inside the second member's data
    let cases: [(&[u8], &str); 2] = [
        (&flipped, "is corrupted or truncated"),
        (&good[..good.len() - 1000], "is corrupted or truncated"),
    ];
    for (bytes, why) in cases {
        std::fs::write(&layers[1], bytes).unwrap();
        let (ok, _, err) = run(
            t.path(),
            &["image", "unpack", &image, dir.to_str().unwrap()],
        );
        assert!(!ok, "a bad layer was unpacked");
        assert!(err.contains(why) && err.contains("layer 2"), "{err}");
        assert!(!dir.exists(), "partial output left at {}", dir.display());
        assert_eq!(leftovers(t.path()), Vec::<String>::new());
    }
    std::fs::write(&layers[1], &good).unwrap();
    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", &image, dir.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    assert!(dir.join("etc/new").is_file());
}

/// A layer with a `..` entry, a budget smaller than the image, an unknown image and a
/// malformed digest are each refused by name, with nothing written.
#[test]
fn hostile_layers_budgets_and_bad_references_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let oci = t.path().join("oci");
    write_oci_layers(&oci, "", "amd64", &[tar_of(&[("../../escaped", "x")])]);
    let image = format!("oci:{}", oci.display());
    let dir = t.path().join("rootfs");
    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", &image, dir.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("hostile archive") && err.contains("\"..\""),
        "{err}"
    );
    assert!(!dir.exists() && !t.path().join("escaped").exists());

    let big = t.path().join("big");
    write_oci_layers(&big, "", "amd64", &[tar_of(&[("blob", &"x".repeat(8192))])]);
    let image = format!("oci:{}", big.display());
    let (ok, _, err) = run(
        t.path(),
        &[
            "image",
            "unpack",
            &image,
            dir.to_str().unwrap(),
            "--max-size",
            "4K",
        ],
    );
    assert!(!ok && err.contains("unpack budget"), "{err}");
    assert!(!dir.exists());

    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", "no-such-image", dir.to_str().unwrap()],
    );
    assert!(!ok && err.contains("no-such-image"), "{err}");
    assert!(err.contains("not found in the local store"), "{err}");

    // a layer whose first header is damaged: the stream is named corrupt, nothing is left
    let bad = t.path().join("bad");
    let mut layer = tar_of(&[("etc/hello", "hello")]);
    layer[0] ^= 0x20;
    write_oci_layers(&bad, "", "amd64", &[layer]);
    let image = format!("oci:{}", bad.display());
    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", &image, dir.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("the archive is corrupt: header checksum mismatch at byte 0"),
        "{err}"
    );
    assert!(!dir.exists());

    // a manifest naming its layer by an uppercase digest
    let index = std::fs::read_to_string(oci.join("index.json")).unwrap();
    let m: serde_json::Value = serde_json::from_str(&index).unwrap();
    let d = m["manifests"][0]["digest"].as_str().unwrap();
    let upper = format!("sha256:{}", d["sha256:".len()..].to_uppercase());
    std::fs::write(oci.join("index.json"), index.replace(d, &upper)).unwrap();
    let image = format!("oci:{}", oci.display());
    let (ok, _, err) = run(
        t.path(),
        &["image", "unpack", &image, dir.to_str().unwrap()],
    );
    assert!(!ok && err.contains("malformed digest"), "{err}");
    assert!(!dir.exists());
    assert_eq!(leftovers(t.path()), Vec::<String>::new());
}

/// The OCI image spec makes a config's `history` optional: such an image is read (unpacked and
/// linted), and `oci:DIR:TAG` opens exactly the image tagged TAG.
#[test]
fn images_without_history_are_read_and_a_tag_names_its_image() {
    let td = tempfile::tempdir().unwrap();
    let src = td.path().join("src");
    layout(&src);
    common::rewrite_layout(
        &src,
        |_| {},
        |c| {
            c.as_object_mut().unwrap().remove("history");
        },
    );
    let out = td.path().join("out");
    let (ok, _, err) = run(
        td.path(),
        &[
            "image",
            "unpack",
            &format!("oci:{}", src.display()),
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("etc/new")).unwrap(), "new");
    let (_, stdout, err) = run(
        td.path(),
        &["container", "lint", &format!("oci:{}", src.display())],
    );
    assert!(!err.contains("history"), "{err}");
    assert!(!stdout.is_empty());

    // a tag: the index entry's org.opencontainers.image.ref.name
    let index = src.join("index.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    v["manifests"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "v1"});
    std::fs::write(&index, serde_json::to_vec(&v).unwrap()).unwrap();
    let tagged = td.path().join("tagged");
    let (ok, _, err) = run(
        td.path(),
        &[
            "image",
            "unpack",
            &format!("oci:{}:v1", src.display()),
            tagged.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(tagged.join("etc/new").is_file());
}

/// One unreadable image in the local store is named, with how to remove it, and skipped: the
/// others are still listed, and the exit status is 0.
#[test]
fn a_corrupt_store_entry_is_named_and_skipped() {
    let td = tempfile::tempdir().unwrap();
    let images = td.path().join("state/images");
    for name in ["good", "bad"] {
        let dir = images.join(name).join("latest");
        layout(&dir);
    }
    std::fs::write(images.join("bad/latest/index.json"), "{ not json").unwrap();
    let (ok, stdout, err) = run(td.path(), &["images"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("good:latest"), "{stdout}");
    assert!(!stdout.contains("bad:latest"), "{stdout}");
    assert!(
        err.contains("warning: skipping image bad:latest in ")
            && err.contains("rebuild or push it again under that name, or remove it with: rm -rf "),
        "{err}"
    );
}

/// A reader that goes away (`imgmode … | grep -q`, `| head`) ends the output quietly: exit 0
/// and no panic on stderr (print! panics on a broken pipe).
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let td = tempfile::tempdir().unwrap();
    for args in [&["--format", "json", "images"][..], &["images"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgmode"))
            .args(args)
            .env("IMGMODE_STATE_DIR", td.path().join("state"))
            .env("IMGMODE_CACHE_DIR", td.path().join("cache"))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The first layer's media type and the manifest digest of the OCI layout at `dir`.
fn first_layer(dir: &Path) -> (String, String) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    (
        manifest["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .to_string(),
        digest,
    )
}

#[test]
fn push_preserve_digests_keeps_an_uncompressed_layer_and_the_digest() {
    common::require!(common::Need::Tool("skopeo"));
    let td = tempfile::tempdir().unwrap();
    let src = td.path().join("src");
    layout(&src);
    let (plain, src_digest) = first_layer(&src);
    assert_eq!(plain, "application/vnd.oci.image.layer.v1.tar");
    let push = |dest: &Path, preserve: bool| {
        let dest = format!("oci:{}", dest.display());
        let mut args = vec!["push"];
        if preserve {
            args.push("--preserve-digests");
        }
        let src = format!("oci:{}", src.display());
        args.extend([src.as_str(), dest.as_str()]);
        let (ok, _, err) = run(td.path(), &args);
        assert!(ok, "{err}");
    };
    // skopeo's own default: an uncompressed layer is compressed on the way, the digest changes
    let recompressed = td.path().join("recompressed");
    push(&recompressed, false);
    let (kind, digest) = first_layer(&recompressed);
    assert_eq!(kind, "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_ne!(digest, src_digest);
    // --preserve-digests: byte for byte, to a layout and through the local store
    let kept = td.path().join("kept");
    push(&kept, true);
    assert_eq!(first_layer(&kept), (plain.clone(), src_digest.clone()));
    let (ok, _, err) = run(
        td.path(),
        &[
            "push",
            "--preserve-digests",
            &format!("oci:{}", src.display()),
            "kept-here",
        ],
    );
    assert!(ok, "{err}");
    let out = td.path().join("from-store");
    let (ok, _, err) = run(
        td.path(),
        &[
            "push",
            "--preserve-digests",
            "kept-here",
            &format!("oci:{}", out.display()),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(first_layer(&out), (plain, src_digest));
}
