//! `imgmode disk --config FILE`: bootc-image-builder's build configuration, in its TOML
//! (`config.toml`) or JSON (`config.json`) form, read unchanged.
//!
//! ```toml
//! [[customizations.user]]
//! name = "alice"
//! password = "…"          # a crypt(3) hash ($6$…, $y$…) or the password itself, hashed here
//! key = "ssh-ed25519 AAAA… alice@example.org"
//! groups = ["wheel"]
//!
//! [[customizations.group]]
//! name = "wheel"
//! gid = 10
//!
//! [[customizations.filesystem]]
//! mountpoint = "/"
//! minsize = "10 GiB"
//!
//! [customizations.kernel]
//! append = "nosmt=force"
//! ```
//!
//! Every field is applied ([`super::users`] for users and groups; the layout for filesystems;
//! the kernel command line for `append`) or refused by name: unknown keys, mount points other
//! than `/` and `/boot`, and a kernel package `name` (a bootable image carries its kernel).
//! Everything that can be checked without the image is checked here, before any work; what
//! needs the image (a group that exists neither in it nor in the file, a `/` smaller than the
//! image) is checked after the deploy, before the output is written.

use anyhow::{anyhow, bail, Context, Result};
use imgmode_support::size::{human_size, GIB, MIB};
use imgmode_support::validate::{self, shown};
use serde::Deserialize;
use std::path::Path;

/// The file, parsed and checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    #[serde(default)]
    pub customizations: Customizations,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customizations {
    #[serde(default)]
    pub user: Vec<User>,
    #[serde(default)]
    pub group: Vec<Group>,
    #[serde(default)]
    pub filesystem: Vec<Filesystem>,
    pub kernel: Option<Kernel>,
    /// `imgmode iso` only: `imgmode disk` refuses it by name.
    pub installer: Option<Installer>,
}

/// `[customizations.installer]`: what the installer ISO of `imgmode iso` does. bootc-image-builder's
/// `unattended` is read (imgmode's installer never asks); `installation-disk` is imgmode's own
/// key; anaconda's `kickstart` and `modules` and `sudo-nopasswd` are refused by name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Installer {
    /// The disk the installer writes (`/dev/disk/by-id/…` names one that stays the same);
    /// without it, the machine's one disk that could be a target.
    pub installation_disk: Option<String>,
    pub unattended: Option<bool>,
    pub kickstart: Option<serde_json::Value>,
    pub modules: Option<serde_json::Value>,
    pub sudo_nopasswd: Option<serde_json::Value>,
}

/// `[[customizations.user]]`: a new account, or a change to one the image has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: Option<Password>,
    pub key: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub home: Option<String>,
    pub shell: Option<String>,
    pub description: Option<String>,
}

/// A password or its hash; never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// A crypt(3) hash of a known method (`$1$`, `$2b$`, `$5$`, `$6$`, `$7$`, `$y$`, `$gy$`
    /// …) is used as given; anything else is the password itself.
    pub fn is_hash(&self) -> bool {
        const IDS: &[&str] = &[
            "1", "2a", "2b", "2x", "2y", "5", "6", "7", "y", "gy", "sha1", "md5",
        ];
        self.0
            .strip_prefix('$')
            .and_then(|r| r.split_once('$'))
            .is_some_and(|(id, rest)| IDS.contains(&id) && !rest.is_empty())
    }

    /// The text (a hash, or the password to hash).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `[[customizations.group]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
}

/// `[[customizations.filesystem]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    pub mountpoint: String,
    pub minsize: DataSize,
}

/// A size as bootc-image-builder takes it: bytes, or text such as `"10 GiB"` or `"20 GB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DataSize {
    Bytes(u64),
    Text(String),
}

/// `[customizations.kernel]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// A kernel package name: refused (a bootable image carries its own kernel).
    pub name: Option<String>,
    pub append: Option<String>,
}

/// The largest uid or gid given in a config (`nobody` and the 32-bit sentinel are above it).
const MAX_ID: u32 = 60_000;

