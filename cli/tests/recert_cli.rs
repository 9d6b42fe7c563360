//! `imgmode recert` through the real binary: flags or RECERT_CONFIG (never both), a dry run that
//! reports in JSON, a real run on a generated PKI.

use std::process::Command;

use imgmode_recert::testpki::{self, PkiSpec};

fn imgmode(args: &[&str], config: Option<&std::path::Path>) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imgmode"));
    c.arg("recert").args(args).env("RUST_LOG", "off");
    match config {
        Some(p) => c.env("RECERT_CONFIG", p),
        None => c.env_remove("RECERT_CONFIG"),
    };
    c.output().expect("running imgmode")
}

#[test]
fn flags_and_recert_config_are_exclusive_and_both_work() {
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    testpki::generate(&PkiSpec::default(), &root).unwrap();
    let root_s = root.to_str().unwrap();
    let cfg = td.path().join("recert.yaml");
    std::fs::write(
        &cfg,
        format!("dry_run: true\nstatic_dirs: [{root_s}]\nthreads: 1\n"),
    )
    .unwrap();

    let o = imgmode(&["--static-dir", root_s], Some(&cfg));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("RECERT_CONFIG is set") && err.contains("use one or the other"),
        "{err}"
    );

    let o = imgmode(&["--format", "json"], Some(&cfg));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["dry_run"], true);
    // The router certificate lives only in etcd.
    assert_eq!(s["found"]["certificates"], 13);

    let summary = td.path().join("summary.yaml");
    let o = imgmode(
        &[
            "--static-dir",
            root_s,
            "--cluster-rename",
            "new:example.org",
            "--summary-file",
            summary.to_str().unwrap(),
        ],
        None,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("regenerated 13 certificates"), "{out}");
    assert!(
        out.contains("renamed the cluster seed.example.com -> new.example.org"),
        "{out}"
    );

    let o = imgmode(
        &[
            "--static-dir",
            root_s,
            "--summary-file",
            summary.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already recerted"));

    let o = imgmode(
        &["--cluster-rename", "nodomain", "--static-dir", root_s],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name:domain[:infraID]"));
}
