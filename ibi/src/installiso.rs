//! `imgmode ibi create-image`: the image-based installation ISO (the installer's
//! `openshift-install image-based create image`).
//!
//! A live ISO ([`imgmode_os::live`]) of the base image that, once booted, runs
//! `imgmode ibi install --reboot` from a unit with the installation config. The config and
//! everything it implies for the live system travel in the ISO's configuration archive:
//! - the config itself (`/etc/imgmode/image-based-installation-config.yaml`, root only; the
//!   installer reads the pull secret and trust bundle from it);
//! - `sshKey` as root's authorized key of the live system (to watch the install);
//! - `imageDigestSources` as `registries.conf` mirrors (digest pulls only, as OpenShift's
//!   ImageDigestMirrorSet), `proxy` as the unit's proxy environment;
//! - `networkConfig` as the live system's network (systemd-networkd files from nmstate);
//! - the installation unit, with the progress on the console.
//!
//! `--embed-seed` copies the seed into the ISO (`/seed`, an OCI layout) so the install needs no
//! registry: the live system mounts the ISO by its label and installs from that copy; the
//! installed system still records `seedImage` as its seed.

use crate::config::ImageBasedInstallationConfig;
use anyhow::{ensure, Context, Result};
use imgmode_image::skopeo::RegistryAuth;
use imgmode_os::live::{self, LiveFile, LiveOpts, LiveOutcome};
use serde::Serialize;
use std::path::{Path, PathBuf};
use {imgmode_image::Store, imgmode_support::Steps};

/// The ISO's volume label.
pub const LABEL: &str = crate::config::INSTALL_ISO_LABEL;
/// The ISO's file name in `--dir`.
pub const ISO_NAME: &str = "imgmode-ibi.iso";
/// Where the config is in the live system (`imgmode ibi install`'s default).
pub const LIVE_CONFIG: &str = "/etc/imgmode/image-based-installation-config.yaml";
/// Where the live system mounts the ISO when the seed is embedded.
pub const ISO_MOUNT: &str = "/run/imgmode/iso";
/// The embedded seed's directory on the ISO.
pub const SEED_DIR: &str = "seed";
use crate::payload::registry::PAYLOAD_DIR;
/// The installation unit of the live system.
pub const UNIT: &str = "imgmode-ibi-install.service";

#[derive(Debug, Clone)]
pub struct CreateImageOpts {
    pub config_path: PathBuf,
    pub dir: PathBuf,
    /// The live system's image (the base image by default).
    pub image: String,
    pub embed_seed: bool,
    /// A mirror directory (`imgmode mirror`) the ISO carries and serves on port 22625.
    pub payload: Option<PathBuf>,
    pub force: bool,
    pub store: Store,
    pub cache_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedImage {
    pub iso: PathBuf,
    pub seed: String,
    pub seed_version: String,
    pub installation_disk: String,
    /// The embedded seed's manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedded_seed: Option<String>,
    /// The payload's ID and image count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<imgmode_image::mirror::Payload>,
    pub live: LiveOutcome,
}

/// `registries.conf` for `imageDigestSources`: each source mirrored, by digest only (the
/// locations were checked when the config was read).
pub fn registries_conf(c: &ImageBasedInstallationConfig) -> Result<Option<String>> {
    if c.image_digest_sources.is_empty() {
        return Ok(None);
    }
    let mut entries = vec![];
    for s in &c.image_digest_sources {
        ensure!(
            !s.mirrors.is_empty(),
            "imageDigestSources: {} has no mirrors",
            s.source
        );
        entries.push((s.source.clone(), s.mirrors.clone()));
    }
    Ok(Some(imgmode_seed::site::mirrors_conf(
        "Written by imgmode ibi create-image from imageDigestSources.",
        &entries,
    )))
}

/// Where the installation unit gets the seed and the images from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources {
    /// The seed is embedded in the ISO.
    pub embedded_seed: bool,
    /// The ISO carries a payload served by the local registry (no network needed).
    pub payload: bool,
}

