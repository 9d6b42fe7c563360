//! Bad input through the real `imgmode` binary: a clear message on stderr, exit status 1 (2 for
//! usage errors), and no output file left behind.
//!
//! Tests that reach image reading need root and skopeo (CI has both); without them they fail in
//! strict mode (`IMGMODE_TEST_STRICT=1`) and are skipped visibly otherwise.

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
    for (args, says) in [
        (
            &["disk", "x", "-o", "y", "--format", "vdi"][..],
            "invalid value 'vdi'",
        ),
        (
            &["disk", "x", "-o", "y", "--size", "lots"][..],
            "invalid value 'lots'",
        ),
        (&["status", "--format", "xml"][..], "invalid value 'xml'"),
        (&["frobnicate"][..], "unrecognized subcommand 'frobnicate'"),
        (
            &["status", "--frobnicate"][..],
            "unexpected argument '--frobnicate'",
        ),
        (&["disk", "x"][..], "required arguments were not provided"),
        (
            &["image", "unpack", "x", "d", "--max-size", "banana"][..],
            "invalid value 'banana'",
        ),
        (
            &["seed", "check", "s", "--config", "c", "--arch", "x86_64"][..],
            "is not an OCI architecture name",
        ),
    ] {
        let o = imgmode(td.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("try '--help'"),
            "{args:?}: {}",
            stderr(&o)
        );
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

#[test]
fn images_that_cannot_be_deployed_are_refused_before_writing() {
    // imgmode disk refuses to run without root
    require!(Need::Root);
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

/// A verb that needs root says so (exit 1) and writes nothing; run for real as `nobody`
/// (setpriv) when the tests run as root, directly otherwise.
#[test]
fn not_root_is_named_and_nothing_is_written() {
    let td = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        td.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let work = td.path().join("work");
    let mut cmd = if is_root() {
        assert_eq!(Need::Tool("setpriv").missing(), None);
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_imgmode"));
        c
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_imgmode"))
    };
    let o = cmd
        .args(["seed", "create", "--output", "seed-test", "--work-dir"])
        .arg(&work)
        .env("IMGMODE_STATE_DIR", td.path().join("state"))
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("imgmode seed create needs root; run it again as root"),
        "{}",
        stderr(&o)
    );
    assert!(!work.exists() && !td.path().join("state").exists());
}

/// `--format` is global, but a verb whose output has one form refuses it (a usage error naming
/// the verb) instead of ignoring it; `disk`'s own `--format` is the disk image format.
#[test]
fn format_refused_by_verbs_with_one_output_form() {
    let td = tempfile::tempdir().unwrap();
    for (args, verb) in [
        (&["push", "a", "b", "--format", "json"][..], "imgmode push"),
        (
            &["--format", "json", "seed", "check", "s", "--config", "c"][..],
            "imgmode seed check",
        ),
        (
            &["payload", "remove", "x", "--format", "json"][..],
            "imgmode payload remove",
        ),
        (
            &["completions", "bash", "--format", "json"][..],
            "imgmode completions",
        ),
        (
            &["--format", "json", "container", "image", "list"][..],
            "imgmode container",
        ),
        (
            &["internal", "man-pages", "d", "--format", "json"][..],
            "imgmode internal man-pages",
        ),
        (
            &["--format", "json", "disk", "x", "-o", "y"][..],
            "imgmode disk",
        ),
    ] {
        let o = imgmode(td.path(), args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: --format json: ") && err.contains(verb),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // verbs with structured output take it before or after the verb
    for args in [
        &["images", "--format", "json"][..],
        &["--format", "json", "images"],
    ] {
        let o = imgmode(td.path(), args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "[]\n", "{args:?}");
    }
}

/// Values that would end up in a certificate, a file name or a unit are checked by the one
/// validation layer (imgmode_support::validate), the same way from flags and from files.
#[test]
fn values_bound_for_files_units_and_certificates_are_checked() {
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let pki = d.join("pki");
    std::fs::create_dir(&pki).unwrap();
    let dir = pki.to_str().unwrap();
    let none = d.join("nothing-written");
    // recert: a cluster name and a SAN that are not DNS names
    fails(
        d,
        &[
            "recert",
            "--static-dir",
            dir,
            "--cluster-rename",
            "Bad_Name:exa_mple.ORG",
        ],
        "which is not a lowercase letter, digit or '-'",
        &none,
    );
    fails(
        d,
        &["recert", "--static-dir", dir, "--cn-san-replace", "a:b\nc"],
        "new value \"b\\nc\" is neither an IP address nor a DNS name",
        &none,
    );
    fails(
        d,
        &["recert", "--static-dir", dir, "--cn-san-replace", "a\nb:c"],
        "it must be one line of printable text",
        &none,
    );
    // the configuration ISO: an infra ID that is a path, a CIDR that is no CIDR
    let conf = d.join("conf");
    std::fs::create_dir(&conf).unwrap();
    let ic = "apiVersion: v1\nmetadata:\n  name: edge1\nbaseDomain: example.net\npullSecret: '{\"auths\":{}}'\n";
    let ib =
        "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: edge1\nhostname: node7\n";
    let c = conf.to_str().unwrap();
    let iso = conf.join("imagebasedconfig.iso");
    for (install, based, needle) in [
        (
            ic.to_string(),
            format!("{ib}infraID: ../../x\n"),
            "infraID \"../../x\"",
        ),
        (
            format!("{ic}networking:\n  machineNetwork:\n  - cidr: 10.0.0.0/99\n"),
            ib.to_string(),
            "has a prefix length that is longer than an IPv4 prefix can be",
        ),
        (
            ic.to_string(),
            format!("{ib}additionalNTPSources:\n- \"pool.ntp.org\\nserver evil\"\n"),
            "additionalNTPSources entry",
        ),
    ] {
        std::fs::write(conf.join("install-config.yaml"), install).unwrap();
        std::fs::write(conf.join("image-based-config.yaml"), based).unwrap();
        fails(d, &["ibi", "create-config-image", "--dir", c], needle, &iso);
        assert!(!conf.join("auth").exists(), "{needle}: auth/ written");
    }
}
