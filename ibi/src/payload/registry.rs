//! Registry-less installs: a release payload (an `imgmode mirror` directory) served by a local
//! registry on port 22625, in the live system from the ISO and on the installed system from
//! its disk.
//!
//! The registry is Debian's `docker-registry` (the distribution registry) over the payload,
//! read-only, with TLS from a CA made when the ISO is made and htpasswd authentication with
//! the credentials the pull secret holds for `localhost:22625`, so pulls authenticate exactly
//! as the pull secret says. `registries.conf` mirrors every source repository of the payload
//! to it, so a pull of the original name is served locally; the CA is trusted for
//! `localhost:22625` (containers' `certs.d`) and added to the installation config's trust
//! bundle. Before serving, the unit verifies every blob of the payload (`imgmode payload
//! verify`): a tampered payload is never served.

/// The payload's directory on an installation ISO.
pub const PAYLOAD_DIR: &str = "payload";

use crate::pki::{ca, pem_cert, pem_key, server_cert};
use anyhow::{bail, ensure, Context, Result};
use imgmode_image::mirror::Payload;
use imgmode_os::live::LiveFile;
use std::path::Path;

pub const PORT: u16 = 22625;
/// The registry's name in pull secrets and `registries.conf`.
pub const HOST: &str = "localhost:22625";
/// The registry's files on the live and the installed system.
pub const CONF_DIR: &str = "etc/imgmode/payload";
pub const UNIT: &str = "imgmode-payload-registry.service";
/// Where the installed system keeps its payload (on the container storage partition).
pub const INSTALLED_ROOT: &str = "/var/lib/containers/imgmode-payload";

/// The registry's TLS and credentials, made once per ISO.
#[derive(Debug, Clone)]
pub struct RegistrySetup {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// `user:bcrypt-hash` lines.
    pub htpasswd: String,
    /// The CA's key, kept by an installed host only: its registry's certificate is issued
    /// again when the host's names change ([`crate::payload::serving`]). The ISO's CA key is
    /// dropped once the ISO's certificate is made.
    pub ca_key_pem: Option<String>,
}

/// Where a registry listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// Loopback only: the node's own pulls (the live system).
    Loopback,
    /// Every address of the host: the other nodes of the cluster pull from this one, by
    /// `api-int` or the node's addresses, which the certificate names
    /// ([`crate::payload::serving`]); an installed host.
    Cluster,
}

/// The user and password the pull secret holds for [`HOST`].
pub fn credentials(pull_secret: &str) -> Result<(String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(pull_secret).context("pullSecret is not JSON")?;
    let auth = v["auths"][HOST]["auth"].as_str().with_context(|| {
        format!(
            "pullSecret has no auth for {HOST}; the payload's registry accepts exactly the credentials the pull secret holds for it: add \"{HOST}\": {{\"auth\": \"<base64 of user:password>\"}}"
        )
    })?;
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .with_context(|| format!("pullSecret's auth for {HOST} is not base64"))?;
    let text = String::from_utf8(raw).context("pullSecret's auth is not UTF-8")?;
    let (user, password) = text
        .split_once(':')
        .with_context(|| format!("pullSecret's auth for {HOST} is not user:password"))?;
    ensure!(
        !user.is_empty() && !password.is_empty() && !user.contains([':', '\n']),
        "pullSecret's auth for {HOST} needs a user and a password"
    );
    Ok((user.to_string(), password.to_string()))
}

impl RegistrySetup {
    /// A new CA and server certificate (localhost, 127.0.0.1, ::1) and the htpasswd of the
    /// pull secret's credentials for [`HOST`].
    pub fn new(pull_secret: &str) -> Result<Self> {
        let (user, password) = credentials(pull_secret)?;
        let hash = bcrypt::hash(&password, 10)?;
        Self::with_new_tls(format!("{user}:{hash}\n"), false)
    }

    /// The same credentials with a new CA and server certificate: what an installed system
    /// serves with, so no two hosts installed from one ISO share the registry's TLS key.
    /// It keeps its CA's key, to name the host's addresses and cluster once they are known.
    pub fn for_this_host(&self) -> Result<Self> {
        Self::with_new_tls(self.htpasswd.clone(), true)
    }