/// The live system's installation unit.
pub fn install_unit(c: &ImageBasedInstallationConfig, src: Sources) -> Result<String> {
    let mut env = String::new();
    if let Some(p) = &c.proxy {
        for (k, v) in [
            ("HTTP_PROXY", &p.http_proxy),
            ("HTTPS_PROXY", &p.https_proxy),
            ("NO_PROXY", &p.no_proxy),
        ] {
            if v.is_empty() {
                continue;
            }
            ensure!(
                !v.contains(['"', '\\', '\n', ' ', '%']),
                "proxy: {k} {v:?} holds characters a proxy URL does not"
            );
            env.push_str(&format!(
                "Environment=\"{k}={v}\" \"{}={v}\"\n",
                k.to_lowercase()
            ));
        }
    }
    let mut order = String::new();
    let mut wait = String::new();
    let mut args = String::new();
    if src.embedded_seed || src.payload {
        order.push_str(&format!("RequiresMountsFor={ISO_MOUNT}\n"));
    }
    if src.embedded_seed {
        args.push_str(&format!(
            " --seed-from {}",
            embedded_seed_ref(Path::new(ISO_MOUNT))
        ));
    }
    if src.payload {
        let unit = crate::payload::registry::UNIT;
        order.push_str(&format!("Requires={unit}\nAfter={unit}\n"));
        args.push_str(&format!(" --payload {ISO_MOUNT}/{PAYLOAD_DIR}"));
    } else if !src.embedded_seed {
        order.push_str("Wants=network-online.target\nAfter=network-online.target\n");
        // networkd's wait-online is not enabled in every image; a timeout is not fatal
        // (the seed pull then says what is unreachable)
        wait.push_str(
            "ExecStartPre=-/usr/lib/systemd/systemd-networkd-wait-online --any --timeout=180\n",
        );
    }
    let from = args;
    Ok(format!(
        "# Written by imgmode ibi create-image.
[Unit]
Description=imgmode image-based installation of {seed} onto {disk}
ConditionKernelCommandLine=imgmode.live={LABEL}
# Not after basic.target: the install needs the local filesystems (the ISO, /tmp) and the
# installation disk, not the timers, sockets and udev's coldplug of every other device.
DefaultDependencies=no
After=local-fs.target
Conflicts=shutdown.target
Before=shutdown.target
{order}
[Service]
Type=oneshot
# the disk's node, or the udev link that names it (such as /dev/disk/by-id/...), once it
# exists; a disk that never shows up is then reported by the install itself
ExecStartPre=-/usr/bin/udevadm wait --timeout={DISK_WAIT_SECONDS} --initialized=no {disk_arg}
{env}{wait}ExecStart=/usr/bin/imgmode ibi install --config {LIVE_CONFIG} --reboot{from}
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
",
        seed = c.seed_image.replace('%', "%%"),
        disk = c.installation_disk.replace('%', "%%"),
        disk_arg = exec_quoted(&c.installation_disk),
    ))
}

/// How long the live system's installation unit waits for the installation disk to appear.
const DISK_WAIT_SECONDS: u32 = 90;

/// `s` as one double-quoted argument of a unit's `Exec*=` line: not split at spaces, and
/// without systemd's specifier (`%`) and variable (`$`) expansion.
fn exec_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            _ => out.push(ch),
        }
    }
    out.push('"');
    out
}

/// The mount unit, at `mount`, of the ISO labelled `label` that its live system booted from:
/// a bind mount of the initrd's own mount of it ([`imgmode_os::live::ISO_DIR`]), there since
/// before the switch to the live root. Mounting the device by its label again waited for
/// udev's coldplug of the live system (about 3 s under emulation) before anything that
/// needs the ISO could start.
pub(crate) fn iso_mount_unit(label: &str, mount: &str) -> String {
    let iso = imgmode_os::live::ISO_DIR;
    format!(
        "# Written by imgmode.
[Unit]
Description=The imgmode installation ISO ({label}, as the live system's initrd mounted it)

[Mount]
What={iso}
Where={mount}
Type=none
Options=bind,ro
"
    )
}

/// `sshKey`, when set: OpenSSH public keys.
fn ssh_key<'a>(c: &'a ImageBasedInstallationConfig, name: &str) -> Result<Option<&'a str>> {
    let ssh_key = c
        .ssh_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if let Some(k) = ssh_key {
        imgmode_support::validate::ssh_public_keys(k).map_err(|p| {
            anyhow::anyhow!("{name}: sshKey does not look like OpenSSH public keys: it {p}")
        })?;
    }
    Ok(ssh_key)
}

