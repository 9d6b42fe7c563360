//! containers-policy.json(5) holds for imgmode: a policy that rejects images makes every
//! fetch refuse (here `imgmode mirror` from an OCI layout), with skopeo's reason. The user's
//! policy (`$HOME/.config/containers/policy.json`) is the one skopeo reads first, so the test
//! sets one without touching the machine's `/etc/containers/policy.json`.

mod common;
use common::{require, write_oci, Need};
use std::process::Command;

#[test]
fn a_policy_that_rejects_images_is_obeyed() {
    require!(Need::Tool("skopeo"));
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let src = d.join("src");
    write_oci(&src, r#""n":"p""#, "amd64");
    let home = d.join("home");
    std::fs::create_dir_all(home.join(".config/containers")).unwrap();
    let run = |policy: &str, out: &str| {
        std::fs::write(home.join(".config/containers/policy.json"), policy).unwrap();
        Command::new(env!("CARGO_BIN_EXE_imgmode"))
            .args(["mirror", "--dir"])
            .arg(d.join(out))
            .arg("--image")
            .arg(format!("oci:{}=org/app:1.0", src.display()))
            .env("HOME", &home)
            .env("IMGMODE_STATE_DIR", d.join("state"))
            .env("IMGMODE_CACHE_DIR", d.join("cache"))
            .output()
            .unwrap()
    };
    let out = run(r#"{"default":[{"type":"reject"}]}"#, "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rejected by policy"), "{err}");
    assert!(
        !d.join("refused").exists(),
        "a refused mirror left its directory"
    );
    // the same image under a policy that accepts it
    let out = run(
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        "mirrored",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
