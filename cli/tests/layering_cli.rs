//! `imgmode build`, `container lint` and the node verbs through the real binary, with bad input:
//! a clear message, exit 1, nothing stored. Building needs root and podman (CI has both);
//! without them those tests fail in strict mode and are skipped visibly otherwise.

use std::process::{Command, Output};

mod common;
use common::*;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// What `imgmode build` needs here.
const BUILD_NEEDS: [Need; 2] = [Need::Root, Need::Tool("podman")];

#[test]
fn a_non_bootable_image_fails_the_build_and_nothing_is_stored() {
    require!(all BUILD_NEEDS);
    let td = tempfile::tempdir().unwrap();
    let ctx = td.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("hello.txt"), "hi\n").unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let tag = format!("imgmode-test-notbootable-{}", std::process::id());
    let o = imgmode(
        td.path(),
        &["build", "-q", "-t", &tag, ctx.to_str().unwrap()],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for needle in [
        "is not a bootable image; nothing was stored",
        "bootc-label: the image has no containers.bootc=1 label",
        "kernel: no kernel",
        "var-run: ",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !td.path().join("state/images").join(&tag).exists(),
        "a failed build stored an image"
    );
    let still = Command::new("podman")
        .args(["image", "exists", &format!("localhost/{tag}:latest")])
        .status()
        .unwrap();
    assert!(
        !still.success(),
        "the failed image is still tagged in containers-storage"
    );

    // the same image stored anyway: lint reports each lint by name, in JSON too
    let o = imgmode(
        td.path(),
        &[
            "build",
            "-q",
            "--allow-lint-failure",
            "-t",
            &tag,
            ctx.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o).1);
    let o = imgmode(td.path(), &["container", "lint", "--format", "json", &tag]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let failed: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["passed"] == false && r["severity"] == "fatal")
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["bootc-label", "kernel", "baseimage-root", "var-run"]
    );
    let _ = Command::new("podman")
        .args(["rmi", "--force", &format!("localhost/{tag}:latest")])
        .output();
}

#[test]
fn containerfile_errors_are_shown_as_the_builder_reports_them() {
    require!(all BUILD_NEEDS);
    let td = tempfile::tempdir().unwrap();
    let ctx = td.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Containerfile"),
        "FROM scratch\nNOTANINSTRUCTION foo\n",
    )
    .unwrap();
    let o = imgmode(
        td.path(),
        &["build", "-q", "-t", "broken", ctx.to_str().unwrap()],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("notaninstruction"), "{err}");
    assert!(err.contains("did not build"), "{err}");
    assert!(!td.path().join("state/images/broken").exists());
}

#[test]
fn bad_build_arguments_are_refused_before_podman_runs() {
    let td = tempfile::tempdir().unwrap();
    let o = imgmode(
        td.path(),
        &["build", "-t", "x", td.path().join("nope").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("reading the Containerfile"),
        "{}",
        text(&o).1
    );
    std::fs::write(td.path().join("Containerfile"), "FROM imgmode-base\n").unwrap();
    let o = imgmode(
        td.path(),
        &[
            "build",
            "-t",
            "x",
            "--build-arg",
            "NOVALUE",
            td.path().to_str().unwrap(),
        ],
    );
    assert!(text(&o).1.contains("is not KEY=VALUE"), "{}", text(&o).1);
}

#[test]
fn node_verbs_say_what_is_wrong() {
    let td = tempfile::tempdir().unwrap();
    // a local name is not something a node can fetch
    let o = imgmode(
        td.path(),
        &[
            "switch",
            "imgmode-base",
            "--sysroot",
            td.path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("has no transport"), "{}", text(&o).1);
    // not an ostree system
    let o = imgmode(
        td.path(),
        &["rollback", "--sysroot", td.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("is this an ostree-booted system"),
        "{}",
        text(&o).1
    );
    // a MachineConfig with a tag
    let mc = td.path().join("mc.yaml");
    std::fs::write(
        &mc,
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\nmetadata:\n  name: os-layer\nspec:\n  osImageURL: quay.io/org/os:4.18\n",
    )
    .unwrap();
    let o = imgmode(
        td.path(),
        &[
            "apply-machineconfig",
            mc.to_str().unwrap(),
            "--sysroot",
            td.path().to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(
        err.contains("names a tag") && err.contains("skopeo inspect"),
        "{err}"
    );
    // revert with nothing applied
    let o = imgmode(
        td.path(),
        &["revert", "--sysroot", td.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("no MachineConfig is applied"),
        "{}",
        text(&o).1
    );
}

/// A sysroot with a stateroot and no deployment, under `dir`.
fn empty_sysroot(dir: &std::path::Path) -> std::path::PathBuf {
    let sysroot = dir.join("sysroot");
    std::fs::create_dir_all(&sysroot).unwrap();
    let st = Command::new("ostree")
        .args(["admin", "init-fs", "--modern"])
        .arg(&sysroot)
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("ostree")
        .args(["admin", "os-init", "default"])
        .arg(format!("--sysroot={}", sysroot.display()))
        .status()
        .unwrap();
    assert!(st.success());
    sysroot
}

#[test]
fn switch_refuses_other_architectures_and_non_bootable_images_before_fetching() {
    require!(Need::Root);
    let td = tempfile::tempdir().unwrap();
    let sysroot = empty_sysroot(td.path());
    let arm = td.path().join("arm");
    write_oci(&arm, r#""containers.bootc":"1""#, "arm64");
    let o = imgmode(
        td.path(),
        &[
            "switch",
            &format!("oci:{}", arm.display()),
            "--sysroot",
            sysroot.to_str().unwrap(),
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // skopeo's proxy (or imgmode itself) refuses it, naming both architectures
    assert!(
        err.contains("architecture arm64; expected amd64") || err.contains("is built for arm64"),
        "{err}"
    );
    let plain = td.path().join("plain");
    write_oci(&plain, r#""org.example":"x""#, "amd64");
    let o = imgmode(
        td.path(),
        &[
            "switch",
            &format!("oci:{}", plain.display()),
            "--sysroot",
            sysroot.to_str().unwrap(),
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("bootable"), "{err}");
    // nothing was deployed or imported
    let deploy = sysroot.join("ostree/deploy/default/deploy");
    assert!(std::fs::read_dir(&deploy).map_or(true, |d| d.count() == 0));
}

#[test]
fn not_enough_space_is_refused_before_fetching() {
    require!(Need::Tmpfs);
    let td = tempfile::tempdir().unwrap();
    let small = td.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a 16 MiB tmpfs failed");
    let result = std::panic::catch_unwind(|| {
        let sysroot = empty_sysroot(&small);
        let img = td.path().join("img");
        write_oci(
            &img,
            r#""containers.bootc":"1","ostree.final-diffid":"{LAYER}""#,
            "amd64",
        );
        let o = imgmode(
            td.path(),
            &[
                "switch",
                &format!("oci:{}", img.display()),
                "--sysroot",
                sysroot.to_str().unwrap(),
            ],
        );
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("not enough free space") && err.contains("nothing was changed"),
            "{err}"
        );
        let objects = sysroot.join("ostree/repo/objects");
        let n = walk_files(&objects);
        assert_eq!(n, 0, "objects were written before the space check");
    });
    let _ = Command::new("umount").arg(&small).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
