//! The system's trust store (`/etc/ssl/certs`) after the site's CA files changed: what Debian's
//! `update-ca-certificates` does, without its processes.
//!
//! The tool runs a few processes for every CA it lists (a `basename | sed` for the link's name,
//! a `sed` to add the certificate to the bundle): about 600 for Debian's CAs, 40 s of CPU under
//! emulation, while recert and the cluster's services start beside it. Here the names, links and
//! bundle are made in process, in the tool's order and with its rules, and the one `openssl
//! rehash` it runs for the hash links is the same. The tool itself still runs when
//! `ca-certificates.conf` is missing or empty (its `--fresh` case) or when hooks would run (a
//! Java keystore, for example), so the result is always the tool's; a host test compares both
//! on the same store.

use anyhow::{Context, Result};
use imgmode_support::cmd::Run;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The tool's paths (its `--certsconf`, `--certsdir`, `--localcertsdir`, `--etccertsdir` and
/// `--hooksdir`).
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub conf: PathBuf,
    pub certs: PathBuf,
    pub local: PathBuf,
    pub etc: PathBuf,
    pub hooks: PathBuf,
}

impl Store {
    /// The system's.
    pub fn system() -> Self {
        Self {
            conf: "/etc/ca-certificates.conf".into(),
            certs: "/usr/share/ca-certificates".into(),
            local: "/usr/local/share/ca-certificates".into(),
            etc: "/etc/ssl/certs".into(),
            hooks: "/etc/ca-certificates/update.d".into(),
        }
    }

    /// The tool itself, on these paths.
    fn run_tool(&self) -> Result<()> {
        Run::new("update-ca-certificates")
            .arg("--certsconf")
            .arg(&self.conf)
            .arg("--certsdir")
            .arg(&self.certs)
            .arg("--localcertsdir")
            .arg(&self.local)
            .arg("--etccertsdir")
            .arg(&self.etc)
            .arg("--hooksdir")
            .arg(&self.hooks)
            .output()?;
        Ok(())
    }
}

/// Update the store after the CA files `changed` (written, replaced or removed): their links
/// are made anew (a file whose certificate changed under the same name gets its new hash link),
/// links left dangling go, the hash links are made again and the bundle is written again.
pub(crate) fn update(s: &Store, changed: &[PathBuf]) -> Result<()> {
    for f in changed {
        let Some(stem) = f.file_stem() else { continue };
        let link = s.etc.join(format!("{}.pem", stem.to_string_lossy()));
        if link.is_symlink() {
            imgmode_support::fs::remove_path(&link)?;
        }
    }
    let conf = std::fs::read_to_string(&s.conf).unwrap_or_default();
    if conf.trim().is_empty() || has_hooks(&s.hooks)? {
        s.run_tool()?;
    } else {
        update_in_process(s, &conf)?;
    }
    remove_dangling_links(&s.etc)
}

/// Hooks `run-parts` would run: executable files whose names are letters, digits, `_` and `-`.
fn has_hooks(dir: &Path) -> Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let runs = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let md = std::fs::metadata(e.path())?;
        if runs && md.is_file() && md.permissions().mode() & 0o111 != 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The tool's run without `--fresh`, given the contents of its configuration.
fn update_in_process(s: &Store, conf: &str) -> Result<()> {
    let mut changes = 0;
    // `!name`: deselected, its link goes
    for name in conf.lines().filter_map(|l| l.strip_prefix('!')) {
        let cert = s.certs.join(name.trim());
        let stem = base_name(&cert);
        let link = s.etc.join(format!("{stem}.pem"));
        if link.is_symlink() {
            imgmode_support::fs::remove_path(&link)?;
            changes += 1;
        }
    }
    let mut certs: Vec<PathBuf> = conf
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| s.certs.join(l.trim()))
        .filter(|p| p.is_file())
        .collect();
    let mut local = Vec::new();
    if s.local.is_dir() {
        find_crts(&s.local, &mut local)?;
        // `sort`, in the C locale post-pivot runs in: byte order
        local.sort_by(|a, b| {
            a.as_os_str()
                .as_encoded_bytes()
                .cmp(b.as_os_str().as_encoded_bytes())
        });
    }
    certs.extend(local);
    let bundle_path = s.etc.join("ca-certificates.crt.new");
    let mut bundle = std::io::BufWriter::new(
        std::fs::File::create(&bundle_path)
            .with_context(|| format!("writing {}", bundle_path.display()))?,
    );
    for cert in &certs {
        let link = s.etc.join(format!("{}.pem", pem_name(&base_name(cert))));
        if !link.exists() || std::fs::read_link(&link).ok().as_deref() != Some(cert.as_path()) {
            if link.is_symlink() || link.exists() {
                imgmode_support::fs::remove_path(&link)?;
            }
            std::os::unix::fs::symlink(cert, &link)
                .with_context(|| format!("linking {}", link.display()))?;
            changes += 1;
        }
        let text = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
        bundle.write_all(&text)?;
        // sed's `$a\`: a last line without its newline gets one
        if text.last().is_some_and(|b| *b != b'\n') {
            bundle.write_all(b"\n")?;
        }
    }
    bundle
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    if changes > 0 {
        remove_dangling_links(&s.etc)?;
        Run::new("openssl").arg("rehash").arg(&s.etc).output()?;
    }
    if certs.is_empty() {
        // the tool writes no bundle when it added nothing
        std::fs::remove_file(&bundle_path)?;
        return Ok(());
    }
    std::fs::set_permissions(&bundle_path, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&bundle_path, s.etc.join("ca-certificates.crt"))?;
    Ok(())
}

/// `basename FILE .crt`.
fn base_name(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match n.strip_suffix(".crt") {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => n,
    }
}

