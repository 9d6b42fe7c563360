//! `imgmode seed check|inspect|create` on bad input: each fails with a message that says what
//! is wrong, and writes nothing.

mod common;
use common::{imgmode, is_root, require, write_oci, Need};
use std::path::Path;

const CONFIG: &str = "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nmetadata:\n  name: t\nseedImage: quay.io/example/seed:1\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\n";

fn seed_labels(format: u32, version: &str) -> String {
    format!(
        r#""com.openshift.lifecycle-agent.seed_format_version":"{format}","com.openshift.lifecycle-agent.seed_cluster_info":"{{\"seed_cluster_ocp_version\":\"{version}\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\",\"has_proxy\":false,\"has_fips\":false}}""#
    )
}

fn check(dir: &Path, image: &Path, config: &str) -> (bool, String) {
    let cfg = dir.join("ibi.yaml");
    std::fs::write(&cfg, config).unwrap();
    let out = imgmode(
        dir,
        &[
            "seed",
            "check",
            &format!("oci:{}", image.display()),
            "--config",
            &cfg.display().to_string(),
            "--arch",
            "amd64",
        ],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn seed_check_applies_the_gates_from_labels() {
    require!(Need::Tool("skopeo"));
    let td = tempfile::tempdir().unwrap();
    let good = td.path().join("good");
    write_oci(&good, &seed_labels(4, "4.17.0"), "amd64");
    let (ok, err) = check(td.path(), &good, CONFIG);
    assert!(ok, "{err}");

    let old = td.path().join("old");
    write_oci(&old, &seed_labels(3, "4.17.0"), "amd64");
    let (ok, err) = check(td.path(), &old, CONFIG);
    assert!(!ok);
    assert!(
        err.contains("seed image format version mismatch: expected 4, got 3"),
        "{err}"
    );

    let (ok, err) = check(td.path(), &good, &CONFIG.replace("4.17.0", "4.18.1"));
    assert!(!ok);
    assert!(err.contains("seed version mismatch"), "{err}");

    let arm = td.path().join("arm");
    write_oci(&arm, &seed_labels(4, "4.17.0"), "arm64");
    let (ok, err) = check(td.path(), &arm, CONFIG);
    assert!(!ok);
    assert!(
        err.contains("the seed is arm64, the target is amd64"),
        "{err}"
    );

    let plain = td.path().join("plain");
    write_oci(&plain, r#""containers.bootc":"1""#, "amd64");
    let (ok, err) = check(td.path(), &plain, CONFIG);
    assert!(!ok);
    assert!(err.contains("it is not a seed image"), "{err}");

    let (ok, err) = check(
        td.path(),
        &good,
        &CONFIG.replace("seedVersion: 4.17.0\n", ""),
    );
    assert!(!ok);
    assert!(err.contains("seedVersion is required"), "{err}");
}

#[test]
fn seed_inspect_names_missing_files() {
    require!(Need::Tool("skopeo"));
    let td = tempfile::tempdir().unwrap();
    let img = td.path().join("img");
    write_oci(&img, &seed_labels(4, "4.17.0"), "amd64");
    let out = imgmode(
        td.path(),
        &["seed", "inspect", &format!("oci:{}", img.display())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("is not a complete seed: missing"), "{err}");
    assert!(
        err.contains("ostree.tgz") && err.contains("etc.deletions"),
        "{err}"
    );
}

#[test]
fn seed_create_refuses_a_system_that_is_not_ostree_booted() {
    require!(Need::NotOstreeBooted);
    let td = tempfile::tempdir().unwrap();
    let work = td.path().join("work");
    let out = imgmode(
        td.path(),
        &[
            "seed",
            "create",
            "--output",
            "seed-test",
            "--work-dir",
            &work.display().to_string(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    if is_root() {
        assert!(err.contains("not an ostree-booted system"), "{err}");
    } else {
        assert!(err.contains("needs root"), "{err}");
    }
    assert!(!work.exists(), "seed create left {}", work.display());
    assert!(!td.path().join("state/images/seed-test").exists());
}
