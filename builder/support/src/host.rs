//! Facts about the machine imgmode runs on, in the spellings images use.

use anyhow::{Context, Result};

/// This machine's architecture as OCI images name it (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The first global IPv4 address (`ip -4 -o addr show scope global`).
pub fn first_global_ipv4() -> Result<String> {
    global_ipv4s()?
        .into_iter()
        .next()
        .context("no global IPv4 address on this machine; pass --ip")
}

/// Every global IPv4 address of this machine, in the kernel's order.
pub fn global_ipv4s() -> Result<Vec<String>> {
    let text = crate::cmd::Run::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .read()?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect())
}

/// This machine's architecture in MachineOSConfig's `containerfileArch` spelling.
pub fn containerfile_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "AMD64",
        "aarch64" => "ARM64",
        "powerpc64" => "PPC64LE",
        "s390x" => "S390X",
        _ => "NoArch",
    }
}

/// This machine's architecture as the kernel and bootc's `match-architectures` spell it
/// (`x86_64`, `aarch64`).
pub fn kernel_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Is the kernel in FIPS mode (`/proc/sys/crypto/fips_enabled` is `1`)?
pub fn fips_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/crypto/fips_enabled").is_ok_and(|s| s.trim() == "1")
}

/// The mounted filesystems as (source, mount point), from `/proc/self/mounts`.
pub fn mounts() -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect())
}

/// Every mount's device number (`MAJOR:MINOR`) and mount point, from `/proc/self/mountinfo`
/// (a device mounted through a path that no longer names it is found by its number).
pub fn mount_devices() -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.nth(2)?.to_string();
            let target = f.nth(1)?.to_string();
            Some((dev, target))
        })
        .collect())
}

/// Is `/` the kernel's initial ramfs (`rootfs`), as in a live system that runs from its
/// initramfs? There `pivot_root` is refused, which sandboxes need.
pub fn root_is_initramfs() -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().any(|l| {
        let mut halves = l.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        left.split_whitespace().nth(4) == Some("/")
            && right.split_whitespace().next() == Some("rootfs")
    })
}

/// The devices and files in use as swap, from `/proc/swaps` (none when it cannot be read).
pub fn swaps() -> Vec<String> {
    std::fs::read_to_string("/proc/swaps")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The containers-policy.json(5) the image tools (skopeo, and ostree-ext through it) obey on
/// this machine: the user's (`$HOME/.config/containers/policy.json`) before the system's
/// (`/etc/containers/policy.json`); `None` when there is neither.
pub fn containers_policy() -> Option<std::path::PathBuf> {
    let user = std::env::var_os("HOME")
        .map(|h| std::path::Path::new(&h).join(".config/containers/policy.json"));
    user.into_iter()
        .chain([std::path::PathBuf::from("/etc/containers/policy.json")])
        .find(|p| p.is_file())
}

/// Does process `pid` exist?
pub fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The kernel's host name (`/proc/sys/kernel/hostname`).
pub fn hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading /proc/sys/kernel/hostname")?
        .trim()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_are_read() {
        assert!(!host_arch().is_empty());
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
        assert!(mounts().unwrap().iter().any(|(_, at)| at == "/"));
        assert!(!hostname().unwrap().is_empty());
    }
}