    fn with_new_tls(htpasswd: String, keep_ca_key: bool) -> Result<Self> {
        let signer = ca("imgmode payload registry CA", 3650)?;
        let server = server_cert(&signer, "localhost", &LOOPBACK_NAMES, 3650)?;
        Ok(Self {
            ca_pem: pem_cert(&signer)?,
            cert_pem: pem_cert(&server)?,
            key_pem: pem_key(&server)?,
            htpasswd,
            ca_key_pem: if keep_ca_key {
                Some(pem_key(&signer)?)
            } else {
                None
            },
        })
    }

    /// Read the setup a live system carries (under `root`/[`CONF_DIR`]).
    pub fn read(root: &Path) -> Result<Self> {
        let d = root.join(CONF_DIR);
        let r = |n: &str| {
            std::fs::read_to_string(d.join(n))
                .with_context(|| format!("reading {}", d.join(n).display()))
        };
        Ok(Self {
            ca_pem: r("ca.crt")?,
            cert_pem: r("tls.crt")?,
            key_pem: r("tls.key")?,
            htpasswd: r("htpasswd")?,
            ca_key_pem: std::fs::read_to_string(d.join(CA_KEY)).ok(),
        })
    }

    /// The files of a system that serves the payload at `payload_dir`: the registry's config,
    /// TLS and htpasswd, its unit (enabled), the trust for `localhost:22625` and the
    /// `registries.conf` mirrors. `before` orders the unit before another one.
    /// `verify`: check every blob before serving (the live system's read-only ISO; an
    /// installed copy was checked when it was copied, and clients check every pull).
    ///
    /// With [`Listen::Cluster`] the registry listens on every address, and before each start
    /// [`TLS_UNIT`] issues its certificate again when it does not name the host's addresses
    /// and cluster (the CA's key kept for that, 0600); post-pivot restarts it once it has
    /// set them.
    pub fn files(
        &self,
        payload_dir: &str,
        payload: &Payload,
        before: Option<&str>,
        verify: bool,
        listen: Listen,
    ) -> Vec<LiveFile> {
        let conf = format!("/{CONF_DIR}");
        let addr = match listen {
            Listen::Loopback => format!("  # loopback only: the node's own pulls\n  addr: 127.0.0.1:{PORT}"),
            Listen::Cluster => format!("  # every address: the other nodes pull from this one (api-int and the node's\n  # addresses, which the certificate names)\n  addr: \":{PORT}\""),
        };
        let registry_yml = format!(
            "# Written by imgmode: the payload {id}, read-only.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {payload_dir}
  maintenance:
    readonly:
      enabled: true
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
{addr}
  tls:
    certificate: {conf}/tls.crt
    # the key and the htpasswd come from the unit's credentials (REGISTRY_HTTP_TLS_KEY,
    # REGISTRY_AUTH_HTPASSWD_PATH), readable by the service's own user only
    key: {conf}/tls.key
auth:
  htpasswd:
    realm: imgmode-payload
    path: {conf}/htpasswd
",
            id = payload.id
        );
        let unit = unit(payload_dir, payload, before, verify, listen);
        let mirrors = mirrors_conf(payload);
        let mut files = vec![
            LiveFile::file(&format!("{CONF_DIR}/registry.yml"), 0o644, registry_yml),
            LiveFile::file(&format!("{CONF_DIR}/ca.crt"), 0o644, self.ca_pem.clone()),
            LiveFile::file(&format!("{CONF_DIR}/tls.crt"), 0o644, self.cert_pem.clone()),
            LiveFile::file(&format!("{CONF_DIR}/tls.key"), 0o600, self.key_pem.clone()),
            LiveFile::file(
                &format!("{CONF_DIR}/htpasswd"),
                0o600,
                self.htpasswd.clone(),
            ),
            LiveFile::file(&format!("etc/systemd/system/{UNIT}"), 0o644, unit),
            LiveFile::symlink(
                &format!("etc/systemd/system/multi-user.target.wants/{UNIT}"),
                &format!("../{UNIT}"),
            ),
            LiveFile::file(
                &format!("etc/containers/certs.d/{HOST}/ca.crt"),
                0o644,
                self.ca_pem.clone(),
            ),
            LiveFile::file(MIRRORS_CONF.trim_start_matches('/'), 0o644, mirrors),
        ];
        if listen == Listen::Cluster {
            if let Some(k) = &self.ca_key_pem {
                files.push(LiveFile::file(
                    &format!("{CONF_DIR}/{CA_KEY}"),
                    0o600,
                    k.clone(),
                ));
            }
            files.push(LiveFile::file(
                &format!("etc/systemd/system/{TLS_UNIT}"),
                0o644,
                tls_unit(),
            ));
            files.push(LiveFile::file(
                POST_PIVOT_DROPIN,
                0o644,
                post_pivot_dropin(),
            ));
        }
        files
    }
}

