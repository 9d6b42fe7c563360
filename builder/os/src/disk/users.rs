//! Users and groups of a `--config` file, written into a deployment: `/etc/passwd`,
//! `/etc/shadow`, `/etc/group` and `/etc/gshadow` edited as text (the deployment is a
//! directory, not a running system, so `useradd` has nothing to act on), and each home made
//! in the stateroot's `/var` with `/etc/skel`, `.ssh/authorized_keys` and the account's owner.
//!
//! A name the image already has is changed, not added: its password, key and groups are set,
//! and a uid, gid, home, shell or description that differs from the image's is refused. New
//! accounts take the first free id from 1000 (`UID_MIN`), a private group of their name (the
//! uid as gid when free), `/var/home/NAME` and `/bin/bash` (or `/bin/sh` without bash).
//! A group named in `groups` must exist in the image or in the file's `group` list. New users
//! get subordinate uid and gid ranges (`/etc/subuid`, `/etc/subgid`: 65536 ids from 100000 on,
//! after the ranges there), as `useradd` gives them, so rootless podman works for them.
//!
//! Homes are written under the stateroot's `var`, which comes from the image: no path
//! component below `var` may be a symbolic link (an image's `var/home -> /etc` would otherwise
//! lead the writes onto the machine running `imgmode disk`).

use super::config::{BuildConfig, User};
use anyhow::{anyhow, bail, Context, Result};
use imgmode_support::cmd::Run;
use imgmode_support::validate::shown;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The four account databases of an `/etc`, as lines of fields.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub passwd: Vec<Vec<String>>,
    pub shadow: Vec<Vec<String>>,
    pub group: Vec<Vec<String>>,
    pub gshadow: Option<Vec<Vec<String>>>,
    /// `/etc/subuid` and `/etc/subgid` (empty when absent; written when new users need them).
    pub subuid: Vec<Vec<String>>,
    pub subgid: Vec<Vec<String>>,
}

fn parse(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

fn render(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join(":") + "\n").collect()
}

const FIRST_ID: u32 = 1000;

/// A new account's home: what `home` says, `/var/home/NAME` by default.
fn default_home(name: &str) -> String {
    format!("/var/home/{name}")
}

impl Accounts {
    /// Read `etc`'s databases (`gshadow` may be absent).
    pub fn read(etc: &Path) -> Result<Self> {
        let read = |f: &str| {
            std::fs::read_to_string(etc.join(f))
                .with_context(|| format!("reading /etc/{f} of the deployment"))
        };
        Ok(Self {
            passwd: parse(&read("passwd")?),
            shadow: parse(&read("shadow")?),
            group: parse(&read("group")?),
            gshadow: etc
                .join("gshadow")
                .exists()
                .then(|| read("gshadow").map(|t| parse(&t)))
                .transpose()?,
            subuid: parse(&std::fs::read_to_string(etc.join("subuid")).unwrap_or_default()),
            subgid: parse(&std::fs::read_to_string(etc.join("subgid")).unwrap_or_default()),
        })
    }

    /// Write them back in place (each file keeps its mode and owner).
    pub fn write(&self, etc: &Path) -> Result<()> {
        let mut files = vec![
            ("passwd", &self.passwd),
            ("shadow", &self.shadow),
            ("group", &self.group),
        ];
        if let Some(g) = &self.gshadow {
            files.push(("gshadow", g));
        }
        for (f, rows) in [("subuid", &self.subuid), ("subgid", &self.subgid)] {
            if !rows.is_empty() || etc.join(f).exists() {
                files.push((f, rows));
            }
        }
        for (f, rows) in files {
            std::fs::write(etc.join(f), render(rows))
                .with_context(|| format!("writing /etc/{f} of the deployment"))?;
        }
        Ok(())
    }