impl BuildConfig {
    /// Read and check `path`: TOML for `.toml`, JSON for `.json`. bootc-image-builder's older
    /// form, everything under a top-level `blueprint`, is read too.
    ///
    /// The file may hold passwords, so no message quotes it: a syntax error says what and
    /// where (line and column), not the line itself, and a `password` that is not text is
    /// refused before the fields are typed (serde's type errors show the value).
    pub fn load(path: &Path) -> Result<Self> {
        let what = format!("--config {}", path.display());
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {what}"))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut value: serde_json::Value = match ext {
            "toml" => {
                let v: toml::Value = toml::from_str(&text).map_err(|e| {
                    let (line, col) = e.span().map_or((0, 0), |s| line_column(&text, s.start));
                    anyhow!("{what}: line {line} column {col}: {}", e.message().trim())
                })?;
                serde_json::to_value(v)?
            }
            "json" => serde_json::from_str(&text).map_err(|e| anyhow!("{what}: {e}"))?,
            _ => bail!("{what}: the file must be TOML (name ending in .toml) or JSON (.json), as bootc-image-builder's config.toml and config.json are"),
        };
        if let Some(obj) = value.as_object_mut() {
            if obj.contains_key("blueprint") {
                if obj.len() > 1 {
                    bail!("{what}: blueprint (bootc-image-builder's older form) must be the file's only top-level key");
                }
                value = obj.remove("blueprint").unwrap_or_default();
            }
        }
        let users = value["customizations"]["user"].as_array().cloned();
        for (i, u) in users.unwrap_or_default().iter().enumerate() {
            if u.get("password").is_some_and(|p| !p.is_string()) {
                bail!("{what}: customizations.user entry {} has a password that is not text (it is not shown)", i + 1);
            }
        }
        let cfg: Self = serde_json::from_value(value).map_err(|e| anyhow!("{what}: {e}"))?;
        cfg.check(&what)?;
        Ok(cfg)
    }

    /// Every check that needs no image.
    pub fn check(&self, what: &str) -> Result<()> {
        let c = &self.customizations;
        let mut seen = std::collections::BTreeSet::new();
        for g in &c.group {
            let w = format!("{what}: customizations.group {}", shown(&g.name));
            validate::field(
                what,
                "customizations.group name",
                &g.name,
                validate::account_name,
            )?;
            if !seen.insert(&g.name) {
                bail!("{w} is given twice");
            }
            if g.gid.is_some_and(|id| id > MAX_ID) {
                bail!("{w}: gid {} is above {MAX_ID}", g.gid.unwrap());
            }
        }
        let mut users = std::collections::BTreeSet::new();
        for u in &c.user {
            check_user(what, u)?;
            if !users.insert(&u.name) {
                bail!(
                    "{what}: customizations.user {} is given twice",
                    shown(&u.name)
                );
            }
        }
        let mut mounts = std::collections::BTreeSet::new();
        for f in &c.filesystem {
            if !matches!(f.mountpoint.as_str(), "/" | "/boot") {
                bail!(
                    "{what}: customizations.filesystem mountpoint {}: imgmode disk lays out / and /boot (and the ESP); other mount points are not supported, make them directories under /var in the image or partition them on the node",
                    shown(&f.mountpoint)
                );
            }
            if !mounts.insert(&f.mountpoint) {
                bail!(
                    "{what}: customizations.filesystem mountpoint {} is given twice",
                    shown(&f.mountpoint)
                );
            }
            f.minsize.bytes().with_context(|| {
                format!(
                    "{what}: customizations.filesystem mountpoint {} minsize",
                    shown(&f.mountpoint)
                )
            })?;
        }
        if let Some(k) = &c.kernel {
            if let Some(n) = &k.name {
                bail!(
                    "{what}: customizations.kernel name {}: a bootable container image carries its own kernel; install another kernel package in its Containerfile",
                    shown(n)
                );
            }
        }
        if let Some(i) = &c.installer {
            check_installer(what, i)?;
        }
        self.kargs(what)?;
        Ok(())
    }

    /// `installation-disk` of `[customizations.installer]`.
    pub fn installation_disk(&self) -> Option<&str> {
        self.customizations
            .installer
            .as_ref()
            .and_then(|i| i.installation_disk.as_deref())
    }

    /// The kernel arguments of `customizations.kernel.append`, split as the kernel splits
    /// them (spaces, with `"…"` keeping a value together).
    pub fn kargs(&self, what: &str) -> Result<Vec<String>> {
        let Some(append) = self
            .customizations
            .kernel
            .as_ref()
            .and_then(|k| k.append.as_deref())
        else {
            return Ok(Vec::new());
        };
        validate::field(
            what,
            "customizations.kernel append",
            append,
            validate::single_line,
        )?;
        let mut out = Vec::new();
        let (mut cur, mut quoted) = (String::new(), false);
        for ch in append.chars() {
            match ch {
                '"' => {
                    quoted = !quoted;
                    cur.push(ch);
                }
                ' ' if !quoted => {
                    if !cur.is_empty() {
                        out.push(std::mem::take(&mut cur));
                    }
                }
                _ => cur.push(ch),
            }
        }
        if quoted {
            bail!(
                "{what}: customizations.kernel append {} has an unclosed '\"'",
                shown(append)
            );
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        Ok(out)
    }

    /// `minsize` of `mountpoint`, in bytes.
    pub fn minsize(&self, mountpoint: &str) -> Option<u64> {
        self.customizations
            .filesystem
            .iter()
            .find(|f| f.mountpoint == mountpoint)
            .and_then(|f| f.minsize.bytes().ok())
    }

    /// Does the file customize accounts?
    pub fn has_accounts(&self) -> bool {
        !self.customizations.user.is_empty() || !self.customizations.group.is_empty()
    }
}

