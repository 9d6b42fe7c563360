//! `imgmode recert` through the real binary: flags or RECERT_CONFIG (never both), a dry run that
//! reports in JSON, a real run on a generated PKI.

use std::process::Command;

use imgmode_testkit::pki::{self as testpki, PkiSpec};

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
    // The router certificate lives only in etcd; the admin kubeconfig CA is one of them (its
    // certificate only: the cluster never holds its key, so it is kept, and said so).
    assert_eq!(s["found"]["certificates"], 14);

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

/// The classes "etcd unreachable" and "keys recert cannot regenerate" of docs/errors.md, through
/// the binary: exit 1, the endpoint or the file named, nothing in the tree changed.
#[test]
fn an_unreachable_etcd_and_an_ed448_key_are_named_and_the_tree_is_kept() {
    imgmode_testkit::require!(imgmode_testkit::Need::Tool("openssl"));
    let td = tempfile::tempdir().unwrap();
    let root = td.path().join("root");
    testpki::generate(&PkiSpec::default(), &root).unwrap();
    let root_s = root.to_str().unwrap();
    let snapshot = |p: &std::path::Path| {
        let mut v: Vec<(String, Vec<u8>)> = walk(p)
            .into_iter()
            .map(|f| (f.display().to_string(), std::fs::read(&f).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&root);
    // nothing listens on port 9 (discard) here
    let o = imgmode(
        &[
            "--etcd-endpoint",
            "http://127.0.0.1:9",
            "--static-dir",
            root_s,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("connecting to etcd at http://127.0.0.1:9")
            && err.contains("is etcd running and is etcd_endpoint right?"),
        "{err}"
    );
    assert_eq!(snapshot(&root), before);

    let ed = root.join("etc/ed.key");
    std::fs::create_dir_all(ed.parent().unwrap()).unwrap();
    let st = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed448", "-out"])
        .arg(&ed)
        .status()
        .expect("openssl (cargo xtask deps)");
    assert!(st.success());
    let before = snapshot(&root);
    let o = imgmode(&["--static-dir", root_s], None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Ed448") && err.contains("etc/ed.key"), "{err}");
    assert_eq!(snapshot(&root), before);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
