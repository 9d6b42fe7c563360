//! Extended attributes, POSIX ACLs (GNU tar's text form) and SELinux labels.

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::XattrFlags;
use std::os::fd::AsFd;

/// A POSIX ACL in GNU tar's text form (`user::rwx,group:4:r-x,...`, newline or comma
/// separated, `#` comments, numeric ids) as the kernel's `system.posix_acl_*` value.
pub fn acl_from_text(text: &str) -> Result<Vec<u8>> {
    acl_from_text_with(text, &host_ids)
}

/// A user (`true`) or group name's id in this system's `/etc/passwd` or `/etc/group` (as
/// GNU tar resolves ACL names when it unpacks).
fn host_ids(user: bool, name: &str) -> Option<u32> {
    let file = if user { "/etc/passwd" } else { "/etc/group" };
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    })
}

/// [`acl_from_text`] with names resolved by `ids`.
pub fn acl_from_text_with(text: &str, ids: &dyn Fn(bool, &str) -> Option<u32>) -> Result<Vec<u8>> {
    let mut entries: Vec<(u16, u32, u16)> = vec![];
    for item in text.split(['\n', ',']) {
        let item = item.split('#').next().unwrap_or("").trim();
        if item.is_empty() {
            continue;
        }
        let mut f = item.splitn(3, ':');
        let (tag, q, perm) = (f.next().unwrap_or(""), f.next(), f.next());
        let (q, perm) = match (q, perm) {
            (Some(q), Some(p)) => (q, p),
            // `other::r-x` has an empty qualifier; `o:r-x` none at all
            (Some(p), None) => ("", p),
            _ => bail!("ACL entry {item:?} has no permissions"),
        };
        let perms = perm.trim().chars().try_fold(0u16, |acc, c| match c {
            'r' => Ok(acc | 4),
            'w' => Ok(acc | 2),
            'x' => Ok(acc | 1),
            '-' => Ok(acc),
            _ => Err(anyhow!("ACL entry {item:?} has the permission {c:?}")),
        })?;
        let user = matches!(tag, "user" | "u");
        let id = |q: &str| -> Result<u32> {
            q.parse().ok().or_else(|| ids(user, q)).ok_or_else(|| {
                anyhow!(
                    "ACL entry {item:?} names the {} {q:?}, which this system does not know",
                    if user { "user" } else { "group" }
                )
            })
        };
        const UNDEF: u32 = u32::MAX;
        let (t, i) = match (tag, q.is_empty()) {
            ("user" | "u", true) => (0x01, UNDEF),
            ("user" | "u", false) => (0x02, id(q)?),
            ("group" | "g", true) => (0x04, UNDEF),
            ("group" | "g", false) => (0x08, id(q)?),
            ("mask" | "m", _) => (0x10, UNDEF),
            ("other" | "o", _) => (0x20, UNDEF),
            _ => bail!("ACL entry {item:?} has the unknown tag {tag:?}"),
        };
        entries.push((t, i, perms));
    }
    entries.sort();
    let mut out = 2u32.to_le_bytes().to_vec();
    for (t, i, p) in entries {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&p.to_le_bytes());
        out.extend_from_slice(&i.to_le_bytes());
    }
    Ok(out)
}

/// SELinux labels cannot be set where the kernel has no SELinux (GNU tar warns and goes on);
/// every other attribute must be set.
pub(super) fn tolerated(key: &str, e: rustix::io::Errno) -> rustix::io::Result<()> {
    if key == "security.selinux"
        && matches!(e, rustix::io::Errno::NOTSUP | rustix::io::Errno::INVAL)
    {
        Ok(())
    } else {
        Err(e)
    }
}

pub(super) fn set_xattrs_fd(
    f: &impl AsFd,
    xattrs: &[(String, Vec<u8>)],
    shown: &str,
) -> Result<()> {
    for (k, v) in xattrs {
        rustix::fs::fsetxattr(f, k.as_str(), v, XattrFlags::empty())
            .or_else(|e| tolerated(k, e))
            .with_context(|| format!("setting {k} on {shown:?}"))?;
    }
    Ok(())
}
