//! `imgmode ibi install` on bad input: every check runs before the installation disk is
//! touched, each failure says what is wrong, and the state file names the failed step.

mod common;
use common::{imgmode, mirror_test_image, require, write_oci, Need, INSTALL_NEEDS};
use std::io::Read;
use std::path::{Path, PathBuf};

fn seed_labels(version: &str) -> String {
    format!(
        r#""com.openshift.lifecycle-agent.seed_format_version":"4","com.openshift.lifecycle-agent.seed_cluster_info":"{{\"seed_cluster_ocp_version\":\"{version}\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\",\"has_proxy\":false,\"has_fips\":false}}""#
    )
}

fn config(seed: &Path, disk: &Path, extra: &str) -> String {
    format!(
        "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nmetadata:\n  name: t\nseedImage: oci:{}\nseedVersion: 4.17.0\ninstallationDisk: {}\npullSecret: '{{\"auths\":{{}}}}'\n{extra}",
        seed.display(),
        disk.display()
    )
}

struct Run {
    ok: bool,
    err: String,
    state: serde_json::Value,
}

fn install(dir: &Path, cfg: &str) -> Run {
    let file = dir.join("ibi.yaml");
    std::fs::write(&file, cfg).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let out = imgmode(
        dir,
        &[
            "ibi",
            "install",
            "--config",
            &file.display().to_string(),
            "--state",
            &state.display().to_string(),
            "--mount-dir",
            &dir.join("mnt").display().to_string(),
        ],
    );
    common::assert_exit(&out, &["ibi", "install"]);
    Run {
        ok: out.status.success(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
        state: std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default(),
    }
}

/// The first 8 MiB and the last MiB of `disk` are zero (no table, no filesystem).
fn untouched(disk: &Path) -> bool {
    let mut f = std::fs::File::open(disk).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = vec![0u8; 8 << 20];
    let n = f.read(&mut buf).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(1 << 20)))
        .unwrap();
    let mut tail = vec![0u8; 1 << 20];
    let m = f.read(&mut tail).unwrap();
    buf[..n].iter().all(|b| *b == 0) && tail[..m].iter().all(|b| *b == 0)
}

fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