/// What `--payload` adds to the live system.
#[derive(Default)]
struct PayloadParts {
    /// The config with the payload registry's CA in its trust bundle.
    live_config: Option<String>,
    files: Vec<LiveFile>,
    payload: Option<imgmode_image::mirror::Payload>,
}

/// The payload: whole, of this machine's architecture, with credentials in the pull secret.
fn payload_parts(
    dir: &Path,
    c: &ImageBasedInstallationConfig,
    text: &str,
    name: &str,
    steps: &Steps,
) -> Result<PayloadParts> {
    steps.step(&format!("verifying the payload {}", dir.display()));
    let v = imgmode_image::mirror::verify(dir)
        .with_context(|| format!("--payload {}", dir.display()))?;
    let arch = imgmode_support::host::host_arch();
    ensure!(
        v.payload.architectures.iter().any(|a| a == arch),
        "--payload {} holds images for {}; this installation ISO is for {arch}",
        dir.display(),
        v.payload.architectures.join(", ")
    );
    let setup = crate::payload::registry::RegistrySetup::new(&c.pull_secret)
        .with_context(|| format!("{name}: the payload's registry"))?;
    Ok(PayloadParts {
        live_config: Some(crate::payload::registry::with_trust(text, &setup.ca_pem)?),
        files: setup.files(
            &format!("{ISO_MOUNT}/{PAYLOAD_DIR}"),
            &v.payload,
            Some(UNIT),
            true,
            crate::payload::registry::Listen::Loopback,
        ),
        payload: Some(v.payload),
    })
}

/// The live system's files: the config, the installation unit (enabled), root's SSH key and
/// the registry mirrors.
fn live_files(
    c: &ImageBasedInstallationConfig,
    live_config: String,
    unit: String,
    ssh_key: Option<&str>,
) -> Result<Vec<LiveFile>> {
    let mut files = vec![
        LiveFile::file(&LIVE_CONFIG[1..], 0o600, live_config),
        LiveFile::file(&format!("etc/systemd/system/{UNIT}"), 0o644, unit),
        LiveFile::symlink(
            &format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
            &format!("../{UNIT}"),
        ),
    ];
    if let Some(k) = ssh_key {
        files.push(LiveFile {
            path: "root/.ssh".into(),
            content: live::Content::Dir(0o700),
        });
        files.push(LiveFile::file(
            "root/.ssh/authorized_keys",
            0o600,
            format!("{k}\n"),
        ));
    }
    if let Some(conf) = registries_conf(c)? {
        files.push(LiveFile::file(
            "etc/containers/registries.conf.d/50-imgmode-ibi.conf",
            0o644,
            conf,
        ));
    }
    files.extend(live_network(c)?);
    Ok(files)
}

/// `networkConfig` (nmstate) as the live system's systemd-networkd files: the installer reaches
/// its registry with the site's static addresses, routes and DNS where there is no DHCP.
pub fn live_network(c: &ImageBasedInstallationConfig) -> Result<Vec<LiveFile>> {
    let Some(n) = &c.network_config else {
        return Ok(vec![]);
    };
    let files =
        imgmode_seed::nmstate::to_networkd(&yaml_serde::to_string(n)?).context("networkConfig")?;
    Ok(files
        .into_iter()
        .map(|(name, content)| {
            LiveFile::file(&format!("etc/systemd/network/{name}"), 0o644, content)
        })
        .collect())
}

/// The seed copied into `dest` (an OCI layout) for the ISO, byte for byte (its digest is the
/// registry's, and an uncompressed layer is not compressed on the way: the install would only
/// have to decompress it again); returns its manifest digest.
fn embed_seed(seed: &str, name: &str, auth: &RegistryAuth, dest: &Path) -> Result<Option<String>> {
    imgmode_image::skopeo::Copy::new(seed, format!("oci:{}", dest.display()))
        .src_auth(auth)
        .preserve_digests()
        .run()
        .with_context(|| format!("copying the seed {seed} (seedImage in {name}) to embed it"))?;
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.join("index.json"))?)?;
    Ok(index["manifests"][0]["digest"].as_str().map(str::to_string))
}