/// [`TLS_UNIT`]'s text: a oneshot the registry requires, so it runs
/// before every start of it.
pub fn tls_unit() -> String {
    format!(
        "# Written by imgmode.
[Unit]
Description=imgmode: the payload registry's certificate names this host
Before={UNIT}

[Service]
Type=oneshot
ExecStart=/usr/bin/imgmode payload tls
"
    )
}

/// post-pivot's drop-in: the registry restarted (its certificate named anew) once post-pivot
/// has set the host's network and the cluster's name; not waited for.
pub fn post_pivot_dropin() -> String {
    format!(
        "# Written by imgmode: the payload registry's certificate names the addresses and the
# cluster post-pivot set.
[Service]
ExecStartPost=-/bin/systemctl --no-block try-restart {UNIT}
"
    )
}

/// What every registry's certificate names: the node's own pulls.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The registry CA's key, in [`CONF_DIR`] (an installed host's only).
pub const CA_KEY: &str = "ca.key";
/// The unit that names the host in the registry's certificate before each start.
pub const TLS_UNIT: &str = "imgmode-payload-tls.service";
/// post-pivot's drop-in that restarts the registry once the host's network and cluster name
/// are set.
pub const POST_PIVOT_DROPIN: &str =
    "etc/systemd/system/imgmode-post-pivot.service.d/50-imgmode-payload.conf";

/// `registries.conf` mirrors of every source repository of `payload` to the local registry.
pub fn mirrors_conf(payload: &Payload) -> String {
    let mut mirrors =
        String::from("# Written by imgmode: the payload's repositories from the local registry.\n");
    for (src, repo) in payload.sources() {
        mirrors.push_str(&format!(
            "\n[[registry]]\nprefix = \"{src}\"\nlocation = \"{src}\"\n\n[[registry.mirror]]\nlocation = \"{HOST}/{repo}\"\n"
        ));
    }
    mirrors
}

/// The import unit an attached ISO starts (its instance is the device's kernel name).
pub const IMPORT_UNIT: &str = "imgmode-payload-import@.service";
/// The udev rule that starts it.
pub const IMPORT_RULE: &str = "etc/udev/rules.d/70-imgmode-payload.rules";

/// The files of an installed system that imports payloads with no command typed: a udev rule
/// that wants [`IMPORT_UNIT`] for any ISO 9660 medium labelled as an installation ISO
/// (`label`), and the unit, which runs `imgmode payload add --attached` on it (an ISO
/// without a payload is left alone; one the store holds already is not copied again).
pub fn import_files(label: &str) -> Vec<LiveFile> {
    let rule = format!(
        "# Written by imgmode: an installation ISO attached to this host (a CD, or a disk
# image) is imported into the host's payload store and served on port {PORT}.
ACTION==\"add|change\", SUBSYSTEM==\"block\", ENV{{ID_FS_TYPE}}==\"iso9660\", ENV{{ID_FS_LABEL}}==\"{label}\", TAG+=\"systemd\", ENV{{SYSTEMD_WANTS}}+=\"imgmode-payload-import@%k.service\"
"
    );
    let unit = format!(
        "# Written by imgmode.
[Unit]
Description=imgmode: import the release payload on /dev/%I
RequiresMountsFor={INSTALLED_ROOT}
After={UNIT}

[Service]
Type=oneshot
ExecStart=/usr/bin/imgmode payload add --attached /dev/%I
"
    );
    vec![
        LiveFile::file(IMPORT_RULE, 0o644, rule),
        LiveFile::file(&format!("etc/systemd/system/{IMPORT_UNIT}"), 0o644, unit),
    ]
}

/// Where a system that serves payloads keeps its mirrors.
pub const MIRRORS_CONF: &str = "/etc/containers/registries.conf.d/60-imgmode-payload.conf";

/// The mirrors file `conf` for what `store` holds now (every repository of every payload, so
/// a repository new in an added payload is pulled locally at once; `registries.conf` is read
/// at each pull); removed when the store holds nothing.
pub fn write_mirrors(store: &Path, conf: &Path) -> Result<()> {
    let held = crate::payload::store::held(store)?;
    if held.is_empty() {
        return imgmode_support::fs::remove_path(conf);
    }
    let union = Payload::read(store)?;
    if let Some(dir) = conf.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    imgmode_support::fs::write_atomic(conf, mirrors_conf(&union).as_bytes(), 0o644)
}