fn check_installer(what: &str, i: &Installer) -> Result<()> {
    let w = format!("{what}: customizations.installer");
    if i.kickstart.is_some() || i.modules.is_some() {
        bail!(
            "{w}: {} is anaconda's; imgmode's installer is not anaconda and runs no kickstart: name the disk with installation-disk, and give accounts as customizations.user",
            if i.kickstart.is_some() { "kickstart" } else { "modules" }
        );
    }
    if i.sudo_nopasswd.is_some() {
        bail!("{w}: sudo-nopasswd is not supported: put a sudoers drop-in (/etc/sudoers.d/) in the image's Containerfile");
    }
    if i.unattended == Some(false) {
        bail!("{w}: unattended = false: imgmode's installer ISO always installs without asking; leave unattended out or set it to true");
    }
    if let Some(d) = &i.installation_disk {
        validate::field(
            what,
            "customizations.installer installation-disk",
            d,
            validate::device_path,
        )?;
    }
    Ok(())
}

/// 1-based line and column of byte `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn check_user(what: &str, u: &User) -> Result<()> {
    validate::field(
        what,
        "customizations.user name",
        &u.name,
        validate::account_name,
    )?;
    let w = format!("{what}: customizations.user {}", shown(&u.name));
    if let Some(p) = &u.password {
        // the value is a secret: the message never shows it
        let s = p.expose();
        if s.is_empty() || s.contains(char::is_control) {
            bail!("{w}: password is empty or has a control character (it is not shown)");
        }
        if p.is_hash() && (s.contains(':') || s.contains(char::is_whitespace)) {
            bail!("{w}: password looks like a crypt(3) hash but has a ':' or a space (it is not shown)");
        }
    }
    if let Some(k) = &u.key {
        validate::ssh_public_keys(k)
            .map_err(|p| anyhow!("{w}: key is not an OpenSSH public key: it {p}"))?;
    }
    for g in &u.groups {
        validate::field(
            what,
            &format!("customizations.user {} groups entry", shown(&u.name)),
            g,
            validate::account_name,
        )?;
    }
    for (name, id) in [("uid", u.uid), ("gid", u.gid)] {
        if id.is_some_and(|id| id > MAX_ID) {
            bail!("{w}: {name} {} is above {MAX_ID}", id.unwrap());
        }
    }
    for (name, v) in [("home", &u.home), ("shell", &u.shell)] {
        if let Some(v) = v {
            if !v.starts_with('/')
                || v.contains(':')
                || v.contains(char::is_control)
                || v.contains("/../")
                || v.ends_with("/..")
            {
                bail!(
                    "{w}: {name} {} must be an absolute path without ':' or '..'",
                    shown(v)
                );
            }
        }
    }
    if let Some(d) = &u.description {
        if d.contains(':') || d.contains(char::is_control) {
            bail!(
                "{w}: description {} has a ':' or a control character",
                shown(d)
            );
        }
    }
    Ok(())
}