/// Write `DIR/imgmode-ibi.iso`.
pub fn create_image(o: &CreateImageOpts, steps: &Steps) -> Result<CreatedImage> {
    let text = std::fs::read_to_string(&o.config_path)
        .with_context(|| format!("reading {}", o.config_path.display()))?;
    let name = o.config_path.display().to_string();
    let c = ImageBasedInstallationConfig::parse(&text, &name)?;
    ensure!(
        o.dir.is_dir(),
        "--dir {} is not a directory; create it first",
        o.dir.display()
    );
    let iso = o.dir.join(ISO_NAME);
    ensure!(
        o.force || !iso.exists(),
        "{} exists; pass --force to replace it",
        iso.display()
    );
    let secrets = tempfile::Builder::new()
        .prefix("imgmode-ibi-")
        .tempdir()
        .context("creating a private temporary directory")?;
    // the pull secret and trust bundle are checked here, not first at install time
    let auth = crate::install::registry_auth(&c, secrets.path())
        .with_context(|| format!("{name}: pullSecret or additionalTrustBundle"))?;
    let ssh_key = ssh_key(&c, &name)?;
    let src = Sources {
        embedded_seed: o.embed_seed,
        payload: o.payload.is_some(),
    };
    let unit = install_unit(&c, src)?;
    let p = match &o.payload {
        Some(dir) => payload_parts(dir, &c, &text, &name, steps)?,
        None => PayloadParts::default(),
    };
    let live_config = p.live_config.unwrap_or_else(|| text.clone());
    let mut files = live_files(&c, live_config, unit, ssh_key)?;

    // the live system's image before the seed is copied
    o.store.resolve(&o.image)?;
    let seed = crate::config::seed_reference(&c.seed_image);
    let work = imgmode_support::fs::WorkDir::new(&o.cache_dir.join("work"), "ibi-iso-")?;
    let mut iso_dirs = vec![];
    let mut embedded_seed = None;
    files.extend(p.files);
    if let Some(dir) = &o.payload {
        iso_dirs.push((PAYLOAD_DIR.to_string(), dir.clone()));
    }
    if o.embed_seed || o.payload.is_some() {
        files.push(LiveFile::file(
            &format!("etc/systemd/system/{}", mount_unit_name(ISO_MOUNT)),
            0o644,
            iso_mount_unit(LABEL, ISO_MOUNT),
        ));
    }
    if o.embed_seed {
        steps.step(&format!("copying the seed {seed} into the ISO"));
        let dest = work.path().join(SEED_DIR);
        embedded_seed = embed_seed(&seed, &name, &auth, &dest)?;
        iso_dirs.push((SEED_DIR.to_string(), dest));
    }

    let out = live::build(
        &LiveOpts {
            image: o.image.clone(),
            output: iso.clone(),
            label: LABEL.into(),
            title: format!("imgmode image-based installation of {}", c.seed_image),
            files,
            iso_dirs,
            kargs: vec![],
            force: o.force,
            store: o.store.clone(),
            cache_dir: o.cache_dir.clone(),
        },
        steps,
    )?;
    Ok(CreatedImage {
        iso,
        seed: c.seed_image.clone(),
        seed_version: c.seed_version.clone(),
        installation_disk: c.installation_disk.clone(),
        embedded_seed,
        payload: p.payload,
        live: out,
    })
}

/// systemd's mount unit name for an absolute path without special characters.
pub(crate) fn mount_unit_name(path: &str) -> String {
    format!(
        "{}.mount",
        path.trim_matches('/')
            .replace('-', "\\x2d")
            .replace('/', "-")
    )
}