    fn find<'a>(rows: &'a [Vec<String>], name: &str) -> Option<&'a Vec<String>> {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
    }

    fn id_of(rows: &[Vec<String>], name: &str, field: usize) -> Option<u32> {
        Self::find(rows, name).and_then(|r| r.get(field)?.parse().ok())
    }

    fn id_taken(rows: &[Vec<String>], id: u32, field: usize) -> bool {
        rows.iter()
            .any(|r| r.get(field).and_then(|f| f.parse::<u32>().ok()) == Some(id))
    }

    fn free_id(rows: &[Vec<String>], field: usize, also: impl Fn(u32) -> bool) -> u32 {
        (FIRST_ID..)
            .find(|id| !Self::id_taken(rows, *id, field) && !also(*id))
            .expect("a free id")
    }

    /// Add group `name` (with `gid` or the first free one), or check that an existing one has
    /// that gid; its gid.
    pub fn add_group(&mut self, name: &str, gid: Option<u32>) -> Result<u32> {
        if let Some(have) = Self::id_of(&self.group, name, 2) {
            if gid.is_some_and(|g| g != have) {
                bail!(
                    "group {} has gid {have} in the image, not {}",
                    shown(name),
                    gid.unwrap()
                );
            }
            return Ok(have);
        }
        let gid = match gid {
            Some(g) if Self::id_taken(&self.group, g, 2) => {
                bail!("gid {g} of group {} is taken in the image", shown(name))
            }
            Some(g) => g,
            None => Self::free_id(&self.group, 2, |_| false),
        };
        self.group.push(vec![
            name.into(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]);
        if let Some(gs) = &mut self.gshadow {
            gs.push(vec![name.into(), "!".into(), String::new(), String::new()]);
        }
        Ok(gid)
    }

    /// Add `member` to group `name`'s member list (in `group` and `gshadow`).
    fn add_member(&mut self, name: &str, member: &str) -> Result<()> {
        let add = |rows: &mut Vec<Vec<String>>, field: usize| {
            if let Some(r) = rows
                .iter_mut()
                .find(|r| r.first().map(String::as_str) == Some(name))
            {
                while r.len() <= field {
                    r.push(String::new());
                }
                let mut m: Vec<&str> = r[field].split(',').filter(|s| !s.is_empty()).collect();
                if !m.contains(&member) {
                    m.push(member);
                }
                r[field] = m.join(",");
                true
            } else {
                false
            }
        };
        if !add(&mut self.group, 3) {
            bail!(
                "group {} is in neither the image nor the file's customizations.group",
                shown(name)
            );
        }
        if let Some(gs) = &mut self.gshadow {
            add(gs, 3);
        }
        Ok(())
    }

    /// Add or change user `u` with password field `hash` (`None`: kept, or `*` for a new
    /// account, which takes keys but no password); the account's (uid, gid, home).
    pub fn apply_user(
        &mut self,
        u: &User,
        hash: Option<&str>,
        shell: &str,
        days: u64,
    ) -> Result<(u32, u32, String)> {
        let w = format!("customizations.user {}", shown(&u.name));
        let (uid, gid, home) = if let Some(row) = Self::find(&self.passwd, &u.name).cloned() {
            let field = |i: usize| row.get(i).cloned().unwrap_or_default();
            for (what, given, have) in [
                ("uid", u.uid.map(|v| v.to_string()), field(2)),
                ("gid", u.gid.map(|v| v.to_string()), field(3)),
                ("description", u.description.clone(), field(4)),
                ("home", u.home.clone(), field(5)),
                ("shell", u.shell.clone(), field(6)),
            ] {
                if given.as_ref().is_some_and(|g| *g != have) {
                    bail!(
                        "{w}: the image has this user with {what} {}; a config can set the password, key and groups of an existing user, not change its {what}",
                        shown(&have)
                    );
                }
            }
            let id = |s: String| {
                s.parse::<u32>()
                    .map_err(|_| anyhow!("{w}: bad id in /etc/passwd"))
            };
            (id(field(2))?, id(field(3))?, field(5))
        } else {
            let uid = match u.uid {
                Some(id) if Self::id_taken(&self.passwd, id, 2) => {
                    bail!("{w}: uid {id} is taken in the image")
                }
                Some(id) => id,
                None => Self::free_id(&self.passwd, 2, |_| false),
            };
            let gid = match u.gid {
                Some(g) if !Self::id_taken(&self.group, g, 2) => {
                    bail!("{w}: gid {g} is no group of the image or the file")
                }
                Some(g) => g,
                None => {
                    let private = (!Self::id_taken(&self.group, uid, 2)).then_some(uid);
                    self.add_group(&u.name, private)
                        .with_context(|| format!("{w}: its own group"))?
                }
            };
            let home = u.home.clone().unwrap_or_else(|| default_home(&u.name));
            self.passwd.push(vec![
                u.name.clone(),
                "x".into(),
                uid.to_string(),
                gid.to_string(),
                u.description.clone().unwrap_or_default(),
                home.clone(),
                u.shell.clone().unwrap_or_else(|| shell.to_string()),
            ]);
            for sub in [&mut self.subuid, &mut self.subgid] {
                sub.push(subordinate_range(sub, &u.name));
            }
            self.shadow.push(vec![
                u.name.clone(),
                "*".into(),
                days.to_string(),
                "0".into(),
                "99999".into(),
                "7".into(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            (uid, gid, home)
        };
        if let Some(h) = hash {
            let row = self
                .shadow
                .iter_mut()
                .find(|r| r.first() == Some(&u.name))
                .ok_or_else(|| anyhow!("{w}: the image's /etc/shadow has no entry for it"))?;
            row[1] = h.to_string();
        }
        for g in &u.groups {
            self.add_member(g, &u.name)
                .with_context(|| format!("{w}: groups"))?;
        }
        Ok((uid, gid, home))
    }
}

/// The next subordinate id range for `name`: 65536 ids from 100000 or after the last range.
fn subordinate_range(rows: &[Vec<String>], name: &str) -> Vec<String> {
    const FIRST: u64 = 100_000;
    const COUNT: u64 = 65_536;
    let start = rows
        .iter()
        .filter_map(|r| Some(r.get(1)?.parse::<u64>().ok()? + r.get(2)?.parse::<u64>().ok()?))
        .fold(FIRST, u64::max);
    vec![name.to_string(), start.to_string(), COUNT.to_string()]
}

/// Hash a password with SHA-512 crypt (`openssl passwd -6`), the password given on stdin so
/// that no process list or log shows it.
pub fn hash_password(password: &str) -> Result<String> {
    use std::io::Write;
    let (mut cmd, shown_cmd) = Run::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .into_command();
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Run::spawn_error_of("openssl", e))?;
    child
        .stdin
        .take()
        .context("openssl's stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{shown_cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let hash = String::from_utf8(out.stdout)?.trim().to_string();
    if !hash.starts_with("$6$") {
        bail!("{shown_cmd} printed no SHA-512 crypt hash");
    }
    Ok(hash)
}

/// Where `home` (a path as the booted system sees it) lives in the sysroot being written:
/// under the stateroot's `var` (`/var/…`, or a top-level link into `var` such as
/// `/home -> var/home` or `/root -> var/roothome`).
pub fn physical_home(deploy: &Path, var: &Path, home: &str) -> Result<PathBuf> {
    let rel = home.trim_start_matches('/');
    let mut parts = rel.splitn(2, '/');
    let top = parts.next().unwrap_or_default();
    let rest = parts.next().unwrap_or_default();
    if top == "var" {
        return Ok(var.join(rest));
    }
    if let Ok(link) = std::fs::read_link(deploy.join(top)) {
        let link = link.to_string_lossy().trim_start_matches('/').to_string();
        if let Some(in_var) = link.strip_prefix("var/") {
            if !in_var.split('/').any(|c| c == "..") {
                return Ok(var.join(in_var).join(rest));
            }
        }
    }
    bail!(
        "home {} is not under /var (or a link into it such as /home): on an image-mode system only /var is the machine's own; use /var/home/NAME",
        shown(home)
    )
}

/// Apply the file's groups and users to the deployment at `deploy` (its `etc`) with homes in
/// the stateroot `var`.
pub fn apply(cfg: &BuildConfig, deploy: &Path, var: &Path) -> Result<()> {
    if !cfg.has_accounts() {
        return Ok(());
    }
    let etc = deploy.join("etc");
    let mut acc = Accounts::read(&etc)?;
    for g in &cfg.customizations.group {
        acc.add_group(&g.name, g.gid)
            .with_context(|| format!("--config: customizations.group {}", shown(&g.name)))?;
    }
    let shell = if deploy.join("usr/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 86_400;
    let mut homes = Vec::new();
    for u in &cfg.customizations.user {
        let hash = match &u.password {
            Some(p) if p.is_hash() => Some(p.expose().to_string()),
            Some(p) => Some(hash_password(p.expose())?),
            None => None,
        };
        let (uid, gid, home) = acc
            .apply_user(u, hash.as_deref(), shell, days)
            .context("--config")?;
        let dir = physical_home(deploy, var, &home)
            .and_then(|d| no_links_below(var, &d.join(".ssh/authorized_keys")).map(|()| d))
            .with_context(|| format!("--config: customizations.user {}", shown(&u.name)))?;
        homes.push((u, uid, gid, dir));
    }
    acc.write(&etc)?;
    for (u, uid, gid, dir) in homes {
        make_home(deploy, var, &dir, uid, gid, u.key.as_deref())
            .with_context(|| format!("making the home of {}", shown(&u.name)))?;
    }
    Ok(())
}

/// Make `dir` (0700, with `/etc/skel` when new) and its `.ssh/authorized_keys` holding `key`,
/// all owned by `uid:gid`.
fn make_home(
    deploy: &Path,
    var: &Path,
    dir: &Path,
    uid: u32,
    gid: u32,
    key: Option<&str>,
) -> Result<()> {
    // `apply` has checked that nothing below `var` on the way to the key is a link
    let own = |p: &Path| std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    if !dir.exists() {
        // parents such as var/home: 0755 whatever this process's umask
        let mut p = var.to_path_buf();
        for c in dir.strip_prefix(var)?.components() {
            p.push(c);
            if !p.exists() {
                std::fs::create_dir(&p)?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        let skel = deploy.join("etc/skel");
        if skel.is_dir() {
            Run::new("cp")
                .args(["-a", "--"])
                .arg(format!("{}/.", skel.display()))
                .arg(dir)
                .output()
                .context("copying /etc/skel")?;
        }
        // after the copy, which gives the home skel's own mode
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        chown_tree(dir, uid, gid)?;
    }
    if let Some(key) = key {
        let ssh = dir.join(".ssh");
        std::fs::create_dir_all(&ssh)?;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
        own(&ssh)?;
        let ak = ssh.join("authorized_keys");
        let mut text = std::fs::read_to_string(&ak).unwrap_or_default();
        if !text.lines().any(|l| l.trim() == key.trim()) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(key.trim());
            text.push('\n');
        }
        imgmode_support::fs::write_private(&ak, &text)?;
        own(&ak)?;
    }
    Ok(())
}

/// Refuse when a component of `path` below `var` is a symbolic link (components that do not
/// exist yet are fine: they are made as directories).
fn no_links_below(var: &Path, path: &Path) -> Result<()> {
    let mut p = var.to_path_buf();
    for c in path.strip_prefix(var)?.components() {
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "/var/{} is a symbolic link in the image; imgmode does not follow links when it writes a home",
                p.strip_prefix(var)?.display()
            ),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            chown_tree(&e.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const SHADOW: &str =
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:\nusers:x:100:\nnogroup:x:65534:\n";
    const GSHADOW: &str = "root:*::\nadm:*::\nusers:*::\nnogroup:*::\n";

    fn image(dir: &Path) -> (PathBuf, PathBuf) {
        let deploy = dir.join("deploy");
        let var = dir.join("var");
        std::fs::create_dir_all(deploy.join("etc/skel")).unwrap();
        std::fs::create_dir_all(deploy.join("usr/bin")).unwrap();
        std::fs::create_dir_all(var.join("roothome")).unwrap();
        std::fs::write(deploy.join("usr/bin/bash"), "").unwrap();
        std::fs::write(deploy.join("etc/skel/.profile"), "# skel\n").unwrap();
        for (f, t) in [
            ("passwd", PASSWD),
            ("shadow", SHADOW),
            ("group", GROUP),
            ("gshadow", GSHADOW),
        ] {
            std::fs::write(deploy.join("etc").join(f), t).unwrap();
        }
        std::os::unix::fs::symlink("var/roothome", deploy.join("root")).unwrap();
        std::os::unix::fs::symlink("var/home", deploy.join("home")).unwrap();
        (deploy, var)
    }

    fn config(text: &str) -> BuildConfig {
        let td = tempfile::tempdir().unwrap();
        let p = td.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        BuildConfig::load(&p).unwrap()
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMmW4fGQ0d2dDqJv1c3Q8w6l9Q2S8Cz1b9wY0mX7o0vT alice";

    #[test]
    fn users_and_groups_are_written_into_the_deployment() {
        let td = tempfile::tempdir().unwrap();
        let (deploy, var) = image(td.path());
        let cfg = config(&format!(
            "[[customizations.group]]\nname = \"wheel\"\ngid = 10\n\n\
             [[customizations.user]]\nname = \"alice\"\npassword = \"$6$salt$hash\"\nkey = \"{KEY}\"\ngroups = [\"wheel\", \"adm\"]\ndescription = \"Alice\"\n\n\
             [[customizations.user]]\nname = \"bob\"\nuid = 2000\nhome = \"/home/bob\"\nshell = \"/bin/sh\"\n\n\
             [[customizations.user]]\nname = \"root\"\nkey = \"{KEY}\"\npassword = \"$y$j9T$salt$hash\"\n"
        ));
        apply(&cfg, &deploy, &var).unwrap();
        let etc = |f: &str| std::fs::read_to_string(deploy.join("etc").join(f)).unwrap();
        assert!(etc("passwd").contains("alice:x:1000:1000:Alice:/var/home/alice:/bin/bash\n"));
        assert!(etc("passwd").contains("bob:x:2000:2000::/home/bob:/bin/sh\n"));
        assert!(etc("passwd").starts_with("root:x:0:0:root:/root:/bin/bash\n"));
        assert!(etc("shadow").contains("alice:$6$salt$hash:"));
        assert!(etc("shadow").contains("bob:*:"));
        assert!(etc("shadow").starts_with("root:$y$j9T$salt$hash:19000:"));
        assert!(etc("group").contains("wheel:x:10:alice\n"));
        assert!(etc("group").contains("adm:x:4:alice\n"));
        assert!(etc("group").contains("alice:x:1000:\n"));
        assert!(etc("group").contains("bob:x:2000:\n"));
        assert!(etc("gshadow").contains("wheel:!::alice\n"));
        assert!(etc("gshadow").contains("adm:*::alice\n"));
        use std::os::unix::fs::MetadataExt;
        let home = var.join("home/alice");
        let m = std::fs::metadata(&home).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1000, 1000, 0o700));
        assert!(home.join(".profile").exists());
        assert_eq!(
            std::fs::metadata(home.join(".profile")).unwrap().uid(),
            1000
        );
        let ak = home.join(".ssh/authorized_keys");
        assert_eq!(std::fs::read_to_string(&ak).unwrap(), format!("{KEY}\n"));
        let m = std::fs::metadata(&ak).unwrap();
        assert_eq!((m.uid(), m.mode() & 0o777), (1000, 0o600));
        // /home links into var: bob's home is var/home/bob
        assert_eq!(std::fs::metadata(var.join("home/bob")).unwrap().uid(), 2000);
        // root's key went to /root -> var/roothome
        assert!(var.join("roothome/.ssh/authorized_keys").exists());
        // subordinate ids for the new users, not for root
        assert_eq!(etc("subuid"), "alice:100000:65536\nbob:165536:65536\n");
        assert_eq!(etc("subgid"), etc("subuid"));
    }

    #[test]
    fn links_in_the_images_var_are_not_followed() {
        let td = tempfile::tempdir().unwrap();
        let (deploy, var) = image(&td.path().join("img"));
        let outside = td.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, var.join("home")).unwrap();
        let cfg = config(&format!(
            "[[customizations.user]]\nname = \"alice\"\nkey = \"{KEY}\"\n"
        ));
        let err = format!("{:#}", apply(&cfg, &deploy, &var).unwrap_err());
        assert!(err.contains("/var/home is a symbolic link"), "{err}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // a link inside an existing home (root's) is refused as well
        std::os::unix::fs::symlink(&outside, var.join("roothome/.ssh")).unwrap();
        let cfg = config(&format!(
            "[[customizations.user]]\nname = \"root\"\nkey = \"{KEY}\"\n"
        ));
        let err = format!("{:#}", apply(&cfg, &deploy, &var).unwrap_err());
        assert!(
            err.contains("/var/roothome/.ssh is a symbolic link"),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn conflicts_and_unknown_groups_are_refused_by_name() {
        let td = tempfile::tempdir().unwrap();
        for (i, (text, want)) in [
            (
                "[[customizations.user]]\nname = \"a\"\ngroups = [\"wheel\"]\n",
                "group \"wheel\" is in neither the image nor the file",
            ),
            (
                "[[customizations.user]]\nname = \"root\"\nuid = 5\n",
                "not change its uid",
            ),
            (
                "[[customizations.user]]\nname = \"a\"\nuid = 1\n",
                "uid 1 is taken",
            ),
            (
                "[[customizations.user]]\nname = \"a\"\ngid = 4242\n",
                "gid 4242 is no group",
            ),
            (
                "[[customizations.group]]\nname = \"adm\"\ngid = 5\n",
                "group \"adm\" has gid 4",
            ),
            (
                "[[customizations.group]]\nname = \"x\"\ngid = 100\n",
                "gid 100 of group \"x\" is taken",
            ),
            (
                "[[customizations.user]]\nname = \"a\"\nhome = \"/srv/a\"\n",
                "home \"/srv/a\" is not under /var",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let d = td.path().join(i.to_string());
            let (deploy, var) = image(&d);
            let before = std::fs::read_to_string(deploy.join("etc/passwd")).unwrap();
            let err = format!("{:#}", apply(&config(text), &deploy, &var).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
            // nothing was written
            assert_eq!(
                std::fs::read_to_string(deploy.join("etc/passwd")).unwrap(),
                before
            );
        }
    }

    #[test]
    fn a_plain_password_is_hashed_and_never_stored() {
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("openssl"));
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$6$") && !h.contains("correct"));
        let td = tempfile::tempdir().unwrap();
        let (deploy, var) = image(td.path());
        apply(
            &config("[[customizations.user]]\nname = \"c\"\npassword = \"correct horse\"\n"),
            &deploy,
            &var,
        )
        .unwrap();
        let shadow = std::fs::read_to_string(deploy.join("etc/shadow")).unwrap();
        assert!(shadow.contains("c:$6$") && !shadow.contains("correct horse"));
    }
}