/// Add the payload at `source` to the host's `store`: a mirror directory, or an ISO (file or
/// device) carrying one in `/payload`, mounted read-only while it is copied. With `mirrors`,
/// that file is written anew for what the store then holds ([`write_mirrors`]).
///
/// `attached`: the import of an attached medium (the udev-started unit's): a source that
/// carries no payload record is left alone (`None`), and a payload the store holds and records
/// as available is not verified and copied again ([`crate::payload::store::add`]'s
/// `skip_held`).
pub fn add_from(
    store: &Path,
    source: &Path,
    mirrors: Option<&Path>,
    attached: bool,
) -> Result<Option<crate::payload::store::Added>> {
    let added = add_source(store, source, attached)?;
    if let (Some(conf), Some(_)) = (mirrors, &added) {
        write_mirrors(store, conf)?;
    }
    Ok(added)
}

fn add_source(
    store: &Path,
    source: &Path,
    attached: bool,
) -> Result<Option<crate::payload::store::Added>> {
    let named = source.display().to_string();
    let add = |dir: &Path| -> Result<Option<crate::payload::store::Added>> {
        if attached && !dir.join(imgmode_image::mirror::PAYLOAD_RECORD).is_file() {
            return Ok(None);
        }
        crate::payload::store::add(store, dir, &named, attached).map(Some)
    };
    if source.is_dir() {
        return add(source);
    }
    let mnt = iso_mount_point(source)?;
    let mounted = mount_iso(source, mnt.path());
    let no_payload = || -> Result<Option<crate::payload::store::Added>> {
        if attached {
            return Ok(None);
        }
        bail!(
            "{} carries no payload (no /{} on it)",
            source.display(),
            PAYLOAD_DIR
        )
    };
    match mounted {
        Ok(_) => {
            let dir = mnt.path().join(PAYLOAD_DIR);
            let r = if dir.is_dir() {
                add(&dir)
            } else {
                no_payload()
            };
            let _ = imgmode_support::cmd::Run::new("umount")
                .arg(mnt.path())
                .output();
            r
        }
        Err(e) if no_iso9660(&e) => {
            // no ISO 9660 in this kernel: read the ISO with xorriso instead, into a directory
            // next to the store (removed afterwards)
            imgmode_support::cmd::require_tools(&["xorriso"])?;
            let parent = store.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(parent)?;
            // room for the whole payload first: nothing is extracted into a filesystem that
            // cannot hold it (adding it then checks the store's own room, as from a mount)
            let Some(size) = payload_size_on_iso(source) else {
                return no_payload();
            };
            let free = imgmode_support::fs::free_bytes(parent)?;
            if size + EXTRACT_MARGIN > free {
                // the release record says why the import stopped, as the store's own check would
                if let Ok(claimed) = record_on_iso(source) {
                    crate::payload::store::record_failure(
                        store,
                        &claimed,
                        &named,
                        &format!(
                            "{} carries a payload of {}; {} has {} free",
                            source.display(),
                            imgmode_support::size::human_size(size),
                            parent.display(),
                            imgmode_support::size::human_size(free)
                        ),
                    )?;
                }
            }
            ensure!(
                size + EXTRACT_MARGIN <= free,
                "{} carries a payload of {}; without ISO 9660 in this kernel it is read into {} first, which has {} free: it needs {} (the payload and {} to spare); free space there, or add the payload from a mirror directory",
                source.display(),
                imgmode_support::size::human_size(size),
                parent.display(),
                imgmode_support::size::human_size(free),
                imgmode_support::size::human_size(size + EXTRACT_MARGIN),
                imgmode_support::size::human_size(EXTRACT_MARGIN),
            );
            let tmp = tempfile::Builder::new()
                .prefix(".imgmode-payload-extract-")
                .tempdir_in(parent)?;
            let dir = tmp.path().join(PAYLOAD_DIR);
            let extracted = imgmode_support::cmd::Run::new("xorriso")
                .args(["-osirrox", "on", "-indev"])
                .arg(source)
                .arg("-extract")
                .arg(format!("/{}", PAYLOAD_DIR))
                .arg(&dir)
                .output();
            if extracted.is_err() || !dir.is_dir() {
                return no_payload();
            }
            add(&dir)
        }
        Err(e) => Err(e.context(format!(
            "mounting {} (an ISO 9660 image or device)",
            source.display()
        ))),
    }
}