/// The embedded seed's reference when the ISO is mounted at `mount`.
pub fn embedded_seed_ref(mount: &Path) -> String {
    format!("oci:{}", mount.join(SEED_DIR).display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImageBasedInstallationConfig {
        ImageBasedInstallationConfig::parse(
            "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\nproxy:\n  httpProxy: http://proxy.example:3128\n  noProxy: .example.org\nimageDigestSources:\n- source: quay.io/org\n  mirrors:\n  - mirror.example:5000/org\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn network_config_becomes_the_live_systems_network() {
        let c = ImageBasedInstallationConfig::parse(
            "apiVersion: v1beta1\nkind: ImageBasedInstallationConfig\nseedImage: quay.io/org/seed:4.17\nseedVersion: 4.17.0\ninstallationDisk: /dev/vda\npullSecret: '{\"auths\":{}}'\nnetworkConfig:\n  interfaces:\n  - name: enp1s0\n    type: ethernet\n    state: up\n    ipv4:\n      enabled: true\n      dhcp: false\n      address:\n      - ip: 192.0.2.10\n        prefix-length: 24\n  routes:\n    config:\n    - destination: 0.0.0.0/0\n      next-hop-address: 192.0.2.1\n      next-hop-interface: enp1s0\n  dns-resolver:\n    config:\n      server:\n      - 192.0.2.53\n",
            "cfg",
        )
        .unwrap();
        let files = live_network(&c).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(
            files[0].path,
            "etc/systemd/network/10-imgmode-enp1s0.network"
        );
        let live::Content::File { data, mode } = &files[0].content else {
            panic!("not a file")
        };
        assert_eq!(*mode, 0o644);
        let text = String::from_utf8_lossy(data);
        for want in [
            "Address=192.0.2.10/24",
            "Gateway=192.0.2.1",
            "DNS=192.0.2.53",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert!(!text.contains("DHCP=yes"), "{text}");
    }

    #[test]
    fn the_unit_installs_with_the_config_and_proxy_and_reboots() {
        let u = install_unit(&config(), Sources::default()).unwrap();
        assert!(u.contains(&format!(
            "ExecStart=/usr/bin/imgmode ibi install --config {LIVE_CONFIG} --reboot\n"
        )));
        assert!(u.contains("Environment=\"HTTP_PROXY=http://proxy.example:3128\" \"http_proxy=http://proxy.example:3128\""));
        assert!(u.contains("NO_PROXY=.example.org"));
        assert!(!u.contains("HTTPS_PROXY"));
        assert!(u.contains("After=network-online.target"));
        // not after basic.target (udev's coldplug, timers, sockets): after the local
        // filesystems, once the disk is there
        assert!(u.contains("DefaultDependencies=no\nAfter=local-fs.target\nConflicts=shutdown.target\nBefore=shutdown.target\n"));
        assert!(u.contains(
            "ExecStartPre=-/usr/bin/udevadm wait --timeout=90 --initialized=no \"/dev/vda\"\n"
        ));
        let e = install_unit(
            &config(),
            Sources {
                embedded_seed: true,
                payload: false,
            },
        )
        .unwrap();
        let p = install_unit(
            &config(),
            Sources {
                embedded_seed: false,
                payload: true,
            },
        )
        .unwrap();
        assert!(p.contains("--payload /run/imgmode/iso/payload\n"));
        assert!(p.contains("Requires=imgmode-payload-registry.service"));
        assert!(!p.contains("network-online"));
        assert!(e.contains("--seed-from oci:/run/imgmode/iso/seed\n"));
        assert!(e.contains("RequiresMountsFor=/run/imgmode/iso"));
        assert_eq!(mount_unit_name(ISO_MOUNT), "run-imgmode-iso.mount");
        assert_eq!(
            embedded_seed_ref(Path::new(ISO_MOUNT)),
            "oci:/run/imgmode/iso/seed"
        );
    }

    #[test]
    fn a_disk_path_is_one_exec_argument_without_expansions() {
        assert_eq!(exec_quoted("/dev/vda"), "\"/dev/vda\"");
        assert_eq!(
            exec_quoted("/dev/disk/by-id/a%b$c\"d\\e"),
            "\"/dev/disk/by-id/a%%b$$c\\\"d\\\\e\""
        );
        let mut c = config();
        c.installation_disk = "/dev/disk/by-path/pci-0000:00:1f.2-ata-1%i".into();
        let u = install_unit(&c, Sources::default()).unwrap();
        assert!(u.contains("--initialized=no \"/dev/disk/by-path/pci-0000:00:1f.2-ata-1%%i\"\n"));
        assert!(u.contains("onto /dev/disk/by-path/pci-0000:00:1f.2-ata-1%%i\n"));
    }

    #[test]
    fn digest_sources_become_digest_only_mirrors() {
        let r = registries_conf(&config()).unwrap().unwrap();
        assert!(r.contains("[[registry]]\nprefix = \"quay.io/org\"\nlocation = \"quay.io/org\"\n"));
        assert!(r.contains(
            "[[registry.mirror]]\nlocation = \"mirror.example:5000/org\"\npull-from-mirror = \"digest-only\"\n"
        ));
        let mut c = config();
        c.image_digest_sources[0].mirrors.clear();
        assert!(registries_conf(&c)
            .unwrap_err()
            .to_string()
            .contains("has no mirrors"));
        c.image_digest_sources.clear();
        assert!(registries_conf(&c).unwrap().is_none());
    }
}