/// The tool's link name for a certificate's base name: spaces and commas become `_`,
/// parentheses `=`.
fn pem_name(base: &str) -> String {
    base.chars()
        .map(|c| match c {
            ' ' | ',' => '_',
            '(' | ')' => '=',
            c => c,
        })
        .collect()
}

/// `find -L DIR -type f -name '*.crt'`.
fn find_crts(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let Ok(md) = std::fs::metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            find_crts(&p, out)?;
        } else if md.is_file() && p.to_string_lossy().ends_with(".crt") {
            out.push(p);
        }
    }
    Ok(())
}

/// Remove the symlinks in `dir` whose targets are gone.
pub(crate) fn remove_dangling_links(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_symlink() && !p.exists() {
            imgmode_support::fs::remove_path(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(cn: &str) -> String {
        use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        String::from_utf8(b.build().to_pem().unwrap()).unwrap()
    }

    /// A store as Debian has it, under `root`: two distribution CAs (one deselected with `!`,
    /// one whose file lacks its last newline, one with a space and parentheses in its name)
    /// and a local one; updated once by the tool.
    fn store(root: &Path, cas: &[String]) -> Store {
        let s = Store {
            conf: root.join("ca-certificates.conf"),
            certs: root.join("share"),
            local: root.join("local"),
            etc: root.join("etc"),
            hooks: root.join("hooks"),
        };
        for d in [&s.certs.join("mozilla"), &s.local, &s.etc, &s.hooks] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(s.certs.join("mozilla/A_Root.crt"), &cas[0]).unwrap();
        std::fs::write(s.certs.join("mozilla/B Root (2).crt"), cas[1].trim_end()).unwrap();
        std::fs::write(s.certs.join("mozilla/C_Root.crt"), &cas[2]).unwrap();
        std::fs::write(
            &s.conf,
            "# the distribution's\nmozilla/A_Root.crt\n\nmozilla/B Root (2).crt\n!mozilla/C_Root.crt\n",
        )
        .unwrap();
        s.run_tool().unwrap();
        s
    }

    /// What a store holds: each entry of the certificates directory (a link's target, a file's
    /// bytes).
    fn contents(s: &Store) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = std::fs::read_dir(&s.etc)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let what = match std::fs::read_link(&p) {
                    Ok(t) => format!("-> {}", t.display()),
                    Err(_) => std::fs::read_to_string(&p).unwrap(),
                };
                (name, what)
            })
            .collect();
        out.sort();
        out
    }

    /// The same changes (a site CA added, then replaced under its name, then removed) give the
    /// store `update-ca-certificates` gives, entry for entry.
    #[test]
    fn the_store_is_the_one_the_tool_makes() {
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("update-ca-certificates"));
        imgmode_testkit::require!(imgmode_testkit::Need::Tool("openssl"));
        let cas: Vec<String> = ["A", "B", "C", "site 1", "site 2"]
            .iter()
            .map(|c| ca(c))
            .collect();
        let d = tempfile::tempdir().unwrap();
        let (tool, mine) = (
            store(&d.path().join("tool"), &cas),
            store(&d.path().join("mine"), &cas),
        );
        let site = |s: &Store| s.local.join("site-0.crt");
        for step in [Some(&cas[3]), Some(&cas[4]), None] {
            for s in [&tool, &mine] {
                match step {
                    Some(pem) => std::fs::write(site(s), pem).unwrap(),
                    None => std::fs::remove_file(site(s)).unwrap(),
                }
            }
            // the tool as post-pivot ran it before: the changed file's link removed first
            update_with_tool(&tool, &[site(&tool)]);
            update(&mine, &[site(&mine)]).unwrap();
            let strip = |s: &Store, c: Vec<(String, String)>| -> Vec<(String, String)> {
                let root = s.etc.parent().unwrap().display().to_string();
                c.into_iter()
                    .map(|(n, w)| (n, w.replace(&root, "ROOT")))
                    .collect()
            };
            let (a, b) = (strip(&tool, contents(&tool)), strip(&mine, contents(&mine)));
            assert_eq!(a, b, "after {:?}", step.map(|_| "a site CA"));
            assert!(a.iter().any(|(n, _)| n.ends_with(".0")), "hash links");
        }
        // a hook makes the tool run itself
        std::fs::write(mine.hooks.join("keystore"), "#!/bin/sh\ncat > /dev/null\n").unwrap();
        std::fs::set_permissions(
            mine.hooks.join("keystore"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(has_hooks(&mine.hooks).unwrap());
        update(&mine, &[]).unwrap();
    }

    fn update_with_tool(s: &Store, changed: &[PathBuf]) {
        for f in changed {
            let link = s
                .etc
                .join(format!("{}.pem", f.file_stem().unwrap().to_string_lossy()));
            if link.is_symlink() {
                std::fs::remove_file(&link).unwrap();
            }
        }
        s.run_tool().unwrap();
        remove_dangling_links(&s.etc).unwrap();
    }

    #[test]
    fn link_names_follow_the_tools_rules() {
        assert_eq!(base_name(Path::new("/x/B Root (2).crt")), "B Root (2)");
        assert_eq!(pem_name("B Root (2),x"), "B_Root_=2=_x");
        assert_eq!(base_name(Path::new("/x/.crt")), ".crt");
    }

    #[test]
    fn dangling_links_go_and_the_rest_stay() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("real.crt"), "x").unwrap();
        std::os::unix::fs::symlink(p.join("real.crt"), p.join("real.pem")).unwrap();
        std::os::unix::fs::symlink("gone.pem", p.join("abcd1234.0")).unwrap();
        std::os::unix::fs::symlink("real.pem", p.join("0123abcd.0")).unwrap();
        remove_dangling_links(p).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["0123abcd.0", "real.crt", "real.pem"]);
    }
}