/// A mount point for the ISO `source` (which must exist; reading it takes root).
fn iso_mount_point(source: &Path) -> Result<tempfile::TempDir> {
    ensure!(
        source.exists(),
        "{} does not exist; give a mirror directory or an ISO carrying a payload",
        source.display()
    );
    imgmode_support::cmd::require_root("reading the payload's ISO")?;
    tempfile::Builder::new()
        .prefix("imgmode-payload-")
        .tempdir()
        .context("creating a mount point")
}

/// `mount -o ro -t iso9660 source at`.
fn mount_iso(source: &Path, at: &Path) -> Result<()> {
    imgmode_support::cmd::Run::new("mount")
        .args(["-o", "ro", "-t", "iso9660"])
        .arg(source)
        .arg(at)
        .output()
        .map(|_| ())
}

/// Whether a mount failed for want of ISO 9660 in the kernel.
fn no_iso9660(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("unknown filesystem type")
}

/// The payload record on the ISO `iso` (`/payload/imgmode-payload.json`), read with xorriso.
fn record_on_iso(iso: &Path) -> Result<Payload> {
    let tmp = tempfile::tempdir()?;
    imgmode_support::cmd::Run::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract")
        .arg(format!(
            "/{PAYLOAD_DIR}/{}",
            imgmode_image::mirror::PAYLOAD_RECORD
        ))
        .arg(tmp.path().join(imgmode_image::mirror::PAYLOAD_RECORD))
        .output()?;
    Payload::read(tmp.path())
}

/// What reading a payload off an ISO without mounting it leaves free beside it.
const EXTRACT_MARGIN: u64 = 16 << 20;

/// The size in bytes of the `/payload` tree on the ISO `iso` (`xorriso -dus`, in KiB), `None`
/// when it has none.
fn payload_size_on_iso(iso: &Path) -> Option<u64> {
    let out = imgmode_support::cmd::Run::new("xorriso")
        .args(["-indev"])
        .arg(iso)
        .args(["-dus", &format!("/{PAYLOAD_DIR}")])
        .read()
        .ok()?;
    dus_bytes(&out, &format!("'/{PAYLOAD_DIR}'"))
}