#[test]
fn ibi_install_checks_everything_before_touching_the_disk() {
    require!(all INSTALL_NEEDS);
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let seed = d.join("seed");
    write_oci(&seed, &seed_labels("4.17.0"), "amd64");
    const GIB: u64 = 1 << 30;

    // no such disk
    let r = install(d, &config(&seed, &d.join("nosuch.img"), ""));
    assert!(!r.ok);
    assert!(
        r.err.contains(&format!(
            "installationDisk {} does not exist",
            d.join("nosuch.img").display()
        )),
        "{}",
        r.err
    );
    assert_eq!(r.state["status"], "failed");
    assert_eq!(r.state["step"], "preflight");

    // too small for the default extra partition (40 GiB from the end)
    let small = sparse(d, "small.img", 8 * GIB);
    let r = install(d, &config(&seed, &small, ""));
    assert!(!r.ok);
    assert!(
        r.err.contains("(8.0 GiB) is too small") && r.err.contains("is needed"),
        "{}",
        r.err
    );
    assert!(r.err.contains("extraPartitionStart"), "{}", r.err);
    assert_eq!(r.state["step"], "seed-gates");
    assert!(untouched(&small), "a refused install wrote to the disk");

    // a seed made for another version
    let big = sparse(d, "big.img", 64 * GIB);
    let r = install(
        d,
        &config(&seed, &big, "").replace("seedVersion: 4.17.0", "seedVersion: 4.18.2"),
    );
    assert!(!r.ok);
    assert!(r.err.contains("seed version mismatch"), "{}", r.err);
    assert!(r.err.contains("4.18.2"), "{}", r.err);
    assert!(untouched(&big), "a refused install wrote to the disk");

    // not a seed at all
    let plain = d.join("plain");
    write_oci(&plain, r#""containers.bootc":"1""#, "amd64");
    let r = install(d, &config(&plain, &big, ""));
    assert!(!r.ok);
    assert!(r.err.contains("it is not a seed image"), "{}", r.err);
    assert!(untouched(&big));

    // an extra partition number the layout uses
    let r = install(d, &config(&seed, &big, "extraPartitionNumber: 2\n"));
    assert!(!r.ok);
    assert!(
        r.err
            .contains("extraPartitionNumber 2 is taken by the EFI-SYSTEM partition"),
        "{}",
        r.err
    );
    assert!(untouched(&big));

    // a pull secret that is not one
    let r = install(
        d,
        &config(&seed, &big, "").replace("'{\"auths\":{}}'", "'not json'"),
    );
    assert!(!r.ok);
    assert!(r.err.contains("pullSecret is not JSON"), "{}", r.err);

    // YAML errors name the field with its line and column; a missing field is named
    let r = install(
        d,
        &config(&seed, &big, "").replace("seedVersion:", "seedVesrion:"),
    );
    assert!(!r.ok);
    assert!(
        r.err
            .contains("unknown field `seedVesrion`, expected one of"),
        "{}",
        r.err
    );
    assert!(
        r.err.contains(" at line ") && r.err.contains(" column "),
        "{}",
        r.err
    );
    let no_version: String = config(&seed, &big, "")
        .lines()
        .filter(|l| !l.starts_with("seedVersion:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = install(d, &no_version);
    assert!(!r.ok);
    assert!(r.err.contains("seedVersion is required"), "{}", r.err);
    assert!(untouched(&big));

    // a field imgmode does not implement is named, not dropped
    let r = install(d, &config(&seed, &big, "coreosInstallerArgs: [--foo]\n"));
    assert!(!r.ok);
    assert!(
        r.err.contains("field coreosInstallerArgs is not supported"),
        "{}",
        r.err
    );
    assert!(untouched(&big));
}

#[test]
fn ibi_install_refuses_a_disk_in_use() {
    require!(Need::LoopDevice);
    require!(all INSTALL_NEEDS);
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let seed = d.join("seed");
    write_oci(&seed, &seed_labels("4.17.0"), "amd64");
    let img = sparse(d, "fs.img", 64 << 20);
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .unwrap()
    };
    let out = sh(&format!(
        "mkfs.ext4 -q {0} && losetup --find --show {0}",
        img.display()
    ));
    assert!(
        out.status.success(),
        "mkfs.ext4 + losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mnt = d.join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = sh(&format!("mount {dev} {}", mnt.display()))
        .status
        .success();
    // the mounted disk by its name, through a link (as /dev/disk/by-id/ names it), and the
    // image file while a loop device is attached to it
    let link = d.join("by-id-link");
    std::os::unix::fs::symlink(&dev, &link).unwrap();
    let runs = mounted.then(|| {
        [
            install(d, &config(&seed, Path::new(&dev), "")),
            install(d, &config(&seed, &link, "")),
            install(d, &config(&seed, &img, "")),
        ]
    });
    sh(&format!("umount {}; losetup -d {dev}", mnt.display()));
    let [by_name, by_link, by_file] = runs.expect("mounting the loop device failed");
    for (r, disk) in [
        (&by_name, dev.clone()),
        (&by_link, link.display().to_string()),
    ] {
        assert!(!r.ok);
        assert!(
            r.err
                .contains(&format!("installationDisk {disk} is in use"))
                && r.err.contains("is mounted on"),
            "{}",
            r.err
        );
    }
    assert!(!by_file.ok);
    assert!(
        by_file
            .err
            .contains(&format!("is in use ({dev} is attached to it)")),
        "{}",
        by_file.err
    );
    // the filesystem is still there: nothing wiped it (a mounted ext4 changes its own
    // superblock, so the bytes are not compared)
    let probe = sh(&format!("blkid -p -s TYPE -o value {}", img.display()));
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "ext4");
}

const INSTALL_CONFIG: &str = "apiVersion: v1\nmetadata:\n  name: edge1\nbaseDomain: example.net\npullSecret: '{\"auths\":{}}'\n";
const IB_CONFIG: &str =
    "apiVersion: v1beta1\nkind: ImageBasedConfig\nmetadata:\n  name: edge1\nhostname: node7\n";

fn config_image(dir: &Path, ic: Option<&str>, ib: Option<&str>) -> (bool, String) {
    for (f, t) in [("install-config.yaml", ic), ("image-based-config.yaml", ib)] {
        let p = dir.join(f);
        let _ = std::fs::remove_file(&p);
        if let Some(t) = t {
            std::fs::write(&p, t).unwrap();
        }
    }
    let out = imgmode(
        dir,
        &[
            "ibi",
            "create-config-image",
            "--dir",
            &dir.display().to_string(),
        ],
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn create_config_image_names_bad_input_and_never_half_writes() {
    require!(Need::Tool("xorriso"));
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let nothing_written = || !d.join("imagebasedconfig.iso").exists() && !d.join("auth").exists();

    let (ok, err) = config_image(d, Some(INSTALL_CONFIG), None);
    assert!(!ok);
    assert!(err.contains("image-based-config.yaml"), "{err}");
    assert!(nothing_written());

    let (ok, err) = config_image(
        d,
        Some(&INSTALL_CONFIG.replace("baseDomain: example.net\n", "")),
        Some(IB_CONFIG),
    );
    assert!(!ok);
    assert!(err.contains("baseDomain is required"), "{err}");
    assert!(nothing_written());

    let (ok, err) = config_image(
        d,
        Some(INSTALL_CONFIG),
        Some(&format!("{IB_CONFIG}nodeLabel: x\n")),
    );
    assert!(!ok);
    assert!(err.contains("unknown field `nodeLabel`"), "{err}");
    assert!(err.contains("line 6"), "{err}");
    assert!(nothing_written());

    let (ok, err) = config_image(
        d,
        Some(INSTALL_CONFIG),
        Some(&format!(
            "{IB_CONFIG}networkConfig:\n  interfaces:\n  - name: bond0\n    type: bond\n"
        )),
    );
    assert!(!ok);
    assert!(
        err.contains("networkConfig") && err.contains("type bond is not supported"),
        "{err}"
    );
    assert!(nothing_written());

    let (ok, err) = config_image(d, Some(INSTALL_CONFIG), Some(IB_CONFIG));
    assert!(ok, "{err}");
    let kubeconfig = std::fs::read_to_string(d.join("auth/kubeconfig")).unwrap();
    assert!(kubeconfig.contains("server: https://api.edge1.example.net:6443"));
    let password = std::fs::read_to_string(d.join("auth/kubeadmin-password")).unwrap();
    // every output holds a secret: its owner's only
    for (f, want) in [
        ("imagebasedconfig.iso", 0o600),
        ("auth", 0o700),
        ("auth/kubeconfig", 0o600),
        ("auth/kubeadmin-password", 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{f} is {mode:o}");
    }
    let iso = std::fs::read(d.join("imagebasedconfig.iso")).unwrap();
    // ISO 9660 primary volume descriptor at 32 KiB: volume identifier at offset 40
    assert_eq!(&iso[0x8001..0x8006], b"CD001");
    assert!(iso[0x8028..0x8028 + 32].starts_with(b"cluster-config"));

    // a second run refuses to replace the first one's credentials
    let (ok, err) = config_image(d, Some(INSTALL_CONFIG), Some(IB_CONFIG));
    assert!(!ok);
    assert!(err.contains("exists; move it away"), "{err}");
    assert_eq!(
        std::fs::read_to_string(d.join("auth/kubeadmin-password")).unwrap(),
        password
    );
    let leftovers: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".imgmode-config-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

/// `imgmode ibi create-image` with `cfg` into `dir/out`; (success, stderr).
fn create_image(dir: &Path, cfg: Option<&str>, args: &[&str]) -> (bool, String) {
    let file = dir.join("ibi.yaml");
    if let Some(c) = cfg {
        std::fs::write(&file, c).unwrap();
    }
    let out_dir = dir.join("out").display().to_string();
    let mut a = vec![
        "ibi",
        "create-image",
        "--config",
        file.to_str().unwrap(),
        "--dir",
        &out_dir,
    ];
    a.extend(args);
    let out = imgmode(dir, &a);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn create_image_names_bad_input_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let good = "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\n";
    // no --dir yet
    let (ok, err) = create_image(dir, Some(good), &[]);
    assert!(!ok && err.contains("is not a directory"), "{err}");
    std::fs::create_dir(dir.join("out")).unwrap();
    for (cfg, want) in [
        (
            good.replace("seedImage: quay.io/org/seed:4.17\n", ""),
            "seedImage",
        ),
        (
            format!("{good}ignitionConfigOverride: '{{}}'\n"),
            "ignitionConfigOverride",
        ),
        (format!("{good}bogusField: 1\n"), "bogusField"),
        (
            good.replace("'{\"auths\":{}}'", "not-json"),
            "pullSecret is not JSON",
        ),
        (
            format!("{good}sshKey: hello\n"),
            "sshKey \"hello\" has line 1 that is not an OpenSSH public key",
        ),
        (
            format!("{good}imageDigestSources:\n- source: quay.io/org\n"),
            "imageDigestSources: quay.io/org has no mirrors",
        ),
    ] {
        let (ok, err) = create_image(dir, Some(&cfg), &[]);
        assert!(!ok, "accepted:\n{cfg}");
        assert!(err.contains(want), "{want:?} not in: {err}");
    }
    // a good config with an image the store does not have: refused, nothing written
    let (ok, err) = create_image(dir, Some(good), &["--image", "no-such-image"]);
    assert!(!ok && err.contains("no-such-image"), "{err}");
    assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
    // an existing ISO is kept unless --force
    let iso = dir.join("out/imgmode-ibi.iso");
    std::fs::write(&iso, "earlier").unwrap();
    let (ok, err) = create_image(dir, Some(good), &[]);
    assert!(!ok && err.contains("pass --force"), "{err}");
    assert_eq!(std::fs::read_to_string(&iso).unwrap(), "earlier");
}

#[test]
fn create_image_refuses_a_payload_it_cannot_serve() {
    require!(Need::Tool("skopeo"));
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    std::fs::create_dir(dir.join("out")).unwrap();
    let payload = dir.join("payload");
    mirror_test_image(
        dir,
        &dir.join("src"),
        &payload,
        r#""n":"arm""#,
        "arm64",
        "org/app:1",
    );
    let cfg = |secret: &str| {
        format!("apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{secret}'\n")
    };
    let with = r#"{"auths":{"localhost:22625":{"auth":"cDpx"}}}"#;
    let p = payload.to_str().unwrap();
    let (ok, err) = create_image(dir, Some(&cfg(with)), &["--payload", p]);
    assert!(
        !ok && err.contains("holds images for arm64; this installation ISO is for amd64"),
        "{err}"
    );
    let (ok, err) = create_image(
        dir,
        Some(&cfg(with)),
        &["--payload", dir.join("src").to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("is not an imgmode mirror directory"),
        "{err}"
    );
    // an amd64 payload, but no credentials for the payload registry in the pull secret
    let payload2 = dir.join("payload2");
    mirror_test_image(
        dir,
        &dir.join("src2"),
        &payload2,
        r#""n":"amd""#,
        "amd64",
        "org/app:2",
    );
    let (ok, err) = create_image(
        dir,
        Some(&cfg(r#"{"auths":{}}"#)),
        &["--payload", payload2.to_str().unwrap()],
    );
    assert!(
        !ok && err.contains("pullSecret has no auth for localhost:22625"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.join("out")).unwrap().count(), 0);
}
