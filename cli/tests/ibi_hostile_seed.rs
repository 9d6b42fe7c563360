//! A hostile seed cannot reach the installer's own files. The seed is someone else's image and
//! `imgmode ibi install` runs as root on the machine being installed; a seed whose `etc.tgz`
//! plants `etc/evil -> <host dir>` (and names a file through it in `etc.deletions`), whose
//! `etc.tgz` plants `etc/systemd -> <host dir>` (where the install writes a unit), or whose
//! `var.tgz` plants `var/lib/containers -> <host dir>` (where it mounts the extra partition)
//! is refused at restore-var-etc, and the host directory is exactly as it was.
//!
//! The seed is real enough to get that far: an ostree commit with a kernel, deployed by
//! `ostree admin deploy` onto a disk image, with the files lifecycle-agent's format names.

mod common;
use common::{imgmode, require, write_oci_layers, Need, INSTALL_NEEDS};
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(c: &str) {
    let out = Command::new("sh").args(["-ec", c]).output().unwrap();
    assert!(
        out.status.success(),
        "{c}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn seed_labels() -> String {
    r#""com.openshift.lifecycle-agent.seed_format_version":"4","com.openshift.lifecycle-agent.seed_cluster_info":"{\"seed_cluster_ocp_version\":\"4.17.0\",\"base_domain\":\"example.com\",\"cluster_name\":\"seed\",\"has_proxy\":false,\"has_fips\":false}""#.to_string()
}

/// A seed image (OCI layout at `out`) whose tarballs hold what `etc` and `var` say (shell
/// commands run in the tarball's top directory) and whose `etc.deletions` is `deletions`.
fn hostile_seed(work: &Path, out: &Path, etc: &str, var: &str, deletions: &str) {
    let w = work.display();
    sh(&format!(
        "rm -rf {w} && mkdir -p {w}/rootfs/usr/lib/modules/6.1.0 {w}/rootfs/usr/etc {w}/rootfs/usr/bin {w}/files {w}/etc/etc {w}/var/var
         echo kernel > {w}/rootfs/usr/lib/modules/6.1.0/vmlinuz
         echo initramfs > {w}/rootfs/usr/lib/modules/6.1.0/initramfs.img
         echo 'ID=test' > {w}/rootfs/usr/lib/os-release
         ostree init --repo={w}/repo --mode=bare
         ostree commit --repo={w}/repo --branch=seed --tree=dir={w}/rootfs --no-xattrs -s seed > {w}/commit
         tar -C {w}/repo -czf {w}/files/ostree.tgz .
         (cd {w}/etc && {etc}) && tar -C {w}/etc -czf {w}/files/etc.tgz etc
         (cd {w}/var && {var}) && tar -C {w}/var -czf {w}/files/var.tgz var"
    ));
    let commit = std::fs::read_to_string(work.join("commit"))
        .unwrap()
        .trim()
        .to_string();
    let f = work.join("files");
    let write = |n: &str, t: &str| std::fs::write(f.join(n), t).unwrap();
    write(
        "rpm-ostree.json",
        &format!(
            r#"{{"deployments":[{{"booted":true,"checksum":"{commit}","osname":"default"}}]}}"#
        ),
    );
    write(
        &format!("ostree-{commit}.0.origin"),
        "[origin]\nrefspec=seed\n",
    );
    write(
        "mco-currentconfig.json",
        r#"{"spec":{"kernelArguments":[]}}"#,
    );
    write(
        "manifest.json",
        r#"{"seed_cluster_ocp_version":"4.17.0","base_domain":"example.com","cluster_name":"seed","has_proxy":false,"has_fips":false}"#,
    );
    write("containers.list", "");
    write("recert_config.json", "{}");
    write("imgmode", "");
    write("lca-cli", "");
    write("etc.deletions", deletions);
    let layer = work.join("layer.tar");
    sh(&format!("tar -C {} -cf {} .", f.display(), layer.display()));
    let _ = std::fs::remove_dir_all(out);
    write_oci_layers(
        out,
        &seed_labels(),
        "amd64",
        &[std::fs::read(&layer).unwrap()],
    );
}

/// Every file under `dir` with its content (symlinks as their targets).
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
                out.push((p, "dir".into()));
            } else if md.file_type().is_symlink() {
                out.push((
                    p.clone(),
                    format!("-> {:?}", std::fs::read_link(&p).unwrap()),
                ));
            } else {
                out.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_hostile_seed_never_reaches_the_host() {
    require!(Need::LoopDevice);
    require!(all INSTALL_NEEDS);
    let td = tempfile::tempdir().unwrap();
    let d = td.path();
    let host = d.join("host");
    std::fs::create_dir_all(host.join("systemd/system")).unwrap();
    std::fs::write(host.join("victim.txt"), "the host's file\n").unwrap();
    std::fs::write(host.join("systemd/system/host.service"), "[Unit]\n").unwrap();
    let before = snapshot(&host);
    let h = host.display();
    let cases = [
        (
            "etc.deletions through etc/evil",
            format!("ln -s {h} etc/evil"),
            String::new(),
            "/etc/evil/victim.txt\n".to_string(),
            "removing etc/evil/victim.txt in the deployment",
        ),
        (
            "the mount unit through etc/systemd",
            format!("ln -s {h} etc/systemd"),
            String::new(),
            String::new(),
            "writing etc/systemd/system/var-lib-containers.mount in the deployment",
        ),
        (
            "the extra partition's mount on var/lib/containers",
            String::new(),
            format!("mkdir -p var/lib && ln -s {h} var/lib/containers"),
            String::new(),
            "var/lib/containers in the stateroot",
        ),
    ];
    for (i, (what, etc, var, deletions, want)) in cases.into_iter().enumerate() {
        // skipDiskCleanup on the last case: the cleanup step is skipped, and said so
        let skip_cleanup = i == 2;
        let seed = d.join("seed");
        hostile_seed(
            &d.join("work"),
            &seed,
            if etc.is_empty() { "true" } else { &etc },
            if var.is_empty() { "true" } else { &var },
            &deletions,
        );
        let disk = d.join("disk.img");
        let _ = std::fs::remove_file(&disk);
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 << 30)
            .unwrap();
        let cfg = d.join("ibi.yaml");
        std::fs::write(
            &cfg,
            format!(
                "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: oci:{}\nseedVersion: 4.17.0\ninstallationDisk: {}\npullSecret: '{{\"auths\":{{}}}}'\nskipDiskCleanup: {skip_cleanup}\n",
                seed.display(),
                disk.display()
            ),
        )
        .unwrap();
        let state = d.join("state.json");
        let out = imgmode(
            d,
            &[
                "ibi",
                "install",
                "--config",
                cfg.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
                "--mount-dir",
                d.join("mnt").to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let st: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        assert_eq!(st["step"], "restore-var-etc", "{what}: {err}");
        let done: Vec<&str> = st["done"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        let (ran, not) = if skip_cleanup {
            ("disk-cleanup-skipped", "disk-cleanup")
        } else {
            ("disk-cleanup", "disk-cleanup-skipped")
        };
        assert!(
            done.contains(&ran) && !done.contains(&not),
            "{what}: steps done {done:?}"
        );
        assert!(
            err.contains(want)
                && (err.contains("leads outside it") || err.contains("through a symlink")),
            "{what}: {err}"
        );
        assert_eq!(
            snapshot(&host),
            before,
            "{what}: the host directory changed"
        );
        // the install's own mounts are gone
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(d.to_str().unwrap()),
            "{what}: a mount under the test directory is left: {mounts}"
        );
    }
}