impl DataSize {
    /// Bytes: SI units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB)
    /// powers of 1024, as in bootc-image-builder.
    pub fn bytes(&self) -> Result<u64> {
        let t = match self {
            Self::Bytes(b) => return Ok(*b),
            Self::Text(t) => t.trim(),
        };
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| anyhow!("{} is not a size such as \"10 GiB\" or \"20 GB\"", shown(t)))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1000,
            "KiB" => 1024,
            "MB" => 1000 * 1000,
            "MiB" => MIB,
            "GB" => 1000 * 1000 * 1000,
            "GiB" => GIB,
            "TB" => 1000 * 1000 * 1000 * 1000,
            "TiB" => 1024 * GIB,
            other => bail!(
                "{} has the unit {}; use B, kB, KiB, MB, MiB, GB, GiB, TB or TiB",
                shown(t),
                shown(other)
            ),
        };
        n.checked_mul(mult)
            .ok_or_else(|| anyhow!("{} is too large", shown(t)))
    }
}

/// Refuse a `minsize` of `mountpoint` below what the image needs there.
pub fn check_minsize(cfg: &BuildConfig, mountpoint: &str, needed: u64) -> Result<()> {
    if let Some(min) = cfg.minsize(mountpoint) {
        if min < needed {
            bail!(
                "--config: customizations.filesystem mountpoint {} minsize {} is too small for this image: it needs at least {}; raise minsize or leave the entry out",
                shown(mountpoint),
                human_size(min),
                human_size(needed)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> Result<BuildConfig> {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join(name);
        std::fs::write(&p, text).unwrap();
        BuildConfig::load(&p)
    }

    const FULL: &str = r#"
[[customizations.user]]
name = "alice"
password = "$6$salt$hash"
key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT alice"
groups = ["wheel", "adm"]
uid = 1500
home = "/var/home/alice"
shell = "/bin/bash"
description = "Alice"

[[customizations.group]]
name = "wheel"
gid = 10

[[customizations.filesystem]]
mountpoint = "/"
minsize = "10 GiB"

[[customizations.filesystem]]
mountpoint = "/boot"
minsize = 1073741824

[customizations.kernel]
append = "nosmt=force quiet  x=\"a b\""
"#;

    #[test]
    fn the_installer_section_names_the_disk_and_refuses_anacondas_keys() {
        let c = load(
            "config.toml",
            "[customizations.installer]\nunattended = true\ninstallation-disk = \"/dev/disk/by-id/virtio-target\"\n",
        )
        .unwrap();
        assert_eq!(c.installation_disk(), Some("/dev/disk/by-id/virtio-target"));
        assert_eq!(load("config.toml", "").unwrap().installation_disk(), None);
        for (text, msg) in [
            (
                "[customizations.installer.kickstart]\ncontents = \"autopart\"\n",
                "kickstart is anaconda's",
            ),
            (
                "[customizations.installer.modules]\nenable = [\"x\"]\n",
                "modules is anaconda's",
            ),
            (
                "[customizations.installer]\nsudo-nopasswd = [\"alice\"]\n",
                "sudo-nopasswd is not supported",
            ),
            (
                "[customizations.installer]\nunattended = false\n",
                "always installs without asking",
            ),
            (
                "[customizations.installer]\ninstallation-disk = \"/dev/../etc\"\n",
                "is not an absolute path to a disk",
            ),
            (
                "[customizations.installer]\ndisk = \"/dev/vda\"\n",
                "unknown field `disk`",
            ),
        ] {
            let err = format!("{:#}", load("config.toml", text).unwrap_err());
            assert!(err.contains(msg), "{text}: {err}");
        }
    }

    #[test]
    fn bib_config_toml_and_json_read_the_same() {
        let t = load("config.toml", FULL).unwrap();
        let u = &t.customizations.user[0];
        assert_eq!(u.name, "alice");
        assert!(u.password.as_ref().unwrap().is_hash());
        assert_eq!(u.groups, ["wheel", "adm"]);
        assert_eq!(t.minsize("/"), Some(10 * GIB));
        assert_eq!(t.minsize("/boot"), Some(GIB));
        assert_eq!(t.kargs("x").unwrap(), ["nosmt=force", "quiet", "x=\"a b\""]);
        let json = r#"{"customizations": {"user": [{"name": "bob", "password": "hunter2", "groups": ["wheel"]}],
            "filesystem": [{"mountpoint": "/", "minsize": "20 GB"}], "kernel": {"append": "a=1"}}}"#;
        let j = load("config.json", json).unwrap();
        assert!(!j.customizations.user[0]
            .password
            .as_ref()
            .unwrap()
            .is_hash());
        assert_eq!(j.minsize("/"), Some(20_000_000_000));
        assert_eq!(j.kargs("x").unwrap(), ["a=1"]);
        // the password never shows in Debug output
        assert!(!format!("{j:?}").contains("hunter2"));
        assert!(load("config.toml", "")
            .unwrap()
            .customizations
            .user
            .is_empty());
        // bootc-image-builder's older form: everything under `blueprint`
        let b = load(
            "config.toml",
            "[[blueprint.customizations.user]]\nname = \"bob\"\n",
        )
        .unwrap();
        assert_eq!(b.customizations.user[0].name, "bob");
        // only known crypt methods are hashes: a password may start with '$'
        for (p, hash) in [
            ("$6$s$h", true),
            ("$y$j9T$s$h", true),
            ("$2b$10$x", true),
            ("$ecret$1", false),
            ("$6$", false),
            ("plain", false),
        ] {
            assert_eq!(Password(p.into()).is_hash(), hash, "{p}");
        }
    }

    #[test]
    fn bad_configs_are_refused_by_name() {
        for (name, text, want) in [
            (
                "c.toml",
                "[customizations]\nhostname = \"x\"\n",
                "unknown field `hostname`",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\nsudo = true\n",
                "unknown field `sudo`",
            ),
            (
                "c.json",
                r#"{"customization": {}}"#,
                "unknown field `customization`",
            ),
            ("c.yaml", "customizations: {}", "must be TOML"),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"Bad Name\"\n",
                "customizations.user name \"Bad Name\"",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\nkey = \"nope\"\n",
                "key is not an OpenSSH public key",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\nhome = \"relative\"\n",
                "home \"relative\"",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\n[[customizations.user]]\nname = \"a\"\n",
                "given twice",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\nuid = 70000\n",
                "uid 70000",
            ),
            (
                "c.toml",
                "[[customizations.filesystem]]\nmountpoint = \"/var/data\"\nminsize = \"1 GiB\"\n",
                "mountpoint \"/var/data\"",
            ),
            (
                "c.toml",
                "[[customizations.filesystem]]\nmountpoint = \"/\"\nminsize = \"10 GiBs\"\n",
                "the unit \"GiBs\"",
            ),
            (
                "c.toml",
                "[customizations.kernel]\nname = \"kernel-debug\"\n",
                "customizations.kernel name \"kernel-debug\"",
            ),
            (
                "c.toml",
                "[customizations.kernel]\nappend = \"a=\\\"b\"\n",
                "unclosed",
            ),
            (
                "c.toml",
                "[[customizations.group]]\nname = \"g\"\ngid = 99999\n",
                "gid 99999",
            ),
        ] {
            let err = format!("{:#}", load(name, text).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains("--config"), "{err}");
        }
        // a bad password is refused without being shown
        let err = load(
            "c.toml",
            "[[customizations.user]]\nname = \"a\"\npassword = \"$6$x$y z\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("not shown") && !err.contains("$6$x$y"),
            "{err}"
        );
        // and no error quotes the file
        for (name, text) in [
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\npassword = \"hunt\\qer2\"\n",
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\npassword = 4242424242\n",
            ),
            (
                "c.json",
                r#"{"customizations": {"user": [{"name": "a", "password": 4242424242}]}}"#,
            ),
            (
                "c.toml",
                "[[customizations.user]]\nname = \"a\"\npasswd = \"hunter2\"\n",
            ),
        ] {
            let err = format!("{:#}", load(name, text).unwrap_err());
            assert!(
                !err.contains("hunt") && !err.contains("4242"),
                "{text}: {err}"
            );
        }
        let bad_escape = "[[customizations.user]]\nname = \"a\"\npassword = \"hunt\\qer2\"\n";
        let err = format!("{:#}", load("c.toml", bad_escape).unwrap_err());
        assert!(err.contains("line 3 column"), "{err}");
    }

    #[test]
    fn minsize_below_the_image_is_refused() {
        let c = load(
            "c.toml",
            "[[customizations.filesystem]]\nmountpoint = \"/\"\nminsize = \"1 GiB\"\n",
        )
        .unwrap();
        let err = check_minsize(&c, "/", 2 * GIB).unwrap_err().to_string();
        assert!(
            err.contains("customizations.filesystem mountpoint \"/\" minsize 1.0 GiB is too small for this image: it needs at least 2.0 GiB"),
            "{err}"
        );
        check_minsize(&c, "/", GIB / 2).unwrap();
        check_minsize(&c, "/boot", 10 * GIB).unwrap();
    }
}