/// The bytes of `xorriso -dus` output's line for `quoted` (`   2933 '/payload'`, KiB).
fn dus_bytes(out: &str, quoted: &str) -> Option<u64> {
    out.lines()
        .filter_map(|l| l.trim().strip_suffix(quoted))
        .find_map(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Write `files` (relative paths) under `root`, parents made, files by temporary name with
/// their modes from the start; beneath `root`'s handle, so a symlink in the root (a seed's)
/// never leads a write outside it.
pub fn write_files(root: &Path, files: &[LiveFile]) -> Result<()> {
    use imgmode_os::live::Content;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let r = crate::inroot::InRoot::open(root, "the root")?;
    for f in files {
        let rel = Path::new(&f.path);
        match &f.content {
            Content::File { data, mode } => r.write(rel, data, *mode)?,
            Content::Symlink(t) => r.symlink(t, rel)?,
            Content::Dir(mode) => r.dir(rel, *mode)?,
        }
    }
    Ok(())
}

/// The installation config's text with `ca_pem` appended to its additionalTrustBundle.
pub fn with_trust(config_text: &str, ca_pem: &str) -> Result<String> {
    let mut v: yaml_serde::Value = yaml_serde::from_str(config_text)?;
    let m = v
        .as_mapping_mut()
        .context("the installation config is not a YAML mapping")?;
    let key = yaml_serde::Value::from("additionalTrustBundle");
    let old = m
        .get(&key)
        .and_then(|b| b.as_str())
        .unwrap_or("")
        .trim_end();
    let bundle = if old.is_empty() {
        ca_pem.to_string()
    } else {
        format!("{old}\n{ca_pem}")
    };
    m.insert(key, yaml_serde::Value::from(bundle));
    Ok(yaml_serde::to_string(&v)?)
}

/// The registry's unit: checks the port (and the payload, when asked), then serves it as its
/// own dynamic user in a read-only sandbox.
fn unit(
    payload_dir: &str,
    payload: &Payload,
    before: Option<&str>,
    verify: bool,
    listen: Listen,
) -> String {
    let conf = format!("/{CONF_DIR}");
    format!(
        "# Written by imgmode.
[Unit]
Description=imgmode payload registry on port {PORT} ({n} image(s) of payload {id})
RequiresMountsFor={payload_dir}
{before}{tls}
[Service]
Type=exec
ExecStartPre=/bin/sh -c 'if ss -Hltn \"sport = :{PORT}\" | grep -q LISTEN; then echo \"port {PORT} is already taken (ss -ltnp sport = :{PORT} shows by what); the payload registry cannot start\" >&2; exit 1; fi'
{verify}ExecStart=/usr/bin/docker-registry serve {conf}/registry.yml
# its own user, reading the payload (world-readable, read-only here) and its secrets only:
# the key and the htpasswd as credentials
DynamicUser=yes
LoadCredential=tls.key:{conf}/tls.key
LoadCredential=htpasswd:{conf}/htpasswd
Environment=REGISTRY_HTTP_TLS_KEY=%d/tls.key
Environment=REGISTRY_AUTH_HTPASSWD_PATH=%d/htpasswd
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
ExecStartPost=/usr/bin/timeout 60 /bin/sh -c 'until ss -Hltn \"sport = :{PORT}\" | grep -q LISTEN; do sleep 0.5; done'

[Install]
WantedBy=multi-user.target
",
        n = payload.images.len(),
        id = payload.id,
        before = before
            .map(|b| format!("Before={b}\n"))
            .unwrap_or_default(),
        tls = match listen {
            Listen::Loopback => String::new(),
            Listen::Cluster => format!(
                "# the certificate names the host's addresses and cluster before each start\nRequires={TLS_UNIT}\nAfter={TLS_UNIT}\n"
            ),
        },
        verify = if verify {
            format!("# a tampered payload is never served\nExecStartPre=/usr/bin/imgmode payload verify {payload_dir}\n")
        } else {
            String::new()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_size_is_read_from_xorriso_du() {
        let out = "   2932 '/payload/sub'\n   2933 '/payload'\n";
        assert_eq!(dus_bytes(out, "'/payload'"), Some(2933 * 1024));
        assert_eq!(dus_bytes("xorriso : NOTE : ...\n", "'/payload'"), None);
        assert_eq!(dus_bytes("   x '/payload'\n", "'/payload'"), None);
    }

    fn image(source: &str, repo: &str, digest: &str) -> imgmode_image::mirror::Mirrored {
        imgmode_image::mirror::Mirrored {
            source: source.into(),
            repo: repo.into(),
            tag: None,
            digest: digest.into(),
            manifests: 1,
        }
    }

    /// The mirrors follow what the store holds: a repository new in an added payload gets its
    /// mirror, a removed payload's go, and a store that holds nothing has no mirrors file.
    #[test]
    fn the_mirrors_are_written_for_every_repository_the_store_holds() {
        let td = tempfile::tempdir().unwrap();
        let store = td.path().join("store");
        let conf = td
            .path()
            .join("etc/registries.conf.d/60-imgmode-payload.conf");
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let p1 = Payload {
            id: "p1".into(),
            images: vec![image(
                "docker://quay.io/ocp/release:4.17",
                "ocp/release",
                &d1,
            )],
            architectures: vec!["amd64".into()],
        };
        let p2 = Payload {
            id: "p2".into(),
            images: vec![
                image("docker://quay.io/ocp/release:4.18", "ocp/release", &d2),
                image(
                    "docker://registry.example/new/operator:1",
                    "new/operator",
                    &d2,
                ),
            ],
            architectures: vec!["amd64".into()],
        };
        let hold = |ps: &[&Payload]| {
            let recs = store.join(crate::payload::store::RECORDS);
            let _ = std::fs::remove_dir_all(&recs);
            std::fs::create_dir_all(&recs).unwrap();
            let mut union = Payload::default();
            for p in ps {
                std::fs::write(
                    recs.join(format!("{}.json", p.id)),
                    serde_json::to_vec(p).unwrap(),
                )
                .unwrap();
                union.images.extend(p.images.clone());
            }
            std::fs::write(
                store.join(imgmode_image::mirror::PAYLOAD_RECORD),
                serde_json::to_vec(&union).unwrap(),
            )
            .unwrap();
        };
        hold(&[&p1]);
        write_mirrors(&store, &conf).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(text.contains("prefix = \"quay.io/ocp/release\""), "{text}");
        assert!(
            text.contains(&format!("location = \"{HOST}/ocp/release\"")),
            "{text}"
        );
        assert!(!text.contains("new/operator"), "{text}");
        hold(&[&p1, &p2]);
        write_mirrors(&store, &conf).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        assert!(
            text.contains("prefix = \"registry.example/new/operator\"")
                && text.contains(&format!("location = \"{HOST}/new/operator\"")),
            "{text}"
        );
        assert_eq!(text.matches("prefix = \"quay.io/ocp/release\"").count(), 1);
        hold(&[]);
        write_mirrors(&store, &conf).unwrap();
        assert!(!conf.exists(), "a store holding nothing keeps no mirrors");
        // and nothing to remove is fine
        write_mirrors(&store, &conf).unwrap();
    }

    #[test]
    fn an_attached_installation_iso_starts_the_import_unit() {
        let files = import_files("imgmode-ibi");
        let text = |p: &str| match &files.iter().find(|f| f.path.ends_with(p)).unwrap().content {
            imgmode_os::live::Content::File { data, mode } => {
                assert_eq!(*mode, 0o644);
                String::from_utf8(data.clone()).unwrap()
            }
            _ => panic!("{p} is not a file"),
        };
        let rule = text("70-imgmode-payload.rules");
        assert!(rule.contains(r#"ENV{ID_FS_TYPE}=="iso9660""#), "{rule}");
        assert!(
            rule.contains(r#"ENV{ID_FS_LABEL}=="imgmode-ibi""#),
            "{rule}"
        );
        assert!(
            rule.contains(r#"ENV{SYSTEMD_WANTS}+="imgmode-payload-import@%k.service""#),
            "{rule}"
        );
        let unit = text(IMPORT_UNIT);
        assert!(
            unit.contains("ExecStart=/usr/bin/imgmode payload add --attached /dev/%I"),
            "{unit}"
        );
        assert!(
            unit.contains(&format!("RequiresMountsFor={INSTALLED_ROOT}")),
            "{unit}"
        );
    }

    #[test]
    fn an_attached_source_without_a_payload_is_left_alone() {
        let td = tempfile::tempdir().unwrap();
        let store = td.path().join("store");
        assert!(add_from(&store, td.path(), None, true).unwrap().is_none());
        assert!(!store.exists(), "nothing was written");
        let e = add_from(&store, &td.path().join("nope"), None, true).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
    }

    fn secret(auth: &str) -> String {
        format!(r#"{{"auths":{{"quay.io":{{"auth":"eDp5"}},"{HOST}":{{"auth":"{auth}"}}}}}}"#)
    }

    /// The unit's port check, run for real: refused with a message while something listens on
    /// 22625, passes when nothing does.
    #[test]
    fn a_taken_port_is_named_before_the_registry_starts() {
        use imgmode_testkit::Need;
        imgmode_testkit::require!(Need::Tool("ss"), Need::FreePort(PORT));
        let s = RegistrySetup {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: String::new(),
            htpasswd: String::new(),
            ca_key_pem: None,
        };
        let files = s.files("/p", &Payload::default(), None, false, Listen::Loopback);
        let unit = match &files
            .iter()
            .find(|f| f.path.ends_with(UNIT))
            .unwrap()
            .content
        {
            imgmode_os::live::Content::File { data, .. } => {
                String::from_utf8(data.clone()).unwrap()
            }
            _ => panic!(),
        };
        let line = unit
            .lines()
            .find(|l| l.starts_with("ExecStartPre=/bin/sh -c '"))
            .unwrap();
        let script = line
            .trim_start_matches("ExecStartPre=/bin/sh -c '")
            .trim_end_matches('\'');
        let check = || {
            std::process::Command::new("sh")
                .args(["-c", script])
                .output()
                .unwrap()
        };
        let listener = std::net::TcpListener::bind(("0.0.0.0", PORT))
            .unwrap_or_else(|e| panic!("port {PORT} was free a moment ago: {e}"));
        let out = check();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("port 22625 is already taken"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(listener);
        assert!(check().status.success());
    }

    #[test]
    fn credentials_come_from_the_pull_secret() {
        // "payload:s3cret"
        let (u, p) = credentials(&secret("cGF5bG9hZDpzM2NyZXQ=")).unwrap();
        assert_eq!((u.as_str(), p.as_str()), ("payload", "s3cret"));
        let e = credentials(r#"{"auths":{"quay.io":{"auth":"eDp5"}}}"#).unwrap_err();
        assert!(
            e.to_string().contains("has no auth for localhost:22625"),
            "{e}"
        );
        assert!(credentials(&secret("bm9jb2xvbg==")).is_err()); // "nocolon"
    }

    #[test]
    fn the_registry_serves_the_payload_read_only_with_tls_and_auth() {
        let s = RegistrySetup::new(&secret("cGF5bG9hZDpzM2NyZXQ=")).unwrap();
        let (user, hash) = s.htpasswd.trim().split_once(':').unwrap();
        assert_eq!(user, "payload");
        assert!(bcrypt::verify("s3cret", hash).unwrap());
        let payload = Payload {
            id: "sha256:00".into(),
            images: vec![imgmode_image::mirror::Mirrored {
                source: "docker://quay.io/org/seed:4.17".into(),
                repo: "org/seed".into(),
                tag: Some("4.17".into()),
                digest: format!("sha256:{}", "a".repeat(64)),
                manifests: 1,
            }],
            architectures: vec!["amd64".into()],
        };
        let files = s.files(
            "/run/imgmode/iso/payload",
            &payload,
            Some("x.service"),
            true,
            Listen::Loopback,
        );
        let get = |p: &str| match &files.iter().find(|f| f.path == p).unwrap().content {
            imgmode_os::live::Content::File { data, .. } => {
                String::from_utf8(data.clone()).unwrap()
            }
            _ => panic!(),
        };
        let yml = get("etc/imgmode/payload/registry.yml");
        assert!(yml.contains("rootdirectory: /run/imgmode/iso/payload"));
        assert!(yml.contains("readonly:\n      enabled: true"));
        assert!(yml.contains("addr: 127.0.0.1:22625"));
        assert!(yml.contains("path: /etc/imgmode/payload/htpasswd"));
        let unit = get("etc/systemd/system/imgmode-payload-registry.service");
        assert!(unit.contains("DynamicUser=yes") && unit.contains("LoadCredential=tls.key:"));
        assert!(
            unit.contains("ExecStartPre=/usr/bin/imgmode payload verify /run/imgmode/iso/payload")
        );
        assert!(unit.contains("Before=x.service"));
        assert!(unit.contains("port 22625 is already taken"));
        let mirrors = get("etc/containers/registries.conf.d/60-imgmode-payload.conf");
        assert!(mirrors.contains("prefix = \"quay.io/org/seed\""));
        assert!(mirrors.contains("location = \"localhost:22625/org/seed\""));
        // the server certificate chains to the CA and names localhost
        let ca = openssl::x509::X509::from_pem(s.ca_pem.as_bytes()).unwrap();
        let cert = openssl::x509::X509::from_pem(s.cert_pem.as_bytes()).unwrap();
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
        let sans: Vec<String> = cert
            .subject_alt_names()
            .unwrap()
            .iter()
            .filter_map(|n| n.dnsname().map(str::to_string))
            .collect();
        assert_eq!(sans, ["localhost"]);
        let with =
            with_trust("seedImage: x\nadditionalTrustBundle: |\n  OLD\n", &s.ca_pem).unwrap();
        let v: yaml_serde::Value = yaml_serde::from_str(&with).unwrap();
        let b = v["additionalTrustBundle"].as_str().unwrap();
        assert!(b.starts_with("OLD\n-----BEGIN CERTIFICATE-----"), "{b}");
    }

    #[test]
    fn each_installed_host_gets_its_own_tls_key_and_the_same_credentials() {
        let secret = r#"{"auths":{"localhost:22625":{"auth":"cGF5bG9hZDpzM2NyZXQ="}}}"#;
        let iso = RegistrySetup::new(secret).unwrap();
        let host = iso.for_this_host().unwrap();
        assert_ne!(host.key_pem, iso.key_pem);
        assert_ne!(host.ca_pem, iso.ca_pem);
        assert_eq!(host.htpasswd, iso.htpasswd);
        let ca = openssl::x509::X509::from_pem(host.ca_pem.as_bytes()).unwrap();
        let cert = openssl::x509::X509::from_pem(host.cert_pem.as_bytes()).unwrap();
        assert!(cert.verify(&ca.public_key().unwrap()).unwrap());
    }
}
